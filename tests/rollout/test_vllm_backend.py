"""The vLLM generation backend against a stand-in ``vllm`` module (tests/rollout/fake_vllm.py) that runs a real
transformers model: what reaches the engine (unpadded prompts, per-row seeds, the sampling settings, the stop ids,
every weight on each sync) and what comes back (the stop token the engine sampled, kept and never one added; the
engine's log-probs). The real engine is exercised in tests/gpu/test_vllm.py, on a CUDA machine with vLLM
installed."""
import pytest
import torch

from tests.helpers import EXAMPLES, tiny_model_config
from tests.rollout import fake_vllm
from tether.config import DataConfig, GenerationBackendConfig, GRPOConfig
from tether.models.loading import load_causal_lm, load_tokenizer
from tether.recipes.grpo import train_grpo
from tether.rollout.backends import GenerationBackendError, VLLMGenerator, make_generator, sampler_model_dir
from tether.rollout.generation import GenerationConfig, response_logprobs

PROMPTS = str(EXAMPLES / "data" / "prompts.jsonl")


@pytest.fixture
def vllm(monkeypatch):
    fake_vllm.install(monkeypatch)
    return fake_vllm


@pytest.fixture(scope="module")
def tiny():
    cfg = tiny_model_config()
    tokenizer = load_tokenizer(cfg.name_or_path, cfg)
    return load_causal_lm(cfg, seed=0, pad_token_id=tokenizer.pad_token_id).eval(), tokenizer


def _left_padded(pad):
    ids = torch.tensor([[pad, pad, 17, 18], [30, 31, 32, 33]])
    return ids, torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])


def test_prompts_reach_the_engine_unpadded_with_their_seeds_and_settings(tmp_path, tiny, vllm):
    policy, tokenizer = tiny
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    generator = make_generator(GenerationBackendConfig(backend="vllm", gpu_memory_utilization=0.4), policy, tmp_path,
                               tokenizer, max_model_len=96, seed=3)
    (llm,) = vllm.LLM.instances
    assert llm.kwargs["model"] == str(tmp_path / "sampler-init")
    assert {k: llm.kwargs[k] for k in ("gpu_memory_utilization", "max_model_len", "seed", "trust_remote_code",
                                       "distributed_executor_backend")} == {
        "gpu_memory_utilization": 0.4, "max_model_len": 96, "seed": 3, "trust_remote_code": False,
        "distributed_executor_backend": "external_launcher"}
    ids, mask = _left_padded(pad)
    config = GenerationConfig(max_new_tokens=5, temperature=0.7, top_p=1.0)
    rollout = generator.generate(ids, mask, config, eos, pad, seeds=[11, 12])
    prompts, params = llm.calls[-1]
    assert prompts == [{"prompt_token_ids": [17, 18]}, {"prompt_token_ids": [30, 31, 32, 33]}]
    assert [p.seed for p in params] == [11, 12]
    assert all((p.temperature, p.top_p, p.max_tokens, p.min_tokens, p.stop_token_ids, p.logprobs, p.n)
               == (0.7, 1.0, 5, 0, [eos], 0, 1) for p in params)
    # the rollout keeps the caller's (padded) prompts; the engine's log-probs are those of the policy it was sent
    assert torch.equal(rollout.prompt_ids, ids) and torch.equal(rollout.prompt_mask, mask)
    assert rollout.response_mask.sum() > 0
    torch.testing.assert_close(rollout.sampler_logps, response_logprobs(policy, rollout, 0.7), atol=1e-5, rtol=1e-5)
    again = generator.generate(ids, mask, config, eos, pad, seeds=[11, 12])  # same seeds, same samples
    assert torch.equal(again.response_ids, rollout.response_ids)
    generator.generate(ids, mask, GenerationConfig(max_new_tokens=5, min_new_tokens=2), eos, pad)
    assert [(p.min_tokens, p.seed, p.temperature) for p in llm.calls[-1][1]] == [(2, None, 1.0)] * 2
    with pytest.raises(ValueError, match="3 seeds for 2 prompts"):
        generator.generate(ids, mask, config, eos, pad, seeds=[1, 2, 3])


