"""Which device a process computes on, and moving inputs to a model's device.

One device per process: ``TETHER_DEVICE`` says which (default ``auto``):

- ``auto``: the process's CUDA device when torch sees one (``cuda:<LOCAL_RANK>`` under a launcher,
  ``cuda:0`` otherwise), else the CPU. Apple's ``mps`` is never picked by ``auto`` (several ops tether
  uses fall back to the CPU or are missing there); ask for it by name.
- ``cpu``, ``cuda``, ``cuda:<index>``, ``mps``: that device. ``cuda`` under a launcher means the process's
  own GPU (``cuda:<LOCAL_RANK>``).

``accelerate launch --cpu`` (``ACCELERATE_USE_CPU=true``) also keeps every process on the CPU.

The models a recipe loads are placed on this device (:func:`tether.models.loading.load_causal_lm` and friends);
every function that runs a model moves its inputs to the model's device (:func:`model_device`), so batches
built on the CPU (the collators, the rollout's prompts) can be handed to any model. Caches that grow with the
dataset (DPO's reference log-probs) stay on the CPU.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch

from tether.errors import ConfigError
from tether.utils.allocator import keep_freed_memory

ENV = "TETHER_DEVICE"


class DeviceError(ConfigError):
    """A device that cannot be used in this process; the message says why (exit code 2)."""


def _local_rank(env: Mapping[str, str]) -> int:
    for name in ("LOCAL_RANK", "MPI_LOCALRANKID", "OMPI_COMM_WORLD_LOCAL_RANK"):
        value = env.get(name, "").strip()
        if value.isdigit():
            return int(value)
    return 0


def resolve_device(env: Mapping[str, str] | None = None) -> torch.device:
    """The device this process computes on, from ``TETHER_DEVICE`` (see the module docstring)."""
    env = os.environ if env is None else env
    spec = env.get(ENV, "auto").strip().lower() or "auto"
    if env.get("ACCELERATE_USE_CPU", "false").strip().lower() in ("1", "true", "yes"):
        if spec not in ("auto", "cpu"):
            raise DeviceError(f"{ENV}={spec} contradicts accelerate's --cpu (ACCELERATE_USE_CPU=true)")
        return torch.device("cpu")
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise DeviceError(f"{ENV}={spec}: not a device; use auto, cpu, cuda, cuda:<index> or mps") from None
    if device.type == "cpu":
        return torch.device("cpu")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"{ENV}={spec}, but torch sees no CUDA device (torch {torch.__version__}"
                              f"{', a CPU-only build' if torch.version.cuda is None else ''}); use {ENV}=cpu")
        index = device.index if device.index is not None else _local_rank(env)
        count = torch.cuda.device_count()
        if index >= count:
            raise DeviceError(f"{ENV}={spec}: this process would use cuda:{index}, but torch sees {count} CUDA "
                              f"device(s){' (LOCAL_RANK=' + str(_local_rank(env)) + ')' if device.index is None else ''}")
        return torch.device("cuda", index)
    if device.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise DeviceError(f"{ENV}=mps, but torch's MPS backend is not available here")
        return torch.device("mps")
    raise DeviceError(f"{ENV}={spec}: tether runs on cpu, cuda or mps")


def model_device(model: torch.nn.Module) -> torch.device:
    """Where ``model`` computes: the device of its first parameter (a sharded parameter's local device)."""
    for param in model.parameters():
        return param.device
    return torch.device("cpu")


def to_device(batch, device: torch.device):
    """``batch`` with its tensors on ``device``: a tensor, or a dict (nested dicts too, e.g. KTO's mismatched
    pairs) whose other values are kept as they are."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: to_device(v, device) if isinstance(v, (torch.Tensor, dict)) else v for k, v in batch.items()}
    return batch


def forked_rng():
    """``torch.random.fork_rng`` over the CPU and every CUDA device in use: what is drawn inside (an evaluation's
    seeded sampling) leaves the run's random streams as they were."""
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    return torch.random.fork_rng(devices=list(range(torch.cuda.device_count())) if cuda else [])


def configure_cpu(num_threads: int) -> None:
    """torch's CPU threads (0 = torch's default) and, when this process computes on the CPU, glibc keeps freed
    memory for reuse instead of page-faulting it in again every step (:mod:`tether.utils.allocator`)."""
    if num_threads > 0:
        torch.set_num_threads(num_threads)
    try:
        on_cpu = resolve_device().type == "cpu"
    except DeviceError:
        return  # the recipe reports a bad TETHER_DEVICE where it places its models
    if on_cpu:
        keep_freed_memory()
