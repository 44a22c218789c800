"""Bradley-Terry reward model on preference pairs (and K-way rankings expanded to pairs).

Stages: 1. tokenizer + pairs → 2. for each ensemble member: reward model from the
SFT model (new scalar head), train with −log σ(r_c − r_r [− margin]) (+ centering)
→ 3. save ``<run_dir>/<name>/`` (or ``member-i/`` + ``ensemble.json``) → 4. held-out
report: accuracy vs the "longer wins" baseline, reward-length correlation,
calibration → ``<run_dir>/<name>/eval_report.json`` and a printed table.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.markup import escape
from rich.table import Table

from tether.algos.losses.reward_model import bradley_terry_loss, pairwise_accuracy
from tether.config import RewardModelConfig, prompt_budget, to_dict
from tether.data import PairExample, collate_pairs, load_preference_dataset
from tether.engine.loop import TrainResult, run_training
from tether.engine.runtime import atomic_write_text, load_train_eval, prepare_run
from tether.eval.reward_model import reward_model_report
from tether.eval.verdict import reward_model_warning
from tether.models.loading import apply_lora, load_reward_model, load_tokenizer, resolve_model_path, save_model
from tether.models.reward import load_reward_models, reward_forward, score_with_members
from tether.models.special_tokens import reward_pad_token_id, stop_token_ids
from tether.utils.logging import console


@dataclass
class RewardModelResult:
    model_dir: Path
    report: dict[str, Any]
    members: list[TrainResult]


def pair_loss(model, batch: dict, num_items: int, use_margin: bool, center_coef: float, share_prefixes: bool = True):
    """Bradley-Terry loss of a collated pair batch, summed and divided by ``num_items`` (``share_prefixes``: each
    pair's prompt runs once, see ``reward_forward``)."""
    prompts = None
    if share_prefixes:
        prompts = (batch["attention_mask"].bool() & ~batch["loss_mask"].bool()).sum(-1).tolist()
    rewards = reward_forward(model, batch["input_ids"], batch["attention_mask"], prompts)  # (2B,)
    n_pairs = rewards.shape[0] // 2
    chosen_rewards, rejected_rewards = rewards[:n_pairs], rewards[n_pairs:]
    margin = batch["margin"] if use_margin and batch.get("has_margin") else None
    losses, metrics = bradley_terry_loss(chosen_rewards, rejected_rewards, margin=margin, center_coef=center_coef)
    return losses.sum() / num_items, metrics


def _sequences(pairs: list[PairExample]) -> tuple[list[list[int]], list[list[int]]]:
    return ([p.prompt_ids + p.chosen_ids for p in pairs], [p.prompt_ids + p.rejected_ids for p in pairs])


def _length(pair: PairExample, which: str) -> int:
    text = pair.chosen_text if which == "chosen" else pair.rejected_text
    ids = pair.chosen_ids if which == "chosen" else pair.rejected_ids
    return len(text) if text else len(ids)


def evaluate_pairs(models: list, pairs: list[PairExample], pad_token_id: int, batch_size: int, n_bins: int,
                   k: float = 1.0) -> dict[str, Any]:
    """Full held-out report for one model or an ensemble."""
    chosen, rejected = _sequences(pairs)
    chosen_scores = score_with_members(models, chosen, pad_token_id, batch_size, k)
    rejected_scores = score_with_members(models, rejected, pad_token_id, batch_size, k)
    disagreement = torch.cat([chosen_scores.std, rejected_scores.std]) if len(models) > 1 else None
    return reward_model_report(chosen_scores.mean, rejected_scores.mean,
                               [_length(p, "chosen") for p in pairs], [_length(p, "rejected") for p in pairs],
                               n_bins=n_bins, disagreement=disagreement)


def _quick_accuracy(model, pairs, pad_token_id, batch_size) -> dict[str, float]:
    chosen, rejected = _sequences(pairs)
    scores = score_with_members([model], chosen + rejected, pad_token_id, batch_size)
    return {"accuracy": pairwise_accuracy(scores.mean[:len(pairs)], scores.mean[len(pairs):])}


def print_report(report: dict[str, Any], title: str = "reward model (held-out)") -> None:
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    rows = [("pairs", f"{report['n_pairs']}"), ("pairwise accuracy", f"{report['accuracy']:.3f}"),
            ("'longer wins' baseline", f"{report['length_baseline_accuracy']:.3f}"),
            ("corr(reward, length)", f"{report['reward_length_correlation']:.3f}"),
            ("mean margin r_c − r_r", f"{report['mean_margin']:.3f}"),
            ("calibration error (ECE)", f"{report['calibration_ece']:.3f}")]
    if "ensemble_disagreement_mean" in report:
        rows.append(("ensemble disagreement (std)", f"{report['ensemble_disagreement_mean']:.3f}"))
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)
    calib = Table(title="calibration: predicted P(chosen wins) vs observed")
    for col in ("bin", "count", "predicted", "observed"):
        calib.add_column(col, justify="right")
    for b in report["calibration"]:
        if b["count"]:
            calib.add_row(f"{b['lo']:.1f}–{b['hi']:.1f}", str(b["count"]), f"{b['mean_predicted']:.3f}",
                          f"{b['observed']:.3f}")
    console.print(calib)


