"""`tether eval` on two tiny models: the reference against itself is exactly neutral; metrics land in eval.json,
with intervals on every comparison with the reference and per-prompt values to recompute them from.

The reference's own row has no ``gold_gain`` / ``proxy_gain`` / ``win_rate_interval``: its difference with itself
is zero on every prompt, and a zero-width interval there would read as certainty rather than as "not a comparison".
"""

import dataclasses
import json
import math

import pytest
import torch
from transformers import AutoConfig

from tests.helpers import EXAMPLES, tiny_model_config
from tether.config import ConfigError, DataConfig, EvalConfig
from tether.data import DataError
from tether.eval.intervals import bootstrap_mean, paired_bootstrap
from tether.models.loading import load_causal_lm, load_tokenizer, save_model
from tether.recipes.evaluate import evaluator_outcomes, evaluator_win_rate, run_eval


def test_evaluator_win_rate_ties_and_clear_gaps():
    assert evaluator_win_rate([1.0, 2.0], [1.0, 2.0], 0.1, seed=0) == 0.5  # equal gold: ties
    # gaps of ±5 at T = 0.1 are σ(±50): certain wins and losses
    assert evaluator_win_rate([5.0, 0.0, 5.0, 0.0], [0.0, 5.0, 0.0, 0.0], 0.1, seed=0) == pytest.approx(
        (1 + 0 + 1 + 0.5) / 4)
    # the same judgements, one per prompt: a certain win, a certain loss, a certain win, a tie
    assert evaluator_outcomes([5.0, 0.0, 5.0, 0.0], [0.0, 5.0, 0.0, 0.0], 0.1, seed=0) == [1.0, 0.0, 1.0, 0.5]
    # a close call is one seeded draw: σ(0.5) ≈ 0.62 against random.Random(0).random() ≈ 0.844 → a loss
    assert evaluator_outcomes([1.05], [1.0], 0.1, seed=0) == [0.0]


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

    # intervals: how they were made, and one per comparison with the reference (none on the reference itself)
    assert saved["intervals"] == {"level": 0.95, "resamples": 2000, "method": "paired bootstrap over prompts",
                                  "seed": 0}
    assert not {"gold_gain", "proxy_gain", "win_rate_interval"} & set(ref)
    for key, mean in (("gold_gain", "gold_mean"), ("proxy_gain", "proxy_mean")):
        gain = other[key]
        assert set(gain) == {"estimate", "low", "high", "n", "level"} and gain["n"] == 4 and gain["level"] == 0.95
        assert gain["low"] <= gain["estimate"] <= gain["high"]
        assert gain["estimate"] == pytest.approx(other[mean] - ref[mean], abs=1e-12)
    assert other["win_rate_interval"]["estimate"] == pytest.approx(other["win_rate_vs_reference"], abs=1e-12)
    assert 0 <= other["win_rate_interval"]["low"] <= other["win_rate_interval"]["high"] <= 1
    assert saved["models"]["m1"]["gold_gain"] == other["gold_gain"]

    # every per-prompt number is in eval_samples.jsonl, so the means and intervals can be recomputed from it
    for field in ("gold", "proxy", "kl", "entropy", "length", "eos", "win_vs_reference"):
        assert all(set(s[field]) == {"m0", "m1"} for s in samples), field
    column = lambda field, name: [s[field][name] for s in samples]  # noqa: E731
    assert sum(column("gold", "m1")) / 4 == pytest.approx(other["gold_mean"])
    assert sum(column("kl", "m1")) / 4 == pytest.approx(other["kl_mean"]) and set(column("kl", "m0")) == {0.0}
    assert sum(column("length", "m1")) / 4 == pytest.approx(other["length_mean"])
    vocab = AutoConfig.from_pretrained(two_models[0]).vocab_size
    for name, row in (("m0", ref), ("m1", other)):  # nats per token, in [0, log V]
        assert sum(column("entropy", name)) / 4 == pytest.approx(row["entropy_mean"])
        assert 0 <= row["entropy_mean"] <= math.log(vocab) + 1e-6
    # the plain random model is near uniform over its vocabulary; the one with its head × 40 is nearly certain
    assert ref["entropy_mean"] > 0.5 * math.log(vocab) and other["entropy_mean"] < 0.1 * ref["entropy_mean"]
    assert column("win_vs_reference", "m0") == [0.5] * 4
    assert paired_bootstrap(column("gold", "m1"), column("gold", "m0")).to_dict() == other["gold_gain"]
    assert paired_bootstrap(column("proxy", "m1"), column("proxy", "m0")).to_dict() == other["proxy_gain"]
    assert bootstrap_mean(column("win_vs_reference", "m1")).to_dict() == other["win_rate_interval"]


def test_eval_rejects_interval_settings_out_of_range(tmp_path, two_models):
    base = EvalConfig(run_dir=str(tmp_path), models=two_models[:1],
                      data=DataConfig(train_file=str(EXAMPLES / "data" / "prompts.jsonl"), max_length=128))
    with pytest.raises(ConfigError, match="bootstrap_resamples: must be >= 1, got 0"):
        run_eval(dataclasses.replace(base, bootstrap_resamples=0))
    with pytest.raises(ConfigError, match=r"interval_level: must be in \(0, 1\)"):
        run_eval(dataclasses.replace(base, interval_level=95.0))


def test_eval_rejects_a_bad_multiple_choice_file(tmp_path, two_models):
    bad = tmp_path / "mc.jsonl"
    bad.write_text('{"question": "q?", "choices": ["a", "b"], "answer": 0}\n'
                   '{"question": "q2?", "choices": ["a", "b"], "answer": 2}\n')
    cfg = EvalConfig(run_dir=str(tmp_path), models=two_models[:1], gold="",
                     data=DataConfig(train_file=str(EXAMPLES / "data" / "prompts.jsonl"), max_length=128),
                     max_prompts=2, max_new_tokens=4, multiple_choice=str(bad))
    with pytest.raises(DataError, match="row 2, field 'answer'"):
        run_eval(cfg)


def test_models_sharing_a_directory_name_keep_apart():
    """Five runs all saved as <run>/grpo were one "grpo" in eval.json, each overwriting the last (caught: naming by
    the directory's name alone)."""
    from tether.recipes.evaluate import model_names

    assert model_names(["runs/q/sft", "runs/q/ppo", "embedded"]) == {"runs/q/sft": "sft", "runs/q/ppo": "ppo",
                                                                      "embedded": "embedded"}
    assert model_names(["embedded", "/x/s0/grpo", "/x/s1/grpo", "/y/s1/grpo"]) == {
        "embedded": "embedded", "/x/s0/grpo": "s0/grpo", "/x/s1/grpo": "x/s1/grpo", "/y/s1/grpo": "y/s1/grpo"}
