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

import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from tether.algos.advantages import (
    broadcast_to_tokens,
    grpo_advantages,
    reinforce_pp_advantages,
    returns_to_go,
    rloo_advantages,
)
from tether.algos.kl import kl_penalty
from tether.algos.losses.ppo import aggregate, aggregate_parts, policy_loss
from tether.algos.masked import masked_whiten_across
from tether.algos.rewards import kl_shaped_rewards
from tether.config import GRPOConfig, to_dict
from tether.data import collate_prompts
from tether.engine.loop import adamw
from tether.engine.runtime import configure_cpu, load_generation_prompts, prepare_run, seed_everything
from tether.eval.verdict import end_of_run_line
from tether.models.loading import apply_lora, disable_dropout, load_causal_lm, load_tokenizer, save_model
from tether.recipes.ppo import _prompt_batches, _subset, make_heldout, rollout_logprobs
from tether.recipes.roles import generator_for, open_roles, reference_for, reward_for
from tether.rollout.backends import Generator, TransformersGenerator, sampler_gap, timed_sync
from tether.rollout.generation import GenerationConfig, row_seeds
from tether.rollout.placement import start_logprobs, start_score
from tether.utils.checkpoint import checkpoint_root, load_checkpoint, save_checkpoint
from tether.utils.distributed import Dist
from tether.utils.logging import console
from tether.utils.resume import resume_point
from tether.utils.signals import StopRequested, graceful_stop, resume_message


@dataclass
class GRPOResult:
    model_dir: Path
    iterations: int
    history: list[dict]
    stopped_early: str | None = None
    alarms: list[dict] = field(default_factory=list)


def sequence_advantages(cfg: GRPOConfig, scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor,
                        dist: Dist | None = None) -> torch.Tensor:
    """Token advantages (B, T) for the configured estimator (KL-in-reward applied where configured).

    Group baselines need only the group (a process holds whole groups); REINFORCE++ whitens over the
    batch of all processes."""
    if cfg.advantage == "reinforce_pp":
        token_rewards = kl_shaped_rewards(scores, kl, mask, cfg.kl_coef)
        if dist is not None and dist.enabled:
            return masked_whiten_across(returns_to_go(token_rewards, mask), mask, dist.reducer)
        return reinforce_pp_advantages(token_rewards, mask)
    if cfg.kl_in_reward:
        scores = scores - cfg.kl_coef * (kl * mask).sum(-1)
    if cfg.advantage == "rloo":
        per_sequence = rloo_advantages(scores, cfg.group_size)
    else:
        per_sequence = grpo_advantages(scores, cfg.group_size, scale_by_std=cfg.scale_by_std)
    return broadcast_to_tokens(per_sequence, mask)


def single_on_policy_step(cfg: GRPOConfig, batch: int, dist: Dist | None = None) -> bool:
    """One gradient step on the fresh rollout, with KL as a loss term: the old log-probs equal the training
    forward's (detached), so the separate no-grad forward is skipped (the ratio is exactly 1, as it should)."""
    return (cfg.update_epochs == 1 and (dist or Dist()).share(cfg.minibatch_size) >= batch and not cfg.kl_in_reward
            and cfg.advantage != "reinforce_pp")


@torch.no_grad()
def make_experience(cfg: GRPOConfig, policy, ref_model, reward_source, tokenizer, prompts,
                    seeds: list[int] | None = None, dist: Dist | None = None,
                    generator: Generator | None = None) -> tuple[dict, dict]:
    """Stages 1-4 for this process's prompts: K responses each (row-seeded when ``seeds``) from ``generator``
    (default: the policy's own ``generate``), scores, log-probs, advantages. A reward or reference in a Ray actor
    starts on the rollout before the policy's old log-probs and runs beside them."""
    generator = generator or TransformersGenerator(policy)
    mark = time.time()
    grouped = [p for p in prompts for _ in range(cfg.group_size)]  # K consecutive samples per prompt
    batch = collate_prompts(grouped, tokenizer.pad_token_id)
    rollout = generator.generate(
        batch["input_ids"], batch["attention_mask"],
        GenerationConfig(cfg.max_new_tokens, cfg.temperature, cfg.top_p, min_new_tokens=cfg.min_new_tokens),
        tokenizer.eos_token_id, tokenizer.pad_token_id, seeds=seeds)
    generate_time = time.time() - mark
    responses = [tokenizer.decode(r[m.bool()], skip_special_tokens=True)
                 for r, m in zip(rollout.response_ids, rollout.response_mask)]
    scoring = start_score(reward_source, rollout, [p.prompt_text for p in grouped], responses)
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
    scores = raw_scores - cfg.missing_eos_penalty * (~rollout.ended_with_eos).float()
    # (when the old log-probs are deferred to the update, KL is not needed here: it is a loss term)
    kl = torch.zeros_like(ref_logps) if reuse else kl_penalty(old_logps, ref_logps, "k1") * mask
    advantages = sequence_advantages(cfg, scores, kl, mask, dist)
    groups = scores.view(-1, cfg.group_size)
    metrics = {
        "reward/score_mean": float(raw_scores.mean()), "reward/proxy_mean": float(scores.mean()),
        "reward/group_std_mean": float(groups.std(-1).mean()),
        "reward/zero_std_groups": float((groups.std(-1) == 0).float().mean()),
        "objective/kl": float(kl.sum(-1).mean()), "objective/kl_coef": cfg.kl_coef,
        "response/length_mean": float(mask.sum(-1).float().mean()),
        "response/eos_frac": float(rollout.ended_with_eos.float().mean()),
        **sampler_gap(rollout, old_logps),
        "time/generate": generate_time, "time/experience": time.time() - mark,
    }
    return {"rollout": rollout, "old_logps": old_logps, "ref_logps": ref_logps, "advantages": advantages}, metrics


