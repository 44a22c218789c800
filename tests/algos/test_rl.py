"""RL maths (PPO / GRPO / RLOO / REINFORCE++) at points worked out by hand."""

import math

import pytest
import torch

from tether.algos.advantages import (
    broadcast_to_tokens,
    gae,
    grpo_advantages,
    reinforce_pp_advantages,
    returns_to_go,
    rloo_advantages,
)
from tether.algos.kl import AdaptiveKLController, FixedKLController, kl_penalty
from tether.algos.losses.ppo import aggregate, explained_variance, policy_loss, value_loss
from tether.algos.rewards import RunningMoments, clip_scores, kl_shaped_rewards, place_score


def t(*rows):
    return torch.tensor(rows, dtype=torch.float32)


def test_gae_by_hand():
    rewards, values, mask = t([0.0, 1.0, 0.0]), t([0.5, 0.2, 9.0]), t([1, 1, 0])
    adv, ret = gae(rewards, values, mask, gamma=1.0, lam=0.5)
    # t=1 is the last real token: δ1 = 1 − 0.2 = 0.8 (no bootstrap from the padding's value 9.0)
    # t=0: δ0 = 0 + 0.2 − 0.5 = −0.3, A0 = −0.3 + 0.5·0.8 = 0.1
    assert adv[0].tolist() == pytest.approx([0.1, 0.8, 0.0], abs=1e-6)
    assert ret[0].tolist() == pytest.approx([0.6, 1.0, 0.0], abs=1e-6)
    adv, _ = gae(rewards, values, mask, gamma=0.9, lam=0.5)
    assert adv[0, 0].item() == pytest.approx(0.9 * 0.2 - 0.5 + 0.9 * 0.5 * 0.8, abs=1e-6)


def test_gae_with_lambda_one_is_return_minus_value():
    rewards, values, mask = t([0.1, -0.2, 1.0, 0.0]), t([0.3, 0.4, 0.5, 0.6]), t([1, 1, 1, 0])
    adv, _ = gae(rewards, values, mask, gamma=1.0, lam=1.0)
    expected = [0.9 - 0.3, 0.8 - 0.4, 1.0 - 0.5, 0.0]
    assert adv[0].tolist() == pytest.approx(expected, abs=1e-6)


def test_group_baselines_by_hand():
    scores = torch.tensor([1.0, 2.0, 3.0, 0.0, 0.0, 6.0])
    std2 = math.sqrt((4 + 4 + 16) / 2)
    assert grpo_advantages(scores, 3).tolist() == pytest.approx([-1, 0, 1, -2 / std2, -2 / std2, 4 / std2], abs=1e-5)
    assert grpo_advantages(scores, 3, scale_by_std=False).tolist() == pytest.approx([-1, 0, 1, -2, -2, 4])
    assert rloo_advantages(scores, 3).tolist() == pytest.approx([-1.5, 0.0, 1.5, -3.0, -3.0, 6.0])
    with pytest.raises(ValueError, match="groups of 4"):
        rloo_advantages(scores, 4)


def test_returns_to_go_and_reinforce_pp():
    rewards, mask = t([1.0, 2.0, 3.0]), t([1, 1, 0])
    assert returns_to_go(rewards, mask, gamma=0.5).tolist() == [[2.0, 2.0, 0.0]]
    rewards, mask = t([1.0, 2.0, 0.0], [3.0, 0.0, 0.0]), t([1, 1, 0], [1, 0, 0])
    adv = reinforce_pp_advantages(rewards, mask)
    # returns 3, 2, 3 → mean 8/3, population std sqrt(2/9)
    std = math.sqrt(((3 - 8 / 3) ** 2 * 2 + (2 - 8 / 3) ** 2) / 3)
    assert adv[0, 0].item() == pytest.approx((3 - 8 / 3) / std, abs=1e-4)
    assert adv[0, 1].item() == pytest.approx((2 - 8 / 3) / std, abs=1e-4)
    assert adv[0, 2].item() == 0.0
    assert broadcast_to_tokens(torch.tensor([2.0, -1.0]), mask).tolist() == [[2, 2, 0], [-1, 0, 0]]


def test_place_score_uses_the_mask_not_token_ids():
    mask = t([1, 1, 0], [1, 1, 1])
    assert place_score(torch.tensor([5.0, 7.0]), mask).tolist() == [[0, 5, 0], [0, 0, 7]]
    with pytest.raises(ValueError, match="no real tokens"):
        place_score(torch.tensor([1.0]), t([0, 0]))
    shaped = kl_shaped_rewards(torch.tensor([5.0]), t([0.5, 1.0, 9.0]), t([1, 1, 0]), kl_coef=0.1)
    assert shaped[0].tolist() == pytest.approx([-0.05, 5.0 - 0.1, 0.0], abs=1e-6)
    assert clip_scores(torch.tensor([-7.0, 2.0, 9.0]), 5.0).tolist() == [-5.0, 2.0, 5.0]


