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
