"""Constrained PPO (Safe RLHF) on a tiny random model: the constraint's metrics every iteration, λ rising while the
cost is over its bound and falling to 0 under it, an exact resume of λ (PPO's and GRPO's), and cost="" leaving PPO as
it was.

The costs here are deterministic functions (``tests.recipes.test_ppo_constraint:<name>``), so λ's trajectory can be
worked out by hand (a constant cost) or recomputed from the logged costs (a cost that depends on the samples).
"""

import json

import pytest

from tests.helpers import EXAMPLES, crash_training_rollout, tiny_model_config
from tether.config import DataConfig, HeldOutConfig, PPOConfig, validate
from tether.errors import ConfigError
from tether.utils.logging import read_metrics

DATA = EXAMPLES / "data"
HERE = "tests.recipes.test_ppo_constraint"
MAX_NEW_TOKENS = 8
CONSTRAINT_METRICS = ("objective/cost", "objective/cost_limit", "objective/lagrange_multiplier", "cost/score_mean",
                      "cost/score_std", "reward/lagrangian_mean")


def cost_one(prompts, responses, response_ids):
    """Every response costs 1."""
    return [1.0] * len(responses)


def cost_zero(prompts, responses, response_ids):
    """No response costs anything."""
    return [0.0] * len(responses)


def cost_by_characters(prompts, responses, response_ids):
    """Characters / 40: it moves with what the policy samples (a tiny random policy's 8 tokens: about 1.1-1.5 on
    average over a batch, measured)."""
    return [len(text) / 40 for text in responses]


def _ppo(run_dir, **extra):
    base = dict(run_dir=str(run_dir), model=tiny_model_config(), reward="tether.tasks.toy:short_and_ended",
                data=DataConfig(train_file=str(DATA / "prompts.jsonl")), max_new_tokens=MAX_NEW_TOKENS,
                num_iterations=3, rollout_batch_size=8, minibatch_size=4, ppo_epochs=2, learning_rate=3e-3,
                value_learning_rate=1e-4, kl_limit=1e9, report_to=[])
    return PPOConfig(**{**base, **extra})


def _train(cfg):
    from tether.recipes.ppo import train_ppo

    return train_ppo(cfg)


def _recipe(recipe: str):
    """(config builder, trainer) of ``recipe``: PPO here, GRPO in tests/recipes/test_grpo_constraint.py."""
    if recipe == "ppo":
        return _ppo, _train
    from tests.recipes.test_grpo_constraint import _grpo
    from tests.recipes.test_grpo_constraint import _train as train_grpo

    return _grpo, train_grpo


@pytest.mark.parametrize("recipe", ["ppo", "grpo"])
def test_lambda_rises_by_hand_while_every_response_costs_more_than_the_bound(tmp_path, recipe):
    """Cost 1 for every response, bound 0.25: λ_{t+1} = min(λ_t + 0.1·(1 − 0.25), 0.7), from 0.5: 0.5, 0.575, 0.65,
    then the cap 0.7 in the final checkpoint and the saved model's tether.json (PPO and GRPO)."""
    build, train = _recipe(recipe)
    result = train(build(tmp_path, cost=f"{HERE}:cost_one", cost_limit=0.25, lagrange_init=0.5, lagrange_lr=0.1,
                         lagrange_max=0.7))
    rows = read_metrics(tmp_path, recipe)
    assert len(rows) == 3
    for row in rows:  # every iteration logs the constraint
        assert all(key in row for key in CONSTRAINT_METRICS), sorted(row)
        assert row["objective/cost"] == row["cost/score_mean"] == 1.0 and row["cost/score_std"] == 0.0
        assert row["objective/cost_limit"] == 0.25
    lambdas = [r["objective/lagrange_multiplier"] for r in rows]
    assert lambdas == pytest.approx([0.5, 0.575, 0.65], abs=1e-9)
    for row, lam in zip(rows, lambdas):
        # reward/score_mean stays the raw helpful reward (short_and_ended ≤ 0, whatever the cost); the score PPO is
        # given is the normalised Lagrangian of the reward after the missing-EOS penalty (linear: means map to means)
        assert row["reward/score_mean"] <= 0.0
        assert row["reward/lagrangian_mean"] == pytest.approx((row["reward/proxy_mean"] - lam * 1.0) / (1 + lam), abs=1e-5)
        if recipe == "ppo":  # (GRPO has no rlhf_reward: its KL is a loss term)
            assert row["objective/rlhf_reward"] == pytest.approx(
                row["reward/lagrangian_mean"] - row["objective/kl_coef"] * row["objective/kl"], abs=1e-5)
    state = json.loads((tmp_path / "checkpoints" / recipe / "step-3" / "trainer_state.json").read_text())
    saved = json.loads((result.model_dir / "tether.json").read_text())
    assert state["trainer"]["lagrange_multiplier"]["value"] == 0.7  # (0.725 without the cap)
    assert saved["final_lagrange_multiplier"] == 0.7
    assert saved["cost"] == f"{HERE}:cost_one" and saved["cost_limit"] == 0.25


