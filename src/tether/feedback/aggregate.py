"""Turn several annotators' votes into one label per item: majority vote, Dawid–Skene, Borda.

Dawid & Skene (1979) model each annotator with a confusion matrix π_a[true, given] and
estimate, by EM, both the matrices and the posterior of each item's true label. Unlike a
majority vote, it down-weights noisy annotators and can even use a systematically wrong
one (an annotator who always picks the other answer is informative once detected).

K-way rankings are combined with a Borda count (:func:`borda_ranks`): each response's mean
position over the annotators' rankings, ties where the means are equal.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from itertools import combinations

import torch

Annotation = tuple[Hashable, Hashable, int]  # (item, annotator, label index)


def majority_vote(labels: Sequence[Hashable]) -> tuple[Hashable | None, float]:
    """(winning label or None on a tie for first place, fraction of votes it got)."""
    if not labels:
        raise ValueError("majority_vote needs at least one label")
    ranked = Counter(labels).most_common()
    top, votes = ranked[0]
    if len(ranked) > 1 and ranked[1][1] == votes:
        return None, votes / len(labels)
    return top, votes / len(labels)


@dataclass
class DawidSkeneResult:
    items: list[Hashable]
    annotators: list[Hashable]
    posteriors: torch.Tensor     # (n_items, n_classes) P(true label | all votes)
    confusions: torch.Tensor     # (n_annotators, n_classes, n_classes) P(given label | true label)
    priors: torch.Tensor         # (n_classes,)

    def labels(self) -> dict[Hashable, int]:
        return {item: int(self.posteriors[i].argmax()) for i, item in enumerate(self.items)}

    def accuracy(self, annotator: Hashable) -> float:
        """The annotator's estimated accuracy: Σ_c prior_c · π_a[c, c]."""
        a = self.annotators.index(annotator)
        return float((self.priors * torch.diagonal(self.confusions[a])).sum())


def dawid_skene(annotations: Sequence[Annotation], n_classes: int, iterations: int = 100,
                smoothing: float = 0.01, tol: float = 1e-8) -> DawidSkeneResult:
    """EM for the Dawid–Skene model, initialised from (soft) majority votes."""
    items = sorted({a[0] for a in annotations}, key=str)
    annotators = sorted({a[1] for a in annotations}, key=str)
    item_index = {x: i for i, x in enumerate(items)}
    annotator_index = {x: i for i, x in enumerate(annotators)}
    votes = torch.zeros(len(items), len(annotators), n_classes, dtype=torch.float64)
    for item, annotator, label in annotations:
        if not 0 <= label < n_classes:
            raise ValueError(f"label {label} of item {item!r} is outside 0..{n_classes - 1}")
        votes[item_index[item], annotator_index[annotator], label] += 1
    posteriors = votes.sum(1) + smoothing
    posteriors = posteriors / posteriors.sum(-1, keepdim=True)
    previous = None
    for _ in range(iterations):
        # M-step: priors and confusion matrices from the current posteriors
        priors = posteriors.mean(0)
        confusions = torch.einsum("ic,iak->ack", posteriors, votes) + smoothing
        confusions = confusions / confusions.sum(-1, keepdim=True)
        # E-step: posterior of each item's true label
        log_post = priors.log().unsqueeze(0) + torch.einsum("iak,ack->ic", votes, confusions.log())
        posteriors = torch.softmax(log_post, dim=-1)
        if previous is not None and (posteriors - previous).abs().max() < tol:
            break
        previous = posteriors
    return DawidSkeneResult(items, annotators, posteriors.float(), confusions.float(), priors.float())


def group_by_item(annotations: Sequence[Annotation]) -> dict[Hashable, list[int]]:
    grouped: dict[Hashable, list[int]] = defaultdict(list)
    for item, _, label in annotations:
        grouped[item].append(label)
    return dict(grouped)


def positions(ranking: Sequence[int], k: int) -> list[Fraction]:
    """Position (0 = best) of each of ``k`` responses in a ranking given best first.

    A partial ranking (a top choice, or the first m places) leaves the other responses tied
    at the mean of the remaining positions: ``[2]`` of 3 responses gives ``[1.5, 1.5, 0]``.
    """
    if len(set(ranking)) != len(ranking) or any(not 0 <= r < k for r in ranking):
        raise ValueError(f"{list(ranking)} is not a ranking of responses 0..{k - 1}")
    rest = Fraction(len(ranking) + k - 1, 2)
    out = [rest] * k
    for place, response in enumerate(ranking):
        out[response] = Fraction(place)
    return out


def borda_ranks(rankings: Sequence[Sequence[int]], k: int) -> list[int]:
    """Combined ranks (0 = best, equal = tie) of ``k`` responses from several rankings (best first).

    Responses are ordered by their mean position; the rank of a response is the number of
    responses with a strictly better mean (so ties share a rank: ``[0, 0, 2]``).
    """
    if not rankings:
        raise ValueError("borda_ranks needs at least one ranking")
    totals = [sum(col) for col in zip(*(positions(r, k) for r in rankings))]
    return [sum(other < mine for other in totals) for mine in totals]


def ranking_agreement(rankings: Sequence[Sequence[int]], ranks: Sequence[int]) -> float:
    """Fraction of the annotators' ordered response pairs that the combined ``ranks`` order the same way.

    Only pairs both sides order strictly count; 1.0 when no pair is comparable.
    """
    k = len(ranks)
    agree = total = 0
    for ranking in rankings:
        pos = positions(ranking, k)
        for i, j in combinations(range(k), 2):
            if pos[i] != pos[j] and ranks[i] != ranks[j]:
                total += 1
                agree += (pos[i] < pos[j]) == (ranks[i] < ranks[j])
    return agree / total if total else 1.0
