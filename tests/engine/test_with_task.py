"""`task=` on the online-RL configs: a built-in task fills what was left empty, and nothing that was set."""

import pytest

from tether.config import DataConfig, GRPOConfig, HeldOutConfig, PPOConfig
from tether.engine.rl import with_task
from tether.errors import ConfigError
from tether.tasks.registry import get_task


def test_the_arithmetic_task_fills_prompts_reward_gold_and_length():
    task = get_task("arithmetic")
    cfg = with_task(GRPOConfig(task="arithmetic"))
    assert cfg.data.train_file == task.path("prompts_file") and cfg.data.train_file.endswith("arithmetic_prompts.jsonl")
    assert cfg.reward == "verify:math" and cfg.heldout.gold == task.gold
    assert cfg.heldout.prompts_file == task.path("heldout_file")
    assert cfg.max_new_tokens == task.max_new_tokens != 48
    assert cfg.data.chat_template == task.chat_template


def test_what_was_set_is_kept():
    cfg = with_task(GRPOConfig(task="arithmetic", reward="my_rules:score", max_new_tokens=32,
                               data=DataConfig(train_file="mine.jsonl", chat_template="never"),
                               heldout=HeldOutConfig(gold="verify:math", prompts_file="held.jsonl")))
    assert (cfg.reward, cfg.max_new_tokens, cfg.data.train_file, cfg.data.chat_template) == (
        "my_rules:score", 32, "mine.jsonl", "never")
    assert (cfg.heldout.gold, cfg.heldout.prompts_file) == ("verify:math", "held.jsonl")


def test_a_task_without_a_training_reward_leaves_the_reward_to_the_user():
    cfg = with_task(PPOConfig(task="sentiment"))
    assert cfg.reward == "" and cfg.data.chat_template == "never"
    assert with_task(PPOConfig()) == PPOConfig()  # no task: unchanged


def test_an_unknown_task_is_a_config_error_naming_the_tasks():
    with pytest.raises(ConfigError, match="task: unknown task 'arith'.*arithmetic"):
        with_task(GRPOConfig(task="arith"))
