"""Exact resume of the sampling recipes: a run cut short and resumed ends where the uninterrupted run ends.

(SFT / RM / DPO: tests/recipes/test_loop.py; PPO: tests/recipes/test_ppo.py.)
"""

import json

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers import EXAMPLES, crash_training_rollout, tiny_model_config
from tether.config import DataConfig, GRPOConfig, HeldOutConfig, RejectionSamplingConfig, TrainConfig
from tether.utils.logging import read_metrics

DATA = EXAMPLES / "data"
# a reward with spread on a random policy's text (every group has a non-zero std), so every update moves the weights
REWARD = "tether.tasks.toy:short_and_ended"


def _weights(model_dir):
    return load_file(str(model_dir / "model.safetensors"))


def _assert_same_weights(a, b, atol=1e-6):
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name], b[name], atol=atol, rtol=0), name


def _grpo(run_dir, **extra):
    # two update epochs over two minibatches: the minibatch shuffle draws from the training RNG too
    base = dict(run_dir=str(run_dir), model=tiny_model_config(), reward=REWARD,
                data=DataConfig(train_file=str(DATA / "prompts.jsonl")), group_size=4, prompts_per_iteration=4,
                max_new_tokens=8, num_iterations=4, minibatch_size=8, update_epochs=2, learning_rate=3e-3,
                kl_limit=1e9, report_to=[],
                heldout=HeldOutConfig(gold="tether.tasks.toy:moderate_periods", prompts_file=str(DATA / "prompts.jsonl"),
                                      max_prompts=4, every=2))
    return GRPOConfig(**{**base, **extra})


def test_resumed_grpo_reproduces_the_uninterrupted_run(tmp_path, monkeypatch):
    from tether.recipes.grpo import train_grpo

    full = train_grpo(_grpo(tmp_path / "full"))
    # killed during iteration 3 (training rollouts have 16 responses, held-out ones 4), after the checkpoint at 2
    crash_training_rollout(monkeypatch, rollout_size=16, at=3)
    with pytest.raises(KeyboardInterrupt):
        train_grpo(_grpo(tmp_path / "cut", save_every=2))
    assert [p.name for p in (tmp_path / "cut" / "checkpoints" / "grpo").iterdir()] == ["step-2"]
    monkeypatch.undo()  # the same command again, uninterrupted
    resumed = train_grpo(_grpo(tmp_path / "cut", save_every=2))

    assert resumed.iterations == full.iterations == 4 and len(resumed.history) == 2
    for key in ("reward/score_mean", "reward/group_std_mean", "objective/kl", "response/length_mean", "policy/loss",
                "policy/kl_loss", "policy/clip_frac", "policy/approx_kl"):
        assert [h[key] for h in resumed.history] == pytest.approx([h[key] for h in full.history[2:]], abs=1e-5), key
    for key in ("heldout/gold_mean", "heldout/proxy_mean", "heldout/kl", "heldout/alarms"):  # evaluated at 2 and 4
        assert resumed.history[-1][key] == pytest.approx(full.history[-1][key], abs=1e-5), key
    # the run really learns (so equal weights are not two untouched copies of the start)
    # (k3, ≥ 0 and 0 only at the reference: the k1 estimate of a small KL can be negative)
    assert full.history[-1]["policy/kl_loss"] > 1e-4, full.history[-1]["policy/kl_loss"]
    # 1e-5, not 1e-6: MKL's sums may round differently with the memory layout of a reloaded model, and Adam turns
    # a rounding-level difference in a near-zero gradient into one in the update (seen: 1.1e-6 on 1 of the 3.2M
    # embedding weights); one Adam step moves a weight by up to lr = 3e-3, so a lost or repeated step still fails
    _assert_same_weights(_weights(resumed.model_dir), _weights(full.model_dir), atol=1e-5)
    # the held-out curve and the alarm's state carried across the cut
    full_curve = json.loads((tmp_path / "full" / "grpo_heldout.json").read_text())
    cut_curve = json.loads((tmp_path / "cut" / "grpo_heldout.json").read_text())
    assert [p["iteration"] for p in cut_curve["points"]] == [0, 2, 4]
    for field in ("gold", "proxy", "kl", "length"):
        assert [p[field] for p in cut_curve["points"]] == pytest.approx([p[field] for p in full_curve["points"]],
                                                                        abs=1e-6), field


def _rejection(run_dir):
    return RejectionSamplingConfig(run_dir=str(run_dir), model=tiny_model_config(), reward=REWARD,
                                   data=DataConfig(train_file=str(DATA / "prompts.jsonl")), rounds=2, n=3,
                                   max_new_tokens=8, max_prompts=8,
                                   train=TrainConfig(learning_rate=3e-3, max_steps=3, batch_size=4,
                                                     save_final_checkpoint=False, report_to=[]))


def test_rejection_sampling_resumes_after_its_last_finished_round(tmp_path, monkeypatch):
    from tether.recipes import best_of_n as bon
    from tether.recipes import sft as sft_module

    full = bon.run_rejection_sampling(_rejection(tmp_path / "full"))
    calls = {"sample": 0, "sft": 0}
    original_sample, original_sft = bon.sample_and_score, sft_module.train_sft

    def sample(*args, crash_at=None, **kwargs):
        calls["sample"] += 1
        if calls["sample"] == crash_at:
            raise KeyboardInterrupt  # killed while sampling round 2, after round 1 finished
        return original_sample(*args, **kwargs)

    def sft(*args, **kwargs):
        calls["sft"] += 1
        return original_sft(*args, **kwargs)

    monkeypatch.setattr(sft_module, "train_sft", sft)
    monkeypatch.setattr(bon, "sample_and_score", lambda *a, **k: sample(*a, crash_at=2, **k))
    with pytest.raises(KeyboardInterrupt):
        bon.run_rejection_sampling(_rejection(tmp_path / "cut"))
    assert calls == {"sample": 2, "sft": 1} and (tmp_path / "cut" / "round-1" / "model").is_dir()

    calls.update(sample=0, sft=0)
    monkeypatch.setattr(bon, "sample_and_score", sample)
    resumed = bon.run_rejection_sampling(_rejection(tmp_path / "cut"))
    assert calls == {"sample": 1, "sft": 1}  # round 1 was neither sampled nor trained again
    assert resumed.model_dir == tmp_path / "cut" / "round-2" / "model"
    _assert_same_weights(_weights(resumed.model_dir), _weights(full.model_dir))
    # round 2 really trained (so equal weights are not round 1's model twice)
    assert not torch.equal(_weights(full.model_dir)["model.embed_tokens.weight"],
                           _weights(tmp_path / "full" / "round-1" / "model")["model.embed_tokens.weight"])
    assert ((tmp_path / "cut" / "round-2" / "best.jsonl").read_text()
            == (tmp_path / "full" / "round-2" / "best.jsonl").read_text())
    for key in ("reward/sample_mean", "reward/best_mean", "rejection/kept"):
        assert [r[key] for r in resumed.rounds] == pytest.approx([r[key] for r in full.rounds], abs=1e-5), key
    logged = [r["step"] for r in read_metrics(tmp_path / "cut", "rejection-sample")]
    assert logged == [1, 2]  # each round logged once across the two runs

    # a finished run re-run does nothing and names the same final policy
    calls.update(sample=0, sft=0)
    again = bon.run_rejection_sampling(_rejection(tmp_path / "full"))
    assert calls == {"sample": 0, "sft": 0} and again.model_dir == full.model_dir
    assert [r["reward/best_mean"] for r in again.rounds] == [r["reward/best_mean"] for r in full.rounds]
