"""A constraint on the expected cost of a response, by Lagrangian relaxation (Safe RLHF: Dai et al. 2023, "Safe
RLHF: Safe Reinforcement Learning from Human Feedback", ICLR 2024).

The problem: maximise the expected (helpful) reward J_R(θ) = E[r] subject to the expected (harm) cost
J_C(θ) = E[c] ≤ d. Its Lagrangian, max over θ and min over λ ≥ 0 of

    L(θ, λ) = J_R(θ) − λ·(J_C(θ) − d),

is solved by alternating a policy step on L at a fixed λ with a dual step on λ:

- **the primal score** each response is given, the normalised Lagrangian (Safe RLHF's actor loss does the same to
  its two advantages): ``(r − λ·c) / (1 + λ)`` (:func:`lagrangian_scores`). The 1/(1 + λ) makes the weights of r
  and −c sum to one (1/(1 + λ) and λ/(1 + λ)), a convex combination: the score stays on the scale of r and c
  whatever λ is. Without it the score grows like λ·c as λ rises, and everything after it that assumes a stable
  scale goes wrong: the running normaliser's moments (a mix of batches scored at very different λ), the score
  clip, the KL penalty's weight β relative to the score, and PPO's trust region. The direction the policy is pushed
  in at a given λ is the same (a positive factor does not change which responses are better).
- **the dual step**, projected gradient ascent on −L in λ (∂(−L)/∂λ = J_C − d), with the batch's mean cost Ĵ_C as
  the estimate of J_C (:func:`dual_ascent_step`): λ ← clip(λ + η·(Ĵ_C − d), 0, λ_max). λ rises while the
  constraint is violated (Ĵ_C > d) and falls while it holds with room to spare, down to 0 (then the run is plain
  reward maximisation until the cost passes d again).

On λ itself, not log λ: Safe RLHF's code (``safe_rlhf/algorithms/ppo_lag/trainer.py``) keeps log λ and takes an SGD
step on −(Ĵ_C − d)·exp(log λ), i.e. log λ ← log λ + η·λ·(Ĵ_C − d): a multiplicative step that keeps λ > 0 but can
never reach 0 (a constraint with room to spare still taxes the reward) and moves slowly wherever λ is small. The
additive step here is the paper's dual ascent, reaches 0 exactly, and at λ = 1 equals the log-space step with the
same η.

The order within a run (it matters for resume): iteration t's scores use λ_t; after the iteration, λ_{t+1} =
step(λ_t, that iteration's Ĵ_C). A checkpoint written after iteration t holds λ_{t+1}, the λ of the next
iteration's scores.
"""

from __future__ import annotations

import math

import torch


def dual_ascent_step(multiplier: float, mean_cost: float, cost_limit: float, lr: float,
                     max_multiplier: float | None = None) -> float:
    """One projected dual-ascent step: clip(λ + η·(Ĵ_C − d), 0, λ_max) (no upper clip when ``max_multiplier`` is
    None). ``mean_cost`` is Ĵ_C, the batch's mean cost per response (over every process of a data-parallel run)."""
    if not math.isfinite(mean_cost):
        raise ValueError(f"the mean cost is {mean_cost}: the cost source returned a non-finite value")
    stepped = max(0.0, multiplier + lr * (mean_cost - cost_limit))
    return stepped if max_multiplier is None else min(stepped, max_multiplier)


def lagrangian_scores(rewards: torch.Tensor, costs: torch.Tensor, multiplier: float) -> torch.Tensor:
    """The normalised Lagrangian score of each response, (r − λ·c) / (1 + λ): rewards (B,), costs (B,) → (B,)
    (fp32). At λ = 0 it is the reward itself."""
    return (rewards.float() - multiplier * costs.float()) / (1.0 + multiplier)


def constraint_metrics(all_costs: torch.Tensor, all_scores: torch.Tensor, cost_limit: float,
                       multiplier: float) -> dict[str, float]:
    """The metrics of a constrained run's batch (every process's responses): the raw costs (B,), the Lagrangian
    scores (B,) the policy is given, the bound d and the λ those scores used."""
    mean_cost = float(all_costs.mean())
    return {"objective/cost": mean_cost, "objective/cost_limit": cost_limit,
            "objective/lagrange_multiplier": multiplier, "cost/score_mean": mean_cost,
            "cost/score_std": float(all_costs.std()) if len(all_costs) > 1 else 0.0,
            "reward/lagrangian_mean": float(all_scores.mean())}


class LagrangeMultiplier:
    """λ of the constraint E[cost] ≤ ``cost_limit``, updated by :func:`dual_ascent_step` at rate ``lr`` and capped at
    ``max_value`` (None: no cap). Its state (λ) is part of every checkpoint; the limit, rate and cap are the config's."""

    def __init__(self, init: float, cost_limit: float, lr: float, max_value: float | None = None):
        if init < 0 or lr < 0:
            raise ValueError(f"LagrangeMultiplier needs init ≥ 0 and lr ≥ 0, got init={init}, lr={lr}")
        if max_value is not None and not (max_value > 0 and init <= max_value):
            raise ValueError(f"LagrangeMultiplier's cap must be > 0 and ≥ init, got cap={max_value}, init={init}")
        self.value = float(init)
        self.cost_limit = float(cost_limit)
        self.lr = float(lr)
        self.max_value = None if max_value is None else float(max_value)

    def update(self, mean_cost: float) -> float:
        """λ after the dual step on this iteration's mean cost Ĵ_C (the next iteration's λ)."""
        self.value = dual_ascent_step(self.value, float(mean_cost), self.cost_limit, self.lr, self.max_value)
        return self.value

    def state_dict(self) -> dict:
        return {"value": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.value = float(state["value"])
