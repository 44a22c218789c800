"""report.html from a run directory: every section, escaped model text, no script, opens in headless Chromium."""

import html
import json
import math
import re

import pytest

from tests.helpers import chromium_driver, have_chromium
from tether.config import ReportConfig
from tether.eval.charts import axis_range, nice_ticks, tick_label
from tether.eval.report import build_report, svg_chart, write_report

XSS = "<script>document.title='pwned'</script><img src=x onerror=\"document.title='pwned'\">"


def _run_dir(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    rows = [{"stage": "ppo", "step": i, "reward/score_mean": 0.1 * i, "objective/kl": 0.5 * i,
             "objective/kl_coef": 0.05, "response/length_mean": 20 + i, "objective/entropy": 2.0} for i in range(1, 6)]
    rows += [{"stage": "sft", "step": i, "loss": 3.0 - 0.2 * i} for i in range(1, 4)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"cut by a cra')
    points = [{"iteration": i, "proxy": 0.2 * i, "gold": g, "length": 20.0, "ngram_share": 0.1, "kl": 0.4 * i,
               "top_ngram": "a b c"} for i, g in zip(range(0, 10, 2), [1.0, 1.2, 1.1, 0.9, 0.8])]
    alarm = {"iteration": 8, "rule": "proxy_up_gold_down", "message": f"proxy up, gold down {XSS}"}
    (run / "ppo_heldout.json").write_text(json.dumps({"points": points, "alarms": [alarm], "gold": "g:f",
                                                      "prompts": 16}))
    (run / "eval.json").write_text(json.dumps({"reference": "sft", "prompts": 2, "reward": "rm", "gold": "g:f",
                                               "models": {"sft": {"gold_mean": 0.5, "kl_mean": 0.0},
                                                          "ppo": {"gold_mean": 0.75, "kl_mean": 3.2}}}))
    (run / "eval_samples.jsonl").write_text(json.dumps({"prompt": "Say hi", "responses": {"sft": "hi",
                                                                                          "ppo": f"hello {XSS}"}}) + "\n")
    (run / "rm").mkdir()
    (run / "rm" / "eval_report.json").write_text(json.dumps({
        "accuracy": 0.8, "length_baseline_accuracy": 0.5, "n_pairs": 10, "calibration_ece": 0.05,
        "calibration": [{"lo": 0.0, "hi": 0.5, "count": 4, "mean_predicted": 0.3, "observed": 0.25},
                        {"lo": 0.5, "hi": 1.0, "count": 0, "mean_predicted": float("nan"), "observed": float("nan")}]}))
    (run / "labels.stats.json").write_text(json.dumps({"labels": 9, "items": 3, "pairwise_agreement": 0.7,
                                                       "annotators": {"annotator-1": {"labels": 3}}}))
    (run / "config.yaml").write_text(f"ppo:\n  reward: '{XSS}'\n")
    return run


def test_report_has_every_section_and_escapes_everything(tmp_path):
    page = build_report(_run_dir(tmp_path), "demo")
    for anchor in ("id='alarm'", "id='eval'", "id='training'", "id='reward-model'", "id='labels'", "id='config'",
                   "id='answers'"):
        assert anchor in page, anchor
    assert "<script" not in page and "<img" not in page and "&lt;script&gt;" in page
    assert "Reward-hacking alarm" in page and "proxy_up_gold_down at iteration 8" in page
    assert page.count("<svg") >= 8  # held-out ×3, ppo curves ×5 (+ sft loss, calibration)


def test_report_says_so_when_no_alarm_fired(tmp_path):
    run = _run_dir(tmp_path)
    data = json.loads((run / "ppo_heldout.json").read_text())
    data["alarms"] = []
    (run / "ppo_heldout.json").write_text(json.dumps(data))
    assert "No reward-hacking alarm" in build_report(run)


def test_a_constrained_runs_heldout_cost_is_drawn_against_its_bound(tmp_path):
    run = _run_dir(tmp_path)
    assert "held-out cost" not in build_report(run)  # an unconstrained run: no cost chart
    data = json.loads((run / "ppo_heldout.json").read_text())
    for point, cost in zip(data["points"], [0.9, 0.7, 0.5, 0.4, 0.3]):
        point["cost"] = cost
    data["cost_limit"] = 0.5
    (run / "ppo_heldout.json").write_text(json.dumps(data))
    page = build_report(run)
    chart = page[page.index("held-out cost (constrained run)"):]
    chart = chart[:chart.index("</svg>")]
    assert ">cost<" in chart and ">cost limit<" in chart  # the two series' legend entries
    assert chart.count("<polyline") == 2


def test_svg_chart_maps_points_into_the_frame():
    svg = svg_chart({"a": [(0.0, 0.0), (10.0, 1.0)]}, "t", "x", width=200, height=100)
    # the axes span the data and 5% more each side (x −0.5..10.5, y −0.05..1.05) across the frame from
    # left = 14 + 6.2 px x 3 characters of '0.0' = 32.6 to width − 20 = 180, and from height − 42 = 58 up to 30:
    # x = 0 → 32.6 + 0.5/11 x 147.4, y = 1 → 58 − 1.05/1.1 x 28
    assert "points='39.3,56.7 173.3,31.3'" in svg and svg.startswith("<svg") and svg.endswith("</svg>")
    assert svg_chart({"empty": []}, "t", "x") == ""


@pytest.mark.skipif(not have_chromium(), reason="Debian chromium + chromium-driver not installed (.ci/run installs them)")
def test_report_opens_in_headless_chromium_without_errors(tmp_path):
    from selenium.webdriver.common.by import By

    output = write_report(ReportConfig(run_dir=str(_run_dir(tmp_path))))
    driver = chromium_driver()
    try:
        driver.get(output.resolve().as_uri())
        assert driver.title.endswith("tether report") and driver.title != "pwned"
        assert len(driver.find_elements(By.TAG_NAME, "svg")) >= 8
        assert "hello <script>" in driver.find_element(By.ID, "answers").text  # shown as text
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == []
    finally:
        driver.quit()


# --------------------------------------------------------------------------- "did it work?"


def _rl_run(tmp_path, golds, alarms=(), proxies=None):
    """A run directory with one PPO stage whose held-out gold went through ``golds`` (iterations 0, 5, 10, ...)."""
    run = tmp_path / "rl"
    run.mkdir()
    proxies = proxies or [-0.3 - 0.01 * i for i in range(len(golds))]
    points = [{"iteration": 5 * i, "proxy": p, "gold": g, "length": 20.0, "ngram_share": 0.1, "kl": 0.5 * i,
               "top_ngram": ""} for i, (p, g) in enumerate(zip(proxies, golds))]
    (run / "ppo_heldout.json").write_text(json.dumps({"points": points, "alarms": list(alarms), "gold": "g:f",
                                                      "prompts": 8}))
    return run


def _verdict_box(page):
    """The first box of the 'Did it work?' section: (its css class, its text)."""
    section = page[page.index("<h2 id='verdict'>"):]
    match = re.search(r"<div class='(\w+)'><b>ppo</b>: (.*?)</div>", section)
    return match.group(1), html.unescape(match.group(2))


def test_verdict_opens_the_report_and_calls_a_gold_rise_a_success(tmp_path):
    page = build_report(_rl_run(tmp_path, [0.84, 0.9, 1.0]))
    assert page.index("id='verdict'") < page.index("<h2", page.index("id='verdict'") + 1)  # the first section
    assert _verdict_box(page) == ("ok", "held-out gold rose 0.84 → 1.00 (+0.16); no alarm fired.")


def test_verdict_never_shows_no_alarm_as_success_when_gold_is_flat(tmp_path):
    page = build_report(_rl_run(tmp_path, [1.0, 1.01, 0.98]))
    style, text = _verdict_box(page)
    assert style == "warn" and text == "gold did not rise (−0.02: 1.00 → 0.98); no alarm fired."
    assert "class='ok'" not in page  # the held-out section's own box says it too, in the same warning style
    assert "No reward-hacking alarm</b> (gold never fell while the proxy rose" in page
    assert "but gold did not rise (−0.02: 1.00 → 0.98)" in page


def test_verdict_names_the_alarm(tmp_path):
    alarm = {"iteration": 10, "rule": "proxy_up_gold_down", "message": "proxy up, gold down"}
    page = build_report(_rl_run(tmp_path, [0.84, 1.0, 0.6], [alarm], proxies=[-0.3, 0.1, 0.5]))
    assert _verdict_box(page) == ("alarm", "alarm at iteration 10 (proxy up, gold down); gold did not rise "
                                           "(−0.24: 0.84 → 0.60).")


def test_verdict_says_how_to_turn_on_held_out_evaluation_and_judges_the_reward_model(tmp_path):
    run = tmp_path / "run"
    (run / "rm").mkdir(parents=True)
    (run / "metrics.jsonl").write_text(json.dumps({"stage": "grpo", "step": 1, "objective/kl": 0.1}) + "\n")
    (run / "rm" / "eval_report.json").write_text(json.dumps({"accuracy": 0.188, "length_baseline_accuracy": 0.396}))
    section = html.unescape(build_report(run).split("<h2 id='verdict'>")[1].split("<h2")[0])
    assert "<b>grpo</b>: no held-out evaluation, so no verdict: set heldout.gold=module:function" in section
    assert ("<div class='alarm'><b>reward model rm</b>: held-out accuracy 0.188 is below chance (0.5) and below the "
            "'longer response wins' baseline (0.396).") in section


# --------------------------------------------------------------------------- charts


def _ticks(svg):
    """The tick labels of a chart: {"x": [...], "y": [...]} as numbers (a true minus sign read as '-')."""
    found = re.findall(r"text-anchor='(end|middle)' font-size='10'>([^<]*)</text>", svg)
    read = lambda t: float(t.replace("−", "-"))  # noqa: E731
    return {"x": [read(t) for a, t in found if a == "middle"], "y": [read(t) for a, t in found if a == "end"]}


def _is_round_step(step):
    """1, 2, 2.5 or 5 x 10^k."""
    mantissa = step / 10 ** math.floor(math.log10(step))
    return any(math.isclose(mantissa, m) for m in (1, 2, 2.5, 5))


def test_training_curve_ticks_are_round_numbers_on_an_awkward_range(tmp_path):
    """Steps 1..63 and values from −1.95 to 30.5 (the old axes read −2.1 / 32 / 66.1 and −3.57 / 14.3 / 32.1)."""
    run = tmp_path / "run"
    run.mkdir()
    rows = [{"stage": "sft", "step": step, "loss": -1.95 + (30.5 + 1.95) * (step - 1) / 62} for step in range(1, 64)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    chart = re.search(r"<svg class='chart'[^>]*aria-label='training loss'.*?</svg>", build_report(run)).group(0)
    ticks = _ticks(chart)
    for axis, values in ticks.items():
        steps = {round(b - a, 9) for a, b in zip(values, values[1:])}
        assert len(steps) == 1 and _is_round_step(steps.pop()), (axis, values)  # evenly spaced, 1/2/2.5/5 x 10^k
        assert len(set(values)) == len(values) and 3 <= len(values) <= 7, (axis, values)  # no label repeated
        assert all(math.isclose(v / (values[1] - values[0]), round(v / (values[1] - values[0])), abs_tol=1e-9)
                   for v in values), (axis, values)  # every tick a multiple of the step
    assert ticks == {"x": [0, 10, 20, 30, 40, 50, 60], "y": [0, 5, 10, 15, 20, 25, 30]}  # (inside the data ± 5%)


def test_nice_ticks_on_integer_axes_and_small_ranges():
    assert nice_ticks(*axis_range(0, 10, integer=True), integer=True) == ([0, 2, 4, 6, 8, 10], 2)
    assert nice_ticks(*axis_range(1, 3, integer=True), integer=True) == ([1, 2, 3], 1)  # never 1.5 on an iteration axis
    assert nice_ticks(*axis_range(16, 16)) == ([14.5, 15, 15.5, 16, 16.5, 17, 17.5], 0.5)  # a range around a constant
    ticks, step = nice_ticks(*axis_range(0.04985, 0.05))  # PPO's β: the old axis printed 0.0499 in the middle
    labels = [tick_label(v, step) for v in ticks]  # every label with the decimals its step needs: none repeated
    assert labels == ["0.049850", "0.049875", "0.049900", "0.049925", "0.049950", "0.049975", "0.050000"]
    assert tick_label(-0.5, 0.5) == "−0.5" and tick_label(-0.0, 0.5) == "0.0"


def test_a_metric_logged_once_is_a_note_not_a_one_point_curve(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    rows = [{"stage": "sft", "step": s, "loss": 3.0 - 0.1 * s} for s in range(1, 5)] + [
        {"stage": "sft", "step": 4, "eval/loss": 2.5}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    page = build_report(run)
    assert "aria-label='training loss'" in page and "aria-label='held-out loss'" not in page
    assert "held-out loss: one value, 2.500 at step 4 (no curve)." in page
    single = svg_chart({"a": [(1.0, 2.0)], "b": [(0.0, 1.0), (2.0, 3.0)]}, "t", "x")
    assert single.count("<polyline") == 1 and single.count("<circle") == 1  # the lone point is a marker


def test_the_legend_sits_above_the_plot_not_on_the_lines():
    svg = svg_chart({"proxy": [(0.0, 0.0), (10.0, 1.0)], "gold": [(0.0, 1.0), (10.0, 0.0)]}, "t", "x")
    legend_y = [float(y) for y in re.findall(r"<text x='[^']*' y='([^']*)' font-size='10'>(?:proxy|gold)</text>", svg)]
    top_gridline = min(float(y) for y in re.findall(r"<line x1='[^']*' y1='([^']*)' x2='[^']*' y2='\1' "
                                                    r"stroke='#eee'/>", svg))
    assert len(legend_y) == 2 and max(legend_y) < top_gridline  # every legend entry above the plot area


# --------------------------------------------------------------------------- tether eval: intervals and answers


def _eval_run(tmp_path, models, prompts=120, samples=0, intervals=True):
    """A run directory with only eval.json (``models``: name → row, the first the reference) and ``samples`` lines of
    eval_samples.jsonl, every model answering each prompt (one answer carrying markup)."""
    run = tmp_path / "ev"
    run.mkdir()
    data = {"reference": next(iter(models)), "prompts": prompts, "reward": "rm", "gold": "g:f", "models": models}
    if intervals:
        data["intervals"] = {"level": 0.95, "resamples": 2000, "method": "paired bootstrap over prompts", "seed": 0}
    (run / "eval.json").write_text(json.dumps(data))
    (run / "eval_samples.jsonl").write_text("".join(json.dumps(
        {"prompt": f"prompt {i}", "responses": {n: f"answer {i} of {n}" + (XSS if i == 3 else "") for n in models},
         "gold": {n: 0.25 * i for n in models}}) + "\n" for i in range(samples)))
    return run


def _gain(estimate, low, high, n=120):
    return {"estimate": estimate, "low": low, "high": high, "n": n, "level": 0.95}


def test_report_shows_each_gain_with_its_interval_and_the_verdict_uses_it(tmp_path):
    page = build_report(_eval_run(tmp_path, {
        "sft": {"gold_mean": 0.5, "win_rate_vs_reference": 0.5},
        "ppo": {"gold_mean": 0.66, "gold_gain": _gain(0.16, 0.05, 0.27), "proxy_gain": _gain(1.2, 0.8, 1.6),
                "win_rate_interval": _gain(0.62, 0.53, 0.71)},
        "dpo": {"gold_mean": 0.55, "gold_gain": _gain(0.05, -0.02, 0.12), "win_rate_interval": _gain(0.5, 0.41, 0.6)}}))
    verdict = html.unescape(page.split("<h2 id='verdict'>")[1].split("<h2")[0])
    assert ("<div class='ok'><b>ppo vs sft</b> (tether eval): gold gain +0.16 [0.05, 0.27] over 120 prompts: above "
            "zero; proxy gain +1.20 [0.80, 1.60]: above zero; win-rate 0.62 [0.53, 0.71]: above ½.</div>") in verdict
    assert ("<div class='warn'><b>dpo vs sft</b> (tether eval): gold gain +0.05 [−0.02, 0.12] over 120 prompts: "
            "includes zero; win-rate 0.50 [0.41, 0.60]: includes ½.</div>") in verdict
    assert "sft vs sft" not in verdict
    table = page.split("<table id='eval-intervals'>")[1].split("</table>")[0]
    rows = re.findall(r"<tr>(.*?)</tr>", table)
    cells = [re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", r) for r in rows]
    assert cells[0] == ["model", "vs reference", "estimate", "95% interval", "prompts", "clears 0 (½ for win-rate)?"]
    assert cells[1:] == [["ppo", "gold gain", "+0.160", "[0.050, 0.270]", "120", "yes: above 0"],
                         ["ppo", "proxy gain", "+1.200", "[0.800, 1.600]", "120", "yes: above 0"],
                         ["ppo", "win-rate", "0.620", "[0.530, 0.710]", "120", "yes: above ½"],
                         ["dpo", "gold gain", "+0.050", "[-0.020, 0.120]", "120", "no: includes 0"],
                         ["dpo", "win-rate", "0.500", "[0.410, 0.600]", "120", "no: includes ½"]]
    assert "95% intervals from a paired bootstrap over prompts (2000 resamples)" in page


def test_report_of_an_eval_json_without_intervals_keeps_the_old_wording(tmp_path):
    page = build_report(_eval_run(tmp_path, {"sft": {"gold_mean": 0.5}, "ppo": {"gold_mean": 0.75}}, prompts=2,
                                  intervals=False))
    assert "id='eval-intervals'" not in page and "id='eval-table'" in page
    assert ("<b>ppo vs sft</b> (tether eval): held-out gold rose 0.50 → 0.75 (+0.25) over 2 prompts; no interval in "
            "this eval.json (re-run tether eval to get one).") in html.unescape(page)


def test_side_by_side_answers_show_at_least_ten_prompts_with_every_models_answer(tmp_path):
    names = ["sft", "ppo", "dpo"]
    page = build_report(_eval_run(tmp_path, {n: {"gold_mean": 0.5} for n in names}, prompts=15, samples=15))
    answers = page.split("<table class='answers' id='answers'>")[1].split("</table>")[0]
    rows = re.findall(r"<tr>(.*?)</tr>", answers)[1:]
    assert len(rows) == 12  # ReportConfig.max_samples / build_report's default: 12 of the 15
    assert ReportConfig().max_samples >= 10
    for i, row in enumerate(rows):
        for name in names:
            assert f"answer {i} of {name}" in row  # every model's answer, in its column
    assert "<script" not in answers and "&lt;script&gt;document.title" in answers  # model output is escaped
    assert "gold 0.750" in rows[3] and "The first 12 of 15 prompts" in page


def test_ppo_training_curves_chart_every_logged_rl_metric(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    logged = {"reward/score_mean": "proxy reward (train batch)", "objective/kl": "KL to reference (nats)",
              "objective/kl_coef": "KL coefficient β", "objective/rlhf_reward": "RLHF reward (proxy − β·KL)",
              "policy/clip_frac": "clip fraction (share of tokens clipped)",
              "policy/approx_kl": "approx KL(π_old‖π) per update", "objective/entropy": "entropy (nats/token)",
              "response/length_mean": "response length (tokens)"}
    rows = [{"stage": "ppo", "step": i, **{k: 0.1 * i + j for j, k in enumerate(logged)}} for i in range(1, 5)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    training = html.unescape(build_report(run).split("<h2 id='training'>")[1])
    for title in logged.values():
        assert f"aria-label='{title}'" in training, title
    assert training.count("<svg") == len(logged)


def test_a_frontier_run_gets_its_chart_as_a_standalone_svg(tmp_path):
    import xml.etree.ElementTree as ET

    from tether.eval.report import write_frontier_svg

    assert write_frontier_svg(tmp_path) is None  # no frontier.json: no chart
    points = [{"method": "best-of-n", "setting": "N=1", "kl": 0.0, "proxy": -1.0, "gold": 0.1},
              {"method": "best-of-n", "setting": "N=4", "kl": 0.64, "proxy": 0.5, "gold": 0.3},
              {"method": "ppo", "setting": "beta=0.1", "kl": 2.0, "proxy": 1.5, "gold": 0.2}]
    (tmp_path / "frontier.json").write_text(json.dumps({"points": points, "start": {"proxy": -1.0, "gold": 0.1}}))
    write_report(ReportConfig(run_dir=str(tmp_path)))
    svg = (tmp_path / "frontier.svg").read_text()
    root = ET.fromstring(svg)  # well-formed on its own
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert {"best-of-n proxy", "best-of-n gold", "ppo proxy", "ppo gold"} <= set(re.findall(r">([a-z\- ]+ (?:proxy|gold))<", svg))
    assert svg.count("r='3'") == 6  # every point drawn (markers), proxy and gold (the legend's dots are smaller)
    lines = re.findall(r"<polyline fill='none' stroke='(#[0-9a-f]+)'[^>]*?( stroke-dasharray='[^']+')? points", svg)
    # one colour per method, its proxy dashed and its gold solid (best-of-n has two points: a line each)
    assert lines == [(lines[0][0], " stroke-dasharray='5 3'"), (lines[0][0], "")]


def _constrained_run(tmp_path, name, costs, limit, multipliers=None):
    run = tmp_path / name
    run.mkdir()
    rows = [{"stage": "ppo", "step": 0, "heldout/gold_mean": 0.1}]  # the held-out row at step 0: not a curve point
    for i, cost in enumerate(costs, start=1):
        row = {"stage": "ppo", "step": i, "objective/cost": cost, "objective/kl": 0.5 * i}
        if limit is not None:
            row.update({"objective/cost_limit": limit, "objective/lagrange_multiplier": multipliers[i - 1]})
        else:  # a weighted-sum run: PPO logs the default bound, λ held at 0
            row.update({"objective/cost_limit": 0.0, "objective/lagrange_multiplier": 0.0})
        rows.append(row)
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run


def test_report_compare_draws_each_runs_curve_on_shared_charts(tmp_path):
    """compare=: one chart per RL metric with a line per run, a constrained run's bound dashed on the cost chart (not
    the weighted run's logged default, λ ≡ 0); written as SVGs."""
    constrained = _constrained_run(tmp_path, "constrained", [-0.2, 0.3, -0.1], -0.5, [1.0, 1.15, 1.55])
    weighted = _constrained_run(tmp_path, "weighted", [0.1, 0.4, 0.2], None)
    write_report(ReportConfig(run_dir=str(constrained), compare=[str(weighted)]))
    files = sorted(p.name for p in (constrained / "compare").iterdir())
    # the cost and the KL: both runs; the multiplier: both logged it, only the constrained run's moved (a chart still)
    assert files == ["ppo-objective_cost.svg", "ppo-objective_kl.svg", "ppo-objective_lagrange_multiplier.svg"]
    cost = (constrained / "compare" / "ppo-objective_cost.svg").read_text()
    assert cost.startswith("<svg ") and "xmlns=" in cost and "constrained: bound" in cost and "weighted: bound" not in cost
    lines = re.findall(r"<polyline[^>]*points='([^']*)'", cost)
    assert len(lines) == 3  # constrained, its bound, weighted: three iterations each
    assert all(len(points.split()) == 3 for points in lines)
    multiplier = (constrained / "compare" / "ppo-objective_lagrange_multiplier.svg").read_text()
    assert "constrained" in multiplier and "weighted" in multiplier
    page = (constrained / "report.html").read_text()
    assert "Compared with weighted" in page
    assert page.count("cost (train batch mean") == 2 * 2  # its own chart and the compared one (title + aria-label)
    with pytest.raises(Exception, match="no metrics.jsonl"):
        write_report(ReportConfig(run_dir=str(constrained), compare=[str(tmp_path / "nowhere")]))