def test_kl_estimators_by_hand():
    logps, ref = torch.tensor([-1.0]), torch.tensor([-1.5])
    assert kl_penalty(logps, ref, "k1").item() == pytest.approx(0.5)
    assert kl_penalty(logps, ref, "k2").item() == pytest.approx(0.125)
    assert kl_penalty(logps, ref, "k3").item() == pytest.approx(math.exp(-0.5) - 1 + 0.5, abs=1e-6)
    with pytest.raises(ValueError, match="k1, k2, k3"):
        kl_penalty(logps, ref, "k4")


def test_adaptive_kl_controller_by_hand():
    ctl = AdaptiveKLController(init_kl_coef=0.1, target=6.0, horizon=10000)
    ctl.update(current_kl=9.0, n_steps=256)  # error 0.5 clipped to 0.2
    assert ctl.value == pytest.approx(0.1 * (1 + 0.2 * 256 / 10000))
    before = ctl.value
    ctl.update(current_kl=5.4, n_steps=256)  # error −0.1, not clipped
    assert ctl.value == pytest.approx(before * (1 - 0.1 * 256 / 10000))
    restored = AdaptiveKLController(1.0, 1.0, 1)
    restored.load_state_dict(ctl.state_dict())
    assert restored.value == ctl.value and restored.target == 6.0 and restored.horizon == 10000
    assert FixedKLController(0.05).update(100.0, 10) == 0.05


def test_running_moments_match_the_whole_batch():
    moments = RunningMoments()
    moments.update(torch.tensor([1.0, 2.0, 3.0]))
    moments.update(torch.tensor([4.0, 5.0]))
    assert moments.mean == pytest.approx(3.0) and moments.var == pytest.approx(2.0)
    assert moments.normalize(torch.tensor([3.0 + math.sqrt(2.0)])).item() == pytest.approx(1.0, abs=1e-6)


def test_policy_loss_by_hand():
    mask = t([1])
    loss, metrics = policy_loss(t([-1.0]), t([-1.2]), t([2.0]), mask, clip_range=0.2)
    # ratio e^0.2 = 1.2214 > 1.2: the clipped term −2·1.2 is the max
    assert loss.item() == pytest.approx(-2.4, abs=1e-6)
    assert metrics["policy/clip_frac"].item() == 1.0
    loss, metrics = policy_loss(t([-1.0]), t([-1.2]), t([-1.0]), mask, clip_range=0.2)
    assert loss.item() == pytest.approx(math.exp(0.2), abs=1e-6) and metrics["policy/clip_frac"].item() == 0.0
    loss, _ = policy_loss(t([0.0]), t([-2.0]), t([-1.0]), mask, clip_range=0.2, dual_clip=3.0)
    assert loss.item() == pytest.approx(3.0)  # e^2 = 7.39 bounded by c·|A| = 3


def test_approx_kl_is_k3_of_kl_old_to_new_on_old_samples():
    """Samples come from π_old, δ = log π − log π_old: KL(π_old‖π) ≈ mean(e^δ − 1 − δ) (Schulman's k3).
    Catches the reversed estimator e^{−δ} − 1 + δ (which gives 16.09 for δ = −3)."""
    _, metrics = policy_loss(t([-4.0]), t([-1.0]), t([1.0]), t([1]))
    assert metrics["policy/approx_kl"].item() == pytest.approx(2.049787, abs=1e-5)  # e^−3 − 1 + 3
    _, metrics = policy_loss(t([-0.9, -0.5, 7.0]), t([-1.0, -1.0, 0.0]), t([1.0, 1.0, 1.0]), t([1, 1, 0]))
    # δ = 0.1 → 0.0051709, δ = 0.5 → 0.1487213 (the padded δ = 7 is ignored): mean 0.0769461
    assert metrics["policy/approx_kl"].item() == pytest.approx(0.0769461, abs=1e-6)


