"""Score rows with a trained reward model (``tether score``).

Accepted rows (plain or conversational, like the training data):
- ``prompt`` + ``response`` (or ``completion``) → ``score``
- ``prompt`` + ``chosen`` + ``rejected`` → ``chosen_score``, ``rejected_score``
- ``prompt`` + ``responses`` (list) → ``scores`` (list)
- ``messages`` ending with an assistant turn → ``score``

Each output row is the input row plus the score fields; with an ensemble
(``model=a,b,c`` or a directory with ``ensemble.json``) ``*_std`` (disagreement) and
``*_conservative`` (mean − k·std) are added. Sequences longer than ``max_length`` keep
their last ``max_length`` tokens (the response end, where the head reads); such rows
are counted and reported.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tether.config import ScoreConfig
from tether.data import load_records
from tether.data.tokenize import encode_prompt_response
from tether.engine.runtime import atomic_write_text
from tether.errors import TetherInputError
from tether.models.loading import load_tokenizer
from tether.models.reward import ensemble_members, load_reward_models, recorded_chat_templates, score_with_members
from tether.utils.logging import console

RESPONSE_FIELDS = ("response", "completion")


class ScoreInputError(TetherInputError, ValueError):
    """Rows or model paths that `tether score` cannot use."""


def _row_items(row: dict, where: str) -> list[tuple[str, int | None, Any, Any]]:
    """(output field, position in a list field or None, prompt, response) for each response in a row."""
    if "messages" in row and isinstance(row["messages"], list):
        msgs = row["messages"]
        if not msgs or not isinstance(msgs[-1], dict) or msgs[-1].get("role") != "assistant":
            raise ScoreInputError(f"{where}, field 'messages': the last message must be the assistant's response")
        return [("score", None, msgs[:-1], [msgs[-1]])]
    if "prompt" not in row:
        raise ScoreInputError(f"{where}: missing field 'prompt' (or 'messages')")
    prompt = row["prompt"]
    if "chosen" in row and "rejected" in row:
        return [("chosen_score", None, prompt, row["chosen"]), ("rejected_score", None, prompt, row["rejected"])]
    if isinstance(row.get("responses"), list):
        return [("scores", i, prompt, r) for i, r in enumerate(row["responses"])]
    for name in RESPONSE_FIELDS:
        if name in row:
            return [("score", None, prompt, row[name])]
    raise ScoreInputError(f"{where}: no response to score (expected 'response', 'completion', 'chosen'/'rejected' "
                          "or 'responses')")


def _put(row: dict, key: str, position: int | None, value: float) -> None:
    if position is None:
        row[key] = value
    else:
        row.setdefault(key, []).append(value)  # targets arrive in list order


def trained_chat_template(member_dirs: list[Path]) -> str | None:
    """The ``data.chat_template`` the reward models were trained with (their ``tether.json``), or None when none
    records one; models that disagree are an error (one formatting of the rows cannot suit them all)."""
    recorded = recorded_chat_templates(member_dirs)
    found = {value for value in recorded.values() if value}
    if len(found) > 1:
        raise ScoreInputError(f"the reward models were trained with different data.chat_template settings ({recorded}); "
                              "score them separately or give chat_template= explicitly")
    return found.pop() if found else None


def score_file(cfg: ScoreConfig) -> Path:
    if not cfg.model:
        raise ScoreInputError("model= is required: a reward model directory (or several, comma-separated)")
    if not cfg.input:
        raise ScoreInputError("input= is required: a jsonl/json/csv/parquet file of rows to score")
    dirs = [Path(p.strip()) for p in cfg.model.split(",") if p.strip()]
    for d in dirs:
        if not d.is_dir():
            raise ScoreInputError(f"reward model directory {d} does not exist")
    member_dirs = [m for d in dirs for m in ensemble_members(d)]
    models = [m for d in member_dirs for m in load_reward_models(d, cfg.precision)]
    tokenizer = load_tokenizer(str(member_dirs[0]))
    chat_template = cfg.chat_template
    if chat_template == "auto":  # a model trained on plain text scores plain text, whatever its tokenizer carries
        chat_template = trained_chat_template(member_dirs) or "auto"
    rows = load_records(cfg.input)
    sequences, targets = [], []
    truncated = 0
    for number, row in enumerate(rows, start=1):
        for key, position, prompt, response in _row_items(row, f"{cfg.input} row {number}"):
            prompt_ids, response_ids = encode_prompt_response(tokenizer, prompt, response, chat_template)
            ids = prompt_ids + response_ids
            if len(ids) > cfg.max_length:
                ids = ids[-cfg.max_length:]
                truncated += 1
            sequences.append(ids)
            targets.append((number - 1, key, position))
    scores = score_with_members(models, sequences, tokenizer.pad_token_id, cfg.batch_size, cfg.ensemble_k)
    for i, (row_index, key, position) in enumerate(targets):
        row = rows[row_index]
        _put(row, key, position, float(scores.mean[i]))
        if len(models) > 1:
            _put(row, f"{key}_std", position, float(scores.std[i]))
            _put(row, f"{key}_conservative", position, float(scores.conservative[i]))
    output = Path(cfg.output) if cfg.output else Path(cfg.input).with_suffix(".scored.jsonl")
    atomic_write_text(output, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    if truncated:
        console.print(f"{truncated} sequences longer than max_length={cfg.max_length} kept their last "
                      f"{cfg.max_length} tokens")
    console.print(f"scored {len(sequences)} responses in {len(rows)} rows with {len(models)} model(s) → {output}")
    return output
