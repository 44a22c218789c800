"""Reward sources: functions, weighted combinations of objectives, clear errors for bad specs."""

import pytest
import torch

from tether.rollout.generation import Rollout
from tether.rollout.rewards import RewardSpecError, WeightedSource, load_reward_source, parse_weighted


def _rollout(n):
    ids = torch.ones(n, 3, dtype=torch.long)
    return Rollout(ids, torch.ones_like(ids), ids, torch.ones_like(ids), torch.ones(n, dtype=torch.bool))


def test_parse_weighted_terms():
    assert parse_weighted("0.7*runs/a + 0.3*m:f") == [(0.7, "runs/a"), (0.3, "m:f")]
    assert parse_weighted("m:f + -2*m:g") == [(1.0, "m:f"), (-2.0, "m:g")]
    with pytest.raises(RewardSpecError, match="weight before"):
        parse_weighted("lots*m:f")
    with pytest.raises(RewardSpecError, match="empty term"):
        parse_weighted("m:f + ")


def test_weighted_combination_of_two_objectives_by_hand():
    source = load_reward_source("2*tether.tasks.toy:period_density + -1*tether.tasks.toy:short_and_ended", None)
    assert isinstance(source, WeightedSource)
    responses = ["a.b.", "hello"]
    # period_density: 10·2/4 = 5 and 0; short_and_ended: −4/100 and −5/100
    expected = [2 * 5.0 + 0.04, 2 * 0.0 + 0.05]
    assert source.score(_rollout(2), ["p", "q"], responses).tolist() == pytest.approx(expected)


def test_bad_reward_specs_name_the_problem():
    with pytest.raises(RewardSpecError, match="cannot be imported"):
        load_reward_source("0.5*no_such_module:f + tether.tasks.toy:period_density", None)
    with pytest.raises(RewardSpecError, match="neither a reward model directory"):
        load_reward_source("not/a/dir", None)
