"""How a padded batch's real tokens lie, and probes of what a model's forward accepts.

The layer under :mod:`tether.models.scoring` and :mod:`tether.models.prefix_sharing`: where each row's real tokens
are (:func:`real_spans`), packing them first-fit-decreasing into fewer rows (:func:`plan_packing`, :func:`pack`),
positions that ignore left padding (:func:`position_ids`), the transformers model inside DDP / PEFT wrappers
(:func:`base_model`), and a once-per-model probe (:func:`probed_once`) of whether a layout gives the plain forward's
logits (:func:`packing_isolates_documents`).
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import torch

from tether.utils.distributed import unwrap
from tether.utils.logging import console

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


def rows_to_rearrange(attention_mask: torch.Tensor) -> tuple[list[int], list[int]] | None:
    """:func:`real_spans` of a batch whose rows could be laid out afresh (packed, or prompts shared): None for a
    batch of fewer than two rows or a row whose real tokens are not contiguous."""
    if attention_mask.dim() != 2 or attention_mask.shape[0] < 2:
        return None
    return real_spans(attention_mask)


def plan_packing(attention_mask: torch.Tensor, min_saving: float = MIN_SAVING) -> PackPlan | None:
    """First-fit-decreasing packing of the rows' real tokens into rows of the batch's width.

    None when packing would not remove at least ``min_saving`` of the positions, or a row's real tokens are not
    contiguous (a mask this module cannot pack)."""
    spans = rows_to_rearrange(attention_mask)
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
