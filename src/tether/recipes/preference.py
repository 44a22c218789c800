"""Offline preference optimisation: DPO and its family (IPO, cDPO, robust DPO, hinge, KTO, ORPO, SimPO).

Stages: 1. tokenizer + data (KTO: + its fixed mismatched pairs) → 2. policy, dropout off
(+ LoRA) → 3. reference log-probs, computed ONCE before training (from the starting policy
itself, its LoRA base with adapters disabled, or a separate ``ref_model``) and cached, so no
second model is held during training → 4. train with the chosen loss from
``PREFERENCE_LOSSES`` → 5. save.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from tether.algos.losses.preference import REFERENCE_FREE, UNPAIRED, get_preference_loss
from tether.config import PreferenceConfig, prompt_budget, to_dict
from tether.data import DataError, collate_pairs, collate_unpaired, load_preference_dataset, load_unpaired_dataset
from tether.engine.loop import TrainResult, planned_indices, run_training
from tether.engine.runtime import load_train_eval, prepare_run
from tether.models.loading import apply_lora, disable_dropout, is_peft, load_causal_lm, load_tokenizer, save_model
from tether.models.scoring import scored_logprobs
from tether.utils.device import model_device, to_device
from tether.utils.distributed import Dist
from tether.utils.logging import console


@dataclass
class PreferenceResult:
    model_dir: Path
    train: TrainResult
    n_train: int
    n_eval: int


def policy_logps(model, batch: dict, padding_free: bool = True,
                 share_prefixes: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed response log-probs (N,) fp32 and response token counts (N,) for a collated batch (a pair's chosen and
    rejected share their prompt's forward with ``share_prefixes``)."""
    logps = scored_logprobs(model, batch["input_ids"], batch["attention_mask"], batch["loss_mask"],
                            padding_free=padding_free, share_prefixes=share_prefixes).sum(-1)
    lengths = batch["loss_mask"][:, 1:].sum(-1).clamp(min=1).float()
    return logps, lengths


DEFAULT_BETA = {"simpo": 2.0}  # SimPO's rewards are per-token means: Meng et al. 2024 used β = 2.0-2.5


def loss_beta(cfg: PreferenceConfig) -> float:
    """β as configured, or the loss's usual value when ``kl_coef`` is empty (2.0 for simpo, else 0.1)."""
    return cfg.kl_coef if cfg.kl_coef is not None else DEFAULT_BETA.get(cfg.loss, 0.1)


def simpo_gamma_beta_ratio(cfg: PreferenceConfig) -> float:
    """SimPO's margin as γ/β: ``simpo_gamma_beta_ratio``, or an absolute ``simpo_gamma`` divided by β."""
    if cfg.simpo_gamma is None:
        return cfg.simpo_gamma_beta_ratio
    return cfg.simpo_gamma / loss_beta(cfg)


def mismatched_partners(prompts: list[list[int]], what: str = "the data") -> list[int]:
    """For each example, another example with a DIFFERENT prompt, whose completion KTO pairs with its prompt.

    Examples are listed group after group (one group per prompt, in order of first appearance); the
    k-th example of a group of m takes the (k mod (n − m))-th example after its group's block,
    cyclically: never its own prompt (a ranking expanded to many pairs of one prompt, or a pair split
    into a desirable and an undesirable example, does not mismatch with itself), the partners of one
    large group spread evenly over all the others, and the choice is fixed, so the mismatched pairs'
    reference log-probs can be cached.
    """
    groups: dict[tuple[int, ...], list[int]] = {}
    for index, prompt in enumerate(prompts):
        groups.setdefault(tuple(prompt), []).append(index)
    if len(groups) < 2 and prompts:
        raise DataError(f"KTO: every example of {what} has the same prompt, so its reference point (the KL "
                        "estimated on completions of OTHER prompts) cannot be estimated; add examples of other "
                        "prompts")
    order = [index for members in groups.values() for index in members]
    n = len(order)
    partners = [0] * n
    block_end = 0
    for members in groups.values():
        block_end += len(members)
        others = n - len(members)
        for k, index in enumerate(members):
            partners[index] = order[(block_end + k % others) % n]
    return partners


