"""An ensemble reward reaches RL as its conservative score mean − k·std, k from its ensemble.json unless given."""

import json
import statistics

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from tests.helpers import tiny_model_config
from tether.models.loading import load_reward_model, load_tokenizer, save_model
from tether.models.special_tokens import reward_pad_token_id
from tether.rollout.generation import Rollout
from tether.rollout.rewards import RewardModelSource, load_reward_source


@pytest.fixture(scope="module")
def ensemble(tmp_path_factory):
    """Two tiny reward models with different random heads (they disagree), as `tether rm ensemble_size=2` lays
    them out, trained with k = 2."""
    root = tmp_path_factory.mktemp("ensemble") / "rm"
    tokenizer = load_tokenizer("embedded")
    pad = reward_pad_token_id(tokenizer, [tokenizer.eos_token_id])
    for i in range(2):
        save_model(load_reward_model(tiny_model_config(), seed=10 + i, pad_token_id=pad), tokenizer,
                   root / f"member-{i}", {"recipe": "test"})
    (root / "ensemble.json").write_text(json.dumps({"members": ["member-0", "member-1"], "k": 2.0}))
    return root, load_tokenizer("embedded")


def _rollout(eos):
    """Two left-padded prompts; the first response ends with EOS, the second was cut off."""
    prompt_ids = torch.tensor([[0, 5, 17, 33], [40, 41, 42, 43]])
    prompt_mask = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]])
    response_ids = torch.tensor([[70, 71, eos, eos], [90, 91, 92, 93]])
    response_mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    return Rollout(prompt_ids, prompt_mask, response_ids, response_mask, torch.tensor([True, False]))


def _members_alone(root, sequences):
    """Each member in plain transformers, each sequence alone: (members, sequences) scores."""
    scores = []
    for member in ("member-0", "member-1"):
        model = AutoModelForSequenceClassification.from_pretrained(root / member).eval()
        with torch.no_grad():
            scores.append([float(model(input_ids=torch.tensor([s])).logits[0, 0]) for s in sequences])
    return scores


def test_a_disagreeing_ensemble_lowers_the_score_by_k_std(ensemble):
    root, tokenizer = ensemble
    eos = tokenizer.eos_token_id
    newline = tokenizer("\n", add_special_tokens=False)["input_ids"]  # ChatML's end-of-turn suffix after <|im_end|>
    # (the second response was cut at the cap: it is scored as a finished turn, as the members were trained)
    sequences = [[5, 17, 33, 70, 71, eos] + newline, [40, 41, 42, 43, 90, 91, 92, 93, eos] + newline]
    members = _members_alone(root, sequences)
    mean = [statistics.fmean(col) for col in zip(*members)]
    std = [statistics.pstdev(col) for col in zip(*members)]  # population std, as ensemble_scores documents
    assert min(std) > 1e-3  # the members disagree
    rollout = _rollout(eos)

    stored = load_reward_source(str(root), tokenizer)  # k from ensemble.json
    assert isinstance(stored, RewardModelSource) and stored.k == 2.0
    got = stored.score(rollout, ["p", "q"], ["a", "b"])
    assert got.tolist() == pytest.approx([m - 2.0 * s for m, s in zip(mean, std)], abs=1e-5)
    plain = load_reward_source(str(root), tokenizer, conservative_k=0.0).score(rollout, ["p", "q"], ["a", "b"])
    assert plain.tolist() == pytest.approx(mean, abs=1e-5)
    half = load_reward_source(str(root), tokenizer, conservative_k=0.5).score(rollout, ["p", "q"], ["a", "b"])
    assert (plain - half).tolist() == pytest.approx([0.5 * s for s in std], abs=1e-5)
    # two directories given by hand are an ad-hoc ensemble with no stored k: the plain mean unless k is given
    listed = load_reward_source(f"{root / 'member-0'},{root / 'member-1'}", tokenizer)
    assert listed.k == 0.0 and listed.score(rollout, ["p", "q"], ["a", "b"]).tolist() == pytest.approx(mean, abs=1e-5)
