"""Read records from jsonl / json / parquet / csv files and saved HF ``datasets`` directories.

Text files are UTF-8, with or without a byte-order mark (Excel's "CSV UTF-8", Notepad and PowerShell write
one), or UTF-16 with a byte-order mark (Windows PowerShell's ``>``); the mark says which, so nothing is guessed.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tether.data.errors import DataError, Problems
from tether.utils.files import text_codec

SUPPORTED = (".jsonl", ".json", ".parquet", ".csv")


def json_lines(text: str, path: str) -> Iterator[tuple[int, str, Any]]:
    """(line number, the line, its JSON value) of each non-blank line of JSONL ``text`` (read from ``path``); the
    first line that is not JSON raises :class:`DataError` naming the file, the line and the column. For readers that
    need the lines themselves or stop at the first problem; data files go through :func:`load_rows`."""
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path} line {number}: not valid JSON ({exc.msg} at column {exc.colno})") from None
        yield number, line, value
LIST_FIELDS = ("messages", "responses", "ranks", "prompt", "chosen", "rejected", "completion")


def load_rows(path: str | Path) -> list[tuple[int, Any]]:
    """(row number as a user counts it, record) pairs. Records are usually dicts; validation checks that."""
    if not str(path).strip():  # (Path("") is ".", the current directory: check the text before it becomes a path)
        raise DataError("data.train_file is required: give data.train_file=PATH (a .jsonl, .json, .parquet or .csv "
                        "file, or a directory saved with datasets' save_to_disk)")
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if path.is_dir():
        return _load_hf_dir(path)
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED:
        raise DataError(f"{path}: unsupported file type '{suffix}'; use one of {', '.join(SUPPORTED)} "
                        "or a directory saved with datasets' save_to_disk")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty")
    rows = {".jsonl": _load_jsonl, ".json": _load_json, ".parquet": _load_parquet, ".csv": _load_csv}[suffix](path)
    if not rows:
        raise DataError(f"{path}: no rows")
    return rows


def load_records(path: str | Path) -> list[dict]:
    """All records of a data file (see :func:`load_rows`); every record must be an object."""
    rows = load_rows(path)
    problems = Problems(str(path))
    for number, record in rows:
        if not isinstance(record, dict):
            problems.add(number, None, f"expected a JSON object, got {type(record).__name__}")
    problems.raise_if_any()
    return [record for _, record in rows]


def _encoding_problem(codec: str, exc: UnicodeDecodeError, offset: int = 0) -> str:
    name = "UTF-16" if codec.startswith("utf-16") else "UTF-8"
    return f"not valid {name} (byte {exc.start + offset}); re-save the file as UTF-8"


def read_text(path: str | Path) -> str:
    """The text of a user's file (UTF-8, or UTF-16 with a byte-order mark), without the mark; DataError if it
    does not decode."""
    raw = Path(path).read_bytes()
    codec, bom = text_codec(raw)
    try:
        return raw[bom:].decode(codec)
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: {_encoding_problem(codec, exc, bom)}") from None


def _numbered_lines(path: Path, problems: Problems) -> list[tuple[int, str]]:
    """(line number, text) of each line of a jsonl file; a line that does not decode is a problem."""
    with open(path, "rb") as handle:
        codec, bom = text_codec(handle.read(len(codecs.BOM_UTF8)))
        handle.seek(0)
        if codec == "utf-8":  # line by line: one bad line is reported and the others still read
            lines = []
            for number, raw in enumerate(handle, start=1):
                skip = bom if number == 1 else 0
                try:
                    lines.append((number, raw[skip:].decode(codec)))
                except UnicodeDecodeError as exc:
                    problems.add(number, None, _encoding_problem(codec, exc, skip))
            return lines
        raw = handle.read()[bom:]  # UTF-16: a newline is two bytes, so decode first, then split
    try:
        return list(enumerate(raw.decode(codec).split("\n"), start=1))
    except UnicodeDecodeError as exc:
        before = raw[:exc.start].decode(codec).split("\n")  # the lines before the bad bytes, and the bad one
        problems.add(len(before), None, _encoding_problem(codec, exc, bom))
        return list(enumerate(before[:-1], start=1))


def _load_jsonl(path: Path) -> list[tuple[int, Any]]:
    problems = Problems(str(path))
    rows = []
    for number, line in _numbered_lines(path, problems):
        if not line.strip():
            continue
        try:
            rows.append((number, json.loads(line)))
        except json.JSONDecodeError as exc:
            problems.add(number, None, f"not valid JSON ({exc.msg} at column {exc.colno})")
    problems.raise_if_any()
    return rows


def _load_json(path: Path) -> list[tuple[int, Any]]:
    try:
        data = json.loads(read_text(path))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
    if isinstance(data, dict):
        for key in ("data", "train", "rows", "examples"):
            if isinstance(data.get(key), list):
                data = data[key]
                break
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of objects (or {{\"data\": [...]}})")
    return list(enumerate(data, start=1))


def _load_parquet(path: Path) -> list[tuple[int, Any]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a bad file
        raise DataError(f"{path}: cannot read as parquet ({str(exc).splitlines()[0]})") from None
    return list(enumerate(table.to_pylist(), start=1))


def _parse_cell(key: str, value: str) -> Any:
    text = value.strip()
    if key in LIST_FIELDS and text[:1] in ("[", "{"):
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return value
    if key in ("margin",):
        try:
            return float(text) if text else None
        except ValueError:
            return value
    if key == "label" and text.lower() in ("true", "false"):
        return text.lower() == "true"
    return value


def _load_csv(path: Path) -> list[tuple[int, Any]]:
    reader = csv.DictReader(io.StringIO(read_text(path), newline=""))
    try:
        # row 1 is the header line, so data rows start at 2 as a spreadsheet shows them
        return [(number, {k: _parse_cell(k, v or "") for k, v in row.items() if k is not None})
                for number, row in enumerate(reader, start=2)]
    except csv.Error as exc:
        raise DataError(f"{path}: cannot read as CSV ({exc})") from None


def _load_hf_dir(path: Path) -> list[tuple[int, Any]]:
    import datasets

    try:
        dataset = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as exc:
        raise DataError(f"{path}: not a directory saved with datasets' save_to_disk ({str(exc).splitlines()[0]})") \
            from None
    if isinstance(dataset, datasets.DatasetDict):
        if "train" in dataset:
            dataset = dataset["train"]
        elif len(dataset) == 1:
            dataset = next(iter(dataset.values()))
        else:
            raise DataError(f"{path}: a DatasetDict with splits {list(dataset)}; point at one split or add 'train'")
    return list(enumerate(dataset.to_list(), start=1))
