"""Row-seeded sampling: an exact sample of the tempered (nucleus-truncated) distribution, independent of the batch."""

import math

import torch

from tests.helpers import tiny_model_config
from tether.rollout.generation import GenerationConfig, RowSeededSampler, generate, nucleus, row_seeds


def test_nucleus_keeps_the_smallest_set_with_mass_at_least_top_p():
    logps = torch.tensor([[0.15, 0.5, 0.05, 0.3]]).log()
    kept = nucleus(logps, 0.8).isfinite()  # 0.5 + 0.3 = 0.8 reaches top_p: 0.15 and 0.05 go
    assert kept.tolist() == [[False, True, False, True]]
    assert nucleus(logps, 0.81).isfinite().tolist() == [[True, True, False, True]]  # 0.95 needed
    assert nucleus(logps, 0.1).isfinite().tolist() == [[False, True, False, False]]  # the top token always stays


def test_gumbel_max_frequencies_match_the_tempered_softmax():
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0])
    temperature = 2.0
    expected = torch.softmax(logits / temperature, -1)  # [0.455, 0.276, 0.167, 0.102]
    sampler = RowSeededSampler([7], temperature, 1.0)
    draws = torch.tensor([int(sampler(None, logits[None]).argmax()) for _ in range(20_000)])
    freq = torch.bincount(draws, minlength=4).float() / len(draws)
    # 4 standard errors of a binomial frequency at n = 20000 is at most 0.0142
    assert (freq - expected).abs().max() < 4 * math.sqrt(0.25 / len(draws)), (freq, expected)
    truncated = RowSeededSampler([7], 1.0, 0.7)  # softmax(logits) = [0.644, 0.237, 0.087, 0.032]: keep 2
    picks = {int(truncated(None, logits[None]).argmax()) for _ in range(2000)}
    assert picks == {0, 1}


def test_a_row_samples_the_same_response_in_any_batch():
    from tether.models.loading import load_causal_lm, load_tokenizer

    tokenizer = load_tokenizer("embedded")
    model = load_causal_lm(tiny_model_config(), seed=0, pad_token_id=tokenizer.pad_token_id)
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    prompts = [tokenizer("Tell me about the sea in one line").input_ids, tokenizer("Hi").input_ids]

    def batch(rows):
        width = max(len(r) for r in rows)
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
        return ids, mask

    config = GenerationConfig(max_new_tokens=10, temperature=1.0)
    seeds = row_seeds(3, 0, [0, 1])
    both = generate(model, *batch(prompts), config, eos, pad, seeds=seeds)
    alone = generate(model, *batch(prompts[1:]), config, eos, pad, seeds=seeds[1:])  # other padding, other batch
    n = int(alone.response_mask[0].sum())
    assert both.response_ids[1, :n].tolist() == alone.response_ids[0, :n].tolist()
    other_seed = generate(model, *batch(prompts[1:]), config, eos, pad, seeds=row_seeds(4, 0, [1]))
    assert other_seed.response_ids[0].tolist() != alone.response_ids[0].tolist()


def test_min_new_tokens_holds_back_eos_in_both_samplers():
    """A model that puts almost all mass on EOS stops at once; with min_new_tokens=5 every response has five
    other tokens and then the EOS (length 6), with transformers' sampler and with the row-seeded one."""
    from tether.models.loading import load_causal_lm, load_tokenizer

    tokenizer = load_tokenizer("embedded")
    model = load_causal_lm(tiny_model_config(), seed=0, pad_token_id=tokenizer.pad_token_id)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id

    def favour_eos(module, inputs, logits):
        logits = logits.clone()
        logits[..., eos] += 30.0
        return logits

    model.lm_head.register_forward_hook(favour_eos)
    ids = torch.tensor([tokenizer("Hi there").input_ids] * 3)
    mask = torch.ones_like(ids)
    for seeds in (None, row_seeds(0, 0, [0, 1, 2])):
        free = generate(model, ids, mask, GenerationConfig(max_new_tokens=8), eos, pad, seeds=seeds)
        assert free.response_lengths.tolist() == [1, 1, 1] and free.ended_with_eos.all()
        held = generate(model, ids, mask, GenerationConfig(max_new_tokens=8, min_new_tokens=5), eos, pad, seeds=seeds)
        assert held.response_lengths.tolist() == [6, 6, 6] and held.ended_with_eos.all()
        assert (held.response_ids[:, :5] != eos).all()


def test_samples_of_one_prompt_share_its_prefill_and_sample_what_separate_prefills_do():
    from tether.models.loading import load_causal_lm, load_tokenizer

    tokenizer = load_tokenizer("embedded")
    model = load_causal_lm(tiny_model_config(), seed=0, pad_token_id=tokenizer.pad_token_id)
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    long, short = tokenizer("Tell me about the sea in one line").input_ids, tokenizer("Hi there").input_ids
    width = len(long)
    rows = [long, long, long, short, short, short]  # two groups of 3, the second left-padded
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    forwards = []
    hook = model.register_forward_pre_hook(lambda m, a, kw: forwards.append(tuple(kw["input_ids"].shape)),
                                           with_kwargs=True)
    config = GenerationConfig(max_new_tokens=8, temperature=1.0)
    seeds = row_seeds(5, 0, list(range(6)))
    shared = generate(model, ids, mask, config, eos, pad, seeds=seeds)
    assert forwards[:2] == [(2, width - 1), (6, 1)]  # each prompt once, then every row's last prompt token
    forwards.clear()
    separate = generate(model, ids, mask, config, eos, pad, seeds=seeds, share_prompts=False)
    hook.remove()
    assert forwards[0] == (6, width)
    assert shared.response_ids.tolist() == separate.response_ids.tolist()
    assert shared.response_mask.tolist() == separate.response_mask.tolist()
    assert len({tuple(r) for r in shared.response_ids[:3].tolist()}) > 1  # the group's samples differ
    # the cached prefix holds the same keys and values as the full-batch prefill
    from tether.rollout.generation import position_ids, shared_prompt_cache

    cache = shared_prompt_cache(model, ids, mask)
    with torch.no_grad():
        full = model(input_ids=ids[:, :-1], attention_mask=mask[:, :-1], position_ids=position_ids(mask)[:, :-1],
                     use_cache=True).past_key_values
    for ours, theirs in zip(cache.layers, full.layers):
        keep = mask[:, :-1].bool()  # (padding positions' keys are never attended to)
        assert torch.allclose(ours.keys.transpose(1, 2)[keep], theirs.keys.transpose(1, 2)[keep], atol=1e-5)
        assert torch.allclose(ours.values.transpose(1, 2)[keep], theirs.values.transpose(1, 2)[keep], atol=1e-5)


def test_distinct_prompts_are_prefilled_as_usual():
    from tether.models.loading import load_causal_lm
    from tether.rollout.generation import shared_prompt_cache

    model = load_causal_lm(tiny_model_config(), seed=0)
    ids = torch.tensor([[5, 6, 7], [5, 6, 8]])
    assert shared_prompt_cache(model, ids, torch.ones_like(ids)) is None
    assert shared_prompt_cache(model, ids[:, :1], torch.ones_like(ids[:, :1])) is None  # a one-token prompt
