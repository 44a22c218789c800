"""K-way rankings: Borda aggregation (hand-computed), Plackett–Luce simulation, export → C(K,2) pairs, the API."""

import json
import math
import random
from collections import Counter

import pytest

from tests.helpers import EXAMPLES
from tether.config import LabelExportConfig, LabelSimulateConfig, LabelStatsConfig
from tether.data import load_preference_dataset
from tether.feedback.aggregate import borda_ranks, positions, ranking_agreement
from tether.feedback.simulate import AnnotatorSpec, simulate_ranking
from tether.feedback.store import Item, LabelStore
from tether.recipes.label import run_label_export, run_label_simulate, run_label_stats
from tether.tasks.helpful import gold_utility


def test_positions_of_full_and_partial_rankings():
    assert positions([2, 0, 1], 3) == [1, 2, 0]
    assert positions([2], 3) == [1.5, 1.5, 0]          # unranked responses share places 1 and 2
    assert positions([3, 1], 4) == [2.5, 1, 2.5, 0]
    with pytest.raises(ValueError, match="not a ranking"):
        positions([0, 0, 1], 3)
    with pytest.raises(ValueError, match="not a ranking"):
        positions([3], 3)


def test_borda_ranks_by_hand():
    # mean positions: r0 = (0+1)/2, r1 = (1+0)/2, r2 = 2 → r0 and r1 tie for first
    assert borda_ranks([[0, 1, 2], [1, 0, 2]], 3) == [0, 0, 2]
    # positions [1,2,0], [0,2,1], [1.5,1.5,0] → sums 2.5, 5.5, 1 → order r2, r0, r1
    assert borda_ranks([[2, 0, 1], [0, 2, 1], [2]], 3) == [1, 2, 0]
    assert borda_ranks([[1, 0]], 2) == [1, 0]


def test_ranking_agreement_by_hand():
    # against ranks [0,1,2]: the first ranking agrees on 3 of 3 pairs, the second on 2 of 3 (it swaps 0 and 1)
    assert ranking_agreement([[0, 1, 2], [1, 0, 2]], [0, 1, 2]) == pytest.approx(5 / 6)
    # pairs the combined ranks leave tied do not count: only (0,2) and (1,2) are strict here
    assert ranking_agreement([[0, 1, 2], [1, 0, 2]], [0, 0, 2]) == 1.0


def test_plackett_luce_matches_its_closed_form():
    rng = random.Random(0)
    spec = AnnotatorSpec("pl", temperature=1.0)
    counts = Counter(tuple(simulate_ranking(spec, [2.0, 1.0, 0.0], [10, 10, 10], rng)) for _ in range(6000))
    # P(0 ≻ 1 ≻ 2) = e²/(e²+e+1) · e/(e+1) = 0.6652 · 0.7311 = 0.4863
    assert counts[(0, 1, 2)] / 6000 == pytest.approx(0.4863, abs=0.02)
    # K = 2 is Bradley–Terry: P(A first) = σ((1 − 0) / 0.5) = σ(2) = 0.8808
    spec2 = AnnotatorSpec("bt", temperature=0.5)
    first = sum(simulate_ranking(spec2, [1.0, 0.0], [5, 5], rng)[0] == 0 for _ in range(6000)) / 6000
    assert first == pytest.approx(1 / (1 + math.exp(-2)), abs=0.015)
    assert simulate_ranking(AnnotatorSpec("adv", accuracy=1.0, adversarial=True), [0.0, 3.0, 1.0], [1, 1, 1],
                            rng) == [0, 2, 1]  # the gold order [1, 2, 0], reversed


def _k_way_samples(tmp_path, n=120, k=4):
    """Each row: a prompt with k responses of known different gold utility (chosen / rejected of nearby rows)."""
    rows = [json.loads(line) for line in (EXAMPLES / "data" / "preferences.jsonl").read_text().splitlines()]
    by_prompt = {}
    for r in rows:
        by_prompt.setdefault(r["prompt"], []).extend([r["chosen"], r["rejected"]])
    out = []
    for prompt, responses in list(by_prompt.items())[:n]:
        distinct = list(dict.fromkeys(responses))
        if len(distinct) >= k:
            out.append({"prompt": prompt, "responses": distinct[:k]})
    path = tmp_path / "samples.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in out))
    return path, out


