"""Hostile input, 60+ cases: data files, configs, CLI arguments and HTTP bodies.

Each must give a clear error (an `error:` line, no traceback) with exit code 2 on the CLI,
or a 4xx from the labeling server, and leave the run directory / the label store unchanged.
"""

import json
import shutil

import pytest
from typer.testing import CliRunner

from tests.helpers import EXAMPLES
from tether.cli import app

MALFORMED = EXAMPLES / "data" / "malformed"
GOOD_PAIR = {"prompt": "Say hi", "chosen": "Hi there.", "rejected": "Go away."}


def _write(path, content):
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, list):
        path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in content))
    else:
        path.write_text(content)
    return path


# name → (file name, content); content is bytes, text, or a list of rows (dicts are JSON-encoded, strings kept as is)
BAD_DATA = {
    "empty file": ("empty.jsonl", ""),
    "whitespace only": ("blank.jsonl", "\n \n\t\n"),
    "json top level is a number": ("number.json", "42"),
    "truncated last line": ("cut.jsonl", [GOOD_PAIR, '{"prompt": "x", "chosen": "a", "rej']),
    "NUL bytes": ("nul.jsonl", b'{"prompt": "x", "chosen": "a", "rejected": "b"}\n\x00\x00\x00\n'),
    "utf-16 with BOM": ("utf16.jsonl", json.dumps(GOOD_PAIR).encode("utf-16")),
    "latin-1 bytes": ("latin1.jsonl", b'{"prompt": "caf\xe9", "chosen": "a", "rejected": "b"}\n'),
    "row is a string": ("string_row.jsonl", [GOOD_PAIR, '"just a string"']),
    "row is null": ("null_row.jsonl", [GOOD_PAIR, "null"]),
    "prompt is null": ("null_prompt.jsonl", [GOOD_PAIR, {**GOOD_PAIR, "prompt": None}]),
    "chosen is a number": ("int_chosen.jsonl", [GOOD_PAIR, {**GOOD_PAIR, "chosen": 3}]),
    "chosen is an empty string": ("empty_chosen.jsonl", [GOOD_PAIR, {**GOOD_PAIR, "chosen": ""}]),
    "rejected is whitespace": ("ws_rejected.jsonl", [GOOD_PAIR, {**GOOD_PAIR, "rejected": "   "}]),
    "chosen equals rejected": ("same.jsonl", [GOOD_PAIR, {**GOOD_PAIR, "rejected": GOOD_PAIR["chosen"]}]),
    "missing rejected": ("missing.jsonl", [GOOD_PAIR, {"prompt": "x", "chosen": "a"}]),
    "messages with an unknown role": ("role.jsonl", [
        {"chosen": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
         "rejected": [{"role": "user", "content": "q"}, {"role": "wizard", "content": "b"}]}]),
    "messages that are not dicts": ("msgs.jsonl", [{"prompt": "q", "chosen": ["a", "b"], "rejected": "c"}]),
    "ranks out of range": ("ranks_range.jsonl", [{"prompt": "q", "responses": ["a", "b", "c"], "ranks": [0, 1, 7]}]),
    "ranks of the wrong length": ("ranks_len.jsonl", [{"prompt": "q", "responses": ["a", "b", "c"], "ranks": [0, 1]}]),
    "ranks not a list": ("ranks_str.jsonl", [{"prompt": "q", "responses": ["a", "b"], "ranks": "01"}]),
    "ranks are booleans": ("ranks_bool.jsonl", [{"prompt": "q", "responses": ["a", "b"], "ranks": [True, False]}]),
    "one response to rank": ("one.jsonl", [{"prompt": "q", "responses": ["a"], "ranks": [0]}]),
    "margin is text": ("margin.jsonl", [GOOD_PAIR, {**GOOD_PAIR, "margin": "big"}]),
    "unknown format": ("unknown.jsonl", [{"question": "q", "answer": "a"}]),
    "huge row (overlong=error)": ("huge.jsonl", [GOOD_PAIR, {**GOOD_PAIR, "chosen": "word " * 200_000}]),
    "garbage parquet": ("garbage.parquet", b"PAR1 this is not parquet at all"),
    "csv without a rejected column": ("pairs.csv", "prompt,chosen\nq,a\n"),
    "not a dataset directory": ("not_a_dataset", None),
}
BAD_DATA.update({f"shipped {p.name}": (p.name, "copy") for p in sorted(MALFORMED.glob("*.jsonl"))})


