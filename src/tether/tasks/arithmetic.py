"""The built-in "arithmetic" task: grade-school word problems with an integer answer, checked exactly.

A verifiable-reward task: the policy reads a short word problem ("Maya plants 4 rows of flowers
with 5 flowers in each row. Rabbits eat 4 of the flowers. How many flowers are left? Give the
final answer after 'The answer is'.") and the gold utility is 1.0 when the
response's final answer is the reference answer and 0.0 otherwise, as
:func:`tether.rollout.verifiers.check_math` reads it (the last ``\\boxed{}``, else after
``####``, else after the last "the answer is", else the last number). The reference answer
is looked up from the prompt's text in the packaged files, so the gold needs nothing but
the prompt and the response; the prompt files also carry an ``answer`` field, so
``reward=verify:math`` judges them the same way.

The packaged data (written deterministically by ``examples/data/make_arithmetic_data.py``):
ten story templates, each at three levels of difficulty, all on small numbers:

| level | what | forms |
|---|---|---|
| 1 | one addition or subtraction | a+b, a-b |
| 2 | one multiplication, or a division that comes out whole | a*b, a/b |
| 3 | two operations | a+b-c, a-b+c, a-b-c, a*b-c, a*b+c, a-b*c |

split BY TEMPLATE and BY NUMBERS (no story is in two splits, and each form's numbers are cut into
one part per split, so a test problem never repeats a train problem's computation in another story):

| split | file | templates | prompts |
|---|---|---|---|
| train | ``arithmetic_prompts.jsonl`` | shopping, baking, stickers, money, reading | 405 (135 per level) |
| eval  | ``arithmetic_eval.jsonl``    | factory, bus | 102 (34 per level) |
| test  | ``arithmetic_test.jsonl``    | garden, savings, market | 207 (69 per level) |

Rows are ``{"prompt", "answer", "level", "template"}``, the answer an integer as a string. The SFT
demonstrations (``arithmetic_sft.jsonl``, one per train prompt) are short worked solutions ending
"The answer is N."; a shipped preference pair's chosen response (``arithmetic_preferences.jsonl`` on
the train prompts, ``arithmetic_preferences_eval.jsonl`` on the eval ones) is the correct worked
solution and its rejected one the same solution with a slip in its last step (off by 1, 2 or 10, or
another operation), so the two differ only in their numbers.

SmolLM2-135M-Instruct (the embedded model, fp32 on CPU) before any training, on the first 60 test
prompts of each level, chat format, at most 96 new tokens, correct as this gold judges:

| level | n | greedy | sampled (temperature 0.7) |
|---|---|---|---|
| 1 | 60 | 25 (42%) | 5 (8%) |
| 2 | 60 | 22 (37%) | 15 (25%) |
| 3 | 60 | 1 (2%) | 4 (7%) |
| all | 180 | 48 (27%) | 24 (13%) |

The model is weak at arithmetic: the problems were made easier twice until the sampled accuracy on
the test split landed between 10% and 60% (a first draft with two- and three-step problems on numbers
up to 100 measured 17% greedy and 8% sampled, a second with two additions or subtractions as level 2
13% and 9%; each n = 180). Its answers often state a sum after the marker ("so the answer is 6 + 3 =
9"): ``check_math`` reads the result after the last "=" of that clause (9), so "the answer is 56 * 7 =
375" is wrong for 56, as the model's own result is 375. (Graded by the first number after the marker
instead, the same answers scored 20% / 43% / 2% greedy: the marker alone is not the answer.)

Each prompt ends with "Give the final answer after 'The answer is'.", chosen over "Answer with just
the number." and "Solve it step by step, then write 'The answer is' and the number." by greedy
accuracy on 60 one- and two-step test problems of the first draft: 13/60 against 8/60 and 4/60.
"""

from __future__ import annotations

import json
from functools import lru_cache

from tether.rollout.verifiers import check_math
from tether.tasks.registry import ASSETS, split_prompts

SPLITS = {"train": "arithmetic_prompts.jsonl", "eval": "arithmetic_eval.jsonl", "test": "arithmetic_test.jsonl"}


@lru_cache(maxsize=1)
def answers() -> dict[str, str]:
    """Every packaged prompt (stripped) -> its reference answer, over the train, eval and test files."""
    table: dict[str, str] = {}
    for name in SPLITS.values():
        for line in (ASSETS / name).read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                table[row["prompt"].strip()] = row["answer"]
    return table


def answer_of(prompt: str) -> str:
    """The reference answer of a packaged prompt; a ValueError naming the prompt when it is not one."""
    try:
        return answers()[prompt.strip()]
    except KeyError:
        shown = prompt if len(prompt) <= 200 else prompt[:200] + "..."
        raise ValueError(f"the arithmetic task has no answer for the prompt {shown!r}: its gold only knows the "
                         f"prompts of its packaged files ({', '.join(SPLITS.values())})") from None


def gold_utility(prompt: str, response: str) -> float:
    """1.0 when the response's final answer is the prompt's reference answer (``check_math``), else 0.0."""
    return check_math(response, answer_of(prompt)).reward


def gold_reward(prompts: list[str], responses: list[str], response_ids: list[list[int]] | None = None) -> list[float]:
    """The gold utility as a reward function: ``reward=tether.tasks.arithmetic:gold_reward``."""
    return [gold_utility(p, r) for p, r in zip(prompts, responses)]


def task_prompts(split: str = "train") -> tuple[str, ...]:
    """The task's problems: ``train`` (405), ``eval`` (102) or ``test`` (207), disjoint by template and numbers."""
    return split_prompts(SPLITS, split)
