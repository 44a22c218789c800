"""Answer checkers for verifiable rewards: is a response's final answer the reference answer?

:func:`check_math` extracts the final answer of a response — the last ``\\boxed{...}``, else the text after the last
``####``, else what follows the last "the answer is", else the last number — and compares it with the reference as
a number: integers, decimals, fractions (``3/4``, ``\\frac{3}{4}``), thousands separators, a leading ``$`` or a
trailing ``%`` or unit word are all read, so ``0.75``, ``3/4`` and ``\\frac{3}{4}`` are the same answer. Each check
reports an :class:`Outcome` (correct, wrong, or unparseable when no number could be read), so a run can log how
often the model answers at all, not only how often it is right.

:func:`check_code` runs a response's program (its last fenced code block) and the row's tests in a sandboxed
subprocess (:mod:`tether.rollout.sandbox`): correct when every test passes, timeout when it runs out of time.
:func:`check_format` checks a response's form: a regex it must match in full, or a JSON schema (a small subset,
no dependency) its JSON must satisfy. The registry maps ``reward=verify:<name>`` to ``fn(response, row)``:
``math`` (row field ``answer``), ``code`` (``tests``, optional ``entry_point``, ``timeout_s``) and ``format``
(``format`` and/or ``schema``); docs/verifiers.md describes them for users.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from tether.errors import TetherInputError
from tether.rollout.sandbox import run_untrusted

CORRECT, WRONG, UNPARSEABLE, TIMEOUT = "correct", "wrong", "unparseable", "timeout"
VERDICTS = (CORRECT, WRONG, UNPARSEABLE, TIMEOUT)

_NUMBER = re.compile(r"[-+−]?\$?\s?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s*/\s*\d+(?:\.\d+)?)?|[-+−]?\.\d+")
_FRAC = re.compile(r"\\[dt]?frac\s*\{\s*([^{}]+?)\s*\}\s*\{\s*([^{}]+?)\s*\}")
_ANSWER_IS = re.compile(r"answer\s+is\s*:?\s*", re.IGNORECASE)
_CLAUSE_END = re.compile(r"\n|[.;!?](?:\s|$)")  # where the clause after "the answer is" ends (not a decimal point)


@dataclass(frozen=True)
class Outcome:
    verdict: str  # correct | wrong | unparseable | timeout
    extracted: str | None  # the final answer as found in the response (None: none found)
    detail: str | None = None  # why, in a line, when there is more to say (the failing test, the schema error)

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
        clause = _CLAUSE_END.split(tail, 1)[0]
        if "=" in clause:  # "the answer is 6 + 3 = 9": the result, after the last "=" of its clause
            tail = clause.rsplit("=", 1)[1].strip()
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


# --- code: run the response's program against the row's tests --------------------------------------------------

MAX_EXTRACTED = 4000  # characters of the extracted code or JSON kept in an Outcome
_FENCE = re.compile(r"^[ \t]*```[ \t]*([\w+#.-]*)[^\n]*\n(.*?)^[ \t]*```[ \t]*$", re.MULTILINE | re.DOTALL)
_PYTHON_TAGS = ("", "python", "py", "python3", "py3")

# Runs in the sandbox: the candidate, then each test in the candidate's namespace; the report is one line that
# starts with a per-run nonce, written straight to fd 1, after which the process ends (no atexit, no threads).
_HARNESS = r'''
def _tether_check(cfg):
    import builtins, json, os, sys
    write, exit_, dumps, compile_, exec_ = os.write, os._exit, json.dumps, builtins.compile, builtins.exec
    nonce, tests, entry_point = cfg["nonce"], cfg["tests"], cfg["entry_point"]

    def describe(exc):
        try:
            message = str(exc)
            return (type(exc).__name__ + (": " + message if message else ""))[:300]
        except BaseException:
            return "an exception that cannot be shown"

    def report(stage, passed=0, error=None):
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BaseException:
                pass
        data = ("\n" + nonce + " " + dumps({"stage": stage, "passed": passed, "total": len(tests), "error": error})
                + "\n").encode()
        try:
            while data:
                data = data[write(1, data):]
        finally:
            exit_(0)

    try:
        code = compile_(cfg["code"], "solution.py", "exec")
    except BaseException as exc:
        report("syntax", error=describe(exc))
    namespace = {"__name__": "solution", "__builtins__": builtins}
    cfg.clear()
    try:
        exec_(code, namespace)
    except BaseException as exc:
        report("run", error=describe(exc))
    if entry_point is not None and not callable(namespace.get(entry_point)):
        report("entry_point", error="the program defines no function %r" % entry_point)
    passed, first_error = 0, None
    for i, test in enumerate(tests):
        try:
            exec_(compile_(test, "test_%d" % i, "exec"), namespace)
            passed += 1
        except BaseException as exc:
            first_error = first_error or "test %d: %s" % (i, describe(exc))
    report("tests", passed, first_error)


_tether_check(__CONFIG__)
'''


def extract_code(response: str) -> tuple[str | None, bool]:
    """The program in a response and whether it was fenced: the last fenced block tagged python (or untagged),
    else the whole response; (None, False) for an empty response."""
    blocks = [m.group(2) for m in _FENCE.finditer(response) if m.group(1).lower() in _PYTHON_TAGS]
    if blocks:
        return blocks[-1], True
    text = response.strip()
    return (text or None), False


def _harness_source(code: str, tests: list[str], entry_point: str | None, nonce: str) -> str:
    config = {"code": code, "tests": tests, "entry_point": entry_point, "nonce": nonce}
    return _HARNESS.replace("__CONFIG__", repr(config))


def _check_tests_compile(tests: list[str]) -> None:
    """The tests (trusted data) compile here, so that a broken test is an input error rather than a silent 0
    reward for every response."""
    if not tests:
        raise VerifierError("check_code needs at least one test (with none, every program would pass)")
    for i, test in enumerate(tests):
        try:
            compile(test, f"test_{i}", "exec")
        except (SyntaxError, ValueError) as exc:
            raise VerifierError(f"verify:code: test {i} does not compile ({exc}): {test!r:.200}") from None


def _read_report(stdout: str, nonce: str) -> dict | None:
    """The harness's report line (the last line that starts with this run's nonce), or None."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(nonce + " "):
            try:
                report = json.loads(line[len(nonce) + 1:])
            except ValueError:
                return None
            return report if isinstance(report, dict) else None
    return None