def train_reward_model(cfg: RewardModelConfig) -> RewardModelResult:
    run_dir, logger = prepare_run(cfg, cfg.name)
    # 1. tokenizer + pairs
    tokenizer = load_tokenizer(cfg.model.name_or_path, cfg.model)
    # a pad id that is never an EOS id, so every path (and plain transformers) reads each sequence's last token
    pad = reward_pad_token_id(tokenizer, stop_token_ids(resolve_model_path(cfg.model.name_or_path, False), tokenizer))
    train_pairs, eval_pairs = load_train_eval(
        load_preference_dataset, cfg.data, cfg.train.seed, tokenizer, max_length=cfg.data.max_length,
        max_prompt_length=prompt_budget(cfg.data), chat_template=cfg.data.chat_template, overlong=cfg.data.overlong)
    out_dir = run_dir / cfg.name
    results, member_names = [], []
    # 2. train each member (one unless ensemble_size > 1), 3. save it
    for member in range(cfg.ensemble_size):
        seed = cfg.train.seed + member
        stage = cfg.name if cfg.ensemble_size == 1 else f"{cfg.name}/member-{member}"
        member_train = cfg.train if cfg.ensemble_size == 1 else type(cfg.train)(**{**to_dict(cfg.train), "seed": seed})
        model = load_reward_model(cfg.model, seed=seed, pad_token_id=pad)
        model = apply_lora(model, cfg.model.lora, "SEQ_CLS")
        member_logger = logger if member == 0 else type(logger)(run_dir, stage, list(cfg.train.report_to))
        result = run_training(
            model=model, n_examples=len(train_pairs),
            make_batch=lambda idx: collate_pairs([train_pairs[i] for i in idx], pad),
            count_items=lambda b: b["input_ids"].shape[0] // 2,
            loss_fn=lambda m, b, n: pair_loss(m, b, n, cfg.use_margin, cfg.center_coef, cfg.model.share_prefixes),
            cfg=member_train, run_dir=run_dir, stage=stage, logger=member_logger,
            eval_fn=(lambda m: _quick_accuracy(m, eval_pairs, pad, cfg.train.eval_batch_size)) if eval_pairs else None,
            progress_keys=["loss", "rewards/accuracies", "eval/accuracy"], config=to_dict(cfg),
        )
        if member_logger is not logger:
            member_logger.close()
        target = out_dir if cfg.ensemble_size == 1 else out_dir / f"member-{member}"
        meta = {"recipe": "reward_model", "base_model": cfg.model.name_or_path, "seed": seed, "steps": result.steps,
                "config": to_dict(cfg)}
        save_model(model, tokenizer, target, meta, merge_lora=cfg.model.lora.merge_on_save)
        del model
        results.append(result)
        member_names.append(target.name)
    if cfg.ensemble_size > 1:
        atomic_write_text(out_dir / "ensemble.json", json.dumps({"members": member_names, "k": cfg.ensemble_k}) + "\n")
    # 4. held-out report, on the saved directories exactly as users will load them
    models = load_reward_models(out_dir, cfg.model.precision)
    report: dict[str, Any] = {"n_train_pairs": len(train_pairs)}
    if eval_pairs:
        report.update(evaluate_pairs(models, eval_pairs, pad, cfg.train.eval_batch_size, cfg.calibration_bins,
                                     cfg.ensemble_k))
        logger.log({f"report/{k}": v for k, v in report.items() if isinstance(v, (int, float))}, results[0].steps)
        print_report(report)
    else:
        console.print("[yellow]no held-out pairs (eval_fraction=0 and no eval_file): no report[/]")
    atomic_write_text(out_dir / "eval_report.json", json.dumps(report, indent=2) + "\n")
    logger.close()
    console.print(f"[bold green]reward model done[/]: {out_dir}  (report: {out_dir / 'eval_report.json'})")
    warning = reward_model_warning(report)
    if warning:  # last, where it is seen: RL against this model would optimise the wrong thing
        console.print(f"[bold red]warning:[/] {escape(warning)}", soft_wrap=True)
    return RewardModelResult(out_dir, report, results)
