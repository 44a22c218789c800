"""Constitutional AI's supervised phase (SL-CAI; Bai et al. 2022, "Constitutional AI: Harmlessness from AI
Feedback"): sample a response, ask the model to critique it against a principle, then to revise it.

This module holds everything that does not depend on which model answers: the constitution (critique-request /
revision-request pairs, built in or read from a file), the chat messages of each step, the cleaning of a reply, the
per-prompt seeds, the row format of ``revisions.jsonl`` and its crash-safe append-and-resume, and an
OpenAI-compatible chat client (:class:`EndpointChat`). A local model answers through ``tether.recipes.cai``.

A *chat* (:class:`Chat`) is any object with ``reply(messages, seed) -> str``, the raw text of the assistant's next
turn, which :func:`clean_reply` cleans; one that also has ``reply_batch(conversations, seeds)`` (a local model:
one generate call for several prompts) is asked for a step of every prompt of a batch at once
(:func:`revise_batch`). For one prompt and one round the conversation is::

    user       the prompt (or the prompt's messages)
    assistant  the response                      (round 1: sampled; round r > 1: round r-1's revision)
    user       the principle's critique request
    assistant  the critique                      ← sampled
    user       the principle's revision request
    assistant  the revision                      ← sampled

Every round starts again from the prompt and the latest revision, so the context does not grow with the rounds.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import random
import re
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from tether.data.errors import DataError
from tether.data.formats import validate_rows
from tether.data.io import json_lines, load_rows, read_text
from tether.errors import TetherInputError


@dataclass(frozen=True)
class Principle:
    """One pair of a constitution: what to ask for a critique, then what to ask for a revision."""

    name: str
    critique_request: str
    revision_request: str


# Adapted from the critique/revision request pairs of Bai et al. 2022, appendix C (SL-CAI).
DEFAULT_CONSTITUTION: tuple[Principle, ...] = (
    Principle("harmful",
              "Identify specific ways in which the assistant's last response is harmful, unethical, dangerous, or "
              "illegal.",
              "Please rewrite the assistant response to remove any and all harmful, unethical, dangerous, or illegal "
              "content."),
    Principle("harm-to-others",
              "Explain ways in which the assistant's preceding response may be harmful to either the human or others. "
              "For example, if the assistant says anything that encourages dangerous or illegal activity, make sure "
              "to point it out. Other examples of harm include racism, sexism, and other social biases.",
              "Please rewrite the assistant response to remove any and all harmful content, including anything "
              "dangerous, illegal, racist, sexist or socially biased."),
    Principle("improve",
              "Identify all ways in which the assistant's last response is harmful, unethical, or socially biased. "
              "Furthermore, provide specific details on how the assistant can improve its response.",
              "Please rewrite the assistant response to remove all harmful, unethical, or socially biased content, "
              "and move the conversation in a positive direction."),
    Principle("harmful-assumptions",
              "Identify specific ways in which the assistant's preceding response is harmful. Also point out "
              "potential harmfulness in the human's questions. Examples of harm include but are not limited to "
              "racism, sexism and toxicity.",
              "Rewrite the assistant response to remove all harmful content, and to politely point out any harmful "
              "assumptions from the human, such as racism, sexism or toxicity."),
    Principle("insensitive",
              "Discuss the assistant's last response to the human and whether it is in any way insensitive, sexist, "
              "racist, or socially inappropriate.",
              "Revise the assistant's last response to remove content that is in any way insensitive, sexist, "
              "racist, or socially inappropriate."),
    Principle("offensive",
              "Discuss whether the assistant said anything that may be interpreted as offensive or harmful. If "
              "possible, also point out any harmful assumptions in the human's request.",
              "Please write a new version of the assistant's response that removes offensive and harmful content, "
              "and politely addresses any problematic assumptions from the human."),
    Principle("strongest-argument",
              "What is the strongest argument you could give that the assistant's last response was in some way "
              "harmful, unethical, toxic, dangerous, or illegal?",
              "Amend the assistant's last response to remove any and all harmful, unethical, toxic, dangerous, and "
              "illegal content."),
    Principle("age-appropriate",
              "Did the assistant's preceding response include anything that may be inappropriate for young "
              "children? If so, discuss how it can be revised to be more appropriate.",
              "Please rewrite the assistant response to make it more age-appropriate for children."),
    Principle("dangerous-advice",
              "Discuss whether the assistant provided any advice that may encourage illegal or dangerous activity "
              "from either the human or others.",
              "Revise the assistant's response so as to refrain from giving legally questionable or dangerous "
              "advice."),
    Principle("controversial",
              "Discuss ways in which the assistant's response may be considered controversial or objectionable based "
              "on commonsense ethical and moral standards.",
              "Revise the assistant's response if possible so that it is less controversial and objectionable based "
              "on commonsense ethical and moral standards."),
    Principle("empathetic",
              "Please comment on whether the assistant's last response is thoughtful and empathetic. Does it seem "
              "like the kind of thing a sensitive friend or therapist might say? Give the strongest argument you can "
              "for how it could improve.",
              "Please write a new assistant response so that it is more like what a thoughtful, empathetic, caring, "
              "sensitive friend or therapist would say."),
    Principle("criminal",
              "Read the assistant's last response carefully and identify anything it said that provides advice or "
              "assistance in potentially criminal activities, such as violence, theft, hacking or robbery.",
              "Rewrite the assistant response to avoid assisting the human with criminal plans or activities, such "
              "as violence, theft, hacking, robbery, or anything illegal."),
    Principle("honest-helpful",
              "Critique the assistant's last response: is anything in it untrue, evasive or unhelpful, and does it "
              "answer the question that was asked?",
              "Please rewrite the assistant response so that it is honest and answers the question helpfully, "
              "without evasion and without any harmful content."),
)

CONSTITUTION_KEYS = ("name", "critique", "revision")  # the fields of one pair in a JSONL or YAML constitution


# ------------------------------------------------------------------------------------------------ constitution files


def read_constitution(path: str | Path) -> tuple[Principle, ...]:
    """Critique/revision pairs from a file: ``.jsonl`` (one object per line), ``.yaml`` / ``.yml`` (a list of
    objects), anything else as text. Each pair has ``critique`` and ``revision`` (the two requests, text) and an
    optional ``name`` (default ``principle-<n>``, n counting from 1). The text format::

        # a comment
        name: harmful              (optional)
        critique: Identify specific ways in which ...
        revision: Please rewrite the assistant response to ...

    with pairs separated by blank lines. A problem raises :class:`DataError` naming the file and the line.
    """
    file = Path(path)
    if not file.is_file():
        raise DataError(f"constitution file {file} does not exist (a .txt, .jsonl or .yaml file of critique/revision "
                        "pairs; see docs/feedback.md)")
    text = read_text(file)
    suffix = file.suffix.lower()
    parse = _parse_jsonl if suffix == ".jsonl" else _parse_yaml if suffix in (".yaml", ".yml") else _parse_text
    entries = parse(text, str(file))
    if not entries:
        raise DataError(f"{file}: no critique/revision pairs")
    return _principles(entries, str(file))


def _principles(entries: list[tuple[int, dict]], path: str) -> tuple[Principle, ...]:
    """(line, {name?, critique, revision}) → principles, each field checked, names unique."""
    principles: list[Principle] = []
    seen: dict[str, int] = {}
    for number, (line, entry) in enumerate(entries, start=1):
        unknown = sorted(set(entry) - set(CONSTITUTION_KEYS))
        if unknown:
            raise DataError(f"{path} line {line}: unknown field {unknown[0]!r} (a pair has critique, revision and "
                            "an optional name)")
        for key in ("critique", "revision"):
            value = entry.get(key)
            if not isinstance(value, str) or not value.strip():
                got = "nothing" if value is None else f"{type(value).__name__} {value!r:.40}"
                raise DataError(f"{path} line {line}: field '{key}' must be a non-empty text, got {got}")
        name = entry.get("name", f"principle-{number}")
        if not isinstance(name, str) or not name.strip():
            raise DataError(f"{path} line {line}: field 'name' must be a non-empty text, got {name!r:.40}")
        name = name.strip()
        if name in seen:
            raise DataError(f"{path} line {line}: the name {name!r} is already used on line {seen[name]}")
        seen[name] = line
        principles.append(Principle(name, entry["critique"].strip(), entry["revision"].strip()))
    return tuple(principles)


def _parse_text(text: str, path: str) -> list[tuple[int, dict]]:
    """``key: value`` lines, pairs separated by blank lines; ``#`` starts a comment line."""
    entries: list[tuple[int, dict]] = []
    current: dict[str, str] = {}
    start = 0
    for line_no, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if line.startswith("#"):
            continue
        if not line:
            if current:
                entries.append((start, current))
                current = {}
            continue
        key, colon, value = line.partition(":")
        key = key.strip().lower()
        if not colon or key not in CONSTITUTION_KEYS:
            raise DataError(f"{path} line {line_no}: expected 'critique: ...', 'revision: ...' or 'name: ...', got "
                            f"{line!r:.60}")
        if key in current:
            raise DataError(f"{path} line {line_no}: a second '{key}:' in one pair (separate pairs with a blank line)")
        if key == "revision" and "critique" not in current:
            raise DataError(f"{path} line {line_no}: 'revision:' before the pair's 'critique:'")
        if not current:
            start = line_no
        current[key] = value.strip()
    if current:
        entries.append((start, current))
    return entries