def check_code(response: str, tests: str | list[str], *, entry_point: str | None = None, timeout_s: float = 5.0,
               memory_mb: int = 512) -> Outcome:
    """Run the response's program and then ``tests`` (assert statements, or one test script) in one sandboxed
    process (:func:`tether.rollout.sandbox.run_untrusted`): CORRECT when every test passes; WRONG when one fails,
    the program raises, does not compile, or lacks the function ``entry_point``; TIMEOUT past ``timeout_s`` CPU
    seconds (or twice that plus one of wall clock); UNPARSEABLE when the response holds no code (empty, or
    unfenced text that is not Python). The program runs with ``__name__ == "solution"``, so its
    ``if __name__ == "__main__":`` block does not."""
    code, fenced = extract_code(response)
    if code is None:
        return Outcome(UNPARSEABLE, None, "the response is empty")
    tests = [tests] if isinstance(tests, str) else list(tests)
    _check_tests_compile(tests)
    nonce = secrets.token_hex(16)
    result = run_untrusted(_harness_source(code, tests, entry_point, nonce), cpu_seconds=timeout_s,
                           wall_seconds=2 * timeout_s + 1, memory_mb=memory_mb)
    extracted = code[:MAX_EXTRACTED]
    if result.timed_out:
        return Outcome(TIMEOUT, extracted, f"stopped: {result.killed_reason} after {result.wall_seconds:.1f} s")
    report = _read_report(result.stdout, nonce)
    if report is None:
        tail = result.stderr.strip().splitlines()[-1:] or [""]
        return Outcome(WRONG, extracted, f"no test report (exit code {result.returncode}) {tail[0][:300]}".strip())
    stage, error = report.get("stage"), report.get("error")
    if stage == "syntax":
        return Outcome(WRONG if fenced else UNPARSEABLE, extracted, error)
    if stage == "tests" and report.get("passed") == report.get("total") == len(tests):
        return Outcome(CORRECT, extracted, f"{len(tests)}/{len(tests)} tests passed")
    if stage == "tests":
        return Outcome(WRONG, extracted, f"{report.get('passed')}/{len(tests)} tests passed; {error}")
    return Outcome(WRONG, extracted, error)


