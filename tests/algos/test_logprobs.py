import math

import pytest
import torch

from tether.algos.logprobs import (
    count_tokens,
    entropy_from_logits,
    sequence_logprobs,
    shift_for_next_token,
    token_logprobs,
)


def _log_softmax_by_hand(row, index):
    return row[index] - math.log(sum(math.exp(v) for v in row))


def test_token_logprobs_by_hand():
    logits = torch.tensor([[[1.0, 2.0, 0.0], [0.5, 0.5, 3.0]]])  # (1, 2, 3)
    labels = torch.tensor([[1, 2]])
    out = token_logprobs(logits, labels)
    assert out.dtype == torch.float32
    assert out[0, 0].item() == pytest.approx(_log_softmax_by_hand([1.0, 2.0, 0.0], 1), abs=1e-6)
    assert out[0, 1].item() == pytest.approx(_log_softmax_by_hand([0.5, 0.5, 3.0], 2), abs=1e-6)
    masked = token_logprobs(logits, torch.tensor([[1, -100]]), torch.tensor([[1, 0]]))
    assert masked[0, 1].item() == 0.0 and masked[0, 0].item() == out[0, 0].item()


def test_bf16_logits_are_scored_in_fp32():
    logits = torch.tensor([[[1.0, 2.0, 0.0]]], dtype=torch.bfloat16)
    assert token_logprobs(logits, torch.tensor([[0]])).dtype == torch.float32


def _bigram_logits(input_ids, table):
    """A 'model' whose output at position t depends only on token t (like a bigram LM)."""
    return table[input_ids]  # (B, T, V)


def test_sequence_logprobs_uses_the_causal_shift():
    table = torch.log_softmax(torch.tensor([[0.0, 1.0, 2.0], [2.0, 0.0, 1.0], [1.0, 2.0, 0.0]]), dim=-1)
    input_ids = torch.tensor([[0, 1, 2]])
    loss_mask = torch.tensor([[0, 1, 1]])  # score tokens 1 and 2 (the "response")
    # by hand: log p(1 | prev 0) + log p(2 | prev 1) from the table rows
    expected = table[0, 1].item() + table[1, 2].item()
    got = sequence_logprobs(_bigram_logits(input_ids, table), input_ids, loss_mask)
    assert got.item() == pytest.approx(expected, abs=1e-6)
    # the unshifted (wrong) alignment gives a different number, so an off-by-one is caught
    wrong = token_logprobs(_bigram_logits(input_ids, table), input_ids, loss_mask).sum()
    assert abs(wrong.item() - expected) > 0.1
    assert sequence_logprobs(_bigram_logits(input_ids, table), input_ids, loss_mask, average=True).item() == \
        pytest.approx(expected / 2, abs=1e-6)
    assert count_tokens(loss_mask).tolist() == [2]


def test_padding_side_does_not_change_sequence_logprobs():
    torch.manual_seed(0)
    table = torch.randn(5, 5)
    seqs = [[1, 2, 3, 4], [2, 4]]
    response = [[0, 0, 1, 1], [0, 1]]
    pad = 0
    right = torch.tensor([s + [pad] * (4 - len(s)) for s in seqs])
    right_mask = torch.tensor([m + [0] * (4 - len(m)) for m in response])
    left = torch.tensor([[pad] * (4 - len(s)) + s for s in seqs])
    left_mask = torch.tensor([[0] * (4 - len(m)) + m for m in response])
    a = sequence_logprobs(_bigram_logits(right, table), right, right_mask)
    b = sequence_logprobs(_bigram_logits(left, table), left, left_mask)
    assert torch.allclose(a, b, atol=1e-6)


def test_shift_shapes():
    logits, labels, mask = shift_for_next_token(torch.zeros(2, 5, 7), torch.zeros(2, 5, dtype=torch.long),
                                                torch.ones(2, 5))
    assert logits.shape == (2, 4, 7) and labels.shape == (2, 4) and mask.shape == (2, 4)


def test_entropy_by_hand():
    assert entropy_from_logits(torch.zeros(1, 1, 4)).item() == pytest.approx(math.log(4), abs=1e-6)
    p = [math.exp(v) for v in (1.0, 0.0)]
    p = [x / sum(p) for x in p]
    expected = -sum(x * math.log(x) for x in p)
    assert entropy_from_logits(torch.tensor([[[1.0, 0.0]]])).item() == pytest.approx(expected, abs=1e-6)