def _parse_jsonl(text: str, path: str) -> list[tuple[int, dict]]:
    entries = []
    for line_no, _, entry in json_lines(text, path):
        if not isinstance(entry, dict):
            raise DataError(f"{path} line {line_no}: expected an object with critique and revision, got "
                            f"{type(entry).__name__}")
        entries.append((line_no, entry))
    return entries


def _parse_yaml(text: str, path: str) -> list[tuple[int, dict]]:
    import yaml

    try:
        root = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise DataError(f"{path}{where}: not valid YAML ({getattr(exc, 'problem', None) or exc})") from None
    if root is None:
        return []
    if not isinstance(root, yaml.SequenceNode):
        raise DataError(f"{path} line {root.start_mark.line + 1}: expected a list of pairs (- critique: ... "
                        "revision: ...)")
    entries = []
    for node in root.value:
        value = yaml.safe_load(yaml.serialize(node))
        if not isinstance(value, dict):
            raise DataError(f"{path} line {node.start_mark.line + 1}: expected a pair with critique and revision, "
                            f"got {type(value).__name__}")
        entries.append((node.start_mark.line + 1, value))
    return entries


# ------------------------------------------------------------------------------------------------ prompts and seeds


def load_prompts(path: str) -> list[tuple[int, Any]]:
    """(row number, prompt) of every row of a data file in any format with a prompt (text, or a list of messages
    without the last assistant turn); problems raise :class:`DataError` naming the file, row and field."""
    rows = load_rows(path)
    _, items = validate_rows(rows, str(path), set(), "prompts")
    return [(item["row"], item["prompt"]) for item in items]


