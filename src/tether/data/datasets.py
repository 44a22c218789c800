"""Load a data file into tokenised examples, with a report of everything changed or dropped."""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import TypeVar

from tether.data.errors import DataError, Problems
from tether.data.formats import PAIR_FORMATS, SFT_FORMATS, validate_rows
from tether.data.io import load_rows
from tether.data.tokenize import encode_prompt, encode_prompt_response, prompt_text, response_text
from tether.utils.logging import console

T = TypeVar("T")


@dataclass
class SFTExample:
    input_ids: list[int]
    loss_mask: list[int]                 # 1 on tokens that get loss, same length as input_ids
    position_ids: list[int] | None = None  # set by packing


@dataclass
class PairExample:
    prompt_ids: list[int]
    chosen_ids: list[int]                # response tokens only, ending with the end-of-turn / EOS token(s)
    rejected_ids: list[int]
    margin: float | None = None
    prompt_text: str = ""
    chosen_text: str = ""
    rejected_text: str = ""
    source_row: int = 0


@dataclass
class UnpairedExample:
    prompt_ids: list[int]
    completion_ids: list[int]
    desirable: bool
    prompt_text: str = ""
    completion_text: str = ""
    source_row: int = 0


@dataclass
class PromptExample:
    prompt_ids: list[int]
    prompt_text: str
    source_row: int = 0
    fields: dict = field(default_factory=dict)  # the row's fields besides the prompt (a reference answer, tests, ...)


@dataclass
class LoadReport:
    path: str
    format: str
    n_rows: int
    n_examples: int = 0
    n_truncated: int = 0
    n_skipped_overlong: int = 0
    n_ties_skipped: int = 0
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"{self.path}: {self.n_rows} rows ({self.format}) → {self.n_examples} examples"]
        return "\n".join(lines + [f"  {note}" for note in self.notes])


def _overlong(problems: Problems, row: int, n_tokens: int, max_length: int) -> None:
    problems.add(row, None, f"sequence of {n_tokens} tokens is longer than max_length={max_length} "
                 "(set data.overlong=truncate or skip)")


def _check_overlong_mode(overlong: str) -> None:
    if overlong not in ("truncate", "skip", "error"):
        raise DataError(f"overlong must be truncate, skip or error, got {overlong!r}")


def _finish(report: LoadReport, examples: list, what: str) -> None:
    report.n_examples = len(examples)
    if not examples:
        raise DataError(f"{report.path}: no usable {what} left after loading ({report.n_skipped_overlong} skipped "
                        "as too long)")


# ------------------------------------------------------------------------------------------------ SFT


def load_sft_dataset(path: str | Path, tokenizer, *, max_length: int = 1024, completion_only_loss: bool = True,
                     chat_template: str = "auto", overlong: str = "truncate") -> tuple[list[SFTExample], LoadReport]:
    """SFT rows (prompt/completion, messages or text) → examples with a loss mask on completion tokens."""
    _check_overlong_mode(overlong)
    path = str(path)
    rows = load_rows(path)
    fmt, items = validate_rows(rows, path, SFT_FORMATS, "SFT")
    report = LoadReport(path, fmt, len(rows))
    problems = Problems(path)
    examples = []
    for item in items:
        prompt_ids, completion_ids = encode_prompt_response(tokenizer, item["prompt"], item["completion"],
                                                            chat_template)
        ids = prompt_ids + completion_ids
        mask = ([0] * len(prompt_ids) if completion_only_loss else [1] * len(prompt_ids)) + [1] * len(completion_ids)
        if len(ids) > max_length:
            if overlong == "error":
                _overlong(problems, item["row"], len(ids), max_length)
                continue
            if overlong == "skip":
                report.n_skipped_overlong += 1
                continue
            ids, mask = ids[:max_length], mask[:max_length]
            report.n_truncated += 1
        if sum(mask[1:]) == 0:
            problems.add(item["row"], "completion", f"no completion tokens left within max_length={max_length} "
                         "(the prompt fills it): raise max_length or shorten the prompt")
            continue
        examples.append(SFTExample(ids, mask))
    problems.raise_if_any()
    if report.n_truncated:
        report.notes.append(f"{report.n_truncated} rows longer than max_length={max_length}: kept the first "
                            f"{max_length} tokens (the end of the completion is cut)")
    if report.n_skipped_overlong:
        report.notes.append(f"{report.n_skipped_overlong} rows longer than max_length={max_length} skipped")
    _finish(report, examples, "SFT examples")
    return examples, report


