"""Sequences that share a prompt, run as one row: the prompt once, each continuation attending to it.

A preference pair's chosen and rejected responses follow the same prompt, and so do GRPO's K samples of one
prompt. Run separately, the prompt's tokens go through the model once per sequence; under causal attention
their hidden states do not depend on what follows, so computing them once is exact. The row of a group is

    [ prompt | continuation 1 | continuation 2 | ... ]   positions 0..p−1, then p.. again for each continuation

with a 4-D attention mask: a prompt token attends causally to the prompt; a continuation token attends to the
whole prompt and causally to its own continuation, never to another continuation. Every sequence's outputs
then equal its separate forward's (to float summation order). In the reward-model benchmark (prompt ≈ 28
tokens, responses ≈ 30) a pair costs 88 positions instead of 116.

A group is only shared when it saves positions overall (``MIN_SAVING``) and its row stays short enough for the
full masked attention square not to cost more than it saves (``max_width``). The first call for a model runs a
probe (a shared row against the separate forwards) and remembers the verdict: a model whose forward ignores a
custom 4-D mask (flash-attention kernels, some custom architectures) is run the usual way, with one note.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass

import torch

from tether.models.layout import PROBE_ERRORS, base_model, probed_once, rows_to_rearrange

MIN_SAVING = 0.15  # share when it removes at least this fraction of the padded batch's positions
WIDTH_PER_HIDDEN = 1.5  # a shared row at most this × hidden size wide (or the batch's width, if longer): beyond,
#                         its attention square costs more than a quarter of the row's linear layers
_verdicts: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # base model → custom 4-D masks are honoured


@dataclass(frozen=True)
class SharePlan:
    """Row ``b``'s real tokens (``start[b] : start[b] + length[b]`` of the padded batch) go to shared row
    ``row[b]``: its first ``prefix[b]`` tokens at columns ``0 : prefix[b]`` (the group's prompt), the rest at
    ``offset[b]`` onwards."""

    row: list[int]
    prefix: list[int]
    offset: list[int]
    start: list[int]
    length: list[int]
    n_rows: int
    width: int

    def columns(self, b: int) -> list[int]:
        """The shared-row column of each of row ``b``'s real tokens, in order."""
        p = self.prefix[b]
        return list(range(p)) + list(range(self.offset[b], self.offset[b] + self.length[b] - p))


def plan_prefix_sharing(input_ids: torch.Tensor, attention_mask: torch.Tensor, prefix_lengths: list[int],
                        max_width: int, min_saving: float = MIN_SAVING) -> SharePlan | None:
    """Group the rows whose first ``prefix_lengths[b]`` real tokens are the same, one shared row per group.

    ``prefix_lengths[b]``: how many of row b's leading real tokens may be shared (its prompt). A group wider than
    ``max_width`` is split into several rows. None when no two rows share a prompt, when sharing would not
    remove at least ``min_saving`` of the padded batch's positions, or when a row's real tokens are not
    contiguous."""
    spans = rows_to_rearrange(attention_mask)
    if spans is None:
        return None
    start, length = spans
    groups: dict[tuple, list[int]] = {}
    for b, ids in enumerate(input_ids.tolist()):
        p = min(prefix_lengths[b], length[b])
        key = (p, tuple(ids[start[b]:start[b] + p])) if p > 0 else ("alone", b)
        groups.setdefault(key, []).append(b)
    if all(len(members) == 1 for members in groups.values()):
        return None
    n = len(start)
    row, prefix, offset = [0] * n, [0] * n, [0] * n
    widths: list[int] = []
    for key, members in groups.items():
        p = key[0] if key[0] != "alone" else 0
        col = None
        for b in members:
            rest = length[b] - p
            if col is None or (col + rest > max_width and col > p):  # a new row for this group
                widths.append(p)
                col = p
            row[b], prefix[b], offset[b] = len(widths) - 1, p, col
            col += rest
            widths[-1] = col
    width = max(widths)
    if len(widths) * width > (1.0 - min_saving) * attention_mask.numel():
        return None
    return SharePlan(row, prefix, offset, start, length, len(widths), width)


def shared_inputs(input_ids: torch.Tensor, plan: SharePlan, pad_token_id: int,
                  dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The forward's inputs for the shared rows: ``input_ids``, ``position_ids`` (N, W) and the additive 4-D
    ``attention_mask`` (N, 1, W, W) in ``dtype`` (0 where a query may attend, the dtype's minimum elsewhere).

    Unused columns are padding that attends only to padding (never a fully masked query, whose softmax would be
    NaN); no real token attends to them."""
    device = input_ids.device
    # built as Python lists and converted once: a loop of small tensor writes costs more than the forward on
    # a small model
    ids = [[pad_token_id] * plan.width for _ in range(plan.n_rows)]
    positions = [[0] * plan.width for _ in range(plan.n_rows)]
    segments = [[-1] * plan.width for _ in range(plan.n_rows)]  # −1 pad, 0 prompt, b + 1 sequence b's continuation
    for b, row in enumerate(input_ids.tolist()):
        r, p, n, start, offset = plan.row[b], plan.prefix[b], plan.length[b], plan.start[b], plan.offset[b]
        tokens = row[start:start + n]
        ids[r][:p], segments[r][:p], positions[r][:p] = tokens[:p], [0] * p, range(p)
        ids[r][offset:offset + n - p] = tokens[p:]
        segments[r][offset:offset + n - p] = [b + 1] * (n - p)
        positions[r][offset:offset + n - p] = range(p, n)
    ids = torch.tensor(ids, dtype=input_ids.dtype, device=device)
    positions = torch.tensor(positions, dtype=torch.long, device=device)
    segment = torch.tensor(segments, dtype=torch.long, device=device)
    query, key = segment.unsqueeze(-1), segment.unsqueeze(-2)
    causal = torch.ones(plan.width, plan.width, dtype=torch.bool, device=device).tril()
    allowed = causal & ((key == query) | ((key == 0) & (query > 0)))
    mask = torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill_(~allowed, torch.finfo(dtype).min)
    return {"input_ids": ids, "position_ids": positions, "attention_mask": mask.unsqueeze(1)}


def column_map(plan: SharePlan, shape: tuple[int, int], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(shared row (B,), shared column (B, T)) of every position of the padded batch (−1 on its padding)."""
    columns = torch.full(shape, -1, dtype=torch.long, device=device)
    for b in range(shape[0]):
        columns[b, plan.start[b]:plan.start[b] + plan.length[b]] = torch.tensor(plan.columns(b), device=device)
    return torch.tensor(plan.row, device=device), columns


def per_position_outputs(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """(N, W, ·) outputs at every position: a causal LM's logits, a reward model's score head on every hidden
    state (read from the head's forward: the model itself returns the score of the last token only)."""
    base = base_model(model)
    if getattr(base, "score", None) is None or hasattr(base, "lm_head"):
        return model(**inputs, use_cache=False).logits
    captured: list[torch.Tensor] = []
    handle = base.score.register_forward_hook(lambda _m, _i, out: captured.append(out))
    try:
        model(**inputs, use_cache=False)
    finally:
        handle.remove()
    return captured[-1]


def _sharing_deviation(base: torch.nn.Module) -> float:
    """Two continuations of a three-token prompt, shared in one row, against each sequence alone."""
    embeddings = base.get_input_embeddings().weight
    vocab, device, dtype = embeddings.shape[0], embeddings.device, embeddings.dtype
    sequences = [[3, 9, 4, 7, 2], [3, 9, 4, 5, 8, 6]]
    ids = torch.tensor([[t % vocab for t in s] + [0] * (6 - len(s)) for s in sequences], device=device)
    mask = torch.tensor([[1] * len(s) + [0] * (6 - len(s)) for s in sequences], device=device)
    plan = plan_prefix_sharing(ids, mask, [3, 3], max_width=64, min_saving=0.0)
    shared = per_position_outputs(base, shared_inputs(ids, plan, 0, dtype))[0].float()
    worst = 0.0
    for b, s in enumerate(sequences):
        alone = per_position_outputs(base, {"input_ids": ids[b:b + 1, :len(s)]})[0].float()
        together = shared[plan.columns(b)]
        worst = max(worst, float(((together - alone).abs().max() / alone.abs().max().clamp(min=1.0))))
    return worst


def prefix_sharing_works(model: torch.nn.Module) -> bool:
    """Whether ``model``'s forward honours a custom 4-D mask with restarting positions (probed once per model).

    The forwards run on the model inside DDP / PEFT wrappers; under FSDP they are collectives, and every process
    runs the probe at the same call."""
    return probed_once(model, _verdicts, _sharing_deviation,
                       "prefix sharing is off for {name}: its forward does not honour a custom 4-D attention mask; "
                       "running each sequence in its own row", errors=(*PROBE_ERRORS, IndexError))


def max_shared_width(model: torch.nn.Module, batch_width: int) -> int:
    hidden = getattr(getattr(base_model(model), "config", None), "hidden_size", None) or batch_width
    return max(batch_width, int(WIDTH_PER_HIDDEN * hidden))


def maybe_share(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                prefix_lengths: Callable[[], list[int]], enabled: bool) -> SharePlan | None:
    """The sharing plan for this batch, or None (sharing off, the model fails the probe, nothing to share).

    The probe runs on the first call whatever this batch's plan: under FSDP its forwards are collectives, and every
    process must reach it at the same call (their batches, and so their plans, differ)."""
    if not enabled or not prefix_sharing_works(model):
        return None
    return plan_prefix_sharing(input_ids, attention_mask, prefix_lengths(),
                               max_shared_width(model, attention_mask.shape[1]))
