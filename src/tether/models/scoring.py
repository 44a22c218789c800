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

import inspect
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import torch

from tether.algos.logprobs import _selected_logprobs, entropy_from_logits
from tether.utils.device import model_device

MIN_SAVING = 0.15  # pack when it removes at least this fraction of the padded positions
_verdicts: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # base model → packing isolates documents


@dataclass(frozen=True)
class PackPlan:
    """Where each row's real tokens go: row ``b``'s tokens ``start[b] : start[b] + length[b]`` of the padded
    batch become packed row ``bin[b]``, columns ``offset[b] : offset[b] + length[b]``."""

    bin: list[int]
    offset: list[int]
    start: list[int]
    length: list[int]
    n_bins: int
    width: int


def real_spans(attention_mask: torch.Tensor) -> tuple[list[int], list[int]] | None:
    """(first real position, number of real tokens) per row; None if some row's real tokens are not contiguous."""
    real = attention_mask.bool()
    lengths = real.sum(-1)
    first = torch.where(lengths > 0, real.int().argmax(-1), torch.zeros_like(lengths))
    columns = torch.arange(real.shape[1], device=real.device).unsqueeze(0)
    inside = (columns >= first.unsqueeze(-1)) & (columns < (first + lengths).unsqueeze(-1))
    if not torch.equal(inside, real):
        return None
    return first.tolist(), lengths.tolist()


def plan_packing(attention_mask: torch.Tensor, min_saving: float = MIN_SAVING) -> PackPlan | None:
    """First-fit-decreasing packing of the rows' real tokens into rows of the batch's width.

    None when packing would not remove at least ``min_saving`` of the positions, or a row's real tokens are not
    contiguous (a mask this module cannot pack)."""
    if attention_mask.dim() != 2 or attention_mask.shape[0] < 2:
        return None
    spans = real_spans(attention_mask)
    if spans is None:
        return None
    start, length = spans
    width = max(length)
    if width == 0:
        return None
    order = sorted(range(len(length)), key=lambda b: (-length[b], b))
    fill: list[int] = []
    bins, offsets = [0] * len(length), [0] * len(length)
    for b in order:
        target = next((i for i, used in enumerate(fill) if used + length[b] <= width), None)
        if target is None:
            target = len(fill)
            fill.append(0)
        bins[b], offsets[b] = target, fill[target]
        fill[target] += length[b]
    n_bins = len(fill)
    if n_bins * width > (1.0 - min_saving) * attention_mask.numel():
        return None
    return PackPlan(bins, offsets, start, length, n_bins, width)


