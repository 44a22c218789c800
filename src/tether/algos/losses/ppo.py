"""PPO losses for language models: clipped policy surrogate (with optional dual clip), clipped value loss.

Shapes: B responses, T response positions; ``mask`` (B, T) 1 on real response tokens.
Token-level quantities are aggregated with :func:`aggregate`, whose mode is a choice
with a known bias (see its docstring).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from tether.algos.masked import masked_mean


def aggregate_parts(per_token: torch.Tensor, mask: torch.Tensor, mode: str = "token_mean",
                    max_length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(numerator, denominator) of :func:`aggregate`: the loss is numerator / denominator.

    Split so that a data-parallel run can sum the denominators of all processes and every process
    divides its numerator by the global one (the loss of the whole batch, not a mean of means).
    """
    mask = mask.float()
    if mode == "token_mean":
        return (per_token * mask).sum(), mask.sum()
    n_seq = torch.tensor(float(mask.shape[0]), device=mask.device)
    if mode == "seq_mean_token_mean":
        return masked_mean(per_token, mask, dim=-1).sum(), n_seq
    if mode == "seq_mean_token_sum_norm":
        return (per_token * mask).sum(), n_seq * float(max_length or mask.shape[-1])
    raise ValueError(f"unknown loss aggregation '{mode}'")


def aggregate(per_token: torch.Tensor, mask: torch.Tensor, mode: str = "token_mean",
              max_length: int | None = None, denominator: torch.Tensor | float | None = None) -> torch.Tensor:
    """Reduce a (B, T) per-token loss to a scalar.

    - ``token_mean``: mean over all response tokens in the batch (every token weighs the
      same; DAPO, PPO in most RLHF code).
    - ``seq_mean_token_mean``: mean over tokens within each response, then over responses
      (original GRPO). Tokens of long responses weigh less: a length bias that favours
      long wrong answers and short right ones (Dr. GRPO, Liu et al. 2025).
    - ``seq_mean_token_sum_norm``: sum over tokens divided by a constant length (Dr. GRPO),
      unbiased with respect to length: ``max_length`` (the generation budget), or T when not given.

    ``denominator`` replaces this batch's own (e.g. the sum over all processes of a data-parallel run).
    """
    if denominator is None and mode == "token_mean":
        return masked_mean(per_token, mask.float())  # (raises on a batch without a single response token)
    numerator, own = aggregate_parts(per_token, mask, mode, max_length)
    return numerator / (own if denominator is None else denominator)


def policy_loss(logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                clip_range: float = 0.2, dual_clip: float | None = None, aggregation: str = "token_mean",
                max_length: int | None = None, denominator: torch.Tensor | float | None = None,
                clip_range_high: float | None = None):
    """Clipped surrogate: −min(ρA, clip(ρ, 1−ε_low, 1+ε_high)A) with ρ = exp(log π − log π_old) → (loss, metrics).

    ε_low = ``clip_range``; ε_high = ``clip_range_high`` (None: the same ε, PPO's symmetric clip; larger: DAPO's
    clip-higher, Yu et al. 2025, which lets unlikely tokens with a positive advantage grow further).
    ``dual_clip`` c > 1 (Ye et al. 2020) additionally bounds the loss by −c·A where A < 0, so
    a very large ratio on a bad action cannot dominate the update.
    """
    high = clip_range if clip_range_high is None else clip_range_high
    log_ratio = logps.float() - old_logps.float()
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - clip_range, 1.0 + high)
    per_token = torch.maximum(unclipped, clipped)
    if dual_clip is not None:
        if dual_clip <= 1.0:
            raise ValueError("dual_clip must be > 1")
        per_token = torch.where(advantages < 0, torch.minimum(per_token, -dual_clip * advantages), per_token)
    loss = aggregate(per_token, mask, aggregation, max_length, denominator)
    with torch.no_grad():
        metrics = {
            "policy/loss": loss.detach(),
            "policy/clip_frac": masked_mean((clipped > unclipped).float(), mask),
            "policy/approx_kl": masked_mean(approx_kl_k3(log_ratio), mask),
            "policy/ratio_mean": masked_mean(ratio, mask),
        }
    return loss, metrics


