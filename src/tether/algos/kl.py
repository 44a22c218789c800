"""KL estimators and KL-coefficient controllers for the leash to the reference policy.

Per token, with log-ratio ``r = log π(y_t) − log π_ref(y_t)`` of a token sampled from π
(Schulman, "Approximating KL divergence", 2020):

- ``k1 = r``                      unbiased for KL(π‖π_ref), high variance, can be negative
- ``k2 = r² / 2``                 biased, low variance, ≥ 0
- ``k3 = (e^{−r} − 1) + r``       unbiased, low variance, ≥ 0

Computed in fp32. The controllers follow Ziegler et al. 2019: β is adapted so that the
per-response KL tracks a target; their state is part of every checkpoint.
"""

from __future__ import annotations

import torch

KL_ESTIMATORS = ("k1", "k2", "k3")


def kl_penalty(logps: torch.Tensor, ref_logps: torch.Tensor, estimator: str = "k1") -> torch.Tensor:
    """Per-token KL estimate (B, T) from policy and reference log-probs of the sampled tokens (B, T)."""
    log_ratio = logps.float() - ref_logps.float()
    if estimator == "k1":
        return log_ratio
    if estimator == "k2":
        return 0.5 * log_ratio**2
    if estimator == "k3":
        return torch.expm1(-log_ratio) + log_ratio
    raise ValueError(f"unknown KL estimator '{estimator}'; choose one of {', '.join(KL_ESTIMATORS)}")


class FixedKLController:
    """A constant β."""

    def __init__(self, kl_coef: float):
        self.value = float(kl_coef)

    def update(self, current_kl: float, n_steps: int) -> float:
        return self.value

    def state_dict(self) -> dict:
        return {"value": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.value = float(state["value"])


class AdaptiveKLController:
    """Ziegler et al. 2019: β ← β·(1 + clip(KL/target − 1, −0.2, 0.2)·n_steps/horizon).

    ``current_kl`` is the mean KL per response of the last batch, ``n_steps`` the number
    of responses (samples) it covered; β grows when KL is above the target and shrinks
    when below, at most 20 % of ``n_steps/horizon`` per update.
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: int, clip: float = 0.2):
        if target <= 0 or horizon <= 0:
            raise ValueError("AdaptiveKLController needs target > 0 and horizon > 0")
        self.value = float(init_kl_coef)
        self.target = float(target)
        self.horizon = int(horizon)
        self.clip = float(clip)

    def update(self, current_kl: float, n_steps: int) -> float:
        proportional_error = min(max(current_kl / self.target - 1.0, -self.clip), self.clip)
        self.value *= 1.0 + proportional_error * n_steps / self.horizon
        return self.value

    def state_dict(self) -> dict:
        return {"value": self.value, "target": self.target, "horizon": self.horizon, "clip": self.clip}

    def load_state_dict(self, state: dict) -> None:
        self.value = float(state["value"])
        self.target = float(state["target"])
        self.horizon = int(state["horizon"])
        self.clip = float(state["clip"])
