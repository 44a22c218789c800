"""Ray placement of the RL roles: a run with the reference, reward and sampler in Ray actors takes the same steps as
a run with every role in the training process (row-seeded sampling makes the rollouts comparable)."""
import pytest

pytest.importorskip("ray")

from tests.helpers import EXAMPLES, tiny_model_config  # noqa: E402
from tether.config import DataConfig, GRPOConfig, PlacementConfig, PPOConfig  # noqa: E402
from tether.recipes.grpo import train_grpo  # noqa: E402
from tether.recipes.ppo import train_ppo  # noqa: E402

PROMPTS = str(EXAMPLES / "data" / "prompts.jsonl")
# a reward the tiny random model's 6-token answers differ on (they hold no periods: period_density is 0 for every
# one, no advantage is non-zero, and the two runs would only be compared while standing still)
REWARD = "tether.tasks.toy:short_and_ended"
RAY = PlacementConfig(backend="ray", num_cpus={"reference": 0.5, "reward": 0.5, "generation": 0.5}, num_threads=1)


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False)
    yield
    ray.shutdown()


def _same_history(local, placed):
    assert len(local) == len(placed) == 2
    for a, b in zip(local, placed):
        keys = {k for k in a if not k.startswith("time/")}
        assert keys <= set(b)
        for k in keys:
            assert b[k] == pytest.approx(a[k], abs=1e-5), k
        assert "time/weight_sync" in b and "time/weight_sync" not in a


def test_ppo_with_roles_on_ray_matches_the_local_run(tmp_path, ray_cluster):
    common = dict(model=tiny_model_config(), reward=REWARD,
                  data=DataConfig(train_file=PROMPTS), max_new_tokens=6, num_iterations=2, rollout_batch_size=4,
                  minibatch_size=4, learning_rate=2e-3, row_seeded_sampling=True)
    local = train_ppo(PPOConfig(run_dir=str(tmp_path / "local"), **common))
    placed = train_ppo(PPOConfig(run_dir=str(tmp_path / "ray"), placement=RAY, **common))
    _same_history(local.history, placed.history)
    assert "time/score_logprobs_values" in placed.history[0] and "time/score" in local.history[0]
    # the runs learned: the scores differ, and the first update moved the policy off the reference the actor holds
    assert placed.history[0]["reward/score_std"] > 0.01 and placed.history[1]["objective/kl"] > 0.01


def test_grpo_with_roles_on_ray_matches_the_local_run(tmp_path, ray_cluster):
    common = dict(model=tiny_model_config(), reward=REWARD,
                  data=DataConfig(train_file=PROMPTS), max_new_tokens=6, num_iterations=2, group_size=2,
                  prompts_per_iteration=2, minibatch_size=4, learning_rate=2e-3, row_seeded_sampling=True)
    local = train_grpo(GRPOConfig(run_dir=str(tmp_path / "local"), **common))
    placed = train_grpo(GRPOConfig(run_dir=str(tmp_path / "ray"), placement=RAY, **common))
    _same_history(local.history, placed.history)
    # the runs learned: each group's scores differ, and the first update moved the policy off the reference the
    # actor holds (the k3 KL term at the second iteration)
    assert placed.history[0]["reward/group_std_mean"] > 0.01 and placed.history[1]["policy/kl_loss"] > 1e-3
