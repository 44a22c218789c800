"""Hostile requests to the labeling app: every one gets a 4xx with a message, none a 500, and nothing is stored.

Each case names what the app did before it was hardened (issue 28, points 7 and 8): a 500 with a
traceback, or a bad value stored (a negative or infinite duration, booleans as positions, a
non-ASCII digit as a slot, a rationale object stored as its Python repr).
"""

import json
import sqlite3

import pytest

pytest.importorskip("fastapi")

from tests.feedback.app_helpers import client_for, hidden_fields, login, make_store, stored_labels  # noqa: E402
from tether.feedback.store import Item  # noqa: E402

PAIR_AND_TRIPLE = [Item("i0", "q", ["a", "b"]), Item("k0", "rank", ["x", "y", "z"])]

# raw JSON bodies for POST /api/labels → (was, the body)
API_CASES = {
    "superscript two as a slot (was a 500: int('²'))": b'{"item_id": "i0", "slot": "\\u00b2"}',
    "arabic-indic digit as a slot (was stored as slot 1)": b'{"item_id": "i0", "slot": "\\u0661"}',
    "100k nested brackets (was a 500: RecursionError)": b"[" * 100_000,
    "booleans in shown_order (were stored)": b'{"item_id": "i0", "slot": "0", "shown_order": [true, false]}',
    "negative seconds (were stored)": b'{"item_id": "i0", "slot": "0", "seconds": -5}',
    "infinite seconds (were stored)": b'{"item_id": "i0", "slot": "0", "seconds": 1e999}',
    "NaN seconds (were stored)": b'{"item_id": "i0", "slot": "0", "seconds": NaN}',
    "boolean seconds (were stored as 1.0)": b'{"item_id": "i0", "slot": "0", "seconds": true}',
    "boolean confidence (was stored as 1.0)": b'{"item_id": "i0", "slot": "0", "confidence": true}',
    "a rationale object (was stored as its Python repr)": b'{"item_id": "i0", "slot": "0", "rationale": {"a": 1}}',
    "a rationale over 500 characters (was cut silently)":
        json.dumps({"item_id": "i0", "slot": "0", "rationale": "x" * 600}).encode(),
    "booleans in a ranking (were stored)":
        b'{"item_id": "k0", "slot": "rank", "shown_order": [0, 1, 2], "ranking": [true, false, 2]}',
    "floats in a ranking": b'{"item_id": "k0", "slot": "rank", "shown_order": [0, 1, 2], "ranking": [0.0, 1.0, 2.0]}',
    "a list as item_id": b'{"item_id": ["i0"], "slot": "0"}',
    "an unknown field": b'{"item_id": "i0", "slot": "0", "choice": 1}',
    "a body over 64 KiB": json.dumps({"item_id": "i0", "slot": "0", "pad": "x" * 70_000}).encode(),
    "invalid UTF-8": b'{"item_id": "i0", "slot": "\xff"}',
}


@pytest.mark.parametrize("case", sorted(API_CASES))
def test_hostile_api_bodies_get_a_4xx_and_store_nothing(case, tmp_path):
    db = make_store(tmp_path / "labels.sqlite", PAIR_AND_TRIPLE)
    client = client_for(db)
    response = client.post("/api/labels", content=API_CASES[case],
                           headers={"Authorization": "Bearer tok", "Content-Type": "application/json"})
    assert 400 <= response.status_code < 500, (case, response.status_code, response.text[:200])
    assert response.json()["error"] and "Traceback" not in response.text
    assert stored_labels(db) == []


# form fields for POST /label, on top of the page's own (csrf, item_id, shown_order, started) → the change
FORM_CASES = {
    "shown_order with a string (was a 500)": {"slot": "0", "shown_order": '[0, "x"]'},
    "a ranking of floats (was a 500)": {"slot": "rank", "ranking": "[0.0, 1.0]"},
    "superscript two as a slot (was a 500)": {"slot": "\u00b2"},
    "100k nested brackets as shown_order (was a 500)": {"slot": "0", "shown_order": "[" * 100_000},
    "100k nested brackets as a ranking (was a 500)": {"slot": "rank", "ranking": "[" * 100_000},
    "started = -1e999 (an infinite duration was stored)": {"slot": "0", "started": "-1e999"},
    "started = nan (was stored as 0 seconds)": {"slot": "0", "started": "nan"},
    "started in the future (was stored as 0 seconds)": {"slot": "0", "started": "9e12"},
    "arabic-indic digit as a slot (was stored)": {"slot": "\u0661"},
    "booleans in shown_order (were stored)": {"slot": "0", "shown_order": "[true, false]"},
    "booleans in a ranking (were stored)": {"slot": "rank", "ranking": "[true, false]"},
    "a rationale over 500 characters (was cut silently)": {"slot": "0", "rationale": "x" * 600},
    "confidence = inf": {"slot": "0", "confidence": "inf"},
}


@pytest.mark.parametrize("case", sorted(FORM_CASES))
def test_hostile_form_posts_get_a_4xx_and_store_nothing(case, tmp_path):
    db = make_store(tmp_path / "labels.sqlite")
    client = client_for(db)
    login(client, "tok")
    fields = hidden_fields(client.get("/").text)
    assert fields.get("csrf") and fields.get("item_id") == "i0"
    response = client.post("/label", data={**fields, **FORM_CASES[case]}, follow_redirects=False)
    assert 400 <= response.status_code < 500, (case, response.status_code, response.text[:200])
    assert "Traceback" not in response.text and "Internal Server Error" not in response.text
    assert stored_labels(db) == []


