"""Packed SFT sequences: each document attends only to itself, so the packed loss is the unpacked loss."""

import torch

from tests.helpers import tiny_model_config
from tether.algos.losses.sft import sft_loss
from tether.data import collate_sft, load_sft_dataset, pack_sft
from tether.models.loading import load_causal_lm, load_tokenizer
from tether.recipes.sft import _forward_logits


def test_packed_loss_equals_the_loss_of_the_documents_one_by_one(tmp_path):
    tokenizer = load_tokenizer("embedded")
    rows = [{"prompt": f"Question number {i} about the sea?", "completion": "An answer " * (i + 1)} for i in range(5)]
    path = tmp_path / "s.jsonl"
    import json

    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    examples, _ = load_sft_dataset(path, tokenizer, max_length=256)
    packed = pack_sft(examples, max_length=128)
    assert len(packed) < len(examples) and any(p.position_ids.count(0) >= 2 for p in packed)
    model = load_causal_lm(tiny_model_config(), seed=0, pad_token_id=tokenizer.pad_token_id).eval()
    pad = tokenizer.pad_token_id
    with torch.no_grad():
        batch = collate_sft(packed, pad)  # right-padded rows of several documents each
        packed_sum = sft_loss(_forward_logits(model, batch), batch["input_ids"], batch["loss_mask"], num_items=1)[0]
        alone_sum = sum(sft_loss(_forward_logits(model, b), b["input_ids"], b["loss_mask"], num_items=1)[0]
                        for b in (collate_sft([e], pad) for e in examples))
        # the same rows with a plain attention mask: documents would see each other and the loss would differ
        leaky = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                      position_ids=batch["position_ids"]).logits
        leaky_sum = sft_loss(leaky, batch["input_ids"], batch["loss_mask"], num_items=1)[0]
    packed_error, leaky_error = abs(float(packed_sum) - float(alone_sum)), abs(float(leaky_sum) - float(alone_sum))
    assert packed_error < 1e-6 * float(alone_sum), (packed_error, leaky_error)
    assert leaky_error > 20 * packed_error, (packed_error, leaky_error)
