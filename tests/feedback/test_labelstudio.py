import json

import pytest

from tether.config import LabelExportConfig, LabelImportConfig
from tether.data import DataError
from tether.feedback.labelstudio import from_labelstudio
from tether.feedback.store import Item, LabelStore, StoredLabel
from tether.recipes.label import run_label_export, run_label_import


def test_round_trip_through_label_studio(tmp_path):
    src = tmp_path / "a.sqlite"
    store = LabelStore(src)
    store.add_items([Item("i1", "Q1?", ["good.", "bad."]), Item("i2", "Q2?", ["x.", "y."])])
    store.add_labels([StoredLabel("alice", "i1", 0, seconds=4.0), StoredLabel("bob", "i1", None, tie=True),
                      StoredLabel("alice", "i2", 1)])
    store.close()
    exported = tmp_path / "ls.json"
    run_label_export(LabelExportConfig(db=str(src), output=str(exported), format="labelstudio"))
    tasks = json.loads(exported.read_text())
    assert tasks[0]["data"] == {"item_id": "i1", "prompt": "Q1?", "response_a": "good.", "response_b": "bad."}
    assert [a["result"][0]["value"]["choices"] for a in tasks[0]["annotations"]] == [["A"], ["Tie"]]
    dst = tmp_path / "b.sqlite"
    assert run_label_import(LabelImportConfig(input=str(exported), db=str(dst))) == {"items": 2, "labels": 3}
    back = LabelStore(dst)
    labels = {(lab.annotator, lab.item_id): lab for lab in back.labels()}
    back.close()
    assert labels[("alice", "i1")].choice == 0 and labels[("alice", "i1")].seconds == 4.0
    assert labels[("bob", "i1")].tie and labels[("bob", "i1")].choice is None
    assert labels[("alice", "i2")].choice == 1


def test_label_studio_problems_name_the_task():
    tasks = [{"id": 7, "data": {"prompt": "q", "response_a": "a", "response_b": "b"},
              "annotations": [{"completed_by": {"email": "x@y"}, "result": [
                  {"type": "choices", "value": {"choices": ["C"]}}]}]},
             {"id": 8, "data": {"prompt": "q"}}]
    with pytest.raises(DataError) as info:
        from_labelstudio(tasks, "ls.json")
    assert info.value.problems == [
        "ls.json task 1, field 'annotations': expected one choice of A, B, Tie or Both bad, got ['C']",
        "ls.json task 2, field 'data': needs prompt, response_a and response_b text"]
