"""The annotator's experience (issue 28, points 9-12): guidelines, both bad, toasts, undo, skip and return,
consistent names and keys, the admin page — over HTTP here; in Chromium in test_annotator_browser.py."""

import json
import re

import pytest

pytest.importorskip("fastapi")

from tests.feedback.app_helpers import client_for, csrf_of, hidden_fields, login, make_store, stored_labels  # noqa: E402
from tether.data import DataError  # noqa: E402
from tether.feedback.stats import label_stats, preference_rows  # noqa: E402
from tether.feedback.store import Item, LabelStore, StoredLabel  # noqa: E402

THREE = [Item(f"i{k}", f"Question {k}?", [f"A{k}", f"B{k}"]) for k in range(3)]
GUIDELINES = """# Campaign rules

Prefer **short, correct** answers. <script>document.title='pwned'</script>

- [a link](https://example.org/help) and [a trap](javascript:alert(1))
- ![tracker](https://example.org/pixel.png)
"""


def _answer(client, slot="0", **extra):
    fields = hidden_fields(client.get("/").text)
    return client.post("/label", data={**fields, "slot": slot, **extra}, follow_redirects=False), fields["item_id"]


# --------------------------------------------------------------------------- 9. guidelines


def test_guidelines_come_first_then_beside_every_item(tmp_path):
    db = make_store(tmp_path / "labels.sqlite", THREE)
    client = client_for(db, guidelines=GUIDELINES)
    first = client.post("/login", data={"token": "tok"}, follow_redirects=False)
    assert first.headers["location"] == "/guidelines"
    assert client.get("/", follow_redirects=False).headers["location"] == "/guidelines"  # not before reading them
    page = client.get("/guidelines").text
    assert "<h1>Campaign rules</h1>" in page and "<strong>short, correct</strong>" in page and "Welcome" in page
    assert "&lt;script&gt;" in page and "<script>document.title" not in page  # markdown without raw HTML
    assert 'href="https://example.org/help"' in page and 'href="javascript' not in page
    assert "<img" not in page
    client.post("/guidelines", data={"csrf": csrf_of(page)})
    item = client.get("/").text
    assert "id='guidelines'" in item and "<strong>short, correct</strong>" in item and "id='prompt'" in item
    again = client_for(db, guidelines=GUIDELINES)
    assert again.post("/login", data={"token": "tok"}, follow_redirects=False).headers["location"] == "/"
    changed = client_for(db, guidelines=GUIDELINES + "\nNew rule: check the facts.\n")
    assert changed.post("/login", data={"token": "tok"}, follow_redirects=False).headers["location"] == "/guidelines"


def test_the_default_guidelines_are_the_constitution_and_the_buttons(tmp_path):
    from tether.feedback.judge import DEFAULT_CONSTITUTION

    client = client_for(make_store(tmp_path / "labels.sqlite", THREE))
    login(client, "tok", read_guidelines=False)
    page = client.get("/guidelines").text
    assert all(principle in page for principle in DEFAULT_CONSTITUTION)
    assert "Both bad" in page and "Skip" in page and "Undo" in page


def test_a_guidelines_file_is_checked(tmp_path):
    from tether.recipes.label import read_guidelines

    with pytest.raises(DataError, match="does not exist"):
        read_guidelines(str(tmp_path / "missing.md"))
    (tmp_path / "empty.md").write_text("  \n")
    with pytest.raises(DataError, match="is empty"):
        read_guidelines(str(tmp_path / "empty.md"))
    (tmp_path / "latin1.md").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(DataError, match="not valid UTF-8"):
        read_guidelines(str(tmp_path / "latin1.md"))
    (tmp_path / "rules.md").write_text(GUIDELINES)
    assert read_guidelines(str(tmp_path / "rules.md")) == GUIDELINES
    (tmp_path / "principles.txt").write_text("Choose the safer answer.\n\nChoose the shorter answer.\n")
    as_guidelines = read_guidelines(str(tmp_path / "principles.txt"))  # a constitution, as for `label judge`
    assert "- Choose the safer answer.\n- Choose the shorter answer." in as_guidelines and "Both bad" in as_guidelines


# --------------------------------------------------------------------------- both bad


def test_both_bad_is_recorded_and_left_out_of_the_export_unless_asked(tmp_path):
    db = make_store(tmp_path / "labels.sqlite", THREE, {"ann": "tok", "bob": "tok-bob"})
    client = client_for(db)
    login(client, "tok")
    page = client.get("/").text
    assert "id='both-bad'" in page and "Both bad (<kbd>x</kbd>)" in page
    response, bad_item = _answer(client, "both_bad")
    assert response.status_code == 303
    api = client.post("/api/labels", json={"item_id": bad_item, "slot": "0"}, headers={"Authorization": "Bearer tok-bob"})
    assert api.status_code == 201
    (mine, bobs) = sorted(stored_labels(db), key=lambda lab: lab.annotator)
    assert mine.both_bad and mine.choice is None and not mine.tie and not bobs.both_bad
    store = LabelStore(db)
    items, labels = store.items(), store.labels()
    store.close()
    rows, left_out = preference_rows(items, labels)
    assert rows == [] and left_out["both_bad"] == 1  # half the judgements say neither answer is good enough
    rows, left_out = preference_rows(items, labels, include_both_bad=True)
    assert [r["item_id"] for r in rows] == [bad_item] and rows[0]["both_bad"] == 1 and left_out["both_bad"] == 0
    assert label_stats(items, labels)["annotators"]["ann"]["both_bad"] == 1


