"""SIGKILL at a random point (no chance to clean up), then the same command again: the run ends exactly where an
uninterrupted run of the same command ends (final weights and metrics within 1e-6).

The kill point is drawn from a seeded RNG (reproducible, not hand-placed): after how many logged steps, and how far
into the next step; it may land in a forward, a backward, an optimizer step or a checkpoint being written.
"""

import json
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers import EXAMPLES

TIMEOUT = 300


def _command(recipe, config, run_dir, *overrides):
    return [sys.executable, "-m", "tether.cli", recipe, str(EXAMPLES / config), f"run_dir={run_dir}", *overrides]


def _run(cmd, log):
    with open(log, "w") as handle:
        done = subprocess.run(cmd, stdout=handle, stderr=subprocess.STDOUT, timeout=TIMEOUT)
    assert done.returncode == 0, log.read_text()[-3000:]


def _rows(run_dir, stage):
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    return [r for r in (json.loads(line) for line in path.read_text().splitlines() if line.strip())
            if r["stage"] == stage]


def _kill_at_a_random_point(cmd, run_dir, stage, total, save_every, seed, log):
    rng = random.Random(seed)
    after_rows = rng.randint(save_every + 1, total - 2)  # steps logged before the kill (a checkpoint exists by then)
    into_next = rng.random()  # how far into the next step, as a fraction of the mean step time so far
    checkpoints = run_dir / "checkpoints" / stage
    with open(log, "w") as handle:
        proc = subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT)
        deadline = time.time() + TIMEOUT
        while time.time() < deadline and proc.poll() is None and not (
                len(_rows(run_dir, stage)) >= after_rows and any(checkpoints.glob("step-*"))):
            time.sleep(0.05)
        rows = _rows(run_dir, stage)
        step_time = (rows[-1]["time"] - rows[0]["time"]) / max(1, len(rows) - 1)
        time.sleep(into_next * step_time)
        assert proc.poll() is None, "the run ended before the kill:\n" + log.read_text()[-3000:]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not (run_dir / stage / "model.safetensors").exists()  # killed before the end: there is work to resume
    return max(r["step"] for r in _rows(run_dir, stage))


def _last_record_per_step(run_dir, stage):
    """{(step, kind): metrics} from the last record of each step, without the wall-clock keys."""
    out = {}
    for row in _rows(run_dir, stage):
        kind = "eval" if any(k.startswith("eval/") for k in row) else "train"
        out[(row["step"], kind)] = {k: v for k, v in row.items()
                                    if k != "time" and not k.startswith("time/") and isinstance(v, (int, float))}
    return out


def _assert_same_run(full_dir, cut_dir, stage, total):
    full, cut = _last_record_per_step(full_dir, stage), _last_record_per_step(cut_dir, stage)
    assert sorted(cut) == sorted(full) and (total, "train") in full
    # the steps logged between the last checkpoint and the kill were dropped on resume: none is logged twice
    assert len(_rows(cut_dir, stage)) == len(_rows(full_dir, stage))
    for key, metrics in full.items():
        assert cut[key].keys() == metrics.keys(), key
        for name, value in metrics.items():
            assert cut[key][name] == pytest.approx(value, abs=1e-6), (key, name)
    full_weights = load_file(str(full_dir / stage / "model.safetensors"))
    cut_weights = load_file(str(cut_dir / stage / "model.safetensors"))
    assert full_weights.keys() == cut_weights.keys()
    for name, tensor in full_weights.items():
        assert torch.allclose(cut_weights[name], tensor, atol=1e-6, rtol=0), name


def test_sft_killed_at_a_random_point_resumes_to_the_uninterrupted_result(tmp_path):
    total = 14
    overrides = (f"train.max_steps={total}", "train.save_every=2", "train.eval_every=0", "train.report_to=[]",
                 "train.batch_size=2", "data.max_length=96", "data.eval_fraction=0.02")  # small: 3 runs in ~45 s
    full, cut = tmp_path / "full", tmp_path / "cut"
    _run(_command("sft", "sft_tiny.yaml", full, *overrides), tmp_path / "full.log")
    killed_after = _kill_at_a_random_point(_command("sft", "sft_tiny.yaml", cut, *overrides), cut, "sft", total, 2,
                                           seed=8, log=tmp_path / "killed.log")
    assert killed_after < total
    _run(_command("sft", "sft_tiny.yaml", cut, *overrides), tmp_path / "resumed.log")
    assert "resumed from" in " ".join((tmp_path / "resumed.log").read_text().split())
    _assert_same_run(full, cut, "sft", total)


@pytest.mark.slow  # three PPO processes: ~30 s on 2 idle cores, ~60 s on busy ones (run with -m slow)
def test_ppo_killed_at_a_random_point_resumes_to_the_uninterrupted_result(tmp_path):
    total = 5
    overrides = ("reward=tether.tasks.toy:period_density", f"num_iterations={total}", "max_new_tokens=8",
                 "save_every=1", "report_to=[]", "rollout_batch_size=4", "minibatch_size=4", "ppo_epochs=1")
    full, cut = tmp_path / "full", tmp_path / "cut"
    _run(_command("ppo", "ppo_tiny.yaml", full, *overrides), tmp_path / "full.log")
    killed_after = _kill_at_a_random_point(_command("ppo", "ppo_tiny.yaml", cut, *overrides), cut, "ppo", total, 1,
                                           seed=3, log=tmp_path / "killed.log")
    assert killed_after < total
    _run(_command("ppo", "ppo_tiny.yaml", cut, *overrides), tmp_path / "resumed.log")
    assert "resumed from" in " ".join((tmp_path / "resumed.log").read_text().split())
    _assert_same_run(full, cut, "ppo", total)
