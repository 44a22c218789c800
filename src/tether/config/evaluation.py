"""Configs of the commands that measure trained models: scoring rows (`tether score`), held-out evaluation
(`tether eval`), the reward-vs-KL frontier (`tether frontier`) and the HTML report (`tether report`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from tether.config.fields import NON_NEGATIVE, POSITIVE, doc_field
from tether.config.online import PPOConfig
from tether.config.sections import DataConfig, ensemble_k_field
from tether.config.supervised import PreferenceConfig


@dataclass
class ScoreConfig:
    """Score rows with a trained reward model (`tether score`)."""

    model: str = doc_field("", "Reward model directory (or a comma-separated list: an ensemble).")
    input: str = doc_field("", "Rows to score: prompt/response, prompt/completion, or prompt/chosen/rejected.")
    output: str = doc_field("", "Where to write the scored jsonl (default: <input stem>.scored.jsonl).")
    batch_size: int = doc_field(8, "Rows per forward pass.", bounds=POSITIVE)
    max_length: int = doc_field(1024, "Longer rows are truncated from the left (counted and reported).", bounds=POSITIVE)
    chat_template: Literal["auto", "always", "never"] = doc_field(
        "auto", "As in data.chat_template; 'auto' formats rows as the reward model was trained (the data.chat_template "
        "its tether.json records), and as 'auto' in data.chat_template for a model without one.")
    ensemble_k: float = doc_field(1.0, "Conservative score = mean - k * std when several models are given.", bounds=NON_NEGATIVE)
    precision: Literal["fp32", "bf16-mixed", "bf16", "auto"] = doc_field(
        "fp32", "Numeric precision of every model this loads, as model.precision.")


@dataclass
class EvalConfig:
    """Evaluate policies on held-out prompts: reward, gold, KL, diversity, win-rate, alignment tax, and the helpful /
    harmless trade-off (`tether eval`)."""

    run_dir: str = doc_field("runs/eval", "Where eval.json and eval_samples.jsonl are written.")
    models: list = doc_field([], "Model directories to evaluate, e.g. [runs/q/sft,runs/q/ppo,runs/q/dpo].")
    reference: str = doc_field("", "Reference policy for KL and win-rate (empty = the first of models).")
    reward: str = doc_field("", "Proxy reward: reward model directory (or ensemble) or module:function (empty = skip).")
    ensemble_k: float | None = ensemble_k_field()
    gold: str = doc_field("tether.tasks.helpful:gold_reward",
                          "Gold / held-out reward: module:function(prompts, responses, ids), verify:<checker> (math, "
                              "code, format) or a weighted sum of them (empty = skip).")
    safety: str = doc_field(
        "", "Helpful / harmless trade-off: module:function(prompts, responses, ids[, rows]) -> one dict per response "
            "{harm, over_refusal, helpfulness}, None where not applicable (e.g. tether.tasks.harmless:safety_metrics; "
            "empty = skip).")
    cost: str = doc_field(
        "", "Cost (harm) of each answer, the same specs as reward (e.g. -1*runs/h/cost_rm: minus a harmless reward "
            "model's score, as constrained PPO's cost): its mean with a bootstrap interval and the change against the "
            "reference (empty = skip).")
    cost_limit: float | None = doc_field(
        None, "The bound d of the constraint E[cost] <= d (as ppo.cost_limit): says whether each model's cost interval "
              "lies below it, above it or spans it (empty = no bound; needs cost).")
    data: DataConfig = doc_field(DataConfig(max_length=512), "Held-out prompts (any format with a prompt).")
    max_prompts: int = doc_field(32, "Evaluate on at most this many prompts (0 = all).", bounds=NON_NEGATIVE)
    max_new_tokens: int = doc_field(48, "Longest response.", bounds=POSITIVE)
    temperature: float = doc_field(1.0, "Sampling temperature (KL is measured at the same temperature).", bounds=POSITIVE)
    batch_size: int = doc_field(16, "Prompts per generation batch.", bounds=POSITIVE)
    evaluator_temperature: float = doc_field(
        0.1, "Noise of the held-out evaluator judging win-rates: P(A wins) = σ((gold_A − gold_B) / this).")
    general_text: str = doc_field("", "Held-out general text for perplexity (empty = the packaged paragraphs).")
    multiple_choice: str = doc_field("", "Multiple-choice jsonl {question, choices, answer} (empty = packaged set).")
    alignment_tax: bool = doc_field(True, "Measure perplexity and multiple-choice accuracy before vs after.")
    bootstrap_resamples: int = doc_field(
        2000, "Resamples of the paired bootstrap over prompts behind every interval (gold_gain, proxy_gain, "
              "win_rate_interval, the safety metrics); drawn with seed.")
    interval_level: float = doc_field(0.95, "Confidence level of those intervals, in (0, 1): 0.95 = 95% intervals.")
    seed: int = doc_field(0, "Sampling, evaluator and bootstrap seed.")
    num_threads: int = doc_field(0, "torch CPU threads (0 = default).", bounds=NON_NEGATIVE)
    precision: Literal["fp32", "bf16-mixed", "bf16", "auto"] = doc_field(
        "fp32", "Numeric precision of every model this loads, as model.precision.")


@dataclass
class FrontierConfig:
    """Reward-vs-KL frontier: PPO at several fixed β and best-of-N at several N, proxy and gold vs KL (`tether frontier`)."""

    RENAMED = {"betas": "kl_coefs", "dpo_betas": "dpo_kl_coefs"}  # old key → new key (read, with a note)

    run_dir: str = doc_field("runs/frontier", "Run directory: ppo-beta-<β>/ per PPO run, frontier.json, report.html.")
    combine: list = doc_field(
        [], "Instead of a sweep: frontier run directories to put side by side (e.g. one per seed, each with its "
            "frontier.json): each setting's KL and gains over its own start, mean / min / max over the runs, and the "
            "fits pooled over them → <run_dir>/frontier_seeds.json and frontier_seeds-{gold,proxy}.svg.")
    ppo: PPOConfig = doc_field(PPOConfig(), "The PPO run to sweep (model, reward, data, iterations ...); each point "
                                            "overrides kl_coef and turns adaptive_kl off.")
    kl_coefs: list = doc_field([0.5, 0.1, 0.02], "Fixed β (kl_coef) per PPO run, strong to weak leash ([] = no PPO "
                                                 "points; was betas).")
    ns: list = doc_field([1, 2, 4, 8, 16], "Best-of-N sizes from the starting policy ([] = no best-of-N points).")
    dpo: PreferenceConfig = doc_field(PreferenceConfig(), "The DPO run to sweep (data.train_file = the preferences, "
                                                          "train.*, loss ...); it starts from ppo.model, which is "
                                                          "also its reference.")
    dpo_kl_coefs: list = doc_field([], "β (kl_coef) per DPO run ([] = no DPO points), e.g. [0.5, 0.1]; was dpo_betas.")
    gold: str = doc_field("tether.tasks.helpful:gold_reward", "Gold / held-out reward, module:function.")
    prompts_file: str = doc_field("", "Held-out prompts (empty = ppo.data.eval_file).")
    max_prompts: int = doc_field(32, "Held-out prompts per point.", bounds=NON_NEGATIVE)
    batch_size: int = doc_field(16, "Prompts per generation batch (best-of-N: each sampled max(ns) times).", bounds=POSITIVE)
    seed: int = doc_field(0, "Sampling seed of the evaluation.")


@dataclass
class ReportConfig:
    """Write a self-contained report.html for a run directory (`tether report`)."""

    run_dir: str = doc_field("runs/quickstart", "Run directory to report on (metrics.jsonl, *_heldout.json, ...).")
    output: str = doc_field("", "Where to write the report (default <run_dir>/report.html).")
    title: str = doc_field("", "Report title (default: the run directory's name).")
    max_samples: int = doc_field(12, "Prompts shown in the side-by-side answer table.")
    compare: list[str] = doc_field([], "Other run directories whose RL training curves are drawn on shared charts "
                                         "with this run's (same stage names; e.g. a constrained and a weighted PPO "
                                         "run), in the report and as <run_dir>/compare/<stage>-<metric>.svg.")
