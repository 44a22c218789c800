"""FSDP on two CPU processes (gloo) takes the same optimizer steps, and writes the same files, as one process.

The launch goes through accelerate with the shipped FSDP config (examples/accelerate_fsdp.yaml), as a user launches
it; tether shards the model with torch's FSDP2 (``fully_shard``: one unit per decoder layer, plus the root),
reduce-scatters the gradients, clips the sharded gradients and gathers the full weights and optimizer state
before writing a checkpoint or the final model. Each process holds ``batch_size`` examples of every global
micro-batch, so the losses of every step and the final weights must agree with a single process whose
``batch_size`` is twice as large (within 1e-5 at lr 1e-4, as in test_ddp.py), and the checkpoints and model
directories must hold the same tensors under the same names and shapes.

The online-RL recipes shard the policy, the value model and the frozen reference; each process draws its rows with
row-seeded streams, so two processes must reproduce one process's iterations (as under DDP, test_ddp.py), held-out
evaluation included.

One launch runs every recipe in a row (``fsdp_worker.py``), so that the processes start (and import torch and
transformers) once: SFT with gradient accumulation and checkpoints every 2 steps; a copy of that run cut back to
its step-2 checkpoint and resumed under FSDP; DPO; the reward model; a rollout whose processes finish at different
steps; GRPO (with held-out evaluation) and PPO.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from tests.distributed import fsdp_worker
from tests.distributed.test_ddp import COMMON, GRPO, HELDOUT, PPO, _free_port, assert_same_weights, losses, single
from tests.helpers import EXAMPLES
from tether.cli import app
from tether.utils.distributed import Dist, DistributedError, FSDPSettings, fsdp_settings

WORKER = Path(__file__).with_name("fsdp_worker.py")
ACCELERATE_FSDP_CONFIG = EXAMPLES / "accelerate_fsdp.yaml"  # the shipped config, as a user launches with it

RUNS = {
    # name: (cli name, config, extra overrides); SFT accumulates 2 micro-batches a step and checkpoints every 2 steps
    "sft": ("sft", "sft_tiny.yaml", ["train.max_steps=4", "data.max_train_examples=20", "train.grad_accum_steps=2",
                                     "train.save_every=2"]),
    "dpo": ("dpo", "dpo_tiny.yaml", ["train.max_steps=3", "data.max_eval_examples=8"]),
    "rm": ("rm", "rm_tiny.yaml", ["train.max_steps=3", "data.max_eval_examples=8"]),
}


RL_RUNS = {  # name: (command line, single-process extras); the reward-hacking monitor is on for GRPO
    "grpo": ([*GRPO, *HELDOUT, "advantage=reinforce_pp"], ["row_seeded_sampling=true"]),
    "ppo": (PPO, ["row_seeded_sampling=true"]),
}


def _rl_args(name: str, run_dir: Path, single_process: bool = False) -> list[str]:
    args, extra = RL_RUNS[name]
    return [*args, *(extra if single_process else []), f"run_dir={run_dir}"]


def _args(name: str, run_dir: Path, batch_size: int) -> list[str]:
    command, config, extra = RUNS[name]
    return [command, str(EXAMPLES / config), *COMMON, *extra, f"run_dir={run_dir}", f"train.batch_size={batch_size}"]


def launch_fsdp(tmp: Path, steps: list, timeout: int = 300) -> subprocess.CompletedProcess:
    """``accelerate launch --config_file examples/accelerate_fsdp.yaml`` of the worker: two processes here."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ACCELERATE_FSDP_CONFIG),
           "--main_process_ip", "127.0.0.1", "--main_process_port", str(_free_port()), str(WORKER), json.dumps(steps)]
    # COLUMNS: rich wraps the console at the terminal width, and would cut long paths the tests look for
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "COLUMNS": "1000"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def failure_report(result: subprocess.CompletedProcess) -> str:
    """What a failed launch said: the lines that name the first failure (a rank's own error or abort message comes
    long before the launcher's tail), then both tails."""
    marks = ("Error", "error:", "abort", "terminate", "malloc", "Signal", "Traceback")
    first = [line for line in result.stderr.splitlines() if any(m in line for m in marks)][:40]
    return "\n".join(["first failure lines:", *first, "stdout tail:", result.stdout[-2000:],
                      "stderr tail:", result.stderr[-3000:]])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Single-process references (batch 4) and one FSDP launch (2 processes × batch 2) of every run."""
    tmp = tmp_path_factory.mktemp("fsdp")
    one, two = tmp / "one", tmp / "two"
    for name in RUNS:
        single(*_args(name, one / name, 4))
    for name in RL_RUNS:
        single(*_rl_args(name, one / name, single_process=True))
    cut = two / "sft-resumed"
    steps = [_args("sft", two / "sft", 2),
             # the same run, cut back to its step-2 checkpoint (as if killed during step 3), then resumed
             {"copy": [str(two / "sft"), str(cut)]}, {"remove": str(cut / "checkpoints" / "sft" / "step-4")},
             {"remove": str(cut / "sft")}, _args("sft", cut, 2),
             _args("dpo", two / "dpo", 2), _args("rm", two / "rm", 2),
             {"generate": str(two / "lockstep")}, *(_rl_args(name, two / name) for name in RL_RUNS)]
    result = launch_fsdp(tmp, steps)
    assert result.returncode == 0, failure_report(result)
    yield {"one": one, "two": two, "stdout": result.stdout + result.stderr}
    shutil.rmtree(tmp, ignore_errors=True)


def _assert_same_losses(one_dir: Path, two_dir: Path, stage: str, steps: int) -> None:
    single_losses, fsdp_losses = losses(one_dir, stage), losses(two_dir, stage)
    assert len(single_losses) == len(fsdp_losses) == steps  # the main process alone wrote the metrics
    for (s1, l1), (s2, l2) in zip(single_losses, fsdp_losses):
        assert s1 == s2 and abs(l1 - l2) < 1e-5, (single_losses, fsdp_losses)
    assert len({round(loss, 6) for _, loss in single_losses}) > 1  # the steps did change the model


def test_the_models_were_sharded(runs):
    """The comparisons below would also hold for DDP: the launch must really have sharded each model."""
    text = " ".join(runs["stdout"].split())
    assert text.count("FSDP: LlamaForSequenceClassification sharded over 2 processes (2 × LlamaDecoderLayer") == 1
    # SFT twice and DPO, the lockstep rollout's model, GRPO's policy and reference, PPO's reference; PPO's policy
    # and value model are sharded together (2 + 2 blocks)
    assert text.count("FSDP: LlamaForCausalLM sharded over 2 processes (2 × LlamaDecoderLayer") == 3 + 1 + 2 + 1
    assert text.count("FSDP: PolicyAndValue sharded over 2 processes (4 × LlamaDecoderLayer") == 1


@pytest.mark.parametrize("name", sorted(RUNS))
def test_fsdp_takes_the_steps_of_one_process_with_the_same_global_batch(runs, name):
    stage = RUNS[name][0]
    one, two = runs["one"] / name, runs["two"] / name
    _assert_same_losses(one, two, stage, int(RUNS[name][2][0].split("=")[1]))
    assert_same_weights(one / stage, two / stage)  # the full weights: a shard has other shapes
    assert json.loads((one / stage / "config.json").read_text()) == json.loads((two / stage / "config.json").read_text())
    eval_rows = [[r for r in map(json.loads, (d / "metrics.jsonl").read_text().splitlines()) if any(
        k.startswith("eval/") for k in r)] for d in (one, two)]
    assert len(eval_rows[0]) == len(eval_rows[1])  # the held-out evaluation runs through the sharded model too
    for a, b in zip(*eval_rows):
        for key in (k for k in a if k.startswith("eval/")):  # (summed log-probs are ~400: 1e-5 relative)
            assert abs(a[key] - b[key]) < 1e-5 * max(1.0, abs(a[key])), (key, a[key], b[key])


def test_fsdp_checkpoints_hold_what_a_single_process_writes(runs):
    """The checkpoint is gathered: full weights and optimizer moments, numbered as one process numbers them."""
    a, b = runs["one"] / "sft" / "checkpoints" / "sft" / "step-4", runs["two"] / "sft" / "checkpoints" / "sft" / "step-4"
    assert sorted(p.name for p in a.iterdir()) == sorted(p.name for p in b.iterdir())
    for name in ("model.safetensors", "optimizer.safetensors"):
        x, y = load_file(str(a / name)), load_file(str(b / name))
        assert x.keys() == y.keys(), name
        for key in x:
            assert x[key].shape == y[key].shape and x[key].dtype == y[key].dtype, key
            assert torch.allclose(x[key], y[key], atol=1e-5, rtol=0), (key, (x[key] - y[key]).abs().max())
    for name in ("optimizer.json", "scheduler.json"):
        assert json.loads((a / name).read_text()) == json.loads((b / name).read_text()), name
    assert (runs["two"] / "sft" / "checkpoints" / "sft" / "step-2").is_dir()


def test_an_fsdp_checkpoint_resumes_under_fsdp(runs):
    """Cut back to step 2 and resumed: weights and AdamW moments loaded into the shards, the same steps 3 and 4."""
    resumed = runs["two"] / "sft-resumed"
    assert f"resumed from {resumed / 'checkpoints' / 'sft' / 'step-2'}" in " ".join(runs["stdout"].split())
    _assert_same_losses(runs["one"] / "sft", resumed, "sft", 4)
    assert_same_weights(runs["one"] / "sft" / "sft", resumed / "sft")


def test_a_sharded_rollout_whose_processes_finish_apart_samples_what_one_process_samples(runs):
    """Every forward of a sharded policy is a collective; the rollout keeps the weights gathered after its first
    step, so the process whose rows end first can stop decoding while the other goes on (with the weights resharded
    after each step, the processes' collectives would no longer match and the launch would fail or hang). Each row
    is drawn from its own stream, so the rows equal one process's."""
    parts = [json.loads((runs["two"] / f"lockstep.{rank}.json").read_text()) for rank in (0, 1)]
    alone = fsdp_worker.lockstep_generate(fsdp_worker.lockstep_model(), list(range(fsdp_worker.LOCKSTEP_ROWS)))
    lengths = []
    for part in parts:
        responses = torch.tensor(part["responses"])
        width = responses.shape[1]
        assert torch.equal(responses, alone[part["rows"], :width]), part["rows"]
        assert bool((alone[part["rows"], width:] == fsdp_worker.PAD).all())  # nothing after the process stopped
        lengths.append(width)
    assert lengths[0] < lengths[1] < fsdp_worker.LOCKSTEP_NEW_TOKENS, lengths  # one process did finish first


def _rl_rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("name, keys", [
    ("grpo", ("reward/score_mean", "response/length_mean", "objective/kl", "policy/loss")),
    ("ppo", ("reward/score_mean", "reward/score_std", "objective/kl", "objective/kl_coef", "policy/loss", "value/loss",
             "objective/entropy", "policy/approx_kl")),
])
def test_sharded_online_rl_takes_the_iterations_of_one_process(runs, name, keys):
    """Policy, value model and reference sharded; the same rollouts, advantages, losses and final weights."""
    one, two = _rl_rows(runs["one"] / name), _rl_rows(runs["two"] / name)
    training = [[r for r in rows if "policy/loss" in r] for rows in (one, two)]
    assert len(training[0]) == len(training[1]) == 2
    for a, b in zip(*training):
        for key in keys:
            assert abs(a[key] - b[key]) < 1e-5, (key, a[key], b[key])
    assert training[0][1]["objective/kl"] > 0  # the first update moved the policy off the reference
    assert_same_weights(runs["one"] / name / name, runs["two"] / name / name)


def test_held_out_evaluation_under_fsdp_matches_one_process(runs):
    """Every process evaluates the held-out prompts through the sharded policy (its forwards are collectives); the
    points are one process's, the main process writes the curve, and the best policy is gathered and kept (the
    gold reward of this run rises at every point, see fsdp_worker.rising_gold, whose count is per process)."""
    points = [[{k: v for k, v in r.items() if k.startswith("heldout/") and k != "heldout/gold_mean"}
               for r in _rl_rows(d) if "heldout/gold_mean" in r] for d in (runs["one"] / "grpo", runs["two"] / "grpo")]
    assert len(points[0]) == len(points[1]) == 3  # before training and after each of the 2 iterations
    for a, b in zip(*points):
        assert a.keys() == b.keys()
        for key in a:
            assert abs(a[key] - b[key]) < 1e-5, (key, a[key], b[key])
    curves = [json.loads((d / "grpo" / "grpo_heldout.json").read_text()) for d in (runs["one"], runs["two"])]
    assert len(curves[0]["points"]) == len(curves[1]["points"]) == 3
    best = [d / "grpo" / "grpo-best" for d in (runs["one"], runs["two"])]
    assert_same_weights(*best)
    assert json.loads((best[1] / "tether.json").read_text())["iteration"] == 2


# --- what is refused, and how (no launch needed: the checks read the launcher's environment) -----------------------
ACCELERATE_ENV = {  # what `accelerate launch` sets for examples/accelerate_fsdp.yaml
    "ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2", "FSDP_SHARDING_STRATEGY": "FULL_SHARD",
    "FSDP_RESHARD_AFTER_FORWARD": "true", "FSDP_AUTO_WRAP_POLICY": "TRANSFORMER_BASED_WRAP",
    "FSDP_OFFLOAD_PARAMS": "false", "FSDP_STATE_DICT_TYPE": "FULL_STATE_DICT", "FSDP_ACTIVATION_CHECKPOINTING": "false",
    "FSDP_MIN_NUM_PARAMS": "100000000", "FSDP_USE_ORIG_PARAMS": "true", "FSDP_CPU_RAM_EFFICIENT_LOADING": "false",
}


def test_fsdp_settings_from_an_accelerate_config():
    assert fsdp_settings({}) is None
    assert fsdp_settings(ACCELERATE_ENV) == FSDPSettings(reshard_after_forward=True, wrap_blocks=True)
    assert fsdp_settings({**ACCELERATE_ENV, "FSDP_RESHARD_AFTER_FORWARD": "false"}).reshard_after_forward is False
    v1 = {"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "1", "FSDP_SHARDING_STRATEGY": "SHARD_GRAD_OP"}
    assert fsdp_settings(v1).reshard_after_forward is False
    assert fsdp_settings({**ACCELERATE_ENV, "FSDP_AUTO_WRAP_POLICY": "NO_WRAP"}).wrap_blocks is False
    assert fsdp_settings({**ACCELERATE_ENV, "FSDP_TRANSFORMER_CLS_TO_WRAP": "LlamaDecoderLayer"}).block_classes == (
        "LlamaDecoderLayer",)


@pytest.mark.parametrize("env, message", [
    ({"ACCELERATE_USE_DEEPSPEED": "true"}, "tether does not run DeepSpeed"),
    ({**ACCELERATE_ENV, "FSDP_SHARDING_STRATEGY": "NO_SHARD"}, "NO_SHARD is data parallelism"),
    ({**ACCELERATE_ENV, "FSDP_SHARDING_STRATEGY": "HYBRID_SHARD"}, "sharding strategy HYBRID_SHARD"),
    ({**ACCELERATE_ENV, "FSDP_AUTO_WRAP_POLICY": "SIZE_BASED_WRAP"}, "auto wrap policy SIZE_BASED_WRAP"),
    ({**ACCELERATE_ENV, "FSDP_ACTIVATION_CHECKPOINTING": "true"}, "model.gradient_checkpointing=true"),
])
def test_settings_tether_cannot_honour_are_refused(env, message):
    with pytest.raises(DistributedError, match=message):
        fsdp_settings(env)


@pytest.fixture
def two_process_fsdp_env(monkeypatch):
    """The environment of one process of a two-process FSDP launch (nothing here starts a process group)."""
    for key, value in {**ACCELERATE_ENV, "WORLD_SIZE": "2"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(Dist, "_current", None)


def test_deepspeed_launch_is_refused_with_a_clear_error(two_process_fsdp_env, monkeypatch, tmp_path):
    monkeypatch.delenv("ACCELERATE_USE_FSDP")
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    result = CliRunner().invoke(app, ["sft", str(EXAMPLES / "sft_tiny.yaml"), f"run_dir={tmp_path / 'run'}"])
    assert result.exit_code == 2, result.output
    assert "tether does not run DeepSpeed" in " ".join(result.output.split())


def test_lora_is_not_sharded():
    lora = torch.nn.Sequential(torch.nn.Linear(2, 2))
    lora[0].peft_config = {}  # a PEFT model anywhere inside (PPO: the policy inside PolicyAndValue)
    with pytest.raises(DistributedError, match="LoRA"):
        Dist(rank=0, world_size=2, fsdp=FSDPSettings()).wrap(lora)
