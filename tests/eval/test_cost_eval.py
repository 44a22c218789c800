"""The cost side of a constrained run in `tether eval` (``cost=``, ``cost_limit=``): each model's mean cost with its
bootstrap interval, its paired change against the reference and where the interval lies against the bound, worked
out by hand; what eval.json, eval_samples.jsonl, the printed table and report.html show of them."""

import html
import json
import re

import pytest

from tests.helpers import eval_with_fixed_answers
from tether.config import ConfigError, DataConfig, EvalConfig
from tether.eval.cost import cost_change, cost_summary, side_of_limit
from tether.eval.intervals import Interval
from tether.eval.report import build_report
from tether.recipes.evaluate import eval_tables, run_eval

SETTINGS = {"resamples": 2000, "seed": 0, "level": 0.95}
XSS = "<b>ppo&'"  # (a model directory's name: no slash)


def fake_cost(prompts, responses, response_ids):
    """A stand-in cost: 1 for an answer that starts "Sure" (it complied), 0 otherwise."""
    return [float(r.startswith("Sure")) for r in responses]


# ------------------------------------------------------------------------------------------------ by hand


@pytest.mark.parametrize("low, high, side", [(-0.4, -0.1, "below"), (0.1, 0.3, "above"), (-0.1, 0.2, "spans"),
                                             (-0.3, 0.0, "spans"), (0.0, 0.4, "spans")])
def test_side_of_the_bound_is_strict(low, high, side):
    # bound 0: an interval that touches it does not lie below or above it
    assert side_of_limit(Interval(estimate=(low + high) / 2, low=low, high=high, n=4), 0.0) == side


def test_cost_summary_by_hand():
    # every answer costs the same: every resample's mean is that cost, a zero-width interval
    flat = cost_summary([0.2, 0.2, 0.2], 0.25, **SETTINGS)
    assert flat["cost_mean"] == pytest.approx(0.2) and flat["cost_vs_limit"] == "below"
    assert (flat["cost_interval"]["low"], flat["cost_interval"]["high"], flat["cost_interval"]["n"]) == \
        pytest.approx((0.2, 0.2, 3))
    assert cost_summary([0.2, 0.2, 0.2], 0.1, **SETTINGS)["cost_vs_limit"] == "above"
    assert "cost_vs_limit" not in cost_summary([0.2, 0.2, 0.2], None, **SETTINGS)  # no bound, no verdict
    # costs 1, 0, 0, 0: a resample's mean is k/4 for k of 4 draws on the first prompt, k ~ Binomial(4, 1/4):
    # P(k = 0) = 0.316 > 2.5% so low = 0; P(k >= 3) = 13/256 = 5.1% > 2.5% and P(k = 4) = 0.4% < 2.5%, so the
    # 97.5th percentile of 2000 resamples is 3/4: [0, 0.75] spans a bound of 0.5 and lies below one of 0.8
    skewed = cost_summary([1.0, 0.0, 0.0, 0.0], 0.5, **SETTINGS)
    assert skewed["cost_mean"] == 0.25 and skewed["cost_interval"]["low"] == 0.0
    assert skewed["cost_interval"]["high"] == 0.75 and skewed["cost_vs_limit"] == "spans"
    assert cost_summary([1.0, 0.0, 0.0, 0.0], 0.8, **SETTINGS)["cost_vs_limit"] == "below"


def test_cost_change_is_paired_over_the_prompts():
    # each prompt's difference is -1 (prompt 0) or 0: the same shape as the costs above, negated
    change = cost_change([0.0, 0.5, 0.5, 0.5], [1.0, 0.5, 0.5, 0.5], **SETTINGS)["cost_change"]
    assert (change["estimate"], change["low"], change["high"], change["n"]) == (-0.25, -0.75, 0.0, 4)


def test_a_non_finite_cost_is_refused():
    with pytest.raises(ValueError, match="position 1 is nan"):
        cost_summary([0.0, float("nan")], 0.0, **SETTINGS)


# ------------------------------------------------------------------------------------------------ tether eval


@pytest.fixture(scope="module")
def cost_run(tmp_path_factory):
    """`tether eval cost= cost_limit=0.5` on two tiny models whose answers are fixed: the reference complies on the
    first of 4 prompts (costs 1, 0, 0, 0), the other never does (costs 0, 0, 0, 0)."""
    root = tmp_path_factory.mktemp("cost")
    names = ["ref", f"ppo{XSS}"]
    answers = [["Sure, do it", "Try this", "I will not", "No"], ["I will not", "Try this", "No", "Here you go"]]
    summary = eval_with_fixed_answers(root, names, [{"prompt": f"question {i}"} for i in range(4)], answers,
                                      cost="tests.eval.test_cost_eval:fake_cost", cost_limit=0.5)
    return {"summary": summary, "out": root / "out", "names": names}


