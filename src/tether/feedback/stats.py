"""Quality report for a label store: throughput, gold-question accuracy, agreement, aggregation.

A number is only reported where there is enough data for it to mean something: an annotator's
agreement with the others and Dawid–Skene's estimate of their accuracy need ``MIN_OVERLAP`` items
that others judged too, and gold accuracy needs ``MIN_GOLD`` answered gold questions (below that
the value is None and the count says why). The report is always valid JSON (no NaN or Infinity).
"""

from __future__ import annotations

import math
import statistics
from collections import Counter, defaultdict
from itertools import combinations
from typing import Any

from tether.feedback.aggregate import borda_ranks, dawid_skene, majority_vote, positions, ranking_agreement
from tether.feedback.agreement import cohen_kappa, fleiss_kappa, krippendorff_alpha_nominal
from tether.feedback.store import MAX_SECONDS, Item, StoredLabel

DEFAULT_AGGREGATION = "dawid_skene"  # `tether label export`'s default method; the admin page's export uses it too
MIN_OVERLAP = 10  # items shared with other annotators before agreement / estimated accuracy are shown
MIN_GOLD = 5      # answered gold questions before gold accuracy is shown


def _choices(labels: list[StoredLabel]) -> list[StoredLabel]:
    return [lab for lab in labels if lab.choice is not None and not lab.skipped]


def usable(items: list[Item], labels: list[StoredLabel]) -> tuple[list[Item], list[StoredLabel]]:
    """The items that can be shown and the labels on them with an in-range choice (a bad row never breaks a report)."""
    items = [i for i in items if i.problem() is None]
    k_of = {i.item_id: len(i.responses) for i in items}
    return items, [lab for lab in labels if lab.item_id in k_of and (lab.choice is None or lab.choice < k_of[lab.item_id])]


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None (JSON has no NaN or Infinity)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def _durations(labels: list[StoredLabel]) -> list[float]:
    """Seconds per judgement, leaving out values no real judgement takes (a store written by an older version)."""
    return [s for lab in labels if isinstance(s := lab.seconds, (int, float)) and math.isfinite(s)
            and 0 <= s <= MAX_SECONDS]


