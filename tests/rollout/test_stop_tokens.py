"""Several EOS ids (Llama-3's generation config lists three): every sampler stops at any of them, the response keeps
the stop token it sampled, and the mask, the ended flag and the reward suffix treat any of them as the end.

The transformers backend is checked against plain transformers ``generate`` given the same EOS list (greedy), and
against the truncation of an unstopped row-seeded sample at its first stop id (sampling)."""
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from tether.models.special_tokens import as_stop_ids, config_stop_ids, stop_token_ids
from tether.rollout.backends import TransformersGenerator
from tether.rollout.generation import (
    GenerationConfig,
    Rollout,
    generate,
    response_logprobs,
    response_mask_from_ids,
    row_seeds,
)

A, PAD = 2, 0  # the tokenizer's (primary) EOS and the pad id of the tiny models below
MAX_NEW = 8


def _llama(seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, bos_token_id=1, eos_token_id=A,
                         pad_token_id=PAD)
    return LlamaForCausalLM(config).eval()


def _first_new(path: list[int], start: int = 2) -> int | None:
    """The first step k ≥ ``start`` whose token appears nowhere before it and is neither EOS nor pad (a token a
    secondary EOS id can be set to, so the response must end exactly there), with no EOS before it."""
    for k in range(start, len(path)):
        if A in path[:k + 1]:
            return None
        if path[k] not in path[:k] and path[k] != PAD:
            return k
    return None


class Tok:
    eos_token_id = A


def test_stop_token_ids_gathers_every_eos_id_primary_first(tmp_path):
    assert as_stop_ids(2, [2, 7], None, torch.tensor([9, 7])) == [2, 7, 9]
    model = _llama(0)
    model.generation_config.eos_token_id = [128, 2, 130]  # ints or lists, in either config
    assert config_stop_ids(model) == [2, 128, 130]
    assert stop_token_ids(model, Tok) == [2, 128, 130]
    tok = type("T", (), {"eos_token_id": 130})
    assert stop_token_ids(model, tok) == [130, 2, 128]  # the tokenizer's EOS is the primary
    assert stop_token_ids(model.config) == [2]
    model.save_pretrained(tmp_path)
    assert config_stop_ids(tmp_path) == [2, 128, 130]  # from config.json and generation_config.json


def test_response_mask_ends_at_the_first_of_several_stop_ids():
    b = 7
    ids = torch.tensor([[4, b, A, 9],      # ends at the secondary id (the primary after it is not reached)
                        [A, 5, b, 9],      # ends at the primary
                        [4, 5, 6, 8],      # no stop id: the length cap
                        [b, PAD, PAD, PAD]])
    mask, ended = response_mask_from_ids(ids, [A, b])
    assert mask.tolist() == [[1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]
    assert ended.tolist() == [True, True, False, True]
    mask_one, ended_one = response_mask_from_ids(ids, A)  # a single id, as before
    assert mask_one.tolist() == [[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1]]
    assert ended_one.tolist() == [True, True, False, False]


def _greedy_case():
    """A tiny Llama and a prompt whose greedy continuation has a fresh token at some step k ≥ 2 (that token then
    becomes the secondary EOS id). Found by trying seeds, so no float detail of this CPU decides it."""
    prompt = torch.tensor([[5, 9, 11, 13]])
    for seed in range(50):
        model = _llama(seed)
        out = model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False,
                             max_new_tokens=MAX_NEW, eos_token_id=A, pad_token_id=PAD)
        path = out[0, prompt.shape[1]:].tolist()
        k = _first_new(path)
        if k is not None:
            return model, prompt, path, k
    raise AssertionError("no tiny model with a usable greedy path in 50 seeds")


