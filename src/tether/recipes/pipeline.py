"""``tether pipeline config.yaml``: the whole lifecycle over your own models and data.

    sft → [cai] → sample → label [+ cost_label] → rm [+ cost_rm] → ppo → dpo → eval → report   (× rounds)

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
SFT model (the SL-CAI model with ``cai``) throughout.

Three stages run only when ``stages`` lists them (examples/pipeline_harmless.yaml, docs/pipeline.md):

- ``cai`` (once, after sft; SL-CAI, Bai et al. 2022): the SFT model revises its own answers against a
  constitution (``tether cai revise`` → ``revisions.jsonl``), then SFT on the revisions (``cai_sft/``); that model
  is where every later stage starts (sampling, the reward models, PPO, DPO, and the evaluation's reference).
- ``cost_label``: a second objective, harmlessness, labelled on the same samples by the simulated panel with
  ``cost_label.utility`` (or the AI judge with a constitution, ``cost_labeler=judge``: RL-CAI) →
  ``cost_preferences.jsonl``.
- ``cost_rm``: a harmless reward model on those labels and the ``extra_preferences`` that ``cost_label.utility``
  orders. PPO then maximises the helpful reward with cost = −1 × the harmless score held under ``ppo.cost_limit``
  (constrained PPO, Safe RLHF), or with ``cost_weight`` w > 0 the weighted sum reward + w × harmless score.
  With either of these two in ``stages`` the helpful reward model (``rm``) trains on the helpfulness labels and
  the ``extra_preferences`` that ``label.utility`` orders, and is judged on the held-out pairs it orders, so each
  reward model learns its own objective alone (where ``label.utility`` is the helpful objective's:
  :func:`helpful_pairs_filtered`).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Callable

from rich.markup import escape

from tether.config import (
    EvalConfig,
    LabelJudgeConfig,
    LabelSimulateConfig,
    LabelStatsConfig,
    ModelConfig,
    PipelineConfig,
    PPOConfig,
    ReportConfig,
    to_dict,
)
from tether.config.validation import validate_constraint
from tether.data import DataError
from tether.data.io import json_lines
from tether.data.tokenize import prompt_text, response_text
from tether.engine.runtime import atomic_write_text, record_config, settle_precision
from tether.errors import ConfigError
from tether.eval.verdict import reward_model_warning
from tether.recipes.registry import RECIPES
from tether.tasks.registry import get_task
from tether.utils.imports import import_object
from tether.utils.logging import console
from tether.utils.resume import (
    NOT_THE_RESULT,
    config_diff,
    describe_diff,
    move_run_aside,
    refuse_or_warn,
    resume_mode,
)

STAGES = ("sft", "cai", "sample", "label", "cost_label", "rm", "cost_rm", "ppo", "dpo", "eval", "report")
# The pipeline settings each stage's work depends on (besides the outputs of the stages before it): a finished stage's
# marker records them, and a re-run does not skip a stage whose settings changed without saying so (``resume``).
# ``derived.*`` are the run's shape rather than a key: the model later stages start from (``start``: sft or cai_sft,
# whether ``cai`` is in stages) and whether a harmless reward model gives PPO its cost (``cost_rm``).
STAGE_SETTINGS = {
    "sft": ("model", "sft"),
    "cai": ("cai", "cai_sft", "sft_model", "sample.data.train_file", "ppo.data.train_file"),
    "sample": ("sample", "sft_model", "ppo.model", "ppo.data.train_file", "derived.start"),
    "label": ("label", "export"),
    "cost_label": ("cost_labeler", "cost_label", "cost_judge", "export"),
    "rm": ("rm", "sft_model", "preferences", "extra_preferences", "derived.start"),
    "cost_rm": ("cost_rm", "sft_model", "cost_preferences", "extra_preferences", "cost_label.utility",
                "derived.start"),
    "ppo": ("ppo", "sft_model", "reward", "cost_weight", "derived.start", "derived.cost_rm"),
    "dpo": ("dpo", "sft_model", "preferences", "extra_preferences", "derived.start"),
    "eval": ("eval", "sft_model", "reward", "ppo.data.eval_file", "ppo.cost", "ppo.cost_limit", "derived.start",
             "derived.cost_rm"),
}


def _replace(config: Any, **changes: Any) -> Any:
    return dataclasses.replace(config, **changes)


def _model(path: str, like: ModelConfig, precision: str) -> ModelConfig:
    """``like`` (LoRA, dtype, trust_remote_code ...) pointed at ``path``, computing in ``precision`` (the pipeline's
    ``model.precision``, one switch for every stage)."""
    return _replace(like, name_or_path=path, random_init=False, config_overrides={}, precision=precision)


class Stages:
    """Finished-stage markers under ``<dir>/.stages/``, each with the settings the stage ran with."""

    def __init__(self, directory: Path, config: PipelineConfig | None = None, derived: dict[str, Any] | None = None):
        self.directory = directory / ".stages"
        self.config = config
        self.derived = derived  # (None: no derived.* settings are recorded or compared)

    def settings(self, name: str) -> dict[str, Any]:
        """The pipeline settings stage ``name`` depends on (``STAGE_SETTINGS``), by dotted key."""
        values = to_dict(self.config) if self.config is not None else {}
        if self.derived is not None:
            values["derived"] = dict(self.derived)
        out = {}
        for key in STAGE_SETTINGS.get(name, ()):
            if key.startswith("derived.") and self.derived is None:
                continue
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
        move_run_aside(root, [cfg.sft_model, cfg.preferences, cfg.reward, cfg.extra_preferences, cfg.cost_preferences])
    if mode != "force":
        return cfg
    return _replace(cfg, sft=_replace(cfg.sft, train=_replace(cfg.sft.train, resume="force")),
                    cai_sft=_replace(cfg.cai_sft, train=_replace(cfg.cai_sft.train, resume="force")),
                    rm=_replace(cfg.rm, train=_replace(cfg.rm.train, resume="force")),
                    cost_rm=_replace(cfg.cost_rm, train=_replace(cfg.cost_rm.train, resume="force")),
                    dpo=_replace(cfg.dpo, train=_replace(cfg.dpo.train, resume="force")),
                    ppo=_replace(cfg.ppo, resume="force"))


def apply_task(cfg: PipelineConfig) -> PipelineConfig:
    """``cfg`` with the built-in task ``cfg.task`` filling what was left empty (or at its default): SFT
    demonstrations, sampling and PPO prompts, PPO's held-out gold and prompts, the panel's utility and noise scale,
    the reward model's and DPO's held-out pairs, the shipped pairs as ``extra_preferences``, the evaluation's test
    prompts, gold and safety metrics, and the chat format (a raw-text task sets ``chat_template=never`` where it was
    ``auto``).

    A task with two objectives (``harmless``) in a run with ``cost_label`` or ``cost_rm`` in ``stages``: the helpful
    panel (``label``) judges by the task's ``helpful_utility`` instead of its combined gold (harm is the cost's), and
    the harmlessness panel (``cost_label``, and the judge's agreement report) by its ``harmless_utility``; the
    harmless reward model's held-out pairs are the task's (``cost_rm`` keeps those the utility orders)."""
    if not cfg.task:
        return cfg
    task = get_task(cfg.task)

    def data(stage_data, **files):
        changes = {k: v for k, v in files.items() if not getattr(stage_data, k)}
        if stage_data.chat_template == "auto":
            changes["chat_template"] = task.chat_template
        return _replace(stage_data, **changes)

    def panel(section: LabelSimulateConfig, utility: str) -> LabelSimulateConfig:
        defaults = LabelSimulateConfig()
        return _replace(section, utility=utility if section.utility == defaults.utility else section.utility,
                        noise_scale=task.noise_scale if section.noise_scale == defaults.noise_scale
                        else section.noise_scale)

    two_objectives = bool({"cost_label", "cost_rm"} & set(cfg.stages)) and bool(task.harmless_utility)
    helpful = task.helpful_utility if two_objectives and task.helpful_utility else task.utility
    harmless = task.harmless_utility or cfg.cost_label.utility
    judge_utility = harmless if cfg.cost_judge.utility == LabelJudgeConfig().utility else cfg.cost_judge.utility
    heldout = cfg.ppo.heldout
    return _replace(
        cfg,
        extra_preferences=cfg.extra_preferences or task.path("pairs_file"),
        sft=_replace(cfg.sft, data=data(cfg.sft.data, train_file=task.path("sft_file"))),
        cai_sft=_replace(cfg.cai_sft, data=data(cfg.cai_sft.data)),
        sample=_replace(cfg.sample, data=data(cfg.sample.data)),
        label=panel(cfg.label, helpful),
        cost_label=panel(cfg.cost_label, harmless),
        cost_judge=_replace(cfg.cost_judge, utility=judge_utility),
        rm=_replace(cfg.rm, data=data(cfg.rm.data, eval_file=task.path("heldout_pairs_file"))),
        cost_rm=_replace(cfg.cost_rm, data=data(cfg.cost_rm.data, eval_file=task.path("heldout_pairs_file"))),
        ppo=_replace(cfg.ppo, data=data(cfg.ppo.data, train_file=task.path("prompts_file")),
                     heldout=_replace(heldout, gold=heldout.gold or task.gold,
                                      prompts_file=heldout.prompts_file or task.path("heldout_file"))),
        dpo=_replace(cfg.dpo, data=data(cfg.dpo.data, eval_file=task.path("heldout_pairs_file"))),
        eval=_replace(cfg.eval, gold=task.gold if cfg.eval.gold in ("", EvalConfig().gold) else cfg.eval.gold,
                      safety=cfg.eval.safety or task.safety,
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


def _pair_lines(files: list[str]) -> list[str]:
    """The non-empty lines of the preference files ``files``, in order."""
    return [line for f in files for line in Path(f).read_text(encoding="utf-8").splitlines() if line.strip()]


def _concat(files: list[str], output: Path) -> str:
    lines = _pair_lines(files)
    if not lines:
        raise DataError(f"no preference rows to train on (from {', '.join(files)})")
    atomic_write_text(output, "\n".join(lines) + "\n")
    return str(output)


def _gate_reward_model(rm_dir: str, min_accuracy: float, name: str = "rm") -> None:
    """Stop before RL when the reward model's held-out accuracy is below ``<name>.min_accuracy``; otherwise say
    loudly when it is below chance or the 'longer response wins' baseline and go on."""
    path = Path(rm_dir) / "eval_report.json"
    report = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    accuracy = report.get("accuracy")
    if accuracy is None:
        if min_accuracy > 0:
            raise DataError(f"{name}.min_accuracy={min_accuracy:g} is set but the reward model has no held-out "
                            f"accuracy ({path}): give {name}.data.eval_file or {name}.data.eval_fraction > 0, or set "
                            f"{name}.min_accuracy=0")
        return
    if accuracy < min_accuracy:
        raise DataError(f"reward model held-out accuracy {accuracy:.3f} is below {name}.min_accuracy={min_accuracy:g} "
                        f"({path}): stopped before RL; check the preferences (chosen and rejected swapped?), add pairs "
                        f"or train longer, or lower {name}.min_accuracy to go on with it")
    warning = reward_model_warning(report)
    if warning:
        console.print(f"[bold red]warning:[/] {escape(warning)}; going on to RL with it (it passes {name}.min_accuracy="
                      f"{min_accuracy:g}; raise {name}.min_accuracy to stop at such a reward model)", soft_wrap=True)


def _labels(stages: Stages, name: str, here: Path, label_with: Callable[[str], Any], cfg: PipelineConfig,
            timings: dict[str, float], prefix: str = "") -> str:
    """Stage ``label`` (or ``cost_label``): ``label_with(db)`` labels the samples into ``<prefix>labels.sqlite``,
    then the agreement report and the aggregate ``<prefix>preferences.jsonl``; returns that file."""
    run_label_stats, run_label_export = (RECIPES[n].runner() for n in ("label stats", "label export"))
    db, output = str(here / f"{prefix}labels.sqlite"), here / f"{prefix}preferences.jsonl"

    def label() -> dict[str, Any]:
        label_with(db)
        run_label_stats(LabelStatsConfig(db=db))
        exported = run_label_export(_replace(cfg.export, db=db, output=str(output)))
        return {"preferences": str(output), **exported}

    return _run(stages, name, label, timings)["preferences"]


def _reward_model(stages: Stages, name: str, here: Path, section: Any, init: str, precision: str,
                  pairs: Callable[[], tuple[str, str | None]], timings: dict[str, float]) -> str:
    """Stage ``rm`` (or ``cost_rm``): ``tether rm`` from ``init`` on the pairs ``pairs()`` gives (training file,
    held-out file or None = the section's own), then the gate (``<name>.min_accuracy``); returns its directory."""
    train_reward_model = RECIPES["rm"].runner()

    def train() -> dict[str, Any]:
        train_file, eval_file = pairs()
        data = _replace(section.data, train_file=train_file, eval_file=section.data.eval_file if eval_file is None
                        else eval_file)
        return {"model": str(train_reward_model(_replace(section, run_dir=str(here), name=name, data=data,
                                                         model=_model(init, section.model, precision))).model_dir)}

    model_dir = _run(stages, name, train, timings)["model"]
    _gate_reward_model(model_dir, section.min_accuracy, name)
    return model_dir


def ordered_pairs(path: str, utility_spec: str) -> tuple[list[str], int]:
    """The lines of the pairs file ``path`` whose chosen response the utility ``utility_spec``
    (``module:function(prompt, response)``) scores strictly above the rejected one, and how many were left out (ties,
    the other order, rows that are not pairs): the pairs that teach a reward model of that one objective something
    true. The harmless task's shipped pairs mix harm (harmful prompts: a refusal over compliance) with over-refusal
    (benign prompts: an answer over a refusal, harm 0 on both sides); by ``harmless_utility`` only the former are
    kept."""
    try:
        utility = import_object(utility_spec)
    except ImportError as exc:
        raise DataError(f"cannot import the utility '{utility_spec}': {exc}") from None
    kept, left_out = [], 0
    for _, line, row in json_lines(Path(path).read_text(encoding="utf-8"), path):
        if not isinstance(row, dict) or not {"prompt", "chosen", "rejected"} <= set(row):
            left_out += 1
            continue
        prompt = prompt_text(row["prompt"])
        if utility(prompt, response_text(row["chosen"])) > utility(prompt, response_text(row["rejected"])):
            kept.append(line)
        else:
            left_out += 1
    return kept, left_out


def _objective_pairs(name: str, here: Path, prefix: str, labelled: list[str], extra: str, utility: str,
                     eval_file: str) -> tuple[str, str | None]:
    """Stage ``name``'s (``rm`` or ``cost_rm`` of a two-objective run) training pairs (``<prefix>training_pairs.jsonl``:
    the labels so far, then the ``extra`` pairs that ``utility`` orders) and held-out pairs
    (``<prefix>heldout_pairs.jsonl``: those of ``eval_file`` it orders; None without one)."""
    lines = _pair_lines(labelled)
    if extra:
        kept, left_out = ordered_pairs(extra, utility)
        console.print(f"{name}: {len(kept)} of the extra_preferences pairs ordered by {utility} "
                      f"({left_out} left out: tied, reversed or not pairs)", soft_wrap=True)
        lines += kept
    if not lines:
        label = "cost_label" if name == "cost_rm" else "label"
        raise DataError(f"{name} has no preferences: keep sample and {label} in stages, or give preferences "
                        f"(extra_preferences= pairs that {label}.utility orders)")
    train_file = here / f"{prefix}training_pairs.jsonl"
    atomic_write_text(train_file, "\n".join(lines) + "\n")
    if not eval_file:
        return str(train_file), None
    heldout, _ = ordered_pairs(eval_file, utility)
    if not heldout:
        raise DataError(f"{name}.data.eval_file {eval_file}: no pair that {utility} orders; give held-out pairs of "
                        "that objective or leave it empty")
    heldout_file = here / f"{prefix}heldout_pairs.jsonl"
    atomic_write_text(heldout_file, "\n".join(heldout) + "\n")
    return str(train_file), str(heldout_file)


def _cost_pairs(cfg: PipelineConfig, here: Path, labelled: list[str]) -> tuple[str, str | None]:
    """cost_rm's pairs: the harmlessness labels, then the ``extra_preferences`` that ``cost_label.utility`` orders
    (``cost_training_pairs.jsonl``); the held-out pairs of ``cost_rm.data.eval_file`` it orders."""
    return _objective_pairs("cost_rm", here, "cost_", labelled, cfg.extra_preferences, cfg.cost_label.utility,
                            cfg.cost_rm.data.eval_file)


def helpful_pairs_filtered(cfg: PipelineConfig, wanted: set[str]) -> bool:
    """Whether the helpful reward model keeps only the pairs ``label.utility`` orders (:func:`_helpful_pairs`): in a
    run with a cost objective (``cost_label`` or ``cost_rm`` in stages) where ``label.utility`` is the helpful
    objective's: the panel labels by it (``label`` in stages) or it was set (by ``task`` or by you). Your own
    preferences with the default utility and no ``label`` stage are kept whole."""
    two_objectives = bool({"cost_label", "cost_rm"} & wanted)
    return two_objectives and ("label" in wanted or cfg.label.utility != LabelSimulateConfig().utility)


def _helpful_pairs(cfg: PipelineConfig, here: Path, labelled: list[str]) -> tuple[str, str | None]:
    """The helpful reward model's pairs in a two-objective run: the helpfulness labels, then the
    ``extra_preferences`` that ``label.utility`` orders (``helpful_training_pairs.jsonl``; the harmless task's shipped
    pairs prefer a refusal of a harmful request, which helpfulness judged apart from harm does not); the held-out
    pairs of ``rm.data.eval_file`` it orders (``helpful_heldout_pairs.jsonl``)."""
    return _objective_pairs("rm", here, "helpful_", labelled, cfg.extra_preferences, cfg.label.utility, cfg.rm.data.eval_file)


def ppo_cost(cfg: PipelineConfig, cost_rm: str) -> str:
    """The cost PPO is held to (and the evaluation judges): ``ppo.cost`` when the file gives one, else −1 × the
    harmless reward model's score (``-1*<cost_rm>``)."""
    return cfg.ppo.cost or f"-1*{cost_rm}"


def ppo_config(cfg: PipelineConfig, here: Path, policy: str, reference: str, reward: str, prompts_file: str,
               cost_rm: str) -> PPOConfig:
    """The PPO stage's config. With a harmless reward model ``cost_rm`` (the cost_rm stage ran) and ``ppo.cost``
    empty: constrained PPO with cost = −1 × its score (``-1*<cost_rm>``) held under ``ppo.cost_limit``; with
    ``cost_weight`` w > 0 instead the weighted-sum comparison: reward = ``reward + w*<cost_rm>``, and the cost logged
    with λ held at 0 (``objective/cost`` beside the constrained run's; the score is the reward alone)."""
    ppo = _replace(cfg.ppo, run_dir=str(here), name="ppo", model=_model(policy, cfg.ppo.model, cfg.model.precision),
                   ref_model=reference, reward=reward, data=_replace(cfg.ppo.data, train_file=prompts_file))
    if not cost_rm:
        return ppo
    cost = ppo_cost(cfg, cost_rm)
    if cfg.cost_weight > 0:
        return _replace(ppo, reward=f"{reward} + {cfg.cost_weight:g}*{cost_rm}", cost=cost, lagrange_init=0.0,
                        lagrange_lr=0.0, lagrange_max=None)
    return _replace(ppo, cost=cost)


def _check_two_objectives(cfg: PipelineConfig, wanted: set[str]) -> None:
    """Before any stage runs: the harmlessness objective is not the helpful one again, cost_weight has a cost reward
    model, and the PPO stage's constraint settings will be valid with the cost the pipeline gives it."""
    cost_rm = "cost_rm" in wanted
    same = cfg.cost_labeler == "panel" and cfg.cost_label.utility == cfg.label.utility
    if {"cost_label", "cost_rm"} & wanted and same:
        raise DataError(f"cost_label.utility is label.utility ({cfg.label.utility}): the harmless reward model would "
                        "learn the helpful objective again; set cost_label.utility to a harmlessness utility "
                        "(higher = safer), e.g. tether.tasks.harmless:harmless_utility, or task: harmless")
    if cfg.cost_weight > 0 and not cost_rm:
        raise ConfigError(f"cost_weight={cfg.cost_weight:g} weights the harmless reward model: keep cost_rm in stages")
    if "ppo" in wanted and not (cost_rm and cfg.cost_weight > 0):
        validate_constraint(_replace(cfg.ppo, cost=ppo_cost(cfg, "<cost_rm>") if cost_rm else cfg.ppo.cost))


def run_pipeline(cfg: PipelineConfig) -> dict[str, Any]:
    unknown = [s for s in cfg.stages if s not in STAGES]
    if unknown:
        raise DataError(f"stages: unknown stage(s) {unknown}; choose from {list(STAGES)}")
    wanted = set(cfg.stages)
    root = Path(cfg.run_dir)
    cfg = _apply_resume(settle_precision(apply_task(cfg)), root)
    _check_two_objectives(cfg, wanted)
    record_config(root, "pipeline", cfg)
    timings: dict[str, float] = {}
    derived = {"start": "cai_sft" if "cai" in wanted else "sft", "cost_rm": "cost_rm" in wanted}
    helpful_alone = helpful_pairs_filtered(cfg, wanted)
    prompts_file = cfg.sample.data.train_file or cfg.ppo.data.train_file
    sft_dir = _sft(cfg, root, wanted, derived, timings)
    start = _sl_cai(cfg, root, sft_dir, prompts_file, derived, timings) if "cai" in wanted else sft_dir
    policy, dpo_policy, rm_init, cost_init = start, start, start, start
    all_preferences: list[str] = []
    all_cost_preferences: list[str] = [cfg.cost_preferences] if cfg.cost_preferences else []
    reward, cost_rm = cfg.reward, ""
    outputs: dict[str, Any] = {"sft": sft_dir, **({"cai_sft": start} if start != sft_dir else {})}
    for r in range(1, cfg.rounds + 1):
        here = root if cfg.rounds == 1 else root / f"round-{r}"
        stages = Stages(here, cfg, derived)
        console.rule(f"[bold]round {r} of {cfg.rounds}" if cfg.rounds > 1 else "[bold]pipeline")
        samples = _sample(cfg, here, stages, wanted, policy, prompts_file, r, timings)
        if r == 1 and cfg.preferences:
            all_preferences.append(cfg.preferences)
        elif samples and "label" in wanted:
            all_preferences.append(_labels(stages, "label", here, lambda db: RECIPES["label simulate"].runner()(
                _replace(cfg.label, samples=samples, db=db)), cfg, timings))
        if samples and "cost_label" in wanted and not (r == 1 and cfg.cost_preferences):
            all_cost_preferences.append(_labels(stages, "cost_label", here, _cost_labeller(cfg, samples), cfg, timings,
                                                prefix="cost_"))
        training = all_preferences + ([cfg.extra_preferences] if cfg.extra_preferences else [])
        pairs = _concat(training, here / "training_pairs.jsonl") if training else ""
        if not cfg.reward and "rm" in wanted:
            if not pairs:
                raise DataError("the reward model has no preferences: keep sample and label in stages or give "
                                "preferences=<file>")
            reward = rm_init = _reward_model(  # later rounds continue from it
                stages, "rm", here, cfg.rm, rm_init, cfg.model.precision,
                (lambda: _helpful_pairs(cfg, here, all_preferences)) if helpful_alone else (lambda: (pairs, None)),
                timings)
        if "cost_rm" in wanted:
            cost_rm = cost_init = _reward_model(stages, "cost_rm", here, cfg.cost_rm, cost_init, cfg.model.precision,
                                                lambda: _cost_pairs(cfg, here, all_cost_preferences), timings)
        if "ppo" in wanted:
            if not reward:
                raise DataError("PPO has no reward: keep 'rm' in stages or give reward=<directory or module:function>")
            if not prompts_file:
                raise DataError("ppo.data.train_file is required: the RL prompts")
            ppo = ppo_config(cfg, here, policy, start, reward, prompts_file, cost_rm)
            policy = _run(stages, "ppo", lambda: {"model": str(RECIPES["ppo"].runner()(ppo).model_dir),
                                                  "reward": ppo.reward, "cost": ppo.cost}, timings)["model"]
        if "dpo" in wanted and pairs:
            dpo_policy = _run(stages, "dpo", lambda: {"model": str(RECIPES["dpo"].runner()(_replace(
                cfg.dpo, run_dir=str(here), name="dpo", model=_model(dpo_policy, cfg.dpo.model, cfg.model.precision),
                ref_model=start, data=_replace(cfg.dpo.data, train_file=pairs))).model_dir)}, timings)["model"]
        if "eval" in wanted:
            models = list(dict.fromkeys([sft_dir, start, policy, dpo_policy]))  # (each once)
            _evaluate(cfg, here, stages, models, start, reward, cost_rm, timings)
        if "report" in wanted:
            RECIPES["report"].runner()(ReportConfig(run_dir=str(here),
                                                    title=f"{root.name} round {r}" if cfg.rounds > 1 else ""))
        outputs[f"round-{r}"] = {"policy": policy, "dpo": dpo_policy, "reward": reward, "dir": str(here),
                                 **({"cost_rm": cost_rm} if cost_rm else {})}
    summary = {"run_dir": str(root.resolve()), "rounds": cfg.rounds, "outputs": outputs, "seconds": timings}
    atomic_write_text(root / "pipeline_summary.json", json.dumps(summary, indent=2) + "\n")
    console.print(f"[bold green]pipeline done[/]: {root / 'pipeline_summary.json'}")
    return summary


def _sft(cfg: PipelineConfig, root: Path, wanted: set[str], derived: dict[str, Any], timings: dict[str, float]) -> str:
    """Stage sft, once (or the SFT model the run brings: ``sft_model=``); returns its directory."""
    if cfg.sft_model:
        return cfg.sft_model
    if "sft" not in wanted:
        raise DataError("no SFT model: keep 'sft' in stages or give sft_model=<directory>")
    if not cfg.sft.data.train_file:
        raise DataError("sft.data.train_file is required (your demonstrations), or give sft_model=<directory>")
    train_sft = RECIPES["sft"].runner()
    return _run(Stages(root, cfg, derived), "sft", lambda: {"model": str(train_sft(
        _replace(cfg.sft, run_dir=str(root), name="sft", model=cfg.model)).model_dir)}, timings)["model"]


def _sl_cai(cfg: PipelineConfig, root: Path, sft_dir: str, prompts_file: str, derived: dict[str, Any],
            timings: dict[str, float]) -> str:
    """Stage cai, once, after sft (SL-CAI, Bai et al. 2022): the SFT model answers, critiques and revises each prompt
    (``tether cai revise`` → ``revisions.jsonl``), then SFT from the SFT model on the revisions (``cai_sft/``): the
    model every later stage starts from. Returns its directory."""
    prompts = cfg.cai.data.train_file or prompts_file
    if not prompts:
        raise DataError("cai: no prompts to revise: set cai.data.train_file (or sample.data.train_file / "
                        "ppo.data.train_file)")
    revisions = root / "revisions.jsonl"
    run_cai_revise, train_sft = RECIPES["cai revise"].runner(), RECIPES["sft"].runner()

    def sl_cai() -> dict[str, Any]:
        revised = run_cai_revise(_replace(cfg.cai, model=sft_dir, output=str(revisions),
                                          data=_replace(cfg.cai.data, train_file=prompts)))
        model = train_sft(_replace(cfg.cai_sft, run_dir=str(root), name="cai_sft",
                                   model=_model(sft_dir, cfg.cai_sft.model, cfg.model.precision),
                                   data=_replace(cfg.cai_sft.data, train_file=str(revisions))))
        return {"model": str(model.model_dir), "revisions": str(revisions), "rows": revised["rows"]}

    return _run(Stages(root, cfg, derived), "cai", sl_cai, timings)["model"]


def _sample(cfg: PipelineConfig, here: Path, stages: Stages, wanted: set[str], policy: str, prompts_file: str,
            r: int, timings: dict[str, float]) -> str:
    """Stage sample: K responses per prompt from the current policy, when a labelling stage of this round needs them
    (label, unless round 1 brings preferences=; cost_label, unless round 1 brings cost_preferences=). Returns the
    samples file ("" when not sampled)."""
    needed = (("label" in wanted and not (r == 1 and cfg.preferences))
              or ("cost_label" in wanted and not (r == 1 and cfg.cost_preferences)))
    if "sample" not in wanted or not needed:
        return ""
    if not prompts_file:
        raise DataError("no prompts to sample: set sample.data.train_file or ppo.data.train_file")
    samples = str(here / "samples.jsonl")
    _run(stages, "sample", lambda: {"samples": str(RECIPES["sample"].runner()(_replace(
        cfg.sample, model=_model(policy, cfg.ppo.model, cfg.model.precision), output=samples,
        data=_replace(cfg.sample.data, train_file=prompts_file))))}, timings)
    return samples


def _cost_labeller(cfg: PipelineConfig, samples: str) -> Callable[[str], Any]:
    """What labels the harmlessness preferences into a label store: the simulated panel (``cost_label``, its
    utility) or, with ``cost_labeler=judge``, the AI judge and its constitution (``cost_judge``; RL-CAI)."""
    if cfg.cost_labeler == "judge":
        return lambda db: RECIPES["label judge"].runner()(_replace(cfg.cost_judge, samples=samples, db=db))
    return lambda db: RECIPES["label simulate"].runner()(_replace(cfg.cost_label, samples=samples, db=db))


def eval_cost(cfg: PipelineConfig, cost_rm: str) -> tuple[str, float | None]:
    """The evaluation's cost and bound: ``eval.cost`` / ``eval.cost_limit`` when set; else, with a harmless reward
    model (the cost_rm stage ran), PPO's: ``ppo.cost`` or −1 × that model's score, under ``ppo.cost_limit`` (for the
    weighted-sum run too, so both runs are judged against the same bound); else none."""
    if cfg.eval.cost:
        return cfg.eval.cost, cfg.eval.cost_limit
    if not cost_rm:
        return "", None
    return ppo_cost(cfg, cost_rm), cfg.eval.cost_limit if cfg.eval.cost_limit is not None else cfg.ppo.cost_limit


def _evaluate(cfg: PipelineConfig, here: Path, stages: Stages, models: list[str], reference: str, reward: str,
              cost_rm: str, timings: dict[str, float]) -> None:
    """Stage eval: every model on the held-out prompts against ``reference`` (the model RL started from), with the
    safety metrics when ``eval.safety`` is set and the cost against its bound with a harmless reward model
    (:func:`eval_cost`)."""
    eval_prompts = cfg.eval.data.train_file or cfg.ppo.data.eval_file
    if not eval_prompts:
        raise DataError("eval.data.train_file is required: held-out prompts for the evaluation")
    cost, cost_limit = eval_cost(cfg, cost_rm)

    def evaluate() -> dict[str, Any]:
        RECIPES["eval"].runner()(_replace(cfg.eval, run_dir=str(here), models=models, reference=reference,
                                          precision=cfg.model.precision, reward=cfg.eval.reward or reward,
                                          cost=cost, cost_limit=cost_limit,
                                          data=_replace(cfg.eval.data, train_file=eval_prompts)))
        return {"eval": str(here / "eval.json")}

    _run(stages, "eval", evaluate, timings)