def kl_examples(examples: list, what: str = "the data") -> list:
    """KTO's mismatched examples: example i's prompt with the completion of its :func:`mismatched_partners`."""
    partners = mismatched_partners([e.prompt_ids for e in examples], what)
    return [dataclasses.replace(example, completion_ids=examples[partner].completion_ids,
                                completion_text=examples[partner].completion_text)
            for example, partner in zip(examples, partners)]


def _make_batch(cfg: PreferenceConfig, examples: list, indices: list[int], pad: int,
                mismatched: list | None = None) -> dict:
    """Collated pairs, or (KTO) examples plus ``batch["kl"]``: the same rows of ``mismatched``."""
    if cfg.loss in UNPAIRED:
        batch = collate_unpaired([examples[i] for i in indices], pad)
        batch["kl"] = collate_unpaired([mismatched[i] for i in indices], pad)
    else:
        batch = collate_pairs([examples[i] for i in indices], pad)
    batch["index"] = torch.tensor(indices, dtype=torch.long)
    return batch


@torch.no_grad()
def reference_logps(ref_model, cfg: PreferenceConfig, examples: list, pad: int, batch_size: int,
                    indices: list[int] | None = None, mismatched: list | None = None) -> dict[str, torch.Tensor]:
    """Reference log-probs, computed once: {"logps": (N,) or (N, 2), "kl_logps": (N,) of KTO's ``mismatched``}.

    Only ``indices`` (default: all) are computed; the others stay NaN, so using one by
    mistake poisons the loss loudly instead of silently. In a data-parallel run each process
    computes a contiguous share of ``indices`` and every process ends with all of them.
    """
    ref_model.eval()
    dist = Dist.current()
    indices = list(range(len(examples))) if indices is None else indices
    shape = (len(examples),) if cfg.loss in UNPAIRED else (len(examples), 2)
    out = {"logps": torch.full(shape, float("nan"))}
    if cfg.loss in UNPAIRED:
        out["kl_logps"] = torch.full((len(examples),), float("nan"))
    indices = dist.shard_evenly(indices)
    for start in tqdm(range(0, len(indices), batch_size), desc="reference log-probs", unit="batch", leave=False,
                      disable=not dist.is_main):
        chunk = indices[start:start + batch_size]
        batch = to_device(_make_batch(cfg, examples, chunk, pad, mismatched), model_device(ref_model))
        values, _ = policy_logps(ref_model, batch, cfg.model.padding_free, cfg.model.share_prefixes)
        values = values.cpu()
        if cfg.loss in UNPAIRED:
            out["logps"][chunk] = values
            out["kl_logps"][chunk] = policy_logps(ref_model, batch["kl"], cfg.model.padding_free,
                                                  cfg.model.share_prefixes)[0].cpu()
        else:
            out["logps"][chunk] = torch.stack([values[:len(chunk)], values[len(chunk):]], dim=1)
    return {key: _merge_shares(dist, values) for key, values in out.items()}


def _merge_shares(dist: Dist, values: torch.Tensor) -> torch.Tensor:
    """Every process's computed entries (each entry computed by one process, NaN on the others) in one tensor."""
    if not dist.enabled:
        return values
    shares = dist.all_gather(values.unsqueeze(0))  # (world, N[, 2])
    computed = ~torch.isnan(shares)
    merged = torch.where(computed, shares, torch.zeros_like(shares)).sum(0)  # one term per entry: exact
    return torch.where(computed.any(0), merged, torch.full_like(merged, float("nan")))


