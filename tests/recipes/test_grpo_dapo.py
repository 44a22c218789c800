"""DAPO's sampling and shaping in `tether grpo` and the rollout/trainer mismatch correction, on the tiny model:
the update's loss against a hand-worked one (truncated responses masked; importance weights from known log-prob
offsets), dynamic sampling replacing groups whose scores are all equal, and rollout/mismatch_kl rising with the
sampling engine's error."""

import json
import math

import pytest
import torch

from tests.helpers import tiny_model_config, trained_advantages
from tether.config import DataConfig, GenerationBackendConfig, GRPOConfig
from tether.models.loading import load_causal_lm, load_tokenizer
from tether.recipes.grpo import grpo_update, train_grpo
from tether.rollout.experience import Experience
from tether.rollout.generation import Rollout, concat_rollouts, response_logprobs


@pytest.fixture(scope="module")
def tiny():
    cfg = tiny_model_config()
    tokenizer = load_tokenizer(cfg.name_or_path, cfg)
    return load_causal_lm(cfg, seed=0, pad_token_id=tokenizer.pad_token_id), tokenizer


def test_concat_rollouts_pads_prompts_left_and_responses_right():
    a = Rollout(torch.tensor([[5, 6]]), torch.tensor([[1, 1]]), torch.tensor([[7]]), torch.tensor([[1]]),
                torch.tensor([True]), torch.tensor([[-0.5]]))
    b = Rollout(torch.tensor([[8, 9, 10]]), torch.tensor([[1, 1, 1]]), torch.tensor([[11, 12]]),
                torch.tensor([[1, 1]]), torch.tensor([False]), torch.tensor([[-1.0, -2.0]]))
    out = concat_rollouts([a, b], pad_token_id=0)
    assert out.prompt_ids.tolist() == [[0, 5, 6], [8, 9, 10]] and out.prompt_mask.tolist() == [[0, 1, 1], [1, 1, 1]]
    assert out.response_ids.tolist() == [[7, 0], [11, 12]] and out.response_mask.tolist() == [[1, 0], [1, 1]]
    assert out.ended_with_eos.tolist() == [True, False]
    assert out.sampler_logps.tolist() == [[-0.5, 0.0], [-1.0, -2.0]]
    assert concat_rollouts([a, Rollout(*[getattr(b, f) for f in ("prompt_ids", "prompt_mask", "response_ids",
                                                                 "response_mask", "ended_with_eos")])],
                           0).sampler_logps is None  # one part without the sampler's log-probs: none at all


# Three responses: row 0 ends with EOS (3 tokens), row 1 is cut at the budget (4 tokens), row 2 ends (2 tokens).
MASK = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 0, 0]])
ENDED = torch.tensor([True, False, True])
ADV = torch.tensor([[1.0] * 4, [-2.0] * 4, [0.5] * 4])  # a sequence's advantage on each of its tokens
LOG_RHO = torch.tensor([[0.1, 1.0, -1.0, 0.0], [0.2, 0.2, 0.2, 0.2], [0.3, -0.2, 0.0, 0.0]])  # log π_old − log π_sampler


def hand_loss(kept: list[list[int]], weights: list[list[float]]) -> float:
    """One on-policy step (ratio 1, no clipping): the token mean of −A·w over the kept tokens."""
    num = sum(-ADV[b, t].item() * weights[b][t] for b in range(3) for t in range(4) if kept[b][t])
    return num / sum(map(sum, kept))


W_TRUNC = [[math.exp(0.1), 2.0, math.exp(-1.0), 0], [math.exp(0.2)] * 4, [math.exp(0.3), math.exp(-0.2), 0, 0]]
ALL = MASK.tolist()


@pytest.mark.parametrize("mask_truncated, mode, kept, weights", [
    (False, "none", ALL, [[1.0] * 4] * 3),
    (True, "none", [[1, 1, 1, 0], [0] * 4, [1, 1, 0, 0]], [[1.0] * 4] * 3),  # row 1 was cut: out of the loss
    (False, "token_truncate", ALL, W_TRUNC),  # min(ρ, 2): e^1 capped at 2
    (False, "token_mask", [[1, 0, 0, 0], [1, 1, 1, 1], [1, 1, 0, 0]], W_TRUNC),  # ρ = e^±1 outside [1/2, 2]: dropped
    # per response: ∏ρ = e^0.1, e^0.8 (capped at 2), e^0.1
    (False, "sequence_truncate", ALL, [[math.exp(0.1)] * 4, [2.0] * 4, [math.exp(0.1)] * 4]),
    (True, "sequence_mask", [[1, 1, 1, 0], [0] * 4, [1, 1, 0, 0]], [[math.exp(0.1)] * 4, [0] * 4,
                                                                      [math.exp(0.1)] * 4]),
])
def test_the_update_loss_masks_and_weights_tokens_as_worked_by_hand(tiny, mask_truncated, mode, kept, weights):
    policy, tokenizer = tiny
    torch.manual_seed(0)
    rollout = Rollout(torch.randint(100, 1000, (3, 2)), torch.ones(3, 2, dtype=torch.long),
                      torch.randint(100, 1000, (3, 4)) * MASK, MASK, ENDED)
    trainer = response_logprobs(policy, rollout, 1.0)  # what the update's forward gives (the old log-probs: deferred)
    rollout.sampler_logps = ((trainer - LOG_RHO) * MASK).detach()
    cfg = GRPOConfig(model=tiny_model_config(), group_size=3, minibatch_size=3, learning_rate=0.0, kl_coef=0.0,
                     mask_truncated=mask_truncated, mismatch_correction=mode, max_new_tokens=4)
    experience = Experience(rollout, torch.zeros(3, 4), None, ADV.clone())
    optimizer = torch.optim.SGD(policy.parameters(), lr=0.0)
    metrics = grpo_update(cfg, policy, optimizer, experience)
    assert metrics["policy/loss"] == pytest.approx(hand_loss(kept, weights), rel=1e-5)
    if mode != "none":
        dropped_or_capped = {"token_truncate": 1, "token_mask": 2, "sequence_truncate": 4, "sequence_mask": 4}[mode]
        assert metrics["rollout/mismatch_corrected_frac"] == pytest.approx(dropped_or_capped / 9)
    assert metrics["rollout/mismatch_kl"] > 0  # logged whenever the sampler reports log-probs


