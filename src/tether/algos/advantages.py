"""Advantage estimators: GAE (PPO), group-normalised (GRPO), leave-one-out (RLOO), REINFORCE++.

Shapes: B responses, T response positions; ``mask`` (B, T) is 1 on real response tokens
(left-aligned: a response's tokens come first, padding after its last token).
For the group estimators the B scores are K consecutive samples per prompt.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from tether.algos.masked import masked_whiten, masked_whiten_across
from tether.algos.rewards import kl_shaped_rewards


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0,
        lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016) → (advantages, returns), each (B, T).

    δ_t = r_t + γ·V_{t+1}·m_{t+1} − V_t and A_t = δ_t + γλ·m_{t+1}·A_{t+1}: the position after
    a response's last token is terminal (its value is not bootstrapped). Returns = A + V are
    the value targets. Both are 0 on padding.
    """
    rewards, values, mask = rewards.float(), values.float(), mask.float()
    batch, length = rewards.shape
    advantages = torch.zeros_like(rewards)
    next_advantage = torch.zeros(batch, device=rewards.device)
    for t in reversed(range(length)):
        next_mask = mask[:, t + 1] if t + 1 < length else torch.zeros(batch, device=rewards.device)
        next_value = values[:, t + 1] if t + 1 < length else torch.zeros(batch, device=rewards.device)
        delta = rewards[:, t] + gamma * next_value * next_mask - values[:, t]
        next_advantage = delta + gamma * lam * next_mask * next_advantage
        advantages[:, t] = next_advantage
    advantages = advantages * mask
    returns = (advantages + values) * mask
    return advantages, returns


def _groups(scores: torch.Tensor, group_size: int) -> torch.Tensor:
    if group_size < 2 or scores.numel() % group_size:
        raise ValueError(f"{scores.numel()} scores do not split into groups of {group_size} (need K >= 2)")
    return scores.float().view(-1, group_size)  # (B/K, K)


def grpo_advantages(scores: torch.Tensor, group_size: int, scale_by_std: bool = True,
                    eps: float = 1e-6) -> torch.Tensor:
    """GRPO (Shao et al. 2024): (s − mean_group) / (std_group + eps) → (B,).

    ``scale_by_std=False`` is Dr. GRPO (Liu et al. 2025): dividing by the group's std
    up-weights prompts whose samples barely differ (too easy or too hard), a difficulty bias.
    The std is the unbiased sample std, as in the GRPO reference implementation.
    """
    groups = _groups(scores, group_size)
    centred = groups - groups.mean(-1, keepdim=True)
    if scale_by_std:
        centred = centred / (groups.std(-1, keepdim=True) + eps)
    return centred.flatten()


def rloo_advantages(scores: torch.Tensor, group_size: int) -> torch.Tensor:
    """RLOO (Ahmadian et al. 2024): s_i − mean_{j≠i} s_j = K/(K−1)·(s_i − mean) → (B,)."""
    groups = _groups(scores, group_size)
    baseline = (groups.sum(-1, keepdim=True) - groups) / (group_size - 1)
    return (groups - baseline).flatten()


def returns_to_go(rewards: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0) -> torch.Tensor:
    """G_t = Σ_{k≥t} γ^{k−t} r_k within each response → (B, T), 0 on padding."""
    rewards, mask = rewards.float(), mask.float()
    out = torch.zeros_like(rewards)
    running = torch.zeros(rewards.shape[0], device=rewards.device)
    for t in reversed(range(rewards.shape[1])):
        running = rewards[:, t] + gamma * running * (mask[:, t + 1] if t + 1 < rewards.shape[1] else 0.0)
        out[:, t] = running
    return out * mask


def reinforce_pp_advantages(token_rewards: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0) -> torch.Tensor:
    """REINFORCE++ (Hu 2025): returns-to-go of the KL-shaped token rewards, whitened over the global batch → (B, T)."""
    return masked_whiten(returns_to_go(token_rewards, mask, gamma), mask)


