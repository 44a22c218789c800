"""A pipeline interrupted in the middle of its PPO stage, run again, ends exactly where an uninterrupted one ends."""

import json
import os

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers import EXAMPLES
from tether.config import PipelineConfig, load_config
from tether.recipes.pipeline import run_pipeline

SMALL = ["rounds=1", "stages=[sft,sample,label,rm,ppo]", "sft.train.max_steps=8", "sample.max_prompts=12",
         "rm.train.max_steps=4", "ppo.num_iterations=4", "ppo.save_every=1", "ppo.heldout.gold=", "ppo.report_to=[]"]


def _pipeline(run_dir):
    cwd = os.getcwd()
    os.chdir(EXAMPLES.parent)  # the example's data paths are relative to the repository root
    try:
        return run_pipeline(load_config(PipelineConfig, EXAMPLES / "pipeline_tiny.yaml", [f"run_dir={run_dir}", *SMALL]))
    finally:
        os.chdir(cwd)


def _ppo_rows(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "time" and not k.startswith("time/")} for r in rows if r["stage"] == "ppo"]


def test_pipeline_killed_during_ppo_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch):
    full, cut = tmp_path / "full", tmp_path / "cut"
    _pipeline(full)

    from tether.recipes import ppo as ppo_module

    original, calls = ppo_module.ppo_update, {"n": 0}

    def killed_in_iteration_3(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # after the checkpoint of iteration 2, before iteration 3 is saved
        return original(*args, **kwargs)

    monkeypatch.setattr(ppo_module, "ppo_update", killed_in_iteration_3)
    with pytest.raises(KeyboardInterrupt):
        _pipeline(cut)
    monkeypatch.setattr(ppo_module, "ppo_update", original)
    stages = sorted(p.stem for p in (cut / ".stages").glob("*.json"))
    assert stages == ["label", "rm", "sample", "sft"] and (cut / "checkpoints" / "ppo" / "step-2").is_dir()
    stamps = {p: p.stat().st_mtime_ns for p in (cut / "sft", cut / "rm") for p in [p / "model.safetensors"]}

    _pipeline(cut)  # the same command again
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # finished stages were not redone
    assert (cut / "preferences.jsonl").read_text() == (full / "preferences.jsonl").read_text()
    full_rows, cut_rows = _ppo_rows(full), _ppo_rows(cut)
    assert len(cut_rows) == len(full_rows) == 4  # iteration 3 is logged once, by the resumed run
    for a, b in zip(full_rows, cut_rows):
        assert a.keys() == b.keys()
        for key in a:
            assert b[key] == pytest.approx(a[key], abs=1e-6), key
    a, b = load_file(str(full / "ppo" / "model.safetensors")), load_file(str(cut / "ppo" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6, rtol=0) for k in a)
