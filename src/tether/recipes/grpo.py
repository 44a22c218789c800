"""Critic-free RL with K samples per prompt: GRPO, RLOO and REINFORCE++.

Each iteration, top to bottom:
  1. generate   — K responses for each of ``prompts_per_iteration`` prompts
  2. score      — reward source; penalty for a missing EOS
  3. log-probs  — old policy and reference log-probs of the sampled tokens (fp32)
  4. advantages — grpo: (s − mean_group)/std_group (Dr. GRPO: no std); rloo: s − mean of the
                  other K−1; reinforce_pp: returns of the KL-shaped token rewards, whitened
                  over the whole batch. No value model.
  5. update     — clipped surrogate over minibatches, KL either in the reward (k1) or as a
                  k3 loss term, token losses aggregated as configured
  6. control    — KL guard, metrics, checkpoint
"""

from __future__ import annotations

import time

import torch

from tether.algos.advantages import advantage_estimator
from tether.algos.kl import kl_penalty
from tether.algos.losses.ppo import aggregate, aggregate_parts, policy_loss_spec
from tether.algos.rewards import soft_overlong_penalty
from tether.config import GRPOConfig, to_dict
from tether.data import collate_prompts
from tether.engine.loop import adamw
from tether.engine.rl import (
    OnlineResult,
    OnlineRun,
    make_heldout,
    prompt_batches,
    registered,
    rollout_logprobs,
    run_online_rl,
    start_online_run,
)
from tether.engine.roles import generator_for, reference_for
from tether.eval.verdict import end_of_run_line
from tether.models.loading import apply_lora, disable_dropout, load_causal_lm, save_model
from tether.rollout.backends import Generator, TransformersGenerator, sampler_gap
from tether.rollout.experience import Experience
from tether.rollout.generation import row_seeds
from tether.rollout.placement import start_logprobs, start_score
from tether.rollout.rewards import outcome_metrics
from tether.rollout.sampling import decode_responses, generation_of
from tether.utils.distributed import Dist
from tether.utils.logging import console

GRPOResult = OnlineResult  # (the name it had)


def estimator_name(cfg: GRPOConfig) -> str:
    """The registered estimator ``cfg`` asks for (``advantage=grpo scale_by_std=false`` is ``dr_grpo``)."""
    return "dr_grpo" if cfg.advantage == "grpo" and not cfg.scale_by_std else cfg.advantage


def sequence_advantages(cfg: GRPOConfig, scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor,
                        dist: Dist | None = None) -> torch.Tensor:
    """Token advantages (B, T) from the configured estimator (:data:`tether.algos.advantages.ADVANTAGE_ESTIMATORS`),
    with the KL in the reward where configured."""
    estimator = advantage_estimator(estimator_name(cfg))
    return estimator.fn(scores, kl, mask, cfg.group_size, cfg.kl_coef, cfg.kl_in_reward,
                        dist.reducer if dist is not None else None)


def kl_in_loss(cfg: GRPOConfig) -> bool:
    """Whether the KL is a loss term (k3, GRPO's choice), not part of the reward."""
    return not (cfg.kl_in_reward or advantage_estimator(estimator_name(cfg)).kl_always_in_reward)


def single_on_policy_step(cfg: GRPOConfig, batch: int, dist: Dist | None = None) -> bool:
    """One gradient step on the fresh rollout, with KL as a loss term: the old log-probs equal the training
    forward's (detached), so the separate no-grad forward is skipped (the ratio is exactly 1, as it should)."""
    return cfg.update_epochs == 1 and (dist or Dist()).share(cfg.minibatch_size) >= batch and kl_in_loss(cfg)