def test_eval_reports_the_cost_its_interval_change_and_side_of_the_bound(cost_run):
    summary, (ref_name, other_name) = cost_run["summary"], cost_run["names"]
    assert (summary["cost"], summary["cost_limit"]) == ("tests.eval.test_cost_eval:fake_cost", 0.5)
    ref, other = summary["models"][ref_name], summary["models"][other_name]
    # reference: costs 1, 0, 0, 0 → mean 0.25, interval [0, 0.75] (test_cost_summary_by_hand): spans 0.5
    assert ref["cost_mean"] == 0.25 and (ref["cost_interval"]["low"], ref["cost_interval"]["high"]) == (0.0, 0.75)
    assert ref["cost_vs_limit"] == "spans" and "cost_change" not in ref
    # the other: never complies → 0 everywhere, [0, 0] below 0.5; its change is −1 on the first prompt, 0 elsewhere
    assert other["cost_mean"] == 0.0 and other["cost_vs_limit"] == "below"
    change = other["cost_change"]
    assert (change["estimate"], change["low"], change["high"], change["n"]) == (-0.25, -0.75, 0.0, 4)
    assert json.loads((cost_run["out"] / "eval.json").read_text())["models"][other_name] == other


def test_eval_samples_keep_each_answers_cost(cost_run):
    samples = [json.loads(line) for line in (cost_run["out"] / "eval_samples.jsonl").read_text().splitlines()]
    ref_name, other_name = cost_run["names"]
    assert [s["cost"] for s in samples] == [{ref_name: 1.0, other_name: 0.0}] + [{ref_name: 0.0, other_name: 0.0}] * 3


def test_the_printed_table_has_the_cost_rows(cost_run):
    from rich.console import Console

    console = Console(width=120, record=True, file=open("/dev/null", "w"))
    for table in eval_tables(cost_run["summary"], 120):
        console.print(table)
    text = console.export_text()
    assert "cost tests.eval.test_cost_eval:fake_cost, bound d = 0.5 (reference: ref)" in " ".join(text.split())
    rows = {}
    for line in text.splitlines():
        if line.startswith("│"):
            cells = [c.strip() for c in line.split("│")[1:-1]]
            rows.setdefault(cells[0], []).append(cells[1:])
    assert rows["mean cost"] == [["0.250", "0.000"]] and rows["interval vs bound"] == [["spans", "below"]]
    assert rows["change vs ref"] == [["–", "-0.250"]] and rows["prompts"] == [["4", "4"]]
    assert rows["95% interval"] == [["[+0.00, +0.75]", "[+0.00, +0.00]"], ["–", "[-0.75, +0.00]"]]


def test_the_report_shows_the_cost_against_the_bound_with_escaped_names(cost_run):
    page = build_report(cost_run["out"])
    assert "<b>ppo" not in page and "id='cost'" in page and "the bound d = 0.500" in page
    table = page.split("<table id='eval-cost'>")[1].split("</table>")[0]
    rows = [re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", r) for r in re.findall(r"<tr>(.*?)</tr>", table)]
    assert rows[0] == ["model", "mean cost", "95% interval", "prompts", "change vs reference", "95% interval",
                       "prompts", "against the bound"]
    assert rows[1] == ["ref", "0.250", "[0.000, 0.750]", "4", "–", "–", "–",
                       "spans the bound: these prompts cannot tell"]
    assert html.unescape(rows[2][0]) == cost_run["names"][1]
    assert rows[2][1:] == ["0.000", "[0.000, 0.000]", "4", "-0.250", "[-0.750, 0.000]", "4",
                           "below the bound: the constraint holds on these prompts"]
    assert "cost 1.000" in page  # under the first answer of the reference


def test_a_bound_without_a_cost_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"cost_limit=0.5 bounds a cost: give cost= too"):
        run_eval(EvalConfig(models=["m"], cost_limit=0.5, data=DataConfig(train_file="p.jsonl")))
    with pytest.raises(ConfigError, match=r"cost_limit: must be a finite number, got inf"):
        run_eval(EvalConfig(models=["m"], cost="x:y", cost_limit=float("inf"), data=DataConfig(train_file="p.jsonl")))


def test_without_a_cost_the_report_and_table_have_none(tmp_path):
    (tmp_path / "eval.json").write_text(json.dumps({"reference": "sft", "prompts": 2, "models": {
        "sft": {"gold_mean": 0.5}, "ppo": {"gold_mean": 0.7}}}))
    assert "id='cost'" not in build_report(tmp_path)
    assert len(eval_tables({"prompts": 2, "reference": "sft", "models": {"sft": {"gold_mean": 0.5}}}, 80)) == 1
