"""PPO for language models under a KL leash to the frozen reference.

Each iteration, top to bottom:
  1. generate   — sample one response per prompt (left-padded prompts, stop at EOS)
  2. score      — reward source on prompt + response; penalty for a missing EOS; with a ``cost``, the cost source
                  too, and the normalised Lagrangian (r − λ·c)/(1 + λ) of the two (Safe RLHF)
  3. log-probs  — old policy and reference log-probs of the sampled tokens (fp32)
  4. values     — per-token values from the value model (initialised from the reward model)
  5. advantages — score normalised + clipped, placed on the last real token, per-token
                  −β·KL added; GAE; advantages whitened over response tokens
  6. update     — PPO epochs over minibatches: clipped policy loss (+ dual clip), clipped
                  value loss, entropy bonus, gradient clipping, early stop on approx KL
  7. control    — adaptive β (Ziegler et al. 2019), the dual step on λ (with a cost), KL guard, metrics, checkpoint
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import torch

from tether.algos.advantages import gae
from tether.algos.constraint import constraint_metrics, lagrangian_scores
from tether.algos.kl import AdaptiveKLController, FixedKLController, kl_penalty
from tether.algos.losses.ppo import POLICY_LOSSES, explained_variance, policy_loss_spec, value_loss
from tether.algos.masked import masked_mean, masked_whiten_across
from tether.algos.mismatch import corrected_advantages, loss_tokens
from tether.algos.rewards import RunningMoments, clip_scores, kl_shaped_rewards
from tether.config import ModelConfig, PPOConfig, to_dict
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
from tether.models.loading import apply_lora, disable_dropout, load_causal_lm, load_reward_model, save_model
from tether.models.reward import ensemble_members
from tether.rollout.backends import Generator, TransformersGenerator, sampler_gap
from tether.rollout.experience import Experience
from tether.rollout.generation import Rollout, position_ids, response_logprobs, row_seeds
from tether.rollout.placement import RemoteReward, start_logprobs, start_score
from tether.rollout.rewards import outcome_metrics, parse_weighted
from tether.rollout.sampling import decode_responses, generation_of
from tether.utils.distributed import Dist
from tether.utils.logging import console

PPOResult = OnlineResult  # (the name it had)


class PolicyAndValue(torch.nn.Module):
    """The two trained networks in one module, so one optimizer (two learning rates) and one checkpoint hold both."""

    def __init__(self, policy: torch.nn.Module, value: torch.nn.Module):
        super().__init__()
        self.policy = policy
        self.value = value

    def forward(self, rollout: Rollout, temperature: float, padding_free: bool = True,
                share_prefixes: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The update's forward of a minibatch, in one call (so DDP can wrap it): (logps, entropy, values), (B, R)."""
        logps, entropy = response_logprobs(self.policy, rollout, temperature, return_entropy=True,
                                           padding_free=padding_free, share_prefixes=share_prefixes)
        return logps, entropy, token_values(self.value, rollout)


def value_trunk(value_model) -> torch.nn.Module:
    """The transformer inside a sequence-classification model (everything but its ``score`` head)."""
    return getattr(value_model, value_model.base_model_prefix)


def token_values(value_model, rollout: Rollout) -> torch.Tensor:
    """V(state before response token t) → (B, R): the scalar head applied to every hidden state."""
    base = value_trunk(value_model)
    attention_mask = rollout.attention_mask
    hidden = base(input_ids=rollout.input_ids, attention_mask=attention_mask,
                  position_ids=position_ids(attention_mask)).last_hidden_state
    values = value_model.score(hidden).squeeze(-1).float()
    n_prompt = rollout.prompt_ids.shape[1]
    return values[:, n_prompt - 1:-1] * rollout.response_mask


def _value_init(cfg: PPOConfig) -> ModelConfig:
    first = parse_weighted(cfg.reward)[0][1] if ("+" in cfg.reward or "*" in cfg.reward) else cfg.reward
    first = first.split(",")[0].strip()
    source = cfg.value_model or (first if Path(first).is_dir() else None)
    if source:
        source = str(ensemble_members(source)[0])  # an ensemble directory: its first member
        return ModelConfig(name_or_path=source, trust_remote_code=cfg.model.trust_remote_code,
                           precision=cfg.model.precision)
    return copy.deepcopy(cfg.model)  # a function reward: start the value model from the policy


