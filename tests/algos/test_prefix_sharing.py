"""Sequences with the same prompt run as one row (the prompt once) and score exactly as they do apart."""

import pytest
import torch
from transformers import LlamaForCausalLM, LlamaForSequenceClassification

from tests.algos.test_scoring import _reference
from tests.helpers import tiny_model_config
from tether.models.loading import load_causal_lm
from tether.models.prefix_sharing import plan_prefix_sharing, prefix_sharing_works, shared_inputs
from tether.models.reward import reward_forward
from tether.models.scoring import plan_packing, prompt_lengths, scored_logprobs


def test_sharing_plan_by_hand():
    # rows 0 and 2 have the prompt [7, 8, 9], row 1 another one, row 3 row 1's; right padding, width 7
    ids = torch.tensor([[7, 8, 9, 1, 2, 0, 0],
                        [5, 6, 3, 0, 0, 0, 0],
                        [7, 8, 9, 4, 4, 4, 0],
                        [5, 6, 2, 2, 0, 0, 0]])
    mask = (ids > 0).long()
    plan = plan_prefix_sharing(ids, mask, [3, 2, 3, 2], max_width=16)
    # group [7, 8, 9]: row 0's continuation at 3–4, row 2's at 5–7 (width 8); group [5, 6]: row 1 at 2, row 3 at 3–4
    assert (plan.row, plan.prefix, plan.offset) == ([0, 1, 0, 1], [3, 2, 3, 2], [3, 2, 5, 3])
    assert (plan.n_rows, plan.width) == (2, 8)
    assert plan.columns(2) == [0, 1, 2, 5, 6, 7] and plan.columns(3) == [0, 1, 3, 4]
    inputs = shared_inputs(ids, plan, pad_token_id=0, dtype=torch.float32)
    assert inputs["input_ids"].tolist() == [[7, 8, 9, 1, 2, 4, 4, 4], [5, 6, 3, 2, 2, 0, 0, 0]]
    assert inputs["position_ids"].tolist() == [[0, 1, 2, 3, 4, 3, 4, 5], [0, 1, 2, 2, 3, 0, 0, 0]]
    allowed = (inputs["attention_mask"][:, 0] == 0).int()
    assert allowed[0].tolist() == [[1, 0, 0, 0, 0, 0, 0, 0],   # the prompt: causal over the prompt
                                   [1, 1, 0, 0, 0, 0, 0, 0],
                                   [1, 1, 1, 0, 0, 0, 0, 0],
                                   [1, 1, 1, 1, 0, 0, 0, 0],   # row 0's continuation: the prompt and itself
                                   [1, 1, 1, 1, 1, 0, 0, 0],
                                   [1, 1, 1, 0, 0, 1, 0, 0],   # row 2's: the prompt and itself, not row 0's
                                   [1, 1, 1, 0, 0, 1, 1, 0],
                                   [1, 1, 1, 0, 0, 1, 1, 1]]
    assert allowed[1, 5:].tolist() == [[0, 0, 0, 0, 0, 1, 0, 0],  # padding attends to padding only
                                       [0, 0, 0, 0, 0, 1, 1, 0],
                                       [0, 0, 0, 0, 0, 1, 1, 1]]
    assert inputs["attention_mask"].min() == torch.finfo(torch.float32).min


def test_no_sharing_plan_without_shared_prompts_or_savings():
    ids = torch.tensor([[7, 8, 9, 1], [5, 6, 3, 2]])
    assert plan_prefix_sharing(ids, torch.ones_like(ids), [3, 2], max_width=16) is None  # prompts differ
    same = torch.tensor([[7, 8, 1, 2, 3, 4, 5, 6], [7, 8, 9, 9, 9, 9, 9, 9]])
    # the shared prompt is 2 of 16 positions: the row (14 wide) saves only 12%
    assert plan_prefix_sharing(same, torch.ones_like(same), [2, 2], max_width=32) is None
    wide = torch.tensor([[7, 8, 9, 1, 2], [7, 8, 9, 3, 4], [7, 8, 9, 5, 6], [7, 8, 9, 6, 5]])
    split = plan_prefix_sharing(wide, torch.ones_like(wide), [3] * 4, max_width=7)  # two continuations per row
    assert (split.row, split.offset, split.n_rows, split.width) == ([0, 0, 1, 1], [3, 5, 3, 5], 2, 7)


