"""Resume a stage only when it continues the same run; never mix two runs, never replace work silently.

A checkpoint records the resolved config of the run that wrote it (``checkpoints/<stage>/step-N/config.json``) and a
finished stage's output directory records its own (``<run_dir>/<name>/tether.json``). Before a stage resumes from a
checkpoint or trains into an output directory, its config is compared with the recorded one on the keys that change
the result, and the recipe's ``resume`` setting (``train.resume`` for sft, rm, dpo and rejection-sample) decides:

- ``auto`` (default): resume when the configs match; refuse with the keys that differ (:class:`ResumeRefused`, a
  one-line error, exit 2) when they do not. Keys that do not change the result (:data:`NOT_THE_RESULT`) are
  ignored, and so are those that only make a run longer (:data:`EXTENDING`) when there is a checkpoint to go on from.
- ``never``: start afresh. The stage's checkpoints (and its records in ``metrics.jsonl``) are moved aside to
  ``checkpoints/<stage>.old-<time>/``; its output directory is replaced when the new run finishes.
- ``force``: resume from the newest checkpoint even though the config differs (the differences are printed).

``true`` / ``false`` (the older spelling of ``train.resume``) mean ``auto`` / ``never``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from tether.errors import ConfigError
from tether.utils.checkpoint import Checkpoint, checkpoint_config, checkpoint_root, latest_valid_checkpoint, list_checkpoints
from tether.utils.distributed import Dist
from tether.utils.files import atomic_write_text
from tether.utils.logging import console

RESUME_MODES = ("auto", "never", "force")

# Config fields (by name, at any depth) that do not change what a run computes: where it is written, how many threads,
# where metrics go, how often it checkpoints / logs / evaluates, where RL roles are placed (tested to give the same run).
# (rm.min_accuracy: the pipeline's gate after the reward model, not part of training it)
NOT_THE_RESULT = frozenset({"run_dir", "name", "resume", "num_threads", "report_to", "save_every", "keep_checkpoints",
                            "save_final_checkpoint", "log_every", "eval_every", "eval_batch_size", "placement",
                            "min_accuracy"})
# Fields that only make a run longer: a resumed run goes on to the new count (SFT's schedule then decays to the new end).
EXTENDING = frozenset({"num_iterations", "max_steps", "num_epochs"})

_ABSENT = object()


class ResumeRefused(ConfigError):
    """Resuming (or overwriting) would mix two different runs; the message lists what differs and what to do."""


def resume_mode(value: Any) -> str:
    """``auto`` / ``never`` / ``force`` (``true`` / ``false``: the older spelling of auto / never)."""
    if value is True or value is False:
        return "auto" if value else "never"
    if value not in RESUME_MODES:
        raise ConfigError(f"resume: {value!r} is not one of {', '.join(RESUME_MODES)}")
    return value


def _flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(config, dict):
        return {prefix.rstrip("."): config}
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _plain(config: dict) -> dict:
    """JSON's view of a config (tuples are lists, paths are strings), as a checkpoint stores it."""
    return json.loads(json.dumps(config, default=str))


def _knows(flat: dict[str, Any], key: str) -> bool:
    """Whether a config has ``key``: itself, or a value at a prefix of it (``model.config_overrides: {}`` knows
    ``model.config_overrides.hidden_size``). A field added to (or dropped from) tether since the other config was
    written is unknown to it, and is not a difference."""
    parts = key.split(".")
    return any(".".join(parts[:i]) in flat for i in range(1, len(parts) + 1))


def config_diff(recorded: dict, config: dict, ignore: frozenset[str] = NOT_THE_RESULT | EXTENDING
                ) -> list[tuple[str, Any, Any]]:
    """``(dotted key, recorded value, new value)`` for every key that differs, ignoring fields named in ``ignore``
    (at any depth); a key in a mapping only one side has is ``_ABSENT`` on the other."""
    old, new = _flatten(_plain(recorded)), _flatten(_plain(config))
    keys = list(new) + [k for k in old if k not in new]
    return [(key, old.get(key, _ABSENT), new.get(key, _ABSENT)) for key in keys
            if not set(key.split(".")) & ignore and _knows(old, key) and _knows(new, key)
            and old.get(key, _ABSENT) != new.get(key, _ABSENT)]


