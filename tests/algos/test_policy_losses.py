"""The registered policy losses against values worked by hand, including which tokens are clipped and which keep a
gradient. One response of four tokens with ratios ρ = [1.5, 0.5, 1.25, 1.0] and advantages [+1, +1, +1, −1]."""

import math

import pytest
import torch

from tether.algos.advantages import advantage_estimator
from tether.algos.losses.ppo import POLICY_LOSSES, policy_loss_spec

OLD = torch.full((1, 4), math.log(0.5))
RATIOS = torch.tensor([[1.5, 0.5, 1.25, 1.0]])
ADV = torch.tensor([[1.0, 1.0, 1.0, -1.0]])
MASK = torch.ones(1, 4)


def run(name, **options):
    logps = (OLD + torch.log(RATIOS)).clone().requires_grad_(True)
    spec = policy_loss_spec(name)
    loss, metrics = spec.fn(logps, OLD, ADV, MASK, aggregation=spec.aggregation or "token_mean", **options)
    loss.backward()
    return loss.item(), logps.grad[0].tolist(), metrics


def test_ppo_clip_clips_both_sides_at_epsilon_and_zeroes_the_gradient_of_clipped_tokens():
    # tokens 0 and 2 (ρ > 1.2 with A > 0) are clipped: −1.2 each; token 1: −0.5; token 3: +1.0
    loss, grad, metrics = run("ppo_clip", clip_range=0.2)
    assert loss == pytest.approx((-1.2 - 0.5 - 1.2 + 1.0) / 4)
    assert grad == pytest.approx([0.0, -0.5 / 4, 0.0, 1.0 / 4])  # d/dlog π = −A·ρ/4 where not clipped
    assert metrics["policy/clip_frac"].item() == pytest.approx(0.5)


def test_dapo_clips_higher_so_token_2_keeps_its_gradient():
    # ε_high = 0.28 (the loss's usual value): ρ = 1.25 < 1.28 is no longer clipped; ρ = 1.5 is, at 1.28
    loss, grad, metrics = run("dapo", clip_range=0.2, clip_range_high=policy_loss_spec("dapo").clip_range_high)
    assert policy_loss_spec("dapo").clip_range_high == 0.28
    assert loss == pytest.approx((-1.28 - 0.5 - 1.25 + 1.0) / 4)
    assert grad == pytest.approx([0.0, -0.5 / 4, -1.25 / 4, 1.0 / 4])
    assert metrics["policy/clip_frac"].item() == pytest.approx(0.25)


def test_cispo_bounds_the_weight_but_every_token_keeps_a_gradient():
    # weights clip(ρ, 0.8, 1.28) = [1.28, 0.8, 1.25, 1.0] (tokens 0 and 1 clipped), stop-gradient;
    # loss = mean of −w·A·log π with log π = log(0.5·ρ) = [log .75, log .25, log .625, log .5]
    loss, grad, metrics = run("cispo", clip_range=0.2, clip_range_high=0.28)
    w = [1.28, 0.8, 1.25, 1.0]
    logp = [math.log(0.75), math.log(0.25), math.log(0.625), math.log(0.5)]
    a = [1.0, 1.0, 1.0, -1.0]
    assert loss == pytest.approx(sum(-wi * ai * li for wi, ai, li in zip(w, a, logp)) / 4, abs=1e-6)
    assert grad == pytest.approx([-wi * ai / 4 for wi, ai in zip(w, a)])  # token 0 is clipped and still learns
    assert metrics["policy/clip_frac"].item() == pytest.approx(0.5)


def test_cispo_with_clip_range_one_has_no_lower_bound():
    _, grad, metrics = run("cispo", clip_range=1.0, clip_range_high=0.28)
    assert grad[1] == pytest.approx(-0.5 / 4)  # ρ = 0.5 kept as it is
    assert metrics["policy/clip_frac"].item() == pytest.approx(0.25)