def _with_eos_ids(policy, tokenizer, run_dir, eos_ids):
    """The policy's sampler directory with ``eos_ids`` as its generation config's EOS ids (Llama-3 lists three)."""
    original = policy.generation_config.eos_token_id
    policy.generation_config.eos_token_id = eos_ids
    try:
        return sampler_model_dir(policy, tokenizer, run_dir)
    finally:
        policy.generation_config.eos_token_id = original


def test_a_response_keeps_the_stop_token_the_engine_sampled_and_nothing_is_appended(tmp_path, tiny, vllm):
    policy, tokenizer = tiny
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    second = 77  # a secondary EOS id of the generation config (Llama-3's <|eot_id|> beside <|end_of_text|>)
    generator = VLLMGenerator(_with_eos_ids(policy, tokenizer, tmp_path, [eos, second]))
    generator.llm.script = [([5, 6, second], "stop", [-0.5, -0.25, -1.5]),  # stopped on the secondary id: kept
                            ([7, 8, 9], "length", [-1.0, -2.0, -3.0]),     # cut at max_tokens: no stop, none added
                            ([4, eos], "stop", [-0.75, -0.125]),            # the primary EOS: kept once
                            ([5, 6], "stop", [-0.5, -0.25])]                # "stop" with no stop token: not ended
    ids = torch.tensor([[pad, 17], [30, 31], [40, 41], [42, 43]])
    rollout = generator.generate(ids, torch.ones_like(ids), GenerationConfig(3), eos, pad)  # (callers pass one id)
    assert rollout.response_ids.tolist() == [[5, 6, second], [7, 8, 9], [4, eos, pad], [5, 6, pad]]
    assert rollout.response_mask.tolist() == [[1, 1, 1], [1, 1, 1], [1, 1, 0], [1, 1, 0]]
    assert rollout.ended_with_eos.tolist() == [True, False, True, False]
    # every kept token carries the log-prob the engine reported for it: none is a 0 of a token never sampled
    assert rollout.sampler_logps.tolist() == [[-0.5, -0.25, -1.5], [-1.0, -2.0, -3.0], [-0.75, -0.125, 0.0],
                                              [-0.5, -0.25, 0.0]]
    assert [p.stop_token_ids for p in generator.llm.calls[-1][1]] == [[eos, second]] * 4  # the engine's stop set
    # the caller's ids count too, where the directory does not list them
    plain = VLLMGenerator(sampler_model_dir(policy, tokenizer, tmp_path / "plain"))
    plain.llm.script = generator.llm.script
    again = plain.generate(ids, torch.ones_like(ids), GenerationConfig(3), [eos, second], pad)
    assert again.response_mask.tolist() == rollout.response_mask.tolist()
    assert [p.stop_token_ids for p in plain.llm.calls[-1][1]] == [[eos, second]] * 4


def test_a_sample_that_stops_on_a_secondary_eos_ends_with_it_and_its_sampled_logprob(tmp_path, tiny, vllm):
    """vLLM stops at every EOS id of the generation config. The engine's sample with the secondary id set is its
    unstopped sample (same seeds) cut right after that id, and the log-probs are the engine's for those tokens, as
    the trained policy recomputes them."""
    policy, tokenizer = tiny
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    ids, mask = _left_padded(pad)
    config, seeds = GenerationConfig(max_new_tokens=6, temperature=1.0), [21, 22]
    free = VLLMGenerator(sampler_model_dir(policy, tokenizer, tmp_path / "one"))
    unstopped = free.generate(ids, mask, config, eos, pad, seeds=seeds)
    path = unstopped.response_ids[0][unstopped.response_mask[0].bool()].tolist()
    k = next(k for k in range(2, len(path)) if path[k] not in path[:k] and eos not in path[:k + 1])
    second = path[k]
    generator = VLLMGenerator(_with_eos_ids(policy, tokenizer, tmp_path / "two", [eos, second]))
    rollout = generator.generate(ids, mask, config, eos, pad, seeds=seeds)  # the callers' single EOS id
    assert rollout.response_ids[0][rollout.response_mask[0].bool()].tolist() == path[:k + 1]
    assert bool(rollout.ended_with_eos[0]) and rollout.response_ids[0, k] == second
    torch.testing.assert_close(rollout.sampler_logps[0, :k + 1], unstopped.sampler_logps[0, :k + 1])
    assert float(rollout.sampler_logps[0, k]) < -1e-3
    with torch.no_grad():
        torch.testing.assert_close(rollout.sampler_logps, response_logprobs(policy, rollout, 1.0), atol=1e-5,
                                   rtol=1e-5)


