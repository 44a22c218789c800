"""Run-to-run determinism on CPU: the same command and seed, in two fresh processes and run directories, give
bit-identical metrics (wall-clock keys aside) and weights.

The two processes get different PYTHONHASHSEEDs, so anything that depends on set / dict-of-str iteration order,
object ids or the process's start-up entropy shows up as a difference.
"""

import json
import os
import subprocess
import sys

import torch
from safetensors.torch import load_file

from tests.helpers import EXAMPLES


def _run_twice(tmp_path, recipe, config, stage, overrides):
    results = []
    for i, hash_seed in enumerate(("1", "2")):
        run_dir = tmp_path / f"run{i}"
        cmd = [sys.executable, "-m", "tether.cli", recipe, str(EXAMPLES / config), f"run_dir={run_dir}", *overrides]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                              env={**os.environ, "PYTHONHASHSEED": hash_seed})
        assert done.returncode == 0, done.stderr[-3000:]
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        metrics = [{k: v for k, v in r.items() if k != "time" and not k.startswith("time/")} for r in rows]
        results.append((metrics, load_file(str(run_dir / stage / "model.safetensors"))))
    return results


def _assert_identical(first, second):
    (metrics_a, weights_a), (metrics_b, weights_b) = first, second
    assert metrics_a == metrics_b  # exact: the same floats, the same keys, the same steps
    assert weights_a.keys() == weights_b.keys()
    for name in weights_a:
        assert torch.equal(weights_a[name], weights_b[name]), name


def test_sft_is_identical_run_to_run(tmp_path):
    first, second = _run_twice(tmp_path, "sft", "sft_tiny.yaml", "sft",
                               ["train.max_steps=6", "train.batch_size=2", "data.max_length=96",
                                "data.eval_fraction=0.02", "train.eval_every=3", "train.report_to=[]"])
    _assert_identical(first, second)
    losses = [r["loss"] for r in first[0] if "loss" in r]
    assert len(losses) == 6 and len(set(losses)) == 6  # six different steps (different batches, moving weights)
    assert sum("eval/loss" in r for r in first[0]) == 2


def test_grpo_is_identical_run_to_run(tmp_path):
    first, second = _run_twice(tmp_path, "grpo", "grpo_tiny.yaml", "grpo",
                               ["reward=tether.tasks.toy:short_and_ended", "num_iterations=3", "max_new_tokens=8",
                                "prompts_per_iteration=2", "group_size=4", "learning_rate=3e-3", "report_to=[]"])
    _assert_identical(first, second)
    # sampled text with spread in its reward, and a policy that moved: the comparison is not of constants
    assert len(first[0]) == 3 and first[0][-1]["objective/kl"] > 0
    assert all(r["reward/group_std_mean"] > 0 for r in first[0])