def _show(value: Any) -> str:
    if value is _ABSENT:
        return "(none)"
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 48 else text[:45] + "..."


def describe_diff(diff: list[tuple[str, Any, Any]], limit: int = 4) -> str:
    """``a.b: 1 → 2; c: "x" → "y" (and 3 more)``: one short line."""
    shown = "; ".join(f"{key}: {_show(old)} → {_show(new)}" for key, old, new in diff[:limit])
    return shown + (f" (and {len(diff) - limit} more)" if len(diff) > limit else "")


def output_config(out_dir: Path) -> dict | None:
    """The config recorded in a finished stage's output directory (``tether.json``), or None."""
    try:
        meta = json.loads((Path(out_dir) / "tether.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta.get("config") if isinstance(meta, dict) and isinstance(meta.get("config"), dict) else None


def aside_name(path: Path) -> Path:
    """``<path>.old-<time>``, a name nothing has yet."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside, n = path.with_name(f"{path.name}.old-{stamp}"), 1
    while aside.exists():
        n += 1
        aside = path.with_name(f"{path.name}.old-{stamp}-{n}")
    return aside


def move_aside(path: Path) -> Path:
    """Rename ``path`` to ``<path>.old-<time>`` and return the new path."""
    aside = aside_name(path)
    os.replace(path, aside)
    return aside


def move_run_aside(run_dir: Path, inputs: list[str] | None = None) -> Path | None:
    """``resume=never`` for a whole-run command (quickstart, pipeline): rename a non-empty ``run_dir`` to
    ``<run_dir>.old-<time>`` (by the main process) and return where it went. An input among ``inputs`` that lies
    inside it raises a :class:`ConfigError` first (it would go with it)."""
    if not run_dir.is_dir() or not any(run_dir.iterdir()):
        return None
    inside = [path for path in inputs or [] if path and Path(path).resolve().is_relative_to(run_dir.resolve())]
    if inside:
        raise ConfigError(f"{inside[0]} is inside run_dir {run_dir}, which resume=never moves aside: move it out of "
                          "run_dir first, or use another run_dir")
    dist = Dist.current()
    aside = aside_name(run_dir)
    if dist.is_main:
        os.replace(run_dir, aside)
        console.print(f"[yellow]resume=never: starting afresh; the earlier run is in {aside}[/]")
    dist.barrier()
    return aside


def resume_point(root: Path, output: Path | None, config: dict | None, mode: Any, stage: str, switch: str,
                 logger=None) -> Checkpoint | None:
    """The checkpoint a stage resumes from, or None to start at step 0, as ``mode`` says (see the module doc).

    ``root``: the stage's checkpoint folder; ``output``: its output directory; ``config``: its resolved config
    (``to_dict``; None compares nothing); ``switch``: the setting to name in messages (``resume`` or
    ``train.resume``); ``logger``: the stage's MetricsLogger (``never`` moves its records aside with the
    checkpoints). Raises :class:`ResumeRefused`."""
    mode = resume_mode(mode)
    if mode == "never":
        _start_afresh(root, output, stage, switch, logger)
        return None
    ckpt = latest_valid_checkpoint(root, warn=lambda m: console.print(f"[yellow]{m}[/]"))
    if config is None:
        return ckpt
    if ckpt is not None and checkpoint_config(ckpt) is None and Dist.current().is_main:
        console.print(f"[yellow]{stage}: {ckpt.path} records no config (written by an older tether); resuming "
                      "without checking that it is the same run[/]")
    check_recorded(ckpt, output, config, mode, stage, switch)
    return ckpt


def check_before_start(config: Any, stage: str, recorded: dict) -> None:
    """Fail fast, before a recipe loads models or data: under ``resume=auto``, raise :class:`ResumeRefused` if the
    stage's newest checkpoint or its output directory was made with another config than ``recorded`` (``config`` as
    a plain dict, as checkpoints record it). (The resume itself checks again, on the checkpoint that verifies.)"""
    train = getattr(config, "train", None)
    mode = getattr(train if train is not None else config, "resume", None)
    if mode is None or resume_mode(mode) != "auto":
        return
    found = list_checkpoints(checkpoint_root(config.run_dir, stage))
    check_recorded(found[-1] if found else None, Path(config.run_dir) / stage, recorded, "auto", stage,
                   "train.resume" if train is not None else "resume")


def refuse_or_warn(diff: list, mode: str, refusal: str, warning: str) -> None:
    """A config that differs from the recorded one (``diff``, from :func:`config_diff`): ``auto`` raises
    :class:`ResumeRefused` with ``refusal``, ``force`` prints ``warning`` (main process) and goes on. The
    messages name what differs themselves (:func:`describe_diff`)."""
    if not diff:
        return
    if mode == "auto":
        raise ResumeRefused(refusal)
    if Dist.current().is_main:
        console.print(f"[yellow]{warning}[/]")


def check_recorded(ckpt: Checkpoint | None, output: Path | None, config: dict, mode: str, stage: str,
                   switch: str) -> None:
    """Compare ``config`` with the one that wrote ``ckpt`` and the one that made ``output``: ``auto`` raises
    :class:`ResumeRefused` listing what differs, ``force`` says what differs and goes on."""
    recorded = checkpoint_config(ckpt) if ckpt is not None else None
    diff = config_diff(recorded, config) if recorded is not None else []
    if diff:
        refuse_or_warn(diff, mode,
                       f"{stage}: the config differs from the one that wrote {ckpt.path} ({describe_diff(diff)}); set "
                       f"{switch}=never to start afresh (its checkpoints are moved aside) or {switch}=force to "
                       "continue from the checkpoint with this config",
                       f"{stage}: {switch}=force: resuming from {ckpt.path} although the config differs "
                       f"({describe_diff(diff)})")
    recorded = output_config(output) if output is not None and mode == "auto" else None
    ignore = NOT_THE_RESULT | EXTENDING if ckpt is not None else NOT_THE_RESULT  # (extending needs a checkpoint)
    diff = config_diff(recorded, config, ignore) if recorded is not None else []
    if diff:
        raise ResumeRefused(f"{stage}: {output} was made with another config ({describe_diff(diff)}); set "
                            f"{switch}=never to train afresh and replace it, or use another run_dir")


def _start_afresh(root: Path, output: Path | None, stage: str, switch: str, logger) -> None:
    """``never``: move the stage's checkpoints and logs out of the way (by the main process)."""
    dist = Dist.current()
    if dist.is_main and (root.exists() or (logger is not None and has_logs(logger))):
        if root.exists():
            aside = move_aside(root)
        else:
            aside = aside_name(root)
            aside.mkdir(parents=True)
        if logger is not None:
            move_logs(logger, aside)
        replaced = f"; {output} is replaced when this run finishes" if output is not None and output.exists() else ""
        console.print(f"[yellow]{stage}: {switch}=never: starting afresh; the earlier run's checkpoints and metric "
                      f"records are in {aside}{replaced}[/]")
    dist.barrier()


def _board(logger) -> Path:
    return logger.run_dir / "tensorboard" / logger.stage


def has_logs(logger) -> bool:
    """Whether ``logger``'s stage has records in metrics.jsonl or a TensorBoard folder."""
    return bool(stage_records(logger)) or _board(logger).exists()


def move_logs(logger, aside: Path) -> None:
    """Move ``logger``'s stage records from metrics.jsonl to ``aside/metrics.jsonl`` and its TensorBoard folder to
    ``aside/tensorboard``, so that a new run's curves are not drawn over an earlier run's."""
    records = stage_records(logger)
    if records:
        atomic_write_text(aside / "metrics.jsonl", "".join(line + "\n" for line in records))
        logger.discard_after(-1)
    if _board(logger).exists():
        os.replace(_board(logger), aside / "tensorboard")


def stage_records(logger) -> list[str]:
    """The lines of ``metrics.jsonl`` that ``logger``'s stage wrote (torn lines left out)."""
    if not logger.path.is_file():
        return []
    lines = []
    for line in logger.path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line).get("stage") == logger.stage:
                lines.append(line)
        except (ValueError, AttributeError):
            continue
    return lines
