"""An AI judge for pairwise preferences (RLAIF, Constitutional-AI style).

For each comparison one principle of a written constitution is sampled and put in a
rubric prompt with the question and the two responses. The judge answers "A" or "B":

- a local model (the embedded default or any HF directory) — the answer is read from
  the next-token log-probabilities of "A" and "B" (deterministic, no sampling);
- any OpenAI-compatible chat endpoint (``base_url`` + ``model``) — the reply's first A/B.

Every comparison is judged in both orders. When the two verdicts disagree the judge only
followed the position, the label is recorded as a tie, and the position-bias rate (share
of such comparisons) is reported.
"""

from __future__ import annotations

import json
import random
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from tether.utils.device import model_device, to_device

DEFAULT_CONSTITUTION = (
    "Choose the response that answers the question asked, not a different one.",
    "Choose the response that gives concrete, practical advice.",
    "Choose the response that is more polite and respectful.",
    "Choose the response that is honest and does not hide behind empty hedging.",
    "Choose the response that is clear and concise, without needless repetition.",
)

RUBRIC = ("You are comparing two answers to a user's question.\n"
          "Principle: {principle}\n\n"
          "Question: {prompt}\n\n"
          "Answer A: {a}\n\n"
          "Answer B: {b}\n\n"
          "Which answer is better according to the principle? Reply with a single letter, A or B.")


@dataclass
class Verdict:
    choice: int | None       # 0 = first response, 1 = second, None = inconsistent across orders (a tie)
    principle: str
    first_order: int         # verdict with the responses in the given order
    swapped_order: int       # verdict with them swapped, mapped back to the given order
    confidence: float        # mean P(chosen letter) over both orders (local models; 1.0 for endpoints)


class LocalJudge:
    """A local causal LM reading its preference from the log-probs of 'A' vs 'B'."""

    def __init__(self, model, tokenizer):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.letters = [self._token_id("A"), self._token_id("B")]

    def _token_id(self, letter: str) -> int:
        ids = self.tokenizer(letter, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise ValueError(f"the judge's tokenizer splits '{letter}' into {len(ids)} tokens")
        return ids[0]

    @torch.no_grad()
    def prefer_first(self, prompt: str, a: str, b: str, principle: str) -> tuple[int, float]:
        """(0 if A wins else 1, probability of the winning letter among the two)."""
        text = RUBRIC.format(principle=principle, prompt=prompt, a=a, b=b)
        if getattr(self.tokenizer, "chat_template", None):
            text = self.tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                                      add_generation_prompt=True)
        ids = self.tokenizer(text, add_special_tokens=False, return_tensors="pt")
        logits = self.model(**to_device(dict(ids), model_device(self.model))).logits[0, -1].float()
        pair = torch.softmax(logits[self.letters], dim=-1)
        return int(pair.argmax()), float(pair.max())


class EndpointJudge:
    """Any OpenAI-compatible ``/chat/completions`` endpoint."""

    def __init__(self, base_url: str, model: str, api_key: str = "", timeout: float = 60.0):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.api_key = api_key
        self.timeout = timeout

    def prefer_first(self, prompt: str, a: str, b: str, principle: str) -> tuple[int, float]:
        body = json.dumps({"model": self.model, "temperature": 0, "max_tokens": 4, "messages": [
            {"role": "user", "content": RUBRIC.format(principle=principle, prompt=prompt, a=a, b=b)}]}).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310 - user-given URL
            reply = json.loads(response.read())["choices"][0]["message"]["content"].strip().upper()
        for char in reply:
            if char in "AB":
                return (0 if char == "A" else 1), 1.0
        raise ValueError(f"the judge replied {reply!r}, not A or B")


def judge_pair(judge, prompt: str, first: str, second: str, principle: str) -> Verdict:
    """Judge both orders; agree → that choice, disagree → a tie caused by position bias."""
    v1, p1 = judge.prefer_first(prompt, first, second, principle)
    v2_swapped, p2 = judge.prefer_first(prompt, second, first, principle)
    v2 = 1 - v2_swapped
    return Verdict(v1 if v1 == v2 else None, principle, v1, v2, (p1 + p2) / 2)


def judge_pairs(judge, comparisons: Sequence[tuple[str, str, str]], constitution: Sequence[str] = DEFAULT_CONSTITUTION,
                seed: int = 0) -> list[Verdict]:
    """(prompt, first, second) triples → verdicts, one sampled principle per comparison."""
    rng = random.Random(seed)
    return [judge_pair(judge, prompt, a, b, rng.choice(list(constitution))) for prompt, a, b in comparisons]


def position_bias_rate(verdicts: Sequence[Verdict]) -> float:
    """Share of comparisons whose verdict flipped when the responses were swapped."""
    return sum(v.choice is None for v in verdicts) / len(verdicts) if verdicts else float("nan")
