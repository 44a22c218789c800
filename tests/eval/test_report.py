"""report.html from a run directory: every section, escaped model text, no script, opens in headless Chromium."""

import json

import pytest

from tests.helpers import chromium_driver, have_chromium
from tether.config import ReportConfig
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
    # x range padded 5% each side → x=0 at 62 + 0.5/11 * 124, y=1 near the top margin
    assert "points='67.6," in svg and svg.startswith("<svg") and svg.endswith("</svg>")
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
