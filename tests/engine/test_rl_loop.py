"""The online-RL outer loop on its own (no model, no sampler): iterations, the recipe's state, the KL limit, checkpoints
and resume, and the registry check. PPO and GRPO run it end to end in tests/recipes/test_ppo.py."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import torch

from tether.algos.losses.ppo import policy_loss_fn
from tether.engine.rl import OnlineRun, prompt_batches, registered, run_online_rl
from tether.errors import ConfigError
from tether.rollout.backends import TransformersGenerator
from tether.utils.checkpoint import checkpoint_root, list_checkpoints
from tether.utils.logging import MetricsLogger


@dataclass
class Watch:
    stop_on_alarm: bool = False


@dataclass
class ToyConfig:
    run_dir: str
    name: str = "toy"
    num_iterations: int = 4
    resume: str = "auto"
    save_every: int = 0
    kl_limit: float = 10.0
    heldout: Watch = field(default_factory=Watch)


class Toy:
    """A one-weight 'policy' whose iteration adds 1 to its weight and reports a KL the test chooses."""

    def __init__(self, kls: dict[int, float] | None = None):
        self.model = torch.nn.Linear(1, 1, bias=False)
        torch.nn.init.zeros_(self.model.weight)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=1.0)
        self.kls = kls or {}
        self.seen: list[int] = []
        self.counter = 0
        self.loaded: dict | None = None

    def iterate(self, iteration: int, generator) -> dict:
        self.seen.append(iteration)
        self.counter += 1
        with torch.no_grad():
            self.model.weight += 1.0
        return {"objective/kl": self.kls.get(iteration, 0.5), "reward/score_mean": float(iteration)}

    def run(self) -> OnlineRun:
        def load_state(state: dict) -> None:
            self.loaded = state
            self.counter = state["counter"]

        return OnlineRun(self.model, self.model, self.optimizer, iterate=self.iterate,
                         make_generator=lambda: TransformersGenerator(self.model),
                         postfix=lambda m: {}, meta={"recipe": "toy"}, description="toy",
                         state=lambda: {"counter": self.counter}, load_state=load_state)


def loop(cfg: ToyConfig, toy: Toy):
    logger = MetricsLogger(cfg.run_dir, cfg.name, report_to=[])
    return run_online_rl(cfg, toy.run(), logger, tokenizer=None, ref_model=None, heldout=None)


def test_every_iteration_runs_once_and_the_end_is_checkpointed(tmp_path):
    toy = Toy()
    outcome = loop(ToyConfig(str(tmp_path)), toy)
    assert toy.seen == [0, 1, 2, 3] and outcome.iterations == 4 and outcome.stopped_early is None
    assert [h["reward/score_mean"] for h in outcome.history] == [0.0, 1.0, 2.0, 3.0]
    assert [c.step for c in list_checkpoints(checkpoint_root(tmp_path, "toy"))] == [4]


def test_the_kl_limit_stops_the_run_after_the_iteration_that_crossed_it(tmp_path):
    toy = Toy(kls={1: 11.0})
    outcome = loop(ToyConfig(str(tmp_path)), toy)
    assert toy.seen == [0, 1] and outcome.iterations == 2
    assert "mean KL per response 11.0 nats exceeded kl_limit=10.0 at iteration 2" in outcome.stopped_early
    assert [c.step for c in list_checkpoints(checkpoint_root(tmp_path, "toy"))] == [2]


def test_a_longer_run_resumes_with_the_weights_and_the_recipes_state(tmp_path):
    first = Toy()
    loop(ToyConfig(str(tmp_path), num_iterations=3, save_every=2), first)
    assert [c.step for c in list_checkpoints(checkpoint_root(tmp_path, "toy"))] == [2, 3]
    second = Toy()
    outcome = loop(ToyConfig(str(tmp_path), num_iterations=5, save_every=2), second)
    assert second.seen == [3, 4] and outcome.iterations == 5
    assert second.loaded["counter"] == 3 and second.counter == 5  # the state came back, then went on
    assert second.model.weight.item() == 5.0  # 3 steps restored + 2 here


def test_unknown_registry_names_are_config_errors_listing_the_names():
    assert registered(policy_loss_fn, "ppo_clip", "loss") is policy_loss_fn("ppo_clip")
    with pytest.raises(ConfigError, match="loss: unknown policy loss 'clip'; choose one of ppo_clip"):
        registered(policy_loss_fn, "clip", "loss")


def test_prompt_batches_walk_through_seeded_epochs():
    first = prompt_batches(5, 3, seed=0, iteration=0) + prompt_batches(5, 3, seed=0, iteration=1)
    assert sorted(first[:5]) == [0, 1, 2, 3, 4]  # the first five prompts are one epoch: each once
    assert prompt_batches(5, 3, seed=0, iteration=1) == first[3:]  # a pure function of the iteration