# ------------------------------------------------------------------------------------------------ pairs


def _ranked_pairs(item: dict, report: LoadReport) -> list[dict]:
    """All C(K, 2) pairs of a ranking with the better-ranked response as chosen; ties skipped and counted."""
    pairs = []
    for i, j in combinations(range(len(item["responses"])), 2):
        ri, rj = item["ranks"][i], item["ranks"][j]
        if ri == rj:
            report.n_ties_skipped += 1
            continue
        better, worse = (i, j) if ri < rj else (j, i)
        if item["responses"][better] == item["responses"][worse]:
            report.n_ties_skipped += 1
            continue
        pairs.append({"row": item["row"], "prompt": item["prompt"], "chosen": item["responses"][better],
                      "rejected": item["responses"][worse], "margin": None})
    return pairs


def _fit_pair(prompt_ids, chosen_ids, rejected_ids, max_length, max_prompt_length):
    """Truncate the prompt from the left to max_prompt_length, then responses from the right to fit."""
    if len(prompt_ids) > max_prompt_length:
        prompt_ids = prompt_ids[-max_prompt_length:]
    budget = max_length - len(prompt_ids)
    return prompt_ids, chosen_ids[:budget], rejected_ids[:budget]


def _pair_items(path: str, accepted: set[str], what: str) -> tuple[list, str, list[dict], LoadReport]:
    rows = load_rows(path)
    fmt, items = validate_rows(rows, path, accepted, what)
    report = LoadReport(path, fmt, len(rows))
    if fmt == "ranking":
        expanded = [pair for item in items for pair in _ranked_pairs(item, report)]
        report.notes.append(f"rankings expanded to {len(expanded)} ordered pairs"
                            + (f"; {report.n_ties_skipped} tied pairs skipped" if report.n_ties_skipped else ""))
        items = expanded
    return rows, fmt, items, report


def load_preference_dataset(path: str | Path, tokenizer, *, max_length: int = 1024, max_prompt_length: int | None = None,
                            chat_template: str = "auto", overlong: str = "truncate"
                            ) -> tuple[list[PairExample], LoadReport]:
    """Preference rows (or rankings expanded to all C(K,2) pairs) → tokenised pairs.

    ``max_prompt_length`` (default: half of ``max_length``) is where an over-long row's
    prompt is cut from the left before its responses are cut from the right.
    """
    _check_overlong_mode(overlong)
    max_prompt_length = max_prompt_length or max_length // 2
    if max_prompt_length >= max_length:
        raise DataError(f"max_prompt_length ({max_prompt_length}) must be smaller than max_length ({max_length})")
    path = str(path)
    _, _, items, report = _pair_items(path, PAIR_FORMATS, "preference training")
    problems = Problems(path)
    examples = []
    for item in items:
        prompt_ids, chosen_ids = encode_prompt_response(tokenizer, item["prompt"], item["chosen"], chat_template)
        _, rejected_ids = encode_prompt_response(tokenizer, item["prompt"], item["rejected"], chat_template)
        longest = len(prompt_ids) + max(len(chosen_ids), len(rejected_ids))
        if longest > max_length:
            if overlong == "error":
                _overlong(problems, item["row"], longest, max_length)
                continue
            if overlong == "skip":
                report.n_skipped_overlong += 1
                continue
            prompt_ids, chosen_ids, rejected_ids = _fit_pair(prompt_ids, chosen_ids, rejected_ids, max_length,
                                                             max_prompt_length)
            report.n_truncated += 1
        examples.append(PairExample(prompt_ids, chosen_ids, rejected_ids, item["margin"], prompt_text(item["prompt"]),
                                    response_text(item["chosen"]), response_text(item["rejected"]), item["row"]))
    problems.raise_if_any()
    if report.n_truncated:
        report.notes.append(f"{report.n_truncated} pairs longer than max_length={max_length}: prompt truncated from "
                            f"the left to max_prompt_length={max_prompt_length}, responses from the right")
    if report.n_skipped_overlong:
        report.notes.append(f"{report.n_skipped_overlong} pairs longer than max_length={max_length} skipped")
    _finish(report, examples, "pairs")
    return examples, report


