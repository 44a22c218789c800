"""Per-token rewards for RL on sequences: score placement, the KL-shaped reward, normalisation.

Shapes: B responses, T response positions; ``mask`` (B, T) is 1 on real response tokens
(including the EOS that ended the response) and 0 on padding after it.
"""

from __future__ import annotations

import math

import torch


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """(B,) index of the last position where mask == 1 (rows must have at least one)."""
    if (mask.sum(-1) == 0).any():
        raise ValueError("a response has no real tokens (all-zero mask row): it cannot carry a score")
    positions = torch.arange(mask.shape[-1], device=mask.device).expand_as(mask)
    return torch.where(mask.bool(), positions, torch.full_like(positions, -1)).max(-1).values


def place_score(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Put each sequence's scalar score (B,) on its last real token → (B, T), 0 elsewhere.

    Uses the mask, never token ids, so it is right when pad == eos: a response that ends
    with EOS gets the score on that EOS, not on the padding that follows it.
    """
    rewards = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device)
    rows = torch.arange(mask.shape[0], device=mask.device)
    rewards[rows, last_token_index(mask)] = scores.float()
    return rewards


def kl_shaped_rewards(scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, kl_coef: float) -> torch.Tensor:
    """r_t = −β·KL_t on every response token, plus the score on the last one (Ziegler et al. 2019) → (B, T)."""
    return place_score(scores, mask) - kl_coef * kl.float() * mask.float()


def clip_scores(scores: torch.Tensor, limit: float) -> torch.Tensor:
    """Clip scores to [−limit, limit] (no-op when limit <= 0)."""
    return scores.clamp(-limit, limit) if limit > 0 else scores


class RunningMoments:
    """Running mean and standard deviation of scores across batches (Chan et al. parallel update).

    Used to normalise reward-model scores over the course of RL; its state is checkpointed.
    """

    def __init__(self) -> None:
        self.mean = 0.0
        self.var = 1.0
        self.count = 0

    def update(self, values: torch.Tensor) -> tuple[float, float]:
        """Fold a batch into the running statistics; return the batch's (mean, std)."""
        values = values.detach().double().flatten()
        n = values.numel()
        batch_mean = float(values.mean())
        batch_var = float(values.var(unbiased=False)) if n > 1 else 0.0
        total = self.count + n
        delta = batch_mean - self.mean
        if self.count == 0:
            self.mean, self.var = batch_mean, batch_var
        else:
            m2 = self.var * self.count + batch_var * n + delta**2 * self.count * n / total
            self.mean += delta * n / total
            self.var = m2 / total
        self.count = total
        return batch_mean, math.sqrt(batch_var)

    @property
    def std(self) -> float:
        return math.sqrt(self.var)

    def normalize(self, values: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
        centred = values - self.mean if shift_mean else values
        return centred / (self.std + eps)

    def state_dict(self) -> dict:
        return {"mean": self.mean, "var": self.var, "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        self.mean, self.var, self.count = float(state["mean"]), float(state["var"]), int(state["count"])


def soft_overlong_penalty(lengths: torch.Tensor, max_length: int, buffer: int, factor: float = 1.0) -> torch.Tensor:
    """DAPO's soft overlong punishment (Yu et al. 2025) for responses of ``lengths`` tokens (B,) → (B,), ≤ 0.

    0 up to ``max_length − buffer`` tokens, then falling linearly to −``factor`` at ``max_length`` (and −``factor``
    beyond): ``factor·min(0, (max_length − buffer − L) / buffer)``, bounded below by −``factor``. Added to the
    score, it tells a response that it is running into the budget before it is cut. ``buffer`` 0: no penalty."""
    if buffer <= 0:
        return torch.zeros_like(lengths, dtype=torch.float32)
    if buffer > max_length:
        raise ValueError(f"overlong buffer {buffer} is longer than the budget of {max_length} tokens")
    over = (lengths.float() - (max_length - buffer)) / buffer  # ≤ 0 inside the safe length, 1 at the budget
    return -factor * over.clamp(min=0.0, max=1.0)