def preference_loss(model, batch: dict, num_items: int, cfg: PreferenceConfig, ref: dict | None):
    """Micro-batch loss for the configured loss name, summed and divided by ``num_items``."""
    loss_fn = get_preference_loss(cfg.loss)
    logps, lengths = policy_logps(model, batch, cfg.model.padding_free, cfg.model.share_prefixes)
    index = batch["index"].cpu()  # the cached reference log-probs live on the CPU
    if cfg.loss in UNPAIRED:
        with torch.no_grad():
            kl_logps, _ = policy_logps(model, batch["kl"], cfg.model.padding_free, cfg.model.share_prefixes)
        # KTO's KL estimate is a mean over the whole (global) micro-batch: summed over processes
        # (a stand-in batch of a process whose slice was empty counts for nothing)
        share = 0.0 if batch.get("stand_in") else 1.0
        gap = Dist.current().sum({"sum": share * float((kl_logps - ref["kl_logps"][index].to(kl_logps.device)).sum()),
                                  "n": share * index.numel()})
        kl_estimate = torch.tensor(gap["sum"] / gap["n"], device=logps.device)
        losses, metrics = loss_fn(logps, ref["logps"][index].to(logps.device), batch["desirable"], loss_beta(cfg),
                                  kl_estimate,
                                  desirable_weight=cfg.kto_desirable_weight,
                                  undesirable_weight=cfg.kto_undesirable_weight)
        return losses.sum() / num_items, metrics
    n = index.numel()
    chosen, rejected = logps[:n], logps[n:]
    chosen_len, rejected_len = lengths[:n], lengths[n:]
    ref_chosen = ref["logps"][index, 0].to(logps.device) if ref is not None else None
    ref_rejected = ref["logps"][index, 1].to(logps.device) if ref is not None else None
    options: dict[str, Any] = {}
    if cfg.loss in ("cdpo", "robust"):
        options["label_smoothing"] = cfg.label_smoothing
    if cfg.loss == "simpo":
        options["gamma_beta_ratio"] = simpo_gamma_beta_ratio(cfg)
    if cfg.loss in ("simpo", "orpo"):
        options.update(chosen_lengths=chosen_len, rejected_lengths=rejected_len)
    if cfg.loss == "ipo" and cfg.ipo_average_logps:
        chosen, rejected = chosen / chosen_len, rejected / rejected_len
        ref_chosen, ref_rejected = ref_chosen / chosen_len, ref_rejected / rejected_len
    losses, metrics = loss_fn(chosen, rejected, ref_chosen, ref_rejected, loss_beta(cfg), **options)
    if cfg.sft_coef > 0:
        nll = -(logps[:n] / chosen_len)
        losses = losses + cfg.sft_coef * nll
        metrics["loss/sft_nll"] = nll.mean().detach()
    return losses.sum() / num_items, metrics


def _reference_model(cfg: PreferenceConfig, policy, pad: int):
    """The frozen reference: a separate model, the LoRA base (adapters off), or the untrained policy itself."""
    if cfg.ref_model:
        ref_cfg = dataclasses.replace(cfg.model, name_or_path=cfg.ref_model, random_init=False, config_overrides={},
                                      lora=dataclasses.replace(cfg.model.lora, enabled=False))
        return disable_dropout(load_causal_lm(ref_cfg, seed=cfg.train.seed, pad_token_id=pad))
    return policy  # before the first update the policy IS the reference


def _evaluate(model, cfg: PreferenceConfig, examples: list, ref: dict | None, pad: int,
              mismatched: list | None = None) -> dict[str, float]:
    totals: dict[str, float] = {}
    n_total = len(examples)
    for start in range(0, n_total, cfg.train.eval_batch_size):
        indices = list(range(start, min(n_total, start + cfg.train.eval_batch_size)))
        batch = to_device(_make_batch(cfg, examples, indices, pad, mismatched), model_device(model))
        loss, metrics = preference_loss(model, batch, n_total, cfg, ref)
        totals["loss"] = totals.get("loss", 0.0) + float(loss)
        for key, value in metrics.items():
            totals[key] = totals.get(key, 0.0) + float(value) * len(indices) / n_total
    return totals


