"""Supervised fine-tuning loss: next-token NLL on the scored (completion) tokens."""

from __future__ import annotations

import torch

from tether.algos.logprobs import shift_for_next_token, token_logprobs


def sft_loss(logits: torch.Tensor, input_ids: torch.Tensor, loss_mask: torch.Tensor,
             num_items: float | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Mean NLL per scored token.

    logits (B, T, V), input_ids (B, T), loss_mask (B, T) over input_ids positions
    (1 on completion tokens). With ``num_items`` (the scored-token count of the whole
    optimizer step) the loss is Σ NLL / num_items, so summing the micro-batch losses of
    a gradient-accumulation step gives exactly the big-batch mean.
    """
    shifted_logits, labels, mask = shift_for_next_token(logits, input_ids, loss_mask)
    nll = -token_logprobs(shifted_logits, labels, mask)  # (B, T-1), 0 where unscored
    tokens = mask.sum()
    denominator = num_items if num_items is not None else tokens.clamp(min=1)
    loss = nll.sum() / denominator
    mean_nll = nll.sum().detach() / tokens.clamp(min=1)
    return loss, {"loss/nll": mean_nll, "tokens": tokens.detach().float()}