def load_unpaired_dataset(path: str | Path, tokenizer, *, max_length: int = 1024, max_prompt_length: int | None = None,
                          chat_template: str = "auto", overlong: str = "truncate"
                          ) -> tuple[list[UnpairedExample], LoadReport]:
    """KTO data: prompt/completion/label rows, or pairs split into a desirable and an undesirable example."""
    _check_overlong_mode(overlong)
    max_prompt_length = max_prompt_length or max_length // 2
    path = str(path)
    rows = load_rows(path)
    fmt, items = validate_rows(rows, path, PAIR_FORMATS | {"unpaired"}, "KTO training")
    if fmt in PAIR_FORMATS:
        pairs, report = load_preference_dataset(path, tokenizer, max_length=max_length,
                                                max_prompt_length=max_prompt_length, chat_template=chat_template,
                                                overlong=overlong)
        examples = [UnpairedExample(p.prompt_ids, ids, desirable, p.prompt_text, text, p.source_row)
                    for p in pairs for ids, text, desirable in ((p.chosen_ids, p.chosen_text, True),
                                                                (p.rejected_ids, p.rejected_text, False))]
        report.notes.append(f"each pair split into a desirable and an undesirable example ({len(examples)} examples)")
        report.n_examples = len(examples)
        return examples, report
    report = LoadReport(path, fmt, len(rows))
    problems = Problems(path)
    examples = []
    for item in items:
        prompt_ids, completion_ids = encode_prompt_response(tokenizer, item["prompt"], item["completion"],
                                                            chat_template)
        if len(prompt_ids) + len(completion_ids) > max_length:
            if overlong == "error":
                _overlong(problems, item["row"], len(prompt_ids) + len(completion_ids), max_length)
                continue
            if overlong == "skip":
                report.n_skipped_overlong += 1
                continue
            prompt_ids, completion_ids, _ = _fit_pair(prompt_ids, completion_ids, [], max_length, max_prompt_length)
            report.n_truncated += 1
        examples.append(UnpairedExample(prompt_ids, completion_ids, item["label"], prompt_text(item["prompt"]),
                                        response_text(item["completion"]), item["row"]))
    problems.raise_if_any()
    if report.n_truncated:
        report.notes.append(f"{report.n_truncated} rows longer than max_length={max_length} truncated (prompt from "
                            "the left, completion from the right)")
    if report.n_skipped_overlong:
        report.notes.append(f"{report.n_skipped_overlong} rows longer than max_length={max_length} skipped")
    _finish(report, examples, "examples")
    return examples, report


PROMPT_FIELDS = ("prompt", "messages", "text")  # what a prompt is read from; every other field of a row is kept


def load_prompt_dataset(path: str | Path, tokenizer, *, max_prompt_length: int = 512, chat_template: str = "auto"
                        ) -> tuple[list[PromptExample], LoadReport]:
    """Prompts from any format that has them (the last assistant turn of messages is dropped). Each keeps the other
    fields of its row in ``fields`` (with ``_row``, its row number), for reward functions and verifiers that check
    a response against them (a reference ``answer``, test cases)."""
    path = str(path)
    rows = load_rows(path)
    fmt, items = validate_rows(rows, path, set(), "prompts")
    records = dict(rows)
    report = LoadReport(path, fmt, len(rows))
    examples = []
    for item in items:
        ids = encode_prompt(tokenizer, item["prompt"], chat_template)
        if len(ids) > max_prompt_length:
            ids = ids[-max_prompt_length:]
            report.n_truncated += 1
        extra = {k: v for k, v in records[item["row"]].items() if k not in PROMPT_FIELDS}
        examples.append(PromptExample(ids, prompt_text(item["prompt"]), item["row"], {**extra, "_row": item["row"]}))
    if report.n_truncated:
        report.notes.append(f"{report.n_truncated} prompts longer than max_prompt_length={max_prompt_length} "
                            "truncated from the left")
    _finish(report, examples, "prompts")
    return examples, report


def limit(examples: list[T], n: int, what: str) -> list[T]:
    """Keep the first ``n`` examples (0 = all), saying how many were left out."""
    if n and len(examples) > n:
        console.print(f"{what}: using {n} of {len(examples)} examples (limit set in the config)")
        return examples[:n]
    return examples
