"""``tether quickstart``: the whole alignment lifecycle on the embedded SmolLM2-135M-Instruct.

    SFT → sample K → simulated panel → reward model → PPO (held-out gold + hacking alarm)
        and DPO on the same preferences → held-out evaluation with 95% intervals → report.html

It runs on a built-in task (``task=``, ``tether.tasks.registry``): ``sentiment`` (continue a
neutral review opening; the gold is VADER's compound score, Ziegler et al. 2019),
``helpful`` (short answers to everyday questions; the gold is ``tether.tasks.helpful``) or ``harmless``
(refuse mild harmful requests, answer benign ones; one reward model on the combined gold helpfulness − 3 · harm, and
the final evaluation with the safety metrics: harm rate, over-refusal rate, helpfulness; the two-objective,
constrained and Constitutional-AI lifecycle of that task is ``tether pipeline examples/pipeline_harmless.yaml``). SFT
on the task's demonstrations, sampling on its train prompts, the panel judging with its gold
utility (plus a switchable planted length bias), the held-out evaluation during PPO on its
held-out prompts and the final evaluation on its test prompts, which share no subject with
the others. The reward model and DPO train on the panel's preferences followed by the task's
shipped preference pairs (a few hundred noisy on-policy labels alone are too few for a useful
reward model in a CPU-sized run). The summary ends with the alignment checks
(:func:`alignment_checks`): PPO's gold gain and win-rate against SFT with their intervals, the
reward model's own score, the alarm. ``seed=`` seeds every stage.

Every stage writes to the run directory; ``tiny=true`` (``--tiny``) runs the same flow on
a tiny random model, in ``runs/quickstart-tiny`` unless ``run_dir`` says otherwise. Before any
stage runs, a run directory holding a quickstart made with other settings (or another model)
stops the command with what differs, so nothing in it is overwritten (``resume=never`` moves
it aside and starts afresh).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import yaml
from rich.table import Table

from tether.config import (
    DataConfig,
    EvalConfig,
    HeldOutConfig,
    LabelExportConfig,
    LabelSimulateConfig,
    LabelStatsConfig,
    ModelConfig,
    PPOConfig,
    PreferenceConfig,
    QuickstartConfig,
    ReportConfig,
    RewardModelConfig,
    SampleConfig,
    SFTConfig,
    TrainConfig,
    to_dict,
)
from tether.engine.runtime import atomic_write_text, configure_cpu, record_config, settle_precision
from tether.eval.intervals import Interval
from tether.recipes.registry import RECIPES
from tether.tasks.registry import get_task
from tether.utils.logging import console
from tether.utils.resume import NOT_THE_RESULT, ResumeRefused, config_diff, describe_diff, move_run_aside, output_config

TINY_RUN_DIR = "runs/quickstart-tiny"  # --tiny's default: a tiny run never writes into the real one's directory
STAGES = ("sft", "sample", "label simulate", "label stats", "label export", "rm", "ppo", "dpo", "eval")  # in order
MODEL_STAGES = ("sft", "rm", "ppo", "dpo")  # stages whose output directory records the config that made it
TINY_OVERRIDES = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
                  "num_key_value_heads": 2, "head_dim": 16}


def _train(cfg: QuickstartConfig, steps: int, lr: float, batch_size: int) -> TrainConfig:
    return TrainConfig(learning_rate=lr, max_steps=steps, batch_size=batch_size, eval_batch_size=batch_size,
                       warmup_ratio=0.1, num_threads=cfg.num_threads, seed=cfg.seed,
                       save_final_checkpoint=False)  # the saved models are the outputs; skip the optimizer state


def stage_configs(cfg: QuickstartConfig) -> dict[str, Any]:
    """Every stage's config, in order (also a template for your own pipeline)."""
    task = get_task(cfg.task)
    run = Path(cfg.run_dir)
    lr_scale = 50.0 if cfg.tiny else 1.0  # a random tiny model needs a much larger step size
    pair_batch = max(1, cfg.batch_size // 2)
    max_new_tokens = cfg.max_new_tokens or task.max_new_tokens
    sft_dir, rm_dir = str(run / "sft"), str(run / "rm")
    base = (ModelConfig(name_or_path="embedded", random_init=True, config_overrides=dict(TINY_OVERRIDES),
                        precision=cfg.precision)
            if cfg.tiny else ModelConfig(name_or_path="embedded", precision=cfg.precision))
    trained = lambda path: ModelConfig(name_or_path=path, precision=cfg.precision)  # noqa: E731
    data = lambda file, **kw: DataConfig(train_file=file, max_length=cfg.max_length,  # noqa: E731
                                         chat_template=task.chat_template, **kw)
    preferences = str(run / "preferences.jsonl")
    training_pairs = str(run / "training_pairs.jsonl")  # the panel's preferences + the shipped pairs
    heldout_pairs = task.path("heldout_pairs_file")  # held-out prompts, gold-labelled pairs
    prompts = task.path("prompts_file")
    return {
        "sft": SFTConfig(
            run_dir=str(run), name="sft", model=base,
            data=data(task.path("sft_file"), eval_fraction=0.1, max_eval_examples=cfg.eval_examples),
            train=_train(cfg, cfg.sft_steps, 2e-5 * lr_scale, cfg.batch_size)),
        "sample": SampleConfig(
            model=trained(sft_dir), data=data(prompts), seed=cfg.seed,
            output=str(run / "samples.jsonl"), k=cfg.k, max_new_tokens=max_new_tokens, temperature=cfg.temperature,
            batch_size=16, max_prompts=cfg.sample_prompts),
        "label simulate": LabelSimulateConfig(
            samples=str(run / "samples.jsonl"), db=str(run / "labels.sqlite"), labels_per_item=cfg.labels_per_item,
            utility=task.utility, noise_scale=task.noise_scale, seed=cfg.seed,
            planted_length_bias=cfg.planted_length_bias, pairs_per_prompt=cfg.pairs_per_prompt),
        "label stats": LabelStatsConfig(db=str(run / "labels.sqlite")),
        "label export": LabelExportConfig(db=str(run / "labels.sqlite"), output=preferences),
        "rm": RewardModelConfig(
            run_dir=str(run), name="rm", model=trained(sft_dir),
            data=data(training_pairs, eval_file=heldout_pairs, max_eval_examples=cfg.eval_examples),
            train=_train(cfg, cfg.rm_steps, 2e-5 * lr_scale, pair_batch)),
        "ppo": PPOConfig(
            run_dir=str(run), name="ppo", model=trained(sft_dir), reward=rm_dir, seed=cfg.seed,
            data=data(prompts), temperature=cfg.temperature,
            max_new_tokens=max_new_tokens, num_iterations=cfg.ppo_iterations, rollout_batch_size=cfg.ppo_batch,
            minibatch_size=max(1, cfg.ppo_batch // 2), ppo_epochs=cfg.ppo_epochs,
            learning_rate=cfg.ppo_learning_rate * lr_scale,
            value_learning_rate=1e-5 * lr_scale, kl_coef=cfg.kl_coef, target_kl=cfg.target_kl,
            missing_eos_penalty=cfg.missing_eos_penalty,
            num_threads=cfg.num_threads,
            heldout=HeldOutConfig(gold=task.gold, prompts_file=task.path("heldout_file"),
                                  max_prompts=cfg.heldout_prompts, every=cfg.heldout_every)),
        "dpo": PreferenceConfig(
            run_dir=str(run), name="dpo", model=trained(sft_dir), loss="dpo", kl_coef=0.1,
            data=data(training_pairs, eval_file=heldout_pairs, max_eval_examples=cfg.eval_examples // 2),
            train=_train(cfg, cfg.dpo_steps, 1e-5 * lr_scale, pair_batch)),
        "eval": EvalConfig(
            run_dir=str(run), models=[sft_dir, str(run / "ppo"), str(run / "dpo")], reward=rm_dir, gold=task.gold,
            safety=task.safety, data=data(task.path("test_file")), temperature=cfg.eval_temperature, seed=cfg.seed,
            max_prompts=cfg.eval_prompts, max_new_tokens=max_new_tokens, num_threads=cfg.num_threads,
            precision=cfg.precision),
        "report": ReportConfig(run_dir=str(run), title=f"tether quickstart ({task.name} task)"),
    }


def with_run_dir(cfg: QuickstartConfig) -> QuickstartConfig:
    """``cfg`` with its run directory settled: ``--tiny`` without a ``run_dir`` writes to runs/quickstart-tiny."""
    if cfg.tiny and cfg.run_dir == QuickstartConfig().run_dir:
        return dataclasses.replace(cfg, run_dir=TINY_RUN_DIR)
    return cfg


def _recorded_quickstart(run: Path) -> dict | None:
    """The quickstart settings recorded in ``run/config.yaml`` (None if there are none)."""
    try:
        recorded = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return None
    return recorded.get("quickstart") if isinstance(recorded, dict) else None


def check_run_dir(cfg: QuickstartConfig, stages: dict[str, Any]) -> None:
    """Stop (ResumeRefused, exit 2) before anything is written when ``cfg.run_dir`` holds a quickstart made with other
    settings: its recorded quickstart settings, or a stage's model directory made with another config (a run
    directory of an earlier tether records only the latter)."""
    run = Path(cfg.run_dir)
    cfg = settle_precision(copy.deepcopy(cfg))  # (precision auto is recorded as the mode it picked)
    found = [(f"{run / 'config.yaml'} (quickstart)", _recorded_quickstart(run), to_dict(cfg))]
    found += [(str(run / name), output_config(run / name), to_dict(stages[name])) for name in MODEL_STAGES]
    for where, recorded, planned in found:
        diff = config_diff(recorded, planned, NOT_THE_RESULT) if recorded else []
        if diff:
            raise ResumeRefused(f"{run} holds a quickstart made with other settings ({where}: {describe_diff(diff)}); "
                                f"use another run_dir (`tether quickstart --tiny` writes to {TINY_RUN_DIR}) or "
                                "resume=never to move it aside and start afresh")


def merge_training_pairs(panel_preferences: Path, output: Path, shipped_pairs: str | None) -> int:
    """The reward model's and DPO's training pairs: the panel's labels of the SFT model's own samples
    (on-policy, noisy) followed by the task's shipped pairs in file ``shipped_pairs`` (off-policy, clean; None:
    none)."""
    rows = [line for line in panel_preferences.read_text(encoding="utf-8").splitlines() if line.strip()]
    shipped = ([line for line in Path(shipped_pairs).read_text(encoding="utf-8").splitlines()
                if line.strip()] if shipped_pairs else [])
    atomic_write_text(output, "\n".join(rows + shipped) + "\n")
    console.print(f"training pairs: {len(rows)} from the panel + {len(shipped)} shipped → {output}")
    return len(rows) + len(shipped)


def run_quickstart(cfg: QuickstartConfig) -> dict[str, Any]:
    configure_cpu(cfg.num_threads)
    cfg = settle_precision(with_run_dir(cfg))  # auto → the mode this machine runs, said once, recorded everywhere
    task = get_task(cfg.task)
    stages = stage_configs(cfg)
    if cfg.resume == "never":
        move_run_aside(Path(cfg.run_dir))
    check_run_dir(cfg, stages)  # (nothing is written before it)
    record_config(Path(cfg.run_dir), "quickstart", cfg)
    what = "a tiny random model" if cfg.tiny else "SmolLM2-135M-Instruct (embedded)"
    console.print(f"[bold]tether quickstart[/] on {what}, task {task.name} ({task.summary}), seed {cfg.seed}: "
                  f"SFT → sample {cfg.k} → simulated panel → reward model → "
                  f"PPO + DPO → evaluation → report, in {cfg.run_dir}")
    runners = {name: RECIPES[name].runner() for name in STAGES}
    results: dict[str, Any] = {}
    timings: dict[str, float] = {}
    started = time.time()
    for name, runner in runners.items():
        console.rule(f"[bold]{name}")
        mark = time.time()
        results[name] = runner(stages[name])
        if name == "label export":
            merge_training_pairs(Path(stages[name].output), Path(stages["rm"].data.train_file),
                                 task.path("pairs_file") if cfg.shipped_pairs else None)
        timings[name.replace(" ", "_")] = round(time.time() - mark, 1)
    run = Path(cfg.run_dir)
    evaluation = results["eval"]["models"]
    rm_report = results["rm"].report
    ppo = results["ppo"]
    headline = {
        "test prompts": results["eval"]["prompts"],
        "gold after SFT": evaluation["sft"]["gold_mean"], "gold after PPO": evaluation["ppo"]["gold_mean"],
        "gold after DPO": evaluation["dpo"]["gold_mean"],
        "proxy after SFT": evaluation["sft"]["proxy_mean"], "proxy after PPO": evaluation["ppo"]["proxy_mean"],
        "KL of PPO to SFT": evaluation["ppo"]["kl_mean"], "KL of DPO to SFT": evaluation["dpo"]["kl_mean"],
        "PPO win-rate vs SFT": evaluation["ppo"].get("win_rate_vs_reference"),
        "DPO win-rate vs SFT": evaluation["dpo"].get("win_rate_vs_reference"),
        "RM held-out accuracy": rm_report.get("accuracy"),
        "RM 'longer wins' baseline": rm_report.get("length_baseline_accuracy"),
        "panel pairwise agreement": results["label stats"].get("pairwise_agreement"),
        "hacking alarms": len(ppo.alarms),
        **safety_headline(evaluation),
    }
    timings["total"] = round(time.time() - started, 1)
    summary = {
        "model": what,
        "task": task.name,
        "seed": cfg.seed,
        "run_dir": str(run.resolve()),
        "headline": headline,
        "outputs": {"sft": str(run / "sft"), "samples": str(run / "samples.jsonl"), "labels": str(run / "labels.sqlite"),
                    "preferences": str(run / "preferences.jsonl"), "training_pairs": str(run / "training_pairs.jsonl"),
                    "rm": str(run / "rm"), "ppo": str(ppo.model_dir),
                    "dpo": str(run / "dpo"), "rm_report": str(run / "rm" / "eval_report.json"),
                    "eval": str(run / "eval.json"), "report": str(run / "report.html"),
                    "metrics": str(run / "metrics.jsonl"), "config": str(run / "config.yaml")},
        "rm": {k: rm_report.get(k) for k in ("accuracy", "length_baseline_accuracy", "reward_length_correlation",
                                             "calibration_ece", "n_pairs")},
        "labels": {"comparisons": results["label simulate"]["comparisons"],
                   "exported_pairs": results["label export"]["exported"]},
        "eval": evaluation,
        "intervals": {name: {key: evaluation[name][key] for key in INTERVAL_KEYS if key in evaluation[name]}
                      for name in ("ppo", "dpo")},
        "checks": alignment_checks(evaluation["ppo"], ppo.alarms),
        "alarms": ppo.alarms,
        "seconds": timings,
    }
    atomic_write_text(run / "summary.json", json.dumps(summary, indent=2) + "\n")
    from tether.eval.report import write_report

    write_report(stages["report"])
    _print_summary(summary)
    return summary


INTERVAL_KEYS = ("gold_gain", "proxy_gain", "win_rate_interval")
SAFETY_HEADLINE = (("harm rate", "harm_rate"), ("over-refusal rate", "over_refusal_rate"))


def safety_headline(evaluation: dict[str, dict[str, Any]]) -> dict[str, float]:
    """The headline's safety rows of a task with safety metrics (``harmless``): harm and over-refusal rate after SFT,
    PPO and DPO on the test prompts (eval.json has their intervals); nothing for a task without them."""
    return {f"{label} after {name.upper()}": evaluation[name][key]
            for label, key in SAFETY_HEADLINE for name in ("sft", "ppo", "dpo") if key in evaluation.get(name, {})}


MIN_WIN_RATE = 0.65  # what "a reader can see it" asks of PPO's win-rate against SFT


def alignment_checks(ppo_row: dict[str, Any], alarms: list) -> dict[str, bool]:
    """Did the run align the model, by the measures a sceptical reader asks for (each on the test prompts, against
    the SFT model, with 95% intervals from the paired bootstrap over prompts): PPO's gold gain's interval lies above
    zero; its win-rate is at least 0.65 with the interval's lower end above ½; the reward model's own score (the
    proxy) rose, its interval above zero; and the hacking alarm stayed silent."""
    gold, proxy, win = (Interval.from_dict(ppo_row[key]) if key in ppo_row else None for key in INTERVAL_KEYS)
    return {
        "gold gain above zero": gold is not None and gold.above(0.0),
        f"win-rate >= {MIN_WIN_RATE} and above 1/2": win is not None and win.estimate >= MIN_WIN_RATE and win.above(0.5),
        "proxy gain above zero": proxy is not None and proxy.above(0.0),
        "no hacking alarm": not alarms,
    }


def _interval_text(row: dict[str, Any] | None) -> str:
    if not row:
        return "n/a"
    return f"{row['estimate']:+.3f} [{row['low']:+.3f}, {row['high']:+.3f}]"


def _print_summary(summary: dict[str, Any]) -> None:
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)  # noqa: E731
    table = Table(title=f"quickstart results ({summary['task']} task, seed {summary['seed']})")
    table.add_column("")
    table.add_column("value", justify="right")
    for key, value in summary["headline"].items():
        table.add_row(key, fmt(value))
    console.print(table)
    prompts = summary["headline"]["test prompts"]
    intervals = Table(title=f"against SFT on {prompts} test prompts: estimate [95% interval]")
    intervals.add_column("")
    for name in summary["intervals"]:
        intervals.add_column(name.upper(), justify="right")
    for label, key in (("gold gain", "gold_gain"), ("proxy gain", "proxy_gain"), ("win-rate", "win_rate_interval")):
        intervals.add_row(label, *[_interval_text(rows.get(key)) for rows in summary["intervals"].values()])
    console.print(intervals)
    for check, passed in summary["checks"].items():
        console.print(f"{'[green]pass[/]' if passed else '[red]FAIL[/]'}  {check}")
    console.print(f"report: {summary['outputs']['report']}   summary: {Path(summary['run_dir']) / 'summary.json'}   "
                  f"total {summary['seconds']['total']:.0f}s", soft_wrap=True)