def test_lambda_falls_under_the_bound_and_stops_at_zero(tmp_path):
    """Cost 0 under a bound of 0.5: λ falls by 0.05 an iteration from 0.12, 0.07, 0.02, then is clipped at 0."""
    _train(_ppo(tmp_path, cost=f"{HERE}:cost_zero", cost_limit=0.5, lagrange_init=0.12, lagrange_lr=0.1,
                num_iterations=4))
    rows = read_metrics(tmp_path, "ppo")
    assert [r["objective/lagrange_multiplier"] for r in rows] == pytest.approx([0.12, 0.07, 0.02, 0.0], abs=1e-9)
    assert all(r["objective/cost"] == 0.0 for r in rows)
    # at λ = 0 the score PPO is given is the reward side itself
    assert rows[-1]["reward/lagrangian_mean"] == pytest.approx(rows[-1]["reward/proxy_mean"], abs=1e-6)


@pytest.mark.parametrize("recipe", ["ppo", "grpo"])
def test_a_cost_that_moves_with_the_samples_drives_lambda_by_the_dual_step(tmp_path, recipe):
    """A cost that depends on the samples (so on the policy): every logged λ follows from the previous iteration's
    logged λ and mean cost by max(0, λ + η·(Ĵ_C − d)), whichever way the cost falls around the bound."""
    build, train = _recipe(recipe)
    train(build(tmp_path, cost=f"{HERE}:cost_by_characters", cost_limit=1.3, lagrange_init=0.2, lagrange_lr=2.0))
    rows = read_metrics(tmp_path, recipe)
    lambdas, costs = [r["objective/lagrange_multiplier"] for r in rows], [r["objective/cost"] for r in rows]
    assert lambdas[0] == 0.2 and len(set(costs)) > 1  # (the costs moved: the recurrence below is not one number)
    expected = [max(0.0, lam + 2.0 * (cost - 1.3)) for lam, cost in zip(lambdas, costs)]
    assert lambdas[1:] == pytest.approx(expected[:-1], abs=1e-6)