def train_preference(cfg: PreferenceConfig) -> PreferenceResult:
    get_preference_loss(cfg.loss)  # fail fast on an unknown loss name
    run_dir, logger = prepare_run(cfg, cfg.name)
    # 1. tokenizer + data (+ KTO's mismatched prompt/completion pairs, fixed once)
    tokenizer = load_tokenizer(cfg.model.name_or_path, cfg.model)
    pad = tokenizer.pad_token_id
    loader = load_unpaired_dataset if cfg.loss in UNPAIRED else load_preference_dataset
    train_examples, eval_examples = load_train_eval(
        loader, cfg.data, cfg.train.seed, tokenizer, max_length=cfg.data.max_length,
        max_prompt_length=prompt_budget(cfg.data), chat_template=cfg.data.chat_template, overlong=cfg.data.overlong)
    train_kl = eval_kl = None
    if cfg.loss in UNPAIRED:
        train_kl = kl_examples(train_examples, f"the training data ({cfg.data.train_file})")
        eval_kl = kl_examples(eval_examples, "the held-out data") if eval_examples else None
    # 2. policy, dropout off: the loss compares it with a dropout-free reference (its LoRA dropout stays)
    policy = disable_dropout(load_causal_lm(cfg.model, seed=cfg.train.seed, pad_token_id=pad))
    policy = apply_lora(policy, cfg.model.lora, "CAUSAL_LM")
    # 3. reference log-probs, once
    ref_train = ref_eval = None
    if cfg.loss not in REFERENCE_FREE:
        ref_model = _reference_model(cfg, policy, pad)
        with (ref_model.disable_adapter() if is_peft(ref_model) else contextlib.nullcontext()):
            used = planned_indices(len(train_examples), cfg.train, Dist.current().world_size)
            console.print(f"reference log-probs for {len(used)} training + {len(eval_examples)} held-out examples")
            ref_train = reference_logps(ref_model, cfg, train_examples, pad, cfg.train.eval_batch_size, used,
                                        train_kl)
            ref_eval = reference_logps(ref_model, cfg, eval_examples, pad, cfg.train.eval_batch_size,
                                       mismatched=eval_kl) if eval_examples else None
        if ref_model is not policy:
            del ref_model
    # 4. train
    result = run_training(
        model=policy, n_examples=len(train_examples),
        make_batch=lambda idx: _make_batch(cfg, train_examples, idx, pad, train_kl),
        count_items=lambda b: int(b["index"].numel()),
        loss_fn=lambda m, b, n: preference_loss(m, b, n, cfg, ref_train),
        cfg=cfg.train, run_dir=run_dir, stage=cfg.name, logger=logger,
        eval_fn=(lambda m: _evaluate(m, cfg, eval_examples, ref_eval, pad, eval_kl)) if eval_examples else None,
        progress_keys=["loss", "rewards/accuracies", "rewards/margins", "eval/rewards/accuracies"],
        config=to_dict(cfg),
    )
    logger.close()
    # 5. save
    out = save_model(policy, tokenizer, run_dir / cfg.name,
                     {"recipe": "preference", "loss": cfg.loss, "beta": loss_beta(cfg),
                      "base_model": cfg.model.name_or_path, "reference": cfg.ref_model or cfg.model.name_or_path,
                      "steps": result.steps, "final_metrics": {**result.last_metrics, **result.eval_metrics},
                      "config": to_dict(cfg)},
                     merge_lora=cfg.model.lora.merge_on_save)
    console.print(f"[bold green]{cfg.loss} done[/]: policy → {out}  ({result.steps} steps, {result.seconds:.0f}s)")
    return PreferenceResult(out, result, len(train_examples), len(eval_examples))