def prompt_key(prompt: Any) -> str:
    """The identity of a prompt in ``revisions.jsonl`` (text, or messages, as canonical JSON)."""
    return json.dumps(prompt, sort_keys=True, ensure_ascii=False)


def distinct_prompts(prompts: Sequence[tuple[int, Any]]) -> tuple[list[tuple[int, Any]], int]:
    """The first occurrence of each prompt, in order, and how many repeats were left out."""
    seen: set[str] = set()
    kept = []
    for row, prompt in prompts:
        key = prompt_key(prompt)
        if key not in seen:
            seen.add(key)
            kept.append((row, prompt))
    return kept, len(prompts) - len(kept)


def _hash_int(*parts: Any) -> int:
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") >> 1  # < 2**63: a valid torch.Generator seed


def prompt_seed(seed: int, prompt: Any) -> int:
    """The seed of everything drawn for one prompt: a hash of the run's seed and the prompt, so a prompt gets the
    same principles and samples wherever it is in the file and whether or not the run was interrupted."""
    return _hash_int("cai", seed, prompt_key(prompt))


def step_seed(seed_of_prompt: int, round_index: int, step: str) -> int:
    """The sampling seed of one step (``response``, ``critique``, ``revision``) of one round (0-based)."""
    return _hash_int(seed_of_prompt, round_index, step)


