"""Reward sources behind one interface: a reward-model directory (or ensemble), or a Python function.

``load_reward_source(spec, tokenizer)``:
- a directory (or comma-separated directories / an ensemble directory) → :class:`RewardModelSource`
- ``verify:<name>`` → :class:`VerifierSource`: a registered checker (:data:`tether.rollout.verifiers.VERIFIERS`:
  ``math``, ``code``, ``format``) compares each response with its prompt row's fields (the reference ``answer``,
  the ``tests``, ...); 1 for a correct response, else 0, with the outcomes counted for the run's metrics.
- ``package.module:function`` → :class:`FunctionSource`; the function is called as
  ``fn(prompts: list[str], responses: list[str], response_ids: list[list[int]]) -> list[float]``, and with
  ``rows=`` (each prompt's row of the data file, a dict) too when it takes a ``rows`` argument.
- several objectives combined by weights, ``"0.7*runs/rm_helpful + 0.3*my_rules:harmless"``
  → :class:`WeightedSource` (Σ wᵢ · scoreᵢ; a weight may be negative; no weight means 1).
"""

from __future__ import annotations

import inspect
import json
import os
import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import torch
from rich.markup import escape

from tether.data.tokenize import encode_prompt_response, renders_chat
from tether.errors import TetherInputError
from tether.models.reward import ensemble_members, load_reward_models, recorded_chat_templates, score_with_members
from tether.rollout.generation import Rollout
from tether.rollout.verifiers import VERDICTS, verifier
from tether.utils.imports import import_object
from tether.utils.logging import console


class RewardSpecError(TetherInputError, ValueError):
    """A reward specification that names nothing usable."""


class RewardSource(Protocol):
    def score(self, rollout: Rollout, prompts: list[str], responses: list[str],
              rows: list[dict] | None = None) -> torch.Tensor:
        """(B,) fp32 scores, on the rollout's device. ``rows``: each response's prompt row (its fields besides the
        prompt: a reference answer, test cases), for the sources that check against them."""
        ...


def end_of_turn_suffix(tokenizer, chat_template: str = "auto", end_token_id: int | None = None) -> list[int]:
    """Tokens the chat template puts after the token that ends an assistant turn (ChatML: '\\n' after
    ``<|im_end|>``): after ``end_token_id`` (default: the tokenizer's EOS); [] when the template does not render it.

    A generated response stops at a stop token (the EOS, or another EOS id of the generation config, such as
    ``<|im_end|>`` when the tokenizer's EOS is ``<|endoftext|>``); the reward model was trained on responses rendered
    by the template, so the suffix that follows that token is appended before scoring to read the score at the
    same place.
    """
    _, response_ids = encode_prompt_response(tokenizer, "x", "y", chat_template)
    end = tokenizer.eos_token_id if end_token_id is None else end_token_id
    if end is None or end not in response_ids:
        return []
    last = len(response_ids) - 1 - response_ids[::-1].index(end)
    return response_ids[last + 1:]


def response_ending(tokenizer, chat_template: str = "auto") -> list[int]:
    """The tokens a training example puts after a response's text, in the rendering a reward model is trained on:
    the EOS for plain text (``chat_template=never``), the template's end of turn otherwise (ChatML: ``<|im_end|>``
    and ``\n``)."""
    _, response_ids = encode_prompt_response(tokenizer, "x", "y", chat_template)
    text_ids = tokenizer("y", add_special_tokens=False)["input_ids"]
    if response_ids[:len(text_ids)] == text_ids:
        return response_ids[len(text_ids):]
    end = tokenizer.eos_token_id  # (a template that renders "y" differently in context: the EOS and what follows it)
    return [] if end is None else [end, *end_of_turn_suffix(tokenizer, chat_template)]


def stored_ensemble_k(spec: str) -> float:
    """The k an ensemble directory was trained with (its ``ensemble.json``), for a spec naming one ensemble
    directory; 0 (the plain mean) for one model or a comma-separated list."""
    dirs = [p.strip() for p in spec.split(",") if p.strip()]
    manifest = Path(dirs[0]) / "ensemble.json" if len(dirs) == 1 else None
    if manifest is None or not manifest.is_file():
        return 0.0
    return float(json.loads(manifest.read_text(encoding="utf-8")).get("k", 0.0))


