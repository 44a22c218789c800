"""Atomic, verifiable training checkpoints.

Layout: ``<run_dir>/checkpoints/<stage>/step-N/`` holding the trainable weights
(``model.safetensors``), optimizer / scheduler / trainer state (JSON + safetensors,
see :mod:`tether.utils.state_io`), every RNG state, the resolved config of the run that wrote it
(``config.json``: a resume compares it with its own, see :mod:`tether.utils.resume`), and
``manifest.json`` with the sha256 of each file. A checkpoint is written into a temporary folder, fsynced and
renamed, so a crash leaves either the old set or the new one. A checkpoint whose
manifest is missing or whose files do not match it is never loaded: resume falls back
to the previous good one and says so.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from tether.errors import ConfigError
from tether.utils.distributed import Dist
from tether.utils.files import apply_umask
from tether.utils.state_io import load_state, save_state

_STEP = re.compile(r"^step-(\d+)$")
CONFIG_FILE = "config.json"


class CheckpointMismatch(ConfigError):
    """A checkpoint that cannot be loaded into this model (written for another architecture or set of trainable
    weights); the message names the first parameter that differs and what to do."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():  # (a run resumed on a machine with fewer GPUs: those it has)
        for index, device_state in enumerate(list(state["cuda"])[:torch.cuda.device_count()]):
            torch.cuda.set_rng_state(device_state, index)


