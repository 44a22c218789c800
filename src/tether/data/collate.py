"""Batching: padding, masks and packing. Shapes in comments: B examples, T tokens."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from tether.data.datasets import PairExample, PromptExample, SFTExample, UnpairedExample


def _right_pad(rows: list[list[int]], value: int) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([list(r) + [value] * (width - len(r)) for r in rows], dtype=torch.long)


def collate_sft(examples: list["SFTExample"], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids`` (B, T), ``attention_mask`` (B, T), ``loss_mask`` (B, T) [+ ``position_ids``]."""
    batch = {
        "input_ids": _right_pad([e.input_ids for e in examples], pad_token_id),
        "attention_mask": _right_pad([[1] * len(e.input_ids) for e in examples], 0),
        "loss_mask": _right_pad([e.loss_mask for e in examples], 0),
    }
    if all(e.position_ids is not None for e in examples):
        batch["position_ids"] = _right_pad([e.position_ids for e in examples], 0)
    return batch


def pack_sft(examples: list["SFTExample"], max_length: int) -> list["SFTExample"]:
    """Greedy packing of consecutive examples into sequences of at most ``max_length`` tokens.

    ``position_ids`` restart at 0 for each packed document; the SFT forward passes them without an
    attention mask, so transformers builds a block-diagonal causal mask and no document attends to
    another. A document's first token is not scored (its loss mask is set to 0), as position 0 of an unpacked
    row is not: it would be predicted from the previous document. An example longer than ``max_length`` stays
    alone.
    """
    from tether.data.datasets import SFTExample

    packed: list[SFTExample] = []
    ids: list[int] = []
    mask: list[int] = []
    pos: list[int] = []
    for e in examples:
        if ids and len(ids) + len(e.input_ids) > max_length:
            packed.append(SFTExample(ids, mask, pos))
            ids, mask, pos = [], [], []
        ids = ids + e.input_ids
        mask = mask + [0] + e.loss_mask[1:]  # a document's first token has no context of its own: never scored
        pos = pos + list(range(len(e.input_ids)))
    if ids:
        packed.append(SFTExample(ids, mask, pos))
    return packed


def collate_pairs(examples: list["PairExample"], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Chosen sequences first, then rejected: ``input_ids`` (2B, T), ``attention_mask``, ``loss_mask``
    (1 on response tokens), ``margin`` (B,), ``has_margin`` (bool), ``response_lengths`` (2B,)."""
    sequences, masks = [], []
    for side in ("chosen_ids", "rejected_ids"):
        for e in examples:
            response = getattr(e, side)
            sequences.append(e.prompt_ids + response)
            masks.append([0] * len(e.prompt_ids) + [1] * len(response))
    return {
        "input_ids": _right_pad(sequences, pad_token_id),
        "attention_mask": _right_pad([[1] * len(s) for s in sequences], 0),
        "loss_mask": _right_pad(masks, 0),
        "margin": torch.tensor([e.margin or 0.0 for e in examples], dtype=torch.float32),
        "has_margin": any(e.margin is not None for e in examples),
        "response_lengths": torch.tensor([sum(m) for m in masks], dtype=torch.long),
    }


def collate_unpaired(examples: list["UnpairedExample"], pad_token_id: int) -> dict[str, torch.Tensor]:
    """``input_ids`` (B, T), ``attention_mask``, ``loss_mask`` on completion tokens, ``desirable`` (B,) bool."""
    sequences = [e.prompt_ids + e.completion_ids for e in examples]
    return {
        "input_ids": _right_pad(sequences, pad_token_id),
        "attention_mask": _right_pad([[1] * len(s) for s in sequences], 0),
        "loss_mask": _right_pad([[0] * len(e.prompt_ids) + [1] * len(e.completion_ids) for e in examples], 0),
        "desirable": torch.tensor([e.desirable for e in examples], dtype=torch.bool),
    }


def left_pad(sequences: list[list[int]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Token id lists LEFT-padded to one width: ``input_ids`` (B, T) and ``attention_mask`` for generation."""
    width = max(len(ids) for ids in sequences)
    input_ids = torch.full((len(sequences), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, ids in enumerate(sequences):
        n = len(ids)
        input_ids[i, width - n:] = torch.tensor(ids, dtype=torch.long)
        attention_mask[i, width - n:] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def collate_prompts(examples: list["PromptExample"], pad_token_id: int) -> dict[str, torch.Tensor]:
    """The examples' prompts LEFT-padded (:func:`left_pad`) for generation."""
    return left_pad([e.prompt_ids for e in examples], pad_token_id)
