"""Did it work? One verdict per RL run, from its held-out curve: the end-of-run line and report.html's first box;
one per model `tether eval` compared with its reference; and the warning for a reward model worse than chance or
than "the longer response wins".

An RL run worked when the held-out gold reward rose and no reward-hacking alarm fired. "No alarm" alone is not
success: a run whose gold stayed flat or fell without tripping an alarm is reported as such, as a warning.

A model `tether eval` compared worked when the 95% interval of its gold gain over the reference lies above zero
(``tether.eval.intervals``): "gold gain +0.16 [0.05, 0.27] over 120 prompts: above zero". An interval that
includes zero is a warning whatever the point estimate; one below zero is an alarm. An eval.json written before
intervals existed gets the point-estimate wording of the held-out verdict ("held-out gold rose 0.50 → 0.75
(+0.25)"), saying that it has no interval.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from rich.markup import escape

from tether.eval.intervals import Interval

# A gold change smaller than this counts as no change: numbers are shown to two decimals, so a rise shown as
# "+0.00" is never called a rise.
FLAT = 0.005
CHANCE = 0.5  # a reward model's held-out accuracy by coin flip
RULE_WORDS = {"proxy_up_gold_down": "proxy up, gold down", "length": "responses too long",
              "repetition": "one phrase repeated"}
HOW_TO_TURN_ON = ("set heldout.gold=module:function (e.g. tether.tasks.helpful:gold_reward) and "
                  "heldout.prompts_file=<held-out prompts> to measure it and arm the reward-hacking alarm")

Status = Literal["improved", "flat", "alarm", "reference_only"]


def signed(value: float, digits: int = 2) -> str:
    """``+0.16`` / ``−0.02`` (a true minus sign); zero is ``+0.00``."""
    text = f"{abs(value):.{digits}f}"
    return f"−{text}" if value < 0 and float(text) != 0 else f"+{text}"


def number(value: float, digits: int = 2) -> str:
    """``0.84`` / ``−0.30``: a plain number with a true minus sign."""
    text = f"{value:.{digits}f}"
    return "−" + text[1:] if text.startswith("-") and float(text) != 0 else text.lstrip("-")


@dataclass
class HeldOutVerdict:
    """The first held-out point (the reference, before any update) against the last one, and the alarms."""

    stage: str
    status: Status
    gold_start: float
    gold_end: float
    proxy_start: float
    proxy_end: float
    alarms: list[dict[str, Any]] = field(default_factory=list)

    @property
    def gold_change(self) -> float:
        return self.gold_end - self.gold_start

    def alarm_text(self) -> str:
        """'alarm at iteration 10 (proxy up, gold down)', several joined by '; ', or 'no alarm'."""
        if not self.alarms:
            return "no alarm"
        return "; ".join(f"alarm at iteration {a.get('iteration', '?')} "
                         f"({RULE_WORDS.get(str(a.get('rule')), str(a.get('rule', 'reward hacking')))})"
                         for a in self.alarms)

    def line(self) -> str:
        """The end-of-run line: 'held-out: gold 0.84 → 1.00 (+0.16), proxy −0.30 → −0.32, no alarm'."""
        if self.status == "reference_only":
            return (f"held-out: only the starting policy was evaluated (gold {number(self.gold_start)}); no change "
                    "to report")
        text = (f"held-out: gold {number(self.gold_start)} → {number(self.gold_end)} ({signed(self.gold_change)}), "
                f"proxy {number(self.proxy_start)} → {number(self.proxy_end)}, {self.alarm_text()}")
        if self.status == "flat":
            text += ", but gold did not rise"
        return text

    def gold_text(self) -> str:
        """'held-out gold rose 0.84 → 1.00 (+0.16)' or 'gold did not rise (−0.02: 1.00 → 0.98)'."""
        gold = f"{number(self.gold_start)} → {number(self.gold_end)}"
        if self.gold_change >= FLAT:
            return f"held-out gold rose {gold} ({signed(self.gold_change)})"
        return f"gold did not rise ({signed(self.gold_change)}: {gold})"

    def sentence(self) -> str:
        """The report's verdict: what happened to gold and the alarm, never 'no alarm' as if it were success."""
        if self.status == "reference_only":
            return f"only the starting policy was evaluated (gold {number(self.gold_start)}): no change to judge yet."
        if self.status == "alarm":
            return f"{self.alarm_text()}; {self.gold_text()}."
        return f"{self.gold_text()}; no alarm fired."


