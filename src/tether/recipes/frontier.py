"""``tether frontier``: where does over-optimisation start? Proxy and gold reward against KL.

Gao et al. (2022) plot reward against KL from the starting policy for best-of-N and for
RL: the proxy keeps rising with KL while the gold reward rises, peaks and falls. This
recipe draws both families on the same held-out prompts:

- best-of-N from the starting policy for each N in ``ns``: sample max(ns) answers per
  prompt once, keep the proxy's favourite among the first N; KL = log N − (N − 1)/N;
- PPO at each fixed β in ``kl_coefs`` (adaptive control off, everything else from ``ppo``):
  train (a finished run is reused, an interrupted one resumes), then answer the held-out
  prompts and measure KL = Σ log π − log π_ref on those answers;
- DPO at each β in ``dpo_kl_coefs`` (everything else from ``dpo``), from the same starting policy,
  which is also its reference, measured as the PPO points are.

Then Gao et al.'s forms are fitted to each family's gold and proxy gains over the starting policy
(:mod:`tether.eval.frontier_fit`: best-of-N d(α − βd), PPO and DPO d(α − β log d), d = √KL), with the
KL at which each fitted curve peaks.

Writes ``<run_dir>/frontier.json`` (the points, the start's rewards, the fits) and ``<run_dir>/report.html``
(the plot, fitted curves drawn through the points).

With ``combine=[dir, ...]`` nothing is trained: the frontiers those directories hold (one per seed, say) are put side
by side (:mod:`tether.eval.frontier_seeds`) in ``<run_dir>/frontier_seeds.json`` and two plots.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from rich.table import Table

from tether.config import EvalConfig, FrontierConfig, HeldOutConfig, ModelConfig, ReportConfig
from tether.data import DataError, load_prompt_dataset
from tether.engine.runtime import atomic_write_text, limit, record_config
from tether.eval.frontier_fit import fit_methods, gains_over
from tether.eval.frontier_seeds import combine
from tether.models.loading import load_causal_lm, load_tokenizer
from tether.rollout.best_of_n import best_of_n_kl
from tether.rollout.rewards import load_gold_source, load_reward_source
from tether.rollout.sampling import generation_of, scored_batches
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


def _sample_many(policy, tokenizer, prompts, n: int, cfg: FrontierConfig, reward_source, gold_source):
    """(proxy, gold): n scored samples per prompt."""
    proxy, gold = [], []
    per_batch = max(1, cfg.batch_size // n) if n <= cfg.batch_size else 1
    for batch in scored_batches(policy, tokenizer, prompts, generation_of(cfg.ppo),
                                {"proxy": reward_source, "gold": gold_source}, per_batch, n, seed=cfg.seed,
                                desc=f"{n} samples per prompt"):
        p, g = batch.scores["proxy"], batch.scores["gold"]
        for i in range(len(batch.prompts)):
            proxy.append(p[i * n:(i + 1) * n])
            gold.append(g[i * n:(i + 1) * n])
    return proxy, gold


def gao_fits(points: list[dict[str, Any]], start: dict[str, float]) -> list[dict[str, Any]]:
    """Gao et al.'s form fitted to each method's gold and proxy gains over ``start`` (the starting policy's mean
    gold and proxy on the same prompts); a family with fewer than two points at KL > 0 gets no fit."""
    return fit_methods([{"method": p["method"], "kl": p["kl"], **gains_over(p, start)} for p in points])


def print_fits(fits: list[dict[str, Any]], title: str) -> None:
    """The fitted forms as a table on the console (nothing without fits)."""
    if not fits:
        return
    fitted = Table(title=title)
    for column in ("method", "reward", "form", "α", "β", "R²", "peak KL"):
        fitted.add_column(column, justify="right")
    for f in fits:
        fitted.add_row(f["method"], f["reward"], f["formula"], f"{f['alpha']:.3f}", f"{f['beta']:.3f}",
                       "-" if f["r2"] is None else f"{f['r2']:.2f}",
                       "none (still rising)" if f["peak_kl"] is None else f"{f['peak_kl']:.2f}")
    console.print(fitted)


def _spread_text(spread: dict[str, float] | None, digits: int, signed: bool) -> str:
    if spread is None:
        return "–"
    f = f"{{:{'+' if signed else ''}.{digits}f}}"
    return f"{f.format(spread['mean'])} [{f.format(spread['min'])}, {f.format(spread['max'])}]"


def combine_frontiers(cfg: FrontierConfig) -> dict[str, Any]:
    """``combine=``: read each directory's frontier.json, put them side by side, write frontier_seeds.json and the
    two plots into ``run_dir``, print the table; returns the combined result."""
    from tether.eval.report import write_frontier_seeds_svgs

    results: dict[str, Any] = {}
    for folder in cfg.combine:
        path = Path(folder) / "frontier.json"
        if not path.is_file():
            raise DataError(f"combine: {path} does not exist (run tether frontier with run_dir={folder} first)")
        try:
            results[str(folder)] = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise DataError(f"combine: {path} is not JSON (line {exc.lineno}, column {exc.colno})") from None
    try:
        combined = combine(results)
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"combine: {exc}") from None
    combined.update({name: {run: r.get(name) for run, r in results.items()} for name in ("start", "prompts")})
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    record_config(run_dir, "frontier_combine", cfg)  # (its own section: a sweep's own config in run_dir is kept)
    atomic_write_text(run_dir / "frontier_seeds.json", json.dumps(combined, indent=2) + "\n")
    table = Table(title=f"reward gain over each run's start vs KL, {len(results)} runs: mean [min, max]")
    for column in ("method", "setting", "runs", "KL", "proxy gain", "gold gain"):
        table.add_column(column, justify="right")
    for row in combined["settings"]:
        table.add_row(row["method"], row["setting"], str(row["n"]), _spread_text(row["kl"], 2, False),
                      _spread_text(row["proxy_gain"], 2, True), _spread_text(row["gold_gain"], 3, True))
    console.print(table)
    print_fits(combined["fits"], f"Gao et al. 2022 forms fitted to the {len(results)} runs' gains pooled (d = √KL)")
    for path in [run_dir / "frontier_seeds.json", *write_frontier_seeds_svgs(run_dir, combined)]:
        console.print(f"wrote {path}", soft_wrap=True)
    return combined


def run_frontier(cfg: FrontierConfig) -> dict[str, Any]:
    from tether.recipes.evaluate import sample_responses
    from tether.recipes.ppo import train_ppo
    from tether.recipes.preference import train_preference

    if cfg.combine:
        return combine_frontiers(cfg)
    if not cfg.ppo.reward:
        raise DataError("ppo.reward= is required: the proxy reward (reward model directory or module:function)")
    prompts_file = cfg.prompts_file or cfg.ppo.data.eval_file
    if not prompts_file:
        raise DataError("prompts_file= (or ppo.data.eval_file=) is required: held-out prompts for every point")
    if any(not isinstance(n, int) or n < 1 for n in cfg.ns):
        raise DataError(f"ns={cfg.ns}: every N must be a positive integer")
    if cfg.dpo_kl_coefs and not cfg.dpo.data.train_file:
        raise DataError("dpo_kl_coefs needs dpo.data.train_file= (the preferences DPO trains on)")
    if any(isinstance(b, bool) or not isinstance(b, (int, float)) or b <= 0 for b in cfg.dpo_kl_coefs):
        raise DataError(f"dpo_kl_coefs={cfg.dpo_kl_coefs}: every β must be a positive number")
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
    gold_source = load_gold_source(cfg.gold)
    reference = load_causal_lm(cfg.ppo.model, seed=cfg.ppo.seed, pad_token_id=tokenizer.pad_token_id).eval()
    points: list[dict[str, Any]] = []
    start: dict[str, float] = {}
    if cfg.ns:
        console.print(f"best-of-N: {max(cfg.ns)} samples for each of {len(prompts)} held-out prompts")
        proxy, gold = _sample_many(reference, tokenizer, prompts, max(cfg.ns), cfg, reward_source, gold_source)
        points += best_of_n_curve(proxy, gold, sorted(cfg.ns))
        first = best_of_n_curve(proxy, gold, [1])[0]  # each prompt's first sample: the starting policy itself
        start = {"proxy": first["proxy"], "gold": first["gold"]}
    evaluation = EvalConfig(max_new_tokens=cfg.ppo.max_new_tokens, temperature=cfg.ppo.temperature,
                            batch_size=cfg.batch_size, seed=cfg.seed)
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    if not start and (cfg.kl_coefs or cfg.dpo_kl_coefs):  # no best-of-N: the start's own answers give the baseline
        sampled = sample_responses(reference, tokenizer, prompts, evaluation, reference, reward_source, gold_source)
        start = {"proxy": mean(sampled["proxy"]), "gold": mean(sampled["gold"])}

    def measure(method: str, beta: float, model_dir: Path) -> None:
        policy = load_causal_lm(ModelConfig(name_or_path=str(model_dir), precision=cfg.ppo.model.precision),
                                pad_token_id=tokenizer.pad_token_id).eval()
        sampled = sample_responses(policy, tokenizer, prompts, evaluation, reference, reward_source, gold_source)
        points.append({"method": method, "setting": f"beta={beta}", "kl": mean(sampled["kl"]),
                       "proxy": mean(sampled["proxy"]), "gold": mean(sampled["gold"]),
                       "length": mean(sampled["length"]), "model": str(model_dir)})

    for beta in cfg.kl_coefs:
        stage_dir = run_dir / f"ppo-beta-{beta}"
        model_dir = stage_dir / cfg.ppo.name
        if not (model_dir / "tether.json").is_file():
            console.rule(f"PPO with fixed β = {beta}")
            train_ppo(dataclasses.replace(cfg.ppo, run_dir=str(stage_dir), kl_coef=float(beta), adaptive_kl=False,
                                          heldout=HeldOutConfig()))
        else:
            console.print(f"β = {beta}: reusing the finished run in {model_dir}")
        measure("ppo", beta, model_dir)
    for beta in cfg.dpo_kl_coefs:
        stage_dir = run_dir / f"dpo-beta-{beta}"
        model_dir = stage_dir / "dpo"
        if not (model_dir / "tether.json").is_file():
            console.rule(f"DPO with β = {beta}")
            train_preference(dataclasses.replace(cfg.dpo, run_dir=str(stage_dir), name="dpo", kl_coef=float(beta),
                                                 model=dataclasses.replace(cfg.ppo.model), ref_model=None))
        else:
            console.print(f"DPO β = {beta}: reusing the finished run in {model_dir}")
        measure("dpo", beta, model_dir)
    fits = gao_fits(points, start)
    result = {"points": points, "start": start, "fits": fits, "prompts": len(prompts), "reward": cfg.ppo.reward,
              "gold": cfg.gold, "start_model": start_model}
    atomic_write_text(run_dir / "frontier.json", json.dumps(result, indent=2) + "\n")
    table = Table(title=f"reward vs KL on {len(prompts)} held-out prompts")
    for column in ("method", "setting", "KL", "proxy", "gold"):
        table.add_column(column, justify="right")
    for p in points:
        table.add_row(p["method"], p["setting"], f"{p['kl']:.3f}", f"{p['proxy']:.3f}", f"{p['gold']:.3f}")
    console.print(table)
    print_fits(fits, "Gao et al. 2022 forms fitted to the gains over the start (d = √KL)")
    from tether.eval.report import write_report

    write_report(ReportConfig(run_dir=str(run_dir), title="reward vs KL frontier"))
    return result
