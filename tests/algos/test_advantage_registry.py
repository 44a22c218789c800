"""The critic-free estimators by name, against values worked by hand.

Two groups of K = 2: scores [1, 3] and [0, 0]; responses of 2, 1, 3 and 1 tokens."""

import math

import pytest
import torch

from tether.algos.advantages import ADVANTAGE_ESTIMATORS, advantage_estimator

SCORES = torch.tensor([1.0, 3.0, 0.0, 0.0])
MASK = torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 1], [1, 0, 0]])
NO_KL = torch.zeros(4, 3)
R2 = 1 / math.sqrt(2)  # group [1, 3]: mean 2, unbiased std √2


def run(name, kl=NO_KL, kl_coef=0.0, kl_in_reward=False):
    return advantage_estimator(name).fn(SCORES, kl, MASK, 2, kl_coef, kl_in_reward, None)


@pytest.mark.parametrize("name, first_group", [("grpo", [-R2, R2]), ("dr_grpo", [-1.0, 1.0]), ("rloo", [-2.0, 2.0])])
def test_group_estimators_broadcast_one_advantage_per_response(name, first_group):
    a, b = first_group
    expected = torch.tensor([[a, a, 0.0], [b, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    assert torch.allclose(run(name), expected, atol=1e-5)


def test_kl_in_reward_lowers_each_score_by_beta_times_its_summed_kl():
    kl = torch.tensor([[0.2, 0.2, 9.0], [0.8, 9.0, 9.0], [0.0, 0.0, 0.0], [0.0, 9.0, 9.0]])  # 9s sit on padding
    # scores 1 − 0.5·0.4 = 0.8 and 3 − 0.5·0.8 = 2.6: Dr. GRPO gives ∓0.9
    out = run("dr_grpo", kl, kl_coef=0.5, kl_in_reward=True)
    assert torch.allclose(out[:2], torch.tensor([[-0.9, -0.9, 0.0], [0.9, 0.0, 0.0]]), atol=1e-5)
    assert torch.equal(run("dr_grpo", kl, kl_coef=0.5, kl_in_reward=False), run("dr_grpo"))  # a loss term: ignored


def test_reinforce_pp_whitens_returns_to_go_over_the_batch():
    # token rewards: the score on each response's last token; returns-to-go [1, 1], [3], [0, 0, 0], [0]; their
    # masked mean is 5/7 and population std √52/7, so a return x whitens to (7x − 5)/√52
    w = lambda x: (7 * x - 5) / math.sqrt(52)  # noqa: E731
    expected = torch.tensor([[w(1), w(1), 0.0], [w(3), 0.0, 0.0], [w(0), w(0), w(0)], [w(0), 0.0, 0.0]])
    assert torch.allclose(run("reinforce_pp"), expected, atol=1e-5)


def test_reinforce_pp_always_puts_the_kl_in_the_reward():
    kl = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    # β = 1: row 0's token rewards become [−1, 1 − 1] = [−1, 0], returns [−1, 0]; the others as before:
    # values [−1, 0, 3, 0, 0, 0, 0], mean 2/7, population variance (81 + 4 + 361 + 4·4)/49/7 = 462/343
    out = run("reinforce_pp", kl, kl_coef=1.0, kl_in_reward=False)
    std = math.sqrt(462 / 343)
    assert out[0, 0].item() == pytest.approx((-1 - 2 / 7) / std, abs=1e-5)
    assert out[1, 0].item() == pytest.approx((3 - 2 / 7) / std, abs=1e-5)
    assert advantage_estimator("reinforce_pp").kl_always_in_reward
    assert not any(ADVANTAGE_ESTIMATORS[n].kl_always_in_reward for n in ("grpo", "dr_grpo", "rloo"))


def test_an_unknown_name_lists_the_registered_ones():
    with pytest.raises(ValueError, match="grpo, dr_grpo, rloo, reinforce_pp"):
        advantage_estimator("ppo")


def test_grpo_with_scale_by_std_off_is_dr_grpo():
    from tether.config import GRPOConfig
    from tether.recipes.grpo import estimator_name

    assert estimator_name(GRPOConfig(advantage="grpo", scale_by_std=False)) == "dr_grpo"
    assert estimator_name(GRPOConfig(advantage="rloo", scale_by_std=False)) == "rloo"
