"""``tether eval``: compare policies on held-out prompts, the way reward hacking shows up.

For each model directory, on the same held-out prompts and sampling seed:

- proxy reward (the reward model / function the policy was trained on) and gold reward
  (the held-out utility it was not trained on): a proxy gain without a gold gain is hacking;
- KL to the reference: Σ over response tokens of log π − log π_ref on the policy's own samples;
- entropy: each answer's mean per-token entropy of the policy at the sampling temperature (how sure it
  is of its own tokens; RL on a verifier tends to lower it), averaged over answers;
- response length and EOS rate; distinct-1/2 and self-BLEU across responses (mode collapse);
- win-rate against the reference, judged by a low-noise held-out evaluator on the gold
  reward (P(A wins) = σ((gold_A − gold_B)/T), sampled with a fixed seed; ties count ½);
- for every model but the reference, 95% intervals (``interval_level``) on what the comparison
  rests on: ``gold_gain`` and ``proxy_gain`` (the model's mean minus the reference's, a paired
  bootstrap over the prompts: ``tether.eval.intervals``) and ``win_rate_interval``;
- alignment tax: perplexity on held-out general text and accuracy on a small
  multiple-choice set shipped with tether, for every model (compare with the reference);
- with ``safety=`` (a function returning ``{harm, over_refusal, helpfulness}`` per response, e.g.
  ``tether.tasks.harmless:safety_metrics``): the helpful / harmless trade-off, harm rate over the prompts
  where harm applies (the harmful ones), over-refusal rate over those where it applies (the benign ones) and
  mean helpfulness, each with its bootstrap interval and, for every model but the reference, its change
  against the reference with a paired interval (``tether.eval.safety``);
- with ``cost=`` (a cost source, the same specs as reward: ``-1*runs/h/cost_rm`` for constrained PPO's cost) the
  cost side of a constrained run: each model's mean cost with its bootstrap interval, its paired change against the
  reference and, with ``cost_limit=`` d, whether that interval lies below d, above it or spans it
  (``tether.eval.cost``).

Writes ``eval.json`` (all numbers) and ``eval_samples.jsonl`` (each prompt with every model's
answer and its per-prompt gold, proxy, cost, KL, length, EOS, win outcome and safety values, so every number and
interval can be recomputed), which ``tether report`` turns into tables, and records its config in ``config.yaml``: in
``run_dir`` when given, else in the run directory the models share (``runs/tiny`` for
``models=[runs/tiny/sft,runs/tiny/ppo]``, so ``tether report run_dir=runs/tiny`` includes the
evaluation), else in ``runs/eval``. It prints every path it writes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
from pathlib import Path
from typing import Any

import torch
from rich.table import Table
from tqdm.auto import tqdm

from tether.config import ConfigError, EvalConfig, ModelConfig
from tether.data import DataError, load_prompt_dataset, load_records
from tether.engine.runtime import atomic_write_text, configure_cpu, limit, record_config, seed_everything
from tether.eval.cost import cost_change, cost_summary
from tether.eval.intervals import METHOD, bootstrap_mean, paired_bootstrap
from tether.eval.metrics import distinct_n, mean_token_entropy, perplexity, self_bleu, sequence_kl, win_rate
from tether.eval.safety import FIELDS as SAFETY_FIELDS
from tether.eval.safety import METRICS as SAFETY_METRICS
from tether.eval.safety import SafetySource, safety_changes, safety_summary
from tether.models.loading import load_causal_lm, load_tokenizer
from tether.rollout.generation import position_ids, response_logprobs
from tether.rollout.rewards import load_gold_source, load_reward_source
from tether.rollout.sampling import generation_of, scored_batches
from tether.utils.device import model_device
from tether.utils.logging import console

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "eval"
# a run_dir left at EvalConfig's default counts as not given (as quickstart's run_dir does for --tiny)
DEFAULT_RUN_DIR = EvalConfig().run_dir
FALLBACK_DIR = "runs/eval"  # not given, and the models share no directory


def model_name(path: str) -> str:
    return Path(path).name or str(path)


def model_names(paths: list[str]) -> dict[str, str]:
    """Each model's name in eval.json and the tables: its directory's name (``runs/q/ppo`` → ``ppo``), or, where
    two models share that name (``runs/a/grpo``, ``runs/b/grpo``), as many trailing path parts as tell them apart
    (``a/grpo``, ``b/grpo``), so no model's numbers overwrite another's."""
    def tail(path: str, k: int) -> str:
        parts = Path(path).parts
        return "/".join(parts[-k:]) if parts else str(path)

    names: dict[str, str] = {}
    for path in paths:
        k = 1
        while any(tail(other, k) == tail(path, k) for other in paths if other != path) and k < len(Path(path).parts):
            k += 1
        names[path] = tail(path, k) if Path(path).parts else str(path)
    if len(set(names.values())) < len(names):
        raise ConfigError(f"models: {', '.join(paths)} name the same model twice")
    return names


def output_dir(cfg: EvalConfig) -> Path:
    """Where eval writes: ``run_dir`` when given; else the directory the models share (``runs/tiny`` for
    ``runs/tiny/sft`` and ``runs/tiny/ppo``: the run directory ``tether report`` reads); else runs/eval."""
    if cfg.run_dir and cfg.run_dir != DEFAULT_RUN_DIR:
        return Path(cfg.run_dir)
    paths = [Path(m) for m in cfg.models]
    if paths and all(p.is_dir() for p in paths) and len({p.resolve().parent for p in paths}) == 1:
        return paths[0].parent
    return Path(FALLBACK_DIR)


@torch.no_grad()
def sample_responses(model, tokenizer, prompts, cfg: EvalConfig, reference, reward_source, gold_source,
                     safety_source: SafetySource | None = None, cost_source=None) -> dict:
    """Answer every prompt once; proxy, gold, cost and KL per response, and its safety values with
    ``safety_source``."""
    out: dict[str, list] = {"responses": [], "proxy": [], "gold": [], "cost": [], "kl": [], "entropy": [],
                            "length": [], "eos": [], "safety": []}
    sources = {"proxy": reward_source, "gold": gold_source, "cost": cost_source}
    for batch in scored_batches(model, tokenizer, prompts, generation_of(cfg), sources, cfg.batch_size,
                                seed=cfg.seed):
        rollout = batch.rollout
        out["responses"] += batch.responses
        for field in ("proxy", "gold", "cost"):
            out[field] += batch.scores.get(field, [])
        if safety_source is not None:
            ids = [r[m.bool()].tolist() for r, m in zip(rollout.response_ids, rollout.response_mask)]
            out["safety"] += safety_source.measure([p.prompt_text for p in batch.rows], batch.responses, ids,
                                                   [p.fields for p in batch.rows])
        logps, entropy = response_logprobs(model, rollout, cfg.temperature, return_entropy=True)
        ref_logps = response_logprobs(reference, rollout, cfg.temperature)
        out["kl"] += sequence_kl(logps, ref_logps, rollout.response_mask).tolist()
        out["entropy"] += mean_token_entropy(entropy, rollout.response_mask).tolist()
        out["length"] += rollout.response_lengths.tolist()
        out["eos"] += rollout.ended_with_eos.float().tolist()
    return out


@torch.no_grad()
def text_perplexity(model, tokenizer, paragraphs: list[str]) -> float:
    """Perplexity over all paragraphs (each scored on its own, next-token NLL in fp32)."""
    nll, count = 0.0, 0
    for text in paragraphs:
        ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]], device=model_device(model))
        if ids.shape[1] < 2:
            continue
        logits = model(input_ids=ids).logits[:, :-1].float()
        nll += float(torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1),
                                                       reduction="sum"))
        count += ids.shape[1] - 1
    return perplexity(nll, count)


@torch.no_grad()
def multiple_choice_accuracy(model, tokenizer, questions: list[dict]) -> float:
    """Pick the choice with the highest mean log-prob per token after "Question: …\\nAnswer:"."""
    correct = 0
    for q in questions:
        context = tokenizer(f"Question: {q['question']}\nAnswer:", add_special_tokens=False)["input_ids"]
        scores = []
        for choice in q["choices"]:
            option = tokenizer(" " + choice, add_special_tokens=False)["input_ids"]
            ids = torch.tensor([context + option], device=model_device(model))
            mask = torch.ones_like(ids)
            logits = model(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask)).logits[0].float()
            logps = torch.log_softmax(logits[len(context) - 1:-1], -1)
            scores.append(float(logps.gather(-1, torch.tensor(option, device=ids.device).unsqueeze(-1)).mean()))
        correct += int(max(range(len(scores)), key=scores.__getitem__) == q["answer"])
    return correct / len(questions)


def load_multiple_choice(path: str) -> list[dict]:
    questions = []
    for number, row in enumerate(load_records(path), start=1):
        choices = row.get("choices")
        if not isinstance(row.get("question"), str) or not isinstance(choices, list) or len(choices) < 2:
            raise DataError(f"{path} row {number}: expected 'question' (text) and 'choices' (a list of 2 or more)")
        if not isinstance(row.get("answer"), int) or not 0 <= row["answer"] < len(choices):
            raise DataError(f"{path} row {number}, field 'answer': must be the index of the right choice "
                            f"(0..{len(choices) - 1})")
        questions.append(row)
    return questions


def evaluator_outcomes(gold_a: list[float], gold_b: list[float], temperature: float, seed: int) -> list[float]:
    """The simulated low-noise evaluator's judgement of A against B on each prompt: 1 (A wins), 0 or ½ (tie).

    Each pair is one judgement: A wins with probability σ((gold_A − gold_B) / temperature),
    drawn with ``seed`` (one ``random.Random(seed).random()`` per pair that is not a tie, in order);
    equal gold rewards are a tie (½), so a model against itself scores ½ everywhere.
    """
    rng = random.Random(seed)
    outcomes = []
    for a, b in zip(gold_a, gold_b):
        if a == b:
            outcomes.append(0.5)
        else:
            outcomes.append(1.0 if rng.random() < 1 / (1 + math.exp(-(a - b) / temperature)) else 0.0)
    return outcomes


def evaluator_win_rate(gold_a: list[float], gold_b: list[float], temperature: float, seed: int) -> float:
    """Win-rate of A over B judged by the simulated evaluator: the mean of :func:`evaluator_outcomes`."""
    outcomes = evaluator_outcomes(gold_a, gold_b, temperature, seed)
    return win_rate(outcomes, [1.0 - o for o in outcomes])


def interval_settings(cfg: EvalConfig) -> dict[str, Any]:
    """eval.json's ``intervals`` entry: how every interval in it was computed."""
    return {"level": cfg.interval_level, "resamples": cfg.bootstrap_resamples, "method": METHOD, "seed": cfg.seed}