def broadcast_to_tokens(sequence_advantages: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """One advantage per response (B,) copied onto each of its tokens → (B, T), 0 on padding."""
    return sequence_advantages.float().unsqueeze(-1) * mask.float()


# ---- critic-free estimators by name (GRPO's ``advantage=``) ---------------------------------------------------------

Reducer = Callable[[dict[str, float]], dict[str, float]]  # sums floats over the processes of a data-parallel run


@dataclass(frozen=True)
class AdvantageEstimator:
    """A critic-free estimator: ``fn(scores (B,), kl (B, T), mask (B, T), group_size, kl_coef, kl_in_reward,
    reducer) → advantages (B, T)``, 0 on padding. ``kl`` is the per-token k1 KL of the sampling policy to the
    reference (0 on padding); an estimator subtracts ``kl_coef``·KL from the reward when ``kl_in_reward`` (else the
    KL is a loss term and it ignores ``kl``). ``reducer``: None in one process, else the sum over processes, for
    statistics over the whole batch (a group's statistics need only the group: a process holds whole groups).
    ``kl_always_in_reward``: the estimator's reward always carries the KL (REINFORCE++), never a loss term."""

    fn: Callable[..., torch.Tensor]
    kl_always_in_reward: bool = False


ADVANTAGE_ESTIMATORS: dict[str, AdvantageEstimator] = {}


def register_advantage(name: str, kl_always_in_reward: bool = False) -> Callable[[Callable], Callable]:
    """Register ``fn`` as the critic-free estimator ``name`` (see :class:`AdvantageEstimator` for its signature)."""
    def register(fn: Callable) -> Callable:
        ADVANTAGE_ESTIMATORS[name] = AdvantageEstimator(fn, kl_always_in_reward)
        return fn
    return register


def advantage_estimator(name: str) -> AdvantageEstimator:
    try:
        return ADVANTAGE_ESTIMATORS[name]
    except KeyError:
        raise ValueError(f"unknown advantage estimator '{name}'; choose one of {', '.join(ADVANTAGE_ESTIMATORS)}") \
            from None


def _sequence_scores(scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, kl_coef: float,
                     kl_in_reward: bool) -> torch.Tensor:
    """Each response's score, less β·(its summed KL) when the KL is in the reward → (B,)."""
    return scores - kl_coef * (kl * mask).sum(-1) if kl_in_reward else scores


@register_advantage("grpo")
def grpo_estimator(scores, kl, mask, group_size, kl_coef, kl_in_reward, reducer=None) -> torch.Tensor:
    """GRPO: (s − group mean) / (group std + ε) on every token of the response."""
    per_sequence = grpo_advantages(_sequence_scores(scores, kl, mask, kl_coef, kl_in_reward), group_size)
    return broadcast_to_tokens(per_sequence, mask)


@register_advantage("dr_grpo")
def dr_grpo_estimator(scores, kl, mask, group_size, kl_coef, kl_in_reward, reducer=None) -> torch.Tensor:
    """Dr. GRPO (Liu et al. 2025): s − group mean, not divided by the group's std (no difficulty bias)."""
    per_sequence = grpo_advantages(_sequence_scores(scores, kl, mask, kl_coef, kl_in_reward), group_size,
                                   scale_by_std=False)
    return broadcast_to_tokens(per_sequence, mask)


@register_advantage("rloo")
def rloo_estimator(scores, kl, mask, group_size, kl_coef, kl_in_reward, reducer=None) -> torch.Tensor:
    """RLOO: s − the mean of the group's other samples."""
    per_sequence = rloo_advantages(_sequence_scores(scores, kl, mask, kl_coef, kl_in_reward), group_size)
    return broadcast_to_tokens(per_sequence, mask)


@register_advantage("reinforce_pp", kl_always_in_reward=True)
def reinforce_pp_estimator(scores, kl, mask, group_size, kl_coef, kl_in_reward, reducer=None) -> torch.Tensor:
    """REINFORCE++: returns-to-go of the KL-shaped token rewards (k1 KL on every token, the score on the last),
    whitened over the whole batch (of every process)."""
    return masked_whiten_across(returns_to_go(kl_shaped_rewards(scores, kl, mask, kl_coef), mask), mask, reducer)


@register_advantage("reinforce_pp_baseline", kl_always_in_reward=True)
def reinforce_pp_baseline_estimator(scores, kl, mask, group_size, kl_coef, kl_in_reward, reducer=None) -> torch.Tensor:
    """REINFORCE++-baseline (Hu et al. 2025; OpenRLHF's ``reinforce_baseline``): each score less its group's mean,
    then as REINFORCE++: returns-to-go of the KL-shaped token rewards, whitened over the whole batch (of every
    process). The group mean removes the prompt's difficulty before the batch statistics see it."""
    centred = (_groups(scores, group_size) - _groups(scores, group_size).mean(-1, keepdim=True)).flatten()
    return reinforce_pp_estimator(centred, kl, mask, group_size, kl_coef, kl_in_reward, reducer)