@pytest.mark.parametrize("given", ["tokenizer eos only", "every stop id"])
def test_transformers_backend_stops_at_a_secondary_eos_as_plain_generate_does(given):
    model, prompt, path, k = _greedy_case()
    b = path[k]
    model.generation_config.eos_token_id = [A, b]  # as Llama-3's generation config lists several
    mask = torch.ones_like(prompt)
    reference = model.generate(prompt, attention_mask=mask, do_sample=False, max_new_tokens=MAX_NEW,
                               eos_token_id=[A, b], pad_token_id=PAD)[0, prompt.shape[1]:].tolist()
    assert reference[:k + 1] == path[:k + 1] and reference[k] == b  # plain transformers stops at b

    eos = A if given == "tokenizer eos only" else stop_token_ids(model, Tok)
    rollout = TransformersGenerator(model).generate(prompt, mask, GenerationConfig(MAX_NEW, do_sample=False), eos, PAD)
    assert rollout.response_ids[0, :k + 1].tolist() == reference[:k + 1]
    assert rollout.response_mask[0].tolist() == [1] * (k + 1) + [0] * (rollout.response_ids.shape[1] - k - 1)
    assert bool(rollout.ended_with_eos[0])
    # the log-prob the update uses at the last kept position is that of b, the token sampled there, recomputed
    # here by a plain forward of prompt + response
    full = torch.cat([prompt, torch.tensor([path[:k + 1]])], dim=1)
    with torch.no_grad():
        expected = torch.log_softmax(model(full).logits[0, prompt.shape[1] + k - 1].float(), -1)[b]
    with torch.no_grad():
        logps = response_logprobs(model, rollout)
    torch.testing.assert_close(logps[0, k], expected, atol=1e-5, rtol=1e-5)
    assert float(logps[0, k]) < -1e-3  # a real log-prob, not a 0 of an added token


def test_row_seeded_samples_stop_at_the_first_secondary_eos_and_stay_reproducible():
    prompts = torch.tensor([[5, 9, 11], [PAD, 6, 8], [3, 4, 12]])
    mask = (prompts != PAD).long()
    seeds = row_seeds(7, 0, [0, 1, 2])
    config = GenerationConfig(max_new_tokens=MAX_NEW, temperature=1.0)
    for seed in range(50):
        model = _llama(seed)
        free = generate(model, prompts, mask, config, A, PAD, seeds=seeds)  # stops at A only
        paths = [row[m.bool()].tolist() for row, m in zip(free.response_ids, free.response_mask)]
        k = _first_new(paths[0])
        if k is not None:
            break
    else:
        raise AssertionError("no tiny model with a usable sampled path in 50 seeds")
    b = paths[0][k]
    model.generation_config.eos_token_id = [A, b]
    stopped = generate(model, prompts, mask, config, A, PAD, seeds=seeds)
    for row, path in enumerate(paths):  # each row: its unstopped sample, cut after its first A or b
        end = next((j + 1 for j, t in enumerate(path) if t in (A, b)), len(path))
        assert stopped.response_ids[row, :end].tolist() == path[:end]
        assert int(stopped.response_mask[row].sum()) == end
        assert bool(stopped.ended_with_eos[row]) == (path[end - 1] in (A, b))
    assert stopped.response_ids[0, k] == b and int(stopped.response_mask[0].sum()) == k + 1
    again = generate(model, prompts, mask, config, [A, b], PAD, seeds=seeds)
    assert torch.equal(again.response_ids, stopped.response_ids)


def test_min_new_tokens_holds_back_every_stop_id():
    """A model that puts almost all mass on the secondary EOS id b ends at once at b; with min_new_tokens=3 it
    writes three other tokens first (transformers' and the row-seeded sampler alike)."""
    b = 7
    model = _llama(0)
    model.generation_config.eos_token_id = [A, b]

    def favour_b(module, inputs, logits):
        logits = logits.clone()
        logits[..., b] += 30.0
        return logits

    model.lm_head.register_forward_hook(favour_b)
    ids = torch.tensor([[5, 9, 11]] * 2)
    mask = torch.ones_like(ids)
    for seeds in (None, row_seeds(0, 0, [0, 1])):
        free = generate(model, ids, mask, GenerationConfig(max_new_tokens=MAX_NEW), A, PAD, seeds=seeds)
        assert free.response_lengths.tolist() == [1, 1] and free.ended_with_eos.all()
        assert free.response_ids[:, 0].tolist() == [b, b]
        held = generate(model, ids, mask, GenerationConfig(max_new_tokens=MAX_NEW, min_new_tokens=3), A, PAD,
                        seeds=seeds)
        assert held.response_lengths.tolist() == [4, 4] and held.ended_with_eos.all()
        assert held.response_ids[:, 3].tolist() == [b, b]
        assert not torch.isin(held.response_ids[:, :3], torch.tensor([A, b])).any()


