"""The Lagrangian constraint of Safe RLHF (tether.algos.constraint) at points worked out by hand."""

import math

import pytest
import torch

from tether.algos.constraint import LagrangeMultiplier, constraint_metrics, dual_ascent_step, lagrangian_scores


def test_the_dual_step_rises_with_the_violation_by_hand():
    # costs [0.2, 0.6]: Ĵ_C = 0.4 > d = 0.1, so λ = 0.5 + 0.1·(0.4 − 0.1) = 0.53
    mean_cost = float(torch.tensor([0.2, 0.6]).mean())
    assert dual_ascent_step(0.5, mean_cost, cost_limit=0.1, lr=0.1) == pytest.approx(0.53, abs=1e-7)
    # under the bound with room to spare λ falls: 1.0 + 0.1·(0.2 − 0.7) = 0.95
    assert dual_ascent_step(1.0, 0.2, cost_limit=0.7, lr=0.1) == pytest.approx(0.95, abs=1e-12)
    # on the bound it stays; a zero rate keeps λ fixed
    assert dual_ascent_step(0.3, 0.25, cost_limit=0.25, lr=0.1) == 0.3
    assert dual_ascent_step(0.3, 9.0, cost_limit=0.0, lr=0.0) == 0.3


def test_the_dual_step_is_clipped_at_zero_and_at_the_cap():
    # 0.02 + 0.1·(0.0 − 0.5) = −0.03 → 0 (λ ≥ 0: a satisfied constraint stops taxing the reward, no further)
    assert dual_ascent_step(0.02, 0.0, cost_limit=0.5, lr=0.1) == 0.0
    # 4.9 + 0.5·(1.0 − 0.0) = 5.4 → the cap 5.0; with no cap, 5.4
    assert dual_ascent_step(4.9, 1.0, cost_limit=0.0, lr=0.5, max_multiplier=5.0) == 5.0
    assert dual_ascent_step(4.9, 1.0, cost_limit=0.0, lr=0.5) == pytest.approx(5.4, abs=1e-12)
    # the cap does not hold λ up: 4.9 + 0.5·(0.0 − 1.0) = 4.4, under the cap
    assert dual_ascent_step(4.9, 0.0, cost_limit=1.0, lr=0.5, max_multiplier=5.0) == pytest.approx(4.4, abs=1e-12)
    with pytest.raises(ValueError, match="non-finite"):
        dual_ascent_step(1.0, math.nan, cost_limit=0.0, lr=0.1)


def test_the_lagrangian_score_by_hand():
    rewards, costs = torch.tensor([2.0, -1.0, 0.5]), torch.tensor([1.0, 3.0, 0.0])
    # λ = 0.5: (2 − 0.5)/1.5 = 1, (−1 − 1.5)/1.5 = −5/3, (0.5 − 0)/1.5 = 1/3
    assert lagrangian_scores(rewards, costs, 0.5).tolist() == pytest.approx([1.0, -5 / 3, 1 / 3], abs=1e-6)
    # λ = 3: (2 − 3)/4 = −0.25, (−1 − 9)/4 = −2.5, 0.5/4 = 0.125
    assert lagrangian_scores(rewards, costs, 3.0).tolist() == pytest.approx([-0.25, -2.5, 0.125], abs=1e-6)
    # λ = 0: the reward itself, exactly
    assert torch.equal(lagrangian_scores(rewards, costs, 0.0), rewards)
    assert lagrangian_scores(rewards.double(), costs, 0.5).dtype == torch.float32


def test_the_lagrangian_score_stays_on_the_scale_of_reward_and_cost():
    """The weights 1/(1 + λ) and λ/(1 + λ) sum to one: with r and c in [0, 1] the score stays in [−1, 1] for every
    λ (it tends to −c as λ grows), where r − λ·c would reach −λ."""
    rewards, costs = torch.tensor([1.0, 0.0, 0.3]), torch.tensor([1.0, 1.0, 0.2])
    for multiplier in (0.0, 0.5, 10.0, 1000.0):
        scores = lagrangian_scores(rewards, costs, multiplier)
        assert scores.abs().max() <= 1.0 + 1e-6, multiplier
    assert lagrangian_scores(rewards, costs, 1e6).tolist() == pytest.approx((-costs).tolist(), abs=1e-5)


def test_the_multiplier_follows_the_costs_and_its_state_restores_it():
    multiplier = LagrangeMultiplier(init=0.5, cost_limit=0.1, lr=0.1, max_value=0.6)
    trajectory = [multiplier.value]
    for mean_cost in (0.4, 0.4, 1.1, -5.0, 0.1):
        trajectory.append(multiplier.update(mean_cost))
    # 0.5 → 0.53 → 0.56 → min(0.66, 0.6) = 0.6 → max(0.6 − 0.51, 0) = 0.09 → 0.09 (on the bound)
    assert trajectory == pytest.approx([0.5, 0.53, 0.56, 0.6, 0.09, 0.09], abs=1e-12)
    assert multiplier.update(-1.0) == 0.0  # 0.09 − 0.11 → clipped at 0

    # the state is λ: a multiplier loaded from it goes on as the original does (the limit, rate and cap are config)
    original = LagrangeMultiplier(init=1.0, cost_limit=0.2, lr=0.25)
    original.update(0.6)  # 1.1
    restored = LagrangeMultiplier(init=1.0, cost_limit=0.2, lr=0.25)
    restored.load_state_dict(original.state_dict())
    assert restored.value == original.value == pytest.approx(1.1, abs=1e-12)
    assert restored.update(1.0) == original.update(1.0) == pytest.approx(1.3, abs=1e-12)
    assert original.state_dict() == {"value": original.value}


def test_the_multiplier_refuses_impossible_settings():
    with pytest.raises(ValueError, match="init ≥ 0"):
        LagrangeMultiplier(init=-0.1, cost_limit=0.0, lr=0.1)
    with pytest.raises(ValueError, match="lr=-1"):
        LagrangeMultiplier(init=1.0, cost_limit=0.0, lr=-1.0)
    with pytest.raises(ValueError, match="cap"):
        LagrangeMultiplier(init=2.0, cost_limit=0.0, lr=0.1, max_value=1.0)
    assert LagrangeMultiplier(init=0.0, cost_limit=0.0, lr=0.1, max_value=1.0).value == 0.0


def test_the_constraint_metrics_by_hand():
    """Costs (1, 0, 2): mean 1, unbiased std 1; Lagrangian scores (0.5, 1, 0): mean 0.5; the bound and λ as given;
    one response: std 0 (not NaN). Catches: the biased std, the scores' mean taken from the costs."""
    metrics = constraint_metrics(torch.tensor([1.0, 0.0, 2.0]), torch.tensor([0.5, 1.0, 0.0]), 0.3, 0.7)
    assert metrics == {"objective/cost": 1.0, "objective/cost_limit": 0.3, "objective/lagrange_multiplier": 0.7,
                       "cost/score_mean": 1.0, "cost/score_std": 1.0, "reward/lagrangian_mean": 0.5}
    assert constraint_metrics(torch.tensor([2.0]), torch.tensor([0.1]), 0.0, 1.0)["cost/score_std"] == 0.0