def single_on_policy_step(cfg: PPOConfig, batch: int, dist: Dist | None = None) -> bool:
    """One gradient step on the fresh rollout (one epoch, one minibatch): the old log-probs and old values equal
    the training forward's (detached), so the two separate no-grad forwards are skipped and the KL-shaped
    rewards, GAE and whitening are computed from the training forward instead. The ratio is exactly 1 and the
    value clip is inactive, as they are at the first step of any PPO update."""
    return cfg.ppo_epochs == 1 and (dist or Dist()).share(cfg.minibatch_size) >= batch


def shaped_advantages(cfg: PPOConfig, old_logps: torch.Tensor, ref_logps: torch.Tensor, values: torch.Tensor,
                      scores: torch.Tensor, mask: torch.Tensor, kl_coef: float,
                      dist: Dist) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stage 5: per-token KL-shaped rewards → GAE → (whitened) advantages. Returns (advantages (B, R),
    returns (B, R), the k1 KL of each response (B,))."""
    kl = kl_penalty(old_logps, ref_logps, cfg.kl_estimator) * mask
    rewards = kl_shaped_rewards(scores, kl, mask, kl_coef)
    advantages, returns = gae(rewards, values, mask, cfg.gamma, cfg.lam)
    if cfg.whiten_advantages:
        advantages = masked_whiten_across(advantages, mask, dist.reducer)
    return advantages, returns, (kl_penalty(old_logps, ref_logps, "k1") * mask).sum(-1)


@torch.no_grad()
def make_experience(cfg: PPOConfig, models: PolicyAndValue, ref_model, reward_source, tokenizer, prompts, kl_coef,
                    moments: RunningMoments, seeds: list[int] | None = None,
                    dist: Dist | None = None, generator: Generator | None = None, cost_source=None,
                    multiplier: float = 0.0) -> tuple[Experience, dict]:
    """Stages 1-5 for this process's prompts: a rollout with everything the update needs, and its metrics.

    ``generator``: the sampler (default: the policy's own ``generate``). A reward or reference in a Ray actor
    starts on the rollout before the policy's old log-probs and values, and runs beside them.

    ``cost_source`` (a constrained run): scored on the same prompts, responses and rows as the reward; each
    response's score is then the normalised Lagrangian (r̃ − λ·c)/(1 + λ) at ``multiplier`` λ, where r̃ is the
    reward less the missing-EOS penalty (the penalty shapes the reward side, never the cost, so a cut-off answer
    does not move λ), before the normalisation and clipping every score goes through.

    In a data-parallel run the score normaliser sees the scores of every process and advantages are
    whitened over every process's tokens, as one process holding the whole batch would do."""
    dist = dist or Dist()
    generator = generator or TransformersGenerator(models.policy)
    timings = {}
    mark = time.time()
    batch = collate_prompts(prompts, tokenizer.pad_token_id)
    gen = generation_of(cfg)
    rollout = generator.generate(batch["input_ids"], batch["attention_mask"], gen, tokenizer.eos_token_id,
                                 tokenizer.pad_token_id, seeds=seeds)
    timings["time/generate"] = time.time() - mark
    mark = time.time()
    responses = decode_responses(tokenizer, rollout)
    texts, rows = [p.prompt_text for p in prompts], [p.fields for p in prompts]
    scoring = start_score(reward_source, rollout, texts, responses, rows)
    cost_scoring = None if cost_source is None else start_score(cost_source, rollout, texts, responses, rows)

    def score() -> tuple[torch.Tensor, torch.Tensor | None]:  # (B,) rewards, (B,) costs or None
        return scoring(), None if cost_scoring is None else cost_scoring()

    remote_ref = start_logprobs(ref_model, rollout, cfg.temperature, cfg.model.padding_free, cfg.model.share_prefixes)
    overlapped = remote_ref is not None or isinstance(reward_source, RemoteReward)  # a role works in its actor
    if not overlapped:  # in this process: scored first, as the stages are listed
        raw_scores, raw_costs = score()
        timings["time/score"] = time.time() - mark
        mark = time.time()
    mask = rollout.response_mask
    deferred = single_on_policy_step(cfg, len(prompts), dist)  # then the update's forward gives both
    old_logps = None if deferred else rollout_logprobs(cfg, models.policy, rollout)
    if remote_ref is not None:
        ref_logps = remote_ref()
    elif ref_model is None:  # LoRA: the reference is the base with adapters disabled
        with models.policy.disable_adapter():
            ref_logps = rollout_logprobs(cfg, models.policy, rollout)
    else:
        ref_logps = rollout_logprobs(cfg, ref_model, rollout)
    values = None if deferred else token_values(models.value, rollout)
    if overlapped:
        raw_scores, raw_costs = score()
    proxy_scores = raw_scores - cfg.missing_eos_penalty * (~rollout.ended_with_eos).float()  # (the reward side)
    timings["time/score_logprobs_values" if overlapped else "time/logprobs_values"] = time.time() - mark
    all_raw_scores, all_proxy_scores = dist.all_gather(raw_scores.float()), dist.all_gather(proxy_scores.float())
    if raw_costs is None:
        scores, all_scores, constraint = proxy_scores, all_proxy_scores, {}
    else:  # the normalised Lagrangian at this iteration's λ, before the normalisation and clipping below
        all_costs = dist.all_gather(raw_costs.float())
        scores = lagrangian_scores(proxy_scores, raw_costs, multiplier)
        all_scores = lagrangian_scores(all_proxy_scores, all_costs, multiplier)
        constraint = constraint_metrics(all_costs, all_scores, cfg.cost_limit, multiplier)
    if cfg.normalize_scores:
        moments.update(all_scores)
        scores_used = moments.normalize(scores)
    else:
        scores_used = scores
    scores_used = clip_scores(scores_used, cfg.score_clip)
    experience = Experience(rollout, ref_logps, old_logps, old_values=values, scores=scores_used, kl_coef=kl_coef,
                            responses=responses)
    kl_metrics = {}
    if not deferred:
        experience.advantages, experience.returns, kl_per_response = shaped_advantages(
            cfg, old_logps, ref_logps, values, scores_used, mask, kl_coef, dist)
        kl_metrics = {"objective/kl": float(kl_per_response.mean()), **sampler_gap(rollout, old_logps)}
    metrics = {
        "reward/score_mean": float(all_raw_scores.mean()),
        "reward/score_std": float(all_raw_scores.std()) if len(all_raw_scores) > 1 else 0.0,
        "reward/proxy_mean": float(all_proxy_scores.mean()), "reward/normalized_mean": float(scores_used.mean()),
        "objective/kl_coef": kl_coef, **kl_metrics,
        "response/length_mean": float(mask.sum(-1).float().mean()),
        "response/eos_frac": float(rollout.ended_with_eos.float().mean()),
        **outcome_metrics(reward_source), **timings, **constraint,
    }
    gathered = {"reward/score_mean", "reward/score_std", "reward/proxy_mean", "objective/kl_coef", *constraint}
    metrics.update(dist.combine({k: v for k, v in metrics.items() if k not in gathered}))
    return experience, metrics  # (objective/kl, when deferred, and objective/rlhf_reward: after the update)


SUMMED_METRICS = ("policy/loss", "value/loss", "objective/entropy")  # each process holds its share


def ppo_update(cfg: PPOConfig, models: PolicyAndValue, optimizer, experience: Experience, train_models=None,
               dist: Dist | None = None) -> dict:
    """Stage 6: PPO epochs over minibatches of one rollout batch (``train_models``: the DDP-wrapped models).

    In a data-parallel run each process divides its token sums by the token count of the whole (global)
    minibatch and the early stop on approx KL is decided on the global value, so every process takes the
    same steps. ``approx_kl_stop``: the first minibatch whose approx KL(π_old‖π) exceeds it takes no step, and
    the update ends there (its remaining minibatches and epochs are skipped)."""
    dist = dist or Dist()
    train_models = train_models if train_models is not None else models
    rollout = experience.rollout
    n = rollout.prompt_ids.shape[0]
    size = dist.share(cfg.minibatch_size)
    sums: dict[str, float] = {}
    forwards = steps = 0  # minibatch forwards (the metrics average over them), optimizer steps taken
    spec = policy_loss_spec(cfg.loss)  # (token-level: the update's token mean, as PPO's own loss)
    high = cfg.clip_range_high if cfg.clip_range_high is not None else spec.clip_range_high
    stopped = False
    for _ in range(cfg.ppo_epochs):
        order = torch.randperm(n)
        for start in range(0, n, size):
            idx = order[start:start + size]
            mini = rollout.select(idx)
            mask = mini.response_mask
            tokens = dist.sum({"n": float(mask.sum())})["n"] if dist.enabled else None
            logps, entropy, values = train_models(mini, cfg.temperature, cfg.model.padding_free,
                                                  cfg.model.share_prefixes)
            if experience.deferred:  # one on-policy step: the rollout's stage 5 from this forward
                old_logps, old_values = logps.detach(), values.detach()
                advantages, returns, kl_per_response = shaped_advantages(
                    cfg, old_logps, experience.ref_logps[idx], old_values, experience.scores[idx], mask,
                    experience.kl_coef, dist)
                sums["objective/kl"] = float(kl_per_response.mean())
                sums.update(sampler_gap(mini, old_logps))
            else:
                old_logps, old_values = experience.old_logps[idx], experience.old_values[idx]
                advantages, returns = experience.advantages[idx], experience.returns[idx]
            advantages, pg_mask, mismatch = corrected_advantages(old_logps, mini.sampler_logps, advantages, mask,
                                                                 cfg.mismatch_correction, cfg.mismatch_threshold)
            pg_mask, advantages = loss_tokens(pg_mask, mask, advantages)
            dropping = dist.enabled and cfg.mismatch_correction != "none"  # (every process sums, or none does)
            pg_tokens = dist.sum({"n": float(pg_mask.sum())})["n"] if dropping else tokens
            pg_loss, pg_metrics = spec.fn(logps, old_logps, advantages, pg_mask, clip_range=cfg.clip_range,
                                          clip_range_high=high, dual_clip=cfg.dual_clip, denominator=pg_tokens,
                                          **spec.options_of(cfg))
            vf_loss, vf_metrics = value_loss(values, old_values, returns, mask, cfg.value_clip_range,
                                             denominator=tokens)
            # (has grad: the entropy bonus)
            entropy_mean = masked_mean(entropy, mask) if tokens is None else (entropy * mask).sum() / tokens
            loss = pg_loss + cfg.value_coef * vf_loss - cfg.entropy_coef * entropy_mean
            with torch.no_grad():
                ev = explained_variance(values, returns, mask)
            for key, value in {**pg_metrics, **vf_metrics, **mismatch, "objective/entropy": entropy_mean.detach(),
                               "value/explained_variance": ev}.items():
                sums[key] = sums.get(key, 0.0) + float(value)
            forwards += 1
            # early stop (Stable-Baselines3's target_kl): once this minibatch's policy has moved further than
            # approx_kl_stop from the sampling policy, take no step from it and end the whole update (every epoch)
            approx_kl = dist.combine({"kl": float(pg_metrics["policy/approx_kl"])})["kl"]
            if cfg.approx_kl_stop > 0 and approx_kl > cfg.approx_kl_stop:
                stopped = True
                break
            optimizer.zero_grad(set_to_none=True)
            (loss * dist.world_size).backward()  # DDP averages gradients over processes: undo it, exactly
            for part in (models.policy, models.value):
                torch.nn.utils.clip_grad_norm_([p for p in part.parameters() if p.requires_grad], cfg.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)  # the gradients are not kept through the next rollout / forward
            steps += 1
        if stopped:
            break
    metrics = dist.combine({k: v / forwards for k, v in sums.items()}, summed=SUMMED_METRICS)
    metrics["policy/early_stopped"] = float(stopped)
    metrics["policy/update_steps"] = float(steps)
    return metrics


def _build_models(cfg: PPOConfig, tokenizer, roles=None):
    pad = tokenizer.pad_token_id
    # no dropout in the policy or the value model: the rollout's log-probs and values, the reference's and the
    # update's are then one distribution's, whatever mode a model was loaded in (as TRL and OpenRLHF do)
    policy = disable_dropout(load_causal_lm(cfg.model, seed=cfg.seed, pad_token_id=pad))
    policy = apply_lora(policy, cfg.model.lora, "CAUSAL_LM")
    ref_model = reference_for(cfg, policy, tokenizer, roles)
    value = disable_dropout(load_reward_model(_value_init(cfg), seed=cfg.seed + 1, pad_token_id=pad))
    return PolicyAndValue(policy, value), ref_model


def train_ppo(cfg: PPOConfig) -> PPOResult:
    cfg = with_task(cfg)  # (a built-in task's prompts, reward and held-out gold, where left empty)
    if not registered(policy_loss_spec, cfg.loss, "loss").token_level:  # an unknown name stops here, before loading
        raise ConfigError(f"loss={cfg.loss} is defined on one advantage per response: use it with tether grpo (PPO's "
                          f"GAE advantages are per token; choose one of "
                          f"{', '.join(n for n, s in POLICY_LOSSES.items() if s.token_level)})")
    validate_constraint(cfg)  # (a config built in Python has not been through tether.config.validate)
    setup = start_online_run(cfg, "rollout_batch_size")
    dist, run_dir, logger, tokenizer, prompts = setup.dist, setup.run_dir, setup.logger, setup.tokenizer, setup.prompts
    roles, reward_source = setup.roles, setup.reward_source
    constraint = Constraint.of(cfg, tokenizer)  # (None: an unconstrained run)
    cost_source = None if constraint is None else constraint.source
    models, ref_model = _build_models(cfg, tokenizer, roles)
    # DDP in a data-parallel run (generation uses the plain policy). Under FSDP the policy, the value model's trunk
    # and its score head are each a root unit (they are called one by one), and the reference is sharded too
    train_models = dist.wrap(models, roots=[models.policy, value_trunk(models.value), models.value.score])
    ref_model = dist.shard_frozen(ref_model)
    heldout = make_heldout(cfg, tokenizer, reward_source, cost_source, cfg.cost_limit)
    seeded = cfg.row_seeded_sampling or dist.enabled
    optimizer = adamw([
        {"params": [p for p in models.policy.parameters() if p.requires_grad], "lr": cfg.learning_rate},
        {"params": [p for p in models.value.parameters() if p.requires_grad], "lr": cfg.value_learning_rate},
    ], eps=1e-5)
    kl_ctl = (AdaptiveKLController(cfg.kl_coef, cfg.target_kl, cfg.kl_horizon) if cfg.adaptive_kl
              else FixedKLController(cfg.kl_coef))
    moments = RunningMoments()

    def iterate(iteration: int, generator: Generator) -> dict:
        chosen = prompt_batches(len(prompts), cfg.rollout_batch_size, cfg.seed, iteration)
        mine = dist.shard_evenly(list(range(len(chosen))))  # this process's share of the batch
        seeds = row_seeds(cfg.seed, iteration, mine) if seeded else None
        experience, metrics = make_experience(cfg, models, ref_model, reward_source, tokenizer,
                                              [prompts[chosen[j]] for j in mine], kl_ctl.value, moments, seeds, dist,
                                              generator, cost_source, 0.0 if constraint is None else constraint.value)
        update_start = time.time()
        metrics.update(ppo_update(cfg, models, optimizer, experience, train_models, dist))
        metrics["time/update"] = time.time() - update_start
        given = metrics["reward/proxy_mean" if constraint is None else "reward/lagrangian_mean"]  # the score PPO got
        metrics["objective/rlhf_reward"] = given - kl_ctl.value * metrics["objective/kl"]
        kl_ctl.update(metrics["objective/kl"], cfg.rollout_batch_size)
        if constraint is not None:  # the dual step: the next iteration's λ, from this iteration's mean cost
            constraint.step(metrics)
        return metrics

    def state() -> dict:
        constrained = {} if constraint is None else constraint.state()
        return {"kl_controller": kl_ctl.state_dict(), "score_moments": moments.state_dict(), **constrained}

    def load_state(state: dict) -> None:
        kl_ctl.load_state_dict(state["kl_controller"])
        moments.load_state_dict(state["score_moments"])
        if constraint is not None:
            constraint.load_state(state)

    def postfix(m: dict) -> dict:
        shown = {"score": f"{m['reward/score_mean']:.3g}", "kl": f"{m['objective/kl']:.3g}",
                 "beta": f"{m['objective/kl_coef']:.3g}", "len": f"{m['response/length_mean']:.3g}"}
        if constraint is not None:
            shown.update(constraint.postfix(m))
        return shown

    meta = {"recipe": "ppo", "base_model": cfg.model.name_or_path, "reward": cfg.reward,
            **({} if constraint is None else constraint.meta())}
    run = OnlineRun(
        models, models.policy, optimizer, iterate=iterate, meta=meta, description=cfg.name,
        make_generator=lambda: generator_for(cfg, models.policy, tokenizer, run_dir, roles),
        postfix=postfix, state=state, load_state=load_state, kl_advice="raise kl_coef / lower learning_rate",
        memory_advice="lower rollout_batch_size or minibatch_size")
    outcome = run_online_rl(cfg, run, logger, tokenizer, ref_model, heldout, roles)
    out = save_model(models.policy, tokenizer, run_dir / cfg.name,
                     {**meta, "iterations": outcome.iterations, "stopped_early": outcome.stopped_early,
                      "final_kl_coef": kl_ctl.value, "config": to_dict(cfg),
                      **({} if constraint is None else {"final_lagrange_multiplier": constraint.value})},
                     merge_lora=cfg.model.lora.merge_on_save)
    console.print(f"[bold green]PPO done[/]: policy → {out}  ({outcome.iterations} iterations)")
    console.print(end_of_run_line(cfg.name, outcome.heldout_state), soft_wrap=True)  # one line, in a log too
    return PPOResult(out, outcome.iterations, outcome.history, outcome.stopped_early, outcome.alarms)