def pack(input_ids: torch.Tensor, plan: PackPlan, pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The packed (n_bins, width) ``input_ids`` and ``position_ids`` (restarting at 0 for each document; every
    unused slot is a one-token document at position 0, which no real token attends to)."""
    device = input_ids.device
    ids = torch.full((plan.n_bins, plan.width), pad_token_id, dtype=input_ids.dtype, device=device)
    positions = torch.zeros((plan.n_bins, plan.width), dtype=torch.long, device=device)
    for b in range(input_ids.shape[0]):
        n, col = plan.length[b], plan.offset[b]
        ids[plan.bin[b], col:col + n] = input_ids[b, plan.start[b]:plan.start[b] + n]
        positions[plan.bin[b], col:col + n] = torch.arange(n, device=device)
    return ids, positions


def right_padded(attention_mask: torch.Tensor) -> bool:
    """Every row's real tokens start at column 0 and are contiguous (padding, if any, only on the right)."""
    spans = real_spans(attention_mask)
    return spans is not None and not any(spans[0])


def padded_forward_inputs(attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """The mask arguments of a causal LM's forward on padded rows.

    Right-padded rows need none: under the causal mask a real token never attends to the padding after it, so
    the real tokens' outputs are the same without the 2-D mask (up to the rounding of another attention kernel),
    and attention takes the faster causal path. Otherwise: the mask, and positions that start at 0 at each row's
    first real token."""
    if right_padded(attention_mask):
        return {}
    return {"attention_mask": attention_mask, "position_ids": position_ids(attention_mask)}


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that ignore left padding: 0 at each sequence's first real token (as generate uses)."""
    return (attention_mask.cumsum(-1) - 1).clamp(min=0)


def base_model(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model inside DDP and PEFT wrappers."""
    from tether.utils.distributed import unwrap

    model = unwrap(model)
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def accepts_logits_to_keep(model: torch.nn.Module) -> bool:
    try:
        return "logits_to_keep" in inspect.signature(base_model(model).forward).parameters
    except (TypeError, ValueError):
        return False


PROBE_ERRORS = (TypeError, ValueError, RuntimeError, AttributeError)  # a forward that fails a probe: no verdict


@torch.no_grad()
def probed_once(model: torch.nn.Module, verdicts: weakref.WeakKeyDictionary,
                deviation: Callable[[torch.nn.Module], float], off_note: str,
                errors: tuple[type[Exception], ...] = PROBE_ERRORS) -> bool:
    """Whether ``model`` passes a layout probe, run once per base model (in eval mode) and then remembered.

    ``deviation(base)``: the probe's largest output difference from the plain forward, relative to the outputs'
    scale; it passes below 1e-3 (fp32 / fp64 weights) or 5e-2 (half precision). A probe that raises one of
    ``errors`` fails. A failing model gets ``off_note`` printed once."""
    base = base_model(model)
    if base in verdicts:
        return verdicts[base]
    verdict = False
    was_training = base.training
    base.eval()
    try:
        dtype = base.get_input_embeddings().weight.dtype
        tolerance = 1e-3 if dtype in (torch.float32, torch.float64) else 5e-2
        verdict = bool(deviation(base) < tolerance)
    except errors:
        verdict = False
    finally:
        base.train(was_training)
    if not verdict:
        from tether.utils.logging import console

        console.print(f"[yellow]{off_note.format(name=type(base).__name__)}[/]")
    verdicts[base] = verdict
    return verdict


def _packing_deviation(base: torch.nn.Module) -> float:
    """Two short documents packed in one row (restarting positions, no mask) against each alone."""
    vocab = base.get_input_embeddings().weight.shape[0]
    device = base.get_input_embeddings().weight.device
    docs = [(torch.arange(5) * 7 + 3) % vocab, (torch.arange(7) * 11 + 5) % vocab]
    alone = [base(input_ids=d[None].to(device), use_cache=False).logits[0].float() for d in docs]
    ids = torch.cat(docs)[None].to(device)
    positions = torch.cat([torch.arange(len(d)) for d in docs])[None].to(device)
    packed = base(input_ids=ids, position_ids=positions, use_cache=False).logits[0].float()
    together = torch.cat(alone)
    return float((packed - together).abs().max() / together.abs().max().clamp(min=1.0))


def packing_isolates_documents(model: torch.nn.Module) -> bool:
    """Whether ``model``'s forward keeps packed documents apart (probed once per model, then remembered)."""
    return probed_once(model, _verdicts, _packing_deviation,
                       "padding-free scoring is off for {name}: its forward does not keep packed documents apart; "
                       "scoring padded rows")


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
        from tether.models.prefix_sharing import maybe_share

        shared = maybe_share(model, input_ids, attention_mask, lambda: prompt_lengths(score, real), share_prefixes)
    if position_ids is None and padding_free and packing_isolates_documents(model):
        plan = plan_packing(attention_mask)
    if shared is not None and plan is not None:  # the layout with fewer positions
        plan, shared = (None, shared) if shared.n_rows * shared.width <= plan.n_bins * plan.width else (plan, None)
    # the output at column c is the distribution of the token at c + 1: ``predicting`` is the column of the
    # token before each scored one, in the layout the model runs
    if shared is not None:
        from tether.models.prefix_sharing import column_map, shared_inputs

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
    out[score] = _selected_logprobs(picked, input_ids[rows, cols])
    if not return_entropy:
        return out
    entropy = torch.zeros_like(out)
    entropy[score] = entropy_from_logits(picked)
    return out, entropy