def comparison_intervals(values: dict[str, list[float]], reference: dict[str, list[float]], outcomes: list[float] | None,
                         cfg: EvalConfig, name: str = "") -> dict[str, dict[str, Any]]:
    """``gold_gain`` / ``proxy_gain`` / ``cost_change`` (paired bootstrap of this model's per-prompt gold / proxy /
    cost minus the reference's on the same prompts), ``win_rate_interval`` (bootstrap of the per-prompt win outcomes) and, with
    safety values, ``harm_rate_change`` / ``over_refusal_rate_change`` / ``helpfulness_change``
    (:func:`tether.eval.safety.safety_changes`), each as ``Interval.to_dict()``; a quantity is left out when it
    was not measured or cannot be bootstrapped (a non-finite reward: said on the console)."""
    settings = {"resamples": cfg.bootstrap_resamples, "seed": cfg.seed, "level": cfg.interval_level}
    out: dict[str, dict[str, Any]] = {}
    for key, field in (("gold_gain", "gold"), ("proxy_gain", "proxy")):
        if values.get(field) and reference.get(field):
            try:
                out[key] = paired_bootstrap(values[field], reference[field], **settings).to_dict()
            except ValueError as exc:
                console.print(f"[yellow]no interval for {name} {key}: {exc}[/]", soft_wrap=True)
    if values.get("cost") and reference.get("cost"):
        try:
            out.update(cost_change(values["cost"], reference["cost"], **settings))
        except ValueError as exc:
            console.print(f"[yellow]no interval for {name} cost_change: {exc}[/]", soft_wrap=True)
    if outcomes:
        out["win_rate_interval"] = bootstrap_mean(outcomes, **settings).to_dict()
    if values.get("safety") and reference.get("safety"):
        out.update(safety_changes(values["safety"], reference["safety"], **settings))
    return out


