"""Supervised fine-tuning loss: next-token NLL on the scored (completion) tokens.

    loss = −Σ_{b,t} m[b,t]·log p(y[b,t] | y[b,<t]) / N

with m the shifted loss mask and N the number of scored tokens of this batch, or, under
gradient accumulation, of the whole optimizer step (``num_items``). Dividing every
micro-batch by the step's total makes Σ micro-batch losses equal the big-batch mean
exactly, even when micro-batches hold different numbers of tokens (dividing each by its
own count would over-weight the tokens of short micro-batches).
"""

from __future__ import annotations

import torch

from tether.algos.logprobs import shift_for_next_token, token_logprobs


def sft_loss(logits: torch.Tensor, input_ids: torch.Tensor, loss_mask: torch.Tensor,
             num_items: int | float | torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Mean NLL per scored token → (scalar loss, metrics).

    logits (B, T, V) of the causal LM on input_ids (B, T); loss_mask (B, T) over
    input_ids positions (1 on completion tokens). With ``num_items`` (the scored-token
    count of the whole optimizer step) the loss is Σ NLL / num_items. Without it, a batch
    with no scored token raises ValueError (it would silently train on nothing).
    metrics: "loss/nll" (this batch's mean NLL per token), "tokens" (its scored tokens).
    """
    shifted_logits, labels, mask = shift_for_next_token(logits, input_ids, loss_mask)
    return sft_loss_from_logprobs(token_logprobs(shifted_logits, labels, mask), mask, num_items)


def sft_loss_from_logprobs(logps: torch.Tensor, mask: torch.Tensor,
                           num_items: int | float | torch.Tensor | None = None
                           ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """:func:`sft_loss` from the scored tokens' log-probs: logps (B, T) fp32, 0 where ``mask`` (B, T) is 0 (as
    :func:`tether.models.scoring.scored_logprobs` returns them, or the shifted ones)."""
    nll = -logps  # (B, T), 0 where unscored
    nll_sum = nll.sum()  # ()
    tokens = mask.to(nll.dtype).sum()  # ()
    if num_items is None:
        if tokens.item() == 0:
            raise ValueError("sft_loss: the loss mask scores no token (after the causal shift); nothing to learn from")
        denominator: int | float | torch.Tensor = tokens
    else:
        if float(num_items) <= 0:
            raise ValueError(f"sft_loss: num_items must be positive, got {float(num_items)}")
        denominator = num_items
    metrics = {"loss/nll": nll_sum.detach() / tokens.clamp(min=1), "tokens": tokens.detach()}
    return nll_sum / denominator, metrics
