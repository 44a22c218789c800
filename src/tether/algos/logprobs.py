"""Token log-probabilities from logits, the causal shift, and entropy.

Computed in fp32 whatever the model's dtype: log-probs feed ratios and KL terms
where bf16 rounding is visible. ``log p(y) = logit_y − logsumexp(logits)`` avoids
materialising a second (B, T, V) tensor of log-softmax values.
"""

from __future__ import annotations

import torch


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """log p(labels[b, t]) under logits[b, t] → (B, T) fp32; 0 where mask == 0.

    logits: (B, T, V) already ALIGNED with labels (B, T): logits[:, t] is the
    distribution of labels[:, t]. Use :func:`shift_for_next_token` first for a causal LM.
    Labels at masked positions may hold anything (e.g. -100).
    """
    logits = logits.float()
    safe_labels = labels.clamp(min=0, max=logits.shape[-1] - 1)
    picked = torch.gather(logits, -1, safe_labels.unsqueeze(-1)).squeeze(-1)  # (B, T)
    logps = picked - torch.logsumexp(logits, dim=-1)  # (B, T)
    if mask is not None:
        logps = logps * mask.to(logps.dtype)
    return logps


def shift_for_next_token(logits: torch.Tensor, input_ids: torch.Tensor, mask: torch.Tensor):
    """The causal-LM shift: the output at position t predicts token t + 1.

    logits (B, T, V), input_ids (B, T), mask (B, T) over input_ids positions →
    (logits[:, :-1], input_ids[:, 1:], mask[:, 1:]), all aligned.
    """
    return logits[:, :-1, :], input_ids[:, 1:], mask[:, 1:]


def sequence_logprobs(logits: torch.Tensor, input_ids: torch.Tensor, loss_mask: torch.Tensor,
                      average: bool = False) -> torch.Tensor:
    """Σ_t log p(input_ids[:, t] | input_ids[:, <t]) over positions with loss_mask == 1 → (B,) fp32.

    loss_mask (B, T) marks the tokens to score (e.g. the response); position 0 has no
    context and is never scored. ``average=True`` divides by the number of scored tokens.
    """
    shifted_logits, labels, mask = shift_for_next_token(logits, input_ids, loss_mask)
    per_token = token_logprobs(shifted_logits, labels, mask)  # (B, T-1)
    total = per_token.sum(-1)  # (B,)
    if average:
        total = total / mask.sum(-1).clamp(min=1).to(total.dtype)
    return total


def count_tokens(loss_mask: torch.Tensor) -> torch.Tensor:
    """Scored tokens per sequence after the shift → (B,)."""
    return loss_mask[:, 1:].sum(-1)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """H = logsumexp(z) − Σ softmax(z)·z per position → (B, T) fp32."""
    logits = logits.float()
    probs = torch.softmax(logits, dim=-1)
    return torch.logsumexp(logits, dim=-1) - (probs * logits).sum(-1)