def rendering_mismatch(tokenizer, chat_template: str, recorded: dict[str, str | None]) -> str | None:
    """What is wrong, or None, when reward models trained with the ``data.chat_template`` settings ``recorded`` (by
    directory; None: not recorded) score sequences the policy's ``chat_template`` renders. A reward model is scored
    on the policy's own token ids, so one trained on plain text reads a chat-formatted answer in a format it never
    saw (and the other way round): on the sentiment quickstart such a model ranked the gold at 0.02 instead of
    0.26. Only the rendering counts (``auto`` and ``always`` agree where the tokenizer has a template)."""
    policy_chat = renders_chat(tokenizer, chat_template)
    off = {d: v for d, v in recorded.items() if v and renders_chat(tokenizer, v) != policy_chat}
    if not off:
        return None
    theirs = ", ".join(f"{d} (data.chat_template={v})" for d, v in off.items())
    return (f"the reward model {theirs} was trained on {'plain text' if policy_chat else 'chat-formatted'} pairs, "
            f"but data.chat_template={chat_template} renders the policy's prompts and answers "
            f"{'in the chat template' if policy_chat else 'as plain text'}: it will score a format it never saw. "
            "Set data.chat_template as the reward model was trained")


class RewardModelSource:
    """Score = reward model on prompt + response; for an ensemble, the members' mean − k·std (the conservative
    score: responses the members disagree on score lower, which is what reward hacking exploits).

    ``conservative_k``: None takes the k stored in an ensemble directory's ``ensemble.json`` (the k it was trained
    with; 0 for one model or a comma-separated list), 0 is the plain mean.

    Each response is scored in the form the reward model was trained on, which is always a finished turn (the
    training data renders every response with its end: the EOS, or the template's end of turn): a response that
    ended with a stop token gets the template's suffix after it, and a response cut at ``max_new_tokens``
    (``truncated="as_finished"``, the default) gets the full ending. Read at a mid-sentence token instead
    (``truncated="as_is"``), the score is one the model never learned to give: on the sentiment quickstart it was
    about 2.5 higher for every truncated answer whatever its gold, and PPO learned to stop ending its answers
    within ten iterations. Truncation is charged by the trainers' ``missing_eos_penalty`` instead.
    ``chat_template`` is the data's (``data.chat_template``), so that the ending matches the training rendering."""

    def __init__(self, spec: str, tokenizer, batch_size: int = 8, conservative_k: float | None = None,
                 chat_template: str = "auto", truncated: str = "as_finished", precision: str = "fp32"):
        if truncated not in ("as_finished", "as_is"):
            raise RewardSpecError(f"truncated must be 'as_finished' or 'as_is', got {truncated!r}")
        dirs = [Path(p.strip()) for p in spec.split(",") if p.strip()]
        members = [member for d in dirs for member in ensemble_members(d)]
        self.models = [m for member in members for m in load_reward_models(member, precision)]
        self.format_warning = rendering_mismatch(tokenizer, chat_template, recorded_chat_templates(members))
        if self.format_warning:
            console.print(f"[bold red]warning:[/] {escape(self.format_warning)}", soft_wrap=True)
        self.pad_token_id = self.models[0].config.pad_token_id
        self.tokenizer, self.chat_template = tokenizer, chat_template
        self.suffix = end_of_turn_suffix(tokenizer, chat_template)  # after the tokenizer's EOS
        self.suffixes = {tokenizer.eos_token_id: self.suffix}  # by the stop token that ended the response
        self.ending = response_ending(tokenizer, chat_template) if truncated == "as_finished" else []
        self.batch_size = batch_size
        self.k = stored_ensemble_k(spec) if conservative_k is None else float(conservative_k)
        if self.k < 0:
            raise RewardSpecError(f"ensemble k must be ≥ 0 (mean − k·std), got {self.k}")

    def suffix_after(self, stop_token_id: int) -> list[int]:
        """The template's end-of-turn suffix after ``stop_token_id`` (one rendering per stop id, then cached)."""
        if stop_token_id not in self.suffixes:
            self.suffixes[stop_token_id] = end_of_turn_suffix(self.tokenizer, self.chat_template, stop_token_id)
        return self.suffixes[stop_token_id]

    def sequences(self, rollout: Rollout) -> list[list[int]]:
        out = []
        for b in range(rollout.prompt_ids.shape[0]):
            prompt = rollout.prompt_ids[b][rollout.prompt_mask[b].bool()].tolist()
            response = rollout.response_ids[b][rollout.response_mask[b].bool()].tolist()
            ended = bool(rollout.ended_with_eos[b]) and bool(response)  # its last token is the stop token sampled
            out.append(prompt + response + (self.suffix_after(response[-1]) if ended else self.ending))
        return out

    @torch.no_grad()
    def score(self, rollout: Rollout, prompts: list[str], responses: list[str],
              rows: list[dict] | None = None) -> torch.Tensor:
        scores = score_with_members(self.models, self.sequences(rollout), self.pad_token_id, self.batch_size, self.k)
        return (scores.conservative if self.k > 0 else scores.mean).to(rollout.response_ids.device)


