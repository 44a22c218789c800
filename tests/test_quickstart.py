"""`tether quickstart` end to end, as a user runs it."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification


def _quickstart(tmp_path, *args):
    result = subprocess.run([sys.executable, "-m", "tether.cli", "quickstart", f"run_dir={tmp_path / 'qs'}", *args],
                            capture_output=True, text=True, timeout=3600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((tmp_path / "qs" / "summary.json").read_text()), result


def _check_outputs(summary):
    for stage in ("sft", "dpo"):
        AutoModelForCausalLM.from_pretrained(summary["outputs"][stage])
    AutoModelForSequenceClassification.from_pretrained(summary["outputs"]["rm"])
    assert Path(summary["outputs"]["rm_report"]).is_file()
    assert set(summary["seconds"]) == {"sft", "rm", "dpo", "total"}


def test_tiny_quickstart(tmp_path):
    summary, result = _quickstart(tmp_path, "--tiny")
    _check_outputs(summary)
    assert "quickstart outputs" in result.stderr
    assert summary["rm"]["accuracy"] > summary["rm"]["length_baseline_accuracy"]


@pytest.mark.slow
def test_quickstart_on_the_embedded_model(tmp_path):
    summary, _ = _quickstart(tmp_path)
    _check_outputs(summary)
    assert summary["model"].startswith("SmolLM2")
    assert summary["rm"]["accuracy"] >= summary["rm"]["length_baseline_accuracy"] + 0.15
    assert summary["dpo"]["rewards/margins"] > 0
