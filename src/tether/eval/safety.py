"""The helpful / harmless trade-off in ``tether eval`` (``safety=``): harm rate, over-refusal rate and helpfulness
per model, each with its bootstrap interval, and each model's change against the reference with a paired one.

A safety function (``module:function``, e.g. ``tether.tasks.harmless:safety_metrics``) is called like a reward
function, ``fn(prompts, responses, response_ids)`` and with ``rows=`` too when it takes them (each prompt's row of
the data file, so a ``kind`` field can say which prompts are harmful), and returns one dict per response with
``harm``, ``over_refusal`` and ``helpfulness``: a number, or None where the quantity does not apply (harm on a
benign prompt, over-refusal on a harmful one). A key left out counts as None.

| eval.json key | what |
|---|---|
| ``harm_rate`` | mean harm over the prompts where harm applies (the harmful ones) |
| ``over_refusal_rate`` | mean over-refusal over the prompts where it applies (the benign ones): the share refused |
| ``helpfulness_mean`` | mean helpfulness over the prompts where it applies (all, for the harmless task) |
| ``<rate>_interval`` | that mean with its bootstrap interval (``tether.eval.intervals.bootstrap_mean``); ``n`` = those prompts |
| ``<rate>_change`` | the mean minus the reference's, a paired bootstrap over the prompts both apply to; not on the reference |

(``<rate>`` is ``harm_rate``, ``over_refusal_rate`` or ``helpfulness``.) Pure functions on numbers and one
loader; ``tether.recipes.evaluate`` applies them and ``tether.eval.report`` draws them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from tether.errors import TetherInputError
from tether.eval.intervals import bootstrap_mean, paired_bootstrap
from tether.rollout.rewards import call_function, takes_rows
from tether.utils.imports import import_object

# per-response field -> (the eval.json name of its mean, of its interval, of its change against the reference)
METRICS: dict[str, tuple[str, str, str]] = {
    "harm": ("harm_rate", "harm_rate_interval", "harm_rate_change"),
    "over_refusal": ("over_refusal_rate", "over_refusal_rate_interval", "over_refusal_rate_change"),
    "helpfulness": ("helpfulness_mean", "helpfulness_interval", "helpfulness_change"),
}
FIELDS = tuple(METRICS)


class SafetySpecError(TetherInputError, ValueError):
    """A safety function that cannot be imported or returns something other than one dict per response."""


def check_values(values: Any, n: int, spec: str) -> list[dict[str, float | None]]:
    """``values`` as one ``{harm, over_refusal, helpfulness}`` dict per response (missing keys None, numbers as
    floats); a SafetySpecError naming ``spec``, the response and the key for anything else."""
    if not isinstance(values, Sequence) or isinstance(values, (str, bytes)) or len(values) != n:
        got = f"{len(values)} values" if isinstance(values, Sequence) else type(values).__name__
        raise SafetySpecError(f"safety function {spec}: expected a list of {n} dicts (one per response), got {got}")
    checked = []
    for i, item in enumerate(values):
        if not isinstance(item, dict):
            raise SafetySpecError(f"safety function {spec}, response {i}: expected a dict with {', '.join(FIELDS)}, "
                                  f"got {type(item).__name__}")
        unknown = sorted(set(item) - set(FIELDS))
        if unknown:
            raise SafetySpecError(f"safety function {spec}, response {i}: unknown key {unknown[0]!r} (expected "
                                  f"{', '.join(FIELDS)})")
        row: dict[str, float | None] = {}
        for key in FIELDS:
            value = item.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not math.isfinite(value)):
                raise SafetySpecError(f"safety function {spec}, response {i}, key {key!r}: expected a finite number "
                                      f"or None (not applicable), got {value!r}")
            row[key] = None if value is None else float(value)
        checked.append(row)
    return checked


class SafetySource:
    """A safety function given as ``module:function``, called with ``rows=`` when it takes them."""

    def __init__(self, spec: str):
        try:
            self.fn = import_object(spec)
        except ImportError as exc:
            raise SafetySpecError(f"safety function '{spec}' cannot be imported: {exc}") from None
        self.spec, self.with_rows = spec, takes_rows(self.fn)

    def measure(self, prompts: list[str], responses: list[str], response_ids: list[list[int]],
                rows: list[dict] | None = None) -> list[dict[str, float | None]]:
        """One checked ``{harm, over_refusal, helpfulness}`` dict per response."""
        values = call_function(self.fn, self.with_rows, prompts, responses, response_ids, rows)
        return check_values(values, len(responses), self.spec)


def applicable(values: list[dict[str, float | None]], field: str) -> list[float]:
    """The field's values where it applies (not None), in prompt order."""
    return [v[field] for v in values if v.get(field) is not None]


def safety_summary(values: list[dict[str, float | None]], *, resamples: int, seed: int,
                   level: float) -> dict[str, Any]:
    """One model's means and intervals (``harm_rate``, ``harm_rate_interval``, ...); a mean over no applicable
    prompt is None and has no interval."""
    out: dict[str, Any] = {}
    for field, (mean_key, interval_key, _) in METRICS.items():
        xs = applicable(values, field)
        out[mean_key] = sum(xs) / len(xs) if xs else None
        if xs:
            out[interval_key] = bootstrap_mean(xs, resamples=resamples, seed=seed, level=level).to_dict()
    return out


def safety_changes(values: list[dict[str, float | None]], reference: list[dict[str, float | None]], *,
                   resamples: int, seed: int, level: float) -> dict[str, Any]:
    """This model's change against the reference per metric (``harm_rate_change``, ...): a paired bootstrap over
    the prompts where both have a value; left out where no prompt has both."""
    out: dict[str, Any] = {}
    for field, (_, _, change_key) in METRICS.items():
        pairs = [(a[field], b[field]) for a, b in zip(values, reference)
                 if a.get(field) is not None and b.get(field) is not None]
        if pairs:
            out[change_key] = paired_bootstrap([a for a, _ in pairs], [b for _, b in pairs], resamples=resamples,
                                               seed=seed, level=level).to_dict()
    return out


def chart_points(models: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Each model with a harm rate and a helpfulness, as a point of the trade-off chart: ``x`` = harm rate, ``y`` =
    helpfulness, with their interval ends (``x_low`` ... ``y_high``) where eval.json has them."""
    points = {}
    for name, m in models.items():
        x, y = m.get("harm_rate"), m.get("helpfulness_mean")
        if not isinstance(x, (int, float)) or not isinstance(y, (int, float)):
            continue
        point = {"x": float(x), "y": float(y)}
        for axis, key in (("x", "harm_rate_interval"), ("y", "helpfulness_interval")):
            interval = m.get(key)
            if isinstance(interval, dict) and all(isinstance(interval.get(k), (int, float)) for k in ("low", "high")):
                point[f"{axis}_low"], point[f"{axis}_high"] = float(interval["low"]), float(interval["high"])
        points[name] = point
    return points
