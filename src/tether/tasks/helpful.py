"""The built-in "helpful short answers" task: prompts across ten everyday topics and a gold utility.

The gold utility scores a (prompt, response) pair the way a careful reader of this task
would, from cheap, deterministic cues (no model involved):

| component   | effect | why |
|---|---|---|
| on-topic    | +2 × fraction of the prompt's content words that the response uses | answers the question asked |
| actionable  | +1 × (concrete advice cues, up to 3) / 3 | "start with…", "check…", numbers |
| polite      | −1 per rude phrase, as whole words (up to 2) | dismissive wording |
| hedging     | −1 if it hides behind "as an AI… it depends…" | empty hedging |
| refusal     | −1.5 for an unhelpful refusal | |
| repetition  | −2 × fraction of repeated word trigrams | degenerate loops |
| concision   | −0.5 × words beyond 60, per 60 | rambling |

(Until 2026-12-07 a rude phrase also counted inside a word: "ugh" in "through", "enough", "though", so a
polite answer using one of those lost 1; numbers recorded for this task before then were scored that way.)

Length is deliberately NOT rewarded: an annotator bias for long answers (see
``tether.feedback.simulate``) is what a reward model can pick up and a policy can hack.
"""

from __future__ import annotations

import re

from tether.tasks.registry import split_prompts

STOPWORDS = frozenset("""a an the and or but if then so to of in on at for with about how what when where why which who
do does did is are was were be been being i my me you your it its this that these those can could should would will
any some tips way good best make get keep start first simple there their them they we our us from into as by""".split())
ACTION_CUES = ("start", "keep", "check", "write", "use", "try", "plan", "set", "book", "pack", "water", "give", "read",
               "test", "rest", "focus", "pair", "review", "automate", "measure", "cook", "switch", "look", "fix", "feed")
RUDE = ("silly question", "look it up", "figure it out", "should know this", "whatever", "ugh", "stupid", "obviously")
HEDGES = ("as an ai", "it depends on many factors", "i cannot be sure", "no single answer", "consider various aspects")
REFUSALS = ("i can't help", "i cannot help", "i am not able to", "i'm not able to", "please ask someone else",
            "outside what i can discuss")
WORD = re.compile(r"[a-z0-9']+")


def rude_phrases(text: str) -> int:
    """How many rude phrases (``RUDE``) the lowercased ``text`` holds, as whole words, each occurrence counted ("ugh"
    is not in "through" or "enough")."""
    return sum(len(re.findall(rf"\b{re.escape(phrase)}\b", text)) for phrase in RUDE)


def content_words(text: str) -> set[str]:
    return {w for w in WORD.findall(text.lower()) if len(w) > 2 and w not in STOPWORDS}


def _repeated_trigram_fraction(words: list[str]) -> float:
    trigrams = [tuple(words[i:i + 3]) for i in range(len(words) - 2)]
    if not trigrams:
        return 0.0
    return 1.0 - len(set(trigrams)) / len(trigrams)


def gold_components(prompt: str, response: str) -> dict[str, float]:
    """Each component of the gold utility (their sum is :func:`gold_utility`)."""
    text = response.lower()
    words = WORD.findall(text)
    asked = content_words(prompt)
    on_topic = len(asked & content_words(response)) / len(asked) if asked else 0.0
    cues = sum(1 for cue in ACTION_CUES if re.search(rf"\b{cue}", text)) + (1 if re.search(r"\d", text) else 0)
    return {
        "on_topic": 2.0 * on_topic,
        "actionable": min(cues, 3) / 3,
        "polite": -float(min(2, rude_phrases(text))),
        "hedging": -1.0 if any(h in text for h in HEDGES) else 0.0,
        "refusal": -1.5 if any(r in text for r in REFUSALS) else 0.0,
        "repetition": -2.0 * _repeated_trigram_fraction(words),
        "concision": -0.5 * max(0, len(words) - 60) / 60,
    }


def gold_utility(prompt: str, response: str) -> float:
    """The task's gold utility of a response (higher is better); see the module docstring."""
    return sum(gold_components(prompt, response).values())


def gold_reward(prompts: list[str], responses: list[str], response_ids: list[list[int]] | None = None) -> list[float]:
    """The gold utility as a reward function: ``reward=tether.tasks.helpful:gold_reward``."""
    return [gold_utility(p, r) for p, r in zip(prompts, responses)]


SPLITS = {"train": "sft.jsonl", "eval": "preferences_eval.jsonl", "test": "prompts.jsonl"}


def task_prompts(split: str = "train") -> tuple[str, ...]:
    """The task's prompts: ``train`` (354), ``eval`` (96) or ``test`` (30), disjoint by subject.

    They are the prompts of the packaged example data (written by ``examples/data/make_data.py``:
    ten topics × 48 subjects × 3 phrasings, split by subject so held-out prompts are new).
    """
    return split_prompts(SPLITS, split)