def test_policy_loss_gradient_is_minus_advantage_times_ratio_where_unclipped():
    """∂loss/∂log π = −A·ρ / N on unclipped tokens and 0 on clipped or padded ones (N = 3 real tokens).
    Catches a detached ratio (right loss, no gradient) and a clip applied on the wrong side."""
    logps = torch.tensor([[-0.9, -0.5, -1.5, 3.0]], requires_grad=True)
    old_logps, advantages, mask = t([-1.0, -1.0, -1.0, 0.0]), t([2.0, 1.0, -1.0, 5.0]), t([1, 1, 1, 0])
    loss, metrics = policy_loss(logps, old_logps, advantages, mask, clip_range=0.2)
    # token 0: ρ = e^0.1 = 1.10517 inside the clip, A = 2: −2·1.10517 = −2.21034
    # token 1: ρ = e^0.5 = 1.64872 > 1.2, A = 1 > 0: the clipped −1.2 is the max (no gradient)
    # token 2: ρ = e^−0.5 = 0.60653 < 0.8, A = −1 < 0: max(0.60653, 0.8) = 0.8, clipped (no gradient)
    assert loss.item() == pytest.approx((-2.21034 - 1.2 + 0.8) / 3, abs=1e-5)
    assert metrics["policy/clip_frac"].item() == pytest.approx(2 / 3)
    loss.backward()
    assert logps.grad[0].tolist() == pytest.approx([-2 * 1.105171 / 3, 0.0, 0.0, 0.0], abs=1e-6)


def test_value_loss_by_hand_with_padding_and_both_branches():
    values = torch.tensor([[1.0, 1.0, 0.3, 100.0]], requires_grad=True)
    old_values, returns, mask = t([0.5, 0.5, 0.4, 0.0]), t([2.0, 0.0, 0.3, 0.0]), t([1, 1, 1, 0])
    loss, metrics = value_loss(values, old_values, returns, mask, clip_range=0.2)
    # token 0: clipped V = 0.7: max((1 − 2)², (0.7 − 2)²) = 1.69, the clipped branch wins
    # token 1: clipped V = 0.7: max((1 − 0)², (0.7 − 0)²) = 1.0, the unclipped branch wins
    # token 2: |0.3 − 0.4| < 0.2, V = R: 0; token 3 is padding (V = 100 ignored)
    assert loss.item() == pytest.approx(0.5 * (1.69 + 1.0 + 0.0) / 3, abs=1e-6)
    assert metrics["value/clip_frac"].item() == pytest.approx(1 / 3)
    loss.backward()
    # the clipped branch's V is a constant (V − V_old = 0.5 clamped to 0.2): only token 1 has a gradient, (V − R)/N
    assert values.grad[0].tolist() == pytest.approx([0.0, 1 / 3, 0.0, 0.0], abs=1e-6)


def test_explained_variance_by_hand():
    returns, mask = t([1.0, 2.0, 3.0, 0.0]), t([1, 1, 1, 0])
    assert explained_variance(returns, returns, mask).item() == pytest.approx(1.0)
    # a constant offset is fully explained: Var(R − V) = 0 (catches an uncentred residual, which gives 1 − 1/Var R)
    assert explained_variance(returns + 1.0, returns, mask).item() == pytest.approx(1.0, abs=1e-6)
    assert explained_variance(torch.full((1, 4), 2.0), returns, mask).item() == pytest.approx(0.0, abs=1e-6)
    # residual (−0.5, 0, 0.5): Var = 1/6, Var R = 2/3 → 1 − 0.25 (the padded value 50 is ignored)
    values = t([1.5, 2.0, 2.5, 50.0])
    assert explained_variance(values, returns, mask).item() == pytest.approx(0.75, abs=1e-6)


def test_aggregation_modes_by_hand():
    per_token, mask = t([1.0, 2.0, 3.0], [4.0, 0.0, 0.0]), t([1, 1, 1], [1, 0, 0])
    assert aggregate(per_token, mask, "token_mean").item() == pytest.approx(2.5)
    assert aggregate(per_token, mask, "seq_mean_token_mean").item() == pytest.approx(3.0)
    assert aggregate(per_token, mask, "seq_mean_token_sum_norm").item() == pytest.approx(10 / 2 / 3)


def test_soft_overlong_penalty_is_zero_then_falls_linearly_over_the_buffer():
    from tether.algos.rewards import soft_overlong_penalty

    # budget 20, buffer 4: free up to 16 tokens, then −1/4 per token down to −1 at 20 (and beyond)
    lengths = torch.tensor([3, 16, 17, 18, 20, 25])
    assert soft_overlong_penalty(lengths, 20, 4).tolist() == pytest.approx([0.0, 0.0, -0.25, -0.5, -1.0, -1.0])
    assert soft_overlong_penalty(lengths, 20, 4, factor=0.5).tolist() == pytest.approx([0, 0, -0.125, -0.25, -0.5, -0.5])
    assert soft_overlong_penalty(lengths, 20, 0).tolist() == [0.0] * 6
    with pytest.raises(ValueError, match="longer than the budget"):
        soft_overlong_penalty(lengths, 20, 21)
