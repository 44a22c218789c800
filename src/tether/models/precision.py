"""Numeric precision of a run: ``fp32``, ``bf16-mixed``, ``bf16`` or ``auto`` (``model.precision``).

- ``fp32``: fp32 weights, fp32 compute (the default of the single recipes).
- ``bf16-mixed``: fp32 master weights and fp32 optimizer state; the model's matrix products run in bf16 under
  ``torch.autocast``, the way practitioners train on GPUs (and on CPUs whose cores multiply bf16 natively). The
  parts that decide what RLHF computes stay in fp32: the vocabulary head and any scalar head (a reward model's or
  value model's ``score``) run in fp32 on the fp32 master weights, so logits, log-softmax, log-probs, KL,
  losses, advantages and values are fp32 (:func:`use_precision` wraps them). Gradients reach the fp32 weights in
  fp32; a checkpoint holds only fp32 tensors, so resume is as exact as in fp32.
- ``bf16``: bf16 weights and compute (``model.dtype=bfloat16``): half the memory, the least exact; log-probs are
  still taken in fp32 from the bf16 logits (:mod:`tether.algos.logprobs`).
- ``auto``: ``bf16-mixed`` on a GPU that supports bf16; on a CPU, ``bf16-mixed`` only where the cores report native
  bf16 (``avx512_bf16`` or ``amx_bf16``) **and** a bf16 matrix product measured here runs at least
  :data:`MIN_SPEEDUP` times faster than fp32, else ``fp32``. The flags alone are not enough: an Intel Xeon whose
  hypervisor hides AMX keeps ``avx512_bf16``, whose dot-product instruction does no more multiply-adds per cycle
  than fp32's FMA, and measured its bf16 products at 0.5–0.9x fp32 (docs/performance.md). :func:`resolve_precision`
  gives the choice and the reason; recipes print both and record the choice in ``config.yaml``.

Sampling in a bf16 mode runs the same autocast forward with the bf16 copies of the weights made once per rollout
(autocast's cast cache lives as long as the outermost autocast block, which :func:`autocast_block` opens around
``generate``), and the sampler's own log-probs of the sampled tokens are compared with the trainer's
(``generation/logprob_gap``).
"""

from __future__ import annotations

import contextlib
import functools
import time
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from tether.models.decoding import skinny_linear
from tether.models.scoring import base_model
from tether.utils.device import model_device
from tether.utils.distributed import Dist

PRECISIONS = ("fp32", "bf16-mixed", "bf16", "auto")
MIN_SPEEDUP = 1.2  # auto picks bf16-mixed on a CPU only if its bf16 matmul is at least this much faster than fp32
ATTRIBUTE = "_tether_precision"  # set on a model by use_precision
SCALAR_HEADS = ("score", "v_head", "value_head", "classifier")  # heads whose output is a reward or a value


@dataclass(frozen=True)
class Resolved:
    """What a precision setting means on this device: ``mode`` (fp32 / bf16-mixed / bf16) and why."""

    asked: str
    mode: str
    reason: str

    def describe(self) -> str:
        head = f"precision {self.mode}" if self.asked == self.mode else f"precision {self.asked} → {self.mode}"
        return f"{head} ({self.reason})"


def cpu_bf16_flags(cpuinfo: str | None = None) -> list[str]:
    """The CPU's native-bf16 feature flags from ``/proc/cpuinfo`` (x86's ``avx512_bf16`` and ``amx_bf16``, Arm's
    ``bf16``); [] where the file is missing (not Linux) or lists none."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            return []
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        if line.startswith(("flags", "Features")):
            flags.update(line.split(":", 1)[-1].split())
    return [f for f in ("avx512_bf16", "amx_bf16", "bf16") if f in flags]


def _best_seconds(dtype: torch.dtype, n: int, repeats: int) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b  # warm-up (oneDNN builds its kernel here)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return best


@functools.lru_cache(maxsize=1)
def cpu_bf16_speedup(n: int = 1024, repeats: int = 5) -> float:
    """fp32 time / bf16 time of an n × n matrix product on this CPU with torch's threads, best of ``repeats``
    each, the two interleaved (about 0.2 s; measured once per process). In a data-parallel run every process
    measures and all take the smallest ratio, so that they pick the same precision (the first call is then a
    collective: every process makes it, at the same point of the run)."""
    fp32 = bf16 = float("inf")
    for _ in range(2):
        fp32 = min(fp32, _best_seconds(torch.float32, n, repeats))
        bf16 = min(bf16, _best_seconds(torch.bfloat16, n, repeats))
    dist = Dist.current()
    if dist.enabled:
        return float(dist.all_gather(torch.tensor([fp32 / bf16], dtype=torch.float64)).min())
    return fp32 / bf16


def resolve_precision(asked: str, device: torch.device | str = "cpu") -> Resolved:
    """The mode ``asked`` means on ``device`` (see the module docstring for ``auto``)."""
    if asked not in PRECISIONS:
        raise ValueError(f"precision {asked!r}: use one of {', '.join(PRECISIONS)}")
    if asked != "auto":
        return Resolved(asked, asked, "as configured")
    device = torch.device(device)
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return Resolved(asked, "bf16-mixed", f"{torch.cuda.get_device_name(device)} computes in bf16")
        return Resolved(asked, "fp32", f"{torch.cuda.get_device_name(device)} has no bf16")
    if device.type != "cpu":
        return Resolved(asked, "fp32", f"no bf16 autocast policy for {device.type} here")
    flags = cpu_bf16_flags()
    if not flags:
        return Resolved(asked, "fp32", "this CPU reports no native bf16 (avx512_bf16, amx_bf16 or Arm's bf16)")
    speedup = cpu_bf16_speedup()
    measured = f"{'/'.join(flags)}; a bf16 matmul measured {speedup:.2f}x fp32 here"
    if speedup >= MIN_SPEEDUP:
        return Resolved(asked, "bf16-mixed", measured)
    return Resolved(asked, "fp32", f"{measured}, under the {MIN_SPEEDUP}x that bf16-mixed needs to pay")


def weight_dtype(mode: str, configured: str) -> str:
    """The dtype a model's weights are loaded in under ``mode`` (a resolved precision), given ``model.dtype``."""
    if mode == "bf16-mixed":
        if configured not in ("float32", "auto"):
            raise ValueError(f"precision bf16-mixed keeps fp32 master weights; model.dtype={configured} contradicts "
                             "it (use precision=bf16 for bf16 weights)")
        return "float32"
    if mode == "bf16":
        if configured not in ("float32", "bfloat16"):
            raise ValueError(f"precision bf16 holds bf16 weights; model.dtype={configured} contradicts it")
        return "bfloat16"
    return configured