def test_the_reward_suffix_follows_the_stop_token_that_ended_the_response(tmp_path):
    """ChatML ends a turn with ``<|im_end|>\\n``. With a tokenizer whose EOS is ``<|endoftext|>`` (as Qwen2.5's base
    tokenizer), responses now stop at ``<|im_end|>`` (a generation-config EOS id), and the '\\n' the reward model
    saw after it in training is appended after it before scoring; a response cut at the length cap gets the
    whole end of turn."""
    from transformers import LlamaForSequenceClassification

    from tether.models.loading import load_tokenizer
    from tether.rollout.generation import Rollout
    from tether.rollout.rewards import RewardModelSource, end_of_turn_suffix

    tokenizer = load_tokenizer("embedded")
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    newline = tokenizer("\n", add_special_tokens=False).input_ids
    assert end_of_turn_suffix(tokenizer) == newline  # (its EOS is <|im_end|>)
    tokenizer.eos_token = "<|endoftext|>"
    endoftext = tokenizer.eos_token_id
    assert end_of_turn_suffix(tokenizer) == []  # <|endoftext|> is not in the rendered turn
    assert end_of_turn_suffix(tokenizer, end_token_id=im_end) == newline

    torch.manual_seed(0)
    rm = LlamaForSequenceClassification(LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32,
                                                    num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                                                    num_labels=1, pad_token_id=PAD))
    rm.save_pretrained(tmp_path)
    source = RewardModelSource(str(tmp_path), tokenizer)
    prompt = torch.tensor([[30, 31]] * 3)
    response = torch.tensor([[40, im_end, PAD], [40, 41, 42], [40, endoftext, PAD]])
    rollout = Rollout(prompt, torch.ones_like(prompt), response, torch.tensor([[1, 1, 0], [1, 1, 1], [1, 1, 0]]),
                      torch.tensor([True, False, True]))
    assert source.sequences(rollout) == [[30, 31, 40, im_end, *newline],  # ended by <|im_end|>: its suffix
                                         [30, 31, 40, 41, 42, im_end, *newline],  # cut at the cap: a finished turn
                                         [30, 31, 40, endoftext]]          # ended by the EOS: none rendered after it
    as_is = RewardModelSource(str(tmp_path), tokenizer, truncated="as_is")
    assert as_is.sequences(rollout)[1] == [30, 31, 40, 41, 42]  # the old reading, at a mid-sentence token


@pytest.mark.parametrize("chat_template", ["never", "auto"])
def test_a_truncated_response_is_scored_as_the_reward_model_was_trained(tmp_path, chat_template):
    """A response cut at max_new_tokens is scored in the rendering the reward model's training pairs had: the same
    token ids as encode_prompt_response gives for its text (EOS after plain text; ChatML's <|im_end|> + '\\n' in a
    chat), so the score is read at the end-of-turn token it was trained to score there. Catches: scoring truncated
    responses as they are (the sentiment quickstart's PPO learned to stop ending its answers to exploit that)."""
    from transformers import LlamaForSequenceClassification

    from tether.data.tokenize import encode_prompt_response
    from tether.models.loading import load_tokenizer
    from tether.rollout.rewards import RewardModelSource

    tokenizer = load_tokenizer("embedded")
    prompt_ids, _ = encode_prompt_response(tokenizer, "The room", "x", chat_template)
    response_text = " was on the third floor"
    response = tokenizer(response_text, add_special_tokens=False)["input_ids"]
    rm = LlamaForSequenceClassification(LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32,
                                                    num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                                                    num_labels=1, pad_token_id=PAD))
    rm.save_pretrained(tmp_path)
    source = RewardModelSource(str(tmp_path), tokenizer, chat_template=chat_template)
    rollout = Rollout(torch.tensor([prompt_ids]), torch.ones(1, len(prompt_ids), dtype=torch.long),
                      torch.tensor([response]), torch.ones(1, len(response), dtype=torch.long), torch.tensor([False]))
    trained_prompt, trained_response = encode_prompt_response(tokenizer, "The room", response_text, chat_template)
    assert source.sequences(rollout) == [trained_prompt + trained_response]
    assert trained_response[len(response):] == ([tokenizer.eos_token_id] if chat_template == "never" else
                                                 [tokenizer.eos_token_id, *tokenizer("\n", add_special_tokens=False)
                                                  .input_ids])