@pytest.mark.parametrize("recipe", ["ppo", "grpo"])
def test_a_resumed_constrained_run_restores_lambda_exactly(tmp_path, monkeypatch, recipe):
    """Killed during iteration 3 after the checkpoint at 2, then resumed: λ's trajectory and its final value match
    the uninterrupted run's to 1e-6 (the cost depends on the samples, so λ does too), with the held-out monitor on;
    PPO and GRPO (tests/recipes/test_grpo_constraint.py) alike."""
    build, train = _recipe(recipe)
    heldout = HeldOutConfig(gold="tether.tasks.toy:moderate_periods", prompts_file=str(DATA / "prompts.jsonl"),
                            max_prompts=4, every=2)
    constrained = dict(cost=f"{HERE}:cost_by_characters", cost_limit=0.5, lagrange_init=1.0, lagrange_lr=0.5,
                       num_iterations=4, heldout=heldout)
    full = train(build(tmp_path / "full", **constrained))
    # the reward and the cost are both function sources, each called once per training rollout of 8 responses
    # (held-out rollouts have 4): calls 1-4 are iterations 1-2, the 5th is iteration 3's reward
    crash_training_rollout(monkeypatch, rollout_size=8, at=5)
    with pytest.raises(KeyboardInterrupt):
        train(build(tmp_path / "cut", save_every=2, **constrained))
    assert [p.name for p in (tmp_path / "cut" / "checkpoints" / recipe).iterdir()] == ["step-2"]
    monkeypatch.undo()
    resumed = train(build(tmp_path / "cut", save_every=2, **constrained))

    assert len(resumed.history) == 2 and resumed.iterations == 4
    full_lambdas = [h["objective/lagrange_multiplier"] for h in full.history]
    # λ moved before the cut (so restoring it is tested): by 0.5·(Ĵ_C − 0.5) an iteration, Ĵ_C ≈ 1.1-1.5
    assert full_lambdas[2] > full_lambdas[0] + 0.3
    for key in ("objective/lagrange_multiplier", "objective/cost", "reward/lagrangian_mean", "reward/score_mean",
                "objective/kl"):
        assert [h[key] for h in resumed.history] == pytest.approx([h[key] for h in full.history[2:]], abs=1e-6), key
    for key in ("heldout/gold_mean", "heldout/proxy_mean", "heldout/kl", "heldout/cost_mean"):  # (at 2 and 4)
        assert resumed.history[-1][key] == pytest.approx(full.history[-1][key], abs=1e-6), key
    final = [json.loads((run / recipe / "tether.json").read_text())["final_lagrange_multiplier"]
             for run in (tmp_path / "full", tmp_path / "cut")]
    assert final[0] == pytest.approx(final[1], abs=1e-6)
    logged = [r["objective/lagrange_multiplier"] for r in read_metrics(tmp_path / "cut", recipe)
              if "objective/lagrange_multiplier" in r]
    assert logged == pytest.approx(full_lambdas, abs=1e-6)  # each iteration logged once across the two runs


def test_the_heldout_evaluation_of_a_constrained_run_reports_its_cost(tmp_path, monkeypatch):
    """Each held-out point's cost is the mean of the cost function over that point's held-out answers (recomputed
    here from the answers the cost was called with), logged as heldout/cost_mean and written with the bound; an
    unconstrained run's points have none. Caught: the held-out cost not scored, the mean taken over the training
    batch or the proxy, the bound not written."""
    from tether.rollout import rewards as reward_module

    heldout_answers = []
    original = reward_module.FunctionSource.score

    def record(self, rollout, prompts, responses, rows=None):
        if self.spec.endswith(":cost_by_characters") and len(prompts) == 4:  # (training rollouts have 8)
            heldout_answers.append(list(responses))
        return original(self, rollout, prompts, responses, rows)

    monkeypatch.setattr(reward_module.FunctionSource, "score", record)
    heldout = HeldOutConfig(gold="tether.tasks.toy:moderate_periods", prompts_file=str(DATA / "prompts.jsonl"),
                            max_prompts=4, every=2)
    result = _train(_ppo(tmp_path / "c", cost=f"{HERE}:cost_by_characters", cost_limit=0.5, num_iterations=2,
                         heldout=heldout))
    record_file = json.loads((tmp_path / "c" / "ppo_heldout.json").read_text())
    assert [p["iteration"] for p in record_file["points"]] == [0, 2] and len(heldout_answers) == 2
    expected = [sum(len(a) / 40 for a in answers) / 4 for answers in heldout_answers]
    assert [p["cost"] for p in record_file["points"]] == pytest.approx(expected, abs=1e-6)
    assert record_file["cost_limit"] == 0.5
    assert result.history[-1]["heldout/cost_mean"] == pytest.approx(expected[-1], abs=1e-6)

    plain = _train(_ppo(tmp_path / "p", num_iterations=2, heldout=heldout))
    plain_file = json.loads((tmp_path / "p" / "ppo_heldout.json").read_text())
    assert [p["cost"] for p in plain_file["points"]] == [None, None] and "cost_limit" not in plain_file
    assert not any("heldout/cost_mean" in h for h in plain.history)


# the metrics a constrained run held at λ = 0 must log exactly as the unconstrained run does, by recipe
UNCHANGED_METRICS = {
    "ppo": ("reward/score_mean", "reward/proxy_mean", "reward/normalized_mean", "objective/kl", "objective/rlhf_reward",
            "policy/loss", "value/loss"),
    "grpo": ("reward/score_mean", "reward/proxy_mean", "objective/kl", "policy/loss", "response/length_mean"),
}


