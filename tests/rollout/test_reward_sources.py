"""Reward sources: functions, weighted combinations of objectives, clear errors for bad specs."""

import re

import pytest
import torch

from tether.rollout.generation import Rollout
from tether.rollout.rewards import RewardSpecError, WeightedSource, load_reward_source, parse_weighted


def _rollout(n):
    ids = torch.ones(n, 3, dtype=torch.long)
    return Rollout(ids, torch.ones_like(ids), ids, torch.ones_like(ids), torch.ones(n, dtype=torch.bool))


def test_parse_weighted_terms():
    assert parse_weighted("0.7*runs/a + 0.3*m:f") == [(0.7, "runs/a"), (0.3, "m:f")]
    assert parse_weighted("m:f + -2*m:g") == [(1.0, "m:f"), (-2.0, "m:g")]
    # a single negative term: the pipeline's cost = −(harmless reward model's score)
    assert parse_weighted("-1*runs/my-run/cost_rm") == [(-1.0, "runs/my-run/cost_rm")]
    assert parse_weighted("runs/rm + 0.5*runs/cost_rm") == [(1.0, "runs/rm"), (0.5, "runs/cost_rm")]
    with pytest.raises(RewardSpecError, match="weight before"):
        parse_weighted("lots*m:f")
    with pytest.raises(RewardSpecError, match="empty term"):
        parse_weighted("m:f + ")


def test_a_plus_inside_a_weight_or_a_name_does_not_split_a_term(tmp_path):
    """Caught: splitting on every '+' (1e+3 read as two terms, a directory named a+b cut in two)."""
    assert parse_weighted("1e+3*m:f") == [(1000.0, "m:f")]
    assert parse_weighted("1E+2*m:f+m:g") == [(100.0, "m:f"), (1.0, "m:g")]
    assert parse_weighted("m:f+m:g") == [(1.0, "m:f"), (1.0, "m:g")]  # no spaces anywhere: every '+' separates
    # with a spaced '+', only the spaced ones separate
    assert parse_weighted("runs/a+b + 0.5*runs/c") == [(1.0, "runs/a+b"), (0.5, "runs/c")]
    assert parse_weighted("2*runs/a+b +runs/c") == [(2.0, "runs/a+b"), (1.0, "runs/c")]
    # an existing path is one source, '+' and all
    odd = tmp_path / "owner+name"
    odd.mkdir()
    assert parse_weighted(str(odd)) == [(1.0, str(odd))]
    with pytest.raises(FileNotFoundError, match=re.escape(f"{odd} is not a reward model directory")):  # one path, not split
        load_reward_source(str(odd), None)


def test_weighted_combination_of_two_objectives_by_hand():
    source = load_reward_source("2*tether.tasks.toy:period_density + -1*tether.tasks.toy:short_and_ended", None)
    assert isinstance(source, WeightedSource)
    responses = ["a.b.", "hello"]
    # period_density: 10·2/4 = 5 and 0; short_and_ended: −4/100 and −5/100
    expected = [2 * 5.0 + 0.04, 2 * 0.0 + 0.05]
    assert source.score(_rollout(2), ["p", "q"], responses).tolist() == pytest.approx(expected)


def test_a_negated_source_is_the_source_times_minus_one():
    source = load_reward_source("-1*tether.tasks.toy:short_and_ended", None)
    assert isinstance(source, WeightedSource)
    # short_and_ended: −(characters)/100, negated
    assert source.score(_rollout(2), ["p", "q"], ["a.b.", "hello"]).tolist() == pytest.approx([0.04, 0.05])


def test_bad_reward_specs_name_the_problem():
    with pytest.raises(RewardSpecError, match="cannot be imported"):
        load_reward_source("0.5*no_such_module:f + tether.tasks.toy:period_density", None)
    with pytest.raises(RewardSpecError, match="neither a reward model directory"):
        load_reward_source("not/a/dir", None)


def reference_rows(tmp_path, tokenizer):
    """Prompt rows with a reference answer, read the way every sampling recipe reads its prompts."""
    from tether.data.datasets import load_prompt_dataset

    path = tmp_path / "problems.jsonl"
    path.write_text('{"prompt": "2+2?", "answer": "4", "level": 1}\n{"prompt": "half of 3?", "answer": "3/2"}\n'
                    '{"prompt": "7*6?", "answer": 42}\n', encoding="utf-8")
    prompts, _ = load_prompt_dataset(path, tokenizer, chat_template="never")
    return prompts


def test_prompt_rows_keep_their_other_fields(tmp_path, tokenizer):
    prompts = reference_rows(tmp_path, tokenizer)
    assert [p.fields for p in prompts] == [{"answer": "4", "level": 1, "_row": 1}, {"answer": "3/2", "_row": 2},
                                           {"answer": 42, "_row": 3}]


def test_math_verifier_scores_against_each_rows_answer_and_counts_outcomes(tmp_path, tokenizer):
    from tether.rollout.rewards import VerifierSource, outcome_metrics

    rows = [p.fields for p in reference_rows(tmp_path, tokenizer)]
    source = load_reward_source("verify:math", None)
    assert isinstance(source, VerifierSource)
    responses = ["2 and 2 make 4.", "The answer is 1.5", "I cannot say."]
    # 4 = 4 (correct); 1.5 = 3/2 (correct, as a number); no number at all (unparseable)
    assert source.score(_rollout(3), ["a", "b", "c"], responses, rows).tolist() == [1.0, 1.0, 0.0]
    assert outcome_metrics(source) == {"verify/math/correct": 2 / 3, "verify/math/wrong": 0.0,
                                       "verify/math/unparseable": 1 / 3, "verify/math/timeout": 0.0}
    # the same answers against shuffled rows: 4 ≠ 3/2, 1.5 ≠ 42 (wrong), still unparseable
    assert source.score(_rollout(3), ["a", "b", "c"], responses, rows[1:] + rows[:1]).tolist() == [0.0, 0.0, 0.0]
    assert outcome_metrics(source)["verify/math/wrong"] == 2 / 3


