"""Padding-free scoring gives the padded forward's log-probs, entropies and gradients."""

import pytest
import torch
from transformers import LlamaForCausalLM, LlamaForSequenceClassification

from tests.helpers import tiny_model_config
from tether.algos.logprobs import entropy_from_logits, token_logprobs
from tether.models.loading import load_causal_lm
from tether.models.scoring import pack, packing_isolates_documents, plan_packing, scored_logprobs
from tether.rollout.generation import position_ids


def test_first_fit_decreasing_plan_by_hand():
    # real lengths 5, 3, 2, 4 in a (4, 6) batch, left- and right-padded; width = the longest row, 5
    mask = torch.tensor([[1, 1, 1, 1, 1, 0],
                         [0, 0, 1, 1, 1, 0],
                         [0, 0, 0, 0, 1, 1],
                         [0, 1, 1, 1, 1, 0]])
    plan = plan_packing(mask)
    # longest first: row 0 opens bin 0 (5), row 3 opens bin 1 (4), row 1 does not fit either: bin 2 (3),
    # row 2 (2) fits after row 1 in bin 2 at column 3
    assert (plan.bin, plan.offset, plan.start, plan.length) == ([0, 2, 2, 1], [0, 0, 3, 0], [0, 2, 4, 1], [5, 3, 2, 4])
    assert (plan.n_bins, plan.width) == (3, 5)
    ids = torch.arange(24).view(4, 6)
    packed, positions = pack(ids, plan, pad_token_id=99)
    assert packed.tolist() == [[0, 1, 2, 3, 4], [19, 20, 21, 22, 99], [8, 9, 10, 16, 17]]
    assert positions.tolist() == [[0, 1, 2, 3, 4], [0, 1, 2, 3, 0], [0, 1, 2, 0, 1]]


def test_no_plan_when_packing_saves_little_or_the_mask_has_holes():
    full = torch.ones(4, 6, dtype=torch.long)
    full[0, 5] = 0  # one padding position of 24: nothing worth packing
    assert plan_packing(full) is None
    holes = torch.tensor([[1, 0, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0]])
    assert plan_packing(holes) is None
    assert plan_packing(torch.tensor([[1, 1, 0]])) is None  # one row


def _reference(model, ids, mask, score, temperature=1.0):
    """The padded forward: all logits, shifted, log-softmax at every position."""
    logits = model(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask)).logits[:, :-1].float()
    logits = logits / temperature
    scored = score[:, 1:].bool() & mask[:, 1:].bool()
    logps = token_logprobs(logits, ids[:, 1:], scored)
    entropy = entropy_from_logits(logits) * scored
    zero = torch.zeros(ids.shape[0], 1)
    return torch.cat([zero, logps], 1), torch.cat([zero, entropy], 1)


def _batch(right_padded_only=False):
    """A rollout-shaped batch: left-padded prompts, right-padded responses; scored = the response tokens.
    ``right_padded_only``: an SFT / DPO-shaped batch instead (prompt + response from column 0, right padding)."""
    torch.manual_seed(0)
    # real lengths 8, 3, 4, 5: packed into rows of 8 as [row 0], [row 3, row 1], [row 2, unused slots]
    prompt_lengths, response_lengths, n_prompt, n_response = [3, 2, 2, 4], [5, 1, 2, 1], 6, 7
    ids = torch.randint(5, 400, (4, n_prompt + n_response))
    mask = torch.zeros_like(ids)
    score = torch.zeros_like(ids)
    for b, (p, r) in enumerate(zip(prompt_lengths, response_lengths)):
        first = 0 if right_padded_only else n_prompt - p
        mask[b, first:first + p + r] = 1
        score[b, first + p:first + p + r] = 1
    return ids, mask, score


@pytest.fixture(scope="module")
def model():
    return load_causal_lm(tiny_model_config(), seed=0).eval()


@pytest.mark.parametrize("padding_free, right_padded_only", [(True, False), (False, False), (True, True), (False, True)])
def test_scored_logprobs_equal_the_padded_forward(model, padding_free, right_padded_only):
    """Packed rows, padded rows with the 2-D mask (left padding), padded rows without it (right padding only)."""
    ids, mask, score = _batch(right_padded_only)
    plan = plan_packing(mask)
    assert (plan.bin, plan.n_bins) == ([0, 1, 2, 1], 3)  # the packed path really runs, two documents share a row
    assert packing_isolates_documents(model)
    logps, entropy = scored_logprobs(model, ids, mask, score, temperature=0.7, padding_free=padding_free,
                                     return_entropy=True)
    ref_logps, ref_entropy = _reference(model, ids, mask, score, temperature=0.7)
    assert torch.allclose(logps, ref_logps, atol=1e-5), (logps - ref_logps).abs().max()
    assert torch.allclose(entropy, ref_entropy, atol=1e-5)
    assert (logps[~score.bool()] == 0).all() and (logps[score.bool()] < 0).all()


