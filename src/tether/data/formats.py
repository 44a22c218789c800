"""Detect and validate the data formats (TRL-compatible), collecting every problem.

| format                  | fields                                              |
|-------------------------|-----------------------------------------------------|
| sft_prompt_completion   | prompt, completion (text or messages)               |
| sft_messages            | messages: [{role, content}, ...]                    |
| sft_text                | text                                                |
| preference              | prompt, chosen, rejected (+ margin); or implicit-prompt conversations chosen/rejected |
| ranking                 | prompt, responses [K texts], ranks [K ints, 0 = best; equal = tie] |
| unpaired                | prompt, completion, label (bool)  — KTO             |
| prompt_only             | prompt                                              |

Validation returns normalised rows (dicts with ``row`` = the 1-based row number) or
raises :class:`DataError` listing one line per problem, each naming file, row and field.
"""

from __future__ import annotations

import math
from typing import Any

from tether.data.errors import DataError, Problems

ROLES = {"system", "user", "assistant", "tool", "developer"}
SFT_FORMATS = {"sft_prompt_completion", "sft_messages", "sft_text"}
PAIR_FORMATS = {"preference", "ranking"}


def detect_format(record: Any, path: str) -> str:
    """Format of a file from the fields of its first row."""
    if not isinstance(record, dict):
        raise DataError(f"{path} row 1: expected a JSON object, got {type(record).__name__}")
    keys = set(record)
    if "responses" in keys or "ranks" in keys:
        return "ranking"
    if "chosen" in keys or "rejected" in keys:
        return "preference"
    if "label" in keys:
        return "unpaired"
    if "messages" in keys:
        return "sft_messages"
    if "completion" in keys:
        return "sft_prompt_completion"
    if "text" in keys:
        return "sft_text"
    if "prompt" in keys:
        return "prompt_only"
    raise DataError(f"{path} row 1: cannot tell the format from fields {sorted(keys)}; expected prompt/completion, "
                    "messages, text, prompt/chosen/rejected, prompt/responses/ranks or prompt/completion/label")


def is_conversation(value: Any) -> bool:
    return isinstance(value, list)


def check_text(value: Any, problems: Problems, row: int, field: str, roles: set[str] | None = None) -> bool:
    """A non-empty string, or a non-empty list of {role, content} messages."""
    if isinstance(value, str):
        if not value.strip():
            problems.add(row, field, "empty text")
            return False
        return True
    if isinstance(value, list):
        if not value:
            problems.add(row, field, "empty list of messages")
            return False
        for i, msg in enumerate(value):
            if not isinstance(msg, dict) or "role" not in msg or "content" not in msg:
                problems.add(row, field, f"message {i} must be an object with 'role' and 'content'")
                return False
            if msg["role"] not in ROLES:
                problems.add(row, field, f"message {i} has unknown role {msg['role']!r}")
                return False
            if not isinstance(msg["content"], str):
                problems.add(row, field, f"message {i} content must be text, got {type(msg['content']).__name__}")
                return False
            if not msg["content"].strip():
                problems.add(row, field, f"message {i} has empty content")
                return False
            if roles is not None and msg["role"] not in roles:
                problems.add(row, field, f"message {i} must have role {' or '.join(sorted(roles))}")
                return False
        return True
    problems.add(row, field, f"expected text or a list of messages, got {type(value).__name__} {value!r:.40}")
    return False


def _require(record: dict, fields: tuple[str, ...], problems: Problems, row: int) -> bool:
    ok = True
    for field in fields:
        if field not in record or record[field] is None:
            problems.add(row, field, "missing field")
            ok = False
    return ok


def number_problem(value: Any) -> str | None:
    """What is wrong with ``value`` as a number, or None when it is a finite one.

    Text and booleans are refused, and so are NaN and ±inf (Python's json reads ``NaN`` and
    ``Infinity``, a csv cell ``nan`` parses as one, a parquet float column can hold them) and
    integers too large for a float: in a loss any of them turns every gradient into NaN.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"expected a number, got {type(value).__name__} {value!r:.40}"
    try:
        number = float(value)
    except OverflowError:
        return f"expected a finite number, got a {len(str(abs(value)))}-digit integer"
    if not math.isfinite(number):
        return f"expected a finite number, got {value!r}"
    return None


def _split_implicit_prompt(chosen: list, rejected: list) -> tuple[list, list, list]:
    """TRL's implicit-prompt format: the shared leading messages are the prompt."""
    n = 0
    while n < min(len(chosen), len(rejected)) - 1 and chosen[n] == rejected[n]:
        n += 1
    return chosen[:n], chosen[n:], rejected[n:]


def _preference_row(record: dict, problems: Problems, row: int) -> dict | None:
    implicit = "prompt" not in record and is_conversation(record.get("chosen"))
    fields = ("chosen", "rejected") if implicit else ("prompt", "chosen", "rejected")
    if not _require(record, fields, problems, row):
        return None
    ok = all([check_text(record[f], problems, row, f) for f in fields])
    margin = record.get("margin")
    problem = number_problem(margin) if margin is not None else None
    if problem:
        problems.add(row, "margin", f"{problem}; give a finite number or leave the field out")
        ok = False
    if not ok:
        return None
    if record["chosen"] == record["rejected"]:
        problems.add(row, "rejected", "identical to 'chosen' (a pair needs two different responses)")
        return None
    prompt, chosen, rejected = (_split_implicit_prompt(record["chosen"], record["rejected"]) if implicit
                                else (record["prompt"], record["chosen"], record["rejected"]))
    if implicit and not prompt:
        problems.add(row, "chosen", "conversations share no prompt messages (add a 'prompt' field)")
        return None
    return {"row": row, "prompt": prompt, "chosen": chosen, "rejected": rejected,
            "margin": float(margin) if margin is not None else None}