def test_a_verifier_weighted_with_a_function_and_a_function_that_takes_rows(tmp_path, tokenizer):
    from tether.rollout.rewards import outcome_metrics

    rows = [p.fields for p in reference_rows(tmp_path, tokenizer)][:2]
    source = load_reward_source("0.8*verify:math + 0.5*tether.tasks.toy:period_density", None)
    # correct + period_density 10·1/2 = 5; wrong (7 ≠ 3/2) + 10·1/2 = 5
    assert source.score(_rollout(2), ["a", "b"], ["4.", "7."], rows).tolist() == pytest.approx([0.8 + 2.5, 2.5])
    assert outcome_metrics(source)["verify/math/correct"] == 0.5
    seen = {}

    def with_rows(prompts, responses, ids, rows):
        seen["rows"] = rows
        return [float(row["answer"] == "4") for row in rows]

    import tether.tasks.toy as toy
    toy.with_rows = with_rows
    try:
        assert load_reward_source("tether.tasks.toy:with_rows", None).score(
            _rollout(2), ["a", "b"], ["x", "y"], rows).tolist() == [1.0, 0.0]
    finally:
        del toy.with_rows
    assert seen["rows"] == rows


def test_verifier_errors_name_the_missing_field_row_and_checker(tmp_path, tokenizer):
    from tether.rollout.verifiers import VerifierError

    source = load_reward_source("verify:math", None)
    with pytest.raises(VerifierError, match=r"'answer' field .*\(row 5\)"):
        source.score(_rollout(1), ["a"], ["4"], [{"question": "x", "_row": 5}])
    with pytest.raises(RewardSpecError, match="passed no rows"):
        source.score(_rollout(1), ["a"], ["4"])
    with pytest.raises(RewardSpecError, match="unknown verifier 'maths'.*math"):
        load_reward_source("verify:maths", None)


def test_a_gold_may_be_a_verifier_a_function_or_a_weighted_sum_of_them(tmp_path, tokenizer):
    """``tether eval gold=verify:math`` (and the held-out evaluation, and the frontier) read the gold through
    load_gold_source: before it, a verifier gold was imported as a module named 'verify' and failed."""
    from tether.rollout.rewards import FunctionSource, VerifierSource, load_gold_source

    rows = [p.fields for p in reference_rows(tmp_path, tokenizer)][:2]
    assert isinstance(load_gold_source("verify:math"), VerifierSource)
    assert isinstance(load_gold_source("tether.tasks.toy:period_density"), FunctionSource)
    gold = load_gold_source("verify:math + 0.5*tether.tasks.toy:period_density")
    # "4." is right (4) and "7." wrong (7 ≠ 3/2); period_density 10 · 1/2 = 5 each, times 0.5
    assert gold.score(_rollout(2), ["a", "b"], ["4.", "7."], rows).tolist() == pytest.approx([1 + 2.5, 2.5])
    with pytest.raises(RewardSpecError, match="no checker|unknown|registered"):
        load_gold_source("verify:nonesuch")


def test_a_reward_model_trained_in_another_rendering_than_the_policys_is_warned_about(tmp_path, capsys):
    """A reward model scores the policy's own token ids, so one trained on plain text (the sentiment task's
    data.chat_template=never) and read through a chat-formatted policy scores a format it never saw. The check
    compares renderings, not setting names: ``auto`` and ``always`` agree on a tokenizer with a template, and
    ``auto`` and ``never`` agree on one without. Catches: comparing the strings; reading the policy's setting
    where the reward model's belongs; no warning printed."""
    import json
    from types import SimpleNamespace

    from transformers import LlamaConfig, LlamaForSequenceClassification

    from tether.models.loading import load_tokenizer
    from tether.rollout.rewards import RewardModelSource, rendering_mismatch

    tokenizer = load_tokenizer("embedded")  # SmolLM2: a ChatML template
    rm_dir = tmp_path / "rm"
    LlamaForSequenceClassification(LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32,
                                               num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                                               num_labels=1, pad_token_id=0)).save_pretrained(rm_dir)
    (rm_dir / "tether.json").write_text(json.dumps({"config": {"data": {"chat_template": "never"}}}))

    source = RewardModelSource(str(rm_dir), tokenizer, chat_template="auto")
    assert str(rm_dir) in source.format_warning and "plain text" in source.format_warning
    assert "warning:" in capsys.readouterr().err
    assert RewardModelSource(str(rm_dir), tokenizer, chat_template="never").format_warning is None
    assert "warning:" not in capsys.readouterr().err

    (rm_dir / "tether.json").write_text(json.dumps({"config": {"data": {"chat_template": "auto"}}}))
    assert RewardModelSource(str(rm_dir), tokenizer, chat_template="always").format_warning is None
    assert "chat-formatted" in RewardModelSource(str(rm_dir), tokenizer, chat_template="never").format_warning
    (rm_dir / "tether.json").unlink()  # trained elsewhere: nothing recorded, nothing to compare
    assert RewardModelSource(str(rm_dir), tokenizer, chat_template="never").format_warning is None

    plain = SimpleNamespace(chat_template=None)  # a tokenizer without a template renders plain text either way
    assert rendering_mismatch(plain, "never", {"rm": "auto"}) is None
    assert rendering_mismatch(tokenizer, "auto", {"a": "auto", "b": "never"}).startswith("the reward model b ")
