"""``tether frontier``: where does over-optimisation start? Proxy and gold reward against KL.

Gao et al. (2022) plot reward against KL from the starting policy for best-of-N and for
RL: the proxy keeps rising with KL while the gold reward rises, peaks and falls. This
recipe draws both families on the same held-out prompts:

- best-of-N from the starting policy for each N in ``ns``: sample max(ns) answers per
  prompt once, keep the proxy's favourite among the first N; KL = log N − (N − 1)/N;
- PPO at each fixed β in ``betas`` (adaptive control off, everything else from ``ppo``):
  train (a finished run is reused, an interrupted one resumes), then answer the held-out
  prompts and measure KL = Σ log π − log π_ref on those answers.

Writes ``<run_dir>/frontier.json`` (the table) and ``<run_dir>/report.html`` (the plot).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from rich.table import Table

from tether.config import EvalConfig, FrontierConfig, HeldOutConfig, ModelConfig, ReportConfig
from tether.data import DataError, collate_prompts, load_prompt_dataset
from tether.models.loading import load_causal_lm, load_tokenizer
from tether.recipes.common import atomic_write_text, limit, record_config
from tether.rollout.best_of_n import best_of_n_kl
from tether.rollout.generation import GenerationConfig, generate
from tether.rollout.rewards import FunctionSource, load_reward_source
from tether.utils.device import forked_rng
from tether.utils.logging import console


def best_of_n_curve(proxy: list[list[float]], gold: list[list[float]], ns: list[int]) -> list[dict[str, Any]]:
    """For each N: mean proxy and gold of the proxy's favourite among each prompt's first N samples."""
    points = []
    for n in ns:
        picks = [max(range(n), key=lambda i, p=p: p[i]) for p in proxy]
        points.append({"method": "best-of-n", "setting": f"N={n}", "kl": best_of_n_kl(n),
                       "proxy": sum(p[i] for p, i in zip(proxy, picks)) / len(picks),
                       "gold": sum(g[i] for g, i in zip(gold, picks)) / len(picks)})
    return points


@torch.no_grad()
def _sample_many(policy, tokenizer, prompts, n: int, cfg: FrontierConfig, reward_source, gold_source):
    """(proxy, gold): n scored samples per prompt."""
    generation = GenerationConfig(cfg.ppo.max_new_tokens, cfg.ppo.temperature)
    proxy, gold = [], []
    per_batch = max(1, cfg.batch_size // n) if n <= cfg.batch_size else 1
    with forked_rng():
        torch.manual_seed(cfg.seed)
        for start in range(0, len(prompts), per_batch):
            chunk = prompts[start:start + per_batch]
            repeated = [p for p in chunk for _ in range(n)]
            batch = collate_prompts(repeated, tokenizer.pad_token_id)
            rollout = generate(policy, batch["input_ids"], batch["attention_mask"], generation, tokenizer.eos_token_id,
                               tokenizer.pad_token_id)
            texts = [tokenizer.decode(r[m.bool()], skip_special_tokens=True)
                     for r, m in zip(rollout.response_ids, rollout.response_mask)]
            prompt_texts = [p.prompt_text for p in repeated]
            p = reward_source.score(rollout, prompt_texts, texts).tolist()
            g = gold_source.score(rollout, prompt_texts, texts).tolist()
            for i in range(len(chunk)):
                proxy.append(p[i * n:(i + 1) * n])
                gold.append(g[i * n:(i + 1) * n])
    return proxy, gold


def run_frontier(cfg: FrontierConfig) -> dict[str, Any]:
    from tether.recipes.evaluate import sample_responses
    from tether.recipes.ppo import train_ppo

    if not cfg.ppo.reward:
        raise DataError("ppo.reward= is required: the proxy reward (reward model directory or module:function)")
    prompts_file = cfg.prompts_file or cfg.ppo.data.eval_file
    if not prompts_file:
        raise DataError("prompts_file= (or ppo.data.eval_file=) is required: held-out prompts for every point")
    if any(not isinstance(n, int) or n < 1 for n in cfg.ns):
        raise DataError(f"ns={cfg.ns}: every N must be a positive integer")
    run_dir = Path(cfg.run_dir)
    record_config(run_dir, "frontier", cfg)
    start_model = cfg.ppo.model.name_or_path
    tokenizer = load_tokenizer(start_model, cfg.ppo.model)
    prompts, _ = load_prompt_dataset(prompts_file, tokenizer,
                                     max_prompt_length=cfg.ppo.data.max_length - cfg.ppo.max_new_tokens,
                                     chat_template=cfg.ppo.data.chat_template)
    prompts = limit(prompts, cfg.max_prompts, "held-out prompts")
    reward_source = load_reward_source(cfg.ppo.reward, tokenizer, conservative_k=cfg.ppo.ensemble_k,
                                       chat_template=cfg.ppo.data.chat_template, precision=cfg.ppo.model.precision)
    gold_source = FunctionSource(cfg.gold)
    reference = load_causal_lm(cfg.ppo.model, seed=cfg.ppo.seed, pad_token_id=tokenizer.pad_token_id).eval()
    points: list[dict[str, Any]] = []
    if cfg.ns:
        console.print(f"best-of-N: {max(cfg.ns)} samples for each of {len(prompts)} held-out prompts")
        proxy, gold = _sample_many(reference, tokenizer, prompts, max(cfg.ns), cfg, reward_source, gold_source)
        points += best_of_n_curve(proxy, gold, sorted(cfg.ns))
    evaluation = EvalConfig(max_new_tokens=cfg.ppo.max_new_tokens, temperature=cfg.ppo.temperature,
                            batch_size=cfg.batch_size, seed=cfg.seed)
    for beta in cfg.betas:
        stage_dir = run_dir / f"ppo-beta-{beta}"
        model_dir = stage_dir / cfg.ppo.name
        if not (model_dir / "tether.json").is_file():
            console.rule(f"PPO with fixed β = {beta}")
            train_ppo(dataclasses.replace(cfg.ppo, run_dir=str(stage_dir), init_kl_coef=float(beta), adaptive_kl=False,
                                          heldout=HeldOutConfig()))
        else:
            console.print(f"β = {beta}: reusing the finished run in {model_dir}")
        policy = load_causal_lm(ModelConfig(name_or_path=str(model_dir), precision=cfg.ppo.model.precision),
                                pad_token_id=tokenizer.pad_token_id).eval()
        sampled = sample_responses(policy, tokenizer, prompts, evaluation, reference, reward_source, gold_source)
        mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
        points.append({"method": "ppo", "setting": f"beta={beta}", "kl": mean(sampled["kl"]),
                       "proxy": mean(sampled["proxy"]), "gold": mean(sampled["gold"]),
                       "length": mean(sampled["length"]), "model": str(model_dir)})
        del policy
    result = {"points": points, "prompts": len(prompts), "reward": cfg.ppo.reward, "gold": cfg.gold,
              "start_model": start_model}
    atomic_write_text(run_dir / "frontier.json", json.dumps(result, indent=2) + "\n")
    table = Table(title=f"reward vs KL on {len(prompts)} held-out prompts")
    for column in ("method", "setting", "KL", "proxy", "gold"):
        table.add_column(column, justify="right")
    for p in points:
        table.add_row(p["method"], p["setting"], f"{p['kl']:.3f}", f"{p['proxy']:.3f}", f"{p['gold']:.3f}")
    console.print(table)
    from tether.eval.report import write_report

    write_report(ReportConfig(run_dir=str(run_dir), title="reward vs KL frontier"))
    return result