def test_form_errors_say_what_is_wrong(tmp_path):
    db = make_store(tmp_path / "labels.sqlite")
    client = client_for(db)
    login(client, "tok")
    fields = hidden_fields(client.get("/").text)
    response = client.post("/label", data={**fields, "slot": "0", "shown_order": '[0, "x"]'})
    assert response.status_code == 422 and "shown_order must be a list of integer positions" in response.text
    response = client.post("/label", data={**fields, "slot": "9"})
    assert response.status_code == 422 and "slot 9 is not a shown position (0..1)" in response.text


OTHER_REQUESTS = {
    "a JSON body to the form endpoint": ("post", "/label", {"json": {"item_id": "i0", "slot": "0"}}),
    "a file upload to the form endpoint": ("post", "/label", {"files": {"item_id": ("x.txt", b"i0")}}),
    "an unknown export method": ("get", "/admin/export?method=evil", {"headers": {"Authorization": "Bearer adm"}}),
    "a JSON body to /login": ("post", "/login", {"json": {"token": "tok"}}),
    "an unparsable Content-Length": ("post", "/api/labels", {"content": b"{}", "headers": {
        "Authorization": "Bearer tok", "Content-Type": "application/json", "Content-Length": "abc"}}),
}


@pytest.mark.parametrize("case", sorted(OTHER_REQUESTS))
def test_other_malformed_requests_get_a_4xx(case, tmp_path):
    db = make_store(tmp_path / "labels.sqlite")
    client = client_for(db)
    login(client, "tok")
    method, path, kwargs = OTHER_REQUESTS[case]
    response = getattr(client, method)(path, **kwargs)
    assert 400 <= response.status_code < 500, (case, response.status_code, response.text[:200])
    assert stored_labels(db) == []


def test_stats_are_valid_json_even_with_an_infinite_duration_in_the_store(tmp_path):
    """An older version stored seconds=inf; `label stats` printed inf and wrote Infinity (invalid JSON)."""
    from tether.config import LabelStatsConfig
    from tether.recipes.label import run_label_stats

    db = make_store(tmp_path / "labels.sqlite", [Item(f"i{k}", f"q{k}", ["a", "b"]) for k in range(3)])
    raw = sqlite3.connect(db)
    raw.executemany("INSERT INTO labels (annotator, item_id, choice, seconds, created) VALUES (?, ?, ?, ?, 0)",
                    [("ann", "i0", 0, float("inf")), ("ann", "i1", 1, 4.0), ("ann", "i2", 0, -3.0)])
    raw.commit()
    raw.close()
    report = run_label_stats(LabelStatsConfig(db=str(db)))
    text = (tmp_path / "labels.stats.json").read_text()

    def reject(constant):
        raise ValueError(f"not JSON: {constant}")

    parsed = json.loads(text, parse_constant=reject)  # strict JSON: no Infinity / NaN
    assert parsed["annotators"]["ann"]["mean_seconds"] == 4.0  # the impossible durations are left out
    assert report["annotators"]["ann"]["mean_seconds"] == 4.0


def test_random_requests_never_get_a_5xx_or_store_a_bad_value(tmp_path):
    """A seeded fuzz over every POST endpoint: form fields, JSON fields and raw bytes under any content type."""
    import random

    from tests.feedback.app_helpers import csrf_of

    db = make_store(tmp_path / "labels.sqlite", PAIR_AND_TRIPLE)
    client = client_for(db)
    login(client, "tok")
    page = client.get("/").text
    fields, csrf = hidden_fields(page), csrf_of(page)
    rng = random.Random(28)
    atoms = ["", "0", "1", "-1", "1e999", "nan", "[", "]", "{", "null", "true", '"', "%ff", "\u00b2", "\u0661", "rank",
             "tie", "skip", "both_bad", "[0,1]", "[1,0]", "[0.5]", "x" * 300, "\x00", "&", "="]
    values = [0, 1, -1, 1.5, None, True, "0", "rank", [0, 1], [1, 0, 2], {"a": 1}, "i0", "k0", [True], [[0]]]
    paths = ["/label", "/login", "/logout", "/undo", "/guidelines", "/admin/login", "/api/labels", "/api/undo"]
    for _ in range(300):
        kind = rng.choice(["form", "json", "raw"])
        if kind == "form":
            data = {**fields, "csrf": csrf}
            for key in rng.sample([*fields, "ranking", "confidence", "rationale"], rng.randint(1, 4)):
                data[key] = "".join(rng.choice(atoms) for _ in range(rng.randint(0, 3)))
            response = client.post("/label", data=data, follow_redirects=False)
        elif kind == "json":
            body = {key: rng.choice(values) for key in rng.sample(
                ["item_id", "slot", "shown_order", "ranking", "confidence", "rationale", "seconds"], rng.randint(1, 5))}
            response = client.post("/api/labels", content=json.dumps(body).encode(),
                                   headers={"Authorization": "Bearer tok", "Content-Type": "application/json"})
        else:
            response = client.post(rng.choice(paths), content=bytes(rng.randrange(256) for _ in range(rng.randint(0, 60))),
                                   headers={"Content-Type": rng.choice(["application/x-www-form-urlencoded",
                                                                        "multipart/form-data; boundary=x",
                                                                        "application/json", "text/plain", ""]),
                                            "Authorization": rng.choice(["", "Bearer tok", "Bearer adm"])})
        assert response.status_code < 500, (kind, response.status_code, response.text[:200])
    assert all(label.problem() is None for label in stored_labels(db))