SUMMED_METRICS = ("policy/loss", "policy/kl_loss")  # each process holds its share of the global loss


def grpo_update(cfg: GRPOConfig, policy, optimizer, experience: dict, train_policy=None,
                dist: Dist | None = None) -> dict:
    """Stage 5: clipped-surrogate steps over minibatches (``train_policy``: the DDP-wrapped policy, if any).

    In a data-parallel run every process divides its share of the loss by the denominator of the whole
    minibatch (summed over processes), and DDP's gradient average is undone by the factor world_size, so
    the step equals one process's step on the union of the minibatches."""
    dist = dist or Dist()
    train_policy = train_policy if train_policy is not None else policy
    rollout = experience["rollout"]
    n = rollout.prompt_ids.shape[0]
    size = dist.share(cfg.minibatch_size)  # minibatch_size is global
    sums: dict[str, float] = {}
    count = 0
    for _ in range(cfg.update_epochs):
        order = torch.randperm(n)
        for start in range(0, n, size):
            idx = order[start:start + size]
            mini = _subset(rollout, idx)
            mask = mini.response_mask
            denominator = None
            if dist.enabled:  # the loss of the whole (global) minibatch
                own = aggregate_parts(mask.float(), mask, cfg.loss_aggregation, cfg.max_new_tokens)[1]
                denominator = dist.sum({"d": float(own)})["d"]
            logps = rollout_logprobs(cfg, train_policy, mini)
            deferred = experience["old_logps"] is None
            old = logps.detach() if deferred else experience["old_logps"][idx]
            loss, metrics = policy_loss(logps, old, experience["advantages"][idx], mask, cfg.clip_range,
                                        aggregation=cfg.loss_aggregation, max_length=cfg.max_new_tokens,
                                        denominator=denominator)
            if deferred:  # the rollout's KL to the reference and the sampler's gap, from this forward
                metrics["objective/kl"] = (kl_penalty(old, experience["ref_logps"][idx], "k1") * mask).sum(-1).mean()
                metrics.update(sampler_gap(mini, old))
            if cfg.kl_coef > 0 and not cfg.kl_in_reward and cfg.advantage != "reinforce_pp":
                kl_term = aggregate(kl_penalty(logps, experience["ref_logps"][idx], "k3"), mask, cfg.loss_aggregation,
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
    dist = Dist.current()
    dist.require_divisible("prompts_per_iteration", cfg.prompts_per_iteration)
    run_dir, logger = prepare_run(cfg, cfg.name)
    configure_cpu(cfg.num_threads)
    seed_everything(cfg.seed)
    tokenizer = load_tokenizer(cfg.model.name_or_path, cfg.model)
    prompts = load_generation_prompts(cfg, tokenizer)
    roles = open_roles(cfg)  # Ray actors for the placed roles (placement.backend=ray), else None
    reward_source = reward_for(cfg, tokenizer, roles)
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
    ckpt_root = checkpoint_root(run_dir, cfg.name)
    start = 0
    run_config = to_dict(cfg)  # (in every checkpoint: a later run resumes only the same run, see tether.utils.resume)
    ckpt = resume_point(ckpt_root, run_dir / cfg.name, run_config, cfg.resume, cfg.name, "resume", logger)
    if ckpt is not None:
        state = load_checkpoint(ckpt, policy, optimizer, None)
        start = int(state["iteration"])
        if heldout is not None and "heldout" in state:
            heldout.monitor.load_state_dict(state["heldout"])
        console.print(f"[green]{cfg.name}: resumed from {ckpt.path} (iteration {start}/{cfg.num_iterations})[/]")
    logger.discard_after(start if ckpt is not None else -1)  # iterations after the checkpoint are logged again
    generator = generator_for(cfg, policy, tokenizer, run_dir, roles)  # after a resume: the resumed weights
    history: list[dict] = []
    stopped_early = None
    iteration = start
    bar = tqdm(total=cfg.num_iterations, initial=start, desc=f"{cfg.name} ({cfg.advantage})", unit="iter",
               dynamic_ncols=True, disable=not dist.is_main)
    meta = {"recipe": "grpo", "advantage": cfg.advantage, "base_model": cfg.model.name_or_path, "reward": cfg.reward}
    state = {"iteration": start}
    with graceful_stop() as stop:
        try:
            if heldout is not None and start == 0:  # the reference point every later one is compared with
                logger.log(heldout.step(policy, ref_model, 0, run_dir, cfg.name, tokenizer, meta)[0], 0)
            for iteration in range(start, cfg.num_iterations):
                mark = time.time()
                chosen = _prompt_batches(len(prompts), cfg.prompts_per_iteration, cfg.seed, iteration)
                mine = dist.shard_evenly(list(range(len(chosen))))  # this process's prompts, whole groups
                seeds = row_seeds(cfg.seed, iteration, [j * cfg.group_size + k for j in mine
                                                        for k in range(cfg.group_size)]) if seeded else None
                experience, metrics = make_experience(cfg, policy, ref_model, reward_source, tokenizer,
                                                      [prompts[chosen[j]] for j in mine], seeds, dist, generator)
                metrics = dist.combine(metrics)  # equal shares: the mean over processes
                metrics.update(grpo_update(cfg, policy, optimizer, experience, train_policy, dist))
                metrics.update(timed_sync(generator, policy))
                metrics["time/iteration"] = time.time() - mark
                fired = []
                if heldout is not None and heldout.due(iteration + 1, cfg.num_iterations):
                    heldout_metrics, fired = heldout.step(policy, ref_model, iteration + 1, run_dir, cfg.name, tokenizer,
                                                          meta)
                    metrics.update(heldout_metrics)
                if dist.any(bool(fired)) and not fired:  # (all processes see the same point; this keeps them together)
                    fired = [{"message": "the reward-hacking alarm fired on another process"}]
                logger.log(metrics, iteration + 1)
                history.append(metrics)
                bar.update(1)
                bar.set_postfix({"score": f"{metrics['reward/score_mean']:.3g}", "kl": f"{metrics['objective/kl']:.3g}",
                                 "len": f"{metrics['response/length_mean']:.3g}"})
                state = {"iteration": iteration + 1}
                if heldout is not None:
                    state["heldout"] = heldout.monitor.state_dict()
                if fired and cfg.heldout.stop_on_alarm:
                    stopped_early = f"reward-hacking alarm at iteration {iteration + 1}: {fired[0]['message']}"
                    console.print(f"[bold red]stopping:[/] {stopped_early} (heldout.stop_on_alarm=true)")
                    iteration += 1
                    break
                if metrics["objective/kl"] > cfg.kl_limit:
                    stopped_early = (f"mean KL per response {metrics['objective/kl']:.1f} nats exceeded kl_limit="
                                     f"{cfg.kl_limit} at iteration {iteration + 1}; raise kl_coef / lower learning_rate")
                    console.print(f"[bold red]stopping:[/] {stopped_early}")
                    iteration += 1
                    break
                if dist.any(stop.requested) and iteration + 1 < cfg.num_iterations:  # a safe point: save, then stop
                    signum = stop.signal or signal.SIGTERM
                    saved = save_checkpoint(ckpt_root, iteration + 1, policy, optimizer, None, state, config=run_config)
                    raise StopRequested(signum, resume_message(cfg.name, str(saved), iteration + 1, signum))
                if cfg.save_every and (iteration + 1) % cfg.save_every == 0 and iteration + 1 < cfg.num_iterations:
                    save_checkpoint(ckpt_root, iteration + 1, policy, optimizer, None, state, config=run_config)
            else:
                iteration = cfg.num_iterations
            if iteration > start:
                save_checkpoint(ckpt_root, iteration, policy, optimizer, None, {**state, "iteration": iteration},
                                config=run_config)
        finally:
            bar.close()
            logger.close()
            if roles is not None:
                roles.close()
    out = save_model(policy, tokenizer, run_dir / cfg.name,
                     {**meta, "iterations": iteration, "stopped_early": stopped_early,
                      "config": to_dict(cfg)}, merge_lora=cfg.model.lora.merge_on_save)
    console.print(f"[bold green]{cfg.advantage} done[/]: policy → {out}  ({iteration} iterations)")
    console.print(end_of_run_line(cfg.name, heldout.monitor.state_dict() if heldout is not None else None),
                  soft_wrap=True)  # one line, in a log too
    return GRPOResult(out, iteration, history, stopped_early, heldout.monitor.events if heldout else [])
