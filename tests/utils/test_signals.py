"""SIGTERM / SIGINT: the run finishes its step, saves a checkpoint, exits with 128 + signal and resumes."""

import json
import signal
import subprocess
import sys
import time

import pytest

from tests.helpers import EXAMPLES


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_saves_a_checkpoint_and_the_run_resumes(tmp_path, signum):
    cmd = [sys.executable, "-m", "tether.cli", "sft", str(EXAMPLES / "sft_tiny.yaml"), f"run_dir={tmp_path}",
           "train.max_steps=500", "train.save_every=0", "train.eval_every=0", "data.eval_fraction=0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not metrics.is_file() or len(metrics.read_text().splitlines()) < 3):
        time.sleep(0.2)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, err[-2000:]
    text = " ".join((out + err).split())
    assert "Run the same command again to resume" in text and signal.Signals(signum).name in text
    steps = [json.loads(line)["step"] for line in metrics.read_text().splitlines()]
    last = max(steps)
    assert 3 <= last < 500
    saved = sorted(p.name for p in (tmp_path / "checkpoints" / "sft").iterdir())
    assert saved == [f"step-{last}"]  # saved at the step it stopped after, nothing half-written
    # the same command resumes from there
    again = subprocess.run(cmd[:-4] + [f"train.max_steps={last + 2}", "train.save_every=0", "train.eval_every=0",
                                       "data.eval_fraction=0"], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resumed from" in " ".join(again.stderr.split()) and f"step {last}/" in " ".join(again.stderr.split())
    steps = [json.loads(line)["step"] for line in metrics.read_text().splitlines()]
    assert steps[-2:] == [last + 1, last + 2]


def test_sigterm_stops_ppo_at_the_end_of_an_iteration(tmp_path):
    cmd = [sys.executable, "-m", "tether.cli", "ppo", str(EXAMPLES / "ppo_tiny.yaml"), f"run_dir={tmp_path}",
           "reward=tether.tasks.toy:period_density", "num_iterations=200", "max_new_tokens=8"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not metrics.is_file() or len(metrics.read_text().splitlines()) < 2):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    last = max(json.loads(line)["step"] for line in metrics.read_text().splitlines())
    state = json.loads((tmp_path / "checkpoints" / "ppo" / f"step-{last}" / "trainer_state.json").read_text())
    assert state["trainer"]["iteration"] == last and "kl_controller" in state["trainer"]
    assert not (tmp_path / "ppo" / "tether.json").exists()  # no final policy was written: the run is not finished
