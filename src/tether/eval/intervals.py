"""Confidence intervals for comparisons on the same prompts: a percentile bootstrap over prompts.

``tether eval`` answers each held-out prompt once per model, so a difference between two models is a mean
over prompts of a per-prompt difference, and its uncertainty is how much that mean would move on another
draw of prompts. The bootstrap estimates it by redrawing the prompts:

1. ``idx = numpy.random.default_rng(seed).integers(0, n, size=(resamples, n))``: each of the ``resamples``
   rows is ``n`` prompt indices drawn uniformly with replacement (this exact call, so a result can be
   reproduced by hand from the seed);
2. per row, the statistic on those prompts: ``mean(a[idx]) − mean(b[idx])`` for :func:`paired_bootstrap`
   — the *same* indices for ``a`` and ``b``, which is what makes it paired: a prompt that is hard for both
   models stays hard for both in every resample, so only the per-prompt differences vary — or
   ``mean(values[idx])`` for :func:`bootstrap_mean`;
3. ``low`` / ``high`` = the ``100·(1 − level)/2`` and ``100·(1 + level)/2`` percentiles of those
   ``resamples`` means, by ``numpy.percentile(..., method="linear")`` (numpy's default: the sorted means
   ``m_0 ≤ … ≤ m_{R−1}`` are read at position ``p/100 · (R − 1)``, interpolating linearly between the two
   neighbours).

``estimate`` is the statistic on the full data (not the mean of the resamples). With ``n = 1`` or identical
values every resample is the same and the interval has zero width: the bootstrap only sees the spread
between the prompts it was given, so a handful of prompts gives an interval that is too narrow, not a wide one.

Pure functions on numbers (numpy only); ``tether.recipes.evaluate`` applies them and ``tether.eval.report``
and ``tether.eval.verdict`` read the results.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

DEFAULT_RESAMPLES = 2000
DEFAULT_LEVEL = 0.95
METHOD = "paired bootstrap over prompts"


@dataclass(frozen=True)
class Interval:
    """A point estimate with its bootstrap interval ``[low, high]`` at ``level``, over ``n`` prompts."""

    estimate: float
    low: float
    high: float
    n: int
    level: float = DEFAULT_LEVEL

    def above(self, x: float) -> bool:
        """The whole interval lies above ``x`` (``low > x``)."""
        return self.low > x

    def below(self, x: float) -> bool:
        """The whole interval lies below ``x`` (``high < x``)."""
        return self.high < x

    @property
    def clears_zero(self) -> bool:
        """Zero lies outside the interval, on either side: the sign of the difference is resolved."""
        return self.above(0.0) or self.below(0.0)

    def to_dict(self) -> dict[str, Any]:
        """``{"estimate", "low", "high", "n", "level"}``, as written into eval.json."""
        return {"estimate": self.estimate, "low": self.low, "high": self.high, "n": self.n, "level": self.level}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Interval:
        """The inverse of :meth:`to_dict` (``level`` defaults to 0.95 when absent)."""
        return cls(float(data["estimate"]), float(data["low"]), float(data["high"]), int(data["n"]),
                   float(data.get("level", DEFAULT_LEVEL)))


def _as_array(values: Sequence[float], name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name}: expected a flat list of numbers, one per prompt, got shape {array.shape}")
    if array.size < 1:
        raise ValueError(f"{name}: needs at least one value (n ≥ 1), got none")
    bad = np.flatnonzero(~np.isfinite(array))
    if bad.size:
        raise ValueError(f"{name}: every value must be finite; position {int(bad[0])} is {float(array[bad[0]])}")
    return array


def _check_settings(resamples: int, level: float) -> None:
    if isinstance(resamples, bool) or not isinstance(resamples, (int, np.integer)) or resamples < 1:
        raise ValueError(f"resamples: expected an integer ≥ 1, got {resamples!r}")
    if not isinstance(level, (int, float)) or not math.isfinite(level) or not 0.0 < level < 1.0:
        raise ValueError(f"level: expected a number strictly between 0 and 1 (0.95 for a 95% interval), got {level!r}")


def resample_indices(n: int, resamples: int, seed: int) -> np.ndarray:
    """The ``(resamples, n)`` prompt indices of every resample: ``default_rng(seed).integers(0, n, ...)``."""
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def _percentiles(means: np.ndarray, level: float) -> tuple[float, float]:
    low, high = np.percentile(means, [100.0 * (1.0 - level) / 2.0, 100.0 * (1.0 + level) / 2.0], method="linear")
    return float(low), float(high)


def paired_bootstrap(a: Sequence[float], b: Sequence[float], *, resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                     level: float = DEFAULT_LEVEL) -> Interval:
    """Interval for ``mean(a) − mean(b)`` where ``a[i]`` and ``b[i]`` were measured on the same prompt ``i``.

    Each resample draws ``n`` prompt indices with replacement (:func:`resample_indices`) and takes
    ``mean(a[idx]) − mean(b[idx])`` over the same indices; low / high are the linear-interpolation
    percentiles ``(1 − level)/2`` and ``(1 + level)/2`` of those differences. Raises ValueError for lists of
    different lengths, an empty list, a non-finite value, ``resamples < 1`` or ``level`` outside (0, 1).
    """
    _check_settings(resamples, level)
    x, y = _as_array(a, "a"), _as_array(b, "b")
    if x.size != y.size:
        raise ValueError(f"a and b must be paired, one value per prompt each: got {x.size} and {y.size} values")
    idx = resample_indices(x.size, resamples, seed)
    diffs = x[idx].mean(axis=1) - y[idx].mean(axis=1)
    low, high = _percentiles(diffs, level)
    return Interval(float(x.mean() - y.mean()), low, high, int(x.size), float(level))


def bootstrap_mean(values: Sequence[float], *, resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                   level: float = DEFAULT_LEVEL) -> Interval:
    """Interval for ``mean(values)`` over prompts (e.g. win outcomes 1 / ½ / 0 per prompt), drawn as in
    :func:`paired_bootstrap` (same indices for the same ``n``, ``resamples`` and ``seed``)."""
    _check_settings(resamples, level)
    x = _as_array(values, "values")
    idx = resample_indices(x.size, resamples, seed)
    low, high = _percentiles(x[idx].mean(axis=1), level)
    return Interval(float(x.mean()), low, high, int(x.size), float(level))