def test_both_bad_with_no_choice_at_all_is_never_exported(tmp_path):
    items = [Item("i0", "q", ["a", "b"])]
    labels = [StoredLabel("ann", "i0", None, both_bad=True)]
    assert preference_rows(items, labels, include_both_bad=True) == ([], {"ties": 0, "both_bad": 1,
                                                                         "low_agreement": 0, "gold_skipped": 0})


# --------------------------------------------------------------------------- 10. toasts, undo, skip


def test_a_toast_after_every_submit(tmp_path):
    db = make_store(tmp_path / "labels.sqlite", THREE)
    client = client_for(db)
    login(client, "tok")
    fields = hidden_fields(client.get("/").text)
    saved = client.post("/label", data={**fields, "slot": "0"}, follow_redirects=False)
    assert saved.headers["location"] == "/?done=saved"
    assert "id='toast'" in client.get("/?done=saved").text and "Saved." in client.get("/?done=saved").text
    again = client.post("/label", data={**fields, "slot": "1"}, follow_redirects=False)  # the same page, resubmitted
    assert again.headers["location"] == "/?done=already"
    assert "Already labelled" in client.get("/?done=already").text
    skipped, _ = _answer(client, "skip")
    assert skipped.headers["location"] == "/?done=skipped" and "comes back" in client.get("/?done=skipped").text
    assert "id='toast'" not in client.get("/?done=%3Cscript%3E").text  # only known messages, nothing reflected


def test_undo_takes_back_the_last_answer_within_the_window(tmp_path):
    db = make_store(tmp_path / "labels.sqlite", THREE)
    client = client_for(db)
    login(client, "tok")
    assert "id='undo-last'" not in client.get("/").text  # nothing to undo yet
    _, first = _answer(client, "1")
    page = client.get("/").text
    assert "id='undo-last'" in page and hidden_fields(page)["item_id"] != first
    response = client.post("/undo", data={"csrf": csrf_of(page)}, follow_redirects=False)
    assert response.headers["location"] == "/?done=undone"
    assert hidden_fields(client.get("/").text)["item_id"] == first  # the item comes straight back
    assert stored_labels(db) == []
    store = LabelStore(db)
    ((label, reason, _),) = store.retracted()  # kept, not deleted
    store.close()
    assert (label.item_id, reason) == (first, "undone")
    _answer(client, "0")
    assert [(lab.item_id, lab.choice is not None) for lab in stored_labels(db)] == [(first, True)]
    assert client.post("/undo", data={"csrf": "forged"}).status_code == 403


def test_undo_is_refused_after_the_window_and_over_the_api(tmp_path):
    db = make_store(tmp_path / "labels.sqlite", THREE)
    late = client_for(db, undo_seconds=0)
    login(late, "tok")
    _, first = _answer(late, "0")
    page = late.get("/").text
    assert "id='undo-last'" not in page
    assert late.post("/undo", data={"csrf": csrf_of(page)}, follow_redirects=False).headers["location"] == "/?done=too_late"
    assert len(stored_labels(db)) == 1
    api = client_for(db)  # the default window (120 s)
    headers = {"Authorization": "Bearer tok"}
    second = next(i.item_id for i in THREE if i.item_id != first)
    assert api.post("/api/labels", json={"item_id": second, "slot": "0"}, headers=headers).status_code == 201
    assert api.post("/api/undo", headers=headers).json() == {"undone": second}  # the last answer first
    assert api.post("/api/undo", headers=headers).json() == {"undone": first}
    assert api.post("/api/undo", headers=headers).status_code == 409  # nothing left
    assert api.post("/api/undo").status_code == 401


def test_skipped_items_come_back_at_the_end_and_do_not_count_as_labelled(tmp_path):
    db = make_store(tmp_path / "labels.sqlite", THREE)
    client = client_for(db)
    login(client, "tok")
    _, skipped = _answer(client, "skip")
    page = client.get("/").text
    assert "0 of 3 labelled" in page and "1 skipped" in page
    order = [hidden_fields(page)["item_id"]]
    _answer(client, "0")
    order.append(hidden_fields(client.get("/").text)["item_id"])
    _answer(client, "1")
    assert skipped not in order and hidden_fields(client.get("/").text)["item_id"] == skipped  # at the end
    _answer(client, "0")
    assert "id='done'" in client.get("/").text and "3 of 3 labelled" in client.get("/").text
    labels = {lab.item_id: lab for lab in stored_labels(db)}
    assert len(labels) == 3 and not labels[skipped].skipped and labels[skipped].choice is not None
    store = LabelStore(db)
    assert [(lab.item_id, reason) for lab, reason, _ in store.retracted()] == [(skipped, "replaced skip")]
    store.close()


