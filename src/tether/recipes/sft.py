"""Supervised fine-tuning on demonstrations.

Stages: 1. tokenizer + data → 2. model (+ LoRA) → 3. train (loss on completion
tokens only by default) → 4. save an HF directory to ``<run_dir>/<name>/``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from tether.algos.losses.sft import sft_loss
from tether.config import SFTConfig, to_dict
from tether.data import collate_sft, load_sft_dataset, pack_sft
from tether.models.loading import apply_lora, load_causal_lm, load_tokenizer, save_model
from tether.recipes.common import load_train_eval, prepare_run
from tether.recipes.loop import TrainResult, run_training
from tether.utils.logging import console


@dataclass
class SFTResult:
    model_dir: Path
    train: TrainResult
    n_train: int
    n_eval: int


def _forward_logits(model, batch: dict) -> torch.Tensor:
    if "position_ids" in batch:
        # Packed documents: no 2-D mask and no cache, so transformers reads the document boundaries from the
        # restarting position_ids and builds a block-diagonal causal mask (each document sees only itself).
        # The right padding gets position 0s (one-token "documents"); no real token attends to it.
        return model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def _scored_tokens(batch: dict) -> int:
    return int(batch["loss_mask"][:, 1:].sum())


def evaluate_nll(model, examples, pad_token_id: int, batch_size: int) -> dict[str, float]:
    """Token-weighted mean NLL and perplexity of ``examples`` (completion tokens)."""
    total_nll, total_tokens = 0.0, 0
    for start in range(0, len(examples), batch_size):
        batch = collate_sft(examples[start:start + batch_size], pad_token_id)
        n = _scored_tokens(batch)
        if n == 0:
            continue
        loss, _ = sft_loss(_forward_logits(model, batch), batch["input_ids"], batch["loss_mask"], num_items=n)
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
        return sft_loss(_forward_logits(model, batch), batch["input_ids"], batch["loss_mask"], num_items=num_items)

    eval_fn = (lambda m: evaluate_nll(m, eval_examples, pad, cfg.train.eval_batch_size)) if eval_examples else None
    result = run_training(
        model=model, n_examples=len(train_examples),
        make_batch=lambda idx: collate_sft([train_examples[i] for i in idx], pad),
        count_items=_scored_tokens, loss_fn=loss_fn, cfg=cfg.train, run_dir=run_dir, stage=cfg.name,
        logger=logger, eval_fn=eval_fn, progress_keys=["loss", "eval/loss"],
    )
    logger.close()
    # 4. save
    out = save_model(model, tokenizer, run_dir / cfg.name,
                     {"recipe": "sft", "base_model": cfg.model.name_or_path, "steps": result.steps,
                      "final_metrics": {**result.last_metrics, **result.eval_metrics}, "config": to_dict(cfg)},
                     merge_lora=cfg.model.lora.merge_on_save)
    console.print(f"[bold green]SFT done[/]: model → {out}  ({result.steps} steps, {result.seconds:.0f}s)")
    return SFTResult(out, result, len(train_examples), len(eval_examples))
