"""A reward model reads each sequence's last real token on every path, and in plain transformers, when the
tokenizer's pad token is its EOS (SmolLM2, and every tokenizer without a pad token after ``load_tokenizer``)."""

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from tests.helpers import tiny_model_config
from tether.models.loading import load_reward_model, load_tokenizer, resolve_model_path, save_model
from tether.models.reward import pad_right, reward_forward, score_sequences
from tether.models.special_tokens import REWARD_PAD_TOKEN, reward_pad_token_id, stop_token_ids


@pytest.fixture(scope="module")
def tokenizer_and_model():
    tokenizer = load_tokenizer("embedded")
    eos = tokenizer.eos_token_id
    assert tokenizer.pad_token_id == eos  # SmolLM2's own tokenizer pads with <|im_end|>, its EOS
    pad = reward_pad_token_id(tokenizer, stop_token_ids(resolve_model_path("embedded", False), tokenizer))
    assert pad != eos and tokenizer.pad_token == REWARD_PAD_TOKEN and pad == 49152  # one past SmolLM2's vocabulary
    model = load_reward_model(tiny_model_config(), seed=3, pad_token_id=pad).eval()
    assert model.get_input_embeddings().weight.shape[0] == 49153 and model.config.pad_token_id == pad
    return tokenizer, model


def _sequences(eos):
    """Two pairs, each sharing its prompt; every sequence ends in EOS, two of them in EOS twice."""
    prompt_a, prompt_b = [5, 17, 33, 8], [40, 41]
    return ([prompt_a + [70, 71, eos], prompt_b + [90, eos, eos], prompt_a + [72, eos], prompt_b + [91, 92, 93, eos]],
            [4, 2, 4, 2])


def _alone(model, sequences):
    """The independent reference: plain transformers on each sequence alone (batch 1, no padding: its pooling
    reads the last token, which no pad id can hide)."""
    with torch.no_grad():
        return torch.stack([model(input_ids=torch.tensor([s])).logits[0, 0] for s in sequences])


def test_every_path_reads_the_final_eos_when_pad_was_eos(tokenizer_and_model, tmp_path):
    tokenizer, model = tokenizer_and_model
    sequences, prompt_lengths = _sequences(tokenizer.eos_token_id)
    expected = _alone(model, sequences)
    ids, mask = pad_right(sequences, model.config.pad_token_id)
    with torch.no_grad():
        shared = reward_forward(model, ids, mask, prompt_lengths)  # the pair rows of reward-model training
        padded = reward_forward(model, ids, mask)  # PPO / GRPO rewards, best-of-N, tether score, the RM report
    scored = score_sequences(model, sequences, model.config.pad_token_id, batch_size=3)
    for name, got in (("shared", shared), ("padded", padded), ("score_sequences", scored)):
        assert torch.allclose(got, expected, atol=1e-5), (name, got, expected)
    # the EOS is read, not the token before it: the scores of "... 71, eos" and "... 71" differ
    assert not torch.allclose(expected[0], _alone(model, [sequences[0][:-1]])[0], atol=1e-3)

    # the saved directory in plain transformers, padded by its own tokenizer, scores the same
    save_model(model, tokenizer, tmp_path / "rm", {"recipe": "test"})
    plain = AutoModelForSequenceClassification.from_pretrained(tmp_path / "rm").eval()
    plain_tokenizer = AutoTokenizer.from_pretrained(tmp_path / "rm")
    assert plain_tokenizer.pad_token_id == model.config.pad_token_id == plain.config.pad_token_id
    batch = plain_tokenizer.pad({"input_ids": sequences}, return_tensors="pt")
    with torch.no_grad():
        hf = plain(**batch).logits[:, 0]
    assert torch.allclose(hf, expected, atol=1e-5), (hf, expected)


def test_a_pad_token_that_is_not_an_eos_is_kept():
    tokenizer = load_tokenizer("embedded")
    tokenizer.pad_token = "<|endoftext|>"  # id 0, not an EOS of SmolLM2
    assert reward_pad_token_id(tokenizer, [2]) == 0 and len(tokenizer) == 49152
    # any EOS id of the model counts (generation configs list several)
    assert reward_pad_token_id(tokenizer, [2, 0]) == 49152


def test_a_reward_model_padding_with_eos_is_still_read_at_its_last_real_token(tokenizer_and_model):
    """A reward model made elsewhere (or by an older tether) with pad id == EOS id: tether's paths read the mask,
    not the ids, so each still scores the final EOS, as the sequence alone does. (Reading the rightmost non-pad id
    scores the token before the last run of EOS on the padded path: catches a return to transformers' pooling.)"""
    tokenizer, model = tokenizer_and_model
    eos = tokenizer.eos_token_id
    sequences, prompt_lengths = _sequences(eos)
    expected = _alone(model, sequences)
    ids, mask = pad_right(sequences, eos)
    old_pad = model.config.pad_token_id
    model.config.pad_token_id = eos
    try:
        with torch.no_grad():
            shared = reward_forward(model, ids, mask, prompt_lengths)
            padded = reward_forward(model, ids, mask)
        scored = score_sequences(model, sequences, eos)
    finally:
        model.config.pad_token_id = old_pad
    for name, got in (("shared", shared), ("padded", padded), ("score_sequences", scored)):
        assert torch.allclose(got, expected, atol=1e-5), (name, got, expected)