def _cost_summary(costs: list[float], cfg: EvalConfig, name: str) -> dict[str, Any]:
    """A model's cost_mean, cost_interval and cost_vs_limit (:func:`tether.eval.cost.cost_summary`); with a
    non-finite cost, the mean alone and a note on the console."""
    try:
        return cost_summary(costs, cfg.cost_limit, resamples=cfg.bootstrap_resamples, seed=cfg.seed,
                            level=cfg.interval_level)
    except ValueError as exc:
        console.print(f"[yellow]no interval for {name} cost: {exc}[/]", soft_wrap=True)
        return {"cost_mean": sum(costs) / len(costs) if costs else None}


def run_eval(cfg: EvalConfig) -> dict[str, Any]:
    if not cfg.models:
        raise DataError("models= is required: model directories to evaluate, e.g. models=[runs/q/sft,runs/q/ppo]")
    if not cfg.data.train_file:
        raise DataError("data.train_file= is required: held-out prompts (any format with a prompt)")
    if isinstance(cfg.bootstrap_resamples, bool) or cfg.bootstrap_resamples < 1:
        raise ConfigError(f"bootstrap_resamples: must be >= 1, got {cfg.bootstrap_resamples}")
    if not 0.0 < cfg.interval_level < 1.0:
        raise ConfigError(f"interval_level: must be in (0, 1) (0.95 for 95% intervals), got {cfg.interval_level}")
    if cfg.cost_limit is not None and not cfg.cost:
        raise ConfigError(f"cost_limit={cfg.cost_limit:g} bounds a cost: give cost= too (e.g. cost=-1*runs/h/cost_rm)")
    if cfg.cost_limit is not None and not math.isfinite(cfg.cost_limit):
        raise ConfigError(f"cost_limit: must be a finite number, got {cfg.cost_limit}")
    configure_cpu(cfg.num_threads)
    seed_everything(cfg.seed)
    run_dir = output_dir(cfg)
    reference_dir = cfg.reference or cfg.models[0]
    tokenizer = load_tokenizer(reference_dir, ModelConfig(name_or_path=reference_dir))
    prompts, report = load_prompt_dataset(cfg.data.train_file, tokenizer,
                                          max_prompt_length=cfg.data.max_length - cfg.max_new_tokens,
                                          chat_template=cfg.data.chat_template)
    console.print(report.summary())
    prompts = limit(prompts, cfg.max_prompts, "prompts")
    reward_source = (load_reward_source(cfg.reward, tokenizer, conservative_k=cfg.ensemble_k,
                                        chat_template=cfg.data.chat_template, precision=cfg.precision)
                     if cfg.reward else None)
    gold_source = load_gold_source(cfg.gold) if cfg.gold else None
    cost_source = (load_reward_source(cfg.cost, tokenizer, chat_template=cfg.data.chat_template, precision=cfg.precision)
                   if cfg.cost else None)
    safety_source = SafetySource(cfg.safety) if cfg.safety else None
    reference = load_causal_lm(ModelConfig(name_or_path=reference_dir, precision=cfg.precision),
                               pad_token_id=tokenizer.pad_token_id).eval()
    paragraphs = questions = None
    if cfg.alignment_tax:
        text_path = Path(cfg.general_text or ASSETS / "general_text.txt")
        if not text_path.is_file():
            raise DataError(f"general_text {text_path} does not exist")
        paragraphs = [p.strip() for p in text_path.read_text(encoding="utf-8").split("\n\n") if p.strip()]
        questions = load_multiple_choice(cfg.multiple_choice or str(ASSETS / "multiple_choice.jsonl"))
    results: dict[str, dict[str, Any]] = {}
    answers: dict[str, list[str]] = {}
    per_prompt: dict[str, dict[str, list]] = {}  # model → gold / proxy / cost / kl / ..., one value per prompt
    names = model_names(list(cfg.models))
    for path in tqdm(cfg.models, desc="evaluating models", unit="model", dynamic_ncols=True):
        name = names[path]
        model = reference if path == reference_dir else load_causal_lm(
            ModelConfig(name_or_path=path, precision=cfg.precision), pad_token_id=tokenizer.pad_token_id).eval()
        sampled = sample_responses(model, tokenizer, prompts, cfg, reference, reward_source, gold_source,
                                   safety_source, cost_source)
        mean = lambda xs: sum(xs) / len(xs) if xs else None  # noqa: E731
        row: dict[str, Any] = {
            "model": str(path), "proxy_mean": mean(sampled["proxy"]), "gold_mean": mean(sampled["gold"]),
            "kl_mean": mean(sampled["kl"]), "entropy_mean": mean(sampled["entropy"]),
            "length_mean": mean(sampled["length"]), "eos_rate": mean(sampled["eos"]),
            "distinct_1": distinct_n(sampled["responses"], 1), "distinct_2": distinct_n(sampled["responses"], 2),
            "self_bleu": self_bleu(sampled["responses"]) if len(sampled["responses"]) > 1 else None,
        }
        if cost_source is not None:
            row.update(_cost_summary(sampled["cost"], cfg, name))
        if safety_source is not None:
            row.update(safety_summary(sampled["safety"], resamples=cfg.bootstrap_resamples, seed=cfg.seed,
                                      level=cfg.interval_level))
        if paragraphs is not None:
            row["perplexity"] = text_perplexity(model, tokenizer, paragraphs)
            row["mc_accuracy"] = multiple_choice_accuracy(model, tokenizer, questions)
        results[name] = row
        answers[name] = sampled["responses"]
        per_prompt[name] = {k: sampled[k] for k in ("gold", "proxy", "cost", "kl", "entropy", "length", "eos",
                                                    "safety")}
        if model is not reference:
            del model
    ref_name = names.get(reference_dir, model_name(reference_dir))
    wins: dict[str, list[float]] = {}
    for name, row in results.items():
        if gold_source is not None and ref_name in per_prompt:
            wins[name] = evaluator_outcomes(per_prompt[name]["gold"], per_prompt[ref_name]["gold"],
                                            cfg.evaluator_temperature, cfg.seed)
            row["win_rate_vs_reference"] = win_rate(wins[name], [1.0 - o for o in wins[name]])
        if name != ref_name and ref_name in per_prompt:  # the reference against itself: no gain, no interval
            row.update(comparison_intervals(per_prompt[name], per_prompt[ref_name], wins.get(name), cfg, name))
        if paragraphs is not None and ref_name in results:
            row["perplexity_change"] = row["perplexity"] / results[ref_name]["perplexity"] - 1
            row["mc_accuracy_change"] = row["mc_accuracy"] - results[ref_name]["mc_accuracy"]
    summary = {"reference": ref_name, "prompts": len(prompts), "reward": cfg.reward, "gold": cfg.gold,
               "safety": cfg.safety, "cost": cfg.cost, "cost_limit": cfg.cost_limit, "temperature": cfg.temperature,
               "max_new_tokens": cfg.max_new_tokens,
               "intervals": interval_settings(cfg), "models": results}
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "eval.json", json.dumps(summary, indent=2) + "\n")
    atomic_write_text(run_dir / "eval_samples.jsonl", "".join(
        json.dumps(sample_row(p.prompt_text, i, answers, per_prompt, wins), ensure_ascii=False) + "\n"
        for i, p in enumerate(prompts)))
    record_config(run_dir, "eval", dataclasses.replace(cfg, run_dir=str(run_dir)))
    for table in eval_tables(summary, console.width):
        console.print(table)
    for name, what in (("eval.json", "every number"), ("eval_samples.jsonl", "each prompt with every model's answer"),
                       ("config.yaml", "section eval: the resolved config")):
        console.print(f"wrote {run_dir / name} ({what})", soft_wrap=True)  # (a path is never broken across lines)
    console.print(f"the page to read: tether report run_dir={run_dir}", soft_wrap=True)
    return summary


