"""A labeling campaign over restarts and several samples files (issue 28, points 4-6).

4. Restarting `label serve` (with or without arguments) keeps every token and every label;
   rotating a token is an explicit command.
5. Items of two samples files never collide: every item of both is served, and the load says
   what was new and what was already there.
6. Samples are validated at load (file, row, field, exit 2), and a bad item already in a store
   never blocks anyone's queue.
"""

import hashlib
import json
import sqlite3

import pytest

pytest.importorskip("fastapi")

from tests.feedback.app_helpers import client_for, hidden_fields, login, make_store, stored_labels  # noqa: E402
from tether.config import LabelServeConfig, LabelSimulateConfig  # noqa: E402
from tether.data import DataError  # noqa: E402
from tether.feedback.store import Item, LabelStore  # noqa: E402
from tether.recipes.label import prepare_server  # noqa: E402


def _samples(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _rows(tag, n, k=2):
    return [{"prompt": f"{tag} question {i}?", "responses": [f"{tag} answer {i}.{j}" for j in range(k)]}
            for i in range(n)]


def _tokens(db):
    return json.loads(db.with_suffix(".tokens.json").read_text())


def _printed(capsys) -> str:
    """What the recipe printed since the last call (the console writes to stderr and wraps lines), as one line."""
    return " ".join(capsys.readouterr().err.split())


def _label_everything(client):
    """Label every item the page serves (always the first response); the prompts seen, in order."""
    seen = []
    for _ in range(100):
        page = client.get("/").text
        if "id='done'" in page:
            return seen
        fields = hidden_fields(page)
        seen.append(fields["item_id"])
        assert client.post("/label", data={**fields, "slot": "0"}, follow_redirects=False).status_code == 303
    raise AssertionError("the queue never ended")


# --------------------------------------------------------------------------- 4. tokens survive restarts


def test_a_restart_without_arguments_keeps_every_token(tmp_path):
    db = tmp_path / "labels.sqlite"
    prepare_server(LabelServeConfig(db=str(db), annotators=["alice", "bob"]))
    first = _tokens(db)
    assert set(first["annotators"]) == {"alice", "bob"} and first["admin"]
    assert oct(db.with_suffix(".tokens.json").stat().st_mode & 0o777) == "0o600"
    prepare_server(LabelServeConfig(db=str(db)))  # the restart, without admin_token= or annotators=
    prepare_server(LabelServeConfig(db=str(db), annotators=["alice", "bob"]))  # and with them again
    assert _tokens(db) == first  # nothing was rewritten, nothing lost
    client = client_for(db, admin=None)  # the app takes the admin token the store kept
    assert client.get("/admin", headers={"Authorization": f"Bearer {first['admin']}"}).status_code == 200
    for name in ("alice", "bob"):
        response = client.post("/api/labels", json={"item_id": "x", "slot": "0"},
                               headers={"Authorization": f"Bearer {first['annotators'][name]}"})
        assert response.status_code == 422 and response.json()["error"] == "unknown item"  # authenticated


def test_a_restart_with_new_annotators_adds_their_tokens_beside_the_others(tmp_path):
    db = tmp_path / "labels.sqlite"
    prepare_server(LabelServeConfig(db=str(db), annotators=["alice"], admin_token="chosen-admin"))
    prepare_server(LabelServeConfig(db=str(db), annotators=["alice", "carol"]))
    tokens = _tokens(db)
    assert set(tokens["annotators"]) == {"alice", "carol"}
    client = client_for(db, admin=None)
    assert client.get("/admin", headers={"Authorization": "Bearer chosen-admin"}).status_code == 200  # kept


def test_labels_and_sessions_survive_a_restart(tmp_path):
    db = make_store(tmp_path / "labels.sqlite", [Item(f"i{k}", f"q{k}", ["a", "b"]) for k in range(3)])
    client = client_for(db)
    login(client, "tok")
    fields = hidden_fields(client.get("/").text)
    client.post("/label", data={**fields, "slot": "1"})
    restarted = client_for(db)  # a new app on the same store: the browser keeps its cookie
    restarted.cookies = client.cookies
    page = restarted.get("/").text
    assert "1 of 3 labelled" in page
    fields = hidden_fields(page)  # the CSRF token of the session still works
    assert restarted.post("/label", data={**fields, "slot": "0"}, follow_redirects=False).status_code == 303
    assert len(stored_labels(db)) == 2


def test_rotating_a_token_is_an_explicit_command(tmp_path):
    from tether.recipes.label import rotate_tokens

    db = tmp_path / "labels.sqlite"
    prepare_server(LabelServeConfig(db=str(db), annotators=["alice", "bob"]))
    before = _tokens(db)
    browser = client_for(db, admin=None)
    login(browser, before["annotators"]["alice"])
    fresh = rotate_tokens(str(db), ["alice", "admin"])
    after = _tokens(db)
    assert after["annotators"]["alice"] == fresh["alice"] != before["annotators"]["alice"]
    assert after["annotators"]["bob"] == before["annotators"]["bob"] and after["admin"] == fresh["admin"]
    client = client_for(db, admin=None)
    assert client.post("/login", data={"token": before["annotators"]["alice"]}).status_code == 401
    assert login(client, fresh["alice"]).status_code == 303
    assert client.get("/admin", headers={"Authorization": f"Bearer {before['admin']}"}).status_code == 403
    assert client.get("/admin", headers={"Authorization": f"Bearer {fresh['admin']}"}).status_code == 200
    assert "id='token'" in browser.get("/").text  # the old token's session ended with it
    with pytest.raises(DataError, match="no annotator named mallory"):
        rotate_tokens(str(db), ["mallory"])


def test_the_tokens_command_needs_names(tmp_path):
    from types import SimpleNamespace

    from tether.recipes.label import run_label_tokens

    db = tmp_path / "labels.sqlite"
    prepare_server(LabelServeConfig(db=str(db), annotators=["alice"]))
    with pytest.raises(DataError, match="rotate= names the annotators"):
        run_label_tokens(SimpleNamespace(db=str(db), rotate=[], tokens_file=""))
    fresh = run_label_tokens(SimpleNamespace(db=str(db), rotate=["alice"], tokens_file=""))
    assert _tokens(db)["annotators"]["alice"] == fresh["alice"]
    with pytest.raises(DataError, match="does not exist"):
        run_label_tokens(SimpleNamespace(db=str(tmp_path / "nope.sqlite"), rotate=["alice"], tokens_file=""))


def test_an_unreadable_tokens_file_is_never_overwritten(tmp_path):
    db = tmp_path / "labels.sqlite"
    db.with_suffix(".tokens.json").write_text("{not json")
    with pytest.raises(DataError, match="cannot read the tokens file"):
        prepare_server(LabelServeConfig(db=str(db), annotators=["alice"]))
    assert db.with_suffix(".tokens.json").read_text() == "{not json"
    store = LabelStore(db)
    assert store.annotator_names() == []  # no token that nobody could ever read
    store.close()


# --------------------------------------------------------------------------- 5. several samples files


def test_two_samples_files_serve_every_item_of_both(tmp_path, capsys):
    db = tmp_path / "labels.sqlite"
    first = _samples(tmp_path / "a.jsonl", _rows("a", 5))
    second = _samples(tmp_path / "b.jsonl", _rows("b", 3))
    prepare_server(LabelServeConfig(db=str(db), samples=first, annotators=["ann"], admin_token="adm"))
    capsys.readouterr()
    prepare_server(LabelServeConfig(db=str(db), samples=second))
    out = _printed(capsys)
    assert "loaded 3 new comparisons" in out and "(0 already in the store)" in out
    prepare_server(LabelServeConfig(db=str(db), samples=first))  # loading a file again adds nothing
    out = _printed(capsys)
    assert "loaded 0 new comparisons" in out and "(5 already in the store)" in out
    store = LabelStore(db)
    prompts = {item.prompt for item in store.items()}
    store.close()
    assert prompts == {r["prompt"] for r in _rows("a", 5) + _rows("b", 3)}
    client = client_for(db)
    login(client, _tokens(db)["annotators"]["ann"])
    served = _label_everything(client)
    assert len(served) == len(set(served)) == 8


def test_the_load_reports_new_and_existing_items_exactly(tmp_path, capsys):
    db = tmp_path / "labels.sqlite"
    both = _rows("a", 2) + _rows("c", 2)
    prepare_server(LabelServeConfig(db=str(db), samples=_samples(tmp_path / "a.jsonl", _rows("a", 2)), mode="ranking"))
    capsys.readouterr()
    prepare_server(LabelServeConfig(db=str(db), samples=_samples(tmp_path / "both.jsonl", both), mode="ranking"))
    out = _printed(capsys)
    assert "loaded 2 new sets of responses to rank" in out and "(2 already in the store)" in out


def test_a_store_written_with_row_numbered_ids_gets_no_duplicates(tmp_path):
    """Before, items were named r{row}-{n}; loading the same file again must not add them twice."""
    db = tmp_path / "labels.sqlite"
    rows = _rows("a", 2)
    make_store(db, [Item(f"r{n}-0", r["prompt"], list(reversed(r["responses"]))) for n, r in enumerate(rows, 1)])
    prepare_server(LabelServeConfig(db=str(db), samples=_samples(tmp_path / "a.jsonl", rows)))
    store = LabelStore(db)
    assert [i.item_id for i in store.items()] == ["r1-0", "r2-0"]
    store.close()


def test_simulated_labels_on_a_stored_item_follow_its_stored_response_order(tmp_path):
    """A comparison already stored with its responses in the other order: each new label's choice is remapped."""
    from tether.recipes.label import comparisons_from_samples, run_label_simulate

    samples = _samples(tmp_path / "s.jsonl", _rows("s", 6))
    config = {"samples": samples, "panel_size": 3, "labels_per_item": 3, "gold_fraction": 0.0, "seed": 3}
    run_label_simulate(LabelSimulateConfig(db=str(tmp_path / "fresh.sqlite"), **config))
    fresh = {(lab.annotator, lab.item_id): lab.choice for lab in stored_labels(tmp_path / "fresh.sqlite")}
    reversed_items = [Item(f"old-{n}", c.prompt, [c.response_b, c.response_a])
                      for n, c in enumerate(comparisons_from_samples(samples, 1, seed=3))]
    ids = {f"old-{n}": c.item for n, c in enumerate(comparisons_from_samples(samples, 1, seed=3))}
    db = make_store(tmp_path / "old.sqlite", reversed_items, annotators={})
    run_label_simulate(LabelSimulateConfig(db=str(db), **config))
    labels = stored_labels(db)
    assert len(labels) == len(fresh) == 18 and {lab.item_id for lab in labels} == set(ids)
    for lab in labels:  # the same simulated judgement, on the response that is stored at the other index
        assert lab.choice == 1 - fresh[(lab.annotator, ids[lab.item_id])]


# --------------------------------------------------------------------------- 6. validation


def test_samples_with_non_text_responses_are_refused_with_file_row_and_field(tmp_path):
    db = tmp_path / "labels.sqlite"
    bad = _samples(tmp_path / "bad.jsonl", [{"prompt": "fine", "responses": ["a", "b"]},
                                            {"prompt": "x", "responses": [1, None]}])
    with pytest.raises(DataError) as info:
        prepare_server(LabelServeConfig(db=str(db), samples=bad, annotators=["ann"]))
    assert info.value.problems == [f"{bad} row 2, field 'responses[0]': expected text, got int",
                                   f"{bad} row 2, field 'responses[1]': expected text, got null"]
    store = LabelStore(db)
    assert store.items() == []  # nothing from a file with problems
    store.close()


def test_a_chat_format_prompt_is_refused_with_a_message_not_a_traceback(tmp_path):
    chat = _samples(tmp_path / "chat.jsonl", [{"prompt": [{"role": "user", "content": "hi"}],
                                               "responses": ["hello", "hey"]}])
    with pytest.raises(DataError, match=r"chat.jsonl row 1, field 'prompt': a chat-format prompt"):
        prepare_server(LabelServeConfig(db=str(tmp_path / "labels.sqlite"), samples=chat))


def test_label_serve_with_bad_samples_exits_2_and_names_the_row(tmp_path, monkeypatch):
    import uvicorn
    from typer.testing import CliRunner

    from tether.cli import app

    served = []
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: served.append(args))
    bad = _samples(tmp_path / "bad.jsonl", [{"prompt": "x", "responses": [1, None]}])
    result = CliRunner().invoke(app, ["label", "serve", f"samples={bad}", f"db={tmp_path / 'l.sqlite'}"])
    assert result.exit_code == 2 and served == []
    assert "row 1, field 'responses[0]'" in result.output and "Traceback" not in result.output


