"""The recipes on a CUDA device: the same numbers as on the CPU where sampling does not enter, the same learning
where it does (responses are sampled from per-row CPU streams, so they match the CPU's too up to logits' rounding).

Skipped without a CUDA device. ``TETHER_GPU_TEST_DEVICE=cpu`` runs the file on the CPU instead (a check of the
tests themselves on a machine without a GPU: the device runs then equal the CPU runs exactly)."""

import os

import pytest
import torch

from tests.helpers import EXAMPLES, tiny_model_config
from tether.config import (
    DataConfig,
    GRPOConfig,
    ModelConfig,
    PPOConfig,
    PreferenceConfig,
    RewardModelConfig,
    SFTConfig,
    TrainConfig,
)
from tether.utils.distributed import Dist
from tether.utils.logging import read_metrics

DEVICE = os.environ.get("TETHER_GPU_TEST_DEVICE", "cuda")
pytestmark = pytest.mark.skipif(DEVICE.startswith("cuda") and not torch.cuda.is_available(),
                                reason="needs a CUDA device")
DATA = EXAMPLES / "data"


def _train(**kwargs):
    return TrainConfig(**{**dict(batch_size=8, eval_batch_size=16, warmup_ratio=0.1, report_to=[]), **kwargs})


def _sft(run, steps=12, **model):
    return SFTConfig(run_dir=str(run), model=tiny_model_config(**model),
                     data=DataConfig(train_file=str(DATA / "sft.jsonl"), max_length=256, max_eval_examples=32),
                     train=_train(learning_rate=3e-3, max_steps=steps, eval_every=6, save_final_checkpoint=False))


def _losses(run, recipe, key="loss"):
    return [r[key] for r in read_metrics(run, recipe) if key in r]


def test_sft_on_the_device_matches_the_cpu(tmp_path, on):
    from tether.recipes.sft import train_sft

    on("cpu")
    train_sft(_sft(tmp_path / "cpu"))
    on(DEVICE)
    if DEVICE.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    result = train_sft(_sft(tmp_path / "dev"))
    assert Dist.current().device.type == DEVICE.split(":")[0]
    if DEVICE.startswith("cuda"):
        assert torch.cuda.max_memory_allocated() > 10 * 2**20  # the model, its gradients and AdamW lived there
    cpu, dev = _losses(tmp_path / "cpu", "sft"), _losses(tmp_path / "dev", "sft")
    assert len(dev) == 12 and dev == pytest.approx(cpu, abs=2e-3)
    assert _losses(tmp_path / "dev", "sft", "eval/loss") == pytest.approx(
        _losses(tmp_path / "cpu", "sft", "eval/loss"), abs=2e-3)
    from safetensors.torch import load_file

    weights = load_file(result.model_dir / "model.safetensors")  # saved from the device, read on the CPU
    assert all(t.device.type == "cpu" for t in weights.values())


def test_bf16_sft_learns_on_the_device(tmp_path, on):
    from tether.recipes.sft import train_sft

    on(DEVICE)
    train_sft(_sft(tmp_path, steps=24, dtype="bfloat16"))
    evals = _losses(tmp_path, "sft", "eval/loss")
    assert len(evals) == 4 and evals[-1] < evals[0] - 1.0


def test_reward_model_and_dpo_on_the_device_match_the_cpu(tmp_path, on):
    from tether.recipes.preference import train_preference
    from tether.recipes.reward_model import train_reward_model

    data = DataConfig(train_file=str(DATA / "preferences.jsonl"), eval_file=str(DATA / "preferences_eval.jsonl"),
                      max_length=256, max_eval_examples=32)
    for where, device in (("cpu", "cpu"), ("dev", DEVICE)):
        on(device)
        train_reward_model(RewardModelConfig(run_dir=str(tmp_path / where / "rm"), model=tiny_model_config(),
                                             data=data, train=_train(learning_rate=1e-3, max_steps=10)))
        train_preference(PreferenceConfig(run_dir=str(tmp_path / where / "dpo"), name="dpo", loss="dpo",
                                          model=tiny_model_config(), data=data,
                                          train=_train(learning_rate=1e-3, max_steps=10)))
    for stage, recipe, keys in (("rm", "rm", ("loss", "report/mean_margin", "report/accuracy")),
                                ("dpo", "dpo", ("loss", "rewards/margins", "eval/rewards/margins"))):
        for key in keys:
            cpu = _losses(tmp_path / "cpu" / stage, recipe, key)
            dev = _losses(tmp_path / "dev" / stage, recipe, key)
            assert cpu and dev == pytest.approx(cpu, abs=2e-3), (stage, key)


