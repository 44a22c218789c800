"""Answer checkers for verifiable rewards: is a response's final answer the reference answer?

:func:`check_math` extracts the final answer of a response — the last ``\\boxed{...}``, else the text after the last
``####``, else what follows the last "the answer is", else the last number — and compares it with the reference as
a number: integers, decimals, fractions (``3/4``, ``\\frac{3}{4}``), thousands separators, a leading ``$`` or a
trailing ``%`` or unit word are all read, so ``0.75``, ``3/4`` and ``\\frac{3}{4}`` are the same answer. Each check
reports an :class:`Outcome` (correct, wrong, or unparseable when no number could be read), so a run can log how
often the model answers at all, not only how often it is right.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from tether.errors import TetherInputError

CORRECT, WRONG, UNPARSEABLE, TIMEOUT = "correct", "wrong", "unparseable", "timeout"
VERDICTS = (CORRECT, WRONG, UNPARSEABLE, TIMEOUT)

_NUMBER = re.compile(r"[-+−]?\$?\s?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s*/\s*\d+(?:\.\d+)?)?|[-+−]?\.\d+")
_FRAC = re.compile(r"\\[dt]?frac\s*\{\s*([^{}]+?)\s*\}\s*\{\s*([^{}]+?)\s*\}")
_ANSWER_IS = re.compile(r"answer\s+is\s*:?\s*", re.IGNORECASE)


@dataclass(frozen=True)
class Outcome:
    verdict: str  # correct | wrong | unparseable | timeout
    extracted: str | None  # the final answer as found in the response (None: none found)

    @property
    def reward(self) -> float:
        """1 for a correct answer, else 0 (a wrong and an unparseable answer score alike)."""
        return 1.0 if self.verdict == CORRECT else 0.0


def last_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` (``\\fbox`` too), nested braces included; None if there is none or it
    is not closed."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    brace = text.find("{", start)
    if brace < 0:
        return None
    depth = 0
    for i in range(brace, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[brace + 1:i]
    return None


def extract_answer(text: str) -> str | None:
    """The final answer of a response: the last ``\\boxed{}``, else after the last ``####``, else after the last
    "the answer is", else the last number in the text; None when there is none."""
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed.strip()
    if "####" in text:
        tail = text.rsplit("####", 1)[1].strip()
        return tail.splitlines()[0].strip() if tail else None
    found = list(_ANSWER_IS.finditer(text))
    if found:
        tail = text[found[-1].end():].strip()
        number = _NUMBER.search(tail)
        if number is not None:
            return number.group(0).strip()
        return tail.splitlines()[0].strip().rstrip(".") if tail else None
    numbers = _NUMBER.findall(text)
    return numbers[-1].strip() if numbers else None


def parse_number(text: str | None) -> Fraction | None:
    """The number ``text`` states, exactly (a Fraction), or None: ``1,234``, ``-3``, ``2.50``, ``3/4``, ``\\frac{3}{4}``,
    ``$5``, ``40%`` (as 40), ``12 apples`` (the leading number); None for text with no number or a zero
    denominator."""
    if text is None:
        return None
    text = text.strip().replace("−", "-").replace("\\!", "").replace("\\,", "").replace("{,}", ",")
    frac = _FRAC.search(text)
    if frac is not None:
        top, bottom = parse_number(frac.group(1)), parse_number(frac.group(2))
        if top is None or bottom in (None, 0):
            return None
        sign = -1 if text[:frac.start()].strip().endswith("-") else 1
        return sign * top / bottom
    match = _NUMBER.search(text.replace("\\$", "$"))
    if match is None:
        return None
    token = match.group(0).replace("$", "").replace(" ", "").replace(",", "")
    try:
        if "/" in token:
            top, bottom = token.split("/", 1)
            return None if Fraction(bottom) == 0 else Fraction(top) / Fraction(bottom)
        return Fraction(token)
    except (ValueError, ZeroDivisionError):
        return None


def check_math(response: str, reference: str | float | int) -> Outcome:
    """Whether ``response``'s final answer equals ``reference`` as a number (exactly: 0.75 = 3/4, 2.50 = 2.5)."""
    extracted = extract_answer(response)
    value = parse_number(extracted)
    if value is None:
        return Outcome(UNPARSEABLE, extracted)
    expected = parse_number(str(reference))
    if expected is None:
        raise ValueError(f"reference answer {reference!r} is not a number")
    return Outcome(CORRECT if value == expected else WRONG, extracted)


class VerifierError(TetherInputError, ValueError):
    """A prompt row that lacks what its verifier checks against (e.g. no ``answer`` field for ``verify:math``)."""


Verifier = Callable[[str, dict], Outcome]  # (response, the prompt's row) -> Outcome
VERIFIERS: dict[str, Verifier] = {}


def register_verifier(name: str) -> Callable[[Verifier], Verifier]:
    """Register ``fn(response, row) -> Outcome`` as ``reward=verify:<name>``; ``row`` is the prompt's row of the
    data file (every field of it: the reference answer, the test cases, ...)."""
    def add(fn: Verifier) -> Verifier:
        VERIFIERS[name] = fn
        return fn
    return add


def verifier(name: str) -> Verifier:
    if name not in VERIFIERS:
        raise ValueError(f"unknown verifier '{name}' (registered: {', '.join(sorted(VERIFIERS))})")
    return VERIFIERS[name]


def row_field(row: dict, field: str, verifier_name: str) -> Any:
    """``row[field]``, or a :class:`VerifierError` naming the field, the verifier and the row."""
    if field not in row or row[field] is None:
        where = f" (row {row['_row']})" if "_row" in row else ""
        raise VerifierError(f"verify:{verifier_name} needs a '{field}' field in every prompt row{where}; "
                            f"this row has {sorted(k for k in row if not k.startswith('_'))}")
    return row[field]


@register_verifier("math")
def verify_math(response: str, row: dict) -> Outcome:
    """:func:`check_math` against the row's ``answer``."""
    return check_math(response, row_field(row, "answer", "math"))
