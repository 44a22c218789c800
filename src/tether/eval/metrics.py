"""Evaluation metrics for generated text, as small pure functions.

- :func:`distinct_n`: unique n-grams / all n-grams over a set of responses (diversity).
- :func:`self_bleu`: mean BLEU of each response against all the others (mode collapse:
  1.0 means every response says the same thing).
- :func:`sequence_kl`: KL of a policy to its reference on the policy's own samples,
  Σ_t (log π − log π_ref) over response tokens — an unbiased estimate of KL(π‖π_ref).
- :func:`win_rate`: how often one system beats another, ties counting one half.
- :func:`top_ngram_share` / :func:`repeated_ngram_fraction`: a single phrase taking over.
- :func:`perplexity`: exp of the mean token negative log-likelihood.

Words are lower-cased ``[a-z0-9']+`` tokens, so the numbers do not depend on a tokenizer.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

import torch

WORD = re.compile(r"[a-z0-9']+")


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct-n (Li et al. 2016): unique n-grams / total n-grams over all texts (0 when there are none)."""
    grams = [g for text in texts for g in ngrams(words(text), n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def bleu(hypothesis: Sequence[str], references: Sequence[Sequence[str]], max_n: int = 4) -> float:
    """Sentence BLEU with clipped n-gram precisions, uniform weights and add-one smoothing for n > 1.

    p_1 = clipped matches / hypothesis unigrams; p_n = (clipped matches + 1) / (hypothesis
    n-grams + 1) for n > 1 (Lin & Och 2004), BP = exp(1 − r/c) when the hypothesis (length
    c) is shorter than the closest reference length r. 0 for an empty hypothesis or no
    unigram match.
    """
    if not hypothesis or not references:
        return 0.0
    log_sum = 0.0
    for n in range(1, max_n + 1):
        hyp = Counter(ngrams(hypothesis, n))
        most = Counter()
        for ref in references:
            for gram, count in Counter(ngrams(ref, n)).items():
                most[gram] = max(most[gram], count)
        matches = sum(min(count, most[gram]) for gram, count in hyp.items())
        total = sum(hyp.values())
        if n == 1:
            if matches == 0:
                return 0.0
            precision = matches / total
        else:
            precision = (matches + 1) / (total + 1)
        log_sum += math.log(precision) / max_n
    c = len(hypothesis)
    r = min((len(ref) for ref in references), key=lambda length: (abs(length - c), length))
    brevity = 1.0 if c > r else math.exp(1 - r / c)
    return brevity * math.exp(log_sum)


def self_bleu(texts: Sequence[str], max_n: int = 4) -> float:
    """Mean BLEU of each text against all the others (Zhu et al. 2018); needs at least two texts."""
    if len(texts) < 2:
        raise ValueError("self_bleu needs at least two texts")
    tokenised = [words(t) for t in texts]
    scores = [bleu(hyp, tokenised[:i] + tokenised[i + 1:], max_n) for i, hyp in enumerate(tokenised)]
    return sum(scores) / len(scores)


def sequence_kl(logps: torch.Tensor, ref_logps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B,) Σ over response tokens of log π − log π_ref, in fp32 (samples must come from π)."""
    return ((logps.float() - ref_logps.float()) * mask.float()).sum(-1)


def mean_token_entropy(entropy: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B,) each response's mean per-token entropy (nats) over its response tokens, from ``entropy`` (B, R) as
    ``response_logprobs(..., return_entropy=True)`` gives it; 0 for a response with no token."""
    mask = mask.float()
    return (entropy.float() * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)


def win_rate(scores_a: Sequence[float], scores_b: Sequence[float]) -> float:
    """Fraction of paired comparisons A wins, ties counting one half."""
    if len(scores_a) != len(scores_b) or not scores_a:
        raise ValueError("win_rate needs two equally long, non-empty lists of scores")
    return sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(scores_a, scores_b)) / len(scores_a)


def repeated_ngram_fraction(text: str, n: int = 3) -> float:
    """1 − unique / total word n-grams of one text (0 for no repetition)."""
    grams = ngrams(words(text), n)
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def top_ngram_share(texts: Sequence[str], n: int = 3) -> tuple[float, str]:
    """Share of responses containing the most widespread word n-gram, and that n-gram.

    When one phrase (a hack the reward model likes) spreads to every response, this goes
    to 1.0 while a healthy policy keeps it low.
    """
    counts = Counter(g for text in texts for g in set(ngrams(words(text), n)))
    if not counts or not texts:
        return 0.0, ""
    gram, count = counts.most_common(1)[0]
    return count / len(texts), " ".join(gram)


def perplexity(nll_sum: float, n_tokens: int) -> float:
    """exp(Σ NLL / tokens)."""
    if n_tokens <= 0:
        raise ValueError("perplexity needs at least one token")
    return math.exp(nll_sum / n_tokens)
