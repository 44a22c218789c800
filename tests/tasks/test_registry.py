"""The built-in tasks as data: every file exists, the splits are disjoint, and a pipeline's task fills only what
the user left empty."""

import json
from pathlib import Path

import pytest

from tether.config import EvalConfig, HeldOutConfig, LabelSimulateConfig, PipelineConfig, PPOConfig
from tether.recipes.pipeline import apply_task
from tether.tasks.registry import TASKS, get_task

FILES = ("sft_file", "prompts_file", "heldout_file", "heldout_pairs_file", "test_file", "pairs_file")


def _prompts(path: str) -> set[str]:
    return {json.loads(line)["prompt"] for line in Path(path).read_text(encoding="utf-8").splitlines() if line}


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_task_file_exists_and_the_test_prompts_are_new(name):
    task = get_task(name)
    paths = {field: task.path(field) for field in FILES}
    test = _prompts(paths["test_file"])
    assert len(test) >= 100  # enough prompts for a real gain to clear its interval
    trained_or_watched = set().union(*(_prompts(paths[f]) for f in FILES if f != "test_file"))
    assert not test & trained_or_watched
    assert not _prompts(paths["heldout_file"]) & (_prompts(paths["sft_file"]) | _prompts(paths["prompts_file"]))


def test_an_unknown_task_names_the_built_in_ones():
    with pytest.raises(ValueError, match="helpful, sentiment"):
        get_task("sentimental")


def test_a_pipeline_task_fills_what_is_empty_and_keeps_what_is_given():
    given = PipelineConfig(task="sentiment", ppo=PPOConfig(heldout=HeldOutConfig(prompts_file="mine.jsonl")),
                           label=LabelSimulateConfig(noise_scale=0.5))
    cfg = apply_task(given)
    task = get_task("sentiment")
    assert cfg.sft.data.train_file == task.path("sft_file")
    assert cfg.ppo.data.train_file == task.path("prompts_file")
    assert cfg.ppo.heldout.gold == task.gold and cfg.ppo.heldout.prompts_file == "mine.jsonl"
    assert cfg.label.utility == task.utility and cfg.label.noise_scale == 0.5
    assert cfg.eval.data.train_file == task.path("test_file") and cfg.eval.gold == task.gold
    assert cfg.rm.data.eval_file == cfg.dpo.data.eval_file == task.path("heldout_pairs_file")
    assert cfg.extra_preferences == task.path("pairs_file")
    # a raw-text task: every stage's chat format is "never" where it was left at "auto"
    assert {c.data.chat_template for c in (cfg.sft, cfg.sample, cfg.rm, cfg.ppo, cfg.dpo, cfg.eval)} == {"never"}
    assert apply_task(PipelineConfig()) == PipelineConfig()  # no task: nothing changes


def test_the_harmless_task_splits_its_gold_in_a_two_objective_run():
    task = get_task("harmless")
    single = apply_task(PipelineConfig(task="harmless"))  # the default stages: one reward model, the combined gold
    assert single.label.utility == task.utility == "tether.tasks.harmless:gold_utility"
    two = apply_task(PipelineConfig(task="harmless", stages=["sft", "cai", "sample", "label", "cost_label", "rm",
                                                             "cost_rm", "ppo", "eval", "report"]))
    assert two.label.utility == "tether.tasks.harmless:helpful_utility"  # harm is the cost's
    for cfg in (single, two):
        assert cfg.cost_label.utility == cfg.cost_judge.utility == "tether.tasks.harmless:harmless_utility"
        assert cfg.label.noise_scale == cfg.cost_label.noise_scale == task.noise_scale
        assert cfg.eval.safety == "tether.tasks.harmless:safety_metrics" and cfg.eval.gold == task.gold
        assert cfg.rm.data.eval_file == cfg.cost_rm.data.eval_file == task.path("heldout_pairs_file")
        assert cfg.ppo.data.train_file == task.path("prompts_file") and cfg.cai.data.train_file == ""  # (= ppo's)
    mine = apply_task(PipelineConfig(task="harmless", stages=["cost_rm"], eval=EvalConfig(safety="my:safety"),
                                     label=LabelSimulateConfig(utility="my:helpful"),
                                     cost_label=LabelSimulateConfig(utility="my:harmless")))
    assert (mine.label.utility, mine.cost_label.utility, mine.eval.safety) == ("my:helpful", "my:harmless", "my:safety")
    assert apply_task(PipelineConfig(task="sentiment")).eval.safety == ""  # a task without safety metrics
