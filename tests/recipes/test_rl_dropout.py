"""PPO and GRPO run their policy without dropout: the rollout's log-probs, the reference's and the update's are one
distribution's. A random-init policy is built in training mode, so a config with dropout would otherwise drop
activations in every policy forward while the frozen reference (in eval mode) does not."""

import pytest

from tests.helpers import EXAMPLES, tiny_model_config
from tether.config import DataConfig, GRPOConfig, PPOConfig

DATA = EXAMPLES / "data"


def _dropout_policy():
    model = tiny_model_config()
    model.config_overrides["attention_dropout"] = 0.5
    return model


def _common(tmp_path):
    # learning rates 0: the policy never moves, so it equals its reference at every iteration
    return dict(run_dir=str(tmp_path), model=_dropout_policy(), reward="tether.tasks.toy:period_density",
                data=DataConfig(train_file=str(DATA / "prompts.jsonl"), max_length=128), max_new_tokens=8,
                num_iterations=2, learning_rate=0.0, kl_limit=1e9)


def test_ppo_policy_with_dropout_in_its_config_equals_its_reference(tmp_path):
    from tether.recipes.ppo import train_ppo

    # minibatches of 4 of 8 rollouts: the old log-probs come from their own forward (the two-forward path)
    result = train_ppo(PPOConfig(**_common(tmp_path), rollout_batch_size=8, minibatch_size=4, ppo_epochs=1,
                                 value_learning_rate=0.0))
    for row in result.history:
        # (measured with dropout 0.5 left on: approx KL 1.5e-3 at both iterations, 1500x this tolerance; the
        # k1 KL per response 0.018 and −0.061, which can land near 0 by chance, so approx KL is the sharp check)
        assert row["objective/kl"] == pytest.approx(0.0, abs=1e-4)
        assert row["policy/approx_kl"] == pytest.approx(0.0, abs=1e-6) and row["policy/clip_frac"] == 0.0


def test_grpo_policy_with_dropout_in_its_config_equals_its_reference(tmp_path):
    from tether.recipes.grpo import train_grpo

    result = train_grpo(GRPOConfig(**_common(tmp_path), group_size=2, prompts_per_iteration=4, minibatch_size=4,
                                   update_epochs=1))
    for row in result.history:
        assert row["objective/kl"] == pytest.approx(0.0, abs=1e-4)
        assert row["policy/clip_frac"] == 0.0
