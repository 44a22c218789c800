"""Token log-probs of a causal LM on a padded batch, computed without the padding's cost.

Every recipe that scores tokens (SFT's loss, DPO's policy and reference log-probs, GRPO / PPO's policy, old
and reference log-probs) goes through :func:`scored_logprobs`. Two savings, each exact:

1. **The vocabulary head only where a token is scored.** A causal LM's output at position t is the
   distribution of token t + 1; only the positions that predict a scored token (a completion, a response)
   need the head (d × V multiply-adds per position, a fifth of SmolLM2's forward) and the log-softmax.
   The head is given those (row, position) hidden states alone (:func:`logits_at`, a pre-hook on the model's
   output embedding), not every position of a column that some row scores: with packed or shared rows of
   different layouts nearly every column is scored by some row, and the head would run on them all.
2. **Padding-free rows.** The rows' real tokens are packed first-fit-decreasing into as few rows of the
   batch's length as they fit in, each document with positions restarting at 0, and the forward runs
   without a 2-D attention mask and without a cache, so transformers builds a block-diagonal causal mask
   from the restarting positions (each document attends only to itself). Packing is used when it removes
   at least 15% of the positions; its attention is a full masked square per packed row instead of a causal
   one per padded row, which that margin pays for at the lengths RLHF batches have.

Packing is used only for models whose forward has been seen to isolate packed documents: the first call
for a model runs a probe (two short documents packed in one row against each alone, logits within
tolerance) and remembers the verdict; a model that fails it (another architecture, a custom forward) is
scored with padded rows, with one console note. ``padding_free=False`` turns packing off.

Positions follow the attention mask (0 at each row's first real token, as ``generate`` uses), so left- and
right-padded batches give the same log-probs as the padded forward with ``position_ids``. All log-probs
are fp32 (see :mod:`tether.algos.logprobs`).
"""

from __future__ import annotations

import torch

from tether.algos.logprobs import entropy_from_logits, selected_logprobs
from tether.models.layout import (  # noqa: F401 - re-exported: scoring's callers import them from here too
    MIN_SAVING,
    PROBE_ERRORS,
    PackPlan,
    accepts_logits_to_keep,
    base_model,
    pack,
    packing_isolates_documents,
    padded_forward_inputs,
    plan_packing,
    probed_once,
    real_spans,
    right_padded,
)
from tether.models.prefix_sharing import column_map, maybe_share, shared_inputs
from tether.utils.device import model_device


