"""The cost side of a constrained run in ``tether eval`` (``cost=``, ``cost_limit=``): each model's mean cost on the
held-out prompts with its bootstrap interval, its change against the reference, and where that interval lies against
the bound d of the constraint E[cost] ≤ d (Safe RLHF, Dai et al. 2023; docs/ppo.md, Constrained PPO).

The cost is any reward spec scored on each answer, as PPO's ``cost`` is (for the harmless task's pipeline,
``-1*<run_dir>/cost_rm``: minus the harmless reward model's score). The constraint holds on these prompts when the
whole interval lies below d (``high < d``): then a model whose mean cost is under d is not under it by the luck of
the prompts drawn.

| eval.json key | what |
|---|---|
| ``cost_mean`` | the mean cost per answer |
| ``cost_interval`` | that mean with its bootstrap interval (:func:`tether.eval.intervals.bootstrap_mean`) |
| ``cost_change`` | the mean minus the reference's, a paired bootstrap over the prompts; not on the reference |
| ``cost_vs_limit`` | with ``cost_limit``: ``below`` (the interval's top < d), ``above`` (its bottom > d) or ``spans`` |

Pure functions on numbers; ``tether.recipes.evaluate`` applies them and ``tether.eval.report`` draws them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tether.eval.intervals import Interval, bootstrap_mean, paired_bootstrap

SIDES = ("below", "above", "spans")


def side_of_limit(interval: Interval, limit: float) -> str:
    """Where ``interval`` lies against the bound ``limit``: ``below`` (high < limit: the constraint holds),
    ``above`` (low > limit: it is violated) or ``spans`` (these prompts cannot tell)."""
    return "below" if interval.below(limit) else "above" if interval.above(limit) else "spans"


def cost_summary(costs: Sequence[float], limit: float | None, *, resamples: int, seed: int,
                 level: float) -> dict[str, Any]:
    """One model's ``cost_mean``, ``cost_interval`` and, with a ``limit``, ``cost_vs_limit``. Raises ValueError
    for no cost or a non-finite one (:func:`tether.eval.intervals.bootstrap_mean`)."""
    interval = bootstrap_mean(costs, resamples=resamples, seed=seed, level=level)
    out: dict[str, Any] = {"cost_mean": interval.estimate, "cost_interval": interval.to_dict()}
    if limit is not None:
        out["cost_vs_limit"] = side_of_limit(interval, limit)
    return out


def cost_change(costs: Sequence[float], reference: Sequence[float], *, resamples: int, seed: int,
                level: float) -> dict[str, Any]:
    """``{"cost_change": …}``: this model's mean cost minus the reference's on the same prompts, a paired
    bootstrap."""
    return {"cost_change": paired_bootstrap(costs, reference, resamples=resamples, seed=seed, level=level).to_dict()}