def _mixed_forward(cls_forward):
    """``cls_forward`` (the class's forward) run under bf16 autocast on the model's device, with its signature:
    transformers' ``generate`` reads the forward's parameters to decide what to pass (``position_ids``,
    ``logits_to_keep``, the cache's name), and a bare ``(*args, **kwargs)`` would make it drop the positions of
    left-padded prompts."""

    @functools.wraps(cls_forward)
    def forward(self: torch.nn.Module, *args, **kwargs):
        device = next(self.parameters()).device.type
        with torch.autocast(device_type=device, dtype=torch.bfloat16):
            return cls_forward(self, *args, **kwargs)

    return forward


def _fp32_linear_forward(self: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """A head's ``F.linear`` in fp32 (autocast off), on fp32 inputs and the fp32 master weights; few-row inputs as
    W·xᵀ on the CPU (:func:`tether.models.decoding.skinny_linear`), as decoding does in fp32."""
    with torch.autocast(device_type=x.device.type, enabled=False):
        bias = None if self.bias is None else self.bias.float()
        return skinny_linear(x.float(), self.weight.float(), bias)


def _fp32_heads(model: torch.nn.Module) -> list[torch.nn.Linear]:
    heads = []
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if type(output) is torch.nn.Linear:
        heads.append(output)
    for name in SCALAR_HEADS:
        module = getattr(model, name, None)
        if type(module) is torch.nn.Linear and module not in heads:
            heads.append(module)
    return heads


def use_precision(model: torch.nn.Module, mode: str) -> torch.nn.Module:
    """Make ``model`` (a transformers model, before any PEFT or DDP wrapper) compute in ``mode`` and return it.

    ``bf16-mixed``: the model's forward runs under bf16 autocast, and its vocabulary head and scalar heads
    (``score``, ``v_head``, ...) in fp32 with autocast off. The forwards are replaced on the instances only, so the
    saved weights and config are untouched; a deep copy (a reference made from the policy) keeps the mode. Other
    modes change nothing here (``bf16``'s weights are loaded in bf16). The mode is remembered on the model
    (:func:`precision_of`)."""
    if mode not in ("fp32", "bf16-mixed", "bf16"):
        raise ValueError(f"use_precision: {mode!r} is not a resolved precision (fp32, bf16-mixed, bf16)")
    setattr(model, ATTRIBUTE, mode)
    if mode != "bf16-mixed":
        return model
    if "forward" in vars(model):
        raise ValueError(f"use_precision: {type(model).__name__}'s forward is already replaced on the instance "
                         "(an accelerate hook?); bf16-mixed wraps the class's forward")
    model.forward = types.MethodType(_mixed_forward(type(model).forward), model)
    for head in _fp32_heads(model):
        if "forward" not in vars(head):
            head.forward = types.MethodType(_fp32_linear_forward, head)
    return model


def precision_of(model: torch.nn.Module) -> str:
    """The mode :func:`use_precision` gave ``model`` (through PEFT / DDP wrappers); ``fp32`` if none."""
    return getattr(base_model(model), ATTRIBUTE, "fp32")


@contextlib.contextmanager
def autocast_block(model: torch.nn.Module) -> Iterator[None]:
    """An outer bf16 autocast block for a ``bf16-mixed`` model (nothing otherwise): the forwards inside share one
    cast of each trainable weight to bf16 (autocast caches casts until its outermost block ends), so a rollout's
    decoding steps read the bf16 copies instead of casting every weight again at every token."""
    if precision_of(model) != "bf16-mixed":
        yield
        return
    with torch.autocast(device_type=model_device(model).type, dtype=torch.bfloat16):
        yield