def test_simulated_rankings_export_as_c_k_2_pairs(tmp_path, tokenizer):
    samples, rows = _k_way_samples(tmp_path)
    assert len(rows) >= 40
    db = tmp_path / "rank.sqlite"
    sim = run_label_simulate(LabelSimulateConfig(samples=str(samples), db=str(db), mode="ranking", labels_per_item=3,
                                                 gold_fraction=0.0))
    assert sim == {"comparisons": len(rows), "labels": 3 * len(rows)}
    store = LabelStore(db)
    labels = store.labels()
    store.close()
    assert all(sorted(lab.ranking) == [0, 1, 2, 3] and lab.choice == lab.ranking[0] for lab in labels)
    report = run_label_stats(LabelStatsConfig(db=str(db)))
    assert 0.6 < report["ranking_pair_agreement"] < 0.95  # a noisy but informative panel
    out = tmp_path / "ranked.jsonl"
    exported = run_label_export(LabelExportConfig(db=str(db), output=str(out)))
    ranked = [json.loads(line) for line in out.read_text().splitlines()]
    assert exported["exported"] == len(ranked) and exported["exported"] + exported["ties"] == len(rows)
    assert all(len(r["ranks"]) == 4 and r["aggregation"] == "borda" and r["n_labels"] == 3 for r in ranked)
    # the combined ranking agrees with the gold utility on most response pairs
    agree = total = 0
    for r in ranked:
        utilities = [gold_utility(r["prompt"], x) for x in r["responses"]]
        for i in range(4):
            for j in range(i + 1, 4):
                if r["ranks"][i] != r["ranks"][j] and utilities[i] != utilities[j]:
                    total += 1
                    agree += (r["ranks"][i] < r["ranks"][j]) == (utilities[i] > utilities[j])
    assert agree / total > 0.82  # measured 0.89; a single noisy annotator is ~0.8
    pairs, report = load_preference_dataset(out, tokenizer, max_length=512)
    strict = sum(1 for r in ranked for i in range(4) for j in range(i + 1, 4) if r["ranks"][i] != r["ranks"][j])
    assert len(pairs) == strict  # each strict order of a ranking becomes one chosen/rejected pair


def test_ranking_through_the_api_and_an_old_store_is_migrated(tmp_path):
    pytest.importorskip("fastapi")
    import sqlite3

    from fastapi.testclient import TestClient

    from tether.feedback.server import create_app

    db = tmp_path / "old.sqlite"
    legacy = sqlite3.connect(db)  # a store written before the ranking column existed
    legacy.executescript("""CREATE TABLE labels (id INTEGER PRIMARY KEY AUTOINCREMENT, annotator TEXT NOT NULL,
        item_id TEXT NOT NULL, choice INTEGER, tie INTEGER NOT NULL DEFAULT 0, skipped INTEGER NOT NULL DEFAULT 0,
        confidence REAL, rationale TEXT, shown_order TEXT, seconds REAL, created REAL NOT NULL,
        UNIQUE (annotator, item_id));""")
    legacy.close()
    store = LabelStore(db)
    store.add_items([Item("k1", "Which?", ["zero", "one", "two"]), Item("k2", "Again?", ["x", "y", "z"])])
    store.set_annotator("carol", "tok-carol")
    store.close()
    client = TestClient(create_app(str(db), admin_token="adm"))
    headers = {"Authorization": "Bearer tok-carol"}
    # shown as [2, 0, 1]; the annotator ranks shown positions 1, 2, 0 → responses 0, 1, 2
    ok = client.post("/api/labels", json={"item_id": "k1", "slot": "rank", "shown_order": [2, 0, 1],
                                          "ranking": [1, 2, 0]}, headers=headers)
    assert ok.status_code == 201
    for bad in ([0, 1], [0, 0, 1], [0, 1, 3], "012"):
        response = client.post("/api/labels", json={"item_id": "k2", "slot": "rank", "shown_order": [0, 1, 2],
                                                    "ranking": bad}, headers=headers)
        assert response.status_code == 422, bad
    store = LabelStore(db)
    (label,) = store.labels()
    store.close()
    assert label.ranking == [0, 1, 2] and label.choice == 0
    export = client.get("/admin/export", headers={"Authorization": "Bearer adm"}).text.splitlines()
    assert json.loads(export[0])["ranks"] == [0, 1, 2]


def test_ranked_page_has_rank_controls_and_a_nonce_csp(tmp_path):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from tests.feedback.app_helpers import login
    from tether.feedback.server import create_app

    db = tmp_path / "r.sqlite"
    store = LabelStore(db)
    store.add_items([Item("k1", "Which?", ["zero", "one", "two", "three"])])
    store.set_annotator("dan", "tok-dan")
    store.close()
    client = TestClient(create_app(str(db), admin_token="adm"))
    login(client, "tok-dan")
    page = client.get("/")
    assert "id='submit-ranking'" in page.text and "data-k='4'" in page.text and "id='choice-0'" not in page.text
    policy = page.headers["content-security-policy"]
    nonce = policy.split("'nonce-")[1].split("'")[0]
    assert f"<script nonce='{nonce}'>" in page.text and "default-src 'none'" in policy