def _ids_first_for(annotator, n):
    """n item ids, in the order the queue offers them to ``annotator`` (a stable per-annotator shuffle)."""
    ids = [f"x{k}" for k in range(n)]
    return sorted(ids, key=lambda i: hashlib.sha256(f"{annotator}:0:{i}".encode()).hexdigest())


def test_a_bad_item_in_the_store_never_blocks_the_queue(tmp_path):
    db = make_store(tmp_path / "labels.sqlite", [])
    first, second, third, good = _ids_first_for("ann", 4)
    raw = sqlite3.connect(db)  # items an older version (or a hand edit) left in the store
    raw.executemany("INSERT INTO items (item_id, prompt, responses, created) VALUES (?, ?, ?, 0)",
                    [(first, "x", "[1, null]"), (second, "y", "not json"), (third, "z", '["only one"]'),
                     (good, "a fine question", '["yes", "no"]')])
    raw.commit()
    raw.close()
    client = client_for(db)
    login(client, "tok")
    page = client.get("/")
    assert page.status_code == 200 and "a fine question" in page.text
    assert "0 of 1 labelled" in page.text  # the bad items are not counted as work to do
    assert _label_everything(client) == [good]
    admin = client.get("/admin", headers={"Authorization": "Bearer adm"})
    assert admin.status_code == 200 and "3 stored item(s) cannot be shown" in admin.text