def _grouped_batch(right_padded_only: bool):
    """Rows 0–2 answer one prompt (4 tokens), row 3 another (2), row 4 the first again: a GRPO-shaped rollout
    (left-padded prompts, right-padded responses) or a DPO-shaped batch (right padding only)."""
    torch.manual_seed(1)
    prompt_a, prompt_b = torch.randint(5, 400, (4,)), torch.randint(5, 400, (2,))
    prompts, responses = [prompt_a, prompt_a, prompt_a, prompt_b, prompt_a], [5, 1, 3, 6, 2]
    width = 4 + 6
    ids = torch.zeros(5, width, dtype=torch.long)
    mask, score = torch.zeros_like(ids), torch.zeros_like(ids)
    for b, (prompt, r) in enumerate(zip(prompts, responses)):
        first = 0 if right_padded_only else 4 - len(prompt)
        ids[b, first:first + len(prompt)] = prompt
        ids[b, first + len(prompt):first + len(prompt) + r] = torch.randint(5, 400, (r,))
        mask[b, first:first + len(prompt) + r] = 1
        score[b, first + len(prompt):first + len(prompt) + r] = 1
    return ids, mask, score


@pytest.fixture(scope="module")
def model():
    return load_causal_lm(tiny_model_config(), seed=0).eval()


@pytest.mark.parametrize("right_padded_only", [False, True])
def test_shared_rows_score_what_the_padded_forward_scores(model, right_padded_only):
    ids, mask, score = _grouped_batch(right_padded_only)
    plan = plan_prefix_sharing(ids, mask, prompt_lengths(score.bool(), mask.bool()), max_width=64)
    assert (plan.row, plan.n_rows, plan.width) == ([0, 0, 0, 1, 0], 2, 4 + 5 + 1 + 3 + 2)  # the shared path runs
    packing = plan_packing(mask)
    assert packing is None or packing.n_bins * packing.width > plan.n_rows * plan.width  # and is chosen
    assert prefix_sharing_works(model)
    logps, entropy = scored_logprobs(model, ids, mask, score, temperature=0.7, return_entropy=True,
                                     share_prefixes=True)
    ref_logps, ref_entropy = _reference(model, ids, mask, score, temperature=0.7)
    assert torch.allclose(logps, ref_logps, atol=1e-5), (logps - ref_logps).abs().max()
    assert torch.allclose(entropy, ref_entropy, atol=1e-5)
    assert (logps[~score.bool()] == 0).all() and (logps[score.bool()] < 0).all()


def test_gradients_through_a_shared_prompt_equal_the_separate_forwards(model):
    """The prompt's activations serve every continuation: their gradients add up as in separate rows."""
    ids, mask, score = _grouped_batch(right_padded_only=False)
    grads = []
    for fn in (lambda: scored_logprobs(model, ids, mask, score, share_prefixes=True),
               lambda: _reference(model, ids, mask, score)[0]):
        model.zero_grad()
        (fn() * torch.linspace(0.5, 1.5, ids.shape[1])).sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for name in grads[0]:
        assert torch.allclose(grads[0][name], grads[1][name], atol=1e-5), name


def test_reward_model_pairs_share_their_prompt(model):
    """A pair's chosen and rejected in one row: each score read at its own last token, as the padded forward's."""
    config = model.config.__class__(**{**model.config.to_dict(), "num_labels": 1, "pad_token_id": 0})
    torch.manual_seed(2)
    rm = LlamaForSequenceClassification(config).eval()
    ids, mask, score = _grouped_batch(right_padded_only=True)
    ids = torch.where(mask.bool(), ids, torch.zeros_like(ids))
    prompts = prompt_lengths(score.bool(), mask.bool())
    assert prompts == [4, 4, 4, 2, 4] and prefix_sharing_works(rm)
    shared = reward_forward(rm, ids, mask, prompts)
    alone = rm(input_ids=ids, attention_mask=mask).logits[:, 0]
    assert torch.allclose(shared, alone, atol=1e-5), (shared - alone).abs().max()
    rm.zero_grad()
    reward_forward(rm, ids, mask, prompts).sum().backward()
    shared_grads = {n: p.grad.clone() for n, p in rm.named_parameters()}
    rm.zero_grad()
    rm(input_ids=ids, attention_mask=mask).logits[:, 0].sum().backward()
    for name, param in rm.named_parameters():
        assert torch.allclose(shared_grads[name], param.grad, atol=1e-5), name


class MaskIgnoringLlama(LlamaForCausalLM):
    """A forward that drops custom 4-D masks (as flash-attention kernels do): continuations would see each other."""

    def forward(self, input_ids=None, attention_mask=None, **kwargs):
        if attention_mask is not None and attention_mask.dim() == 4:
            attention_mask = None
        return super().forward(input_ids=input_ids, attention_mask=attention_mask, **kwargs)


def test_a_model_that_ignores_custom_masks_runs_each_sequence_alone(model):
    ignoring = MaskIgnoringLlama(model.config).eval()
    ignoring.load_state_dict(model.state_dict())
    assert not prefix_sharing_works(ignoring)
    ids, mask, score = _grouped_batch(right_padded_only=False)
    logps = scored_logprobs(ignoring, ids, mask, score, share_prefixes=True)
    assert torch.allclose(logps, _reference(model, ids, mask, score)[0], atol=1e-5)
