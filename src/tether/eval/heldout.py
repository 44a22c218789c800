"""Held-out evaluation during RL: the seeds' "held-out human evaluation", run every few iterations.

A fixed set of held-out prompts is answered by the current policy (sampled with its own
seed inside a forked RNG, so training randomness and exact resume are untouched), then
scored by the proxy reward (what the policy is trained on), by the gold / held-out
reward (what we actually want, never trained on) and, in a constrained run, by the cost.
KL to the reference, length and the most widespread trigram complete each point;
:class:`tether.eval.alarm.HackingMonitor` decides whether the run is hacking its reward.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from tether.config import HeldOutConfig
from tether.data import load_prompt_dataset
from tether.data.datasets import limit
from tether.eval.alarm import HackingMonitor, HeldOutPoint
from tether.eval.metrics import sequence_kl, top_ngram_share
from tether.models.loading import save_model
from tether.rollout.generation import GenerationConfig, response_logprobs
from tether.rollout.rewards import RewardSpecError, load_gold_source
from tether.rollout.sampling import scored_batches
from tether.utils.distributed import Dist
from tether.utils.files import atomic_write_text
from tether.utils.logging import console


class HeldOutEvaluator:
    """Answers the held-out prompts with a policy and scores them by proxy and gold reward."""

    def __init__(self, cfg: HeldOutConfig, fallback_file: str | None, tokenizer, reward_source, max_new_tokens: int,
                 max_length: int, temperature: float, chat_template: str = "auto", batch_size: int = 16,
                 cost_source=None, cost_limit: float | None = None):
        path = cfg.prompts_file or fallback_file
        if not path:
            raise RewardSpecError("heldout.gold is set but there are no held-out prompts: set heldout.prompts_file "
                                  "or data.eval_file")
        prompts, _ = load_prompt_dataset(path, tokenizer, max_prompt_length=max_length - max_new_tokens,
                                         chat_template=chat_template)
        self.prompts = limit(prompts, cfg.max_prompts, "held-out prompts")
        self.gold = load_gold_source(cfg.gold)
        self.cfg, self.tokenizer, self.reward_source, self.cost_source = cfg, tokenizer, reward_source, cost_source
        self.cost_limit = cost_limit
        # top_p = 1 whatever the run samples with: the KL below, from log-probs at the temperature alone, is then the
        # KL of the distribution the answers were sampled from
        self.generation = GenerationConfig(max_new_tokens, temperature)
        self.temperature, self.batch_size = temperature, batch_size
        self.monitor = HackingMonitor(cfg.patience, cfg.gold_drop, cfg.length_ratio, cfg.ngram_share)
        self.last_responses: list[str] = []

    def due(self, iteration: int, last: int) -> bool:
        """Evaluate before training (iteration 0), every ``every`` iterations and at the end."""
        return iteration == 0 or iteration == last or (self.cfg.every > 0 and iteration % self.cfg.every == 0)

    @torch.no_grad()
    def evaluate(self, policy, ref_model, iteration: int) -> tuple[HeldOutPoint, list[dict[str, Any]]]:
        """One held-out point for the current policy, and the alarms it fires."""
        proxies, golds, costs, kls, lengths, responses = [], [], [], [], [], []
        sources = {"proxy": self.reward_source, "gold": self.gold}
        if self.cost_source is not None:
            sources["cost"] = self.cost_source
        for batch in scored_batches(policy, self.tokenizer, self.prompts, self.generation, sources, self.batch_size,
                                    seed=self.cfg.seed):
            rollout = batch.rollout
            proxies += batch.scores["proxy"]
            golds += batch.scores["gold"]
            costs += batch.scores.get("cost", [])
            logps = response_logprobs(policy, rollout, self.temperature)
            if ref_model is None:  # LoRA: the reference is the base with adapters disabled
                with policy.disable_adapter():
                    ref_logps = response_logprobs(policy, rollout, self.temperature)
            else:
                ref_logps = response_logprobs(ref_model, rollout, self.temperature)
            kls += sequence_kl(logps, ref_logps, rollout.response_mask).tolist()
            lengths += rollout.response_lengths.tolist()
            responses += batch.responses
        share, gram = top_ngram_share(responses)
        mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
        point = HeldOutPoint(iteration, mean(proxies), mean(golds), mean(lengths), share, mean(kls), gram,
                             mean(costs) if costs else None)
        self.last_responses = responses
        return point, self.monitor.update(point)

    def metrics(self, point: HeldOutPoint) -> dict[str, float]:
        metrics = {"heldout/proxy_mean": point.proxy, "heldout/gold_mean": point.gold, "heldout/kl": point.kl,
                   "heldout/length_mean": point.length, "heldout/top_ngram_share": point.ngram_share,
                   "heldout/alarms": float(len(self.monitor.events))}
        return metrics if point.cost is None else {**metrics, "heldout/cost_mean": point.cost}

    def write(self, path: Path) -> None:
        """The held-out curve and alarm events as JSON (read by ``tether report``)."""
        state = self.monitor.state_dict()
        record = {"points": state["history"], "alarms": state["events"],
                  "rules": {"patience": self.cfg.patience, "gold_drop": self.cfg.gold_drop,
                            "length_ratio": self.cfg.length_ratio, "ngram_share": self.cfg.ngram_share},
                  "gold": self.cfg.gold, "prompts": len(self.prompts)}
        if self.cost_source is not None:
            record["cost_limit"] = self.cost_limit
        atomic_write_text(path, json.dumps(record, indent=2) + "\n")

    def step(self, policy, ref_model, iteration: int, run_dir: Path, name: str, tokenizer,
             meta: dict[str, Any]) -> tuple[dict[str, float], list[dict[str, Any]]]:
        """Evaluate, record ``<run_dir>/<name>_heldout.json``, keep the best policy if asked, report alarms."""
        previous_best = self.monitor.best
        point, fired = self.evaluate(policy, ref_model, iteration)
        if Dist.current().is_main:  # (in a multi-process run every process evaluates; one writes)
            self.write(run_dir / f"{name}_heldout.json")
        if (self.cfg.keep_best and iteration > 0 and previous_best is not None
                and point.gold > previous_best.gold):
            save_model(policy, tokenizer, run_dir / f"{name}-best", {**meta, "iteration": iteration,
                                                                      "heldout_gold": point.gold})
        for event in fired:
            console.print(f"[bold red]reward-hacking alarm[/] ({event['rule']}, iteration {iteration}): "
                          f"{event['message']}")
        return self.metrics(point), fired