def flat_or_by_tokens(prompts, responses, response_ids, rows):
    """0 for every response to a prompt marked flat (its group's scores all equal), else the sum of its token ids
    (different for different samples)."""
    return [0.0 if row.get("flat") else float(sum(ids)) for row, ids in zip(rows, response_ids)]


def _prompts(tmp_path, n=12):
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"Question {i}: say something about {i}.", "flat": i % 2 == 0}) + "\n"
                            for i in range(n)), encoding="utf-8")
    return str(path)


def _grpo(tmp_path, **overrides):
    settings = dict(run_dir=str(tmp_path / "run"), model=tiny_model_config(),
                    reward="tests.recipes.test_grpo_dapo:flat_or_by_tokens", data=DataConfig(train_file=_prompts(tmp_path)),
                    max_new_tokens=8, num_iterations=2, group_size=3, prompts_per_iteration=4, minibatch_size=12,
                    learning_rate=1e-3, seed=3)
    return GRPOConfig(**{**settings, **overrides})


def test_dynamic_sampling_trains_only_on_groups_whose_scores_differ(tmp_path, monkeypatch):
    trained = trained_advantages(monkeypatch)
    plain = train_grpo(_grpo(tmp_path / "plain")).history
    flat_groups = [int((a.view(4, 3, -1).abs().sum((1, 2)) == 0).sum()) for a in trained]
    assert sum(flat_groups) > 0 and "sampling/extra_rounds" not in plain[0]  # the control: flat groups are trained on

    trained.clear()
    history = train_grpo(_grpo(tmp_path / "dynamic", dynamic_sampling=True)).history
    for advantages, row in zip(trained, history):
        assert advantages.shape[0] == 12  # 4 groups of 3, all informative
        assert (advantages.view(4, 3, -1).abs().sum((1, 2)) > 0).all()
        assert row["sampling/extra_rounds"] >= 1 and row["sampling/dropped_groups"] >= 1
        assert row["sampling/trained_groups"] == 4


def test_dynamic_sampling_gives_up_after_its_rounds(tmp_path):
    flat = tmp_path / "flat.jsonl"
    flat.write_text("".join(json.dumps({"prompt": f"Q{i}?", "flat": True}) + "\n" for i in range(6)), encoding="utf-8")
    history = train_grpo(_grpo(tmp_path, data=DataConfig(train_file=str(flat)), dynamic_sampling=True,
                               dynamic_sampling_max_rounds=2, num_iterations=1)).history
    assert history[0]["sampling/extra_rounds"] == 2 and history[0]["sampling/dropped_groups"] == 3 * 4


def test_mismatch_kl_rises_with_the_engines_logprob_error(tmp_path, monkeypatch):
    from tests.rollout import fake_vllm

    fake_vllm.install(monkeypatch)
    kl = []
    for noise in (0.0, 0.1, 0.5):
        original = fake_vllm.LLM.__init__

        def noisy(self, *args, noise=noise, **kwargs):
            original(self, *args, **kwargs)
            self.logprob_noise = noise

        monkeypatch.setattr(fake_vllm.LLM, "__init__", noisy)
        history = train_grpo(_grpo(tmp_path / f"n{noise}", num_iterations=1, learning_rate=0.0,
                                   mismatch_correction="token_truncate",
                                   generation=GenerationBackendConfig(backend="vllm"))).history
        monkeypatch.setattr(fake_vllm.LLM, "__init__", original)
        kl.append(history[0]["rollout/mismatch_kl"])
        assert 0.0 <= history[0]["rollout/mismatch_corrected_frac"] <= 1.0
    # k3 of a N(0, σ²) log-ratio: E[e^δ − 1 − δ] = e^{σ²/2} − 1 → 0, 0.005, 0.133
    assert kl[0] < 1e-5 < kl[1] < kl[2]
    assert kl[1] == pytest.approx(math.exp(0.1 ** 2 / 2) - 1, rel=0.5)
    assert kl[2] == pytest.approx(math.exp(0.5 ** 2 / 2) - 1, rel=0.5)
