"""``tether quickstart``: SFT → reward model → DPO on the embedded SmolLM2-135M-Instruct.

It uses the example data shipped inside the package (the same files as
``examples/data/``), small settings measured to finish on a 2-core CPU, and prints
where every output is. ``tiny=true`` (``--tiny``) runs the same flow on a tiny random
model as a smoke test.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from rich.table import Table

from tether.config import (
    DataConfig,
    ModelConfig,
    PreferenceConfig,
    QuickstartConfig,
    RewardModelConfig,
    SFTConfig,
    TrainConfig,
)
from tether.recipes.common import atomic_write_text, set_threads
from tether.utils.logging import console

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "data"

TINY_OVERRIDES = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
                  "num_key_value_heads": 2, "head_dim": 16}


def asset(name: str) -> str:
    path = ASSETS / name
    if not path.is_file():
        raise FileNotFoundError(f"packaged data file {path} is missing; reinstall tether")
    return str(path)


def _model(cfg: QuickstartConfig, name_or_path: str) -> ModelConfig:
    if cfg.tiny and name_or_path == "embedded":
        return ModelConfig(name_or_path="embedded", random_init=True, config_overrides=dict(TINY_OVERRIDES))
    return ModelConfig(name_or_path=name_or_path)


def _train(cfg: QuickstartConfig, steps: int, lr: float, batch_size: int) -> TrainConfig:
    return TrainConfig(learning_rate=lr, max_steps=steps, batch_size=batch_size, eval_batch_size=batch_size,
                       warmup_ratio=0.1, num_threads=cfg.num_threads,
                       save_final_checkpoint=False)  # the saved models are the outputs; skip 1.5 GB of optimizer state


def stage_configs(cfg: QuickstartConfig) -> tuple[SFTConfig, RewardModelConfig, PreferenceConfig]:
    """The three stage configs the quickstart runs (also useful as a template for your own)."""
    run = cfg.run_dir
    pair_batch = max(1, cfg.batch_size // 2)
    lr_scale = 50.0 if cfg.tiny else 1.0  # a random tiny model needs a much larger step size
    sft = SFTConfig(
        run_dir=run, name="sft", model=_model(cfg, "embedded"),
        data=DataConfig(train_file=asset("sft.jsonl"), eval_fraction=0.1, max_eval_examples=cfg.eval_examples,
                        max_length=cfg.max_length),
        train=_train(cfg, cfg.sft_steps, 2e-5 * lr_scale, cfg.batch_size))
    sft_dir = str(Path(run) / "sft")
    rm = RewardModelConfig(
        run_dir=run, name="rm", model=ModelConfig(name_or_path=sft_dir),
        data=DataConfig(train_file=asset("preferences.jsonl"), eval_file=asset("preferences_eval.jsonl"),
                        max_eval_examples=cfg.eval_examples, max_length=cfg.max_length),
        train=_train(cfg, cfg.rm_steps, 2e-5 * lr_scale, pair_batch))
    dpo = PreferenceConfig(
        run_dir=run, name="dpo", model=ModelConfig(name_or_path=sft_dir), loss="dpo", beta=0.1,
        data=DataConfig(train_file=asset("preferences.jsonl"), eval_file=asset("preferences_eval.jsonl"),
                        max_eval_examples=cfg.eval_examples // 2, max_length=cfg.max_length),
        train=_train(cfg, cfg.dpo_steps, 1e-5 * lr_scale, pair_batch))
    return sft, rm, dpo


def run_quickstart(cfg: QuickstartConfig) -> dict[str, Any]:
    from tether.recipes.preference import train_preference
    from tether.recipes.reward_model import train_reward_model
    from tether.recipes.sft import train_sft

    set_threads(cfg.num_threads)
    sft_cfg, rm_cfg, dpo_cfg = stage_configs(cfg)
    what = "a tiny random model" if cfg.tiny else "SmolLM2-135M-Instruct (embedded)"
    console.print(f"[bold]tether quickstart[/]: SFT → reward model → DPO on {what}, run directory {cfg.run_dir}")
    timings: dict[str, float] = {}
    started = time.time()
    sft = train_sft(sft_cfg)
    timings["sft"] = time.time() - started
    mark = time.time()
    rm = train_reward_model(rm_cfg)
    timings["rm"] = time.time() - mark
    mark = time.time()
    dpo = train_preference(dpo_cfg)
    timings["dpo"] = time.time() - mark
    timings["total"] = time.time() - started
    summary = {
        "model": what,
        "run_dir": str(Path(cfg.run_dir).resolve()),
        "outputs": {"sft": str(sft.model_dir), "rm": str(rm.model_dir), "dpo": str(dpo.model_dir),
                    "rm_report": str(rm.model_dir / "eval_report.json"),
                    "metrics": str(Path(cfg.run_dir) / "metrics.jsonl"),
                    "config": str(Path(cfg.run_dir) / "config.yaml")},
        "sft": {"eval_loss": sft.train.eval_metrics.get("eval/loss")},
        "rm": {k: rm.report.get(k) for k in ("accuracy", "length_baseline_accuracy", "reward_length_correlation",
                                             "calibration_ece", "n_pairs")},
        "dpo": {k: dpo.train.eval_metrics.get(f"eval/{k}") for k in ("rewards/accuracies", "rewards/margins")},
        "seconds": {k: round(v, 1) for k, v in timings.items()},
    }
    atomic_write_text(Path(cfg.run_dir) / "summary.json", json.dumps(summary, indent=2) + "\n")
    _print_summary(summary)
    return summary


def _print_summary(summary: dict[str, Any]) -> None:
    table = Table(title="quickstart outputs")
    table.add_column("stage")
    table.add_column("where")
    table.add_column("result", justify="right")
    rm, dpo, secs = summary["rm"], summary["dpo"], summary["seconds"]
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    table.add_row("sft", summary["outputs"]["sft"], f"eval loss {fmt(summary['sft']['eval_loss'])}  ({secs['sft']:.0f}s)")
    table.add_row("rm", summary["outputs"]["rm"],
                  f"acc {fmt(rm['accuracy'])} vs longer-wins {fmt(rm['length_baseline_accuracy'])}  ({secs['rm']:.0f}s)")
    table.add_row("dpo", summary["outputs"]["dpo"],
                  f"pref acc {fmt(dpo['rewards/accuracies'])}, margin {fmt(dpo['rewards/margins'])}  ({secs['dpo']:.0f}s)")
    console.print(table)
    console.print(f"metrics: {summary['outputs']['metrics']}   config: {summary['outputs']['config']}   "
                  f"summary: {Path(summary['run_dir']) / 'summary.json'}   total {secs['total']:.0f}s")