def test_right_padded_rows_score_the_same_without_the_mask(model):
    from tether.models.reward import reward_forward
    from tether.models.scoring import padded_forward_inputs

    ids, mask, score = _batch(right_padded_only=True)
    assert padded_forward_inputs(mask) == {} and "attention_mask" in padded_forward_inputs(_batch()[1])
    rm = LlamaForSequenceClassification(model.config.__class__(**{**model.config.to_dict(), "num_labels": 1,
                                                                   "pad_token_id": 0})).eval()
    ids = torch.where(mask.bool(), ids, torch.zeros_like(ids))  # the head reads the last non-pad token
    with_mask = rm(input_ids=ids, attention_mask=mask).logits[:, 0]
    assert torch.allclose(reward_forward(rm, ids, mask), with_mask, atol=1e-5)


def test_gradients_of_the_packed_forward_equal_the_padded_ones(model):
    ids, mask, score = _batch()
    grads = []
    for fn in (lambda: scored_logprobs(model, ids, mask, score), lambda: _reference(model, ids, mask, score)[0]):
        model.zero_grad()
        fn().sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for name in grads[0]:  # to float summation order, relative to the gradient's scale: the head's products
        #                     have other shapes here (9 scored rows against 52 padded ones), so MKL sums their
        #                     49k-long reductions in another order (~7e-6 of the tied embedding's largest entry)
        scale = max(1.0, float(grads[1][name].abs().max()))
        assert float((grads[0][name] - grads[1][name]).abs().max()) <= 1e-5 * scale, name


class LeakyLlama(LlamaForCausalLM):
    """A forward that attends across packed documents (and has no ``logits_to_keep``): must not be packed."""

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, use_cache=None, **kwargs):
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        return super().forward(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                               use_cache=use_cache, **kwargs)


def test_a_model_that_leaks_across_documents_is_scored_padded(model):
    leaky = LeakyLlama(model.config).eval()
    leaky.load_state_dict(model.state_dict())
    assert not packing_isolates_documents(leaky)
    ids, mask, score = _batch()
    logps = scored_logprobs(leaky, ids, mask, score)
    assert torch.allclose(logps, _reference(model, ids, mask, score)[0], atol=1e-5)


def test_a_scored_token_after_padding_is_refused(model):
    ids, mask, score = _batch()
    score[0, 3] = 1  # row 0's prompt starts at column 3: its first token would be scored from padding
    with pytest.raises(ValueError, match="follows a padding position"):
        scored_logprobs(model, ids, mask, score)


@pytest.mark.parametrize("padding_free", [True, False])
def test_the_head_runs_on_the_scored_positions_alone(model, padding_free):
    """Packed rows of different layouts score nearly every column between them; the head still sees one hidden
    state per scored token (9 here), not every position of those columns."""
    ids, mask, score = _batch()
    seen = []
    handle = model.lm_head.register_forward_hook(lambda _m, args, _out: seen.append(tuple(args[0].shape)))
    try:
        logps = scored_logprobs(model, ids, mask, score, padding_free=padding_free)
    finally:
        handle.remove()
    n_scored = int(score[:, 1:].sum())
    assert seen == [(1, n_scored, model.config.hidden_size)] and n_scored == 9
    assert torch.allclose(logps, _reference(model, ids, mask, score)[0], atol=1e-5)


class TwiceHeadLlama(LlamaForCausalLM):
    """A forward that calls its head twice (an auxiliary head pass): the selection must not be applied to it."""

    def forward(self, *args, **kwargs):
        out = super().forward(*args, **kwargs)
        self.lm_head(torch.zeros(1, 2, self.config.hidden_size))
        return out


def test_a_model_that_calls_its_head_otherwise_is_scored_from_full_logits(model):
    odd = TwiceHeadLlama(model.config).eval()
    odd.load_state_dict(model.state_dict())
    ids, mask, score = _batch()
    logps = scored_logprobs(odd, ids, mask, score)
    assert torch.allclose(logps, _reference(model, ids, mask, score)[0], atol=1e-5)
