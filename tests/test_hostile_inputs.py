"""Hostile input, 60+ cases: data files, configs, CLI arguments and HTTP bodies.

Each must give a clear error (an `error:` line, no traceback) with exit code 2 on the CLI,
or a 4xx from the labeling server, and leave the run directory / the label store unchanged.
"""

import codecs
import csv
import io
import json
import shutil
import subprocess
import sys

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
    "utf-16 cut in the middle of a character": ("utf16_cut.jsonl", json.dumps(GOOD_PAIR).encode("utf-16") + b"\x00"),
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
    "kl_coef is text": ["kl_coef=strong"],
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


# ------------------------------------------------------------------ numbers that are not numbers: NaN, inf, -inf
# Python's json module reads and writes NaN / Infinity / -Infinity (RFC 8259 JSON has no such numbers), a CSV
# cell "nan" or "inf" parses as a float, and a parquet float column can hold them. Every numeric field that tether
# reads must refuse them with a line naming file, row and field, as it refuses any other bad value.

NON_FINITE = {"NaN": float("nan"), "inf": float("inf"), "-inf": float("-inf")}
# field → (format's good row, the same row with the field set to a value, the command that reads it)
NUMERIC_FIELDS = {
    "margin": (dict(GOOD_PAIR, margin=1.5), lambda v: dict(GOOD_PAIR, margin=v), ["rm"]),
    "ranks": ({"prompt": "q", "responses": ["a", "b"], "ranks": [0, 1]},
              lambda v: {"prompt": "q", "responses": ["a", "b"], "ranks": [0, v]}, ["rm"]),
    "label": ({"prompt": "q", "completion": "a", "label": True},
              lambda v: {"prompt": "q", "completion": "a", "label": v}, ["dpo", "loss=kto"]),
}
COMMAND_CONFIG = {"rm": "rm_tiny.yaml", "dpo": "dpo_tiny.yaml"}


def _csv_cell(value):
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)  # str(nan) == "nan", as pandas reads


def _write_rows(path, rows):
    """Rows in the file type of ``path``'s suffix, written the way Python users write them."""
    suffix = path.suffix
    if suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    elif suffix == ".json":
        path.write_text(json.dumps(rows), encoding="utf-8")
    elif suffix == ".csv":
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows({k: _csv_cell(v) for k, v in r.items()} for r in rows)
    elif suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@pytest.mark.parametrize("value_name", sorted(NON_FINITE))
@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv", ".parquet"])
@pytest.mark.parametrize("field", sorted(NUMERIC_FIELDS))
def test_non_finite_number_in_a_numeric_field(field, suffix, value_name, tmp_path):
    good, bad_with, command = NUMERIC_FIELDS[field]
    # a parquet column has one type: a good row's ints / bools and the bad row's float cannot share it, so a
    # parquet file holds the bad row alone; the other files hold a good row first, so the row number is checked
    rows = [bad_with(NON_FINITE[value_name])] if suffix == ".parquet" else [good, bad_with(NON_FINITE[value_name])]
    path = _write_rows(tmp_path / f"{field}{suffix}", rows)
    bad_row = len(rows) + (1 if suffix == ".csv" else 0)  # a csv's header is row 1
    run_dir = tmp_path / "run"
    result, output = _invoke(*command, EXAMPLES / COMMAND_CONFIG[command[0]], f"data.train_file={path}",
                             "train.max_steps=1", f"run_dir={run_dir}")
    _assert_clean_error(result, output, run_dir)
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output[-2000:]
    assert f"{path} row {bad_row}, field '{field}'" in errors[0], errors[0]
    assert str(NON_FINITE[value_name]) in errors[0], errors[0]  # the message quotes the value: nan, inf or -inf


@pytest.mark.parametrize("text", ["1" + "0" * 400, "1e999", "-1e999"])
def test_margin_beyond_the_float_range(text, tmp_path):
    """A JSON integer too large for a float (float() raises OverflowError) or a literal that reads as ±inf."""
    path = tmp_path / "huge_margin.jsonl"
    path.write_text(json.dumps(GOOD_PAIR) + "\n" + json.dumps(GOOD_PAIR)[:-1] + f', "margin": {text}}}\n')
    run_dir = tmp_path / "run"
    result, output = _invoke("rm", EXAMPLES / "rm_tiny.yaml", f"data.train_file={path}", "train.max_steps=1",
                             f"run_dir={run_dir}")
    _assert_clean_error(result, output, run_dir)
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"{path} row 2, field 'margin'" in errors[0], output[-2000:]


# ------------------------------------------------------------------ good files in the encodings editors write
# Excel's "CSV UTF-8", PowerShell's Out-File -Encoding utf8 and Notepad write UTF-8 with a byte-order mark;
# Windows PowerShell 5's `>` and Out-File write UTF-16 (little-endian) with one. A BOM names the encoding
# unambiguously: such a file must load and give exactly the rows of the same file saved as plain UTF-8.

# (U+2028, a line separator to str.splitlines but not to JSON or csv, must stay inside its row)
GOOD_ROWS = [{"prompt": "Say hi — politely, in Français", "chosen": "Bonjour,\u2028ça va ? ☕", "rejected": "Go away.",
              "margin": 1.5},
             {"prompt": "Name a colour.", "chosen": "Blue.", "rejected": "I will not.", "margin": 0.25}]
