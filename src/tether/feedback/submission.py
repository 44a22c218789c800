"""One label as an annotator submits it (the JSON API or the page's form), checked field by field.

Every field's type and range is checked before anything is stored; a bad value raises
:class:`BadSubmission` with a message that names the field, which the server answers with a 4xx.
``slot`` and ``ranking`` are positions in the order the responses were shown (``shown_order``).
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass
from typing import Any

from tether.feedback.store import MAX_RATIONALE, MAX_SECONDS, Item, StoredLabel

ACTIONS = ("rank", "tie", "both_bad", "skip")
POSITION = re.compile(r"[0-9]{1,3}")  # ASCII digits only: '²' or '١' are not positions
MAX_ITEM_ID = 200
API_FIELDS = ("item_id", "slot", "shown_order", "ranking", "confidence", "rationale", "seconds")
USAGE = ("expected a JSON object {item_id, slot: a shown position ('0', '1', ...), 'rank', 'tie', 'both_bad' or "
         "'skip', shown_order?, ranking? (shown positions best first, with slot 'rank'), confidence? (0-1), "
         "rationale? (text), seconds? (0-86400)}")


class BadSubmission(ValueError):
    """A submission that cannot be stored; the message names the field."""


@dataclass
class Submission:
    item_id: str
    slot: str
    shown_order: list[int] | None = None
    ranking: list[int] | None = None
    confidence: float | None = None
    rationale: str | None = None
    seconds: float | None = None


# --------------------------------------------------------------------------- field checks


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any, name: str, low: float, high: float) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise BadSubmission(f"{name} must be a finite number, got {json.dumps(value)[:40]}")
    if not low <= value <= high:
        raise BadSubmission(f"{name} must be between {low:g} and {high:g}, got {value:g}")
    return float(value)


def _positions(value: Any, name: str) -> list[int] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(_is_int(v) for v in value):
        raise BadSubmission(f"{name} must be a list of integer positions like [1, 0]")
    return value


def _slot(value: Any) -> str:
    if _is_int(value):
        value = str(value)
    if not isinstance(value, str) or not (value in ACTIONS or POSITION.fullmatch(value)):
        raise BadSubmission("slot must be a shown position ('0', '1', ...), 'rank', 'tie', 'both_bad' or 'skip'")
    return value


def _item_id(value: Any) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_ITEM_ID:
        raise BadSubmission(f"item_id must be the item's id (text of at most {MAX_ITEM_ID} characters)")
    return value


def _rationale(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise BadSubmission("rationale must be text")
    if len(value) > MAX_RATIONALE:
        raise BadSubmission(f"rationale is longer than {MAX_RATIONALE} characters")
    return value


def _json_list(text: str, name: str) -> Any:
    """A form field holding a small JSON list (the page writes it)."""
    if len(text) > 200:
        raise BadSubmission(f"{name} is too long")
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise BadSubmission(f"{name} must be a JSON list like [1, 0]") from None


# --------------------------------------------------------------------------- the two ways in


def from_json(body: Any) -> Submission:
    """The body of ``POST /api/labels``."""
    if not isinstance(body, dict):
        raise BadSubmission(USAGE)
    unknown = sorted(set(body) - set(API_FIELDS))
    if unknown:
        raise BadSubmission(f"unknown field(s) {', '.join(map(str, unknown))[:200]}; {USAGE}")
    if "item_id" not in body or "slot" not in body:
        raise BadSubmission(f"item_id and slot are required; {USAGE}")
    return Submission(_item_id(body["item_id"]), _slot(body["slot"]),
                      _positions(body.get("shown_order"), "shown_order"), _positions(body.get("ranking"), "ranking"),
                      _number(body.get("confidence"), "confidence", 0.0, 1.0), _rationale(body.get("rationale")),
                      _number(body.get("seconds"), "seconds", 0.0, MAX_SECONDS))


def from_form(fields: dict[str, str], now: float | None = None) -> Submission:
    """The labeling page's form (every value is text). ``started`` is when the page was served."""
    missing = [name for name in ("item_id", "slot", "shown_order") if not fields.get(name)]
    if missing:
        raise BadSubmission(f"the form is missing {', '.join(missing)}; reload the page")
    ranking = _positions(_json_list(fields["ranking"], "ranking"), "ranking") if fields.get("ranking") else None
    confidence = None
    if fields.get("confidence"):
        confidence = _number(_float(fields["confidence"], "confidence"), "confidence", 0.0, 1.0)
    return Submission(_item_id(fields["item_id"]), _slot(fields["slot"]),
                      _positions(_json_list(fields["shown_order"], "shown_order"), "shown_order"), ranking, confidence,
                      _rationale(fields.get("rationale")), _elapsed(fields.get("started"), now or time.time()))


def _float(text: str, name: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise BadSubmission(f"{name} must be a number, got {text[:40]!r}") from None


def _elapsed(started: str | None, now: float) -> float | None:
    """Seconds since the page was served; None when not timed (no field, or a page left open over a day)."""
    if not started:
        return None
    value = _float(started, "started")
    if not math.isfinite(value) or value > now + 1.0:
        raise BadSubmission("started must be the time the page was served")
    elapsed = max(0.0, now - value)
    return elapsed if elapsed <= MAX_SECONDS else None


# --------------------------------------------------------------------------- against the item


def to_label(submission: Submission, item: Item, annotator: str) -> StoredLabel:
    """The label to store, with ``slot``/``ranking`` turned from shown positions into response indices."""
    k = len(item.responses)
    order = submission.shown_order if submission.shown_order is not None else list(range(k))
    if sorted(order) != list(range(k)):
        raise BadSubmission(f"shown_order must list each of the item's {k} responses once, e.g. {list(range(k))}")
    slot = submission.slot
    if submission.ranking is not None and slot != "rank":
        raise BadSubmission("ranking goes with slot 'rank'")
    label = StoredLabel(annotator, item.item_id, None, tie=slot == "tie", skipped=slot == "skip",
                        both_bad=slot == "both_bad", confidence=submission.confidence, rationale=submission.rationale,
                        shown_order=order, seconds=submission.seconds)
    if slot == "rank":
        ranking = submission.ranking
        if ranking is None or sorted(ranking) != list(range(k)):
            raise BadSubmission(f"ranking must list every shown position 0..{k - 1} once, best first")
        label.ranking = [order[position] for position in ranking]
        label.choice = label.ranking[0]
    elif slot not in ACTIONS:
        if int(slot) >= k:
            raise BadSubmission(f"slot {slot} is not a shown position (0..{k - 1})")
        label.choice = order[int(slot)]
    return label
