"""`tether eval` on two tiny models: the reference against itself is exactly neutral; metrics land in eval.json."""

import json

import pytest
import torch

from tests.helpers import EXAMPLES, tiny_model_config
from tether.config import DataConfig, EvalConfig
from tether.data import DataError
from tether.models.loading import load_causal_lm, load_tokenizer, save_model
from tether.recipes.evaluate import evaluator_win_rate, run_eval


def test_evaluator_win_rate_ties_and_clear_gaps():
    assert evaluator_win_rate([1.0, 2.0], [1.0, 2.0], 0.1, seed=0) == 0.5  # equal gold: ties
    # gaps of ±5 at T = 0.1 are σ(±50): certain wins and losses
    assert evaluator_win_rate([5.0, 0.0, 5.0, 0.0], [0.0, 5.0, 0.0, 0.0], 0.1, seed=0) == pytest.approx(
        (1 + 0 + 1 + 0.5) / 4)


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    tokenizer = load_tokenizer("embedded")
    dirs = []
    for seed in (0, 1):
        model = load_causal_lm(tiny_model_config(), seed=seed, pad_token_id=tokenizer.pad_token_id)
        if seed == 1:  # sharpen the second model's output distribution so it is far from the first
            with torch.no_grad():
                model.lm_head.weight.mul_(40.0)
        dirs.append(str(save_model(model, tokenizer, root / f"m{seed}", {"recipe": "test"})))
    return dirs


def test_eval_writes_every_metric(tmp_path, two_models):
    cfg = EvalConfig(run_dir=str(tmp_path), models=two_models, reward="tether.tasks.toy:period_density",
                     data=DataConfig(train_file=str(EXAMPLES / "data" / "prompts.jsonl"), max_length=128),
                     max_prompts=4, max_new_tokens=8)
    summary = run_eval(cfg)
    ref, other = summary["models"]["m0"], summary["models"]["m1"]
    assert summary["reference"] == "m0" and summary["prompts"] == 4
    assert ref["kl_mean"] == 0.0 and ref["win_rate_vs_reference"] == 0.5  # the reference against itself
    assert ref["perplexity_change"] == 0.0 and ref["mc_accuracy_change"] == 0.0
    assert other["kl_mean"] > 1.0 and other["perplexity"] > ref["perplexity"]  # a different, sharper random model
    for row in (ref, other):
        assert row["length_mean"] <= 8 and 0 <= row["eos_rate"] <= 1 and 0 <= row["mc_accuracy"] <= 1
        assert 0 <= row["distinct_1"] <= 1 and 0 <= row["self_bleu"] <= 1
        assert row["gold_mean"] is not None and row["proxy_mean"] is not None
    saved = json.loads((tmp_path / "eval.json").read_text())
    assert saved["models"]["m1"]["kl_mean"] == other["kl_mean"]
    samples = [json.loads(line) for line in (tmp_path / "eval_samples.jsonl").read_text().splitlines()]
    assert len(samples) == 4 and set(samples[0]["responses"]) == {"m0", "m1"}


def test_eval_rejects_a_bad_multiple_choice_file(tmp_path, two_models):
    bad = tmp_path / "mc.jsonl"
    bad.write_text('{"question": "q?", "choices": ["a", "b"], "answer": 0}\n'
                   '{"question": "q2?", "choices": ["a", "b"], "answer": 2}\n')
    cfg = EvalConfig(run_dir=str(tmp_path), models=two_models[:1], gold="",
                     data=DataConfig(train_file=str(EXAMPLES / "data" / "prompts.jsonl"), max_length=128),
                     max_prompts=2, max_new_tokens=4, multiple_choice=str(bad))
    with pytest.raises(DataError, match="row 2, field 'answer'"):
        run_eval(cfg)
