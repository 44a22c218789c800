"""The generation backends' pure parts: completions → Rollout, weight export/load, the sampler gap."""
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from tether.rollout.backends import (
    GenerationBackendError,
    TransformersGenerator,
    export_weights,
    load_named_weights,
    resolve_backend,
    rollout_from_completions,
    sampler_gap,
)
from tether.rollout.generation import Rollout

EOS, PAD = 2, 0


def test_rollout_from_completions_masks_up_to_the_first_eos():
    prompt = torch.tensor([[0, 5], [6, 7]])
    prompt_mask = torch.tensor([[0, 1], [1, 1]])
    completions = [[9, EOS, 4], [8, 7, 6, 5]]          # row 0 ends at its EOS; row 1 runs to the length cap
    r = rollout_from_completions(prompt, prompt_mask, completions, EOS, PAD,
                                 sampler_logps=[[-0.5, -0.25, -9.0], [-1.0, -2.0, -3.0, -4.0]])
    assert r.response_ids.tolist() == [[9, EOS, PAD, PAD], [8, 7, 6, 5]]
    assert r.response_mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
    assert r.ended_with_eos.tolist() == [True, False]
    assert r.sampler_logps.tolist() == [[-0.5, -0.25, 0.0, 0.0], [-1.0, -2.0, -3.0, -4.0]]


def test_rollout_from_completions_when_pad_is_eos():
    # pad == EOS: the mask must come from the lists (the EOS counted once), not from a search of the padded tensor
    r = rollout_from_completions(torch.tensor([[3]]), torch.tensor([[1]]), [[4, EOS], [EOS], [5, 6, 7]], EOS, EOS)
    assert r.response_ids.tolist() == [[4, EOS, EOS], [EOS, EOS, EOS], [5, 6, 7]]
    assert r.response_mask.tolist() == [[1, 1, 0], [1, 0, 0], [1, 1, 1]]
    assert r.ended_with_eos.tolist() == [True, True, False]


def test_rollout_from_completions_ends_at_the_first_of_several_stop_ids():
    # Llama-3 style: the primary EOS and a secondary one (<|eot_id|>); pad == the primary
    second = 9
    completions = [[4, second], [4, EOS, second, 5], [second, EOS], [5, 6, 7], [4, 5]]
    r = rollout_from_completions(torch.tensor([[3]] * 5), torch.ones(5, 1, dtype=torch.long), completions,
                                 [EOS, second], EOS, sampler_logps=[[-0.5, -1.5], [-1.0, -2.0, -3.0, -4.0],
                                                                    [-0.25, -9.0], [-1.0, -1.0, -1.0], [-2.0, -2.0]])
    assert r.response_ids.tolist() == [[4, second, EOS, EOS], [4, EOS, EOS, EOS], [second, EOS, EOS, EOS],
                                       [5, 6, 7, EOS], [4, 5, EOS, EOS]]
    assert r.response_mask.tolist() == [[1, 1, 0, 0], [1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 0], [1, 1, 0, 0]]
    assert r.ended_with_eos.tolist() == [True, True, True, False, False]
    # the stop token keeps the log-prob reported for it; nothing after the first stop is kept
    assert r.sampler_logps.tolist() == [[-0.5, -1.5, 0, 0], [-1.0, -2.0, 0, 0], [-0.25, 0, 0, 0],
                                        [-1.0, -1.0, -1.0, 0], [-2.0, -2.0, 0, 0]]


def test_sampler_gap_is_the_mean_absolute_difference_on_response_tokens():
    r = Rollout(torch.zeros(1, 1, dtype=torch.long), torch.ones(1, 1, dtype=torch.long),
                torch.tensor([[4, EOS, PAD]]), torch.tensor([[1, 1, 0]]), torch.tensor([True]),
                sampler_logps=torch.tensor([[-1.0, -2.0, 0.0]]))
    # |−1.5 − (−1)| = 0.5, |−1 − (−2)| = 1; the padded position (100 apart) is not counted → 0.75
    assert sampler_gap(r, torch.tensor([[-1.5, -1.0, -100.0]])) == {"generation/logprob_gap": pytest.approx(0.75)}
    assert sampler_gap(Rollout(r.prompt_ids, r.prompt_mask, r.response_ids, r.response_mask, r.ended_with_eos),
                       torch.zeros(1, 3)) == {}


def _tiny(seed):
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                        num_attention_heads=2, num_key_value_heads=1)).eval()


def test_export_then_load_reproduces_the_policy():
    policy, sampler = _tiny(0), _tiny(1)
    x = torch.tensor([[1, 4, 7, 3]])
    assert not torch.allclose(policy(x).logits, sampler(x).logits)
    load_named_weights(sampler, export_weights(policy))
    torch.testing.assert_close(policy(x).logits, sampler(x).logits)


def test_export_of_a_lora_policy_is_the_merged_model_and_leaves_the_adapter_alone():
    peft = pytest.importorskip("peft")
    policy = peft.get_peft_model(_tiny(0), peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                           init_lora_weights=False))
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    plain = _tiny(1)
    load_named_weights(plain, export_weights(policy))
    x = torch.tensor([[1, 4, 7, 3]])
    with torch.no_grad():
        torch.testing.assert_close(plain(x).logits, policy(x).logits)
        with policy.disable_adapter():           # the adapter changes the output, so the delta was really merged
            assert not torch.allclose(plain(x).logits, policy(x).logits)
    after = policy.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)   # no in-place merge


def test_load_named_weights_refuses_unknown_and_missing_names():
    model = _tiny(0)
    weights = list(export_weights(model))
    with pytest.raises(KeyError, match="no parameter 'bogus'"):
        load_named_weights(model, weights + [("bogus", torch.zeros(1))])
    with pytest.raises(KeyError, match="no weights sent"):
        load_named_weights(model, weights[:-1])


def test_backend_choice():
    model = _tiny(0)
    assert resolve_backend("auto", model) == "transformers"      # a CPU policy never picks vLLM
    assert resolve_backend("vllm", model) == "vllm"
    with pytest.raises(GenerationBackendError, match="generation.backend"):
        resolve_backend("sglang", model)
    gen = TransformersGenerator(model)
    gen.sync_weights(model)                                        # the same object: nothing to copy
    other = _tiny(1)
    gen.sync_weights(other)
    x = torch.tensor([[1, 4, 7, 3]])
    torch.testing.assert_close(model(x).logits, other(x).logits)
