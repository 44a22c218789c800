"""`tether quickstart` end to end, as a user runs it."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from tests.helpers import chromium_driver, have_chromium


def _quickstart(tmp_path, *args):
    result = subprocess.run([sys.executable, "-m", "tether.cli", "quickstart", f"run_dir={tmp_path / 'qs'}", *args],
                            capture_output=True, text=True, timeout=3600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((tmp_path / "qs" / "summary.json").read_text()), result


def _check_outputs(summary):
    for stage in ("sft", "ppo", "dpo"):
        AutoModelForCausalLM.from_pretrained(summary["outputs"][stage])
    AutoModelForSequenceClassification.from_pretrained(summary["outputs"]["rm"])
    for key in ("rm_report", "eval", "samples", "labels", "preferences"):
        assert Path(summary["outputs"][key]).exists(), key
    assert set(summary["seconds"]) == {"sft", "sample", "label_simulate", "label_stats", "label_export", "rm", "ppo",
                                       "dpo", "eval", "total"}
    assert set(summary["eval"]) == {"sft", "ppo", "dpo"}
    assert summary["eval"]["sft"]["kl_mean"] == 0.0 and summary["eval"]["ppo"]["kl_mean"] != 0.0
    page = Path(summary["outputs"]["report"]).read_text()
    assert "id='alarm'" in page and "id='eval'" in page and "id='answers'" in page and "<script" not in page


def test_tiny_quickstart(tmp_path):
    summary, result = _quickstart(tmp_path, "--tiny")
    _check_outputs(summary)
    if have_chromium():  # the report a user opens first renders without a single browser error
        driver = chromium_driver()
        try:
            driver.get(Path(summary["outputs"]["report"]).resolve().as_uri())
            assert driver.title == "tether quickstart — tether report"
            assert [e for e in driver.get_log("browser") if e["level"] == "SEVERE"] == []
        finally:
            driver.quit()
    assert "quickstart results" in result.stderr
    assert summary["labels"]["exported_pairs"] > 100 and summary["headline"]["hacking alarms"] == len(summary["alarms"])


@pytest.mark.slow
def test_quickstart_on_the_embedded_model(tmp_path):
    summary, _ = _quickstart(tmp_path)
    _check_outputs(summary)
    assert summary["model"].startswith("SmolLM2")
    headline = summary["headline"]
    assert headline["gold after PPO"] > headline["gold after SFT"]
    assert headline["RM held-out accuracy"] >= headline["RM 'longer wins' baseline"] + 0.15