def test_gspo_takes_one_length_normalised_ratio_per_response_and_clips_it():
    # response 0: token log-ratios [0.3, −0.1, 0.1] → s = e^0.1 = 1.10517, A = +1 → clipped at 1 + 4e-4;
    # response 1 (2 tokens and padding): [2e-4, 4e-4] → s = e^3e-4, A = −2 → inside [1 − 3e-4, 1 + 4e-4]
    old = torch.zeros(2, 3)
    logps = torch.tensor([[0.3, -0.1, 0.1], [2e-4, 4e-4, 9.0]], requires_grad=True)  # 9.0 sits on padding
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    adv = torch.tensor([[1.0, 1.0, 1.0], [-2.0, -2.0, 0.0]])
    spec = policy_loss_spec("gspo")
    loss, metrics = spec.fn(logps, old, adv, mask, clip_range=3e-4, clip_range_high=4e-4,
                            aggregation=spec.aggregation)
    loss.backward()
    s1 = math.exp(3e-4)
    assert loss.item() == pytest.approx((-(1 + 4e-4) + 2 * s1) / 2, abs=1e-6)  # the mean over the two responses
    assert logps.grad[0].tolist() == pytest.approx([0.0, 0.0, 0.0])  # a clipped response has no gradient
    # −A·s·(1/|y|)/2 on each real token of response 1, nothing on its padding
    assert logps.grad[1].tolist() == pytest.approx([2 * s1 / 2 / 2, 2 * s1 / 2 / 2, 0.0], abs=1e-6)
    assert metrics["policy/clip_frac"].item() == pytest.approx(0.5)


def test_every_loss_is_one_at_ratio_one_and_the_registry_says_where_each_applies():
    # on-policy (ρ = 1), ppo_clip / dapo / gspo are −mean(A); nothing is clipped
    logps = torch.zeros(1, 4)
    for name in ("ppo_clip", "dapo", "gspo"):
        spec = policy_loss_spec(name)
        loss, metrics = spec.fn(logps, logps, ADV, MASK, clip_range=0.2, aggregation=spec.aggregation or "token_mean")
        assert loss.item() == pytest.approx(-0.5) and metrics["policy/clip_frac"].item() == 0.0, name
    assert [n for n, s in POLICY_LOSSES.items() if not s.token_level] == ["gspo", "gmpo"]
    with pytest.raises(ValueError, match="choose one of ppo_clip, dapo, cispo, gspo, gmpo, sapo"):
        policy_loss_spec("gpg")


def test_gmpo_takes_the_geometric_mean_of_token_ratios_clipped_on_the_advantages_side():
    # one response, A = mean(+1, +1, +1, −1) = +0.5 > 0: the log-ratios [ln 1.5, ln 0.5, ln 1.25, 0] are clipped
    # above at 0.4 only: [0.4, ln 0.5, ln 1.25, 0]; mean −0.0175009, ratio e^mean = 0.9826513, loss −0.5 × that.
    # Token 0 (clipped) has no gradient, the others −A·ratio/4 each; ρ = 0.5 is not clipped (A > 0).
    loss, grad, metrics = run("gmpo", clip_range=0.4)
    assert loss == pytest.approx(-0.4913257, abs=1e-6)
    assert grad == pytest.approx([0.0, -0.1228314, -0.1228314, -0.1228314], abs=1e-6)
    assert metrics["policy/clip_frac"].item() == pytest.approx(0.25)
    assert metrics["policy/ratio_mean"].item() == pytest.approx(0.9826513, abs=1e-6)
    # A < 0 clips below instead: log-ratios [0.5, −0.6] → [0.5, −0.4], ratio e^0.05, loss +e^0.05 (A = −1)
    logps = torch.tensor([[0.5, -0.6]], requires_grad=True)
    spec = policy_loss_spec("gmpo")
    loss, metrics = spec.fn(logps, torch.zeros(1, 2), torch.full((1, 2), -1.0), torch.ones(1, 2), clip_range=0.4,
                            aggregation=spec.aggregation)
    loss.backward()
    assert loss.item() == pytest.approx(math.exp(0.05), abs=1e-6)
    assert logps.grad[0].tolist() == pytest.approx([math.exp(0.05) / 2, 0.0], abs=1e-6)