def test_a_sync_sends_every_weight_once_and_drops_the_prefix_cache(tmp_path, tiny, vllm):
    policy, tokenizer = tiny
    generator = VLLMGenerator(sampler_model_dir(policy, tokenizer, tmp_path))
    llm = generator.llm
    trained = load_causal_lm(tiny_model_config(), seed=1, pad_token_id=tokenizer.pad_token_id).eval()
    x = torch.tensor([[17, 18, 19, 20]])
    with torch.no_grad():
        assert not torch.allclose(llm.model(x).logits, trained(x).logits)
        generator.sync_weights(trained)
        torch.testing.assert_close(llm.model(x).logits, trained(x).logits)
    (names,) = llm.loads
    assert sorted(names) == sorted(dict(trained.named_parameters())) and len(names) == len(set(names))
    assert "lm_head.weight" not in names  # tied to the embeddings: sent once, under the embedding's name
    assert llm.prefix_resets == 1


def test_the_vllm_backend_says_what_it_needs(tmp_path, tiny, vllm, monkeypatch):
    from tether.rollout import backends

    monkeypatch.setattr(backends, "cuda_available", lambda: False)
    with pytest.raises(GenerationBackendError, match="needs a CUDA GPU"):
        VLLMGenerator(tmp_path)
    monkeypatch.setattr(backends, "vllm_available", lambda: False)
    with pytest.raises(GenerationBackendError, match=r"pip install 'tether-rlhf\[vllm\]'"):
        VLLMGenerator(tmp_path)


def _grpo(run_dir, minibatch_size=2):
    return GRPOConfig(run_dir=str(run_dir), model=tiny_model_config(), reward="tether.tasks.toy:period_density",
                      data=DataConfig(train_file=PROMPTS), max_new_tokens=6, num_iterations=3, group_size=2,
                      prompts_per_iteration=2, minibatch_size=minibatch_size, learning_rate=5e-3,
                      generation=GenerationBackendConfig(backend="vllm"))


# minibatch 2: the old log-probs are a separate forward; 4 (the whole batch, one step): the update's forward
@pytest.mark.parametrize("minibatch_size", [2, 4])
def test_grpo_samples_from_the_updated_policy_after_every_sync(tmp_path, vllm, minibatch_size):
    history = train_grpo(_grpo(tmp_path / "ok", minibatch_size)).history
    (llm,) = vllm.LLM.instances
    assert len(llm.loads) == 1 + 3  # the start, then after each of the 3 updates
    assert all(row["generation/logprob_gap"] < 1e-4 and "time/weight_sync" in row for row in history)


def test_a_broken_sync_shows_in_the_logprob_gap(tmp_path, vllm, monkeypatch):
    # the control for the test above: an engine that ignores the weights after the first load samples from the
    # initial policy, and the gap to the trained policy shows it from the second iteration on
    original = vllm._EngineModel.load_weights

    def first_only(self, weights):
        original(self, weights)
        self.llm.frozen = True

    monkeypatch.setattr(vllm._EngineModel, "load_weights", first_only)
    history = train_grpo(_grpo(tmp_path / "stale")).history
    assert history[0]["generation/logprob_gap"] < 1e-4
    assert history[1]["generation/logprob_gap"] > 1e-3 and history[2]["generation/logprob_gap"] > 1e-3


def test_the_engine_model_is_found_in_each_engine_layout():
    from types import SimpleNamespace as NS

    from tether.rollout.backends import engine_model

    model = object()
    v1 = NS(llm_engine=NS(model_executor=NS(driver_worker=NS(worker=NS(model_runner=NS(model=model))))))
    core = NS(llm_engine=NS(engine_core=NS(engine_core=NS(model_executor=NS(driver_worker=NS(
        worker=NS(model_runner=NS(model=model))))))))
    v0 = NS(llm_engine=NS(model_executor=NS(driver_worker=NS(model_runner=NS(model=model)))))
    assert engine_model(v1) is engine_model(core) is engine_model(v0) is model
    with pytest.raises(GenerationBackendError, match="cannot reach the vLLM engine's model"):
        engine_model(NS(llm_engine=NS(engine_core=NS())))  # a multiprocess engine: the model is elsewhere
