"""The vLLM generation backend with the real engine, on a CUDA GPU with vLLM installed (``pip install
'tether-rlhf[vllm]'``); skipped elsewhere. tests/rollout/test_vllm_backend.py checks the same paths against a stand-in
engine on any machine."""
import pytest
import torch

pytest.importorskip("vllm")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

from tests.helpers import EXAMPLES  # noqa: E402
from tether.config import DataConfig, GenerationBackendConfig, GRPOConfig, ModelConfig, SFTConfig, TrainConfig  # noqa: E402,E501

DATA = EXAMPLES / "data"
# head_dim 64: a size every vLLM attention backend takes (the CPU tests' 16 is not)
TINY = ModelConfig(name_or_path="embedded", random_init=True,
                   config_overrides={"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2,
                                     "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 64})


@pytest.fixture
def sft_dir(tmp_path):
    """As tests/recipes/test_ppo.py: a short SFT first, so the policy writes text the reward can be raised on."""
    from tether.recipes.sft import train_sft

    cfg = SFTConfig(run_dir=str(tmp_path / "sft"), model=TINY,
                    data=DataConfig(train_file=str(DATA / "sft.jsonl"), max_length=256, eval_fraction=0.0),
                    train=TrainConfig(batch_size=8, learning_rate=3e-3, max_steps=60, warmup_ratio=0.1,
                                      save_final_checkpoint=False, report_to=[]))
    return str(train_sft(cfg).model_dir)


def test_grpo_with_a_vllm_sampler_learns_and_stays_on_policy(tmp_path, sft_dir, on):
    from tether.recipes.grpo import train_grpo

    on("cuda")
    result = train_grpo(GRPOConfig(
        run_dir=str(tmp_path / "grpo"), model=ModelConfig(name_or_path=sft_dir), reward="tether.tasks.toy:period_density",
        data=DataConfig(train_file=str(DATA / "prompts.jsonl")), group_size=4, prompts_per_iteration=4,
        max_new_tokens=12, num_iterations=12, minibatch_size=8, learning_rate=2e-3, kl_limit=50.0,
        generation=GenerationBackendConfig(backend="vllm", dtype="float32", enforce_eager=True,
                                           gpu_memory_utilization=0.2)))
    history = result.history
    assert len(history) == 12 and all("time/weight_sync" in h for h in history)
    # fp32 on both sides: the engine's log-probs are the trained policy's up to kernel rounding, at every
    # iteration (a sync that did not land would open the gap from the second iteration on)
    assert max(h["generation/logprob_gap"] for h in history) < 1e-2
    scores = [h["reward/score_mean"] for h in history]
    assert sum(scores[-4:]) / 4 > sum(scores[:4]) / 4 + 0.3
