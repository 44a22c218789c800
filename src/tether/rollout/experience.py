"""One iteration's experience: the rollout and everything an online update needs from it.

PPO fills every field; GRPO and its family leave the value fields empty. When an iteration takes one on-policy step
(one epoch, one minibatch), the old log-probs (and PPO's old values, advantages and returns) are not computed before
the update: they equal the update's own forward, detached, and the update computes them there (``old_logps`` is
None)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from tether.rollout.generation import Rollout


@dataclass
class Experience:
    rollout: Rollout
    ref_logps: torch.Tensor  # (B, R) the frozen reference's log-probs of the sampled tokens, fp32, 0 on padding
    old_logps: torch.Tensor | None = None  # (B, R) the sampling policy's, recomputed by the trainer; None: deferred
    advantages: torch.Tensor | None = None  # (B, R) per token (a sequence's advantage broadcast for GRPO)
    old_values: torch.Tensor | None = None  # (B, R) PPO: V(state before each response token)
    returns: torch.Tensor | None = None  # (B, R) PPO: the value targets (GAE returns)
    scores: torch.Tensor | None = None  # (B,) PPO: the normalised, clipped scores stage 5 shapes (when deferred)
    kl_coef: float = 0.0  # PPO: β at this iteration
    responses: list[str] = field(default_factory=list)  # the decoded responses

    @property
    def deferred(self) -> bool:
        """The old log-probs (and values) come from the update's own first forward (one on-policy step)."""
        return self.old_logps is None