def _code_tests(row: dict) -> list[str]:
    tests = row_field(row, "tests", "code")
    if isinstance(tests, str):
        tests = [tests]
    if not isinstance(tests, list) or not tests or not all(isinstance(t, str) for t in tests):
        raise VerifierError(f"verify:code: the 'tests' field{_where(row)} must be a non-empty list of Python test "
                            f"statements (e.g. \"assert add(2, 3) == 5\") or one test script; got {tests!r:.200}")
    return tests


def _where(row: dict) -> str:
    return f" (row {row['_row']})" if "_row" in row else ""


@register_verifier("code")
def verify_code(response: str, row: dict) -> Outcome:
    """:func:`check_code` against the row's ``tests``, with its optional ``entry_point`` and ``timeout_s``."""
    tests = _code_tests(row)
    entry_point = row.get("entry_point")
    if entry_point is not None and (not isinstance(entry_point, str) or not entry_point.isidentifier()):
        raise VerifierError(f"verify:code: 'entry_point'{_where(row)} must be a function name; got {entry_point!r}")
    timeout_s = row.get("timeout_s")
    timeout_s = 5.0 if timeout_s is None else timeout_s
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or not 0 < timeout_s <= 600:
        raise VerifierError(f"verify:code: 'timeout_s'{_where(row)} must be a number of seconds in (0, 600]; "
                            f"got {timeout_s!r}")
    return check_code(response, tests, entry_point=entry_point, timeout_s=float(timeout_s))


# --- format: a regex the response matches, or a JSON schema its JSON satisfies -----------------------------------

_JSON_FENCE = re.compile(r"^[ \t]*```[ \t]*json[ \t]*\n(.*?)^[ \t]*```[ \t]*$", re.MULTILINE | re.DOTALL | re.IGNORECASE)
_TYPES: dict[str, Callable[[Any], bool]] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "integer": lambda v: (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer()),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}
SCHEMA_KEYWORDS = frozenset({"type", "properties", "required", "items", "enum", "additionalProperties"})
_ANNOTATIONS = frozenset({"$schema", "$id", "$comment", "title", "description", "default", "examples"})


def extract_json(response: str) -> str:
    """The JSON text of a response: the last fenced ```json block, else the whole (stripped) response."""
    blocks = _JSON_FENCE.findall(response)
    return (blocks[-1] if blocks else response).strip()


def _same(a: Any, b: Any) -> bool:
    """JSON equality: ``true`` is not ``1``."""
    return isinstance(a, bool) == isinstance(b, bool) and a == b


def schema_error(value: Any, schema: dict, path: str = "$") -> str | None:
    """The first way ``value`` breaks ``schema`` (a JSON-schema subset: type, properties, required, items, enum,
    additionalProperties), as ``"$.key[0]: why"``; None when it conforms. A keyword outside the subset raises
    :class:`VerifierError` rather than being ignored (an unchecked constraint would pass everything)."""
    if not isinstance(schema, dict):
        raise VerifierError(f"JSON schema at {path} must be an object, got {schema!r:.100}")
    unknown = set(schema) - SCHEMA_KEYWORDS - _ANNOTATIONS
    if unknown:
        raise VerifierError(f"JSON schema at {path} uses {sorted(unknown)}; verify:format supports "
                            f"{sorted(SCHEMA_KEYWORDS)}")
    for keyword, kind in (("properties", dict), ("items", dict), ("required", list), ("enum", list)):
        if keyword in schema and not isinstance(schema[keyword], kind):
            raise VerifierError(f"JSON schema at {path}: '{keyword}' must be {'an object' if kind is dict else 'an array'}")
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not all(isinstance(t, str) and t in _TYPES for t in types):
            raise VerifierError(f"JSON schema at {path}: unknown type {schema['type']!r} (one of {sorted(_TYPES)})")
        if not any(_TYPES[t](value) for t in types):
            return f"{path}: expected {' or '.join(types)}, got {_json_type(value)}"
    if "enum" in schema and not any(_same(value, option) for option in schema["enum"]):
        return f"{path}: {json.dumps(value)[:100]} is not one of {json.dumps(schema['enum'])[:200]}"
    if isinstance(value, dict):
        return _object_error(value, schema, path)
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            error = schema_error(item, schema["items"], f"{path}[{i}]")
            if error:
                return error
    return None