def takes_rows(fn) -> bool:
    """Whether ``fn`` accepts a ``rows`` keyword (a named parameter, or ``**kwargs``)."""
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "rows" or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def call_function(fn, with_rows: bool, prompts: list[str], responses: list[str], ids: list[list[int]],
                  rows: list[dict] | None) -> Any:
    """``fn(prompts, responses, ids)``, with ``rows=`` (each prompt's row; empty rows when none) when it takes them."""
    if with_rows:
        return fn(prompts, responses, ids, rows=rows if rows is not None else [{} for _ in responses])
    return fn(prompts, responses, ids)


class FunctionSource:
    """A Python reward function given as ``module:function`` (called with ``rows=`` when it takes them)."""

    def __init__(self, spec: str):
        try:
            self.fn = import_object(spec)
        except ImportError as exc:
            raise RewardSpecError(f"reward function '{spec}' cannot be imported: {exc}") from None
        self.spec, self.with_rows = spec, takes_rows(self.fn)

    def score(self, rollout: Rollout, prompts: list[str], responses: list[str],
              rows: list[dict] | None = None) -> torch.Tensor:
        ids = [rollout.response_ids[b][rollout.response_mask[b].bool()].tolist() for b in range(len(responses))]
        values = call_function(self.fn, self.with_rows, prompts, responses, ids, rows)
        if len(values) != len(responses):
            raise ValueError(f"reward function {self.spec} returned {len(values)} scores for {len(responses)} "
                             "responses")
        return torch.tensor([float(v) for v in values], dtype=torch.float32, device=rollout.response_ids.device)


class VerifierSource:
    """``verify:<name>``: a registered checker (:mod:`tether.rollout.verifiers`) judges each response against its
    prompt row; the score is 1 for a correct response and 0 for a wrong, unparseable or timed-out one.

    ``outcomes`` counts the verdicts of the last call (for :func:`outcome_metrics`). Checks run on ``workers``
    threads (the code checker spends its time in a subprocess, which releases the GIL)."""

    def __init__(self, name: str, workers: int | None = None):
        try:
            self.check = verifier(name)
        except ValueError as exc:
            raise RewardSpecError(f"reward 'verify:{name}': {exc}") from None
        self.name = name
        self.workers = workers if workers is not None else min(4, os.cpu_count() or 1)
        self.outcomes: Counter = Counter()

    def score(self, rollout: Rollout, prompts: list[str], responses: list[str],
              rows: list[dict] | None = None) -> torch.Tensor:
        if rows is None:
            raise RewardSpecError(f"reward 'verify:{self.name}' checks each response against its prompt's row, and "
                                  "this caller passed no rows")
        if self.workers > 1 and len(responses) > 1:
            with ThreadPoolExecutor(self.workers) as pool:
                outcomes = list(pool.map(self.check, responses, rows))
        else:
            outcomes = [self.check(r, row) for r, row in zip(responses, rows)]
        self.outcomes = Counter(o.verdict for o in outcomes)
        return torch.tensor([o.reward for o in outcomes], dtype=torch.float32, device=rollout.response_ids.device)


class WeightedSource:
    """Several reward sources combined as Σ wᵢ · scoreᵢ (e.g. helpfulness and harmlessness)."""

    def __init__(self, parts: list[tuple[float, RewardSource]]):
        self.parts = parts

    def score(self, rollout: Rollout, prompts: list[str], responses: list[str],
              rows: list[dict] | None = None) -> torch.Tensor:
        return sum(weight * source.score(rollout, prompts, responses, rows) for weight, source in self.parts)


