"""The built-in "positive sentiment" task: continue the opening of a review so that it reads positively.

This is the stylistic-continuation task of Ziegler et al. 2019, "Fine-Tuning Language Models
from Human Preferences": the policy is given the opening of a review that stops mid-sentence
("I stayed at this hotel by the main railway station for two nights last month. The room")
and writes the continuation. The gold utility is VADER's compound score (Hutto & Gilbert 2014,
package ``vaderSentiment``, which ships its lexicon) of the continuation alone, in [-1, 1].
In the RLHF loop a simulated panel labels pairs of continuations from the gold (with noise),
a reward model learns from the labels, and PPO makes the continuations positive under a KL
leash to the SFT model; the held-out gold shows whether the reward model's gains are real.

Every opening is sentiment-neutral (|compound| < 0.05, asserted when the data is generated),
so the sentiment a reader sees comes from the continuation only and no prompt starts the
policy off with a head start; the gold is scored on the continuation, not on the prompt.

The packaged data (written deterministically by ``examples/data/make_sentiment_data.py``):
ten categories (hotel, restaurant, film, book, phone, headphones, coffee maker, running shoes,
museum, train journey) x 14 subjects x 4 opening templates = 560 openings, split BY SUBJECT
(8 / 2 / 4 subjects per category), so no subject is in two splits:

| split   | file                          | openings |
|---|---|---|
| train   | ``sentiment_prompts.jsonl``   | 320 (also ``sentiment_sft.jsonl``, ``sentiment_preferences.jsonl``) |
| eval    | ``sentiment_eval.jsonl``      | 80 (PPO's held-out gold evaluation) |
| test    | ``sentiment_test.jsonl``      | 160 (the final evaluation) |

The SFT continuations demonstrate the format only (8-25 words, one or two sentences, a third
each positive, negative and neutral by VADER), so the SFT model starts with no lean to
positivity; the shipped preference pairs' chosen continuation has a compound higher by at
least 0.3, and their length says nothing about which one is chosen. Two pairs in five are graded (both
continuations positive, or both negative, the chosen one more so), so that a reward model learns how positive a
continuation is, not only which side of neutral it falls on.
"""

from __future__ import annotations

from functools import lru_cache

from tether.tasks.registry import split_prompts


@lru_cache(maxsize=1)
def _analyzer():
    """One VADER analyzer, built on first use (loading the lexicon takes a few milliseconds)."""
    try:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
    except ImportError as error:  # pragma: no cover - exercised only without the dependency
        raise ImportError("the sentiment task's gold utility needs VADER: pip install vaderSentiment") from error
    return SentimentIntensityAnalyzer()


def gold_utility(prompt: str, response: str) -> float:
    """VADER's compound score of the continuation alone, in [-1, 1]; 0.0 for an empty one.

    The prompt (the opening) is not scored: the openings are neutral, and the task is to make
    what the policy writes positive.
    """
    if not response or not response.strip():
        return 0.0
    return float(_analyzer().polarity_scores(response)["compound"])


def gold_reward(prompts: list[str], responses: list[str], response_ids: list[list[int]] | None = None) -> list[float]:
    """The gold utility as a reward function: ``reward=tether.tasks.sentiment:gold_reward``."""
    return [gold_utility(p, r) for p, r in zip(prompts, responses)]


SPLITS = {"train": "sentiment_prompts.jsonl", "eval": "sentiment_eval.jsonl", "test": "sentiment_test.jsonl"}


def task_prompts(split: str = "train") -> tuple[str, ...]:
    """The task's openings: ``train`` (320), ``eval`` (80) or ``test`` (160), disjoint by subject."""
    return split_prompts(SPLITS, split)
