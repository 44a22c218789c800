"""sample → label simulate → label stats → label export, as a user runs it, then the export feeds `tether rm`."""

import json

from tests.helpers import EXAMPLES
from tether.config import LabelExportConfig, LabelSimulateConfig, LabelStatsConfig
from tether.data import load_preference_dataset
from tether.feedback.store import Item, LabelStore, StoredLabel
from tether.recipes.label import run_label_export, run_label_simulate, run_label_stats


def _samples(tmp_path, n=300):
    rows = [json.loads(line) for line in (EXAMPLES / "data" / "preferences.jsonl").read_text().splitlines()][:n]
    path = tmp_path / "samples.jsonl"
    path.write_text("".join(json.dumps({"prompt": r["prompt"], "responses": [r["chosen"], r["rejected"]]}) + "\n"
                            for r in rows))
    return path


def test_simulate_stats_export(tmp_path, tokenizer):
    db = tmp_path / "labels.sqlite"
    sim = run_label_simulate(LabelSimulateConfig(samples=str(_samples(tmp_path)), db=str(db), panel_size=5,
                                                 labels_per_item=3, adversarial=1, gold_fraction=0.2))
    assert sim == {"comparisons": 300, "labels": 900}
    report = run_label_stats(LabelStatsConfig(db=str(db)))
    assert set(report["annotators"]) == {f"annotator-{i}" for i in range(1, 6)}
    assert report["annotators"]["annotator-5"]["estimated_accuracy"] < 0.4  # the adversary is found
    assert report["dawid_skene_gold_accuracy"] > report["majority_gold_accuracy"]
    assert -1 <= report["fleiss_kappa"] <= 1 and (tmp_path / "labels.stats.json").is_file()
    out = tmp_path / "prefs.jsonl"
    exported = run_label_export(LabelExportConfig(db=str(db), output=str(out)))
    assert exported["exported"] + exported["gold_skipped"] + exported["ties"] == 300
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert all(r["source"] == "simulated-panel" and 0 < r["agreement"] <= 1 and r["n_labels"] == 3 for r in rows)
    pairs, _ = load_preference_dataset(out, tokenizer, max_length=256)  # ready for `tether rm`
    assert len(pairs) == exported["exported"]


def test_store_keeps_one_label_per_annotator_and_item(tmp_path):
    store = LabelStore(tmp_path / "l.sqlite")
    store.add_items([Item("i1", "p", ["a", "b"])])
    assert store.add_label(StoredLabel("ann", "i1", 0, seconds=3.0)) is True
    assert store.add_label(StoredLabel("ann", "i1", 1)) is False  # a second submission changes nothing
    store.close()
    reopened = LabelStore(tmp_path / "l.sqlite")
    (label,) = reopened.labels()
    assert (label.annotator, label.choice, label.seconds) == ("ann", 0, 3.0)
    assert reopened.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
