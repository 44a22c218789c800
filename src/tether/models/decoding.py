"""Faster decoding steps on the CPU: a linear layer applied to a few rows computed as W·xᵀ.

A decoding step multiplies a handful of rows (one per sequence) by every weight matrix of the model. On the
CPU, ``F.linear(x, W)`` (x·Wᵀ, MKL's sgemm with a transposed B operand) runs such skinny products far below the
machine's memory bandwidth; the same product written as (W·xᵀ)ᵀ, the weight as the left operand read row by
row, is faster on the 2-core AMD EPYC machines tether is benchmarked on. Measured there (docs/performance.md),
SmolLM2's vocabulary head at 2 / 8 / 64 rows: 29 → 10, 53 → 16, 110 → 83 ms; one decoder layer's seven
projections at 8 rows: 2.5 → 2.1 ms. At 1 row (a matrix-vector product) the layers are 15% slower this way, so
a single row keeps ``F.linear``. The maths is the same product; only the order of the floating-point sums inside
each dot product differs (results agree to fp32 rounding).

:func:`skinny_linears` switches a model's ``nn.Linear`` layers to that form for the duration of a block
(:func:`tether.rollout.generation.generate` uses it); inputs of one row or more than :data:`SKINNY_ROWS` rows,
other dtypes, other devices and sharded (DTensor) weights take the usual ``F.linear``.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Iterator

import torch
import torch.nn.functional as F

SKINNY_ROWS = 64  # at 64 rows W·xᵀ is still faster (head: 110 → 83 ms); prefill-sized inputs keep F.linear


def skinny_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``F.linear(x, weight, bias)``, computed as (W·xᵀ)ᵀ when ``x`` has 2 to :data:`SKINNY_ROWS` rows of fp32
    on the CPU."""
    rows = x.numel() // x.shape[-1] if x.dim() else 0
    if (1 < rows <= SKINNY_ROWS and x.dim() >= 2 and x.device.type == "cpu" and x.dtype == torch.float32
            and weight.dtype == torch.float32 and type(weight) in (torch.Tensor, torch.nn.Parameter)):
        out = torch.mm(weight, x.reshape(rows, x.shape[-1]).t()).t()
        if bias is not None:
            out = out + bias
        return out.contiguous().reshape(*x.shape[:-1], weight.shape[0])
    return F.linear(x, weight, bias)


def _forward(self: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    return skinny_linear(x, self.weight, self.bias)


@contextlib.contextmanager
def skinny_linears(model: torch.nn.Module) -> Iterator[int]:
    """Within the block, every plain ``nn.Linear`` of ``model`` on the CPU computes with :func:`skinny_linear`;
    yields how many layers were switched. Layers whose ``forward`` is already replaced on the instance (e.g. by
    accelerate's hooks) and subclasses of ``nn.Linear`` are left alone; on exit the class's ``forward`` is back."""
    switched = []
    for module in model.modules():
        if (type(module) is torch.nn.Linear and "forward" not in vars(module)
                and module.weight.device.type == "cpu"):
            module.forward = types.MethodType(_forward, module)
            switched.append(module)
    try:
        yield len(switched)
    finally:
        for module in switched:
            vars(module).pop("forward", None)
