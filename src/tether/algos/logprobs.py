"""Token log-probabilities from logits, the causal shift, and entropy.

Computed in fp32 whatever the model's dtype: log-probs feed ratios and KL terms
where bf16 rounding is visible. ``log p(y) = z_y − logsumexp(z)`` avoids
materialising a second (B, T, V) tensor of log-softmax values; half-precision logits
are upcast one sequence at a time, so no full fp32 copy of (B, T, V) is made.

Alignment: a causal LM's output at position t is the distribution of token t + 1.
:func:`token_logprobs` takes logits already aligned with their labels;
:func:`shift_for_next_token` does the alignment; :func:`sequence_logprobs` does both.
"""

from __future__ import annotations

import torch

_FULL_PRECISION = (torch.float32, torch.float64)


def selected_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """z_y − logsumexp(z) in the logits' dtype: logits (..., V), labels (...) valid ids → (...); the caller picks the
    dtype (fp32 for log-probs that enter a ratio or a KL)."""
    picked = torch.gather(logits, -1, labels.unsqueeze(-1)).squeeze(-1)  # (...)
    return picked - torch.logsumexp(logits, dim=-1)  # (...)


def _gathered_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """logits (B, T, V), labels (B, T) valid ids → (B, T) in fp32 (fp64 for fp64 logits)."""
    if logits.dtype in _FULL_PRECISION:
        return selected_logprobs(logits, labels)
    if logits.shape[0] == 0:
        return selected_logprobs(logits.float(), labels)
    # half precision: upcast one sequence at a time, so the fp32 copy is (T, V), not (B, T, V)
    return torch.stack([selected_logprobs(row.float(), row_labels) for row, row_labels in zip(logits, labels)])


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """log p(labels[b, t]) = logits[b, t, y] − logsumexp(logits[b, t]) → (B, T); exactly 0.0 where mask == 0.

    The result is fp32 for fp32 / bf16 / fp16 logits (fp64 for fp64 logits).

    logits: (B, T, V) already ALIGNED with labels (B, T): logits[:, t] is the
    distribution of labels[:, t]. Use :func:`shift_for_next_token` first for a causal LM.
    mask: (B, T) 0/1 or bool, optional. Labels at masked positions may hold anything
    (e.g. -100; they are clamped into the vocabulary before the gather), and whatever the
    logits hold there (even inf/NaN) does not reach the returned values.
    """
    safe_labels = labels.clamp(min=0, max=logits.shape[-1] - 1)  # (B, T)
    logps = _gathered_logprobs(logits, safe_labels)  # (B, T)
    if mask is not None:
        logps = torch.where(mask.bool(), logps, torch.zeros_like(logps))  # (B, T)
    return logps


def shift_for_next_token(logits: torch.Tensor, input_ids: torch.Tensor,
                         mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The causal-LM shift: the output at position t predicts token t + 1.

    logits (B, T, V), input_ids (B, T), mask (B, T) over input_ids positions (1 on the
    tokens to score) → (logits[:, :-1] (B, T-1, V), input_ids[:, 1:] (B, T-1),
    mask[:, 1:] (B, T-1)), all aligned for :func:`token_logprobs`.
    """
    return logits[:, :-1, :], input_ids[:, 1:], mask[:, 1:]


def sequence_logprobs(logits: torch.Tensor, input_ids: torch.Tensor, loss_mask: torch.Tensor,
                      average: bool = False) -> torch.Tensor:
    """log π(y|x) = Σ_t loss_mask[t]·log p(input_ids[t] | input_ids[<t]) → (B,) fp32.

    logits (B, T, V) from the causal LM on input_ids (B, T); loss_mask (B, T) marks the
    tokens to score (e.g. the response). Position 0 has no context and is never scored.
    ``average=True`` divides by the number of scored tokens (:func:`count_tokens`); a
    sequence with no scored token then gives 0, not NaN.
    Independent of the padding side as long as loss_mask follows the tokens.
    """
    shifted_logits, labels, mask = shift_for_next_token(logits, input_ids, loss_mask)
    per_token = token_logprobs(shifted_logits, labels, mask)  # (B, T-1)
    total = per_token.sum(-1)  # (B,)
    if average:
        total = total / count_tokens(loss_mask).clamp(min=1).to(total.dtype)
    return total


def count_tokens(loss_mask: torch.Tensor) -> torch.Tensor:
    """Scored tokens per sequence after the shift: Σ_{t≥1} loss_mask[:, t] → (B,)."""
    return loss_mask[:, 1:].sum(-1)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """H = −Σ_v p_v log p_v = logsumexp(z) − Σ_v softmax(z)_v·z_v per position: logits (B, T, V) → (B, T) fp32.

    Vocabulary entries with logit −inf (p = 0) contribute 0, not NaN.
    """
    logits = logits.float()
    probs = torch.softmax(logits, dim=-1)  # (B, T, V)
    weighted = torch.where(probs > 0, probs * logits, torch.zeros_like(probs))  # (B, T, V)
    return torch.logsumexp(logits, dim=-1) - weighted.sum(-1)