def approx_kl_k3(log_ratio: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(π_old‖π) from tokens sampled from π_old (Schulman 2020, "Approximating KL
    divergence"): with r = π/π_old = e^δ, δ = log π − log π_old, KL(π_old‖π) = E_old[r − 1 − log r] =
    E_old[e^δ − 1 − δ] (unbiased, ≥ 0 per token; cleanrl's ``(ratio - 1) - logratio``).

    (e^{−δ} − 1 + δ estimates the other direction, KL(π‖π_old), and only under samples from π: on π_old's
    samples it is heavy-tailed, a token π now finds unlikely (δ = −3) counting 16.1 instead of 2.05.)"""
    return torch.expm1(log_ratio) - log_ratio


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
               clip_range: float = 0.2, aggregation: str = "token_mean",
               denominator: torch.Tensor | float | None = None):
    """Clipped value loss: ½·max((V − R)², (clip(V, V_old ± ε) − R)²) → (loss, metrics)."""
    values, old_values, returns = values.float(), old_values.float(), returns.float()
    clipped_values = old_values + (values - old_values).clamp(-clip_range, clip_range)
    unclipped_loss = (values - returns) ** 2
    clipped_loss = (clipped_values - returns) ** 2
    per_token = 0.5 * torch.maximum(unclipped_loss, clipped_loss)
    loss = aggregate(per_token, mask, aggregation, denominator=denominator)
    with torch.no_grad():
        metrics = {"value/loss": loss.detach(), "value/clip_frac": masked_mean((clipped_loss > unclipped_loss).float(), mask)}
    return loss, metrics


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """1 − Var(R − V)/Var(R) over response tokens (1 = perfect value function, ≤ 0 = useless)."""
    residual_var = masked_mean((returns - values - masked_mean(returns - values, mask)) ** 2, mask)
    returns_var = masked_mean((returns - masked_mean(returns, mask)) ** 2, mask)
    return 1.0 - residual_var / returns_var.clamp(min=1e-8)


# ---- policy losses by name (``loss=`` of ``tether ppo`` and ``tether grpo``) ---------------------------------------
# Each takes (logps, old_logps, advantages, mask, clip_range=, clip_range_high=, dual_clip=, aggregation=, max_length=,
# denominator=) → (loss, metrics with policy/loss, policy/clip_frac, policy/approx_kl, policy/ratio_mean), the
# advantages per token (B, T) and every log-prob fp32 per token, 0 on padding.


def cispo_loss(logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
               clip_range: float = 0.2, dual_clip: float | None = None, aggregation: str = "token_mean",
               max_length: int | None = None, denominator: torch.Tensor | float | None = None,
               clip_range_high: float | None = None):
    """CISPO (MiniMax-M1, 2025): −sg(clip(ρ, 1−ε_low, 1+ε_high))·A·log π per token → (loss, metrics).

    The importance weight is clipped and its gradient stopped, and it multiplies a REINFORCE term, so every token
    keeps a gradient (PPO's clip zeroes the gradient of a clipped token; CISPO only bounds its weight). The loss's
    value is not a surrogate of the return (its gradient is); ``policy/clip_frac`` counts the tokens whose weight
    was clipped. ε_low = ``clip_range`` (≥ 1: no lower bound, as MiniMax-M1 ran it), ε_high = ``clip_range_high``
    (None: ``clip_range``). ``dual_clip`` does not apply (the weight is already bounded)."""
    high = clip_range if clip_range_high is None else clip_range_high
    log_ratio = logps.float() - old_logps.float()
    ratio = torch.exp(log_ratio)
    weight = ratio.clamp(max(1.0 - clip_range, 0.0), 1.0 + high).detach()
    per_token = -weight * advantages * logps.float()
    loss = aggregate(per_token, mask, aggregation, max_length, denominator)
    with torch.no_grad():
        metrics = {
            "policy/loss": loss.detach(),
            "policy/clip_frac": masked_mean((weight != ratio).float(), mask),
            "policy/approx_kl": masked_mean(approx_kl_k3(log_ratio), mask),
            "policy/ratio_mean": masked_mean(ratio, mask),
        }
    return loss, metrics


def gspo_loss(logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
              clip_range: float = 3e-4, dual_clip: float | None = None, aggregation: str = "seq_mean_token_mean",
              max_length: int | None = None, denominator: torch.Tensor | float | None = None,
              clip_range_high: float | None = 4e-4):
    """GSPO (Zheng et al. 2025): one importance ratio per response, s = (π(y|x)/π_old(y|x))^(1/|y|) = exp(mean over
    its tokens of log π − log π_old), clipped per response: −min(s·A, clip(s, 1−ε_low, 1+ε_high)·A) with A the
    response's advantage (the mean of its token advantages) → (loss, metrics).

    Each response's term is spread evenly over its tokens, so the ``seq_mean_token_mean`` aggregation (its
    registered one) gives the paper's mean over responses. The ratio is a geometric mean, so its clip is narrow
    (the paper: ε_low = 3e-4, ε_high = 4e-4); ``policy/clip_frac`` is the share of responses clipped."""
    high = clip_range if clip_range_high is None else clip_range_high
    mask_f = mask.float()
    lengths = mask_f.sum(-1).clamp(min=1.0)  # (B,)
    log_ratio = ((logps.float() - old_logps.float()) * mask_f).sum(-1) / lengths  # (B,) mean token log-ratio
    ratio = torch.exp(log_ratio)
    advantage = (advantages.float() * mask_f).sum(-1) / lengths  # (B,)
    unclipped = -advantage * ratio
    clipped = -advantage * ratio.clamp(1.0 - clip_range, 1.0 + high)
    per_response = torch.maximum(unclipped, clipped)  # (B,)
    per_token = per_response.unsqueeze(-1).expand_as(mask_f)
    loss = aggregate(per_token, mask, aggregation, max_length, denominator)
    with torch.no_grad():
        real = mask_f.sum(-1) > 0
        metrics = {
            "policy/loss": loss.detach(),
            "policy/clip_frac": (clipped > unclipped)[real].float().mean(),
            "policy/approx_kl": masked_mean(approx_kl_k3(logps.float() - old_logps.float()), mask),
            "policy/ratio_mean": ratio[real].mean(),
        }
    return loss, metrics


def gmpo_loss(logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
              clip_range: float = 0.4, dual_clip: float | None = None, aggregation: str = "seq_mean_token_mean",
              max_length: int | None = None, denominator: torch.Tensor | float | None = None,
              clip_range_high: float | None = None):
    """GMPO (Zhao et al. 2025, "Geometric-Mean Policy Optimization"): each response's ratio is the geometric mean of
    its token ratios, each token's log-ratio clipped on the side the advantage pushes it (log ρ_t ≤ ε_high where
    A > 0, ≥ −ε_low where A < 0, PPO's pessimism in log space), and the loss −A·exp(mean_t clipped log ρ_t) with A
    the response's advantage (the mean of its token advantages) → (loss, metrics).

    A geometric mean is not pulled far by one outlying token ratio, which is GMPO's point against GRPO's
    arithmetic mean; a clipped token has no gradient, the others keep theirs (GSPO's sequence clip stops them all).
    The paper clips at (e^−0.4, e^0.4): ``clip_range=0.4``. Each response's term is spread evenly over its tokens,
    so the registered ``seq_mean_token_mean`` aggregation gives the mean over responses; ``policy/clip_frac`` is the
    share of tokens clipped."""
    high = clip_range if clip_range_high is None else clip_range_high
    mask_f = mask.float()
    lengths = mask_f.sum(-1).clamp(min=1.0)  # (B,)
    log_ratio = logps.float() - old_logps.float()
    advantage = (advantages.float() * mask_f).sum(-1) / lengths  # (B,)
    sign = torch.where(advantage >= 0, 1.0, -1.0).unsqueeze(-1)  # (A = 0: no loss either way)
    clipped = sign * torch.minimum(sign * log_ratio, sign * log_ratio.clamp(-clip_range, high))
    ratio = torch.exp((clipped * mask_f).sum(-1) / lengths)  # (B,)
    per_token = (-advantage * ratio).unsqueeze(-1).expand_as(mask_f)
    loss = aggregate(per_token, mask, aggregation, max_length, denominator)
    with torch.no_grad():
        real = mask_f.sum(-1) > 0
        metrics = {
            "policy/loss": loss.detach(),
            "policy/clip_frac": masked_mean((clipped != log_ratio).float(), mask),
            "policy/approx_kl": masked_mean(approx_kl_k3(log_ratio), mask),
            "policy/ratio_mean": ratio[real].mean(),
        }
    return loss, metrics


def sapo_loss(logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
              clip_range: float = 0.2, dual_clip: float | None = None, aggregation: str = "token_mean",
              max_length: int | None = None, denominator: torch.Tensor | float | None = None,
              clip_range_high: float | None = None, sapo_tau_pos: float = 1.0, sapo_tau_neg: float = 1.05):
    """SAPO (Gao et al. 2025, "Soft Adaptive Policy Optimization"): no hard clip; each token's ratio goes through a
    soft gate f(ρ) = (4/τ)·σ(τ(ρ − 1)), the loss −f(ρ)·A per token, τ = ``sapo_tau_pos`` where A > 0 and
    ``sapo_tau_neg`` where A ≤ 0 (the paper's 1.0 and 1.05: negative-advantage tokens' gates close faster) →
    (loss, metrics).

    Its gradient is the policy gradient weighted by 4p(1 − p), p = σ(τ(ρ − 1)): exactly −A·∇log π on-policy (ρ = 1),
    fading smoothly as a token moves off-policy, so a few far-off tokens lose their weight without the rest of
    their response losing it. ``clip_range`` / ``clip_range_high`` / ``dual_clip`` do not apply. ``policy/clip_frac``
    is the share of tokens whose gate weight 4p(1 − p) fell below one half."""
    log_ratio = logps.float() - old_logps.float()
    ratio = torch.exp(log_ratio)
    adv = advantages.float()
    tau = torch.where(adv > 0, torch.full_like(adv, sapo_tau_pos), torch.full_like(adv, sapo_tau_neg))
    gate = torch.sigmoid(tau * (ratio - 1.0))
    per_token = -(4.0 / tau) * gate * adv
    loss = aggregate(per_token, mask, aggregation, max_length, denominator)
    with torch.no_grad():
        metrics = {
            "policy/loss": loss.detach(),
            "policy/clip_frac": masked_mean((4.0 * gate * (1.0 - gate) < 0.5).float(), mask),
            "policy/approx_kl": masked_mean(approx_kl_k3(log_ratio), mask),
            "policy/ratio_mean": masked_mean(ratio, mask),
        }
    return loss, metrics


@dataclass(frozen=True)
class PolicyLoss:
    """A registered policy loss: its function, the aggregation it is defined with (None: the run's
    ``loss_aggregation``), its usual ε_high when the run leaves ``clip_range_high`` empty (None: ``clip_range``),
    whether it is defined on token advantages (PPO's GAE) as well as sequence ones, and the config fields it reads
    besides the clip ranges (passed by name: ``fn(..., **{field: cfg.<field>})``)."""

    fn: Callable[..., tuple[torch.Tensor, dict[str, torch.Tensor]]]
    aggregation: str | None = None
    clip_range_high: float | None = None
    token_level: bool = True
    options: tuple[str, ...] = ()

    def options_of(self, cfg) -> dict:
        """The values of :attr:`options` in the run's config ``cfg``."""
        return {name: getattr(cfg, name) for name in self.options}


POLICY_LOSSES: dict[str, PolicyLoss] = {
    "ppo_clip": PolicyLoss(policy_loss),
    "dapo": PolicyLoss(policy_loss, aggregation="token_mean", clip_range_high=0.28),  # Yu et al. 2025: ε_high 0.28
    "cispo": PolicyLoss(cispo_loss, aggregation="token_mean"),
    "gspo": PolicyLoss(gspo_loss, aggregation="seq_mean_token_mean", token_level=False),
    "gmpo": PolicyLoss(gmpo_loss, aggregation="seq_mean_token_mean", token_level=False),
    "sapo": PolicyLoss(sapo_loss, aggregation="token_mean", options=("sapo_tau_pos", "sapo_tau_neg")),
}


def policy_loss_spec(name: str) -> PolicyLoss:
    try:
        return POLICY_LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown policy loss '{name}'; choose one of {', '.join(POLICY_LOSSES)}") from None


def policy_loss_fn(name: str) -> Callable[..., tuple[torch.Tensor, dict[str, torch.Tensor]]]:
    return policy_loss_spec(name).fn
