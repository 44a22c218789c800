"""Best-of-N sampling (``tether bon``) and rejection-sampling fine-tuning (``tether rejection-sample``).

Best-of-N: sample N responses per prompt and return the one the reward ranks highest. Its
distance from the policy is known in closed form, KL = log N − (N−1)/N, which makes it the
reference point of the reward-vs-KL frontier (Gao et al. 2022).

Rejection sampling (Llama 2): each round, sample N per prompt from the current policy,
keep the best response (optionally only above a threshold), write them as an SFT dataset
and fine-tune the policy on it; the next round samples from the fine-tuned policy.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tether.config import BestOfNConfig, ModelConfig, RejectionSamplingConfig, SFTConfig, to_dict
from tether.engine.runtime import atomic_write_text, configure_cpu, load_generation_prompts, record_config, seed_everything
from tether.models.loading import load_causal_lm, load_tokenizer
from tether.rollout.best_of_n import best_of_n_kl, sample_and_score
from tether.rollout.rewards import load_reward_source
from tether.rollout.sampling import generation_of
from tether.utils.distributed import Dist
from tether.utils.logging import MetricsLogger, console
from tether.utils.resume import (
    NOT_THE_RESULT,
    aside_name,
    config_diff,
    describe_diff,
    has_logs,
    move_logs,
    refuse_or_warn,
    resume_mode,
)


def _jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def run_best_of_n(cfg: BestOfNConfig) -> dict[str, Any]:
    configure_cpu(cfg.num_threads)
    seed_everything(cfg.seed)
    tokenizer = load_tokenizer(cfg.model.name_or_path, cfg.model)
    prompts = load_generation_prompts(cfg, tokenizer, cfg.max_prompts)
    reward_source = load_reward_source(cfg.reward, tokenizer, conservative_k=cfg.ensemble_k,
                                       chat_template=cfg.data.chat_template, precision=cfg.model.precision)
    policy = load_causal_lm(cfg.model, seed=cfg.seed, pad_token_id=tokenizer.pad_token_id)
    sampled = sample_and_score(policy, tokenizer, reward_source, prompts, cfg.n,
                               generation_of(cfg), cfg.batch_size,
                               desc=f"best-of-{cfg.n}")
    rows = [{"prompt": s.prompt.prompt_text, "response": s.responses[s.best], "score": s.scores[s.best],
             "scores": s.scores, "n": cfg.n} for s in sampled]
    summary = {
        "n": cfg.n, "prompts": len(rows), "kl_best_of_n": best_of_n_kl(cfg.n),
        "score_best_mean": sum(r["score"] for r in rows) / len(rows),
        "score_sample_mean": sum(sum(s.scores) for s in sampled) / (len(sampled) * cfg.n),
    }
    output = Path(cfg.output)
    atomic_write_text(output, _jsonl(rows))
    atomic_write_text(output.with_suffix(".summary.json"), json.dumps(summary, indent=2) + "\n")
    console.print(f"best-of-{cfg.n}: mean best score {summary['score_best_mean']:.4g} vs a single sample "
                  f"{summary['score_sample_mean']:.4g}; KL(best-of-N ‖ policy) = log N − (N−1)/N = "
                  f"{summary['kl_best_of_n']:.3f} nats → {output}")
    return summary


@dataclass
class RejectionResult:
    model_dir: Path
    rounds: list[dict]


def run_rejection_sampling(cfg: RejectionSamplingConfig) -> RejectionResult:
    from tether.recipes.sft import train_sft

    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    record_config(run_dir, "rejection-sample", cfg)
    seed_everything(cfg.seed)
    tokenizer = load_tokenizer(cfg.model.name_or_path, cfg.model)
    prompts = load_generation_prompts(cfg, tokenizer, cfg.max_prompts)
    reward_source = load_reward_source(cfg.reward, tokenizer, conservative_k=cfg.ensemble_k,
                                       chat_template=cfg.data.chat_template, precision=cfg.model.precision)
    logger = MetricsLogger(run_dir, "rejection-sample", list(cfg.train.report_to))
    if resume_mode(cfg.train.resume) == "never":
        _start_afresh(run_dir, logger)
    model_cfg = copy.deepcopy(cfg.model)
    history = []
    for round_index in range(1, cfg.rounds + 1):
        round_dir = run_dir / f"round-{round_index}"
        record = _finished_round(round_dir)
        if record is not None:  # done in an earlier run: resume after it (sampling is reseeded each round)
            _check_round(cfg, round_dir, record)
            console.print(f"[green]round {round_index}: already done ({record['model']}); skipping[/]")
            model_cfg = _round_model(cfg, record["model"])
            history.append(record)
            continue
        policy = load_causal_lm(model_cfg, seed=cfg.seed, pad_token_id=tokenizer.pad_token_id)
        sampled = sample_and_score(policy, tokenizer, reward_source, prompts, cfg.n,
                                   generation_of(cfg), cfg.batch_size,
                                   desc=f"round {round_index}: sampling")
        del policy
        kept = [s for s in sampled if cfg.threshold is None or s.scores[s.best] >= cfg.threshold]
        rows = [{"prompt": s.prompt.prompt_text, "completion": s.responses[s.best], "score": s.scores[s.best],
                 "scores": s.scores} for s in kept if s.responses[s.best].strip()]
        metrics = {"reward/sample_mean": sum(sum(s.scores) for s in sampled) / (len(sampled) * cfg.n),
                   "reward/best_mean": sum(s.scores[s.best] for s in sampled) / len(sampled),
                   "rejection/kept": len(rows), "rejection/prompts": len(sampled)}
        logger.log(metrics, round_index)
        console.print(f"round {round_index}: kept {len(rows)} of {len(sampled)} prompts' best responses "
                      f"(mean best score {metrics['reward/best_mean']:.4g}, mean sample {metrics['reward/sample_mean']:.4g})")
        if not rows:
            console.print("[yellow]no response passed the threshold; stopping[/]")
            break
        data_file = round_dir / "best.jsonl"
        atomic_write_text(data_file, _jsonl(rows))
        Dist.current().barrier()  # (data-parallel fine-tuning: every process reads what the main one wrote)
        sft_cfg = SFTConfig(run_dir=str(round_dir), name="model", model=model_cfg,
                            data=_with_file(cfg.data, data_file), train=cfg.train)
        result = train_sft(sft_cfg)
        model_cfg = _round_model(cfg, str(result.model_dir))
        history.append({**metrics, "model": str(result.model_dir)})
        atomic_write_text(round_dir / ROUND_MARKER,  # the round is done, and with which settings
                          json.dumps({**history[-1], "config": to_dict(cfg)}, indent=2, default=str) + "\n")
        Dist.current().barrier()
    logger.close()
    final = Path(model_cfg.name_or_path)
    atomic_write_text(run_dir / "rounds.json", json.dumps(history, indent=2) + "\n")
    console.print(f"[bold green]rejection sampling done[/]: {len(history)} rounds, final policy → {final}")
    return RejectionResult(final, history)


ROUND_MARKER = "round.json"


def _finished_round(round_dir: Path) -> dict | None:
    """The record of a round an earlier run finished (marker and fine-tuned model on disk), else None."""
    marker, model_dir = round_dir / ROUND_MARKER, round_dir / "model"
    if not marker.is_file() or not (model_dir / "config.json").is_file():
        return None
    try:
        record = json.loads(marker.read_text())
    except ValueError:
        return None
    return {**record, "model": str(model_dir)}


def _check_round(cfg: RejectionSamplingConfig, round_dir: Path, record: dict) -> None:
    """A finished round made with other settings stops the run (train.resume=auto) or is kept (force); more
    ``rounds`` extend a run. Takes the recorded config out of ``record``."""
    recorded = record.pop("config", None)
    diff = config_diff(recorded, to_dict(cfg), NOT_THE_RESULT | {"rounds"}) if recorded is not None else []
    if diff:
        refuse_or_warn(diff, resume_mode(cfg.train.resume),
                       f"rejection-sample: {round_dir} was made with another config ({describe_diff(diff)}); set "
                       "train.resume=never to start afresh (the earlier rounds are moved aside) or "
                       "train.resume=force to keep the finished rounds",
                       f"train.resume=force: keeping {round_dir} although the config differs ({describe_diff(diff)})")


def _start_afresh(run_dir: Path, logger: MetricsLogger) -> None:
    """train.resume=never: the earlier rounds, rounds.json and this stage's metric records move to
    ``<run_dir>/rejection-sample.old-<time>/``, so no finished round is skipped and no two runs mix."""
    old = sorted(run_dir.glob("round-*")) + ([run_dir / "rounds.json"] if (run_dir / "rounds.json").exists() else [])
    if Dist.current().is_main and (old or has_logs(logger)):
        aside = aside_name(run_dir / "rejection-sample")
        aside.mkdir(parents=True)
        for path in old:
            path.rename(aside / path.name)
        move_logs(logger, aside)
        console.print(f"[yellow]rejection-sample: train.resume=never: starting afresh; the earlier rounds are in {aside}[/]")
    Dist.current().barrier()


def _round_model(cfg: RejectionSamplingConfig, model_dir: str) -> ModelConfig:
    """The policy the next round samples from and fine-tunes: this round's model."""
    return ModelConfig(name_or_path=model_dir, dtype=cfg.model.dtype, precision=cfg.model.precision,
                       trust_remote_code=cfg.model.trust_remote_code,
                       lora=copy.deepcopy(cfg.model.lora))


def _with_file(data, path: Path):
    out = copy.deepcopy(data)
    out.train_file, out.eval_file, out.eval_fraction = str(path), None, 0.0
    return out