def sample_row(prompt: str, i: int, answers: dict[str, list[str]], per_prompt: dict[str, dict[str, list]],
               wins: dict[str, list[float]]) -> dict[str, Any]:
    """One line of eval_samples.jsonl: the prompt, every model's answer (``responses``) and, per model, that
    answer's ``gold``, ``proxy``, ``cost``, ``kl``, ``entropy``, ``length`` and ``eos``, its evaluator outcome against
    the reference (``win_vs_reference``: 1 / ½ / 0) and its safety values ``harm``, ``over_refusal`` and ``helpfulness`` (null
    where not applicable); a quantity that was not measured is left out."""
    row: dict[str, Any] = {"prompt": prompt, "responses": {n: a[i] for n, a in answers.items()}}
    for field in ("gold", "proxy", "cost", "kl", "entropy", "length", "eos"):
        values = {n: v[field][i] for n, v in per_prompt.items() if v.get(field)}
        if values:
            row[field] = values
    for field in SAFETY_FIELDS:
        values = {n: v["safety"][i][field] for n, v in per_prompt.items() if v.get("safety")}
        if values:
            row[field] = values
    if wins:
        row["win_vs_reference"] = {n: w[i] for n, w in wins.items()}
    return row


def table_rows(level: float = 0.95) -> list[tuple[str, str, str]]:
    """The rows of the printed table, (label, eval.json key, how to show it): ``value`` a number, ``gain`` a signed
    estimate, ``interval`` a signed interval, ``rate`` an interval of a rate. One metric per row, one model per
    column, so it reads at 80 columns."""
    interval = f"  {level * 100:g}% interval"
    return [("proxy reward", "proxy_mean", "value"), ("proxy gain vs ref", "proxy_gain", "gain"),
            (interval, "proxy_gain", "interval"),
            ("gold reward", "gold_mean", "value"), ("gold gain vs ref", "gold_gain", "gain"),
            (interval, "gold_gain", "interval"), ("KL to reference", "kl_mean", "value"),
            ("entropy (nats/token)", "entropy_mean", "value"),
            ("win-rate vs reference", "win_rate_vs_reference", "value"), (interval, "win_rate_interval", "rate"),
            ("length (tokens)", "length_mean", "value"), ("EOS rate", "eos_rate", "value"),
            ("distinct-2", "distinct_2", "value"), ("self-BLEU", "self_bleu", "value"),
            ("perplexity", "perplexity", "value"), ("MC accuracy", "mc_accuracy", "value")]


