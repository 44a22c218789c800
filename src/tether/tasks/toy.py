"""Toy programmatic rewards: cheap, deterministic signals for smoke-testing RL loops.

Use them as ``reward=tether.tasks.toy:<name>``. Each takes ``(prompts, responses,
response_ids)`` and returns one float per response. They are deliberately easy to
increase, so a run that does not raise them has a bug.
"""

from __future__ import annotations

TARGET_WORD = "thank"


def period_density(prompts: list[str], responses: list[str], response_ids: list[list[int]]) -> list[float]:
    """10 × the fraction of characters that are periods: dense, and easy for any policy to raise."""
    return [text.count(".") / max(1, len(text)) * 10 for text in responses]


def contains_target_word(prompts: list[str], responses: list[str], response_ids: list[list[int]]) -> list[float]:
    """1.0 when the response contains the word 'thank' (any case), else 0.0: a sparse target-word reward."""
    return [1.0 if TARGET_WORD in text.lower() else 0.0 for text in responses]


def short_and_ended(prompts: list[str], responses: list[str], response_ids: list[list[int]]) -> list[float]:
    """Prefers short responses: −(characters / 100)."""
    return [-len(text) / 100 for text in responses]


def moderate_periods(prompts: list[str], responses: list[str], response_ids: list[list[int]]) -> list[float]:
    """A toy *gold* reward for over-optimisation demos: periods help up to ``period_density`` 0.5, then hurt.

    Train on ``period_density`` (the proxy) and watch this one with ``heldout.gold=``: it rises
    with the proxy at first, then falls while the proxy keeps rising (Goodhart in one line).
    """
    return [p if p <= 0.5 else 1.0 - p for p in period_density(prompts, responses, response_ids)]