# --------------------------------------------------------------------------- 11. names and keys


def test_responses_are_named_a_b_c_d_with_keys_to_match(tmp_path):
    db = make_store(tmp_path / "labels.sqlite", [Item("k0", "Rank", ["w", "x", "y", "z"])])
    client = client_for(db)
    login(client, "tok")
    page = client.get("/").text
    assert re.findall(r"Response ([A-Z0-9]+) <span", page) == ["A", "B", "C", "D"]
    assert "(<kbd>a</kbd>\u2013<kbd>d</kbd>)" in page
    pair = client_for(make_store(tmp_path / "pair.sqlite"))
    login(pair, "tok")
    page = pair.get("/").text
    assert "A is better (<kbd>a</kbd>)" in page and "B is better (<kbd>b</kbd>)" in page
    assert "data-keys='a 1'" in page and "data-keys='b 2'" in page


def test_model_text_with_bidi_overrides_is_shown_not_applied(tmp_path):
    db = make_store(tmp_path / "labels.sqlite", [Item("i0", "q", ["pay \u202eevil\u202c now", "fine"])],
                    {"\u202eeve": "tok"})
    client = client_for(db)
    login(client, "tok")
    page = client.get("/").text
    assert "\u202e" not in page and "\u202c" not in page
    assert ">RLO</span>" in page and ">PDF</span>" in page and "invisible text-direction controls" in page
    assert "<bdi><span class='ctl'" in page  # the annotator's name is isolated too


# --------------------------------------------------------------------------- 12. the admin page


def test_admin_numbers_need_enough_overlap(tmp_path):
    """Before, one annotator with no overlap showed 'estimated accuracy 0.955'."""
    db = make_store(tmp_path / "labels.sqlite", THREE)
    client = client_for(db)
    login(client, "tok")
    for slot in ("0", "1", "0"):
        _answer(client, slot)
    page = client.get("/admin", headers={"Authorization": "Bearer adm"}).text
    row = re.search(r"<tr><td>(?:<bdi>)?ann(?:</bdi>)?</td>(.*?)</tr>", page).group(1)
    assert not re.search(r"\d\.\d{3}", row)  # no agreement or accuracy estimate from one annotator alone
    assert "3 / 3 (100%)" in row
    assert row.count("(0 of 10)") == 2 and "(0 of 5)" in row
    store = LabelStore(db)
    stats = label_stats(store.items(), store.labels())
    store.close()
    assert stats["annotators"]["ann"]["estimated_accuracy"] is None
    assert stats["annotators"]["ann"]["agreement_with_others"] is None


def test_admin_shows_agreement_and_accuracy_with_enough_overlap(tmp_path):
    items = [Item(f"i{k}", f"q{k}", ["a", "b"], is_gold=k < 6, gold_choice=0 if k < 6 else None) for k in range(12)]
    db = make_store(tmp_path / "labels.sqlite", items, {})
    store = LabelStore(db)
    store.add_labels([StoredLabel(name, f"i{k}", 0 if (name == "ann" or k % 4) else 1, seconds=10.0 + k)
                      for name in ("ann", "bob") for k in range(12)])
    store.close()
    page = client_for(db).get("/admin", headers={"Authorization": "Bearer adm"}).text
    row = re.search(r"<tr><td><bdi>bob</bdi></td>(.*?)</tr>", page).group(1)
    assert "0.750 <span class='muted'>(12)</span>" in row  # bob agrees with ann on 9 of 12
    assert "0.667 <span class='muted'>(6)</span>" in row  # 4 of 6 gold questions
    assert "15.5" in row  # median seconds per item


def test_the_admin_export_is_the_cli_default_with_item_ids(tmp_path):
    from tests.helpers import EXAMPLES
    from tether.config import LabelExportConfig, LabelSimulateConfig
    from tether.recipes.label import run_label_export, run_label_simulate

    rows = [json.loads(line) for line in (EXAMPLES / "data" / "preferences.jsonl").read_text().splitlines()][:60]
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps({"prompt": r["prompt"], "responses": [r["chosen"], r["rejected"]]}) + "\n"
                               for r in rows))
    db = tmp_path / "labels.sqlite"
    run_label_simulate(LabelSimulateConfig(samples=str(samples), db=str(db), panel_size=4, labels_per_item=2,
                                           adversarial=1, gold_fraction=0.0))
    out = tmp_path / "prefs.jsonl"
    run_label_export(LabelExportConfig(db=str(db), output=str(out)))
    client = client_for(db)
    export = client.get("/admin/export", headers={"Authorization": "Bearer adm"})
    assert export.text == out.read_text()  # the same aggregation and rows as `tether label export`
    exported = [json.loads(line) for line in export.text.splitlines()]
    assert exported and all(r["item_id"] and r["aggregation"] == "dawid_skene" for r in exported)
    page = client.get("/admin", headers={"Authorization": "Bearer adm"}).text
    assert "aggregated by dawid_skene" in page
