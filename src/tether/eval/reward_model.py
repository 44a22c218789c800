"""Reward-model diagnostics: is it better than "pick the longer one", and is it calibrated?

The length baseline matters because annotators (and reward models) are known to
prefer longer answers; a reward model that only learned length will look fine on
accuracy and then be hacked by a policy that rambles.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from tether.algos.losses.reward_model import calibration_bins, expected_calibration_error, pairwise_accuracy


def length_baseline_accuracy(chosen_lengths: list[int], rejected_lengths: list[int]) -> float:
    """Accuracy of predicting that the longer response is the chosen one (equal lengths count 0.5)."""
    if not chosen_lengths:
        return float("nan")
    wins = sum(1.0 if c > r else 0.5 if c == r else 0.0 for c, r in zip(chosen_lengths, rejected_lengths))
    return wins / len(chosen_lengths)


def pearson(x: list[float], y: list[float]) -> float:
    """Pearson correlation; nan when either side is constant."""
    if len(x) < 2:
        return float("nan")
    xt, yt = torch.tensor(x, dtype=torch.float64), torch.tensor(y, dtype=torch.float64)
    xc, yc = xt - xt.mean(), yt - yt.mean()
    denom = math.sqrt(float((xc**2).sum()) * float((yc**2).sum()))
    return float((xc * yc).sum()) / denom if denom > 0 else float("nan")


def reward_model_report(chosen_scores: torch.Tensor, rejected_scores: torch.Tensor, chosen_lengths: list[int],
                        rejected_lengths: list[int], n_bins: int = 10,
                        disagreement: torch.Tensor | None = None) -> dict[str, Any]:
    """Held-out diagnostics for a reward model on N pairs.

    chosen_scores, rejected_scores: (N,) rewards; *_lengths: response lengths in characters.
    """
    bins = calibration_bins(chosen_scores, rejected_scores, n_bins=n_bins)
    scores = chosen_scores.tolist() + rejected_scores.tolist()
    lengths = [float(v) for v in chosen_lengths + rejected_lengths]
    report = {
        "n_pairs": int(chosen_scores.numel()),
        "accuracy": pairwise_accuracy(chosen_scores, rejected_scores),
        "length_baseline_accuracy": length_baseline_accuracy(chosen_lengths, rejected_lengths),
        "reward_length_correlation": pearson(scores, lengths),
        "mean_margin": float((chosen_scores - rejected_scores).mean()),
        "reward_mean": float(torch.tensor(scores).mean()),
        "reward_std": float(torch.tensor(scores).std()) if len(scores) > 1 else 0.0,
        "calibration_ece": expected_calibration_error(bins),
        "calibration": bins,
    }
    if disagreement is not None:
        report["ensemble_disagreement_mean"] = float(disagreement.mean())
    return report