@torch.no_grad()
def make_experience(cfg: GRPOConfig, policy, ref_model, reward_source, tokenizer, prompts,
                    seeds: list[int] | None = None, dist: Dist | None = None,
                    generator: Generator | None = None) -> tuple[Experience, dict]:
    """Stages 1-4 for this process's prompts: K responses each (row-seeded when ``seeds``) from ``generator``
    (default: the policy's own ``generate``), scores, log-probs, advantages. A reward or reference in a Ray actor
    starts on the rollout before the policy's old log-probs and runs beside them."""
    generator = generator or TransformersGenerator(policy)
    mark = time.time()
    grouped = [p for p in prompts for _ in range(cfg.group_size)]  # K consecutive samples per prompt
    batch = collate_prompts(grouped, tokenizer.pad_token_id)
    rollout = generator.generate(
        batch["input_ids"], batch["attention_mask"],
        generation_of(cfg),
        tokenizer.eos_token_id, tokenizer.pad_token_id, seeds=seeds)
    generate_time = time.time() - mark
    responses = decode_responses(tokenizer, rollout)
    scoring = start_score(reward_source, rollout, [p.prompt_text for p in grouped], responses,
                          [p.fields for p in grouped])
    remote_ref = start_logprobs(ref_model, rollout, cfg.temperature, cfg.model.padding_free, cfg.model.share_prefixes)
    mask = rollout.response_mask
    reuse = single_on_policy_step(cfg, len(grouped), dist)
    old_logps = None if reuse else rollout_logprobs(cfg, policy, rollout)
    if remote_ref is not None:
        ref_logps = remote_ref()
    elif ref_model is None:
        with policy.disable_adapter():
            ref_logps = rollout_logprobs(cfg, policy, rollout)
    else:
        ref_logps = rollout_logprobs(cfg, ref_model, rollout)
    raw_scores = scoring()
    overlong = soft_overlong_penalty(mask.sum(-1), cfg.max_new_tokens, cfg.overlong_buffer, cfg.overlong_penalty)
    scores = raw_scores - cfg.missing_eos_penalty * (~rollout.ended_with_eos).float() + overlong
    # (when the old log-probs are deferred to the update, KL is not needed here: it is a loss term)
    kl = torch.zeros_like(ref_logps) if reuse else kl_penalty(old_logps, ref_logps, "k1") * mask
    advantages = sequence_advantages(cfg, scores, kl, mask, dist)
    groups = scores.view(-1, cfg.group_size)
    metrics = {
        "reward/score_mean": float(raw_scores.mean()), "reward/proxy_mean": float(scores.mean()),
        "reward/group_std_mean": float(groups.std(-1).mean()),
        "reward/zero_std_groups": float((groups.std(-1) == 0).float().mean()),
        "reward/overlong_penalty_mean": float(overlong.mean()),
        "objective/kl": float(kl.sum(-1).mean()), "objective/kl_coef": cfg.kl_coef,
        "response/length_mean": float(mask.sum(-1).float().mean()),
        "response/eos_frac": float(rollout.ended_with_eos.float().mean()),
        **sampler_gap(rollout, old_logps), **outcome_metrics(reward_source),
        "time/generate": generate_time, "time/experience": time.time() - mark,
    }
    return Experience(rollout, ref_logps, old_logps, advantages, responses=responses), metrics


SUMMED_METRICS = ("policy/loss", "policy/kl_loss")  # each process holds its share of the global loss


def grpo_update(cfg: GRPOConfig, policy, optimizer, experience: Experience, train_policy=None,
                dist: Dist | None = None) -> dict:
    """Stage 5: clipped-surrogate steps over minibatches (``train_policy``: the DDP-wrapped policy, if any).

    In a data-parallel run every process divides its share of the loss by the denominator of the whole
    minibatch (summed over processes), and DDP's gradient average is undone by the factor world_size, so
    the step equals one process's step on the union of the minibatches."""
    dist = dist or Dist()
    train_policy = train_policy if train_policy is not None else policy
    rollout = experience.rollout
    n = rollout.prompt_ids.shape[0]
    size = dist.share(cfg.minibatch_size)  # minibatch_size is global
    spec = policy_loss_spec(cfg.loss)
    aggregation = spec.aggregation or cfg.loss_aggregation  # (the loss's own where it is defined with one)
    high = cfg.clip_range_high if cfg.clip_range_high is not None else spec.clip_range_high
    sums: dict[str, float] = {}
    count = 0
    for _ in range(cfg.update_epochs):
        order = torch.randperm(n)
        for start in range(0, n, size):
            idx = order[start:start + size]
            mini = rollout.select(idx)
            mask = mini.response_mask
            denominator = None
            if dist.enabled:  # the loss of the whole (global) minibatch
                own = aggregate_parts(mask.float(), mask, aggregation, cfg.max_new_tokens)[1]
                denominator = dist.sum({"d": float(own)})["d"]
            logps = rollout_logprobs(cfg, train_policy, mini)
            deferred = experience.deferred
            old = logps.detach() if deferred else experience.old_logps[idx]
            loss, metrics = spec.fn(logps, old, experience.advantages[idx], mask, clip_range=cfg.clip_range,
                                    clip_range_high=high, aggregation=aggregation, max_length=cfg.max_new_tokens,
                                    denominator=denominator)
            if deferred:  # the rollout's KL to the reference and the sampler's gap, from this forward
                metrics["objective/kl"] = (kl_penalty(old, experience.ref_logps[idx], "k1") * mask).sum(-1).mean()
                metrics.update(sampler_gap(mini, old))
            if cfg.kl_coef > 0 and kl_in_loss(cfg):
                kl_term = aggregate(kl_penalty(logps, experience.ref_logps[idx], "k3"), mask, cfg.loss_aggregation,
                                    cfg.max_new_tokens, denominator)
                loss = loss + cfg.kl_coef * kl_term
                metrics["policy/kl_loss"] = kl_term.detach()
            optimizer.zero_grad(set_to_none=True)
            (loss * dist.world_size).backward()  # DDP averages gradients over processes: undo it, exactly
            torch.nn.utils.clip_grad_norm_([p for p in policy.parameters() if p.requires_grad], cfg.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)  # the gradients are not kept through the next rollout / forward
            for key, value in metrics.items():
                sums[key] = sums.get(key, 0.0) + float(value)
            count += 1
    return dist.combine({k: v / count for k, v in sums.items()}, summed=SUMMED_METRICS)


