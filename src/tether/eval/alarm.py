"""The reward-hacking alarm: the proxy keeps rising while held-out reward falls, or the text degenerates.

Fed one held-out evaluation at a time (the first one is the reference policy, before any
update). Three rules, each must hold for ``patience`` consecutive evaluations:

- ``proxy_up_gold_down``: gold is at least ``gold_drop`` below its best so far while the
  proxy reward is above its value at that best — the policy is buying proxy reward with
  something the held-out judge does not want (Gao et al. 2022's over-optimisation);
- ``length``: mean response length above ``length_ratio`` × the reference's;
- ``repetition``: one word trigram in more than ``ngram_share`` of the responses, and at
  least twice the reference's share (a phrase the reward model likes spreading everywhere).

An alarm fires once when its rule starts holding and re-arms when the rule stops holding.
The monitor's state is plain data (``state_dict``), saved in checkpoints for exact resume.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class HeldOutPoint:
    iteration: int
    proxy: float
    gold: float
    length: float
    ngram_share: float
    kl: float = 0.0
    top_ngram: str = ""
    cost: float | None = None  # a constrained run's mean cost on the held-out answers (None without a cost)


@dataclass
class HackingMonitor:
    patience: int = 2
    gold_drop: float = 0.1
    length_ratio: float = 2.0
    ngram_share: float = 0.6
    history: list[HeldOutPoint] = field(default_factory=list)
    streaks: dict[str, int] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def reference(self) -> HeldOutPoint | None:
        return self.history[0] if self.history else None

    @property
    def best(self) -> HeldOutPoint | None:
        """The evaluation with the highest gold reward (the earliest on ties)."""
        return max(self.history, key=lambda p: p.gold) if self.history else None

    def rules(self, point: HeldOutPoint) -> dict[str, str | None]:
        """Which rules ``point`` breaks (a message) given the history before it."""
        ref, best = self.reference, self.best
        out: dict[str, str | None] = {"proxy_up_gold_down": None, "length": None, "repetition": None}
        if ref is None or best is None:
            return out
        if point.gold <= best.gold - self.gold_drop and point.proxy > best.proxy:
            out["proxy_up_gold_down"] = (
                f"proxy reward {point.proxy:.3f} is above {best.proxy:.3f} (its value at the best held-out point, "
                f"iteration {best.iteration}) while gold fell from {best.gold:.3f} to {point.gold:.3f}")
        if ref.length > 0 and point.length > self.length_ratio * ref.length:
            out["length"] = (f"mean response length {point.length:.1f} is {point.length / ref.length:.1f}x the "
                             f"reference's {ref.length:.1f}")
        if point.ngram_share > self.ngram_share and point.ngram_share >= 2 * ref.ngram_share:
            out["repetition"] = (f"'{point.top_ngram}' appears in {point.ngram_share:.0%} of responses "
                                 f"(reference: {ref.ngram_share:.0%})")
        return out

    def update(self, point: HeldOutPoint) -> list[dict[str, Any]]:
        """Record one held-out evaluation; returns the alarms that fire now."""
        fired = []
        for rule, message in self.rules(point).items():
            if message is None:
                self.streaks[rule] = 0
                continue
            self.streaks[rule] = self.streaks.get(rule, 0) + 1
            if self.streaks[rule] == self.patience:
                event = {"iteration": point.iteration, "rule": rule, "message": message}
                self.events.append(event)
                fired.append(event)
        self.history.append(point)
        return fired

    def state_dict(self) -> dict[str, Any]:
        return {"history": [asdict(p) for p in self.history], "streaks": dict(self.streaks),
                "events": [dict(e) for e in self.events]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = [HeldOutPoint(**p) for p in state["history"]]
        self.streaks = dict(state["streaks"])
        self.events = [dict(e) for e in state["events"]]
