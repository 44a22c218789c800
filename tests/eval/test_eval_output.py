"""Where `tether eval` writes and what it prints: the models' run directory by default, every output path said,
and a table that reads at 80 columns."""

import json

import pytest
from rich.console import Console

from tests.helpers import EXAMPLES, tiny_model_config
from tether.config import DataConfig, EvalConfig
from tether.models.loading import load_causal_lm, load_tokenizer, save_model
from tether.recipes.evaluate import TABLE_ROWS, eval_tables, output_dir, run_eval


@pytest.fixture(scope="module")
def run_with_two_models(tmp_path_factory):
    """runs/tiny-like: <run>/sft and <run>/ppo, two tiny random models."""
    run = tmp_path_factory.mktemp("run")
    tokenizer = load_tokenizer("embedded")
    for seed, name in ((0, "sft"), (1, "ppo")):
        model = load_causal_lm(tiny_model_config(), seed=seed, pad_token_id=tokenizer.pad_token_id)
        save_model(model, tokenizer, run / name, {"recipe": "test"})
    return run


def test_the_output_directory_is_the_models_run_directory_unless_given(run_with_two_models, tmp_path):
    run = run_with_two_models
    models = [str(run / "sft"), str(run / "ppo")]
    assert output_dir(EvalConfig(models=models)) == run
    assert output_dir(EvalConfig(models=models, run_dir=str(tmp_path / "mine"))) == tmp_path / "mine"
    (tmp_path / "other").mkdir()
    assert str(output_dir(EvalConfig(models=[models[0], str(tmp_path / "other")]))) == "runs/eval"  # no shared parent
    assert str(output_dir(EvalConfig(models=["embedded"]))) == "runs/eval"  # not a directory here


def test_eval_writes_into_the_run_directory_and_says_where(run_with_two_models, capsys):
    run = run_with_two_models
    cfg = EvalConfig(models=[str(run / "sft"), str(run / "ppo")], gold="tether.tasks.helpful:gold_reward",
                     data=DataConfig(train_file=str(EXAMPLES / "data" / "prompts_eval.jsonl"), max_length=128),
                     max_prompts=3, max_new_tokens=4, alignment_tax=False)
    summary = run_eval(cfg)
    assert set(summary["models"]) == {"sft", "ppo"}
    assert json.loads((run / "eval.json").read_text())["models"].keys() == {"sft", "ppo"}
    assert len((run / "eval_samples.jsonl").read_text().splitlines()) == 3
    printed = capsys.readouterr()
    printed = printed.out + printed.err
    for name in ("eval.json", "eval_samples.jsonl", "config.yaml"):
        assert f"wrote {run / name}" in printed, name
    assert f"tether report run_dir={run}" in printed
    assert "run_dir: " + str(run) in (run / "config.yaml").read_text()  # the directory it really used
    # the printed table has the gold gain of ppo over sft and its interval (no proxy: reward= was not given)
    assert "gold gain vs ref" in printed and "95% interval" in printed and "proxy gain vs ref" not in printed


def _render(summary, width=80):
    console = Console(width=width, record=True, file=open("/dev/null", "w"))
    for table in eval_tables(summary, width):
        console.print(table)
    return console.export_text()


@pytest.mark.parametrize("names", [["sft", "ppo", "grpo", "dpo"],
                                   ["sft", "ppo", "grpo", "dpo", "ppo-beta-0.02", "bon-16", "rloo", "simpo"]])
def test_the_eval_table_reads_at_80_columns(names):
    row = {"proxy_mean": -1.2345, "gold_mean": 0.5, "kl_mean": 35.61234, "win_rate_vs_reference": 0.28,
           "length_mean": 16.0, "eos_rate": 0.0, "distinct_2": 0.9, "self_bleu": 0.1, "perplexity": 48123.456,
           "mc_accuracy": 0.3}
    text = _render({"prompts": 32, "reference": "sft", "models": {n: dict(row) for n in names}})
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "…" not in text  # nothing cut: the old one-row-per-model table printed `mod…` and `1.4…`
    for value in ("-1.234", "35.612", "48123.456", "0.280"):
        assert text.count(value) == len(names), value  # every model's number, whole
    for name in names:
        assert f" {name} " in text  # each model's column header, whole
    for label, _, how in TABLE_ROWS:
        if how == "value":
            assert text.count(label) == text.count("metric"), label  # every metric in every table
    assert "gain vs ref" not in text and "interval" not in text  # an eval.json from before intervals: no such rows


def test_the_eval_table_shows_gains_and_their_intervals_at_80_columns():
    """Three models (the reference and two more) fit one 80-column table with a gain row and an interval row
    under proxy and gold, and an interval under the win-rate; the reference's own cells are '–'."""
    row = {"proxy_mean": -1.2345, "gold_mean": 0.5, "kl_mean": 35.61234, "win_rate_vs_reference": 0.5,
           "length_mean": 16.0, "eos_rate": 0.0, "distinct_2": 0.9, "self_bleu": 0.1, "perplexity": 48123.456,
           "mc_accuracy": 0.3}
    gains = {"gold_gain": {"estimate": 0.1623, "low": 0.0512, "high": 0.2734, "n": 120, "level": 0.95},
             "proxy_gain": {"estimate": -1.5, "low": -2.3456, "high": -0.614, "n": 120, "level": 0.95},
             "win_rate_interval": {"estimate": 0.6, "low": 0.3812, "high": 0.7, "n": 120, "level": 0.95}}
    models = {"sft": dict(row), "ppo-beta-0.02": dict(row, **gains), "dpo": dict(row, **gains)}
    text = _render({"prompts": 120, "reference": "sft", "intervals": {"level": 0.95, "resamples": 2000},
                    "models": models})
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80 and text.count("metric") == 1  # one table
    assert "held-out evaluation on 120 prompts (reference: sft)" in text

    def cells(label):
        return [[c.strip() for c in line.split("│")[1:-1]] for line in lines if line.startswith(f"│ {label} ")]

    assert cells("gold gain vs ref") == [["gold gain vs ref", "–", "+0.162", "+0.162"]]
    assert cells("proxy gain vs ref") == [["proxy gain vs ref", "–", "-1.500", "-1.500"]]
    assert cells("  95% interval") == [["95% interval", "–", "[-2.35, -0.61]", "[-2.35, -0.61]"],
                                       ["95% interval", "–", "[+0.05, +0.27]", "[+0.05, +0.27]"],
                                       ["95% interval", "–", "[0.38, 0.70]", "[0.38, 0.70]"]]
    # the rows sit under what they qualify: proxy, then gold, then the win-rate
    order = [line.split("│")[1].rstrip() for line in lines if line.startswith("│")]
    assert order[order.index(" gold reward") + 1:order.index(" gold reward") + 3] == [" gold gain vs ref",
                                                                                       "   95% interval"]
    assert order[order.index(" win-rate vs reference") + 1] == "   95% interval"
    # another level names its own rows
    assert "  90% interval" in _render({"prompts": 120, "reference": "sft", "intervals": {"level": 0.9},
                                        "models": models})
