"""Several reward-vs-KL frontiers side by side (``tether frontier combine=[…]``): one per seed, say, each from its
own run of ``tether frontier``, read back from its ``frontier.json``.

Each run's points become *gains* over that run's own starting policy (``proxy − start.proxy``,
``gold − start.gold``), so runs whose starting policies differ (each seed's own SFT model and reward model) are put on
one scale. Per (method, setting) over the runs that have it:

| key | what |
|---|---|
| ``n`` | how many runs have the point |
| ``kl``, ``proxy_gain``, ``gold_gain`` | ``{"mean", "min", "max"}`` over those runs |

and Gao et al.'s forms fitted once per method and reward to every run's gains pooled
(:func:`tether.eval.frontier_fit.fit_methods`, the same least squares as one run's), so a fit rests on all the seeds. A
run's best-of-N N = 1 point (its start, gain 0 at KL 0 by definition) is left out of the table.

Pure functions over the parsed JSON; :func:`tether.recipes.frontier.combine_frontiers` reads and writes the files.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tether.eval.frontier_fit import fit_methods, gains_over


def run_gains(result: Mapping[str, Any], name: str = "") -> list[dict[str, Any]]:
    """One frontier.json's points as gains over its own start: ``{"method", "setting", "kl", "proxy_gain",
    "gold_gain"}`` (a gain is None where the point or the start lacks that reward). ValueError naming the run for a
    result with no points or no start."""
    points, start = result.get("points"), result.get("start")
    if not isinstance(points, list) or not points:
        raise ValueError(f"{name or 'frontier.json'}: no points")
    if not isinstance(start, Mapping) or not start:
        raise ValueError(f"{name or 'frontier.json'}: no start (the starting policy's proxy and gold), so no gains")
    return [{"method": p["method"], "setting": p["setting"], "kl": float(p["kl"]), **gains_over(p, start)}
            for p in points]


def _spread(values: list[float]) -> dict[str, float]:
    return {"mean": sum(values) / len(values), "min": min(values), "max": max(values)}


def combine(results: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The runs ``name → frontier.json`` combined: ``runs`` (names, in order), ``gains`` (name → :func:`run_gains`),
    ``settings`` (one row per method and setting, in first-seen order, with ``n`` and the mean / min / max of
    ``kl``, ``proxy_gain``, ``gold_gain``) and ``fits`` (pooled, per method and reward)."""
    if not results:
        raise ValueError("no runs to combine")
    gains = {name: run_gains(result, name) for name, result in results.items()}
    order: list[tuple[str, str]] = []
    by_key: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for points in gains.values():
        for p in points:
            key = (p["method"], p["setting"])
            if key not in by_key:
                order.append(key)
                by_key[key] = []
            by_key[key].append(p)
    settings = []
    for key in order:
        if key[0] == "best-of-n" and all(p["kl"] == 0 for p in by_key[key]):
            continue  # N = 1: the start itself
        row: dict[str, Any] = {"method": key[0], "setting": key[1], "n": len(by_key[key]),
                               "kl": _spread([p["kl"] for p in by_key[key]])}
        for field in ("proxy_gain", "gold_gain"):
            values = [p[field] for p in by_key[key] if p[field] is not None]
            row[field] = _spread(values) if values else None
        settings.append(row)
    fits = fit_methods([p for points in gains.values() for p in points])  # every run's gains pooled
    return {"runs": list(results), "gains": gains, "settings": settings, "fits": fits}