def _invoke(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    output = (result.stdout or "") + (result.stderr or "")
    return result, output


def _assert_clean_error(result, output, run_dir):
    assert result.exit_code == 2, output[-2000:]
    assert "Traceback" not in output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert any(line.startswith("error:") for line in output.splitlines()), output[-2000:]
    assert not (run_dir / "rm").exists() and not (run_dir / "dpo").exists() and not (run_dir / "checkpoints").exists()


@pytest.mark.parametrize("case", sorted(BAD_DATA))
def test_bad_data_file(case, tmp_path):
    name, content = BAD_DATA[case]
    path = tmp_path / name
    if content == "copy":
        shutil.copy(MALFORMED / name, path)
    elif content is None:
        path.mkdir()
        (path / "readme.txt").write_text("not a saved dataset")
    else:
        _write(path, content)
    run_dir = tmp_path / "run"
    result, output = _invoke("rm", EXAMPLES / "rm_tiny.yaml", f"data.train_file={path}", "data.overlong=error",
                             f"run_dir={run_dir}")
    _assert_clean_error(result, output, run_dir)
    assert str(path) in output or case.startswith("not a dataset")  # the message names the file


BAD_CONFIG = {
    "unknown key": ["trian.seed=1"],
    "integer field given text": ["train.batch_size=abc"],
    "negative batch size": ["train.batch_size=-4"],
    "zero max_length": ["data.max_length=0"],
    "negative learning rate": ["train.learning_rate=-1e-5"],
    "beta is text": ["beta=strong"],
    "loss not in the registry": ["loss=dpoo"],
    "lora rank zero": ["model.lora.enabled=true", "model.lora.r=0"],
    "bool field given a number": ["train.resume=7"],
    "list field given a scalar": ["train.adam_betas=0.9"],
    "nested section given a scalar": ["train=5"],
    "chat_template not allowed": ["data.chat_template=sometimes"],
    "model directory missing": ["model.name_or_path=/nonexistent/model"],
    "data file missing": ["data.train_file=/nonexistent.jsonl"],
    "unparseable override value": ["train.adam_betas=[0.9,"],
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIG))
def test_bad_config_value(case, tmp_path):
    result, output = _invoke("dpo", EXAMPLES / "dpo_tiny.yaml", f"run_dir={tmp_path / 'run'}", *BAD_CONFIG[case])
    _assert_clean_error(result, output, tmp_path / "run")


def test_bad_yaml_files(tmp_path):
    cases = {"list.yaml": "- a\n- b\n", "syntax.yaml": "train: {batch_size: [\n", "binary.yaml": b"\xff\xfe\x00bad"}
    for name, content in cases.items():
        path = tmp_path / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        result, output = _invoke("sft", path, f"run_dir={tmp_path / 'run'}")
        _assert_clean_error(result, output, tmp_path / "run")
    result, output = _invoke("sft", tmp_path / "missing.yaml")
    _assert_clean_error(result, output, tmp_path / "run")


BAD_ARGS = {
    "two config files": ["sft", "examples/sft_tiny.yaml", "examples/rm_tiny.yaml"],
    "key without value": ["sft", "train.seed"],
    "empty key": ["sft", "=3"],
    "unknown stage in a pipeline": ["pipeline", "stages=[sft,magic]"],
    "unknown model preset": ["plan", "model=nope"],
    "zero stage out of range": ["plan", "zero=5"],
    "label stats on a missing store": ["label", "stats", "db=/nonexistent/labels.sqlite"],
    "label import of a missing file": ["label", "import", "input=/nonexistent/export.json"],
    "eval without models": ["eval", "data.train_file=examples/data/prompts.jsonl"],
    "frontier without a reward": ["frontier", "prompts_file=examples/data/prompts.jsonl"],
    "a weighted reward with an empty weight": ["ppo", "examples/ppo_tiny.yaml", "reward=0.5*"],
    "a reward that names nothing": ["ppo", "examples/ppo_tiny.yaml", "reward=not/a/dir"],
    "report on a missing run": ["report", "run_dir=/nonexistent/run"],
}


