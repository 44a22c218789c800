"""Masked reductions over padded tensors.

``mask`` is 1 (or True) on real positions and 0 on padding; it has the shape of
``values`` or broadcasts to it. Reductions divide by the number of real positions,
never by the padded size. Whatever sits under a 0 of the mask (padding, -inf
log-probs, NaN) cannot leak into a result. A mask with no real positions raises
instead of silently returning 0: a zero learning signal must fail loudly.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def _masked(values: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """values·mask with exact zeros where mask == 0 (even if values is inf/NaN there), and the mask as values' dtype.

    values: (...); mask: broadcastable to values → both returned with values' shape.
    """
    weights = mask.to(values.dtype).expand_as(values)  # (...)
    kept = torch.where(weights != 0, values * weights, torch.zeros_like(values))  # (...)
    return kept, weights


def masked_sum(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Σ_i values_i·mask_i over ``dim`` (all elements when None).

    values (B, T), mask (B, T) → scalar, or the shape of values without ``dim``.
    """
    kept, _ = _masked(values, mask)
    return kept.sum() if dim is None else kept.sum(dim=dim)


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Σ values·mask / Σ mask over ``dim`` (all elements when None).

    values (B, T), mask (B, T) → scalar (dim=None) or e.g. (B,) for dim=-1.
    With ``dim=None`` an all-zero mask raises ValueError. With a ``dim``, a row whose
    mask is all zero gives 0 (its count is clamped to 1), so a batch may hold an empty
    row without producing NaN; check the counts yourself if that must not happen.
    """
    kept, weights = _masked(values, mask)
    if dim is None:
        count = weights.sum()
        if count.item() == 0:
            raise ValueError("masked_mean: the mask has no real positions (all zeros); nothing to average")
        return kept.sum() / count
    return kept.sum(dim=dim) / weights.sum(dim=dim).clamp(min=1)


def masked_var(values: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of all masked elements → scalar.

    var = Σ mask·(x − μ)² / n, times n / (n − 1) when ``unbiased`` (Bessel), where
    μ = masked_mean(x) and n = Σ mask. An unbiased variance of fewer than 2 elements raises.
    """
    mean = masked_mean(values, mask)  # ()
    variance = masked_mean((values - mean) ** 2, mask)  # ()
    if unbiased:
        count = mask.to(values.dtype).expand_as(values).sum()
        if count.item() < 2:
            raise ValueError("masked_var: an unbiased variance needs at least 2 real positions")
        variance = variance * count / (count - 1)
    return variance


def masked_whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """(x − μ) / sqrt(σ² + eps) over the masked elements; masked-out positions become 0.

    values (B, T), mask (B, T) → (B, T). μ and σ² are the masked mean and the population
    (biased) variance, so the result has masked mean 0 and masked population variance 1.
    With ``shift_mean=False`` μ is added back (rescale only, as in PPO reward whitening).
    """
    mean = masked_mean(values, mask)  # ()
    variance = masked_var(values, mask, unbiased=False)  # ()
    return whiten_with(values, mask, mean, variance, shift_mean, eps)


def masked_whiten_across(values: torch.Tensor, mask: torch.Tensor,
                         total: Callable[[dict[str, float]], dict[str, float]] | None) -> torch.Tensor:
    """:func:`masked_whiten` over the masked elements of every process of a data-parallel run: ``total`` sums a
    dict of floats over the processes (two passes, as on one process); None means one process, plain
    :func:`masked_whiten`."""
    if total is None:
        return masked_whiten(values, mask)
    values, weights = values.float(), mask.float()
    totals = total({"sum": float((values * weights).sum()), "n": float(weights.sum())})
    mean = totals["sum"] / totals["n"]
    variance = total({"sq": float((((values - mean) ** 2) * weights).sum())})["sq"] / totals["n"]
    return whiten_with(values, mask, torch.tensor(mean), torch.tensor(variance))


def whiten_with(values: torch.Tensor, mask: torch.Tensor, mean: torch.Tensor, variance: torch.Tensor,
                shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """:func:`masked_whiten` with given moments (e.g. those of the whole batch of a data-parallel run)."""
    whitened = (values - mean) * torch.rsqrt(variance + eps)  # (B, T)
    if not shift_mean:
        whitened = whitened + mean
    return torch.where(mask.expand_as(values) != 0, whitened, torch.zeros_like(whitened))