@pytest.fixture
def sft_dir(tmp_path, on):
    from tether.recipes.sft import train_sft

    on("cpu")
    cfg = SFTConfig(run_dir=str(tmp_path / "sft"), model=tiny_model_config(),
                    data=DataConfig(train_file=str(DATA / "sft.jsonl"), max_length=256, eval_fraction=0.0),
                    train=_train(learning_rate=3e-3, max_steps=60, save_final_checkpoint=False))
    return str(train_sft(cfg).model_dir)


def test_grpo_and_ppo_raise_the_score_on_the_device(tmp_path, sft_dir, on):
    """The online recipes on the device: rollouts, the reference, the value model and the updates all there."""
    from tether.recipes.grpo import train_grpo
    from tether.recipes.ppo import train_ppo

    on(DEVICE)
    prompts = DataConfig(train_file=str(DATA / "prompts.jsonl"))
    grpo = train_grpo(GRPOConfig(run_dir=str(tmp_path / "grpo"), model=ModelConfig(name_or_path=sft_dir),
                                 reward="tether.tasks.toy:period_density", data=prompts, group_size=4,
                                 prompts_per_iteration=4, max_new_tokens=12, num_iterations=12, learning_rate=2e-3,
                                 kl_limit=50.0))
    scores = [h["reward/score_mean"] for h in grpo.history]
    assert len(scores) == 12 and sum(scores[-4:]) / 4 > sum(scores[:4]) / 4 + 0.3
    ppo = train_ppo(PPOConfig(run_dir=str(tmp_path / "ppo"), model=ModelConfig(name_or_path=sft_dir),
                              reward="tether.tasks.toy:period_density", data=prompts, max_new_tokens=12,
                              num_iterations=24, rollout_batch_size=16, minibatch_size=8, learning_rate=2e-3,
                              value_learning_rate=1e-4, kl_coef=0.2, target_kl=3.0, kl_horizon=16))
    scores = [h["reward/score_mean"] for h in ppo.history]
    assert len(scores) == 24 and sum(scores[-4:]) / 4 > sum(scores[:4]) / 4 + 3.0  # as on the CPU (test_ppo.py)
    assert all(0 < h["objective/kl"] < 12.0 for h in ppo.history[1:])


def test_ppo_first_iteration_on_the_device_matches_the_cpu(tmp_path, sft_dir, on):
    """Iteration 1 samples from the same per-row CPU streams on both devices: the same responses (the logits
    differ by rounding only), hence the same score, KL (0: policy == reference) and near-equal losses."""
    from tether.recipes.ppo import train_ppo

    def run(where, device):
        on(device)
        return train_ppo(PPOConfig(run_dir=str(tmp_path / where), model=ModelConfig(name_or_path=sft_dir),
                                   reward="tether.tasks.toy:period_density",
                                   data=DataConfig(train_file=str(DATA / "prompts.jsonl")), max_new_tokens=12,
                                   num_iterations=1, rollout_batch_size=16, minibatch_size=8)).history[0]

    cpu, dev = run("cpu", "cpu"), run("dev", DEVICE)
    assert dev["reward/score_mean"] == pytest.approx(cpu["reward/score_mean"], abs=1e-6)
    assert dev["response/length_mean"] == cpu["response/length_mean"]
    for key in ("objective/kl", "value/loss", "policy/approx_kl"):
        assert dev[key] == pytest.approx(cpu[key], abs=1e-3), key
