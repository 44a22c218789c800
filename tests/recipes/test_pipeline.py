"""`tether pipeline`: two rounds of iterative RLHF on a tiny model, resumable stage by stage."""

import json

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
