"""Scoring with reward models: one model or an ensemble of members.

A reward model is an HF ``AutoModelForSequenceClassification`` directory with
``num_labels=1``. An ensemble is a directory with ``ensemble.json`` listing member
directories (written by ``tether rm`` with ``ensemble_size > 1``); its score is the
members' mean, its disagreement their standard deviation, and its conservative score
``mean - k * std``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from tether.algos.losses.reward_model import ensemble_scores
from tether.models.loading import DTYPES, place, resolved_precision
from tether.models.precision import use_precision, weight_dtype
from tether.models.prefix_sharing import maybe_share, per_position_outputs, shared_inputs
from tether.models.scoring import base_model, padded_forward_inputs
from tether.models.special_tokens import stop_token_ids
from tether.utils.device import model_device
from tether.utils.logging import console
from tether.utils.resume import output_config


def pad_right(sequences: list[list[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) right-padded input ids and attention mask."""
    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        input_ids[row, :len(seq)] = torch.tensor(seq, dtype=torch.long)
        attention_mask[row, :len(seq)] = 1
    return input_ids, attention_mask


def last_real_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B,) column of each row's last real token: the rightmost 1 of the attention mask (never read from token ids,
    which cannot tell a padding EOS from the EOS that ends a response when pad == EOS)."""
    if not bool(attention_mask.bool().any(-1).all()):
        raise ValueError("a row without a single real token cannot be scored")
    columns = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    return (columns * attention_mask.bool()).argmax(-1)


def reward_forward(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                   prompt_lengths: list[int] | None = None) -> torch.Tensor:
    """(B,) fp32 scores, on the model's device: the score head on each sequence's last real token, as the attention
    mask says (:func:`last_real_index`), on every path. (Transformers' own pooling reads the rightmost token that
    is not the pad id, which is another token when pad == EOS and a sequence ends in EOS; reward models tether
    makes get a pad token of their own, see :func:`tether.models.loading.reward_pad_token_id`, so a saved model
    scores the same in plain transformers.) Right-padded rows run without the 2-D mask, which changes no real
    token's output (see ``padded_forward_inputs``).

    ``prompt_lengths`` (real tokens of each row's prompt): rows with the same prompt (a pair's chosen and
    rejected) run as one row, the prompt once (:mod:`tether.models.prefix_sharing`), where that saves positions;
    the head then reads each sequence's last token in the shared row."""
    device = model_device(model)  # the inputs follow the model
    input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
    if prompt_lengths is not None:
        plan = maybe_share(model, input_ids, attention_mask, lambda: prompt_lengths, enabled=True)
        if plan is not None:
            dtype = base_model(model).get_input_embeddings().weight.dtype
            scores = per_position_outputs(model, shared_inputs(input_ids, plan, 0, dtype))[..., 0]  # (N, W)
            last = [plan.columns(b)[-1] for b in range(input_ids.shape[0])]  # each sequence's last token
            return scores[plan.row, last].float()
    inputs = {"input_ids": input_ids, **padded_forward_inputs(attention_mask)}
    scores = per_position_outputs(model, inputs)[..., 0]  # (B, T)
    rows = torch.arange(input_ids.shape[0], device=device)
    return scores[rows, last_real_index(attention_mask)].float()


@torch.no_grad()
def score_sequences(model, sequences: list[list[int]], pad_token_id: int, batch_size: int = 8) -> torch.Tensor:
    """Score token sequences (prompt + response ids) → (N,) fp32, on the CPU."""
    was_training = model.training
    model.eval()
    scores = []
    for start in range(0, len(sequences), batch_size):
        input_ids, attention_mask = pad_right(sequences[start:start + batch_size], pad_token_id)
        scores.append(reward_forward(model, input_ids, attention_mask).cpu())
    model.train(was_training)
    return torch.cat(scores) if scores else torch.zeros(0)


def ensemble_members(model_dir: str | Path) -> list[Path]:
    """Member directories of an ensemble directory, or ``[model_dir]`` for a single model."""
    model_dir = Path(model_dir)
    manifest = model_dir / "ensemble.json"
    if manifest.is_file():
        members = json.loads(manifest.read_text())["members"]
        return [model_dir / m for m in members]
    return [model_dir]


def recorded_chat_templates(member_dirs: list[Path]) -> dict[str, str | None]:
    """Each reward model's ``data.chat_template`` as its ``tether.json`` records it (the rendering its training pairs
    had), by directory; None where nothing is recorded (a model trained elsewhere)."""
    return {str(d): (output_config(d) or {}).get("data", {}).get("chat_template") for d in member_dirs}


def load_reward_models(model_dir: str | Path, precision: str = "fp32") -> list:
    """Load a reward model directory (or every member of an ensemble) for scoring, in eval mode, on this process's
    device, computing in ``precision`` (``model.precision``'s values; :mod:`tether.models.precision`)."""
    from transformers import AutoModelForSequenceClassification

    mode = resolved_precision(precision)
    dtype = DTYPES[weight_dtype(mode, "float32")]

    models = []
    for member in ensemble_members(model_dir):
        if not (member / "config.json").is_file():
            raise FileNotFoundError(f"{member} is not a reward model directory (no config.json)")
        model = AutoModelForSequenceClassification.from_pretrained(member, use_safetensors=True, dtype=dtype)
        if model.config.num_labels != 1:
            raise ValueError(f"{member} has num_labels={model.config.num_labels}; a reward model has 1")
        if model.config.pad_token_id is not None and model.config.pad_token_id in stop_token_ids(member):
            console.print(f"[yellow]note: {member} pads with its EOS id ({model.config.pad_token_id}): tether scores "
                          "each sequence's last real token (by the attention mask), while plain transformers' pooling "
                          "reads the last token that is not EOS. Reward models trained by tether have a pad token of "
                          "their own and score the same in both.[/]")
        models.append(use_precision(place(model), mode).eval())
    return models


@dataclass
class EnsembleScores:
    mean: torch.Tensor          # (N,)
    std: torch.Tensor           # (N,) disagreement between members (0 for one model)
    conservative: torch.Tensor  # (N,) mean - k * std
    members: torch.Tensor       # (M, N)


def score_with_members(models: list, sequences: list[list[int]], pad_token_id: int, batch_size: int = 8,
                       k: float = 1.0) -> EnsembleScores:
    member_scores = torch.stack([score_sequences(m, sequences, pad_token_id, batch_size) for m in models])
    stats = ensemble_scores(member_scores, k=k)
    return EnsembleScores(stats["mean"], stats["std"], stats["conservative"], member_scores)
