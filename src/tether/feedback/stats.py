"""Quality report for a label store: throughput, gold-question accuracy, agreement, aggregation."""

from __future__ import annotations

from collections import Counter, defaultdict
from itertools import combinations
from typing import Any

from tether.feedback.aggregate import borda_ranks, dawid_skene, majority_vote, positions, ranking_agreement
from tether.feedback.agreement import cohen_kappa, fleiss_kappa, krippendorff_alpha_nominal
from tether.feedback.store import Item, StoredLabel


def _choices(labels: list[StoredLabel]) -> list[StoredLabel]:
    return [lab for lab in labels if lab.choice is not None and not lab.skipped]


def aggregate_labels(items: list[Item], labels: list[StoredLabel], method: str = "dawid_skene"
                     ) -> dict[str, tuple[int | None, float, int]]:
    """item_id → (winning choice or None, agreement of the votes with it, number of votes)."""
    votes: dict[str, list[int]] = defaultdict(list)
    for lab in _choices(labels):
        votes[lab.item_id].append(lab.choice)
    if method == "majority":
        out = {}
        for item, vs in votes.items():
            winner, share = majority_vote(vs)
            out[item] = (winner, share, len(vs))
        return out
    if method != "dawid_skene":
        raise ValueError(f"unknown aggregation '{method}' (majority, dawid_skene)")
    n_classes = max((len(i.responses) for i in items), default=2)
    result = dawid_skene([(lab.item_id, lab.annotator, lab.choice) for lab in _choices(labels)], n_classes)
    winners = result.labels()
    return {item: (winners[item], sum(v == winners[item] for v in vs) / len(vs), len(vs)) for item, vs in votes.items()}


def label_stats(items: list[Item], labels: list[StoredLabel]) -> dict[str, Any]:
    gold = {i.item_id: i.gold_choice for i in items if i.is_gold and i.gold_choice is not None}
    by_annotator: dict[str, list[StoredLabel]] = defaultdict(list)
    for lab in labels:
        by_annotator[lab.annotator].append(lab)
    chosen = _choices(labels)
    ds = dawid_skene([(lab.item_id, lab.annotator, lab.choice) for lab in chosen],
                     max((len(i.responses) for i in items), default=2)) if chosen else None
    annotators = {}
    for name, labs in sorted(by_annotator.items()):
        on_gold = [lab for lab in _choices(labs) if lab.item_id in gold]
        seconds = [lab.seconds for lab in labs if lab.seconds is not None]
        annotators[name] = {
            "labels": len(labs), "ties": sum(lab.tie for lab in labs), "skips": sum(lab.skipped for lab in labs),
            "gold_questions": len(on_gold),
            "gold_accuracy": sum(lab.choice == gold[lab.item_id] for lab in on_gold) / len(on_gold) if on_gold else None,
            "estimated_accuracy": ds.accuracy(name) if ds is not None and name in ds.annotators else None,
            "mean_seconds": sum(seconds) / len(seconds) if seconds else None,
        }
    per_item: dict[str, dict[str, int]] = defaultdict(dict)
    for lab in chosen:
        per_item[lab.item_id][lab.annotator] = lab.choice
    kappas = {}
    for a, b in combinations(sorted(by_annotator), 2):
        shared = [i for i, v in per_item.items() if a in v and b in v]
        if len(shared) >= 10:
            kappas[f"{a}|{b}"] = cohen_kappa([per_item[i][a] for i in shared], [per_item[i][b] for i in shared])
    pair_agree = [v1 == v2 for v in per_item.values() for v1, v2 in combinations(list(v.values()), 2)]
    counts = Counter(len(v) for v in per_item.values())
    report: dict[str, Any] = {"items": len(items), "labels": len(labels), "annotators": annotators,
                              "pairwise_agreement": sum(pair_agree) / len(pair_agree) if pair_agree else None,
                              "cohen_kappa": kappas,
                              "krippendorff_alpha": None, "fleiss_kappa": None,
                              "ranking_pair_agreement": ranking_pair_agreement(items, labels)}
    units = [list(v.values()) for v in per_item.values()]
    if any(len(u) >= 2 for u in units):
        report["krippendorff_alpha"] = krippendorff_alpha_nominal(units)
    if counts:
        n_raters, _ = counts.most_common(1)[0]
        n_classes = max((len(i.responses) for i in items), default=2)
        table = [[list(v.values()).count(c) for c in range(n_classes)] for v in per_item.values() if len(v) == n_raters]
        if n_raters >= 2 and table:
            report["fleiss_kappa"] = fleiss_kappa(table)
            report["fleiss_items"] = len(table)
    if gold:
        for method in ("majority", "dawid_skene"):
            agg = aggregate_labels(items, labels, method)
            scored = [i for i in gold if i in agg]
            report[f"{method}_gold_accuracy"] = (sum(agg[i][0] == gold[i] for i in scored) / len(scored)
                                                 if scored else None)
    return report