def heldout_verdict(stage: str, points: list[dict[str, Any]], alarms: list[dict[str, Any]]) -> HeldOutVerdict | None:
    """The verdict of one RL stage from its held-out points (as in ``<stage>_heldout.json``); None without points."""
    if not points:
        return None
    first, last = points[0], points[-1]
    change = float(last["gold"]) - float(first["gold"])
    if alarms:
        status: Status = "alarm"
    elif len(points) == 1:
        status = "reference_only"
    else:
        status = "improved" if change >= FLAT else "flat"
    return HeldOutVerdict(stage, status, float(first["gold"]), float(last["gold"]), float(first["proxy"]),
                          float(last["proxy"]), [dict(a) for a in alarms])


def end_of_run_line(stage: str, monitor_state: dict[str, Any] | None) -> str:
    """What PPO / GRPO print last: the held-out verdict in one line (rich markup), or how to turn it on."""
    if monitor_state is None:
        return f"[yellow]held-out: no held-out evaluation[/] ({HOW_TO_TURN_ON})"
    verdict = heldout_verdict(stage, monitor_state["history"], monitor_state["events"])
    if verdict is None:
        return "[yellow]held-out: no held-out point was evaluated[/]"
    style = {"improved": "green", "flat": "yellow", "alarm": "bold red", "reference_only": "yellow"}[verdict.status]
    return f"[{style}]{escape(verdict.line())}[/]"


def side_of(interval: Interval, x: float, words: str) -> str:
    """'above zero' / 'below zero' / 'includes zero' (``words`` names ``x``): where the interval lies against x."""
    return f"above {words}" if interval.above(x) else f"below {words}" if interval.below(x) else f"includes {words}"


def interval_text(interval: Interval, signed_estimate: bool = True) -> str:
    """'+0.16 [0.05, 0.27]' (a gain) or '0.62 [0.53, 0.71]' (a rate): the estimate and its interval, two decimals."""
    estimate = signed(interval.estimate) if signed_estimate else number(interval.estimate)
    return f"{estimate} [{number(interval.low)}, {number(interval.high)}]"


def _interval(value: Any) -> Interval | None:
    try:
        return Interval.from_dict(value) if isinstance(value, dict) else None
    except (KeyError, TypeError, ValueError):
        return None