def logits_at(model: torch.nn.Module, kwargs: dict, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """The logits of ``model(**kwargs)`` at positions (rows[m], cols[m]) → (M, V), the vocabulary head run on
    those M hidden states only.

    A forward pre-hook on the output embedding swaps its (B, T, H) input for the (1, M, H) selected states, so
    whatever the model does after the head (a logit scale, soft-capping) still applies. A model whose head is
    not called once on (B, T, H) states (no output embedding, a custom forward) gets the full logits, then the
    selection: slower, the same values."""
    base = base_model(model)
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    batch, length = kwargs["input_ids"].shape
    calls: list[bool] = []

    def select(_module, args):
        hidden = args[0]
        fits = not calls and hidden.dim() == 3 and tuple(hidden.shape[:2]) == (batch, length)
        calls.append(fits)
        return (hidden[rows, cols].unsqueeze(0), *args[1:]) if fits else None

    if isinstance(head, torch.nn.Module):
        handle = head.register_forward_pre_hook(select)
        try:
            logits = model(**kwargs).logits
        finally:
            handle.remove()
        if calls == [True] and logits.shape[:2] == (1, rows.numel()):
            return logits[0]
        if not any(calls) and logits.shape[:2] == (batch, length):  # the head saw its usual input: select after
            return logits[rows, cols]
    keep = torch.unique(cols)  # sorted
    if accepts_logits_to_keep(model):
        return model(**kwargs, logits_to_keep=keep).logits[rows, torch.searchsorted(keep, cols)]
    return model(**kwargs).logits[rows, cols]


def prompt_lengths(score: torch.Tensor, real: torch.Tensor) -> list[int]:
    """Real tokens before each row's first scored token (B,): the part of the row a continuation follows."""
    lengths = real.sum(-1)
    first_real = torch.where(lengths > 0, real.int().argmax(-1), torch.zeros_like(lengths))
    first_scored = score.int().argmax(-1)
    return torch.where(score.any(-1), first_scored - first_real, lengths).tolist()


def scored_logprobs(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    score_mask: torch.Tensor, temperature: float = 1.0, position_ids: torch.Tensor | None = None,
                    padding_free: bool = True, pad_token_id: int = 0, return_entropy: bool = False,
                    share_prefixes: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """log π(input_ids[b, t] | input_ids[b, <t]) at the scored positions → (B, T) fp32, exactly 0 elsewhere.

    input_ids, attention_mask (1 on real tokens; left, right or both padding), score_mask (B, T): 1 on the
    tokens to score, aligned with ``input_ids`` (a completion's tokens, a response's). Position 0 is never
    scored (it has no context); a scored token must follow a real token of its row. Logits are divided by
    ``temperature`` (the sampling temperature) before the log-softmax. ``position_ids``: rows that already
    hold packed documents (SFT packing): they are used as given, without a 2-D mask and without re-packing.
    ``return_entropy``: also the entropy of each scored position's distribution (B, T), 0 elsewhere.
    ``share_prefixes``: rows with the same tokens before their first scored token run as one row, the prompt once
    (:mod:`tether.models.prefix_sharing`), when that saves more positions than packing.
    The inputs may be on any device: they are moved to the model's, and the outputs are there.
    """
    if input_ids.shape != attention_mask.shape or input_ids.shape != score_mask.shape:
        raise ValueError(f"scored_logprobs: input_ids {tuple(input_ids.shape)}, attention_mask "
                         f"{tuple(attention_mask.shape)} and score_mask {tuple(score_mask.shape)} must have one shape")
    device = model_device(model)  # the inputs follow the model (batches are built on the CPU)
    input_ids, attention_mask, score_mask = input_ids.to(device), attention_mask.to(device), score_mask.to(device)
    if position_ids is not None:
        position_ids = position_ids.to(device)
    real = attention_mask.bool()
    score = score_mask.bool() & real
    score[:, 0] = False
    if bool((score[:, 1:] & ~real[:, :-1]).any()):
        raise ValueError("scored_logprobs: a scored token follows a padding position (its context is not in the row)")
    rows, cols = score.nonzero(as_tuple=True)  # row-major: the order of out[score]
    plan = shared = None
    # probe first, whatever this batch's plan: under FSDP the probe's forward is a collective, and every process
    # must run it at the same call (their batches, and so their plans, differ)
    if position_ids is None:
        shared = maybe_share(model, input_ids, attention_mask, lambda: prompt_lengths(score, real), share_prefixes)
    if position_ids is None and padding_free and packing_isolates_documents(model):
        plan = plan_packing(attention_mask)
    if shared is not None and plan is not None:  # the layout with fewer positions
        plan, shared = (None, shared) if shared.n_rows * shared.width <= plan.n_bins * plan.width else (plan, None)
    # the output at column c is the distribution of the token at c + 1: ``predicting`` is the column of the
    # token before each scored one, in the layout the model runs
    if shared is not None:
        dtype = base_model(model).get_input_embeddings().weight.dtype
        kwargs = dict(**shared_inputs(input_ids, shared, pad_token_id, dtype), use_cache=False)
        shared_row, shared_col = column_map(shared, tuple(score.shape), input_ids.device)
        at_row, predicting = shared_row[rows], shared_col[rows, cols - 1]
    elif plan is not None:
        ids, positions = pack(input_ids, plan, pad_token_id)
        shift = torch.tensor([plan.offset[b] - plan.start[b] for b in range(input_ids.shape[0])],
                             device=input_ids.device)
        bins = torch.tensor(plan.bin, device=input_ids.device)
        at_row, predicting = bins[rows], cols + shift[rows] - 1
        kwargs = dict(input_ids=ids, position_ids=positions, use_cache=False)
    elif position_ids is not None:  # already-packed rows
        at_row, predicting = rows, cols - 1
        kwargs = dict(input_ids=input_ids, position_ids=position_ids, use_cache=False)
    else:
        at_row, predicting = rows, cols - 1
        kwargs = dict(input_ids=input_ids, use_cache=False, **padded_forward_inputs(attention_mask))
    picked = logits_at(model, kwargs, at_row, predicting)  # (M, V)
    # (the model's logits are freed here: only the scored rows of them are kept, once, in fp32)
    picked = picked if picked.dtype == torch.float64 else picked.float()  # fp32 (fp64 stays)
    if temperature != 1.0:
        picked = picked / temperature
    out = torch.zeros(score.shape, dtype=picked.dtype, device=input_ids.device)
    out[score] = selected_logprobs(picked, input_ids[rows, cols])
    if not return_entropy:
        return out
    entropy = torch.zeros_like(out)
    entropy[score] = entropy_from_logits(picked)
    return out, entropy