TABLE_ROWS = table_rows()


def safety_table_rows(level: float = 0.95) -> list[tuple[str, str, str]]:
    """The rows of the printed helpful / harmless table (``safety=``), as :func:`table_rows`: per metric its mean,
    interval and number of prompts (``n``), then its change against the reference and that change's interval."""
    interval = f"  {level * 100:g}% interval"
    rows = []
    for label, (mean, spread, change) in zip(("harm rate", "over-refusal rate", "helpfulness"),
                                             SAFETY_METRICS.values()):
        rows += [(label, mean, "value"), (interval, spread, "rate"), ("  prompts", spread, "n"),
                 ("  change vs ref", change, "gain"), (interval, change, "interval")]
    return rows


def cost_table_rows(level: float = 0.95) -> list[tuple[str, str, str]]:
    """The rows of the printed cost table (``cost=``), as :func:`safety_table_rows`, then where the cost's interval
    lies against the bound (``cost_limit=``)."""
    interval = f"  {level * 100:g}% interval"
    return [("mean cost", "cost_mean", "value"), (interval, "cost_interval", "interval"),
            ("  prompts", "cost_interval", "n"), ("  change vs ref", "cost_change", "gain"),
            (interval, "cost_change", "interval"), ("interval vs bound", "cost_vs_limit", "text")]


