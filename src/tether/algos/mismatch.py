"""Correcting for the mismatch between the sampler's and the trainer's log-probs of the same tokens.

A fast sampling engine (vLLM, bf16 kernels, a stale weight sync) does not give a token the probability the trained
policy gives it, so rollouts are slightly off-policy even at the first update step: the clipped ratio
π_θ/π_old measures the distance from the trainer's old policy, not from the distribution that drew the tokens.
Importance sampling by ρ = π_old / π_sampler (the trainer's log-probs at rollout time over the sampler's) corrects
the gradient; its weights are bounded so that a few tokens the sampler found far likelier cannot blow it up:

- ``token_truncate`` (truncated IS, TIS; Yao et al. 2025, "Your efficient RL framework secretly brings you off-policy
  RL training"): each token's loss is weighted by min(ρ_t, C).
- ``sequence_truncate``: one weight per response, min(∏_t ρ_t, C) (the response's likelihood ratio).
- ``token_mask`` (masked IS, MIS; Liu et al. 2025, "When speed kills stability: demystifying RL collapse from the
  training-inference mismatch"): tokens with ρ_t outside [1/C, C] are dropped from the loss (and from its
  denominator), the others weighted by ρ_t.
- ``sequence_mask``: whole responses whose ∏_t ρ_t falls outside [1/C, C] are dropped, the others weighted by it.

C is ``threshold`` (2.0, as verl, ms-swift and slime default it). Both the weights and the kept mask are constants
(no gradient): the policy's gradient flows through its own log-probs only. The weight multiplies the token's
advantage, which equals weighting its loss for every registered policy loss (each is linear in the advantage for a
weight ≥ 0). :func:`mismatch_metrics` measures the gap: the k3 estimate of KL(π_sampler‖π_old) per token (≥ 0, 0 when
the two agree) and the share of tokens a correction changed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

MISMATCH_MODES = ("none", "token_truncate", "token_mask", "sequence_truncate", "sequence_mask")


@dataclass
class Correction:
    weights: torch.Tensor  # (B, T) fp32 importance weights (1 where nothing is corrected), no gradient
    keep: torch.Tensor  # (B, T) the response mask with the dropped tokens removed
    corrected: torch.Tensor  # (B, T) bool: response tokens whose weight was capped or which were dropped


def mismatch_correction(train_logps: torch.Tensor, sampler_logps: torch.Tensor, mask: torch.Tensor, mode: str,
                        threshold: float = 2.0) -> Correction:
    """The importance weights and the kept tokens of ``mode`` (see the module docstring) for tokens sampled by the
    sampler (``sampler_logps``) and trained from ``train_logps`` (the trainer's log-probs of the same tokens at
    rollout time), both (B, T) with ``mask`` 1 on response tokens."""
    if mode not in MISMATCH_MODES:
        raise ValueError(f"unknown mismatch correction '{mode}'; choose one of {', '.join(MISMATCH_MODES)}")
    if threshold <= 1.0:
        raise ValueError(f"the mismatch threshold C must be > 1 (weights are bounded by C and 1/C), got {threshold}")
    mask_f = mask.float()
    with torch.no_grad():
        log_rho = (train_logps.float() - sampler_logps.float()) * mask_f  # (B, T), 0 on padding
        if mode.startswith("sequence"):
            log_rho = log_rho.sum(-1, keepdim=True).expand_as(mask_f)  # every token carries its response's ratio
        real = mask_f > 0
        bound = math.log(threshold)
        if mode == "none":
            return Correction(torch.ones_like(mask_f), mask_f, torch.zeros_like(real))
        if mode.endswith("truncate"):
            weights = torch.exp(log_rho.clamp(max=bound))
            return Correction(weights * mask_f, mask_f, (log_rho > bound) & real)
        outside = (log_rho.abs() > bound) & real
        kept = mask_f * (~outside).float()
        return Correction(torch.exp(log_rho.clamp(-bound, bound)) * kept, kept, outside)


def mismatch_metrics(train_logps: torch.Tensor, sampler_logps: torch.Tensor, mask: torch.Tensor,
                     correction: Correction | None = None) -> dict[str, float]:
    """``rollout/mismatch_kl``: the mean over response tokens of the k3 estimate of KL(π_sampler‖π_old),
    ρ − 1 − log ρ with ρ = π_old/π_sampler (unbiased on the sampler's tokens, ≥ 0 per token); and, with a
    ``correction``, ``rollout/mismatch_corrected_frac``: the share of response tokens it capped or dropped."""
    mask_f = mask.float()
    n = mask_f.sum().clamp(min=1.0)
    with torch.no_grad():
        log_rho = (train_logps.float() - sampler_logps.float()) * mask_f
        k3 = (torch.expm1(log_rho) - log_rho) * mask_f
        out = {"rollout/mismatch_kl": float(k3.sum() / n)}
        if correction is not None:
            out["rollout/mismatch_corrected_frac"] = float((correction.corrected.float() * mask_f).sum() / n)
    return out


def corrected_advantages(train_logps: torch.Tensor, sampler_logps: torch.Tensor | None, advantages: torch.Tensor,
                         mask: torch.Tensor, mode: str, threshold: float = 2.0
                         ) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
    """(advantages × the importance weights, the mask of the tokens the loss keeps, the metrics) for one minibatch:
    as given when the sampler reported no log-probs (``sampler_logps`` None: the trainer sampled), the metrics alone
    with ``mode`` ``none``."""
    if sampler_logps is None:
        return advantages, mask, {}
    correction = mismatch_correction(train_logps, sampler_logps, mask, mode, threshold)
    metrics = mismatch_metrics(train_logps, sampler_logps, mask, None if mode == "none" else correction)
    if mode == "none":
        return advantages, mask, metrics
    return advantages * correction.weights, correction.keep.to(mask.dtype), metrics


def loss_tokens(kept: torch.Tensor, mask: torch.Tensor, advantages: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """(the loss's mask, advantages): ``kept`` and the advantages as they are, unless ``kept`` drops every token of a
    minibatch, which then keeps ``mask`` with zero advantages (a zero loss with well-defined metrics, no step's
    worth of gradient) instead of a mean over no tokens."""
    if bool(kept.any()):
        return kept, advantages
    return mask, torch.zeros_like(advantages)