@pytest.mark.parametrize("case", sorted(BAD_ARGS))
def test_bad_cli_arguments(case, tmp_path, monkeypatch):
    monkeypatch.chdir(EXAMPLES.parent)
    result, output = _invoke(*BAD_ARGS[case])
    _assert_clean_error(result, output, tmp_path / "run")


BAD_BODIES = {
    "not JSON": (b"{not json", 422),
    "a JSON list": (json.dumps([1, 2]).encode(), 422),
    "a JSON string": (json.dumps("label").encode(), 422),
    "missing item_id": (json.dumps({"slot": "0"}).encode(), 422),
    "missing slot": (json.dumps({"item_id": "i0"}).encode(), 422),
    "slot is not a position": (json.dumps({"item_id": "i0", "slot": "left"}).encode(), 422),
    "slot out of range": (json.dumps({"item_id": "i0", "slot": "9"}).encode(), 422),
    "negative slot": (json.dumps({"item_id": "i0", "slot": "-1"}).encode(), 422),
    "shown_order not a permutation": (json.dumps({"item_id": "i0", "slot": "0", "shown_order": [0, 0]}).encode(), 422),
    "shown_order of strings": (json.dumps({"item_id": "i0", "slot": "0", "shown_order": ["a", "b"]}).encode(), 422),
    "confidence is text": (json.dumps({"item_id": "i0", "slot": "0", "confidence": "high"}).encode(), 422),
    "confidence above 1": (json.dumps({"item_id": "i0", "slot": "0", "confidence": 7}).encode(), 422),
    "seconds is text": (json.dumps({"item_id": "i0", "slot": "0", "seconds": "long"}).encode(), 422),
    "ranking on a pair that skips a response": (json.dumps({"item_id": "i0", "slot": "rank", "ranking": [0]}).encode(),
                                                422),
    "unknown item": (json.dumps({"item_id": "nope", "slot": "0"}).encode(), 422),
}


def _server_with_one_item(tmp_path):
    """A test client of the labeling app over a store with one pair item and annotator 'ann' (token 'tok')."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from tether.feedback.server import create_app
    from tether.feedback.store import Item, LabelStore

    db = tmp_path / "labels.sqlite"
    store = LabelStore(db)
    store.add_items([Item("i0", "q", ["a", "b"])])
    store.set_annotator("ann", "tok")
    store.close()
    return TestClient(create_app(str(db), admin_token="adm")), db


def _stored_labels(db):
    from tether.feedback.store import LabelStore

    check = LabelStore(db)
    try:
        return check.labels()
    finally:
        check.close()


@pytest.mark.parametrize("case", sorted(BAD_BODIES))
def test_bad_http_bodies_change_nothing(case, tmp_path):
    client, db = _server_with_one_item(tmp_path)
    body, status = BAD_BODIES[case]
    response = client.post("/api/labels", content=body, headers={"Authorization": "Bearer tok",
                                                                  "Content-Type": "application/json"})
    assert response.status_code == status and "error" in response.json()
    assert "Traceback" not in response.text
    assert _stored_labels(db) == []  # nothing was stored


def test_unauthenticated_and_forged_requests(tmp_path):
    client, db = _server_with_one_item(tmp_path)
    ok = {"item_id": "i0", "slot": "0"}
    assert client.post("/api/labels", json=ok).status_code == 401
    assert client.post("/api/labels", json=ok, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.post("/label", data={**ok, "shown_order": "[0, 1]", "csrf": "x"}).status_code == 401
    client.post("/login", data={"token": "tok"})
    assert client.post("/label", data={**ok, "shown_order": "[0, 1]", "csrf": "forged"}).status_code == 403
    assert client.get("/admin").status_code == 403 and client.get("/admin/export").status_code == 403
    assert client.get("/admin", headers={"Authorization": "Bearer tok"}).status_code == 403  # annotators are not admins
    assert _stored_labels(db) == []