def table_cell(value: Any, how: str) -> str:
    """A cell of the printed table: '0.500', '+0.162', '[+0.05, +0.27]', '[0.38, 0.62]', '48' (``n``), 'below'
    (``text``); '–' when absent."""
    if value is None:
        return "–"
    if how == "value":
        return f"{value:.3f}"
    if how == "text":
        return str(value)
    if not isinstance(value, dict):
        return "–"
    if how == "n":
        return str(value["n"])
    if how == "gain":
        return f"{value['estimate']:+.3f}"
    sign = "+" if how == "interval" else ""
    return f"[{value['low']:{sign}.2f}, {value['high']:{sign}.2f}]"


def eval_tables(summary: dict[str, Any], width: int) -> list[Table]:
    """The evaluation as tables of metric rows × model columns, as many models per table as fit ``width``.
    A row of gains or intervals appears when some model has it (not in an eval.json from before intervals). With
    a cost (``cost=``) and with safety metrics (``safety=``), the cost and the helpful / harmless trade-off follow in
    tables of their own."""
    level = (summary.get("intervals") or {}).get("level", 0.95)
    models = summary["models"]
    rows = [(label, key, how) for label, key, how in table_rows(level)
            if how == "value" or any(isinstance(m.get(key), dict) for m in models.values())]
    title = f"held-out evaluation on {summary['prompts']} prompts (reference: {summary['reference']})"
    tables = metric_tables(models, rows, title, width)
    cost_rows = [(label, key, how) for label, key, how in cost_table_rows(level)
                 if any(m.get(key) is not None for m in models.values())]
    if cost_rows:
        bound = summary.get("cost_limit")
        title = f"cost {summary.get('cost')}" + (f", bound d = {bound:g}" if isinstance(bound, (int, float)) else "")
        tables += metric_tables(models, cost_rows, f"{title} (reference: {summary['reference']})", width)
    safety_rows = [(label, key, how) for label, key, how in safety_table_rows(level)
                   if any(m.get(key) is not None for m in models.values())]
    if safety_rows:
        title = f"helpful / harmless trade-off (reference: {summary['reference']})"
        tables += metric_tables(models, safety_rows, title, width)
    return tables


def metric_tables(models: dict[str, dict[str, Any]], rows: list[tuple[str, str, str]], title: str,
                  width: int) -> list[Table]:
    """``rows`` (label, eval.json key, how) × one column per model, split into as many tables as ``width`` needs."""
    cells = {name: [table_cell(row.get(key), how) for _, key, how in rows] for name, row in models.items()}
    label_width = max(len(label) for label, _, _ in rows) + 4  # rich adds a space either side and a border
    used = label_width
    groups: list[list[str]] = [[]]
    for name, column in cells.items():
        needed = max(len(name), *map(len, column)) + 3
        if groups[-1] and used + needed > width:
            groups.append([])
            used = label_width
        groups[-1].append(name)
        used += needed
    tables = []
    for group in groups:
        table = Table(title=title)
        table.add_column("metric", no_wrap=True)
        for name in group:
            table.add_column(name, justify="right", overflow="fold")
        for i, (label, _, _) in enumerate(rows):
            table.add_row(label, *[cells[name][i] for name in group])
        tables.append(table)
    return tables
