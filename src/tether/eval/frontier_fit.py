"""Gao et al. (2022)'s functional forms of reward against KL, fitted to a frontier's points.

"Scaling Laws for Reward Model Overoptimization" (Gao, Schulman, Hilton 2022) writes the gold reward gained over
the starting policy as a function of d = √KL(π ‖ π_init):

- best-of-N:  R(d) = d (α − β d)
- RL (PPO):   R(d) = d (α − β log d)

Both are linear in (α, β), so the least-squares fit through the origin is a 2 × 2 linear solve:
R ≈ α·d − β·d² (best-of-N) or α·d − β·d·log d (RL). With β > 0 each form rises, peaks and falls: best-of-N at
d* = α / (2β), RL at d* = exp(α/β − 1), i.e. KL* = d*²; that is where the reward turns down. The proxy usually
fits with β ≤ 0 or a peak beyond the points (it keeps climbing): the gap between the two peaks is over-optimisation.

Pure functions over plain floats; :func:`tether.recipes.frontier.run_frontier` applies them to its points.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

FORMS = {"best-of-n": "d(α − βd)", "rl": "d(α − β log d)"}
METHOD_FORMS = {"best-of-n": "best-of-n", "ppo": "rl", "dpo": "rl"}  # each frontier method's form


@dataclass(frozen=True)
class GaoFit:
    """One fitted form: R(d) for d = √KL, its coefficients, R² over the points it was fitted to, and the KL where
    it peaks (None when β ≤ 0: no peak, the curve keeps rising)."""

    form: str
    alpha: float
    beta: float
    r2: float | None
    n_points: int
    peak_kl: float | None

    def __call__(self, kl: float) -> float:
        return gao_curve(self.form, self.alpha, self.beta, kl)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "formula": FORMS[self.form]}


def _features(form: str, d: float) -> tuple[float, float]:
    """The two regressors whose coefficients are α and β: R = α·f1 + β·f2."""
    if form == "best-of-n":
        return d, -d * d
    if form == "rl":
        return d, (-d * math.log(d)) if d > 0 else 0.0  # d log d → 0 as d → 0
    raise ValueError(f"unknown form {form!r}: use one of {', '.join(FORMS)}")


def gao_curve(form: str, alpha: float, beta: float, kl: float) -> float:
    """R at ``kl`` (nats) for the form's coefficients."""
    f1, f2 = _features(form, math.sqrt(max(kl, 0.0)))
    return alpha * f1 + beta * f2


def peak_kl(form: str, alpha: float, beta: float) -> float | None:
    """The KL where R(d) is largest, or None when β ≤ 0 (R keeps rising)."""
    if beta <= 0:
        return None
    d = alpha / (2 * beta) if form == "best-of-n" else math.exp(alpha / beta - 1)
    return d * d if d > 0 else 0.0


def fit_gao(kls: list[float], gains: list[float], form: str) -> GaoFit | None:
    """Least-squares (α, β) of ``form`` through the points (KL, reward gain over the start); None with fewer than
    two points at KL > 0 or when their regressors are collinear (the fit is not determined)."""
    if len(kls) != len(gains):
        raise ValueError(f"{len(kls)} KL values for {len(gains)} gains")
    rows = [(_features(form, math.sqrt(max(k, 0.0))), g) for k, g in zip(kls, gains) if k > 0]
    if len(rows) < 2:
        return None
    s11 = sum(f1 * f1 for (f1, _), _ in rows)
    s12 = sum(f1 * f2 for (f1, f2), _ in rows)
    s22 = sum(f2 * f2 for (_, f2), _ in rows)
    t1 = sum(f1 * g for (f1, _), g in rows)
    t2 = sum(f2 * g for (_, f2), g in rows)
    det = s11 * s22 - s12 * s12
    if abs(det) <= 1e-12 * max(s11 * s22, 1e-300):
        return None
    alpha = (t1 * s22 - t2 * s12) / det
    beta = (s11 * t2 - s12 * t1) / det
    values = [g for _, g in rows]
    mean = sum(values) / len(values)
    total = sum((g - mean) ** 2 for g in values)
    residual = sum((g - (alpha * f1 + beta * f2)) ** 2 for (f1, f2), g in rows)
    r2 = 1 - residual / total if total > 0 else None
    return GaoFit(form, alpha, beta, r2, len(rows), peak_kl(form, alpha, beta))


def gains_over(point: dict[str, Any], start: dict[str, Any]) -> dict[str, float | None]:
    """A frontier point's ``proxy_gain`` and ``gold_gain`` over the starting policy's rewards ``start`` (None where
    the point or the start lacks that reward)."""
    def number(x: Any) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool)

    return {f"{reward}_gain": point[reward] - start[reward] if number(point.get(reward)) and number(start.get(reward))
            else None for reward in ("proxy", "gold")}


def fit_methods(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each method's form (:data:`METHOD_FORMS`) fitted to its points' gold and proxy gains: ``points`` are
    ``{"method", "kl", "gold_gain", "proxy_gain"}`` (a gain None where not measured); one ``{"method", "reward",
    ...GaoFit.as_dict()}`` per method and reward with a determined fit (two or more points at KL > 0)."""
    fits = []
    for method, form in METHOD_FORMS.items():
        for reward in ("gold", "proxy"):
            usable = [p for p in points if p["method"] == method and p.get(f"{reward}_gain") is not None]
            fit = fit_gao([p["kl"] for p in usable], [p[f"{reward}_gain"] for p in usable], form)
            if fit is not None:
                fits.append({"method": method, "reward": reward, **fit.as_dict()})
    return fits
