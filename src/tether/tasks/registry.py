"""The built-in tasks the quickstart and the pipeline run on, each as data: its files and its gold.

A task is what a lifecycle run needs besides a model: demonstrations for SFT, prompts for
sampling and RL, held-out prompts for the gold evaluation during PPO (the hacking alarm),
test prompts for the final evaluation (disjoint by subject from the other splits), shipped
preference pairs, the gold utility the simulated panel and the held-out evaluator judge
with, and the scale of that utility (the panel's noise is set on it).

| task | gold | prompts |
|---|---|---|
| ``helpful`` | ``tether.tasks.helpful:gold_utility``: cues of a helpful short answer | everyday questions, chat format |
| ``sentiment`` | VADER's compound score of the continuation (Ziegler et al. 2019) | neutral review openings, raw text |
| ``arithmetic`` | 1 when the final answer is right (``check_math``); RL uses ``verify:math`` | word problems, chat format |
| ``harmless`` | helpfulness − 3 · harm (``tether.tasks.harmless``; ``safety=`` for eval) | mild harmful / benign requests, chat |

Add one with :func:`register_task`; ``tether quickstart task=<name>`` then runs on it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "data"


@dataclass(frozen=True)
class Task:
    """One task's files and gold. File names are relative to the packaged data folder unless absolute."""

    name: str
    summary: str
    sft_file: str             # demonstrations (prompt + response rows)
    prompts_file: str         # prompts the SFT model is sampled on for labelling, and PPO's prompts
    heldout_file: str         # held-out prompts: PPO's gold evaluation and hacking alarm
    heldout_pairs_file: str   # held-out preference pairs: the reward model's report
    test_file: str            # the final evaluation's prompts (no subject shared with the files above)
    pairs_file: str           # shipped preference pairs (train prompts)
    gold: str                 # module:function(prompts, responses, response_ids) -> rewards
    utility: str              # module:function(prompt, response) -> float (the panel's gold)
    chat_template: str        # "auto": prompts in the model's chat format; "never": raw text to continue
    noise_scale: float        # the panel's noise on this utility's scale (see tether.feedback.simulate)
    max_new_tokens: int       # a full answer's length in tokens
    reward: str = ""          # what RL trains on when the run names no reward (a verifier; "" = a reward model)
    safety: str = ""          # module:function -> per-response {harm, over_refusal, helpfulness} (tether eval safety=)
    # two objectives (a pipeline with cost_rm): the panel's utility of each side, on the same scale as ``utility``
    helpful_utility: str = ""   # the helpful reward model's labels (harm left to the cost; "" = ``utility``)
    harmless_utility: str = ""  # the harmless (cost) reward model's labels: higher = safer

    def path(self, field: str) -> str:
        """The absolute path of one of the task's files (``field``: e.g. "test_file"), checked to exist."""
        name = getattr(self, field)
        path = Path(name) if Path(name).is_absolute() else ASSETS / name
        if not path.is_file():
            raise FileNotFoundError(f"task '{self.name}': {field} {path} is missing; reinstall tether")
        return str(path)


@lru_cache(maxsize=None)
def _file_prompts(name: str) -> tuple[str, ...]:
    rows = [json.loads(line) for line in (ASSETS / name).read_text(encoding="utf-8").splitlines() if line]
    return tuple(dict.fromkeys(row["prompt"] for row in rows))  # unique, in file order


def split_prompts(splits: dict[str, str], split: str) -> tuple[str, ...]:
    """The unique prompts, in file order, of the packaged file ``splits[split]`` (a task's ``task_prompts``)."""
    if split not in splits:
        raise ValueError(f"unknown split '{split}' ({', '.join(splits)})")
    return _file_prompts(splits[split])


TASKS: dict[str, Task] = {}


def register_task(task: Task) -> Task:
    TASKS[task.name] = task
    return task


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"unknown task '{name}' (built in: {', '.join(sorted(TASKS))})")
    return TASKS[name]


register_task(Task(
    name="helpful",
    summary="helpful short answers to everyday questions; gold = cues of a helpful answer (tether.tasks.helpful)",
    sft_file="sft.jsonl", prompts_file="sft.jsonl", heldout_file="preferences_eval.jsonl",
    heldout_pairs_file="preferences_eval.jsonl", test_file="helpful_test.jsonl", pairs_file="preferences.jsonl",
    gold="tether.tasks.helpful:gold_reward", utility="tether.tasks.helpful:gold_utility",
    chat_template="auto", noise_scale=1.0, max_new_tokens=40))

register_task(Task(
    name="sentiment",
    summary="continue a neutral review opening; gold = VADER's compound score of the continuation "
            "(Ziegler et al. 2019's stylistic continuation; tether.tasks.sentiment)",
    sft_file="sentiment_sft.jsonl", prompts_file="sentiment_prompts.jsonl", heldout_file="sentiment_eval.jsonl",
    heldout_pairs_file="sentiment_preferences_eval.jsonl", test_file="sentiment_test.jsonl",
    pairs_file="sentiment_preferences.jsonl",
    gold="tether.tasks.sentiment:gold_reward", utility="tether.tasks.sentiment:gold_utility",
    chat_template="never", noise_scale=0.25, max_new_tokens=24))

register_task(Task(
    name="arithmetic",
    summary="grade-school arithmetic word problems at three levels; gold = 1 when the final answer is the "
            "reference integer (check_math; tether.tasks.arithmetic)",
    sft_file="arithmetic_sft.jsonl", prompts_file="arithmetic_prompts.jsonl", heldout_file="arithmetic_eval.jsonl",
    heldout_pairs_file="arithmetic_preferences_eval.jsonl", test_file="arithmetic_test.jsonl",
    pairs_file="arithmetic_preferences.jsonl",
    gold="tether.tasks.arithmetic:gold_reward", utility="tether.tasks.arithmetic:gold_utility",
    chat_template="auto", noise_scale=0.25, max_new_tokens=96, reward="verify:math"))

register_task(Task(
    name="harmless",
    summary="refuse mild harmful requests politely and answer benign ones that only look risky; gold = helpfulness "
            "- 3 x harm (Bai et al. 2022's helpful / harmless trade-off; tether.tasks.harmless)",
    sft_file="harmless_sft.jsonl", prompts_file="harmless_prompts.jsonl", heldout_file="harmless_eval.jsonl",
    heldout_pairs_file="harmless_preferences_eval.jsonl", test_file="harmless_test.jsonl",
    pairs_file="harmless_preferences.jsonl",
    gold="tether.tasks.harmless:gold_reward", utility="tether.tasks.harmless:gold_utility",
    chat_template="auto", noise_scale=1.0, max_new_tokens=48, safety="tether.tasks.harmless:safety_metrics",
    helpful_utility="tether.tasks.harmless:helpful_utility", harmless_utility="tether.tasks.harmless:harmless_utility"))
