"""`tether quickstart` end to end, as a user runs it."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification
from typer.testing import CliRunner

from tests.helpers import chromium_driver, have_chromium
from tether.cli import app
from tether.config import QuickstartConfig, to_dict
from tether.engine.runtime import record_config
from tether.recipes.quickstart import TINY_OVERRIDES, stage_configs
from tether.tasks.registry import get_task


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
            assert driver.title == "tether quickstart (sentiment task) — tether report"
            assert [e for e in driver.get_log("browser") if e["level"] == "SEVERE"] == []
        finally:
            driver.quit()
    assert "quickstart results" in result.stderr
    assert summary["labels"]["exported_pairs"] > 100 and summary["headline"]["hacking alarms"] == len(summary["alarms"])


def test_tiny_quickstart_on_the_sentiment_task(tmp_path):
    summary, result = _quickstart(tmp_path, "--tiny", "task=sentiment", "seed=1", "ppo_iterations=2", "eval_prompts=0")
    assert summary["task"] == "sentiment" and summary["seed"] == 1
    assert summary["headline"]["test prompts"] == 160  # every test opening (eval_prompts=0)
    for name in ("ppo", "dpo"):  # every comparison against SFT carries its interval over the same prompts
        for key in ("gold_gain", "proxy_gain", "win_rate_interval"):
            interval = summary["intervals"][name][key]
            assert interval["low"] <= interval["estimate"] <= interval["high"] and interval["n"] == 160
    assert set(summary["checks"]) == {"gold gain above zero", "win-rate >= 0.65 and above 1/2",
                                      "proxy gain above zero", "no hacking alarm"}
    assert "against SFT on 160 test prompts" in result.stderr
    samples = [json.loads(line) for line in (tmp_path / "qs" / "samples.jsonl").read_text().splitlines()]
    openings = {json.loads(line)["prompt"] for line in
                Path(get_task("sentiment").path("prompts_file")).read_text().splitlines()}
    assert samples and all(row["prompt"] in openings for row in samples)  # raw openings, no chat template


@pytest.mark.slow
def test_quickstart_on_the_embedded_model(tmp_path):
    """The real run a new user starts (the default task, seed 0; about 15 minutes on 2 cores): RLHF must visibly
    work, by the quickstart's own checks: PPO's gold gain over SFT on the test prompts has a 95% interval above zero,
    its win-rate is >= 0.65 with the interval above 1/2, the reward model's score rose, and the hacking alarm stayed
    silent. (The helpful task does not pass them within the budget: docs/results.md.)"""
    summary, _ = _quickstart(tmp_path)
    _check_outputs(summary)
    assert summary["model"].startswith("SmolLM2")
    headline = summary["headline"]
    assert headline["RM held-out accuracy"] >= headline["RM 'longer wins' baseline"] + 0.15
    assert headline["test prompts"] >= 100
    failed = [check for check, passed in summary["checks"].items() if not passed]
    assert not failed, (failed, summary["intervals"]["ppo"])


class _Stop(Exception):
    """Raised by a stand-in for the first stage: the test only needs to see where the quickstart would write."""


def _stop_at_sft(monkeypatch, seen):
    from tether.recipes import sft

    def train_sft(cfg):
        seen.append(cfg.run_dir)
        raise _Stop

    monkeypatch.setattr(sft, "train_sft", train_sft)


def _digests(folder):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_tiny_quickstart_writes_to_its_own_run_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    seen = []
    _stop_at_sft(monkeypatch, seen)
    result = CliRunner().invoke(app, ["quickstart", "--tiny"])
    assert isinstance(result.exception, _Stop) and seen == ["runs/quickstart-tiny"]
    result = CliRunner().invoke(app, ["quickstart", "--tiny", "run_dir=runs/mine"])  # unless told otherwise
    assert isinstance(result.exception, _Stop) and seen[-1] == "runs/mine"


def _earlier_quickstart(run):
    """A quickstart run directory made with another model: its SFT stage really trained (a 1-layer model standing
    in for SmolLM2, to keep the test fast), the other outputs stand-ins; no quickstart record in config.yaml, as
    an earlier tether left it."""
    from tether.config import ModelConfig
    from tether.recipes.sft import train_sft

    sft = stage_configs(QuickstartConfig(run_dir=str(run)))["sft"]
    sft.model = ModelConfig(name_or_path="embedded", random_init=True,
                            config_overrides={**TINY_OVERRIDES, "num_hidden_layers": 1})
    sft.train.max_steps, sft.data.max_eval_examples, sft.train.report_to = 1, 4, []
    train_sft(sft)
    for name in ("samples.jsonl", "preferences.jsonl", "training_pairs.jsonl", "labels.sqlite", "report.html",
                 "summary.json", "eval.json"):
        (run / name).write_text(f"the earlier run's {name}\n")


def test_tiny_quickstart_leaves_a_quickstart_of_another_model_byte_identical(tmp_path, monkeypatch):
    run = tmp_path / "qs"
    _earlier_quickstart(run)
    before = _digests(run)
    result = CliRunner().invoke(app, ["quickstart", "--tiny", f"run_dir={run}"])
    output = (result.stdout or "") + (result.stderr or "")
    assert result.exit_code == 2 and "Traceback" not in output, output[-3000:]
    (error,) = [line for line in output.splitlines() if line.startswith("error:")]
    assert f"{run} holds a quickstart made with other settings ({run / 'sft'}:" in error, error
    assert "model.config_overrides.num_hidden_layers: 1 → 2" in error and "resume=never" in error, error
    assert _digests(run) == before  # not one file written, changed or removed

    # resume=never: the earlier run is moved aside whole, and the new one starts in an empty run_dir
    seen = []
    _stop_at_sft(monkeypatch, seen)
    result = CliRunner().invoke(app, ["quickstart", "--tiny", f"run_dir={run}", "resume=never"])
    assert isinstance(result.exception, _Stop) and seen == [str(run)]
    (aside,) = tmp_path.glob("qs.old-*")
    assert _digests(aside) == before and sorted(p.name for p in run.iterdir()) == ["config.yaml"]


def test_a_quickstart_run_directory_with_the_same_settings_passes_and_other_settings_do_not(tmp_path):
    from tether.recipes.quickstart import MODEL_STAGES, check_run_dir
    from tether.utils.resume import ResumeRefused

    cfg = QuickstartConfig(run_dir=str(tmp_path), tiny=True)
    stages = stage_configs(cfg)
    for name in MODEL_STAGES:  # as a finished quickstart with these settings leaves them
        (tmp_path / name).mkdir()
        (tmp_path / name / "tether.json").write_text(json.dumps({"config": to_dict(stages[name])}))
    record_config(tmp_path, "quickstart", cfg)
    check_run_dir(QuickstartConfig(run_dir=str(tmp_path), tiny=True, num_threads=2), stages)  # threads: no matter
    more = QuickstartConfig(run_dir=str(tmp_path), tiny=True, k=6)
    with pytest.raises(ResumeRefused, match=r"\(quickstart\): k: 4 → 6\)"):
        check_run_dir(more, stage_configs(more))


def test_the_harmless_quickstart_runs_its_flow_with_the_safety_metrics(tmp_path):
    """`tether quickstart task=harmless`: the standard flow (one reward model on the combined gold, helpfulness − 3 ·
    harm) with the evaluation's safety metrics; the two-objective lifecycle is examples/pipeline_harmless.yaml."""
    from tether.recipes.quickstart import run_quickstart

    stages = stage_configs(QuickstartConfig(task="harmless", tiny=True))
    assert stages["eval"].safety == "tether.tasks.harmless:safety_metrics"
    assert stages["label simulate"].utility == "tether.tasks.harmless:gold_utility"
    assert stage_configs(QuickstartConfig(task="sentiment", tiny=True))["eval"].safety == ""
    cfg = QuickstartConfig(run_dir=str(tmp_path / "qs"), task="harmless", tiny=True, sft_steps=2, sample_prompts=4,
                           k=2, pairs_per_prompt=1, rm_steps=2, ppo_iterations=1, ppo_batch=4, dpo_steps=1,
                           heldout_prompts=4, heldout_every=1, eval_prompts=8, max_new_tokens=8, eval_examples=8,
                           batch_size=4, precision="fp32")
    summary = run_quickstart(cfg)
    for name in ("sft", "ppo", "dpo"):  # the first 8 test prompts alternate harmful / benign
        row = summary["eval"][name]
        assert row["harm_rate_interval"]["n"] == 4 and row["over_refusal_rate_interval"]["n"] == 4
        assert summary["headline"][f"harm rate after {name.upper()}"] == row["harm_rate"]
        assert summary["headline"][f"over-refusal rate after {name.upper()}"] == row["over_refusal_rate"]
    assert json.loads((tmp_path / "qs" / "eval.json").read_text())["safety"] == "tether.tasks.harmless:safety_metrics"


def test_the_quickstart_passes_its_ppo_settings_on():
    """Each PPO setting of the quickstart reaches the PPO stage's config (the cut-off penalty included)."""
    cfg = QuickstartConfig(ppo_learning_rate=2.5e-5, kl_coef=0.2, target_kl=4.0, missing_eos_penalty=0.0)
    ppo = stage_configs(cfg)["ppo"]
    assert (ppo.learning_rate, ppo.kl_coef, ppo.target_kl, ppo.missing_eos_penalty) == (2.5e-5, 0.2, 4.0, 0.0)
    assert stage_configs(QuickstartConfig())["ppo"].missing_eos_penalty == 1.0  # PPO's own default
