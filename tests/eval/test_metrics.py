"""Evaluation metrics against values worked out by hand."""

import math

import pytest
import torch

from tether.eval.metrics import (
    bleu,
    distinct_n,
    mean_token_entropy,
    perplexity,
    repeated_ngram_fraction,
    self_bleu,
    sequence_kl,
    top_ngram_share,
    win_rate,
)


def test_distinct_n_by_hand():
    texts = ["the cat sat", "the cat ran"]
    # unigrams: the cat sat the cat ran → 4 unique of 6
    assert distinct_n(texts, 1) == pytest.approx(4 / 6)
    # bigrams: (the cat) (cat sat) (the cat) (cat ran) → 3 unique of 4
    assert distinct_n(texts, 2) == pytest.approx(3 / 4)
    assert distinct_n(["Same same", "same SAME"], 1) == pytest.approx(1 / 4)  # case-folded
    assert distinct_n(["one"], 2) == 0.0


def test_bleu_by_hand():
    hyp, ref = "the cat sat on the mat".split(), "the cat sat on a mat".split()
    # p1 = 5/6 ('the' clipped to 1), p2 = (3 + 1)/(5 + 1), equal lengths → BP = 1
    assert bleu(hyp, [ref], max_n=2) == pytest.approx(math.sqrt(5 / 6 * 4 / 6))
    # a short hypothesis: p1 = p2 = 1, BP = exp(1 − 4/2)
    assert bleu(["a", "b"], [["a", "b", "c", "d"]], max_n=2) == pytest.approx(math.exp(-1))
    assert bleu(["x"], [["a", "b"]]) == 0.0


def test_self_bleu_by_hand():
    # the two identical texts score 1 against each other, the third matches nothing → (1 + 1 + 0) / 3
    assert self_bleu(["a b c", "a b c", "x y z"], max_n=2) == pytest.approx(2 / 3)
    assert self_bleu(["a b c", "d e f"], max_n=2) == 0.0
    with pytest.raises(ValueError):
        self_bleu(["alone"])


def test_sequence_kl_sums_only_response_tokens():
    logps = torch.tensor([[-1.0, -2.0, -0.5], [-0.1, -0.2, -9.0]])
    ref = torch.tensor([[-1.5, -1.0, -0.5], [-0.3, -0.2, -0.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 0]])
    # row 0: (−1 + 1.5) + (−2 + 1) = −0.5; row 1: 0.2 + 0 = 0.2 (the masked −9 vs 0 is ignored)
    assert torch.allclose(sequence_kl(logps, ref, mask), torch.tensor([-0.5, 0.2]))
    assert sequence_kl(logps.half(), ref.half(), mask).dtype == torch.float32


def test_mean_token_entropy_averages_each_response_over_its_own_tokens():
    entropy = torch.tensor([[1.0, 2.0, 9.0], [0.5, 7.0, 7.0], [3.0, 3.0, 3.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0], [0, 0, 0]])
    # (1 + 2) / 2, 0.5 / 1, and no token at all → 0 (not 9, 7 or a division by zero)
    assert mean_token_entropy(entropy, mask).tolist() == [1.5, 0.5, 0.0]


def test_win_rate_counts_ties_as_half():
    assert win_rate([3, 1, 2, 5], [1, 1, 4, 0]) == pytest.approx((1 + 0.5 + 0 + 1) / 4)
    with pytest.raises(ValueError):
        win_rate([1], [1, 2])


def test_repetition_measures():
    # trigrams of "go go go go go": 3, all the same → 1 − 1/3
    assert repeated_ngram_fraction("go go go go go") == pytest.approx(2 / 3)
    assert repeated_ngram_fraction("a b c d") == 0.0
    share, gram = top_ngram_share(["buy now today please", "please buy now today", "something else entirely"])
    assert (share, gram) == (pytest.approx(2 / 3), "buy now today")


def test_perplexity():
    assert perplexity(2 * math.log(4), 2) == pytest.approx(4.0)
