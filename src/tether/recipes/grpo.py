"""Critic-free RL with K samples per prompt: GRPO, RLOO and REINFORCE++.

Each iteration, top to bottom:
  1. generate   — K responses for each of ``prompts_per_iteration`` prompts
  2. score      — reward source; penalty for a missing EOS; with a ``cost``, the cost source too, and the
                  normalised Lagrangian (r − λ·c)/(1 + λ) of the two (Safe RLHF), as in PPO
  3. log-probs  — old policy and reference log-probs of the sampled tokens (fp32)
  4. advantages — grpo: (s − mean_group)/std_group (Dr. GRPO: no std); rloo: s − mean of the
                  other K−1; reinforce_pp: returns of the KL-shaped token rewards, whitened
                  over the whole batch. No value model.
  5. update     — clipped surrogate over minibatches, KL either in the reward (k1) or as a
                  k3 loss term, token losses aggregated as configured
  6. control    — the dual step on λ (with a cost), KL guard, metrics, checkpoint
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from tether.algos.advantages import advantage_estimator
from tether.algos.constraint import constraint_metrics, lagrangian_scores
from tether.algos.kl import kl_penalty
from tether.algos.losses.ppo import aggregate, aggregate_parts, policy_loss_spec
from tether.algos.masked import masked_mean
from tether.algos.mismatch import corrected_advantages, loss_tokens
from tether.algos.rewards import soft_overlong_penalty
from tether.config import GRPOConfig, to_dict
from tether.config.validation import validate_constraint
from tether.data import collate_prompts
from tether.engine.loop import adamw
from tether.engine.rl import (
    Constraint,
    OnlineResult,
    OnlineRun,
    make_heldout,
    prompt_batches,
    registered,
    rollout_logprobs,
    run_online_rl,
    start_online_run,
    with_task,
)
from tether.engine.roles import generator_for, reference_for
from tether.errors import ConfigError
from tether.eval.verdict import end_of_run_line
from tether.models.loading import apply_lora, disable_dropout, load_causal_lm, save_model
from tether.rollout.backends import Generator, TransformersGenerator, sampler_gap
from tether.rollout.experience import Experience
from tether.rollout.generation import Rollout, concat_rollouts, response_logprobs, row_seeds
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


@dataclass
class SampledGroups:
    """K responses for each of a list of prompts, decoded and (once :meth:`score` is called) scored."""

    prompts: list  # each prompt K times, its samples consecutive
    rollout: Rollout
    responses: list[str]
    raw_scores: torch.Tensor | None = None  # the reward source's
    proxy: torch.Tensor | None = None  # the reward shaped: missing-EOS and overlong penalties
    overlong: torch.Tensor | None = None  # the soft overlong penalty in ``proxy``
    costs: torch.Tensor | None = None  # the cost source's (a constrained run), else None
    scores: torch.Tensor | None = None  # what the advantages see: ``proxy``, or with a cost the Lagrangian of the two

    SCORED = ("raw_scores", "proxy", "overlong", "costs", "scores")  # the per-response tensors

    def score(self, cfg: GRPOConfig, scoring, cost_scoring=None, multiplier: float = 0.0) -> SampledGroups:
        """Finish the scoring started for these responses: the reward (``scoring()``), shaped; with
        ``cost_scoring`` (a constrained run) the costs too, and the scores the normalised Lagrangian
        (proxy − λ·cost)/(1 + λ) at ``multiplier`` λ. The penalties shape the reward side only: a cut-off answer
        is a worse answer, not a harmful one, so it does not move λ."""
        self.raw_scores = scoring()
        self.overlong = soft_overlong_penalty(self.rollout.response_mask.sum(-1), cfg.max_new_tokens,
                                              cfg.overlong_buffer, cfg.overlong_penalty)
        self.proxy = self.raw_scores - cfg.missing_eos_penalty * (~self.rollout.ended_with_eos).float() + self.overlong
        self.costs = None if cost_scoring is None else cost_scoring().float()
        self.scores = self.proxy if self.costs is None else lagrangian_scores(self.proxy, self.costs, multiplier)
        return self

    def informative(self, group_size: int) -> torch.Tensor:
        """(groups,) bool: the groups whose scores are not all equal (a non-zero advantage somewhere)."""
        return self.scores.view(-1, group_size).std(-1) > 0

    def groups(self, which: torch.Tensor, group_size: int) -> SampledGroups:
        rows = (which.nonzero().squeeze(-1)[:, None] * group_size + torch.arange(group_size)).reshape(-1)
        picked = {name: None if getattr(self, name) is None else getattr(self, name)[rows] for name in self.SCORED}
        return SampledGroups([self.prompts[i] for i in rows.tolist()], self.rollout.select(rows),
                             [self.responses[i] for i in rows.tolist()], **picked)

    @classmethod
    def concat(cls, pieces: list[SampledGroups], pad_token_id: int) -> SampledGroups:
        joined = {name: None if getattr(pieces[0], name) is None else torch.cat([getattr(p, name) for p in pieces])
                  for name in cls.SCORED}
        return cls([p for piece in pieces for p in piece.prompts],
                   concat_rollouts([piece.rollout for piece in pieces], pad_token_id),
                   [r for piece in pieces for r in piece.responses], **joined)


def sample_groups(cfg: GRPOConfig, generator: Generator, tokenizer, prompts, seeds: list[int] | None
                  ) -> SampledGroups:
    """Stage 1: K responses for each of ``prompts`` (row-seeded when ``seeds``), decoded."""
    grouped = [p for p in prompts for _ in range(cfg.group_size)]  # K consecutive samples per prompt
    batch = collate_prompts(grouped, tokenizer.pad_token_id)
    rollout = generator.generate(batch["input_ids"], batch["attention_mask"], generation_of(cfg),
                                 tokenizer.eos_token_id, tokenizer.pad_token_id, seeds=seeds)
    return SampledGroups(grouped, rollout, decode_responses(tokenizer, rollout))


Scorer = Callable[[SampledGroups], Callable[[], SampledGroups]]  # start scoring → finish it (the groups, scored)


def scorer_of(cfg: GRPOConfig, reward_source, constraint: Constraint | None = None) -> Scorer:
    """Start scoring a round's responses with the reward (and the cost of a constrained run, at this iteration's λ;
    a reward on a Ray actor starts now, in its actor); the function returned finishes it."""
    def start(sampled: SampledGroups) -> Callable[[], SampledGroups]:
        args = ([p.prompt_text for p in sampled.prompts], sampled.responses, [p.fields for p in sampled.prompts])
        reward = start_score(reward_source, sampled.rollout, *args)
        if constraint is None:
            return lambda: sampled.score(cfg, reward)
        cost = start_score(constraint.source, sampled.rollout, *args)
        return lambda: sampled.score(cfg, reward, cost, constraint.value)
    return start


MorePrompts = Callable[[int], tuple[list, list[int] | None]]  # extra round r → (prompts, their row seeds)


def fill_with_informative_groups(cfg: GRPOConfig, first: SampledGroups, generator: Generator, tokenizer,
                                 scorer: Scorer, more_prompts: MorePrompts) -> tuple[SampledGroups, dict]:
    """DAPO's dynamic sampling: keep the groups of ``first`` whose scores differ, and sample the prompts of extra
    rounds (``more_prompts(r)``, r = 1 .. ``dynamic_sampling_max_rounds``) until as many groups as ``first`` had
    are kept; then the first that many. A batch that stays short after the last round trains on the groups it has
    (on ``first`` as it is, when none at all differ: every advantage is 0 then). → (the batch, its metrics)."""
    k, target = cfg.group_size, len(first.prompts) // cfg.group_size
    pieces, kept, rounds, dropped = [], 0, 0, 0
    sampled = first
    while True:
        informative = sampled.informative(k)
        dropped += int((~informative).sum())
        if informative.any():
            pieces.append(sampled.groups(informative, k))
            kept += int(informative.sum())
        if kept >= target or rounds >= cfg.dynamic_sampling_max_rounds:
            break
        rounds += 1
        prompts, seeds = more_prompts(rounds)
        sampled = scorer(sample_groups(cfg, generator, tokenizer, prompts, seeds))()
    metrics = {"sampling/extra_rounds": float(rounds), "sampling/dropped_groups": float(dropped),
               "sampling/trained_groups": float(min(kept, target) or target)}
    if not pieces:
        return first, metrics
    batch = SampledGroups.concat(pieces, tokenizer.pad_token_id)
    if kept > target:
        batch = batch.groups(torch.arange(kept) < target, k)
    return batch, metrics


@torch.no_grad()
def make_experience(cfg: GRPOConfig, policy, ref_model, reward_source, tokenizer, prompts,
                    seeds: list[int] | None = None, dist: Dist | None = None,
                    generator: Generator | None = None, more_prompts: MorePrompts | None = None,
                    constraint: Constraint | None = None) -> tuple[Experience, dict]:
    """Stages 1-4 for this process's prompts: K responses each (row-seeded when ``seeds``) from ``generator``
    (default: the policy's own ``generate``), scores, log-probs, advantages. A reward or reference in a Ray actor
    starts on the rollout before the policy's old log-probs and runs beside them. With ``dynamic_sampling``, groups
    whose scores are all equal are replaced by groups of ``more_prompts`` (see :func:`fill_with_informative_groups`;
    the reward metrics describe the first round, the policy as it samples). With a ``constraint`` each response's
    score is the normalised Lagrangian of its shaped reward and its cost at the constraint's λ, and the constraint's
    metrics are the first round's over every process (its mean cost is the dual step's estimate of E[cost])."""
    generator = generator or TransformersGenerator(policy)
    mark = time.time()
    sampled = sample_groups(cfg, generator, tokenizer, prompts, seeds)
    generate_time = time.time() - mark
    scorer = scorer_of(cfg, reward_source, constraint)
    finish_scoring = scorer(sampled)
    first, extra = sampled, {}  # (the reward metrics describe the first round)
    if cfg.dynamic_sampling:
        finish_scoring()
        verdicts = outcome_metrics(reward_source)
        sampled, extra = fill_with_informative_groups(cfg, first, generator, tokenizer, scorer,
                                                      more_prompts or (lambda r: (prompts, None)))
    rollout = sampled.rollout
    remote_ref = start_logprobs(ref_model, rollout, cfg.temperature, cfg.model.padding_free, cfg.model.share_prefixes)
    mask = rollout.response_mask
    reuse = single_on_policy_step(cfg, len(sampled.prompts), dist)
    old_logps = None if reuse else rollout_logprobs(cfg, policy, rollout)
    if remote_ref is not None:
        ref_logps = remote_ref()
    elif ref_model is None:
        with policy.disable_adapter():
            ref_logps = rollout_logprobs(cfg, policy, rollout)
    else:
        ref_logps = rollout_logprobs(cfg, ref_model, rollout)
    if not cfg.dynamic_sampling:
        finish_scoring()
        verdicts = outcome_metrics(reward_source)
    scores = sampled.scores
    # (when the old log-probs are deferred to the update, KL is not needed here: it is a loss term)
    kl = torch.zeros_like(ref_logps) if reuse else kl_penalty(old_logps, ref_logps, "k1") * mask
    advantages = sequence_advantages(cfg, scores, kl, mask, dist)
    groups = first.scores.view(-1, cfg.group_size)
    metrics = {
        "reward/score_mean": float(first.raw_scores.mean()), "reward/proxy_mean": float(first.proxy.mean()),
        "reward/group_std_mean": float(groups.std(-1).mean()),
        "reward/zero_std_groups": float((groups.std(-1) == 0).float().mean()),
        "reward/overlong_penalty_mean": float(first.overlong.mean()),
        "objective/kl": float(kl.sum(-1).mean()), "objective/kl_coef": cfg.kl_coef,
        "response/length_mean": float(mask.sum(-1).float().mean()),
        "response/eos_frac": float(rollout.ended_with_eos.float().mean()),
        **sampler_gap(rollout, old_logps), **verdicts, **extra,
        "time/generate": generate_time, "time/experience": time.time() - mark,
    }
    if constraint is not None:
        dist = dist or Dist()
        metrics.update(constraint_metrics(dist.all_gather(first.costs), dist.all_gather(first.scores),
                                          cfg.cost_limit, constraint.value))
    return Experience(rollout, ref_logps, old_logps, advantages, responses=sampled.responses), metrics


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
            logps, entropy = response_logprobs(train_policy, mini, cfg.temperature, return_entropy=True,
                                               padding_free=cfg.model.padding_free,
                                               share_prefixes=cfg.model.share_prefixes)
            deferred = experience.deferred
            old = logps.detach() if deferred else experience.old_logps[idx]
            advantages, kept, mismatch = corrected_advantages(old, mini.sampler_logps, experience.advantages[idx],
                                                              mask, cfg.mismatch_correction, cfg.mismatch_threshold)
            if cfg.mask_truncated:  # DAPO's overlong filtering: cut responses leave the loss
                kept = kept * mini.ended_with_eos[:, None].to(kept.dtype)
            kept, advantages = loss_tokens(kept, mask, advantages)
            denominator = kl_denominator = None
            if dist.enabled:  # the loss of the whole (global) minibatch
                own = aggregate_parts(kept.float(), kept, aggregation, cfg.max_new_tokens)[1]
                whole = aggregate_parts(mask.float(), mask, cfg.loss_aggregation, cfg.max_new_tokens)[1]
                totals = dist.sum({"d": float(own), "kl": float(whole)})
                denominator, kl_denominator = totals["d"], totals["kl"]
            loss, metrics = spec.fn(logps, old, advantages, kept, clip_range=cfg.clip_range,
                                    clip_range_high=high, aggregation=aggregation, max_length=cfg.max_new_tokens,
                                    denominator=denominator, **spec.options_of(cfg))
            metrics.update(mismatch)
            metrics["objective/entropy"] = masked_mean(entropy.detach(), mask)  # (a metric; not in the loss)
            if deferred:  # the rollout's KL to the reference and the sampler's gap, from this forward
                metrics["objective/kl"] = (kl_penalty(old, experience.ref_logps[idx], "k1") * mask).sum(-1).mean()
                metrics.update(sampler_gap(mini, old))
            if cfg.kl_coef > 0 and kl_in_loss(cfg):
                kl_term = aggregate(kl_penalty(logps, experience.ref_logps[idx], "k3"), mask, cfg.loss_aggregation,
                                    cfg.max_new_tokens, kl_denominator)
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
    cfg = with_task(cfg)  # (a built-in task's prompts, reward and held-out gold, where left empty)
    registered(policy_loss_spec, cfg.loss, "loss")  # unknown names stop here, before anything is loaded
    registered(advantage_estimator, estimator_name(cfg), "advantage")
    if cfg.dynamic_sampling and Dist.current().enabled:
        raise ConfigError("dynamic_sampling runs in one process: each process would train on a different number of "
                          "groups, and the data-parallel steps would not line up")
    validate_constraint(cfg)  # (a config built in Python has not been through tether.config.validate)
    setup = start_online_run(cfg, "prompts_per_iteration")
    dist, run_dir, logger, tokenizer, prompts = setup.dist, setup.run_dir, setup.logger, setup.tokenizer, setup.prompts
    roles, reward_source = setup.roles, setup.reward_source
    constraint = Constraint.of(cfg, tokenizer)  # (None: an unconstrained run)
    # no dropout: the rollout's log-probs, the reference's and the update's are one distribution's (TRL, OpenRLHF)
    policy = apply_lora(disable_dropout(load_causal_lm(cfg.model, seed=cfg.seed, pad_token_id=tokenizer.pad_token_id)),
                        cfg.model.lora, "CAUSAL_LM")
    ref_model = reference_for(cfg, policy, tokenizer, roles)
    # DDP in a data-parallel run (generation uses the plain policy); under FSDP both are sharded in place
    train_policy = dist.wrap(policy)
    ref_model = dist.shard_frozen(ref_model)
    optimizer = adamw([p for p in policy.parameters() if p.requires_grad], lr=cfg.learning_rate, eps=1e-5)
    heldout = make_heldout(cfg, tokenizer, reward_source, None if constraint is None else constraint.source,
                           cfg.cost_limit)
    seeded = cfg.row_seeded_sampling or dist.enabled

    def round_prompts(iteration: int, extra_round: int) -> tuple[list, list[int] | None]:
        """The prompts (and row seeds) of an iteration's sampling round: round 0 the iteration's own, an extra round
        of dynamic sampling a batch from another shuffle (a pure function of iteration and round: resumable)."""
        chosen = prompt_batches(len(prompts), cfg.prompts_per_iteration, cfg.seed + 7919 * extra_round, iteration)
        mine = dist.shard_evenly(list(range(len(chosen))))  # this process's prompts, whole groups
        offset = extra_round * cfg.prompts_per_iteration * cfg.group_size
        seeds = row_seeds(cfg.seed, iteration, [offset + j * cfg.group_size + k for j in mine
                                                for k in range(cfg.group_size)]) if seeded else None
        return [prompts[chosen[j]] for j in mine], seeds

    def iterate(iteration: int, generator: Generator) -> dict:
        mine, seeds = round_prompts(iteration, 0)
        experience, metrics = make_experience(cfg, policy, ref_model, reward_source, tokenizer, mine, seeds, dist,
                                              generator, more_prompts=lambda r: round_prompts(iteration, r),
                                              constraint=constraint)
        metrics = dist.combine(metrics)  # equal shares: the mean over processes (the constraint's: already global)
        metrics.update(grpo_update(cfg, policy, optimizer, experience, train_policy, dist))
        if constraint is not None:  # the dual step: the next iteration's λ, from this iteration's mean cost
            constraint.step(metrics)
        return metrics

    def postfix(m: dict) -> dict:
        shown = {"score": f"{m['reward/score_mean']:.3g}", "kl": f"{m['objective/kl']:.3g}",
                 "len": f"{m['response/length_mean']:.3g}"}
        return shown if constraint is None else {**shown, **constraint.postfix(m)}

    meta = {"recipe": "grpo", "advantage": cfg.advantage, "base_model": cfg.model.name_or_path, "reward": cfg.reward,
            **({} if constraint is None else constraint.meta())}
    run = OnlineRun(
        policy, policy, optimizer, iterate=iterate, meta=meta, description=f"{cfg.name} ({cfg.advantage})",
        make_generator=lambda: generator_for(cfg, policy, tokenizer, run_dir, roles), postfix=postfix,
        state=dict if constraint is None else constraint.state,
        load_state=(lambda state: None) if constraint is None else constraint.load_state,
        kl_advice="raise kl_coef / lower learning_rate",
        memory_advice="lower prompts_per_iteration, group_size or minibatch_size")
    outcome = run_online_rl(cfg, run, logger, tokenizer, ref_model, heldout, roles)
    out = save_model(policy, tokenizer, run_dir / cfg.name,
                     {**meta, "iterations": outcome.iterations, "stopped_early": outcome.stopped_early,
                      "config": to_dict(cfg),
                      **({} if constraint is None else {"final_lagrange_multiplier": constraint.value})},
                     merge_lora=cfg.model.lora.merge_on_save)
    console.print(f"[bold green]{cfg.advantage} done[/]: policy → {out}  ({outcome.iterations} iterations)")
    console.print(end_of_run_line(cfg.name, outcome.heldout_state), soft_wrap=True)  # one line, in a log too
    return GRPOResult(out, outcome.iterations, outcome.history, outcome.stopped_early, outcome.alarms)
