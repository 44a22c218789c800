"""Packed SFT sequences: each document attends only to itself, so the packed loss is the unpacked loss."""

import pytest
import torch

from tests.helpers import tiny_model_config
from tether.algos.losses.sft import sft_loss, sft_loss_from_logprobs
from tether.data import collate_sft, load_sft_dataset, pack_sft
from tether.models.loading import load_causal_lm, load_tokenizer
from tether.recipes.sft import _scored_logprobs, _scored_mask


def _loss(model, batch):
    return sft_loss_from_logprobs(_scored_logprobs(model, batch, padding_free=False), _scored_mask(batch),
                                  num_items=1)[0]


@pytest.mark.parametrize("completion_only", [True, False])
def test_packed_loss_equals_the_loss_of_the_documents_one_by_one(tmp_path, completion_only):
    """Also with the loss on every token: a document's first token is not predicted from the previous document."""
    tokenizer = load_tokenizer("embedded")
    rows = [{"prompt": f"Question number {i} about the sea?", "completion": "An answer " * (i + 1)} for i in range(5)]
    path = tmp_path / "s.jsonl"
    import json

    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    examples, _ = load_sft_dataset(path, tokenizer, max_length=256, completion_only_loss=completion_only)
    packed = pack_sft(examples, max_length=128)
    assert len(packed) < len(examples) and any(p.position_ids.count(0) >= 2 for p in packed)
    model = load_causal_lm(tiny_model_config(), seed=0, pad_token_id=tokenizer.pad_token_id).eval()
    pad = tokenizer.pad_token_id
    with torch.no_grad():
        batch = collate_sft(packed, pad)  # right-padded rows of several documents each
        packed_sum = _loss(model, batch)
        alone_sum = sum(_loss(model, collate_sft([e], pad)) for e in examples)
        # the same rows with a plain attention mask: documents would see each other and the loss would differ
        leaky = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                      position_ids=batch["position_ids"]).logits
        leaky_sum = sft_loss(leaky, batch["input_ids"], batch["loss_mask"], num_items=1)[0]
    packed_error, leaky_error = abs(float(packed_sum) - float(alone_sum)), abs(float(leaky_sum) - float(alone_sum))
    assert packed_error < 1e-6 * float(alone_sum), (packed_error, leaky_error)
    assert leaky_error > 20 * packed_error, (packed_error, leaky_error)
