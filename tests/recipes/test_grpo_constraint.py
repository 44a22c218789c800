"""Constrained GRPO (Safe RLHF's Lagrangian, as in constrained PPO) on a tiny random model: the Lagrangian scores
worked by hand and the advantages taken from them. λ's dual step by hand and from the logged costs, its exact
resume with the held-out cost, and cost="" leaving the run as it was: tests/recipes/test_ppo_constraint.py, for both
recipes.

The costs are deterministic functions (``tests.recipes.test_ppo_constraint:<name>``), so λ's trajectory can be worked
out by hand (a constant cost) or recomputed from the logged costs (a cost that depends on the samples).
"""


import pytest
import torch

from tests.helpers import EXAMPLES, tiny_model_config, trained_advantages
from tether.config import DataConfig, GRPOConfig, validate
from tether.errors import ConfigError

DATA = EXAMPLES / "data"
COSTS = "tests.recipes.test_ppo_constraint"
HERE = "tests.recipes.test_grpo_constraint"


def cost_of_first_sample(prompts, responses, response_ids):
    """1 for the first response of each group of 4 (its row in the batch a multiple of 4), else 0: a cost that
    differs inside every group while a flat reward does not."""
    return [1.0 if i % 4 == 0 else 0.0 for i in range(len(responses))]


def flat(prompts, responses, response_ids):
    """Every response scores 0: without a cost no group has an advantage."""
    return [0.0] * len(responses)


def _grpo(run_dir, **extra):
    base = dict(run_dir=str(run_dir), model=tiny_model_config(), reward="tether.tasks.toy:short_and_ended",
                data=DataConfig(train_file=str(DATA / "prompts.jsonl")), max_new_tokens=8, num_iterations=3,
                group_size=4, prompts_per_iteration=2, minibatch_size=4, learning_rate=3e-3, kl_limit=1e9,
                report_to=[])
    return GRPOConfig(**{**base, **extra})


def _train(cfg):
    from tether.recipes.grpo import train_grpo

    return train_grpo(cfg)


def test_the_scores_are_the_lagrangian_of_the_shaped_reward_and_the_cost_by_hand():
    """Rewards (1, 0, 2, 1), costs (0, 1, 1, 0), the third response cut off (missing-EOS penalty 0.5), λ = 1:
    proxy (1, 0, 1.5, 1), scores (proxy − c)/2 = (0.5, −0.5, 0.25, 0.5). A group of equal rewards whose costs differ
    is informative (dynamic sampling keeps it); selecting groups keeps every tensor's rows together. Catches: the
    penalty charged to the cost side, no 1/(1 + λ), the advantages (or dynamic sampling) reading the reward alone."""
    from tether.recipes.grpo import SampledGroups
    from tether.rollout.generation import Rollout

    cfg = GRPOConfig(group_size=2, max_new_tokens=4, missing_eos_penalty=0.5)
    ones = torch.ones(4, 2, dtype=torch.long)
    rollout = Rollout(ones, ones, ones, ones, torch.tensor([True, True, False, True]))
    sampled = SampledGroups([None] * 4, rollout, ["a", "b", "c", "d"]).score(
        cfg, lambda: torch.tensor([1.0, 0.0, 2.0, 1.0]), lambda: torch.tensor([0.0, 1.0, 1.0, 0.0]), 1.0)
    assert sampled.proxy.tolist() == [1.0, 0.0, 1.5, 1.0]
    assert sampled.scores.tolist() == [0.5, -0.5, 0.25, 0.5]
    assert sampled.informative(2).tolist() == [True, True]
    second = sampled.groups(torch.tensor([False, True]), 2)
    assert second.costs.tolist() == [1.0, 0.0] and second.scores.tolist() == [0.25, 0.5]
    assert second.responses == ["c", "d"] and second.proxy.tolist() == [1.5, 1.0]

    same_reward = SampledGroups([None] * 4, rollout, ["a", "b", "c", "d"]).score(
        GRPOConfig(group_size=2, max_new_tokens=4), lambda: torch.zeros(4), lambda: torch.tensor([1.0, 0.0, 0.0, 0.0]),
        0.5)
    assert same_reward.informative(2).tolist() == [True, False]  # the cost alone tells the first group apart
    unconstrained = SampledGroups([None] * 4, rollout, ["a", "b", "c", "d"]).score(cfg, lambda: torch.zeros(4))
    assert unconstrained.costs is None and unconstrained.scores is unconstrained.proxy


def test_the_advantages_come_from_the_cost_when_the_reward_is_flat(tmp_path, monkeypatch):
    """A flat reward gives every group a zero advantage; with a cost that differs inside each group the policy is
    pushed away from the costly sample: under GRPO's group normalisation its advantage is −1.5 and the other three's
    +0.5 (scores (−λ, 0, 0, 0)/(1 + λ): mean −λ/4(1 + λ), std (unbiased) λ/2(1 + λ)), whatever λ > 0."""
    trained = trained_advantages(monkeypatch)
    _train(_grpo(tmp_path / "plain", reward=f"{HERE}:flat", num_iterations=1))
    assert float(trained[0].abs().sum()) == 0.0
    trained.clear()
    _train(_grpo(tmp_path / "cost", reward=f"{HERE}:flat", cost=f"{HERE}:cost_of_first_sample", lagrange_init=0.5,
                 num_iterations=1))
    mask = trained[0] != 0  # (advantages are spread over each response's tokens)
    per_response = (trained[0] * mask).sum(-1) / mask.sum(-1).clamp(min=1)
    assert per_response.tolist() == pytest.approx([-1.5, 0.5, 0.5, 0.5] * 2, abs=1e-4)


def test_constraint_settings_need_a_cost_in_grpo_too(tmp_path):
    with pytest.raises(ConfigError, match=r"cost_limit=0.2 only applies to a constrained run: set cost="):
        validate(GRPOConfig(cost_limit=0.2))
    with pytest.raises(ConfigError, match=r"lagrange_max \(0.5\) cannot be below lagrange_init \(1.0\)"):
        validate(GRPOConfig(cost=f"{COSTS}:cost_one", lagrange_max=0.5))
    with pytest.raises(ConfigError, match="only applies to a constrained run"):
        _train(_grpo(tmp_path / "run", lagrange_init=2.0))
    assert not (tmp_path / "run").exists()
