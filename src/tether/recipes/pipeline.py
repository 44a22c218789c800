"""``tether pipeline config.yaml``: the whole lifecycle over your own models and data.

    sft → sample → label → rm → ppo → dpo → eval → report        (× rounds)

Every stage writes into the run directory (``round-<r>/`` when ``rounds`` > 1) and, when
it finishes, a marker ``.stages/<stage>.json`` with its outputs and the settings it ran
with. Running the same command again skips finished stages and resumes an interrupted one
from its own checkpoints, so a crash costs at most the work since the last checkpoint. A
finished stage whose settings have changed since is not skipped silently: ``resume=auto``
stops with what changed, ``never`` moves the run directory aside and starts afresh,
``force`` keeps the finished stage.

Bring your own inputs to skip stages: ``sft_model=`` (no SFT), ``preferences=`` (no
sampling or labelling in round 1), ``reward=`` (no reward model: a directory or a
``module:function``). With ``rounds: N`` each later round samples from the current PPO
policy, relabels, continues the reward model from the previous one on every preference so
far, and continues PPO and DPO from the previous round's policies; the reference stays the
SFT model throughout.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Callable

from rich.markup import escape

from tether.config import EvalConfig, LabelSimulateConfig, LabelStatsConfig, ModelConfig, PipelineConfig, ReportConfig, to_dict
from tether.data import DataError
from tether.engine.runtime import atomic_write_text, record_config, settle_precision
from tether.eval.verdict import reward_model_warning
from tether.recipes.registry import RECIPES
from tether.tasks.registry import get_task
from tether.utils.logging import console
from tether.utils.resume import (
    NOT_THE_RESULT,
    config_diff,
    describe_diff,
    move_run_aside,
    refuse_or_warn,
    resume_mode,
)

STAGES = ("sft", "sample", "label", "rm", "ppo", "dpo", "eval", "report")
# The pipeline settings each stage's work depends on (besides the outputs of the stages before it): a finished stage's
# marker records them, and a re-run does not skip a stage whose settings changed without saying so (``resume``).
STAGE_SETTINGS = {
    "sft": ("model", "sft"),
    "sample": ("sample", "sft_model", "ppo.model", "ppo.data.train_file"),
    "label": ("label", "export"),
    "rm": ("rm", "sft_model", "preferences", "extra_preferences"),
    "ppo": ("ppo", "sft_model", "reward"),
    "dpo": ("dpo", "sft_model", "preferences", "extra_preferences"),
    "eval": ("eval", "sft_model", "reward", "ppo.data.eval_file"),
}


def _replace(config: Any, **changes: Any) -> Any:
    return dataclasses.replace(config, **changes)


def _model(path: str, like: ModelConfig, precision: str) -> ModelConfig:
    """``like`` (LoRA, dtype, trust_remote_code ...) pointed at ``path``, computing in ``precision`` (the pipeline's
    ``model.precision``, one switch for every stage)."""
    return _replace(like, name_or_path=path, random_init=False, config_overrides={}, precision=precision)


class Stages:
    """Finished-stage markers under ``<dir>/.stages/``, each with the settings the stage ran with."""

    def __init__(self, directory: Path, config: PipelineConfig | None = None):
        self.directory = directory / ".stages"
        self.config = config

    def settings(self, name: str) -> dict[str, Any]:
        """The pipeline settings stage ``name`` depends on (``STAGE_SETTINGS``), by dotted key."""
        values = to_dict(self.config) if self.config is not None else {}
        out = {}
        for key in STAGE_SETTINGS.get(name, ()):
            value: Any = values
            for part in key.split("."):
                value = value.get(part) if isinstance(value, dict) else None
            out[key] = value
        return out

    def done(self, name: str) -> dict[str, Any] | None:
        """The marker of a finished stage, or None. One finished with other settings stops the pipeline
        (``resume=auto``) or is kept with a warning (``resume=force``)."""
        path = self.directory / f"{name}.json"
        if not path.is_file():
            return None
        finished = json.loads(path.read_text())
        recorded = finished.get("settings")
        diff = config_diff(recorded, self.settings(name), NOT_THE_RESULT) if recorded and self.config else []
        if diff:
            refuse_or_warn(diff, resume_mode(self.config.resume),
                           f"{name}: finished earlier ({path}) with other settings ({describe_diff(diff)}); set "
                           "resume=never to start the pipeline afresh (run_dir is moved aside) or resume=force "
                           "to keep the finished stage",
                           f"{name}: resume=force: keeping the stage finished with other settings "
                           f"({describe_diff(diff)})")
        return finished

    def mark(self, name: str, outputs: dict[str, Any], seconds: float) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.directory / f"{name}.json",
                          json.dumps({"outputs": outputs, "seconds": round(seconds, 1), "finished": time.time(),
                                      "settings": self.settings(name)}, indent=2, default=str) + "\n")


def _apply_resume(cfg: PipelineConfig, root: Path) -> PipelineConfig:
    """``resume=never`` moves an earlier run in ``root`` aside; ``resume=force`` also lets every training stage
    resume its own checkpoint whatever config wrote it (``auto`` leaves the stages' own ``resume``)."""
    mode = resume_mode(cfg.resume)
    if mode == "never":
        move_run_aside(root, [cfg.sft_model, cfg.preferences, cfg.reward, cfg.extra_preferences])
    if mode != "force":
        return cfg
    return _replace(cfg, sft=_replace(cfg.sft, train=_replace(cfg.sft.train, resume="force")),
                    rm=_replace(cfg.rm, train=_replace(cfg.rm.train, resume="force")),
                    dpo=_replace(cfg.dpo, train=_replace(cfg.dpo.train, resume="force")),
                    ppo=_replace(cfg.ppo, resume="force"))


def apply_task(cfg: PipelineConfig) -> PipelineConfig:
    """``cfg`` with the built-in task ``cfg.task`` filling what was left empty (or at its default): SFT
    demonstrations, sampling and PPO prompts, PPO's held-out gold and prompts, the panel's utility and noise scale,
    the reward model's and DPO's held-out pairs, the shipped pairs as ``extra_preferences``, the evaluation's test
    prompts and gold, and the chat format (a raw-text task sets ``chat_template=never`` where it was ``auto``)."""
    if not cfg.task:
        return cfg
    task = get_task(cfg.task)

    def data(stage_data, **files):
        changes = {k: v for k, v in files.items() if not getattr(stage_data, k)}
        if stage_data.chat_template == "auto":
            changes["chat_template"] = task.chat_template
        return _replace(stage_data, **changes)

    label_defaults = LabelSimulateConfig()
    heldout = cfg.ppo.heldout
    return _replace(
        cfg,
        extra_preferences=cfg.extra_preferences or task.path("pairs_file"),
        sft=_replace(cfg.sft, data=data(cfg.sft.data, train_file=task.path("sft_file"))),
        sample=_replace(cfg.sample, data=data(cfg.sample.data)),
        label=_replace(cfg.label,
                       utility=task.utility if cfg.label.utility == label_defaults.utility else cfg.label.utility,
                       noise_scale=(task.noise_scale if cfg.label.noise_scale == label_defaults.noise_scale
                                    else cfg.label.noise_scale)),
        rm=_replace(cfg.rm, data=data(cfg.rm.data, eval_file=task.path("heldout_pairs_file"))),
        ppo=_replace(cfg.ppo, data=data(cfg.ppo.data, train_file=task.path("prompts_file")),
                     heldout=_replace(heldout, gold=heldout.gold or task.gold,
                                      prompts_file=heldout.prompts_file or task.path("heldout_file"))),
        dpo=_replace(cfg.dpo, data=data(cfg.dpo.data, eval_file=task.path("heldout_pairs_file"))),
        eval=_replace(cfg.eval, gold=task.gold if cfg.eval.gold in ("", EvalConfig().gold) else cfg.eval.gold,
                      data=data(cfg.eval.data, train_file=task.path("test_file"))))


def _run(stages: Stages, name: str, fn: Callable[[], dict[str, Any]], timings: dict[str, float]) -> dict[str, Any]:
    finished = stages.done(name)
    if finished is not None:
        console.print(f"[green]{name}: finished earlier, skipping[/] ({stages.directory / (name + '.json')})")
        return finished["outputs"]
    console.rule(f"[bold]{name}")
    mark = time.time()
    outputs = fn()
    timings[name] = round(time.time() - mark, 1)
    stages.mark(name, outputs, timings[name])
    return outputs


def _concat(files: list[str], output: Path) -> str:
    lines = []
    for f in files:
        lines += [line for line in Path(f).read_text(encoding="utf-8").splitlines() if line.strip()]
    if not lines:
        raise DataError(f"no preference rows to train on (from {', '.join(files)})")
    atomic_write_text(output, "\n".join(lines) + "\n")
    return str(output)


def _gate_reward_model(rm_dir: str, min_accuracy: float) -> None:
    """Stop before RL when the reward model's held-out accuracy is below ``rm.min_accuracy``; otherwise say loudly
    when it is below chance or the 'longer response wins' baseline and go on."""
    path = Path(rm_dir) / "eval_report.json"
    report = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    accuracy = report.get("accuracy")
    if accuracy is None:
        if min_accuracy > 0:
            raise DataError(f"rm.min_accuracy={min_accuracy:g} is set but the reward model has no held-out accuracy "
                            f"({path}): give rm.data.eval_file or rm.data.eval_fraction > 0, or set rm.min_accuracy=0")
        return
    if accuracy < min_accuracy:
        raise DataError(f"reward model held-out accuracy {accuracy:.3f} is below rm.min_accuracy={min_accuracy:g} "
                        f"({path}): stopped before RL; check the preferences (chosen and rejected swapped?), add pairs "
                        "or train longer, or lower rm.min_accuracy to go on with it")
    warning = reward_model_warning(report)
    if warning:
        console.print(f"[bold red]warning:[/] {escape(warning)}; going on to RL with it (it passes rm.min_accuracy="
                      f"{min_accuracy:g}; raise rm.min_accuracy to stop at such a reward model)", soft_wrap=True)


def run_pipeline(cfg: PipelineConfig) -> dict[str, Any]:
    train_sft, run_sample, run_label_simulate, run_label_stats, run_label_export, train_reward_model, train_ppo, \
        train_preference, run_eval, write_report = (RECIPES[name].runner() for name in (
            "sft", "sample", "label simulate", "label stats", "label export", "rm", "ppo", "dpo", "eval", "report"))
    unknown = [s for s in cfg.stages if s not in STAGES]
    if unknown:
        raise DataError(f"stages: unknown stage(s) {unknown}; choose from {list(STAGES)}")
    wanted = set(cfg.stages)
    root = Path(cfg.run_dir)
    cfg = _apply_resume(settle_precision(apply_task(cfg)), root)
    record_config(root, "pipeline", cfg)
    timings: dict[str, float] = {}

    # SFT, once
    sft_dir = cfg.sft_model
    if not sft_dir:
        if "sft" not in wanted:
            raise DataError("no SFT model: keep 'sft' in stages or give sft_model=<directory>")
        if not cfg.sft.data.train_file:
            raise DataError("sft.data.train_file is required (your demonstrations), or give sft_model=<directory>")
        sft_dir = _run(Stages(root, cfg), "sft", lambda: {"model": str(train_sft(
            _replace(cfg.sft, run_dir=str(root), name="sft", model=cfg.model)).model_dir)}, timings)["model"]
    prompts_file = cfg.sample.data.train_file or cfg.ppo.data.train_file
    policy, dpo_policy, rm_init = sft_dir, sft_dir, sft_dir
    all_preferences: list[str] = []
    reward = cfg.reward
    outputs: dict[str, Any] = {"sft": sft_dir}
    for r in range(1, cfg.rounds + 1):
        here = root if cfg.rounds == 1 else root / f"round-{r}"
        stages = Stages(here, cfg)
        console.rule(f"[bold]round {r} of {cfg.rounds}" if cfg.rounds > 1 else "[bold]pipeline")
        if r == 1 and cfg.preferences:
            all_preferences.append(cfg.preferences)
        elif "sample" in wanted and "label" in wanted:
            if not prompts_file:
                raise DataError("no prompts to sample: set sample.data.train_file or ppo.data.train_file")
            samples = str(here / "samples.jsonl")
            _run(stages, "sample", lambda: {"samples": str(run_sample(_replace(
                cfg.sample, model=_model(policy, cfg.ppo.model, cfg.model.precision), output=samples,
                data=_replace(cfg.sample.data, train_file=prompts_file))))}, timings)
            db = str(here / "labels.sqlite")

            def label() -> dict[str, Any]:
                run_label_simulate(_replace(cfg.label, samples=samples, db=db))
                run_label_stats(LabelStatsConfig(db=db))
                exported = run_label_export(_replace(cfg.export, db=db, output=str(here / "preferences.jsonl")))
                return {"preferences": str(here / "preferences.jsonl"), **exported}

            all_preferences.append(_run(stages, "label", label, timings)["preferences"])
        training = all_preferences + ([cfg.extra_preferences] if cfg.extra_preferences else [])
        pairs = _concat(training, here / "training_pairs.jsonl") if training else ""
        if not cfg.reward and "rm" in wanted:
            if not pairs:
                raise DataError("the reward model has no preferences: keep sample and label in stages or give "
                                "preferences=<file>")
            rm_dir = _run(stages, "rm", lambda: {"model": str(train_reward_model(_replace(
                cfg.rm, run_dir=str(here), name="rm", model=_model(rm_init, cfg.rm.model, cfg.model.precision),
                data=_replace(cfg.rm.data, train_file=pairs))).model_dir)}, timings)["model"]
            _gate_reward_model(rm_dir, cfg.rm.min_accuracy)
            reward, rm_init = rm_dir, rm_dir  # later rounds continue from this reward model
        if "ppo" in wanted:
            if not reward:
                raise DataError("PPO has no reward: keep 'rm' in stages or give reward=<directory or module:function>")
            if not prompts_file:
                raise DataError("ppo.data.train_file is required: the RL prompts")
            policy = _run(stages, "ppo", lambda: {"model": str(train_ppo(_replace(
                cfg.ppo, run_dir=str(here), name="ppo", model=_model(policy, cfg.ppo.model, cfg.model.precision),
                ref_model=sft_dir,
                reward=reward, data=_replace(cfg.ppo.data, train_file=prompts_file))).model_dir)}, timings)["model"]
        if "dpo" in wanted and pairs:
            dpo_policy = _run(stages, "dpo", lambda: {"model": str(train_preference(_replace(
                cfg.dpo, run_dir=str(here), name="dpo", model=_model(dpo_policy, cfg.dpo.model, cfg.model.precision),
                ref_model=sft_dir,
                data=_replace(cfg.dpo.data, train_file=pairs))).model_dir)}, timings)["model"]
        models = [sft_dir] + [m for m in (policy, dpo_policy) if m != sft_dir]
        if "eval" in wanted:
            eval_prompts = cfg.eval.data.train_file or cfg.ppo.data.eval_file
            if not eval_prompts:
                raise DataError("eval.data.train_file is required: held-out prompts for the evaluation")

            def evaluate() -> dict[str, Any]:
                run_eval(_replace(cfg.eval, run_dir=str(here), models=models, reference=sft_dir,
                                  precision=cfg.model.precision,
                                  reward=cfg.eval.reward or reward, data=_replace(cfg.eval.data, train_file=eval_prompts)))
                return {"eval": str(here / "eval.json")}

            _run(stages, "eval", evaluate, timings)
        if "report" in wanted:
            write_report(ReportConfig(run_dir=str(here), title=f"{root.name} round {r}" if cfg.rounds > 1 else ""))
        outputs[f"round-{r}"] = {"policy": policy, "dpo": dpo_policy, "reward": reward, "dir": str(here)}
    summary = {"run_dir": str(root.resolve()), "rounds": cfg.rounds, "outputs": outputs, "seconds": timings}
    atomic_write_text(root / "pipeline_summary.json", json.dumps(summary, indent=2) + "\n")
    console.print(f"[bold green]pipeline done[/]: {root / 'pipeline_summary.json'}")
    return summary