def _ranking_row(record: dict, problems: Problems, row: int) -> dict | None:
    if not _require(record, ("prompt", "responses", "ranks"), problems, row):
        return None
    ok = check_text(record["prompt"], problems, row, "prompt")
    responses, ranks = record["responses"], record["ranks"]
    if not isinstance(responses, list) or len(responses) < 2:
        problems.add(row, "responses", "expected a list of at least 2 responses")
        return None
    ok = all([check_text(r, problems, row, f"responses[{i}]") for i, r in enumerate(responses)]) and ok
    if not isinstance(ranks, list) or any(isinstance(r, bool) or not isinstance(r, int) for r in ranks):
        problems.add(row, "ranks", f"expected a list of integers, got {ranks!r:.60}")
        return None
    k = len(responses)
    if len(ranks) != k:
        problems.add(row, "ranks", f"has {len(ranks)} entries for {k} responses")
        return None
    if any(r < 0 or r >= k for r in ranks):
        problems.add(row, "ranks", f"{ranks} is not a ranking of {k} responses: each rank must be in 0..{k - 1} "
                     "(0 = best, equal ranks = tie)")
        return None
    return {"row": row, "prompt": record["prompt"], "responses": responses, "ranks": ranks} if ok else None


def _unpaired_row(record: dict, problems: Problems, row: int) -> dict | None:
    if not _require(record, ("prompt", "completion", "label"), problems, row):
        return None
    ok = check_text(record["prompt"], problems, row, "prompt") & check_text(record["completion"], problems, row,
                                                                           "completion")
    if not isinstance(record["label"], bool):
        problems.add(row, "label", f"expected true or false, got {record['label']!r:.40}")
        return None
    return {"row": row, "prompt": record["prompt"], "completion": record["completion"], "label": record["label"]} \
        if ok else None


def _sft_row(fmt: str, record: dict, problems: Problems, row: int) -> dict | None:
    if fmt == "sft_text":
        if _require(record, ("text",), problems, row) and check_text(record["text"], problems, row, "text"):
            if not isinstance(record["text"], str):
                problems.add(row, "text", "expected text")
                return None
            return {"row": row, "prompt": None, "completion": record["text"]}
        return None
    if fmt == "sft_messages":
        if not (_require(record, ("messages",), problems, row) and check_text(record["messages"], problems, row,
                                                                              "messages")):
            return None
        messages = record["messages"]
        if not isinstance(messages, list):
            problems.add(row, "messages", "expected a list of messages")
            return None
        last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
        if last is None or last == 0:
            problems.add(row, "messages", "needs at least one message before an assistant reply")
            return None
        return {"row": row, "prompt": messages[:last], "completion": messages[last:last + 1]}
    if _require(record, ("prompt", "completion"), problems, row):
        ok = check_text(record["prompt"], problems, row, "prompt") & check_text(record["completion"], problems, row,
                                                                               "completion")
        return {"row": row, "prompt": record["prompt"], "completion": record["completion"]} if ok else None
    return None


def _prompt_row(fmt: str, record: dict, problems: Problems, row: int) -> dict | None:
    if fmt == "sft_messages":
        if _require(record, ("messages",), problems, row) and check_text(record["messages"], problems, row, "messages"):
            messages = record["messages"]
            if messages[-1]["role"] == "assistant":
                messages = messages[:-1]
            if not messages:
                problems.add(row, "messages", "no prompt messages before the assistant reply")
                return None
            return {"row": row, "prompt": messages}
        return None
    field = "text" if fmt == "sft_text" else "prompt"
    if _require(record, (field,), problems, row) and check_text(record[field], problems, row, field):
        return {"row": row, "prompt": record[field]}
    return None


def validate_rows(rows: list[tuple[int, Any]], path: str, accepted: set[str], purpose: str) -> tuple[str, list[dict]]:
    """Check every row against the file's format; return (format, normalised rows) or raise DataError."""
    fmt = detect_format(rows[0][1], path)
    if fmt not in accepted and not (purpose == "prompts"):
        raise DataError(f"{path}: looks like {fmt} data (fields {sorted(rows[0][1])}); {purpose} needs "
                        f"{' or '.join(sorted(accepted))}")
    problems = Problems(path)
    normalised = []
    for number, record in rows:
        if not isinstance(record, dict):
            problems.add(number, None, f"expected a JSON object, got {type(record).__name__}")
            continue
        if purpose == "prompts":
            item = _prompt_row(fmt, record, problems, number)
        elif fmt == "preference":
            item = _preference_row(record, problems, number)
        elif fmt == "ranking":
            item = _ranking_row(record, problems, number)
        elif fmt == "unpaired":
            item = _unpaired_row(record, problems, number)
        else:
            item = _sft_row(fmt, record, problems, number)
        if item is not None:
            normalised.append(item)
    problems.raise_if_any()
    return fmt, normalised