def test_sapo_gates_each_token_softly_and_keeps_the_policy_gradient_on_policy():
    # f(ρ) = (4/τ)·σ(τ(ρ − 1)), loss −f(ρ)·A per token (token mean over 4), τ = 1 where A > 0 and 1.05 where not;
    # d/dlog π = −A·4p(1 − p)·ρ/4, p = σ(τ(ρ − 1)): token 3 (ρ = 1) gets exactly the policy gradient −A/4 = +0.25
    loss, grad, metrics = run("sapo")
    assert loss == pytest.approx(-1.0859860, abs=1e-6)
    assert grad == pytest.approx([-0.3525056, -0.1175019, -0.3076676, 0.25], abs=1e-6)
    assert metrics["policy/clip_frac"].item() == 0.0  # every gate weight 4p(1 − p) ≥ 0.94 here
    # a token far off-policy (ρ = 4, A = +1) keeps a fading gradient: 4σ(3)(1 − σ(3))·4 = 0.7228 (no hard zero)
    logps = torch.tensor([[math.log(4.0)]], requires_grad=True)
    loss, metrics = policy_loss_spec("sapo").fn(logps, torch.zeros(1, 1), torch.ones(1, 1), torch.ones(1, 1),
                                                sapo_tau_pos=1.0, sapo_tau_neg=1.05)
    loss.backward()
    p = 1 / (1 + math.exp(-3.0))
    assert logps.grad.item() == pytest.approx(-4 * p * (1 - p) * 4.0, abs=1e-6)
    assert metrics["policy/clip_frac"].item() == 1.0  # its gate weight 0.18 < 0.5
    # a larger τ closes the gate sooner: the same token's gradient at τ = 2 is smaller
    logps.grad = None
    loss, _ = policy_loss_spec("sapo").fn(logps, torch.zeros(1, 1), torch.ones(1, 1), torch.ones(1, 1), sapo_tau_pos=2.0)
    loss.backward()
    q = 1 / (1 + math.exp(-6.0))
    assert logps.grad.item() == pytest.approx(-4 * q * (1 - q) * 4.0, abs=1e-6)
    assert policy_loss_spec("sapo").options == ("sapo_tau_pos", "sapo_tau_neg")


def test_reinforce_pp_baseline_centres_each_group_before_whitening_the_batch():
    # scores [1, 3 | 0, 0] → centred [−1, 1 | 0, 0]; on the last real tokens of responses of 2, 1, 3 and 1 tokens:
    # returns [−1, −1], [1], [0, 0, 0], [0]; mean −1/7, population std √20/7, so x whitens to (7x + 1)/√20
    mask = torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 1], [1, 0, 0]])
    out = advantage_estimator("reinforce_pp_baseline").fn(torch.tensor([1.0, 3.0, 0.0, 0.0]), torch.zeros(4, 3),
                                                           mask, 2, 0.0, False, None)
    w = lambda x: (7 * x + 1) / math.sqrt(20)  # noqa: E731
    expected = torch.tensor([[w(-1), w(-1), 0.0], [w(1), 0.0, 0.0], [w(0), w(0), w(0)], [w(0), 0.0, 0.0]])
    assert torch.allclose(out, expected, atol=1e-5)
    assert advantage_estimator("reinforce_pp_baseline").kl_always_in_reward


def test_a_losss_own_setting_for_another_loss_is_a_config_error():
    from tether.config import GRPOConfig, PPOConfig, validate
    from tether.errors import ConfigError

    with pytest.raises(ConfigError, match=r"sapo_tau_neg=2.0 only applies to loss=sapo \(this run's loss is ppo_clip\)"):
        validate(PPOConfig(sapo_tau_neg=2.0))
    with pytest.raises(ConfigError, match=r"sapo_tau_pos=0.5 only applies to loss=sapo"):
        validate(GRPOConfig(loss="gmpo", sapo_tau_pos=0.5))
    validate(GRPOConfig(loss="sapo", sapo_tau_pos=0.5, sapo_tau_neg=2.0))
    with pytest.raises(ConfigError, match="sapo_tau_pos: must be > 0"):
        validate(GRPOConfig(loss="sapo", sapo_tau_pos=0.0))

