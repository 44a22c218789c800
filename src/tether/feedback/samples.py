"""samples.jsonl → items to label, validated like every other data file.

A samples row is ``{"prompt": text, "responses": [text, ...], ...}`` (``tether sample`` writes
``generation`` and ``model`` too). Every problem names the file, the row and the field, and
nothing is loaded from a file with problems. Item ids are :func:`tether.feedback.store.content_id`
— a hash of the prompt and the set of responses — so they are stable and unique across files:
loading a second file adds its items beside the first file's, and loading the same comparison
again adds nothing.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from itertools import combinations

from tether.data.errors import DataError, Problems
from tether.data.io import load_rows
from tether.feedback.store import content_id

CHAT_HINT = ("the labeling app shows text prompts; render chat-format prompts (a list of messages) to text first, "
             "e.g. with the tokenizer's chat template, as `tether sample` does")


@dataclass
class SampleRow:
    row: int
    prompt: str
    responses: list[str]


@dataclass
class Samples:
    path: str
    rows: list[SampleRow]
    nothing_to_compare: list[int] = field(default_factory=list)  # row numbers with < 2 different responses


def load_samples(path: str) -> Samples:
    """Validate a samples file; DataError (one line per problem) if any row is unusable."""
    problems = Problems(str(path))
    rows, nothing = [], []
    for number, record in load_rows(path):
        checked = _check_row(record, number, problems)
        if checked is None:
            continue
        if len(set(checked.responses)) < 2:
            nothing.append(number)
        else:
            rows.append(checked)
    problems.raise_if_any()
    if not rows:
        raise DataError(f"{path}: no row has two different responses to compare")
    return Samples(str(path), rows, nothing)


def _check_row(record, number: int, problems: Problems) -> SampleRow | None:
    if not isinstance(record, dict):
        problems.add(number, None, f"expected a JSON object, got {type(record).__name__}")
        return None
    prompt, responses = record.get("prompt"), record.get("responses")
    bad = len(problems.lines)
    if "prompt" not in record:
        problems.add(number, "prompt", "missing; each row needs a prompt and a 'responses' list")
    elif isinstance(prompt, list):
        problems.add(number, "prompt", f"a chat-format prompt (list of messages): {CHAT_HINT}")
    elif not isinstance(prompt, str):
        problems.add(number, "prompt", f"expected text, got {type(prompt).__name__}")
    if not isinstance(responses, list):
        problems.add(number, "responses", "expected a list of at least 2 response texts"
                     + ("" if "responses" in record else " (missing)"))
    else:
        if len(responses) < 2:
            problems.add(number, "responses", f"expected at least 2 responses, got {len(responses)}")
        for n, response in enumerate(responses):
            if not isinstance(response, str):
                shown = "null" if response is None else type(response).__name__
                problems.add(number, f"responses[{n}]", f"expected text, got {shown}")
    if len(problems.lines) > bad:
        return None
    return SampleRow(number, prompt, responses)


@dataclass
class PairItem:
    item_id: str
    prompt: str
    response_a: str
    response_b: str


def pair_items(samples: Samples, pairs_per_prompt: int, seed: int) -> list[PairItem]:
    """Up to ``pairs_per_prompt`` pairs of different responses from each row (the order within a pair randomised)."""
    rng = random.Random(seed)
    out = []
    for row in samples.rows:
        pairs = [(i, j) for i, j in combinations(range(len(row.responses)), 2) if row.responses[i] != row.responses[j]]
        for i, j in pairs[:pairs_per_prompt]:
            a, b = (i, j) if rng.random() < 0.5 else (j, i)
            first, second = row.responses[a], row.responses[b]
            out.append(PairItem(content_id(row.prompt, [first, second]), row.prompt, first, second))
    return out


def ranking_items(samples: Samples) -> list[tuple[str, str, list[str]]]:
    """(item id, prompt, distinct responses) per row, for K-way ranking."""
    out = []
    for row in samples.rows:
        distinct = list(dict.fromkeys(row.responses))
        out.append((content_id(row.prompt, distinct), row.prompt, distinct))
    return out