def aggregate_labels(items: list[Item], labels: list[StoredLabel], method: str = DEFAULT_AGGREGATION
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
    if not votes:
        return {}
    n_classes = max((len(i.responses) for i in items), default=2)
    result = dawid_skene([(lab.item_id, lab.annotator, lab.choice) for lab in _choices(labels)], n_classes)
    winners = result.labels()
    return {item: (winners[item], sum(v == winners[item] for v in vs) / len(vs), len(vs)) for item, vs in votes.items()}


def agreement_with_others(labels: list[StoredLabel]) -> dict[str, tuple[int, float | None]]:
    """annotator → (items they share with another annotator, share of their choices the others' choices match)."""
    per_item: dict[str, dict[str, int]] = defaultdict(dict)
    for lab in _choices(labels):
        per_item[lab.item_id][lab.annotator] = lab.choice
    shared: Counter = Counter()
    agree: Counter = Counter()
    pairs: Counter = Counter()
    for votes in per_item.values():
        if len(votes) < 2:
            continue
        for name, choice in votes.items():
            shared[name] += 1
            others = [c for other, c in votes.items() if other != name]
            agree[name] += sum(c == choice for c in others)
            pairs[name] += len(others)
    names = {lab.annotator for lab in labels}
    return {n: (shared[n], agree[n] / pairs[n] if pairs[n] else None) for n in names}


def _annotator_report(labs: list[StoredLabel], gold: dict[str, int], overlap: tuple[int, float | None],
                      estimated: float | None) -> dict[str, Any]:
    on_gold = [lab for lab in _choices(labs) if lab.item_id in gold]
    seconds = _durations([lab for lab in labs if not lab.skipped])
    shared, agreement = overlap
    enough = shared >= MIN_OVERLAP
    skips = sum(lab.skipped for lab in labs)
    return {
        "labels": len(labs), "judgements": len(labs) - skips, "ties": sum(lab.tie for lab in labs),
        "both_bad": sum(lab.both_bad for lab in labs), "skips": skips,
        "gold_questions": len(on_gold),
        "gold_accuracy": (sum(lab.choice == gold[lab.item_id] for lab in on_gold) / len(on_gold)
                          if len(on_gold) >= MIN_GOLD else None),
        "overlap_items": shared,
        "agreement_with_others": agreement if enough else None,
        "estimated_accuracy": estimated if enough else None,
        "mean_seconds": statistics.fmean(seconds) if seconds else None,
        "median_seconds": statistics.median(seconds) if seconds else None,
    }


def label_stats(items: list[Item], labels: list[StoredLabel]) -> dict[str, Any]:
    n_labels = len(labels)
    items, labels = usable(items, labels)
    gold = {i.item_id: i.gold_choice for i in items if i.is_gold and i.gold_choice is not None}
    by_annotator: dict[str, list[StoredLabel]] = defaultdict(list)
    for lab in labels:
        by_annotator[lab.annotator].append(lab)
    chosen = _choices(labels)
    overlaps = agreement_with_others(labels)
    ds = dawid_skene([(lab.item_id, lab.annotator, lab.choice) for lab in chosen],
                     max((len(i.responses) for i in items), default=2)) if chosen else None
    annotators = {name: _annotator_report(labs, gold, overlaps[name],
                                          ds.accuracy(name) if ds is not None and name in ds.annotators else None)
                  for name, labs in sorted(by_annotator.items())}
    per_item: dict[str, dict[str, int]] = defaultdict(dict)
    for lab in chosen:
        per_item[lab.item_id][lab.annotator] = lab.choice
    kappas = {}
    for a, b in combinations(sorted(by_annotator), 2):
        shared = [i for i, v in per_item.items() if a in v and b in v]
        if len(shared) >= MIN_OVERLAP:
            kappas[f"{a}|{b}"] = cohen_kappa([per_item[i][a] for i in shared], [per_item[i][b] for i in shared])
    pair_agree = [v1 == v2 for v in per_item.values() for v1, v2 in combinations(list(v.values()), 2)]
    counts = Counter(len(v) for v in per_item.values())
    report: dict[str, Any] = {"items": len(items), "labels": len(labels), "annotators": annotators,
                              "labels_left_out": n_labels - len(labels),  # on items that cannot be shown
                              "pairwise_agreement": sum(pair_agree) / len(pair_agree) if pair_agree else None,
                              "cohen_kappa": kappas,
                              "krippendorff_alpha": None, "fleiss_kappa": None,
                              "ranking_pair_agreement": ranking_pair_agreement(items, labels),
                              "aggregation": DEFAULT_AGGREGATION, "min_overlap": MIN_OVERLAP, "min_gold": MIN_GOLD}
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
    return json_safe(report)


def item_rankings(labels: list[StoredLabel]) -> dict[str, list[list[int]]]:
    """item_id → the rankings its labels give (a full ranking, or ``[choice]`` for a pick-best label)."""
    out: dict[str, list[list[int]]] = defaultdict(list)
    for lab in _choices(labels):
        out[lab.item_id].append(list(lab.ranking) if lab.ranking else [lab.choice])
    return out


def preference_rows(items: list[Item], labels: list[StoredLabel], method: str = DEFAULT_AGGREGATION,
                    min_agreement: float = 0.0, include_gold: bool = False, include_both_bad: bool = False
                    ) -> tuple[list[dict], dict[str, int]]:
    """Aggregated training rows and what was left out (counts by reason).

    When every item is a pair, rows are TRL preferences (prompt / chosen / rejected, winner
    by ``method``). When some item has K > 2 responses, every row is a ranking (prompt /
    responses / ranks, 0 = best, equal = tie) combined with a Borda count, which the
    preference loader expands to C(K,2) pairs. Each row records its item id, source,
    agreement and votes. An item that at least half of its annotators marked "both bad" is
    left out (counted as ``both_bad``) unless ``include_both_bad``, when its votes decide as usual.
    """
    items, labels = usable(items, labels)
    winners = aggregate_labels(items, labels, method)
    rankings = item_rankings(labels)
    both_bad = Counter(lab.item_id for lab in labels if lab.both_bad and not lab.skipped)
    judged = {lab.item_id for lab in labels if not lab.skipped}
    as_rankings = any(len(i.responses) > 2 for i in items if i.item_id in winners)
    rows: list[dict] = []
    left_out = {"ties": 0, "both_bad": 0, "low_agreement": 0, "gold_skipped": 0}
    for item in items:
        if item.item_id not in judged:
            continue
        if item.is_gold and not include_gold:
            left_out["gold_skipped"] += 1
            continue
        n_votes = winners[item.item_id][2] if item.item_id in winners else 0
        bad = both_bad[item.item_id]
        if bad and bad >= n_votes and (not include_both_bad or n_votes == 0):
            left_out["both_bad"] += 1
            continue
        if item.item_id not in winners:
            left_out["ties"] += 1  # only ties (no choice to learn from)
            continue
        row = _preference_row(item, winners[item.item_id], rankings[item.item_id], method, as_rankings)
        if row is None:
            left_out["ties"] += 1
        elif row["agreement"] < min_agreement:
            left_out["low_agreement"] += 1
        else:
            if both_bad[item.item_id]:
                row["both_bad"] = both_bad[item.item_id]
            rows.append(row)
    return rows, left_out


def _preference_row(item: Item, winner: tuple[int | None, float, int], rankings: list[list[int]], method: str,
                    as_rankings: bool) -> dict | None:
    """One exported row for an item (None when the votes leave every response tied)."""
    choice, agreement, n_votes = winner
    k = len(item.responses)
    if k > 2:
        ranks = borda_ranks(rankings, k)
        agreement = ranking_agreement(rankings, ranks)
        if len(set(ranks)) == 1:
            return None
    elif choice is None:
        return None
    else:
        ranks = [0 if i == choice else 1 for i in range(2)]
    extra = {"item_id": item.item_id, "source": item.source or "labels", "agreement": round(agreement, 4),
             "n_labels": n_votes, "aggregation": "borda" if k > 2 else method}
    if as_rankings:
        return {"prompt": item.prompt, "responses": item.responses, "ranks": ranks, **extra}
    return {"prompt": item.prompt, "chosen": item.responses[choice], "rejected": item.responses[1 - choice], **extra}


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