def item_rankings(labels: list[StoredLabel]) -> dict[str, list[list[int]]]:
    """item_id → the rankings its labels give (a full ranking, or ``[choice]`` for a pick-best label)."""
    out: dict[str, list[list[int]]] = defaultdict(list)
    for lab in _choices(labels):
        out[lab.item_id].append(list(lab.ranking) if lab.ranking else [lab.choice])
    return out


def preference_rows(items: list[Item], labels: list[StoredLabel], method: str = "dawid_skene",
                    min_agreement: float = 0.0, include_gold: bool = False) -> tuple[list[dict], dict[str, int]]:
    """Aggregated training rows and what was left out (counts by reason).

    When every item is a pair, rows are TRL preferences (prompt / chosen / rejected, winner
    by ``method``). When some item has K > 2 responses, every row is a ranking (prompt /
    responses / ranks, 0 = best, equal = tie) combined with a Borda count, which the
    preference loader expands to C(K,2) pairs. Each row records source, agreement and votes.
    """
    winners = aggregate_labels(items, labels, method)
    rankings = item_rankings(labels)
    as_rankings = any(len(i.responses) > 2 for i in items if i.item_id in winners)
    rows: list[dict] = []
    left_out = {"ties": 0, "low_agreement": 0, "gold_skipped": 0}
    for item in items:
        if item.item_id not in winners:
            continue
        if item.is_gold and not include_gold:
            left_out["gold_skipped"] += 1
            continue
        winner, agreement, n_votes = winners[item.item_id]
        k = len(item.responses)
        if k > 2:
            ranks = borda_ranks(rankings[item.item_id], k)
            agreement = ranking_agreement(rankings[item.item_id], ranks)
            tied = len(set(ranks)) == 1
        else:
            ranks = None if winner is None else [0 if i == winner else 1 for i in range(2)]
            tied = winner is None
        if tied:
            left_out["ties"] += 1
            continue
        if agreement < min_agreement:
            left_out["low_agreement"] += 1
            continue
        extra = {"source": item.source or "labels", "agreement": round(agreement, 4), "n_labels": n_votes,
                 "aggregation": "borda" if k > 2 else method}
        if as_rankings:
            rows.append({"prompt": item.prompt, "responses": item.responses, "ranks": ranks, **extra})
        else:
            rows.append({"prompt": item.prompt, "chosen": item.responses[winner],
                         "rejected": item.responses[1 - winner], **extra})
    return rows, left_out


def ranking_pair_agreement(items: list[Item], labels: list[StoredLabel]) -> float | None:
    """On ranked items (K > 2): how often two annotators order a pair of responses the same way."""
    k_of = {i.item_id: len(i.responses) for i in items}
    by_item: dict[str, list[list[int]]] = defaultdict(list)
    for lab in _choices(labels):
        if lab.ranking and k_of.get(lab.item_id, 0) > 2:
            by_item[lab.item_id].append(lab.ranking)
    agree = total = 0
    for item_id, ranked in by_item.items():
        k = k_of[item_id]
        pos = [positions(r, k) for r in ranked]
        for a, b in combinations(pos, 2):
            for i, j in combinations(range(k), 2):
                if a[i] != a[j] and b[i] != b[j]:
                    total += 1
                    agree += (a[i] < a[j]) == (b[i] < b[j])
    return agree / total if total else None
