"""The format checker: a regex the whole response matches, or a JSON schema (a small subset) its JSON satisfies."""

from __future__ import annotations

import pytest

from tether.rollout.verifiers import (
    CORRECT,
    UNPARSEABLE,
    VERIFIERS,
    WRONG,
    VerifierError,
    check_format,
    extract_json,
    schema_error,
    verify_format,
)

PERSON = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"},
                                           "tags": {"type": "array", "items": {"type": "string"}},
                                           "role": {"enum": ["admin", "user"]}},
          "required": ["name", "age"], "additionalProperties": False}


def test_a_regex_must_match_the_whole_stripped_response():
    pattern = r"<think>.*</think>\s*Answer: (yes|no)"
    assert check_format("  <think>a\nb</think>\nAnswer: yes\n", pattern=pattern).verdict == CORRECT  # . spans lines
    assert check_format("<think>a</think> Answer: maybe", pattern=pattern).verdict == WRONG
    partial = check_format("<think>a</think> Answer: yes, and more", pattern=pattern)  # a prefix is not enough
    assert partial.verdict == WRONG and partial.reward == 0.0 and "does not match" in partial.detail


def test_an_invalid_regex_is_named():
    with pytest.raises(VerifierError, match=r"format regex '\(unclosed' is invalid"):
        verify_format("x", {"format": "(unclosed"})


def test_json_that_satisfies_the_schema_is_correct():
    response = 'Sure:\n```json\n{"name": "Ada", "age": 36, "tags": ["math"], "role": "admin"}\n```'
    outcome = check_format(response, schema=PERSON)
    assert (outcome.verdict, outcome.reward) == (CORRECT, 1.0)
    assert outcome.extracted == '{"name": "Ada", "age": 36, "tags": ["math"], "role": "admin"}'
    assert check_format('{"name": "Ada", "age": 36.0}', schema=PERSON).verdict == CORRECT  # 36.0 is an integer


@pytest.mark.parametrize("text, error", [
    ('{"name": "Ada"}', "$: missing required key 'age'"),
    ('{"name": "Ada", "age": "36"}', "$.age: expected integer, got string"),
    ('{"name": "Ada", "age": true}', "$.age: expected integer, got boolean"),  # true is not 1
    ('{"name": "Ada", "age": 36.5}', "$.age: expected integer, got number"),
    ('{"name": "Ada", "age": 36, "tags": ["a", 2]}', "$.tags[1]: expected string, got integer"),
    ('{"name": "Ada", "age": 36, "role": "root"}', '$.role: "root" is not one of ["admin", "user"]'),
    ('{"name": "Ada", "age": 36, "extra": 1}', "$: unexpected key 'extra'"),
    ('["Ada", 36]', "$: expected object, got array"),
])
def test_a_schema_violation_is_wrong_and_says_where(text, error):
    outcome = check_format(text, schema=PERSON)
    assert (outcome.verdict, outcome.detail) == (WRONG, error)


def test_text_that_is_not_json_is_unparseable():
    for text in ("name: Ada, age: 36", '```json\n{"name": "Ada",\n```', "", "[" * 100_000):
        outcome = check_format(text, schema=PERSON)
        assert outcome.verdict == UNPARSEABLE and outcome.reward == 0.0


def test_the_last_json_block_is_the_answer():
    text = '```json\n{"draft": 1}\n```\nfinal:\n```JSON\n{"name": "Ada", "age": 1}\n```\n'
    assert extract_json(text) == '{"name": "Ada", "age": 1}'
    assert extract_json('  {"a": 1}  ') == '{"a": 1}'


def test_pattern_and_schema_together():
    schema = {"type": "object", "required": ["a"]}
    assert check_format('{"a": 1}', pattern=r"\{.*\}", schema=schema).verdict == CORRECT
    assert check_format('{"b": 1}', pattern=r"\{.*\}", schema=schema).verdict == WRONG
    assert check_format('x {"a": 1}', pattern=r"\{.*\}", schema=schema).verdict == WRONG


def test_unsupported_or_malformed_schemas_are_refused():
    with pytest.raises(VerifierError, match=r"uses \['minimum'\]"):
        schema_error(5, {"type": "integer", "minimum": 10})  # an unchecked constraint would pass everything
    with pytest.raises(VerifierError, match="unknown type"):
        schema_error(5, {"type": "int"})
    with pytest.raises(VerifierError, match="'required' must be an array"):
        schema_error({}, {"required": "a"})
    assert schema_error(5, {"title": "annotations are fine", "type": ["integer", "null"]}) is None


def test_verify_format_reads_the_row():
    assert VERIFIERS["format"] is verify_format
    assert verify_format("Answer: no", {"format": "Answer: (yes|no)"}).verdict == CORRECT
    assert verify_format('{"name": "Ada", "age": 3}', {"schema": PERSON}).verdict == CORRECT
    assert verify_format('{"age": 3}', {"schema": '{"required": ["name"]}'}).verdict == WRONG  # a schema as JSON text
    with pytest.raises(VerifierError, match=r"'format' field .* or a 'schema' field .* \(row 4\); this row has \['prompt'\]"):
        verify_format("x", {"prompt": "p", "_row": 4})
    with pytest.raises(VerifierError, match="must be a JSON schema object"):
        verify_format("x", {"schema": ["not", "a", "schema"]})
    with pytest.raises(VerifierError, match="not JSON"):
        verify_format("x", {"schema": "{nope"})