BOMS = {"utf-8": (codecs.BOM_UTF8, "utf-8"), "utf-16-le": (codecs.BOM_UTF16_LE, "utf-16-le"),
        "utf-16-be": (codecs.BOM_UTF16_BE, "utf-16-be")}


def _text_of(suffix, rows, newline):
    if suffix == ".jsonl":
        return "".join(json.dumps(r, ensure_ascii=False) + newline for r in rows)
    if suffix == ".json":
        return json.dumps(rows, ensure_ascii=False, indent=1).replace("\n", newline)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator=newline)
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


@pytest.mark.parametrize("newline", ["\n", "\r\n"], ids=["lf", "crlf"])
@pytest.mark.parametrize("bom", sorted(BOMS))
@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv"])
def test_a_byte_order_mark_loads_the_same_rows(suffix, bom, newline, tmp_path):
    from tether.data.formats import validate_rows
    from tether.data.io import load_rows

    text = _text_of(suffix, GOOD_ROWS, newline)
    plain = tmp_path / f"plain{suffix}"
    plain.write_bytes(text.encode("utf-8"))
    marked = tmp_path / f"marked{suffix}"
    mark, encoding = BOMS[bom]
    marked.write_bytes(mark + text.encode(encoding))
    expected = load_rows(plain)
    assert [row for _, row in expected] == GOOD_ROWS  # the reference itself reads right (margins as numbers)
    assert load_rows(marked) == expected
    assert validate_rows(load_rows(marked), str(marked), {"preference"}, "x") == \
        validate_rows(expected, str(plain), {"preference"}, "x")


@pytest.mark.parametrize("bom", sorted(BOMS))
def test_a_yaml_config_with_a_byte_order_mark(bom, tmp_path):
    mark, encoding = BOMS[bom]
    config = tmp_path / "rm.yaml"
    text = (EXAMPLES / "rm_tiny.yaml").read_text(encoding="utf-8") + "\ncenter_coef: 0.125\n"
    config.write_bytes(mark + text.replace("\n", "\r\n").encode(encoding))
    result, output = _invoke("rm", config, "--print-config")
    assert result.exit_code == 0, output[-2000:]
    assert "center_coef: 0.125" in output and "max_steps: 80" in output  # the file's own values, all of it


# ------------------------------------------------------------------ a data file where a config is expected


def _tether(*args, cwd):
    """The CLI as a user types it (a fresh process, as tests/cli/test_cli.py runs it)."""
    return subprocess.run([sys.executable, "-m", "tether.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


SAMPLE_ROW = {"prompt": "q", "responses": ["a", "b"]}
# (command, file written, rows, extra overrides) → the one error line expected
DATA_AS_CONFIG = {
    "rm, jsonl of many rows": (["rm"], "prefs.jsonl", [GOOD_PAIR, GOOD_PAIR], [],
                               "prefs.jsonl is a data file, not a config; did you mean "
                               "`tether rm data.train_file=prefs.jsonl`?"),
    "rm, jsonl of one row (also valid YAML)": (["rm"], "one.jsonl", [GOOD_PAIR], [],
                                               "one.jsonl is a data file, not a config; did you mean "
                                               "`tether rm data.train_file=one.jsonl`?"),
    "dpo, csv, with an override": (["dpo"], "prefs.csv", [GOOD_PAIR], ["kl_coef=0.2"],
                                   "prefs.csv is a data file, not a config; did you mean "
                                   "`tether dpo data.train_file=prefs.csv kl_coef=0.2`?"),
    "sft, parquet": (["sft"], "sft.parquet", [{"prompt": "q", "completion": "a"}], [],
                     "sft.parquet is a data file, not a config; did you mean `tether sft data.train_file=sft.parquet`?"),
    "rm, json list": (["rm"], "prefs.json", [GOOD_PAIR], [],
                      "prefs.json is a data file, not a config; did you mean `tether rm data.train_file=prefs.json`?"),
    "label simulate, samples": (["label", "simulate"], "samples.jsonl", [SAMPLE_ROW], [],
                                "samples.jsonl is a data file, not a config; did you mean "
                                "`tether label simulate samples=samples.jsonl`?"),
    "score, rows to score": (["score"], "rows.jsonl", [GOOD_PAIR], [],
                             "rows.jsonl is a data file, not a config; did you mean `tether score input=rows.jsonl`?"),
    "cost, which reads no data file": (["cost"], "prefs.jsonl", [GOOD_PAIR], [],
                                       "prefs.jsonl is a data file, not a config: `tether cost` takes a YAML config "
                                       "file and key=value overrides (see `tether cost --help`)"),
}


@pytest.mark.parametrize("case", sorted(DATA_AS_CONFIG))
def test_a_data_file_given_as_the_config_says_what_was_meant(case, tmp_path):
    command, name, rows, overrides, message = DATA_AS_CONFIG[case]
    _write_rows(tmp_path / name, rows)
    result = _tether(*command, name, *overrides, cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {message}"], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # nothing run, nothing written


def test_a_json_config_still_loads(tmp_path):
    """YAML reads JSON: a .json file that is a mapping of config keys is a config, not data."""
    config = tmp_path / "rm.json"
    config.write_text(json.dumps({"center_coef": 0.125, "train": {"seed": 7}}))
    result = _tether("rm", "rm.json", "--print-config", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "center_coef: 0.125" in result.stdout and "seed: 7" in result.stdout


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
