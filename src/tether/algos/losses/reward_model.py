"""Reward-model losses and diagnostics (Bradley–Terry).

Bradley–Terry: P(chosen ≻ rejected) = σ(r_c − r_r), so the negative log-likelihood
of the observed preference is −log σ(r_c − r_r). Llama 2 (Touvron et al. 2023) adds a
margin m for pairs rated "much better": −log σ(r_c − r_r − m). Reward centering
(Eisenstein et al. 2023) adds c·(r_c + r_r)² so the reward's offset, which the BT loss
leaves free, stays near 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pairwise_accuracy(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor) -> float:
    """Fraction of pairs with r_c > r_r; a tie counts ½ (a coin flip)."""
    if chosen_rewards.numel() == 0:
        return float("nan")
    wins = (chosen_rewards > rejected_rewards).float() + 0.5 * (chosen_rewards == rejected_rewards).float()
    return float(wins.mean())


def bradley_terry_loss(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor,
                       margin: torch.Tensor | None = None, center_coef: float = 0.0):
    """Per-pair losses (B,) = −log σ(r_c − r_r − m) + center_coef·(r_c + r_r)², and metrics.

    chosen_rewards, rejected_rewards: (B,) scalar rewards; margin: (B,) or None.
    """
    diff = chosen_rewards.float() - rejected_rewards.float()  # (B,)
    if margin is not None:
        diff = diff - margin.to(diff.dtype)
    losses = -F.logsigmoid(diff)
    bt = losses.detach().mean()
    if center_coef:
        losses = losses + center_coef * (chosen_rewards.float() + rejected_rewards.float()) ** 2
    with torch.no_grad():
        metrics = {
            "loss/bt": bt,
            "rewards/chosen": chosen_rewards.float().mean(),
            "rewards/rejected": rejected_rewards.float().mean(),
            "rewards/margins": (chosen_rewards.float() - rejected_rewards.float()).mean(),
            "rewards/accuracies": torch.tensor(pairwise_accuracy(chosen_rewards.detach(), rejected_rewards.detach())),
        }
    return losses, metrics


def ensemble_scores(member_scores: torch.Tensor, k: float = 1.0) -> dict[str, torch.Tensor]:
    """Combine an ensemble's scores (N members, B items): mean, std (population, 0 for one member), mean − k·std."""
    mean = member_scores.float().mean(0)  # (B,)
    std = member_scores.float().std(0, unbiased=False)  # (B,)
    return {"mean": mean, "std": std, "conservative": mean - k * std}


def calibration_bins(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor, n_bins: int = 10) -> list[dict]:
    """Reliability table of the model's win probability p = σ(r_c − r_r).

    The label always says "chosen wins", so each pair is counted twice, symmetrised:
    (p, outcome 1) for the chosen side and (1 − p, outcome 0) for the rejected side. A
    calibrated model then has observed ≈ mean_predicted in every bin. Bins split [0, 1]
    into ``n_bins`` equal widths; p = 1 falls in the last bin.
    """
    p = torch.sigmoid(chosen_rewards.double() - rejected_rewards.double())
    predicted = torch.cat([p, 1 - p])
    outcome = torch.cat([torch.ones_like(p), torch.zeros_like(p)])
    index = (predicted * n_bins).long().clamp(max=n_bins - 1)
    bins = []
    for b in range(n_bins):
        in_bin = index == b
        count = int(in_bin.sum())
        bins.append({
            "lo": b / n_bins, "hi": (b + 1) / n_bins, "count": count,
            "mean_predicted": float(predicted[in_bin].mean()) if count else float("nan"),
            "observed": float(outcome[in_bin].mean()) if count else float("nan"),
        })
    return bins


def expected_calibration_error(bins: list[dict]) -> float:
    """Σ_b (count_b / N)·|mean_predicted_b − observed_b| over non-empty bins."""
    total = sum(b["count"] for b in bins)
    if total == 0:
        return float("nan")
    return sum(b["count"] / total * abs(b["mean_predicted"] - b["observed"]) for b in bins if b["count"])