def trainable_state_dict(model) -> dict[str, torch.Tensor]:
    """Parameters that train (all of them, or the LoRA adapters), de-duplicated for tied weights."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    seen: set[int] = set()
    out: dict[str, torch.Tensor] = {}
    for name, param in named:
        if id(param) in seen:
            continue
        seen.add(id(param))
        out[name] = param.detach().cpu().contiguous()
    return out


@dataclass
class Checkpoint:
    path: Path
    step: int


def checkpoint_root(run_dir: str | Path, stage: str) -> Path:
    return Path(run_dir) / "checkpoints" / stage


def list_checkpoints(root: Path) -> list[Checkpoint]:
    if not root.is_dir():
        return []
    found = [Checkpoint(p, int(m.group(1))) for p in root.iterdir() if (m := _STEP.match(p.name)) and p.is_dir()]
    return sorted(found, key=lambda c: c.step)


def verify(path: Path) -> str | None:
    """None if the checkpoint is complete and intact, else the reason it is not."""
    manifest = path / "manifest.json"
    if not manifest.is_file():
        return "no manifest (incomplete write)"
    try:
        files = json.loads(manifest.read_text())["files"]
    except (ValueError, KeyError):
        return "unreadable manifest"
    for name, digest in files.items():
        file = path / name
        if not file.is_file():
            return f"missing {name}"
        if _sha256(file) != digest:
            return f"{name} does not match its sha256"
    return None


def save_checkpoint(root: Path, step: int, model, optimizer, scheduler, trainer_state: dict[str, Any],
                    keep: int = 2, config: dict[str, Any] | None = None) -> Path:
    """Write ``root/step-<step>`` atomically; prune to the newest ``keep``. ``config``: the run's resolved config
    (``to_dict``), stored as ``config.json`` so that a resume can tell whether it continues the same run.

    In a data-parallel run the main process writes it and every process returns once it is complete
    (non-finite weights are refused on every process, so none is left waiting for the main one). Under FSDP
    every process takes part in gathering the full weights and optimizer state first, so the files are the
    same as a single process writes."""
    dist = Dist.current()
    if dist.sharded:
        return _save_sharded_checkpoint(dist, root, step, model, optimizer, scheduler, trainer_state, keep, config)
    weights = trainable_state_dict(model)
    for name, tensor in weights.items():
        if not torch.isfinite(tensor).all():
            raise FloatingPointError(f"refusing to write a checkpoint: parameter {name} has NaN/inf values")
    if dist.enabled:
        if dist.is_main:
            _write_checkpoint(root, step, weights, optimizer.state_dict(), scheduler, trainer_state, keep, config)
        dist.barrier()
        return root / f"step-{step}"
    return _write_checkpoint(root, step, weights, optimizer.state_dict(), scheduler, trainer_state, keep, config)


def _trainable_names(model) -> list[str]:
    """The names ``trainable_state_dict`` keeps (the first name of a tied parameter)."""
    return [n for n, p in model.named_parameters() if p.requires_grad]


def _save_sharded_checkpoint(dist, root: Path, step: int, model, optimizer, scheduler,
                             trainer_state: dict[str, Any], keep: int, config: dict[str, Any] | None) -> Path:
    # every process checks its own shards (DTensor.to_local); the verdict and the first bad name are the same on all
    flags = dist.sum({name: float(not torch.isfinite(p.to_local() if hasattr(p, "to_local") else p).all())
                      for name, p in model.named_parameters() if p.requires_grad})
    bad = [name for name, flag in sorted(flags.items()) if flag > 0]
    if bad:
        raise FloatingPointError(f"refusing to write a checkpoint: parameter {bad[0]} has NaN/inf values")
    weights = {n: t.contiguous() for n, t in dist.full_model_state(model, _trainable_names(model)).items()}
    optimizer_state = dist.full_optimizer_state(model, optimizer)
    if dist.is_main:
        _write_checkpoint(root, step, weights, optimizer_state, scheduler, trainer_state, keep, config)
    dist.barrier()
    return root / f"step-{step}"


def _write_checkpoint(root: Path, step: int, weights: dict[str, torch.Tensor], optimizer_state: dict[str, Any],
                      scheduler, trainer_state: dict[str, Any], keep: int, config: dict[str, Any] | None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".step-{step}.tmp-", dir=root))
    try:
        save_file(weights, str(tmp / "model.safetensors"))
        save_state(optimizer_state, tmp, "optimizer")
        save_state(scheduler.state_dict() if scheduler is not None else {}, tmp, "scheduler")
        save_state({"trainer": trainer_state, "rng": rng_state()}, tmp, "trainer_state")
        if config is not None:
            (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=1, default=str) + "\n")
        files = {p.name: _sha256(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        (tmp / "manifest.json").write_text(json.dumps({"step": step, "files": files}, indent=1))
        apply_umask(tmp)  # (mkdtemp's folder is 0o700 and safetensors writes 0o600: the modes mkdir / open give)
        for p in tmp.iterdir():
            with open(p, "rb") as handle:
                os.fsync(handle.fileno())
        target = root / f"step-{step}"
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    for old in list_checkpoints(root)[:-keep] if keep > 0 else []:
        shutil.rmtree(old.path, ignore_errors=True)
    return target


def latest_valid_checkpoint(root: Path, warn=print) -> Checkpoint | None:
    """Newest checkpoint that verifies; broken ones are reported and skipped.

    Temporary folders of checkpoint writes that a crash cut short are removed (by the main process)."""
    if Dist.current().is_main and root.is_dir():
        for stale in root.glob(".step-*.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
    for ckpt in reversed(list_checkpoints(root)):
        problem = verify(ckpt.path)
        if problem is None:
            return ckpt
        warn(f"skipping checkpoint {ckpt.path}: {problem}; trying an older one")
    return None


def checkpoint_config(ckpt: Checkpoint) -> dict[str, Any] | None:
    """The config of the run that wrote ``ckpt`` (None for a checkpoint written before tether recorded it, or one
    whose record is unreadable: such a checkpoint fails ``verify``)."""
    try:
        config = json.loads((ckpt.path / CONFIG_FILE).read_text())
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) else None


def _misfit(weights: dict[str, torch.Tensor], model) -> str | None:
    """Why ``weights`` (a checkpoint's trainable weights) do not fit ``model``, or None when they do."""
    params = dict(model.named_parameters())
    for name, tensor in weights.items():
        if name not in params:
            return f"it has a parameter {name} that this model lacks"
        if tuple(params[name].shape) != tuple(tensor.shape):
            return f"parameter {name} is {list(tensor.shape)} there, {list(params[name].shape)} here"
    untrained = [name for name in _trainable_names(model) if name not in weights]
    if untrained:
        return f"it lacks the trainable parameter {untrained[0]}"
    return None


def load_checkpoint(ckpt: Checkpoint, model, optimizer, scheduler) -> dict[str, Any]:
    """Restore weights, optimizer, scheduler and RNGs; return the trainer state dict.

    A checkpoint of another model (other names or shapes, other trainable weights) raises
    :class:`CheckpointMismatch` before anything is changed. Under FSDP every process reads the full checkpoint
    and keeps its shard of the weights and optimizer state."""
    weights = load_file(str(ckpt.path / "model.safetensors"))
    problem = _misfit(weights, model)
    if problem is not None:
        raise CheckpointMismatch(
            f"checkpoint {ckpt.path} was written for another model ({problem}); start this stage afresh with "
            "resume=never (train.resume=never for sft, rm, dpo and rejection-sample) or use another run_dir")
    params = dict(model.named_parameters())
    dist = Dist.current()
    if dist.sharded:
        dist.load_full_state(model, weights, optimizer, load_state(ckpt.path, "optimizer"))
    else:
        with torch.no_grad():
            for name, tensor in weights.items():
                params[name].copy_(tensor)
        optimizer.load_state_dict(load_state(ckpt.path, "optimizer"))
    if scheduler is not None:
        scheduler.load_state_dict(load_state(ckpt.path, "scheduler"))
    state = load_state(ckpt.path, "trainer_state")
    set_rng_state(state["rng"])
    return state["trainer"]
