"""Offline preference losses: the DPO family.

Inputs are per-sequence SUMMED response log-probs, shape (B,):
``policy_chosen_logps`` = log π(y_c|x), ``ref_chosen_logps`` = log π_ref(y_c|x), etc.
With h = (log π(y_c) − log π(y_r)) − (log π_ref(y_c) − log π_ref(y_r)):

- dpo    (Rafailov et al. 2023):  −log σ(βh); with label smoothing ε (cDPO):
                                  −(1−ε)·log σ(βh) − ε·log σ(−βh)
- cdpo   conservative DPO: the above with ε = 0.1 by default
- robust (Chowdhury et al. 2024): [−(1−ε)·log σ(βh) + ε·log σ(−βh)] / (1 − 2ε),
                                  unbiased under a label-flip rate ε
- ipo    (Azar et al. 2023):      (h − 1/(2β))²  (the paper uses per-token averaged
                                  log-probs; the recipe decides what it passes)
- hinge  (SLiC, Zhao et al. 2023): max(0, 1 − βh)
- simpo  (Meng et al. 2024, reference-free): −log σ(β·a_c − β·a_r − γ) with
                                  a = log π(y)/|y| and γ = gamma_beta_ratio·β (the SimPO
                                  authors' parameterisation: β = 2.0–2.5, γ/β = 0.1–0.8,
                                  0.5 their suggested start)
- orpo   (Hong et al. 2024, reference-free): −a_c + λ·(−log σ(log odds(y_c) − log odds(y_r))),
                                  odds(y) = p/(1−p) with p = exp(a); β plays λ (paper: 0.1)
- kto    (Ethayarajh et al. 2024, unpaired): see :func:`kto`.

Paired losses share ``f(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps,
ref_rejected_logps, beta, **options) -> (losses (B,), metrics)``; reference-free ones
accept ``None`` for the reference and need ``chosen_lengths`` / ``rejected_lengths``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

Metrics = dict[str, torch.Tensor]


def _paired_metrics(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor,
                    policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor) -> Metrics:
    with torch.no_grad():
        return {
            "rewards/chosen": chosen_rewards.mean(),
            "rewards/rejected": rejected_rewards.mean(),
            "rewards/accuracies": (chosen_rewards > rejected_rewards).float().mean(),
            "rewards/margins": (chosen_rewards - rejected_rewards).mean(),
            "logps/chosen": policy_chosen_logps.detach().float().mean(),
            "logps/rejected": policy_rejected_logps.detach().float().mean(),
        }


def _implicit(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    """h (B,) and the implicit rewards β(log π − log π_ref) of chosen and rejected."""
    chosen_ratio = policy_chosen_logps.float() - ref_chosen_logps.float()
    rejected_ratio = policy_rejected_logps.float() - ref_rejected_logps.float()
    return chosen_ratio - rejected_ratio, beta * chosen_ratio.detach(), beta * rejected_ratio.detach()


def dpo(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta,
        label_smoothing: float = 0.0):
    h, chosen_rewards, rejected_rewards = _implicit(policy_chosen_logps, policy_rejected_logps,
                                                    ref_chosen_logps, ref_rejected_logps, beta)
    eps = label_smoothing
    losses = -(1 - eps) * F.logsigmoid(beta * h) - eps * F.logsigmoid(-beta * h)
    return losses, _paired_metrics(chosen_rewards, rejected_rewards, policy_chosen_logps, policy_rejected_logps)


def cdpo(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta,
         label_smoothing: float = 0.1):
    return dpo(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta,
               label_smoothing=label_smoothing)


def robust(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta,
           label_smoothing: float = 0.1):
    h, chosen_rewards, rejected_rewards = _implicit(policy_chosen_logps, policy_rejected_logps,
                                                    ref_chosen_logps, ref_rejected_logps, beta)
    eps = label_smoothing
    losses = (-(1 - eps) * F.logsigmoid(beta * h) + eps * F.logsigmoid(-beta * h)) / (1 - 2 * eps)
    return losses, _paired_metrics(chosen_rewards, rejected_rewards, policy_chosen_logps, policy_rejected_logps)


def ipo(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    h, chosen_rewards, rejected_rewards = _implicit(policy_chosen_logps, policy_rejected_logps,
                                                    ref_chosen_logps, ref_rejected_logps, beta)
    losses = (h - 1 / (2 * beta)) ** 2
    return losses, _paired_metrics(chosen_rewards, rejected_rewards, policy_chosen_logps, policy_rejected_logps)


def hinge(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    h, chosen_rewards, rejected_rewards = _implicit(policy_chosen_logps, policy_rejected_logps,
                                                    ref_chosen_logps, ref_rejected_logps, beta)
    losses = torch.relu(1 - beta * h)
    return losses, _paired_metrics(chosen_rewards, rejected_rewards, policy_chosen_logps, policy_rejected_logps)


def _require_lengths(name: str, chosen_lengths, rejected_lengths):
    if chosen_lengths is None or rejected_lengths is None:
        raise ValueError(f"{name} needs chosen_lengths and rejected_lengths (response token counts)")
    return chosen_lengths.float(), rejected_lengths.float()


def simpo(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps=None, ref_rejected_logps=None, beta=2.0,
          gamma_beta_ratio: float = 0.5, chosen_lengths=None, rejected_lengths=None):
    """−log σ(β·a_c − β·a_r − γ), a = log π(y|x)/|y|, with the target margin γ = ``gamma_beta_ratio``·β.

    The margin is given relative to β, as in the SimPO authors' code, so one ratio suits any β: the
    paper's models used β = 2.0–2.5 with γ/β = 0.1–0.8 (0.5 for Llama3-Base).
    """
    chosen_len, rejected_len = _require_lengths("simpo", chosen_lengths, rejected_lengths)
    chosen_rewards = beta * policy_chosen_logps.float() / chosen_len  # (B,)
    rejected_rewards = beta * policy_rejected_logps.float() / rejected_len
    gamma = gamma_beta_ratio * beta
    losses = -F.logsigmoid(chosen_rewards - rejected_rewards - gamma)
    return losses, _paired_metrics(chosen_rewards.detach(), rejected_rewards.detach(), policy_chosen_logps,
                                   policy_rejected_logps)


def _log1m_exp(a: torch.Tensor) -> torch.Tensor:
    """log(1 − exp(a)) for a < 0, stable near 0."""
    a = a.clamp(max=-1e-6)
    return torch.log(-torch.expm1(a))


def orpo(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps=None, ref_rejected_logps=None, beta=0.1,
         chosen_lengths=None, rejected_lengths=None):
    chosen_len, rejected_len = _require_lengths("orpo", chosen_lengths, rejected_lengths)
    mean_chosen = policy_chosen_logps.float() / chosen_len  # a_c (B,)
    mean_rejected = policy_rejected_logps.float() / rejected_len  # a_r (B,)
    log_odds = (mean_chosen - mean_rejected) - (_log1m_exp(mean_chosen) - _log1m_exp(mean_rejected))
    nll = -mean_chosen
    losses = nll - beta * F.logsigmoid(log_odds)
    metrics = _paired_metrics(beta * mean_chosen.detach(), beta * mean_rejected.detach(), policy_chosen_logps,
                              policy_rejected_logps)
    metrics["loss/nll"] = nll.detach().mean()
    metrics["log_odds_ratio"] = log_odds.detach().mean()
    return losses, metrics


def kto(policy_logps, ref_logps, desirable, beta, kl_estimate, desirable_weight: float = 1.0,
        undesirable_weight: float = 1.0):
    """KTO on unpaired examples (B,): desirable w_d·(1 − σ(β(r − z₀))), undesirable w_u·(1 − σ(β(z₀ − r))).

    r = log π(y|x) − log π_ref(y|x); z₀ = max(0, kl_estimate), detached (the paper's
    reference point, estimated on mismatched prompt/completion pairs).
    """
    rewards = policy_logps.float() - ref_logps.float()  # (B,)
    z0 = kl_estimate.detach().float().clamp(min=0)
    desirable = desirable.bool()
    losses = torch.where(desirable,
                         desirable_weight * (1 - torch.sigmoid(beta * (rewards - z0))),
                         undesirable_weight * (1 - torch.sigmoid(beta * (z0 - rewards))))
    metrics: Metrics = {"kl": z0}
    with torch.no_grad():
        if desirable.any():
            metrics["rewards/chosen"] = beta * rewards[desirable].mean()
            metrics["logps/chosen"] = policy_logps[desirable].float().mean()
        if (~desirable).any():
            metrics["rewards/rejected"] = beta * rewards[~desirable].mean()
            metrics["logps/rejected"] = policy_logps[~desirable].float().mean()
    return losses, metrics


PREFERENCE_LOSSES: dict[str, Callable] = {
    "dpo": dpo, "cdpo": cdpo, "robust": robust, "ipo": ipo, "hinge": hinge,
    "simpo": simpo, "orpo": orpo, "kto": kto,
}
REFERENCE_FREE = frozenset({"orpo", "simpo"})
UNPAIRED = frozenset({"kto"})


def get_preference_loss(name: str) -> Callable:
    try:
        return PREFERENCE_LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown preference loss '{name}'; choose one of {', '.join(PREFERENCE_LOSSES)}") from None
