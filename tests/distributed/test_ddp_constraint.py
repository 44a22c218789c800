"""Constrained PPO and GRPO in two CPU processes (torchrun, gloo): the dual step takes the mean cost of the whole
batch (every process's responses), so λ and the constraint's metrics are those of one process holding the whole
batch."""

import json

import pytest

from tests.distributed.test_ddp import GRPO, PPO, launch, single

# the cost: characters / 100 of each response (short_and_ended negated: a weighted cost spec), about 0.3 on a tiny
# random policy's 8 tokens, and different on each process's half of the batch
CONSTRAINT = ["cost=-1*tether.tasks.toy:short_and_ended", "cost_limit=0.1", "lagrange_init=0.5", "lagrange_lr=2.0"]


@pytest.mark.parametrize("recipe", ["ppo", "grpo"])
def test_two_process_constrained_run_steps_lambda_on_the_whole_batch(tmp_path, recipe):
    """PPO and GRPO: the constraint's metrics gathered over every process's responses, so λ after the first
    iteration is 0.5 + 2·(Ĵ_C − 0.1) with the whole batch's Ĵ_C, as one process holding all of it computes.
    Catches: the dual step on one process's half (the halves' costs differ), a λ that differs between processes."""
    constrained = [*(PPO if recipe == "ppo" else GRPO), *CONSTRAINT]
    one, two = tmp_path / "one", tmp_path / "two"
    single(*constrained, f"run_dir={one}", "row_seeded_sampling=true")
    result = launch(2, *constrained, f"run_dir={two}")
    assert result.returncode == 0, result.stderr[-4000:]
    rows = {name: [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
            for name, d in (("one", one), ("two", two))}
    assert len(rows["one"]) == len(rows["two"]) == 2
    compared = ("objective/cost", "cost/score_mean", "cost/score_std", "objective/lagrange_multiplier",
                "reward/lagrangian_mean", "policy/loss", *(("reward/normalized_mean", "value/loss") if recipe == "ppo"
                                                          else ()))
    for a, b in zip(rows["one"], rows["two"]):
        for key in compared:
            assert abs(a[key] - b[key]) < 1e-5, (key, a[key], b[key])
    first = rows["one"][0]
    assert first["objective/cost"] > 0.1
    assert abs(rows["two"][1]["objective/lagrange_multiplier"] - (0.5 + 2.0 * (first["objective/cost"] - 0.1))) < 1e-5
    finals = [json.loads((d / recipe / "tether.json").read_text())["final_lagrange_multiplier"] for d in (one, two)]
    assert abs(finals[0] - finals[1]) < 1e-5
