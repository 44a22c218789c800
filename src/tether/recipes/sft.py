"""Supervised fine-tuning on demonstrations.

Stages: 1. tokenizer + data → 2. model (+ LoRA) → 3. train (loss on completion
tokens only by default) → 4. save an HF directory to ``<run_dir>/<name>/``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from tether.algos.losses.sft import sft_loss_from_logprobs
from tether.config import SFTConfig, to_dict
from tether.data import collate_sft, load_sft_dataset, pack_sft
from tether.engine.loop import TrainResult, run_training
from tether.engine.runtime import load_train_eval, prepare_run
from tether.models.loading import apply_lora, load_causal_lm, load_tokenizer, save_model
from tether.models.scoring import scored_logprobs
from tether.utils.device import model_device, to_device
from tether.utils.logging import console


@dataclass
class SFTResult:
    model_dir: Path
    train: TrainResult
    n_train: int
    n_eval: int


def _scored_logprobs(model, batch: dict, padding_free: bool) -> torch.Tensor:
    """Log-probs of the completion tokens (B, T) fp32. Packed documents (``position_ids`` in the batch) are
    scored without a 2-D mask and without a cache, so transformers builds a block-diagonal causal mask from the
    restarting position_ids (each document sees only itself; the right padding gets position 0s: one-token
    "documents" no real token attends to)."""
    return scored_logprobs(model, batch["input_ids"], batch["attention_mask"], batch["loss_mask"],
                           position_ids=batch.get("position_ids"), padding_free=padding_free)


def _scored_mask(batch: dict) -> torch.Tensor:
    """The loss mask without position 0, which has no context and is never scored."""
    mask = batch["loss_mask"].clone()
    mask[:, 0] = 0
    return mask


def _scored_tokens(batch: dict) -> int:
    return int(batch["loss_mask"][:, 1:].sum())


def evaluate_nll(model, examples, pad_token_id: int, batch_size: int, padding_free: bool = True) -> dict[str, float]:
    """Token-weighted mean NLL and perplexity of ``examples`` (completion tokens)."""
    total_nll, total_tokens = 0.0, 0
    for start in range(0, len(examples), batch_size):
        batch = to_device(collate_sft(examples[start:start + batch_size], pad_token_id), model_device(model))
        n = _scored_tokens(batch)
        if n == 0:
            continue
        loss, _ = sft_loss_from_logprobs(_scored_logprobs(model, batch, padding_free), _scored_mask(batch), num_items=n)
        total_nll += float(loss) * n
        total_tokens += n
    mean = total_nll / max(1, total_tokens)
    return {"loss": mean, "perplexity": math.exp(min(mean, 50.0)), "tokens": total_tokens}


def train_sft(cfg: SFTConfig) -> SFTResult:
    run_dir, logger = prepare_run(cfg, cfg.name)
    # 1. tokenizer + data
    tokenizer = load_tokenizer(cfg.model.name_or_path, cfg.model)
    data_kwargs = dict(max_length=cfg.data.max_length, completion_only_loss=cfg.completion_only_loss,
                       chat_template=cfg.data.chat_template, overlong=cfg.data.overlong)
    train_examples, eval_examples = load_train_eval(load_sft_dataset, cfg.data, cfg.train.seed, tokenizer,
                                                    **data_kwargs)
    if cfg.packing:
        before = len(train_examples)
        train_examples = pack_sft(train_examples, cfg.data.max_length)
        console.print(f"packing: {before} examples → {len(train_examples)} sequences of ≤{cfg.data.max_length} tokens")
    # 2. model
    model = load_causal_lm(cfg.model, seed=cfg.train.seed, pad_token_id=tokenizer.pad_token_id)
    model = apply_lora(model, cfg.model.lora, "CAUSAL_LM")
    pad = tokenizer.pad_token_id

    # 3. train
    def loss_fn(model, batch, num_items):
        return sft_loss_from_logprobs(_scored_logprobs(model, batch, cfg.model.padding_free), _scored_mask(batch),
                                      num_items=num_items)

    def evaluate(m):
        return evaluate_nll(m, eval_examples, pad, cfg.train.eval_batch_size, cfg.model.padding_free)

    eval_fn = evaluate if eval_examples else None
    result = run_training(
        model=model, n_examples=len(train_examples),
        make_batch=lambda idx: collate_sft([train_examples[i] for i in idx], pad),
        count_items=_scored_tokens, loss_fn=loss_fn, cfg=cfg.train, run_dir=run_dir, stage=cfg.name,
        logger=logger, eval_fn=eval_fn, progress_keys=["loss", "eval/loss"], config=to_dict(cfg),
    )
    logger.close()
    # 4. save
    out = save_model(model, tokenizer, run_dir / cfg.name,
                     {"recipe": "sft", "base_model": cfg.model.name_or_path, "steps": result.steps,
                      "final_metrics": {**result.last_metrics, **result.eval_metrics}, "config": to_dict(cfg)},
                     merge_lora=cfg.model.lora.merge_on_save)
    console.print(f"[bold green]SFT done[/]: model → {out}  ({result.steps} steps, {result.seconds:.0f}s)")
    return SFTResult(out, result, len(train_examples), len(eval_examples))