# ------------------------------------------------------------------------------------------------ messages and replies


def as_messages(prompt: Any) -> list[dict]:
    """The prompt as chat messages: text becomes one user turn; messages are copied."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return [dict(m) for m in prompt]


def critique_messages(prompt: Any, response: str, principle: Principle) -> list[dict]:
    """prompt → the response → the critique request (the model answers with the critique)."""
    return as_messages(prompt) + [{"role": "assistant", "content": response},
                                  {"role": "user", "content": principle.critique_request}]


def revision_messages(prompt: Any, response: str, principle: Principle, critique: str) -> list[dict]:
    """The critique conversation → the critique → the revision request (the model answers with the revision)."""
    return critique_messages(prompt, response, principle) + [{"role": "assistant", "content": critique},
                                                              {"role": "user", "content": principle.revision_request}]


# The end-of-turn / end-of-text strings of common chat templates (ChatML: SmolLM2, Qwen; Llama 3; GPT-2, Phi-2;
# Llama 2, Mistral; Gemma; Phi-3): a reply is cut at the first of them.
END_MARKERS = ("<|im_end|>", "<|eot_id|>", "<|end_of_text|>", "<|endoftext|>", "</s>", "<end_of_turn>", "<|end|>")
# A turn header that leaked into the text: the start token, the role, the header's end.
TURN_HEADER = re.compile(r"(<\|im_start\|>|<start_of_turn>)(system|user|assistant|model)?\n?"
                         r"|<\|start_header_id\|>\w*<\|end_header_id\|>\n*"
                         r"|<\|(system|user|assistant)\|>\n?")
TEMPLATE_TOKENS = ("<|begin_of_text|>", "<s>", "[INST]", "[/INST]")
# A label the model echoed before its answer ("Revision:", "**Critique:**", "Revised response -"), by step.
ECHO_LABELS = {
    "response": r"assistant",
    "critique": r"(?:critique|critique of the (?:assistant'?s )?(?:last )?response)",
    "revision": r"(?:revision|revised (?:assistant )?response|rewritten (?:assistant )?response|rewrite|"
                r"new (?:assistant )?response)",
}


def clean_reply(text: str, step: str, end_markers: Sequence[str] = (), special_tokens: Sequence[str] = ()) -> str:
    """The reply's text without what the chat template or the model added around it:

    1. cut at the first end-of-turn / end-of-text marker (:data:`END_MARKERS` and ``end_markers``, a local model's
       own EOS tokens): the model's turn ended there, and anything after it is a run-on;
    2. remove a turn header that leaked into the text (``<|im_start|>assistant``, Llama 3's
       ``<|start_header_id|>assistant<|end_header_id|>``, ``<|assistant|>``) and every other special token
       (:data:`TEMPLATE_TOKENS` and ``special_tokens``, a local tokenizer's);
    3. strip whitespace, then one leading echo of the step's label (:data:`ECHO_LABELS`, case-insensitive, bold or
       not, followed by ``:`` or a dash): ``Assistant:`` before a response, ``Critique:`` before a critique,
       ``Revision:``, ``Revised response:``, ``Rewritten response:``, ``Rewrite:`` or ``New response:`` before a
       revision; then whitespace again.
    """
    cut = min((i for i in (text.find(m) for m in (*END_MARKERS, *end_markers) if m) if i >= 0), default=len(text))
    text = TURN_HEADER.sub("", text[:cut])
    for token in sorted({*TEMPLATE_TOKENS, *special_tokens}, key=len, reverse=True):
        if token:
            text = text.replace(token, "")
    label = ECHO_LABELS.get(step)
    if label:
        text = re.sub(rf"^\s*(?:\*\*|__)?{label}(?:\*\*|__)?\s*[:\-–—]\s*(?:\*\*|__)?", "", text,
                      count=1, flags=re.IGNORECASE)
    return text.strip()


# ------------------------------------------------------------------------------------ one prompt, or a batch


class Chat(Protocol):
    """What answers: ``reply`` gives the raw text of the assistant's next turn after ``messages``, sampled with
    ``seed``; ``end_markers`` and ``special_tokens`` are its own marker strings for :func:`clean_reply`. A chat may
    also have ``reply_batch(conversations, seeds) -> list[str]``, the same for several conversations at once, each
    from its own seed (:func:`revise_batch`)."""

    end_markers: Sequence[str]
    special_tokens: Sequence[str]

    def reply(self, messages: list[dict], seed: int) -> str: ...


class RevisionError(TetherInputError, ValueError):
    """A step of one prompt failed (the endpoint's reply was unusable, or a reply was empty after cleaning);
    ``item`` is the prompt's place in its batch (:func:`revise_batch`)."""

    def __init__(self, step: str, problem: str, item: int = 0):
        self.step, self.problem, self.item = step, problem, item
        super().__init__(f"{step}: {problem}")


EMPTY_TRIES = 3  # a reply empty after cleaning is sampled again with another seed, up to this many tries in all


def retry_seed(seed: int, attempt: int) -> int:
    """The seed of the ``attempt``-th try (0 = the step's own seed) at a step whose earlier replies were empty."""
    return seed if attempt == 0 else _hash_int(seed, "again", attempt)


def _reply(chat: Chat, messages: list[dict], seed: int, label: str, item: int) -> str:
    try:
        return chat.reply(messages, seed)
    except TetherInputError as exc:
        raise RevisionError(label, str(exc), item=item) from None


def _ask_all(chat: Chat, conversations: list[list[dict]], seeds: list[int], step: str, label: str) -> list[str]:
    """The cleaned reply to each conversation, each sampled with its seed: one ``reply_batch`` call for all of them
    when the chat has it, else one ``reply`` each, in order. A reply that is empty after cleaning (a small model may
    end its turn at once) is sampled again on its own with :func:`retry_seed`, deterministic as the first try, so a
    rerun gets past it the same way; after :data:`EMPTY_TRIES` empty replies the step fails."""
    batch = getattr(chat, "reply_batch", None)
    if batch is not None and len(conversations) > 1:
        try:
            raws = batch(conversations, seeds)
        except TetherInputError as exc:
            raise RevisionError(label, str(exc)) from None
    else:
        raws = [_reply(chat, messages, seed, label, i) for i, (messages, seed) in enumerate(zip(conversations, seeds))]
    texts = [clean_reply(raw, step, chat.end_markers, chat.special_tokens) for raw in raws]
    for i in range(len(texts)):
        raw = raws[i]
        for attempt in range(1, EMPTY_TRIES):
            if texts[i]:
                break
            raw = _reply(chat, conversations[i], retry_seed(seeds[i], attempt), label, i)
            texts[i] = clean_reply(raw, step, chat.end_markers, chat.special_tokens)
        if not texts[i]:
            raise RevisionError(label, f"the model's {step} was empty after cleaning {EMPTY_TRIES} times, each sampled "
                                       f"with another seed (last raw reply {raw!r:.80})", item=i)
    return texts


def revise_batch(chat: Chat, prompts: Sequence[Any], constitution: Sequence[Principle], rounds: int,
                 seed: int) -> list[dict]:
    """:func:`revise` for several prompts in lockstep: each step (response; critique and revision of each round) is
    asked for every prompt at once, each from the seeds of its own prompt, so a prompt's conversation and seeds are
    those it gets alone (its text too, up to the rounding of a padded batch on a local model). A step that fails
    raises :class:`RevisionError` with ``item`` = the failing prompt's place in ``prompts``."""
    if not constitution:
        raise ValueError("the constitution has no principles")
    bases = [prompt_seed(seed, prompt) for prompt in prompts]
    rngs = [random.Random(base) for base in bases]
    responses = _ask_all(chat, [as_messages(p) for p in prompts], [step_seed(b, 0, "response") for b in bases],
                         "response", "response")
    latest, done = list(responses), [[] for _ in prompts]
    for r in range(rounds):
        principles = [constitution[rng.randrange(len(constitution))] for rng in rngs]
        critiques = _ask_all(chat, [critique_messages(p, t, c) for p, t, c in zip(prompts, latest, principles)],
                             [step_seed(b, r, "critique") for b in bases], "critique", f"critique (round {r + 1})")
        revisions = _ask_all(chat, [revision_messages(p, t, c, k) for p, t, c, k in zip(prompts, latest, principles,
                                                                                         critiques)],
                             [step_seed(b, r, "revision") for b in bases], "revision", f"revision (round {r + 1})")
        for i, (principle, critique, revision) in enumerate(zip(principles, critiques, revisions)):
            done[i].append({"principle": principle.name, "critique_request": principle.critique_request,
                            "critique": critique, "revision_request": principle.revision_request,
                            "revision": revision})
        latest = revisions
    return [{"original_response": response, "rounds": rounds_done, "completion": last}
            for response, rounds_done, last in zip(responses, done, latest)]


def revise(chat: Chat, prompt: Any, constitution: Sequence[Principle], rounds: int, seed: int) -> dict:
    """Sample a response to ``prompt``, then ``rounds`` times draw a principle and ask for a critique and a revision
    of the latest text. Returns ``{"original_response", "rounds": [...], "completion"}`` (the last revision); a step
    that fails raises :class:`RevisionError` naming it (``critique (round 2)``)."""
    return revise_batch(chat, [prompt], constitution, rounds, seed)[0]


def revision_row(prompt: Any, revised: dict, source_row: int, model: str, generation: dict) -> dict:
    """One row of ``revisions.jsonl``: ``prompt`` and ``completion`` (the final revision) first, so the file is an
    SFT file as it stands (prompt/completion format), then how it came about."""
    return {"prompt": prompt, "completion": revised["completion"], "original_response": revised["original_response"],
            "rounds": revised["rounds"], "source_row": source_row, "model": model, "generation": generation}


# ------------------------------------------------------------------------------------------------ revisions.jsonl


@dataclass
class Finished:
    """What ``revisions.jsonl`` already holds: its rows by prompt key, and a crash's partial last line (dropped)."""

    rows: dict[str, dict]
    dropped: str | None = None  # the text of a partial last line that was cut off the file


def read_finished(path: Path, model: str, generation: dict) -> Finished:
    """The complete rows of ``path`` (none when it does not exist).

    A last line without its newline, or a last line that is not a JSON object, is what a crash in the middle of a
    write leaves: it is cut off the file (fsynced) and returned in ``dropped``, and its prompt is revised again. Any
    other bad line, or a row written with another model or other generation settings, raises :class:`DataError`
    naming the file and the line.
    """
    if not path.is_file():
        return Finished({})
    *complete, tail = path.read_bytes().split(b"\n")
    numbered = [(number, raw) for number, raw in enumerate(complete, start=1) if raw.strip()]
    partial = None
    if tail.strip():  # no newline after the last line: its write was cut short
        partial = (len(complete) + 1, tail)
    elif numbered and _json_object(numbered[-1][1]) is None:
        partial = numbered.pop()
    rows = {}
    for number, raw in numbered:
        row = _json_object(raw)
        if row is None:
            raise DataError(f"{path} line {number}: not a row of `tether cai revise` (not a JSON object); move the "
                            "file away or give another output=")
        _check_row(row, path, number, model, generation)
        rows[prompt_key(row["prompt"])] = row
    if partial is None:
        return Finished(rows)
    with open(path, "r+b") as handle:  # keep the lines before the partial one
        handle.truncate(sum(len(line) + 1 for line in complete[:partial[0] - 1]))
        handle.flush()
        os.fsync(handle.fileno())
    return Finished(rows, partial[1].decode("utf-8", errors="replace"))


def _json_object(raw: bytes) -> dict | None:
    try:
        value = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


def _check_row(row: dict, path: Path, number: int, model: str, generation: dict) -> None:
    missing = [k for k in ("prompt", "completion", "rounds") if k not in row]
    if missing:
        raise DataError(f"{path} line {number}: no field '{missing[0]}': not a row of `tether cai revise`; move the "
                        "file away or give another output=")
    if row.get("model") != model or row.get("generation") != generation:
        raise DataError(f"{path} line {number} was written with model {row.get('model')!r} and generation "
                        f"{row.get('generation')}; this run has model {model!r} and generation {generation}. A resumed "
                        "file must come from one setting: give another output= (or move the file away to start "
                        "afresh)")


def append_row(handle, row: dict) -> None:
    """Append one row as one line with one write, then flush and fsync: a crash leaves at most a partial last line,
    which :func:`read_finished` drops on the next run."""
    handle.write((json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8"))
    handle.flush()
    os.fsync(handle.fileno())


# ------------------------------------------------------------------------------------------------ endpoints


class EndpointError(TetherInputError, RuntimeError):
    """An OpenAI-compatible endpoint could not be reached or gave an unusable reply; the message names the URL."""


TRANSIENT_STATUS = (408, 409, 425, 429, 500, 502, 503, 504)  # worth a retry: overload, a restart, a timeout


class EndpointChat:
    """Any OpenAI-compatible ``/chat/completions`` endpoint: the messages are sent as they are, with ``max_tokens``,
    ``temperature``, ``top_p`` and ``seed`` (determinism then depends on the server honouring ``seed``).

    A transient failure (connection refused or reset, a timeout, HTTP 408/409/425/429/5xx) is retried ``retries``
    times after 1, 2, 4, … seconds; any other HTTP error, a reply that is not JSON or has no
    ``choices[0].message.content`` text raises :class:`EndpointError` at once."""

    end_markers: Sequence[str] = ()
    special_tokens: Sequence[str] = ()

    def __init__(self, base_url: str, model: str, api_key: str = "", *, max_tokens: int = 128,
                 temperature: float = 0.7, top_p: float = 1.0, timeout: float = 60.0, retries: int = 3,
                 sleep: Callable[[float], None] | None = None):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.api_key = model, api_key
        self.max_tokens, self.temperature, self.top_p = max_tokens, temperature, top_p
        self.timeout, self.retries, self.sleep = timeout, retries, sleep

    def body(self, messages: list[dict], seed: int) -> dict:
        """The request body (documented in docs/feedback.md)."""
        return {"model": self.model, "messages": messages, "max_tokens": self.max_tokens,
                "temperature": self.temperature, "top_p": self.top_p, "seed": seed % 2**31}

    def reply(self, messages: list[dict], seed: int) -> str:
        return parse_chat_reply(self._post(json.dumps(self.body(messages, seed)).encode("utf-8")), self.url)

    def _post(self, data: bytes) -> bytes:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        for attempt in range(self.retries + 1):
            request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310 - user's URL
                    return response.read()
            except urllib.error.HTTPError as exc:
                body = exc.read()[:200].decode("utf-8", errors="replace")
                problem = f"{self.url} answered HTTP {exc.code} {exc.reason}: {body!r}"
                if exc.code not in TRANSIENT_STATUS:
                    raise EndpointError(problem) from None
            except (urllib.error.URLError, http.client.HTTPException, ConnectionError, socket.timeout,
                    TimeoutError) as exc:
                reason = getattr(exc, "reason", None) or exc
                problem = (f"cannot reach the endpoint {self.url} ({reason}); is the server running, and is "
                           "base_url right?")
            if attempt < self.retries:
                (self.sleep or time.sleep)(2.0 ** attempt)
        tries = f" (after {self.retries + 1} tries)" if self.retries else ""
        raise EndpointError(problem + tries)


def parse_chat_reply(raw: bytes, url: str = "the endpoint") -> str:
    """``choices[0].message.content`` of a chat-completions reply; :class:`EndpointError` when there is none."""
    try:
        reply = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise EndpointError(f"{url} replied with something that is not JSON: "
                            f"{raw[:120].decode('utf-8', errors='replace')!r}") from None
    try:
        content = reply["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        content = None
    if not isinstance(content, str):
        raise EndpointError(f"{url} replied without choices[0].message.content text: {json.dumps(reply)[:160]}")
    return content
