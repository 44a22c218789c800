"""`tether pipeline`: two rounds of iterative RLHF on a tiny model, resumable stage by stage."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.helpers import EXAMPLES
from tether.config import PipelineConfig, load_config
from tether.data import DataError
from tether.recipes.pipeline import run_pipeline


def _config(tmp_path, *overrides):
    return load_config(PipelineConfig, EXAMPLES / "pipeline_tiny.yaml", [f"run_dir={tmp_path / 'run'}", *overrides])


@pytest.fixture(scope="module")
def two_rounds(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("pipeline")
    import os

    cwd = os.getcwd()
    os.chdir(EXAMPLES.parent)  # the example's data paths are relative to the repository root
    try:
        summary = run_pipeline(_config(tmp_path))
    finally:
        os.chdir(cwd)
    return tmp_path / "run", summary


def test_two_rounds_write_every_stage(two_rounds):
    run, summary = two_rounds
    assert (run / "sft" / "tether.json").is_file()
    for r in (1, 2):
        here = run / f"round-{r}"
        for stage in ("sample", "label", "rm", "ppo", "dpo", "eval"):
            assert (here / ".stages" / f"{stage}.json").is_file(), (r, stage)
        assert (here / "report.html").is_file() and (here / "ppo_heldout.json").is_file()
    # round 2 samples from round 1's PPO policy, continues its reward model, and trains on both rounds' labels
    sample_cfg = json.loads((run / "round-2" / "samples.jsonl").read_text().splitlines()[0])
    assert sample_cfg["model"] == str(run / "round-1" / "ppo")
    rm_meta = json.loads((run / "round-2" / "rm" / "tether.json").read_text())
    assert rm_meta["base_model"] == str(run / "round-1" / "rm")
    n1 = len((run / "round-1" / "preferences.jsonl").read_text().splitlines())
    n2 = len((run / "round-2" / "preferences.jsonl").read_text().splitlines())
    assert len((run / "round-2" / "training_pairs.jsonl").read_text().splitlines()) == n1 + n2
    ppo_meta = json.loads((run / "round-2" / "ppo" / "tether.json").read_text())
    assert ppo_meta["base_model"] == str(run / "round-1" / "ppo") and ppo_meta["config"]["ref_model"] == str(run / "sft")
    assert summary["outputs"]["round-2"]["policy"] == str(run / "round-2" / "ppo")


def test_rerun_skips_finished_stages(two_rounds, tmp_path, capsys):
    run, _ = two_rounds
    import os

    stamps = {p: p.stat().st_mtime for p in run.rglob("model.safetensors")}
    cwd = os.getcwd()
    os.chdir(EXAMPLES.parent)
    try:
        run_pipeline(load_config(PipelineConfig, EXAMPLES / "pipeline_tiny.yaml", [f"run_dir={run}"]))
    finally:
        os.chdir(cwd)
    assert {p: p.stat().st_mtime for p in run.rglob("model.safetensors")} == stamps  # nothing retrained
    assert capsys.readouterr().err.replace("\n", " ").count("finished earlier, skipping") == 13  # sft + 2 x 6


def test_bring_your_own_preferences_and_reward_skip_stages(tmp_path):
    cfg = _config(tmp_path, "rounds=1", f"sft_model={tmp_path / 'missing'}", "stages=[ppo]")
    with pytest.raises(DataError, match="PPO has no reward"):
        run_pipeline(cfg)
    with pytest.raises(DataError, match="unknown stage"):
        run_pipeline(_config(tmp_path, "stages=[sft,magic]"))


# --------------------------------------------------------------------------- the reward-model gate (rm.min_accuracy)


def _rm_below_chance(monkeypatch, accuracy=0.188):
    """Stand-ins for the trained stages: a reward model whose held-out report says ``accuracy`` (a pipeline round
    once reached 0.188 and went on to PPO without a word), and a PPO stage; both record that they ran."""
    from tether.recipes import ppo, reward_model

    ran = []

    def fake_rm(cfg):
        ran.append("rm")
        out = Path(cfg.run_dir) / cfg.name
        out.mkdir(parents=True, exist_ok=True)
        report = {"accuracy": accuracy, "length_baseline_accuracy": 0.396, "n_pairs": 32}
        (out / "eval_report.json").write_text(json.dumps(report))
        return reward_model.RewardModelResult(out, report, [])

    def fake_ppo(cfg):
        ran.append(f"ppo on {cfg.reward}")
        return SimpleNamespace(model_dir=Path(cfg.run_dir) / cfg.name)

    monkeypatch.setattr(reward_model, "train_reward_model", fake_rm)
    monkeypatch.setattr(ppo, "train_ppo", fake_ppo)
    monkeypatch.chdir(EXAMPLES.parent)
    return ran


def _gate_args(tmp_path, *extra):
    return [str(EXAMPLES / "pipeline_tiny.yaml"), f"run_dir={tmp_path / 'run'}", "rounds=1", "stages=[rm,ppo]",
            f"sft_model={tmp_path / 'sft'}", f"preferences={EXAMPLES / 'data' / 'preferences.jsonl'}", *extra]


def test_a_reward_model_below_rm_min_accuracy_stops_the_pipeline_with_exit_2(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from tether.cli import app

    ran = _rm_below_chance(monkeypatch)
    result = CliRunner().invoke(app, ["pipeline", *_gate_args(tmp_path, "rm.min_accuracy=0.5")])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(
        "error: reward model held-out accuracy 0.188 is below rm.min_accuracy=0.5 (")
    assert "stopped before RL" in errors[0] and ran == ["rm"]  # PPO never started
    # a lower threshold goes on with the reward model already trained (the finished rm stage is kept)
    result = CliRunner().invoke(app, ["pipeline", *_gate_args(tmp_path, "rm.min_accuracy=0.1")])
    assert result.exit_code == 0, result.output
    assert ran == ["rm", f"ppo on {tmp_path / 'run' / 'rm'}"]


def test_without_a_threshold_the_pipeline_warns_loudly_and_goes_on(tmp_path, monkeypatch, capsys):
    ran = _rm_below_chance(monkeypatch)
    run_pipeline(load_config(PipelineConfig, _gate_args(tmp_path)[0], _gate_args(tmp_path)[1:]))
    said = " ".join(capsys.readouterr().err.split())
    assert ("warning: the reward model's held-out accuracy 0.188 is below chance (0.5) and below the 'longer "
            "response wins' baseline (0.396)") in said
    assert "going on to RL with it (it passes rm.min_accuracy=0" in said
    assert ran == ["rm", f"ppo on {tmp_path / 'run' / 'rm'}"]  # PPO ran, on that reward model


def test_the_gate_needs_a_held_out_accuracy(tmp_path, monkeypatch):
    _rm_below_chance(monkeypatch, accuracy=None)
    with pytest.raises(DataError, match=r"rm.min_accuracy=0.6 is set but the reward model has no held-out accuracy"):
        run_pipeline(load_config(PipelineConfig, _gate_args(tmp_path)[0],
                                 [*_gate_args(tmp_path)[1:], "rm.min_accuracy=0.6"]))
