"""Two CPU processes (torchrun, gloo) take the same optimizer steps as one process with the same global batch.

Each process holds ``batch_size`` examples of every global micro-batch; losses are normalised by the global
item count and DDP sums the gradients, so the loss of every step and the final weights agree with a single
process whose ``batch_size`` is twice as large. The two differ only by float sums in another order (and
shorter padding per process); AdamW turns that noise into differences near lr in coordinates whose gradient
is ~0, so the comparison runs at lr 1e-4, where weights must agree within 1e-5.
"""

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from tests.helpers import EXAMPLES
from tether.cli import app


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch(nproc: int, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node nproc -m tether.cli *args`` on this machine (gloo, one thread each)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--master_addr=127.0.0.1",
           f"--master_port={_free_port()}", "-m", "tether.cli", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def single(*args: str):
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, (result.stdout or "") + (result.stderr or "")


def losses(run_dir, stage):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in rows if r["stage"] == stage and "loss" in r]


def assert_same_weights(a_dir, b_dir, atol=1e-5):
    a, b = load_file(str(a_dir / "model.safetensors")), load_file(str(b_dir / "model.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name], b[name], atol=atol, rtol=0), (name, (a[name] - b[name]).abs().max())


COMMON = ["train.num_threads=1", "train.learning_rate=1e-4", "train.eval_every=0", "train.save_every=0", "data.eval_fraction=0"]
RECIPES = {
    # recipe: (cli name, config, extra overrides); steps chosen so the runs cross an epoch boundary or accumulate
    "sft": ("sft", "sft_tiny.yaml", ["train.max_steps=3", "data.max_train_examples=20", "train.grad_accum_steps=2"]),
    "rm": ("rm", "rm_tiny.yaml", ["train.max_steps=3", "data.max_eval_examples=8"]),
    "dpo": ("dpo", "dpo_tiny.yaml", ["train.max_steps=3", "data.max_eval_examples=8"]),
    # KTO: unpaired examples and the mismatched-pair KL estimate; both have reference log-probs, computed
    # by the processes in shares and merged
    "kto": ("dpo", "dpo_tiny.yaml", ["loss=kto", "train.max_steps=3", "data.max_eval_examples=8"]),
}


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_two_processes_match_one_with_the_same_global_batch(recipe, tmp_path):
    command, config, extra = RECIPES[recipe]
    args = [command, str(EXAMPLES / config), *COMMON, *extra]
    one, two = tmp_path / "one", tmp_path / "two"
    single(*args, f"run_dir={one}", "train.batch_size=4")
    result = launch(2, *args, f"run_dir={two}", "train.batch_size=2")
    assert result.returncode == 0, result.stderr[-4000:]
    name = command  # the stage's name
    single_losses, ddp_losses = losses(one, name), losses(two, name)
    assert len(single_losses) == len(ddp_losses) == 3  # the main process alone wrote the metrics
    for (s1, l1), (s2, l2) in zip(single_losses, ddp_losses):
        assert s1 == s2 and abs(l1 - l2) < 1e-5, (single_losses, ddp_losses)
    assert_same_weights(one / name, two / name)
    assert len({round(loss, 6) for _, loss in single_losses}) > 1  # the steps did change the model


def test_two_processes_with_half_the_global_batch_differ(tmp_path):
    """The comparison above can fail: two processes that each hold the single run's batch size take other steps."""
    args = ["sft", str(EXAMPLES / "sft_tiny.yaml"), *COMMON, "train.max_steps=2", "data.max_train_examples=20"]
    single(*args, f"run_dir={tmp_path / 'one'}", "train.batch_size=2")
    result = launch(2, *args, f"run_dir={tmp_path / 'two'}", "train.batch_size=2")
    assert result.returncode == 0, result.stderr[-4000:]
    l1, l2 = losses(tmp_path / "one", "sft"), losses(tmp_path / "two", "sft")
    assert abs(l1[0][1] - l2[0][1]) > 1e-4


GRPO = ["grpo", str(EXAMPLES / "grpo_tiny.yaml"), "reward=tether.tasks.toy:period_density", "num_iterations=2",
        "prompts_per_iteration=4", "group_size=4", "minibatch_size=16", "max_new_tokens=8", "num_threads=1",
        "learning_rate=1e-4", "kl_limit=1000"]


# the gold reward rises at every evaluation, so keep_best saves the policy (a collective write) after each iteration
HELDOUT = ["heldout.gold=tests.distributed.fsdp_worker:rising_gold",
           f"heldout.prompts_file={EXAMPLES / 'data' / 'prompts.jsonl'}", "heldout.max_prompts=4", "heldout.every=1",
           "heldout.keep_best=true"]


@pytest.mark.parametrize("advantage", ["grpo", "reinforce_pp"])
def test_two_process_grpo_iterations_match_one_process(advantage, tmp_path):
    """Each process samples its prompts' groups with row-seeded streams, so both runs draw the same responses;
    group baselines (grpo) and batch whitening over all processes (reinforce_pp) then give the same step. The
    reward-hacking monitor runs on every process (keep_best writes are collective) and gives one process's points."""
    one, two = tmp_path / "one", tmp_path / "two"
    single(*GRPO, *HELDOUT, f"advantage={advantage}", f"run_dir={one}", "row_seeded_sampling=true")
    result = launch(2, *GRPO, *HELDOUT, f"advantage={advantage}", f"run_dir={two}")
    assert result.returncode == 0, result.stderr[-4000:]
    rows = {name: [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
            for name, d in (("one", one), ("two", two))}
    assert len(rows["one"]) == len(rows["two"]) == 3  # the held-out point of the reference, then 2 iterations
    for a, b in zip(rows["one"], rows["two"]):
        assert a.keys() == b.keys()
        for key in ("reward/score_mean", "response/length_mean", "objective/kl", "policy/loss", "heldout/proxy_mean",
                    "heldout/kl", "heldout/length_mean"):
            if key in a:
                assert abs(a[key] - b[key]) < 1e-5, (key, a[key], b[key])
    assert rows["one"][2]["objective/kl"] > 0  # the first step moved the policy off the reference
    assert_same_weights(one / "grpo", two / "grpo")
    assert_same_weights(one / "grpo-best", two / "grpo-best")  # kept after the last iteration: the final policy
    assert json.loads((two / "grpo-best" / "tether.json").read_text())["iteration"] == 2


PPO = ["ppo", str(EXAMPLES / "ppo_tiny.yaml"), "reward=tether.tasks.toy:period_density", "num_iterations=2",
       "rollout_batch_size=8", "minibatch_size=8", "ppo_epochs=2", "max_new_tokens=8", "num_threads=1",
       "learning_rate=1e-4", "value_learning_rate=1e-4", "kl_limit=1000"]


def test_two_process_ppo_iterations_match_one_process(tmp_path):
    """PPO in two processes: row-seeded rollouts, the score normaliser fed every process's scores, advantages
    whitened over all tokens, token losses over the global minibatch: the same iterations as one process."""
    one, two = tmp_path / "one", tmp_path / "two"
    single(*PPO, f"run_dir={one}", "row_seeded_sampling=true")
    result = launch(2, *PPO, f"run_dir={two}")
    assert result.returncode == 0, result.stderr[-4000:]
    rows = {name: [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
            for name, d in (("one", one), ("two", two))}
    assert len(rows["one"]) == len(rows["two"]) == 2
    for a, b in zip(rows["one"], rows["two"]):
        for key in ("reward/score_mean", "reward/score_std", "objective/kl", "objective/kl_coef", "policy/loss",
                    "value/loss", "objective/entropy", "policy/approx_kl"):
            assert abs(a[key] - b[key]) < 1e-5, (key, a[key], b[key])
    assert rows["one"][1]["objective/kl"] > 0
    assert_same_weights(one / "ppo", two / "ppo")


def test_a_batch_that_cannot_be_shared_evenly_is_refused_with_a_clear_error(tmp_path):
    result = launch(2, *GRPO, "prompts_per_iteration=3", f"run_dir={tmp_path / 'run'}")
    assert result.returncode != 0
    text = " ".join(result.stderr.split())
    assert "prompts_per_iteration: 3 prompts cannot be shared evenly by 2 processes" in text
    assert "error: prompts_per_iteration" in text and "src/tether" not in text  # torchrun's own report aside, no traceback
    assert "exitcode : 2" in text  # the processes exited with the CLI's bad-input code
    assert not (tmp_path / "run").exists()
