"""Masked reductions over padded tensors.

``mask`` is 1 (or True) on real positions and 0 on padding; it has the shape of
``values`` (or broadcasts to it). Reductions divide by the number of real positions,
never by the padded size. A mask with no real positions raises instead of silently
returning 0 (a zero learning signal must fail loudly).
"""

from __future__ import annotations

import torch


def masked_sum(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Σ values·mask over ``dim`` (all elements when None)."""
    masked = values * mask.to(values.dtype)
    return masked.sum() if dim is None else masked.sum(dim=dim)


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Σ values·mask / Σ mask over ``dim`` (all elements when None).

    With ``dim=None`` an all-zero mask raises ValueError. With a ``dim``, rows whose
    mask is all zero give 0 (their count is clamped to 1) so a batch can hold an
    empty row without producing NaN.
    """
    mask = mask.to(values.dtype)
    if dim is None:
        count = mask.sum()
        if count.item() == 0:
            raise ValueError("masked_mean: the mask has no real positions (all zeros)")
        return (values * mask).sum() / count
    return (values * mask).sum(dim=dim) / mask.sum(dim=dim).clamp(min=1)


def masked_var(values: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of the masked elements (scalar); Bessel-corrected when ``unbiased``."""
    mean = masked_mean(values, mask)
    centred_sq = (values - mean) ** 2
    variance = masked_mean(centred_sq, mask)
    if unbiased:
        count = mask.to(values.dtype).sum()
        if count.item() < 2:
            raise ValueError("masked_var: an unbiased variance needs at least 2 real positions")
        variance = variance * count / (count - 1)
    return variance


def masked_whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """(values − mean) / sqrt(var + eps) over masked elements; masked-out positions become 0.

    With ``shift_mean=False`` the mean is added back (scale only), as in PPO reward whitening.
    """
    mean = masked_mean(values, mask)
    var = masked_var(values, mask, unbiased=False)
    whitened = (values - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return whitened * mask.to(values.dtype)