def outcome_metrics(source) -> dict[str, float]:
    """The verdict fractions of the last call of each verifier in ``source`` (itself, or the parts of a weighted
    source): ``verify/<name>/<verdict>`` for correct, wrong, unparseable and timeout; {} without a verifier."""
    if isinstance(source, WeightedSource):
        return {k: v for _, part in source.parts for k, v in outcome_metrics(part).items()}
    if not isinstance(source, VerifierSource) or not source.outcomes:
        return {}
    total = sum(source.outcomes.values())
    return {f"verify/{source.name}/{verdict}": source.outcomes[verdict] / total for verdict in VERDICTS}


_SPACED_PLUS = re.compile(r"\s+\+\s*|\s*\+\s+")  # a '+' with whitespace on at least one side
_BARE_PLUS = re.compile(r"(?<![0-9][eE])\+")  # any '+' but an exponent's (1e+3)


def parse_weighted(spec: str) -> list[tuple[float, str]]:
    """``"0.7*a + 0.3*b:f"`` → [(0.7, "a"), (0.3, "b:f")]; a term without ``w*`` has weight 1.

    Terms are separated by ``+``. When some ``+`` has a space beside it, only those separate (so a path with a
    ``+`` in it, ``runs/a+b + runs/c``, keeps its name); otherwise every ``+`` does, except an exponent's
    (``1e+3*m:f`` is one term). A spec that is an existing path is one term, ``+`` or not.
    """
    if Path(spec.strip()).exists():
        return [(1.0, spec.strip())]
    splitter = _SPACED_PLUS if _SPACED_PLUS.search(spec) else _BARE_PLUS
    terms = []
    for term in splitter.split(spec):
        term = term.strip()
        weight, star, rest = term.partition("*")
        if star:
            try:
                terms.append((float(weight), rest.strip()))
            except ValueError:
                raise RewardSpecError(f"reward term '{term}': the weight before '*' must be a number") from None
        else:
            terms.append((1.0, term))
        if not terms[-1][1]:
            raise RewardSpecError(f"reward '{spec}': empty term")
    return terms


def _weighted_terms(spec: str) -> list[tuple[float, str]] | None:
    """The terms of a weighted sum, or None when ``spec`` is one plain source (no weight, nothing added)."""
    if "+" not in spec and "*" not in spec:
        return None
    terms = parse_weighted(spec)
    return None if len(terms) == 1 and terms[0] == (1.0, spec.strip()) else terms


def load_gold_source(spec: str) -> RewardSource:
    """A gold (held-out) reward, which needs no model: ``module:function``, ``verify:<checker>`` or a weighted sum of
    them (``"verify:math + 0.1*my.module:fn"``). ``tether eval gold=``, the held-out evaluation during RL and
    ``tether frontier`` read their gold through this."""
    terms = _weighted_terms(spec)
    if terms is not None:
        return WeightedSource([(w, load_gold_source(part)) for w, part in terms])
    if spec.strip().startswith("verify:"):
        return VerifierSource(spec.strip()[len("verify:"):].strip())
    return FunctionSource(spec.strip())


def load_reward_source(spec: str, tokenizer, batch_size: int = 8, conservative_k: float | None = None,
                       chat_template: str = "auto", precision: str = "fp32") -> RewardSource:
    """The reward ``spec`` names (see the module docstring); ``conservative_k`` and ``chat_template`` (the data's)
    as in :class:`RewardModelSource`; reward models compute in ``precision`` (the policy's ``model.precision``)."""
    if not spec:
        raise RewardSpecError("reward= is required: a reward model directory or module:function")
    terms = _weighted_terms(spec)
    if terms is not None:
        return WeightedSource([(w, load_reward_source(part, tokenizer, batch_size, conservative_k, chat_template,
                                                       precision))
                               for w, part in terms])
    first = spec.split(",")[0].strip()
    if spec.strip().startswith("verify:") and not Path(first).exists():
        return VerifierSource(spec.strip()[len("verify:"):].strip())
    if Path(first).is_dir():
        return RewardModelSource(spec, tokenizer, batch_size, conservative_k, chat_template, precision=precision)
    if ":" in spec and not Path(first).exists():
        return FunctionSource(spec)
    raise RewardSpecError(f"reward '{spec}' is neither a reward model directory, verify:<checker> nor "
                          "module:function")