def train_grpo(cfg: GRPOConfig) -> GRPOResult:
    registered(policy_loss_spec, cfg.loss, "loss")  # unknown names stop here, before anything is loaded
    registered(advantage_estimator, estimator_name(cfg), "advantage")
    setup = start_online_run(cfg, "prompts_per_iteration")
    dist, run_dir, logger, tokenizer, prompts = setup.dist, setup.run_dir, setup.logger, setup.tokenizer, setup.prompts
    roles, reward_source = setup.roles, setup.reward_source
    # no dropout: the rollout's log-probs, the reference's and the update's are one distribution's (TRL, OpenRLHF)
    policy = apply_lora(disable_dropout(load_causal_lm(cfg.model, seed=cfg.seed, pad_token_id=tokenizer.pad_token_id)),
                        cfg.model.lora, "CAUSAL_LM")
    ref_model = reference_for(cfg, policy, tokenizer, roles)
    # DDP in a data-parallel run (generation uses the plain policy); under FSDP both are sharded in place
    train_policy = dist.wrap(policy)
    ref_model = dist.shard_frozen(ref_model)
    optimizer = adamw([p for p in policy.parameters() if p.requires_grad], lr=cfg.learning_rate, eps=1e-5)
    heldout = make_heldout(cfg, tokenizer, reward_source)
    seeded = cfg.row_seeded_sampling or dist.enabled

    def iterate(iteration: int, generator: Generator) -> dict:
        chosen = prompt_batches(len(prompts), cfg.prompts_per_iteration, cfg.seed, iteration)
        mine = dist.shard_evenly(list(range(len(chosen))))  # this process's prompts, whole groups
        seeds = row_seeds(cfg.seed, iteration, [j * cfg.group_size + k for j in mine
                                                for k in range(cfg.group_size)]) if seeded else None
        experience, metrics = make_experience(cfg, policy, ref_model, reward_source, tokenizer,
                                              [prompts[chosen[j]] for j in mine], seeds, dist, generator)
        metrics = dist.combine(metrics)  # equal shares: the mean over processes
        metrics.update(grpo_update(cfg, policy, optimizer, experience, train_policy, dist))
        return metrics

    meta = {"recipe": "grpo", "advantage": cfg.advantage, "base_model": cfg.model.name_or_path, "reward": cfg.reward}
    run = OnlineRun(
        policy, policy, optimizer, iterate=iterate, meta=meta, description=f"{cfg.name} ({cfg.advantage})",
        make_generator=lambda: generator_for(cfg, policy, tokenizer, run_dir, roles),
        postfix=lambda m: {"score": f"{m['reward/score_mean']:.3g}", "kl": f"{m['objective/kl']:.3g}",
                           "len": f"{m['response/length_mean']:.3g}"},
        kl_advice="raise kl_coef / lower learning_rate",
        memory_advice="lower prompts_per_iteration, group_size or minibatch_size")
    outcome = run_online_rl(cfg, run, logger, tokenizer, ref_model, heldout, roles)
    out = save_model(policy, tokenizer, run_dir / cfg.name,
                     {**meta, "iterations": outcome.iterations, "stopped_early": outcome.stopped_early,
                      "config": to_dict(cfg)}, merge_lora=cfg.model.lora.merge_on_save)
    console.print(f"[bold green]{cfg.advantage} done[/]: policy → {out}  ({outcome.iterations} iterations)")
    console.print(end_of_run_line(cfg.name, outcome.heldout_state), soft_wrap=True)  # one line, in a log too
    return GRPOResult(out, outcome.iterations, outcome.history, outcome.stopped_early, outcome.alarms)