def _object_error(value: dict, schema: dict, path: str) -> str | None:
    properties = schema.get("properties", {})
    for key in schema.get("required", []):
        if key not in value:
            return f"{path}: missing required key {key!r}"
    extra = schema.get("additionalProperties", True)
    for key, item in value.items():
        if key in properties:
            error = schema_error(item, properties[key], f"{path}.{key}")
        elif extra is False:
            error = f"{path}: unexpected key {key!r}"
        elif isinstance(extra, dict):
            error = schema_error(item, extra, f"{path}.{key}")
        else:
            error = None
        if error:
            return error
    return None


def _json_type(value: Any) -> str:
    return next(name for name in ("null", "boolean", "integer", "number", "string", "array", "object")
                if _TYPES[name](value) and not (name == "integer" and isinstance(value, float)))


def check_format(response: str, *, pattern: str | None = None, schema: dict | None = None) -> Outcome:
    """Whether the response has the required form: ``pattern``, a regex that must match the whole stripped
    response (``re.DOTALL``: ``.`` spans lines), and/or ``schema``, a JSON schema (see :func:`schema_error`) that
    its JSON (the last fenced ```json block, else the whole text) must satisfy. The pattern is checked first.
    CORRECT, WRONG (no match, schema violation), or UNPARSEABLE (the JSON does not parse)."""
    if pattern is None and schema is None:
        raise ValueError("check_format needs a pattern, a schema, or both")
    text = response.strip()
    if pattern is not None:
        try:
            regex = re.compile(pattern, re.DOTALL)
        except re.error as exc:
            raise VerifierError(f"verify:format: the format regex {pattern!r} is invalid: {exc}") from None
        if regex.fullmatch(text) is None:
            return Outcome(WRONG, text[:MAX_EXTRACTED], f"the response does not match {pattern!r:.200}")
    if schema is None:
        return Outcome(CORRECT, text[:MAX_EXTRACTED])
    source = extract_json(response)
    try:
        value = json.loads(source)
    except (ValueError, RecursionError) as exc:
        return Outcome(UNPARSEABLE, source[:MAX_EXTRACTED], f"not JSON: {exc}"[:300])
    error = schema_error(value, schema)
    return Outcome(WRONG if error else CORRECT, source[:MAX_EXTRACTED], error)


@register_verifier("format")
def verify_format(response: str, row: dict) -> Outcome:
    """:func:`check_format` with the row's ``format`` (a regex) and/or ``schema`` (a JSON schema: an object, or a
    string of JSON)."""
    pattern, schema = row.get("format"), row.get("schema")
    if pattern is None and schema is None:
        raise VerifierError(f"verify:format needs a 'format' field (a regex the response must match) or a 'schema' "
                            f"field (a JSON schema its JSON must satisfy) in every prompt row{_where(row)}; this row "
                            f"has {sorted(k for k in row if not k.startswith('_'))}")
    if pattern is not None and not isinstance(pattern, str):
        raise VerifierError(f"verify:format: 'format'{_where(row)} must be a regex string; got {pattern!r:.200}")
    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except ValueError as exc:
            raise VerifierError(f"verify:format: 'schema'{_where(row)} is a string but not JSON: {exc}") from None
    if schema is not None and not isinstance(schema, dict):
        raise VerifierError(f"verify:format: 'schema'{_where(row)} must be a JSON schema object; got {schema!r:.200}")
    return check_format(response, pattern=pattern, schema=schema)