@pytest.mark.parametrize("recipe", ["ppo", "grpo"])
def test_without_a_cost_the_run_is_unchanged(tmp_path, recipe):
    """cost="" logs none of the constraint's metrics and checkpoints no multiplier; a constrained run held at λ = 0
    (λ₀ = 0, η = 0) gives PPO (or GRPO) exactly the same scores, so the same run, metric for metric."""
    build, train = _recipe(recipe)
    plain = train(build(tmp_path / "plain", num_iterations=2))
    held = train(build(tmp_path / "held", cost=f"{HERE}:cost_one", cost_limit=0.0, lagrange_init=0.0,
                       lagrange_lr=0.0, num_iterations=2))
    for row in plain.history:
        assert not any(key in row for key in CONSTRAINT_METRICS)
    state = json.loads((tmp_path / "plain" / "checkpoints" / recipe / "step-2" / "trainer_state.json").read_text())
    assert "lagrange_multiplier" not in state["trainer"]
    if recipe == "ppo":
        assert set(state["trainer"]) >= {"kl_controller", "score_moments"}
    assert "final_lagrange_multiplier" not in json.loads((plain.model_dir / "tether.json").read_text())
    for key in UNCHANGED_METRICS[recipe]:
        assert [h[key] for h in held.history] == [h[key] for h in plain.history], key


def test_a_fixed_lambda_is_the_weighted_sum_reward_after_normalisation(tmp_path):
    """docs/ppo.md's comparison: reward="r + -w*c" and the constrained run held at λ = w (η = 0) differ in their
    scores by the factor 1/(1 + w) alone (the missing-EOS penalty is on the reward side in both), which the running
    normalisation divides out (up to its ε = 1e-8): the same run, so what a constrained run adds is λ's adaptation."""
    reward = "tether.tasks.toy:short_and_ended"
    weighted = _train(_ppo(tmp_path / "weighted", reward=f"{reward} + -0.5*{HERE}:cost_by_characters", num_iterations=2))
    fixed = _train(_ppo(tmp_path / "fixed", reward=reward, cost=f"{HERE}:cost_by_characters", lagrange_init=0.5,
                        lagrange_lr=0.0, num_iterations=2))
    for key in ("reward/normalized_mean", "objective/kl", "policy/loss", "value/loss", "response/length_mean"):
        assert [h[key] for h in fixed.history] == pytest.approx([h[key] for h in weighted.history], abs=1e-5), key
    for w, f in zip(weighted.history, fixed.history):  # the weighted run's proxy is 1.5 × the Lagrangian score
        assert w["reward/proxy_mean"] == pytest.approx(1.5 * f["reward/lagrangian_mean"], abs=1e-5)


def test_constraint_settings_need_a_cost_and_a_sane_cap(tmp_path):
    with pytest.raises(ConfigError, match=r"cost_limit=0.2 only applies to a constrained run: set cost="):
        validate(PPOConfig(cost_limit=0.2))
    with pytest.raises(ConfigError, match=r"lagrange_lr=0.5, lagrange_max=3.0 only applies"):
        validate(PPOConfig(lagrange_lr=0.5, lagrange_max=3.0))
    with pytest.raises(ConfigError, match=r"lagrange_max \(0.5\) cannot be below lagrange_init \(1.0\)"):
        validate(PPOConfig(cost=f"{HERE}:cost_one", lagrange_max=0.5))
    with pytest.raises(ConfigError, match="cost_limit: must be a finite number"):
        validate(PPOConfig(cost=f"{HERE}:cost_one", cost_limit=float("nan")))
    with pytest.raises(ConfigError, match="lagrange_init: must be >= 0"):
        validate(PPOConfig(cost=f"{HERE}:cost_one", lagrange_init=-1.0))
    validate(PPOConfig(cost=f"{HERE}:cost_one", cost_limit=-0.5, lagrange_max=5.0))  # a negative bound is a bound
    # a config built in Python stops in train_ppo too, before anything is loaded or written
    with pytest.raises(ConfigError, match="only applies to a constrained run"):
        _train(_ppo(tmp_path / "run", lagrange_init=2.0))
    assert not (tmp_path / "run").exists()


def test_a_cost_that_names_nothing_says_it_is_the_cost(tmp_path):
    from tether.rollout.rewards import RewardSpecError

    with pytest.raises(RewardSpecError, match=r"^cost: reward function 'no_such_module:f' cannot be imported"):
        _train(_ppo(tmp_path, cost="no_such_module:f"))
