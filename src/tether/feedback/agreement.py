"""Inter-annotator agreement for categorical labels (e.g. "A", "B", "tie").

- :func:`cohen_kappa` — two annotators on the same items (Cohen 1960)
- :func:`fleiss_kappa` — a fixed number of annotators per item, from category counts (Fleiss 1971)
- :func:`krippendorff_alpha_nominal` — any number of annotators per item, missing labels allowed
  (Krippendorff 2011)

All return 1.0 for perfect agreement and about 0 for agreement at chance level.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence


def percent_agreement(labels_a: Sequence[Hashable], labels_b: Sequence[Hashable]) -> float:
    """Fraction of items where two annotators gave the same label."""
    _check_pair(labels_a, labels_b)
    return sum(a == b for a, b in zip(labels_a, labels_b)) / len(labels_a)


def _check_pair(labels_a: Sequence, labels_b: Sequence) -> None:
    if len(labels_a) != len(labels_b) or not labels_a:
        raise ValueError("two annotators need the same, non-zero number of items")


def cohen_kappa(labels_a: Sequence[Hashable], labels_b: Sequence[Hashable]) -> float:
    """κ = (p_o − p_e) / (1 − p_e), p_e = Σ_k p_a(k)·p_b(k). Returns 1.0 when p_e = 1 and p_o = 1."""
    _check_pair(labels_a, labels_b)
    n = len(labels_a)
    observed = percent_agreement(labels_a, labels_b)
    count_a, count_b = Counter(labels_a), Counter(labels_b)
    expected = sum(count_a[k] * count_b[k] for k in count_a) / (n * n)
    if expected == 1.0:
        return 1.0 if observed == 1.0 else 0.0
    return (observed - expected) / (1 - expected)


def fleiss_kappa(counts: Sequence[Sequence[int]]) -> float:
    """κ from an items × categories table of how many annotators chose each category.

    Every item must have the same number n ≥ 2 of annotators.
    P_i = (Σ_j n_ij² − n) / (n(n − 1)), P̄ = mean P_i, p_j = Σ_i n_ij / (N·n), P̄_e = Σ_j p_j².
    """
    if not counts:
        raise ValueError("fleiss_kappa needs at least one item")
    n = sum(counts[0])
    if n < 2 or any(sum(row) != n for row in counts):
        raise ValueError("fleiss_kappa needs the same number (>= 2) of annotators for every item")
    n_items, n_categories = len(counts), len(counts[0])
    p_items = [(sum(c * c for c in row) - n) / (n * (n - 1)) for row in counts]
    p_bar = sum(p_items) / n_items
    p_categories = [sum(row[j] for row in counts) / (n_items * n) for j in range(n_categories)]
    p_expected = sum(p * p for p in p_categories)
    if p_expected == 1.0:
        return 1.0
    return (p_bar - p_expected) / (1 - p_expected)


def krippendorff_alpha_nominal(units: Sequence[Sequence[Hashable]]) -> float:
    """α = 1 − (n − 1)·Σ_{c≠k} o_ck / Σ_{c≠k} n_c·n_k for nominal labels.

    ``units``: for each item, the labels it received (any number; items with fewer than two
    labels are not pairable and are ignored). o_ck is the coincidence matrix: each ordered
    pair of labels within an item with m labels adds 1/(m − 1).
    """
    coincidence: Counter = Counter()
    for labels in units:
        m = len(labels)
        if m < 2:
            continue
        for i, c in enumerate(labels):
            for j, k in enumerate(labels):
                if i != j:
                    coincidence[(c, k)] += 1.0 / (m - 1)
    totals: Counter = Counter()
    for (c, _), value in coincidence.items():
        totals[c] += value
    n = sum(totals.values())
    if n == 0:
        raise ValueError("krippendorff_alpha needs at least one item with two or more labels")
    disagreement_observed = sum(v for (c, k), v in coincidence.items() if c != k)
    disagreement_expected = sum(totals[c] * totals[k] for c in totals for k in totals if c != k)
    if disagreement_expected == 0:
        return 1.0
    return 1.0 - (n - 1) * disagreement_observed / disagreement_expected
