"""The special tokens a model's outputs depend on: the ids that end a sampled response, and a reward model's pad.

**Stop ids.** Chat models often end a turn with a token other than the tokenizer's EOS, and list several in their
generation config: Llama-3's ``generation_config.eos_token_id`` is [128001, 128008, 128009] (``<|end_of_text|>``,
``<|eom_id|>``, ``<|eot_id|>``), Qwen2.5's [151645, 151643]. transformers' ``generate`` (left to its generation
config) and vLLM (always: it adds the generation config's EOS ids to every request's stop ids) stop at any of them,
so tether's samplers and masks use the same full set: a response ends at the first of them, and that token, the
one sampled, is kept as its last token. The list is de-duplicated in first-seen order; its first id is the primary
(the tokenizer's EOS where there is one).

**A reward model's pad token.** A reward model scores a sequence at its last real token. Transformers'
sequence-classification models find that token as the rightmost one that is not ``config.pad_token_id``, so a
reward model whose pad id is also an EOS id (what ``load_tokenizer`` gives a tokenizer without a pad token: Llama,
Mistral, GPT-2; SmolLM2 ships pad = EOS) reads the token *before* a final EOS in plain transformers. tether gives
every reward model it makes a pad token of its own (:data:`REWARD_PAD_TOKEN`, one new embedding row that no real
token ever attends to under right padding), so the saved directory scores exactly as tether does, wherever it is
loaded.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import torch

from tether.utils.distributed import unwrap


def as_stop_ids(*groups) -> list[int]:
    """Ints, iterables of ints and Nones, in any mix → the distinct ids, in first-seen order.

    ``as_stop_ids(2, [2, 7], None) == [2, 7]``; a 0-d or 1-d tensor counts as an int or a list."""
    out: list[int] = []
    for group in groups:
        if group is None:
            continue
        if hasattr(group, "tolist"):  # a tensor
            group = group.tolist()
        for token in (group if isinstance(group, Iterable) else [group]):
            if token is not None and int(token) not in out:
                out.append(int(token))
    return out


def config_stop_ids(source) -> list[int]:
    """``config.eos_token_id`` then ``generation_config.eos_token_id`` (each an int, a list or absent) of a model
    (a DDP / PEFT wrapper is looked through), a model config, a generation config, or a model directory."""
    if source is None:
        return []
    if isinstance(source, (str, Path)):
        return _directory_stop_ids(Path(source))
    model = unwrap(source) if isinstance(source, torch.nn.Module) else source  # (DDP)
    if hasattr(model, "get_base_model"):  # PEFT
        model = model.get_base_model()
    configs = [getattr(model, "config", None), getattr(model, "generation_config", None)]
    if not any(c is not None for c in configs):  # a config itself
        configs = [source]
    return as_stop_ids(*(getattr(config, "eos_token_id", None) for config in configs if config is not None))


def _directory_stop_ids(path: Path) -> list[int]:
    ids = []
    for name in ("config.json", "generation_config.json"):
        file = path / name
        if file.is_file():
            data = json.loads(file.read_text())
            ids.append(data.get("eos_token_id"))
    return as_stop_ids(*ids)


def stop_token_ids(model_or_config, tokenizer=None) -> list[int]:
    """Every id that ends a response of this model: the tokenizer's EOS first, then the model config's and the
    generation config's EOS ids (:func:`config_stop_ids`), de-duplicated."""
    return as_stop_ids(getattr(tokenizer, "eos_token_id", None), config_stop_ids(model_or_config))


REWARD_PAD_TOKEN = "<|reward_pad|>"


def reward_pad_token_id(tokenizer, eos_ids: list[int]) -> int:
    """The pad id a reward model should use: the tokenizer's own when it is not an EOS id, else
    :data:`REWARD_PAD_TOKEN`, added to ``tokenizer`` (in place) as its pad token."""
    pad = tokenizer.pad_token_id
    if pad is not None and pad not in eos_ids and pad not in as_stop_ids(tokenizer.eos_token_id):
        return pad
    tokenizer.add_special_tokens({"pad_token": REWARD_PAD_TOKEN})
    return tokenizer.pad_token_id


def fit_embeddings(model: torch.nn.Module, token_id: int) -> None:
    """Give ``model``'s input embeddings a row for ``token_id`` if it has none (a new pad token). The row's value
    never matters: a pad token after a sequence's last real token is not attended to by any real token."""
    rows = model.get_input_embeddings().weight.shape[0]
    if token_id >= rows:
        model.resize_token_embeddings(token_id + 1, mean_resizing=False)