@dataclass
class EvalVerdict:
    """One model of eval.json against its reference: the gains' intervals when eval.json has them, else the means."""

    model: str
    reference: str
    status: Status
    gold: Interval | None = None
    proxy: Interval | None = None
    win: Interval | None = None
    prompts: int | None = None
    gold_reference: float | None = None
    gold_model: float | None = None

    def sentence(self) -> str:
        """'gold gain +0.16 [0.05, 0.27] over 120 prompts: above zero; proxy gain +1.20 [0.80, 1.60]: above zero;
        win-rate 0.62 [0.53, 0.71]: above ½.' — or, without intervals, the held-out verdict's wording."""
        if self.gold is None and self.proxy is None:
            gold = f"{number(self.gold_reference)} → {number(self.gold_model)}"
            change = self.gold_model - self.gold_reference
            text = (f"held-out gold rose {gold} ({signed(change)})" if change >= FLAT else
                    f"gold did not rise ({signed(change)}: {gold})")
            over = f" over {self.prompts} prompts" if self.prompts else ""
            return f"{text}{over}; no interval in this eval.json (re-run tether eval to get one)."
        parts = []
        if self.gold is not None:
            parts.append(f"gold gain {interval_text(self.gold)} over {self.gold.n} prompts: "
                         f"{side_of(self.gold, 0.0, 'zero')}")
        if self.proxy is not None:
            over = "" if self.gold is not None else f" over {self.proxy.n} prompts"
            parts.append(f"proxy gain {interval_text(self.proxy)}{over}: {side_of(self.proxy, 0.0, 'zero')}")
        if self.win is not None:
            parts.append(f"win-rate {interval_text(self.win, signed_estimate=False)}: {side_of(self.win, 0.5, '½')}")
        text = "; ".join(parts)
        if self.gold is None:
            text += "; no gold reward was measured, so no verdict (set gold= on tether eval)"
        elif self.status == "alarm" and self.proxy is not None and self.proxy.above(0.0):
            text += " — the proxy rose while gold fell: reward hacking"
        return text + "."


def eval_verdicts(summary: dict[str, Any]) -> list[EvalVerdict]:
    """A verdict for every model of an eval.json (``summary``) but its reference: ``improved`` when the gold gain's
    interval lies above zero, ``alarm`` below zero, ``flat`` when it includes zero or gold was not measured.
    Without intervals (an older eval.json): the held-out rule on the gold means (a change ≥ 0.005 is a rise)."""
    models = summary.get("models") if isinstance(summary, dict) else None
    reference = summary.get("reference") if isinstance(summary, dict) else None
    if not isinstance(models, dict) or reference not in models:
        return []
    prompts = summary.get("prompts") if isinstance(summary.get("prompts"), int) else None
    ref_gold = models[reference].get("gold_mean") if isinstance(models[reference], dict) else None
    verdicts = []
    for name, row in models.items():
        if name == reference or not isinstance(row, dict):
            continue
        gold, proxy, win = (_interval(row.get(k)) for k in ("gold_gain", "proxy_gain", "win_rate_interval"))
        if gold is not None:
            status: Status = "improved" if gold.above(0.0) else "alarm" if gold.below(0.0) else "flat"
            verdicts.append(EvalVerdict(name, reference, status, gold, proxy, win, prompts))
        elif proxy is not None:
            verdicts.append(EvalVerdict(name, reference, "flat", None, proxy, win, prompts))
        elif isinstance(ref_gold, (int, float)) and isinstance(row.get("gold_mean"), (int, float)):
            change = float(row["gold_mean"]) - float(ref_gold)
            verdicts.append(EvalVerdict(name, reference, "improved" if change >= FLAT else "flat", prompts=prompts,
                                        gold_reference=float(ref_gold), gold_model=float(row["gold_mean"])))
    return verdicts


def reward_model_problems(report: dict[str, Any]) -> list[str]:
    """What is wrong with a reward model's held-out accuracy: below chance, below the 'longer response wins' baseline
    (empty when neither, or when there is no held-out accuracy)."""
    accuracy, baseline = report.get("accuracy"), report.get("length_baseline_accuracy")
    if not isinstance(accuracy, (int, float)):
        return []
    problems = []
    if accuracy < CHANCE:
        problems.append(f"below chance ({CHANCE})")
    if isinstance(baseline, (int, float)) and accuracy < baseline:
        problems.append(f"below the 'longer response wins' baseline ({baseline:.3f})")
    return problems


def reward_model_warning(report: dict[str, Any]) -> str | None:
    """One loud line when a reward model should not be trusted for RL, else None."""
    problems = reward_model_problems(report)
    if not problems:
        return None
    return (f"the reward model's held-out accuracy {report['accuracy']:.3f} is {' and '.join(problems)}: RL against "
            "it optimises the wrong thing. Check the preferences (chosen and rejected swapped?), add pairs or train "
            "longer")
