"""The CLI as a user types it: help, malformed input (one line, exit code 2), config errors."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MALFORMED = ROOT / "examples" / "data" / "malformed"


def tether(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "tether.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def test_help_lists_the_commands():
    result = tether("--help")
    assert result.returncode == 0
    for command in ("sft", "rm", "dpo", "score", "quickstart", "ppo", "grpo", "bon", "rejection-sample"):
        assert command in result.stdout


def test_recipe_help_lists_every_field():
    result = tether("dpo", "--help")
    assert result.returncode == 0
    for field in ("train.learning_rate", "model.lora.enabled", "data.overlong", "kl_coef", "loss"):
        assert field in result.stdout
    assert "train.learning_rate  (float, default: 5.0e-06)" in result.stdout  # the DPO learning-rate default, not the generic one


def test_print_config_applies_overrides():
    result = tether("rm", "examples/rm_tiny.yaml", "train.seed=9", "--print-config")
    assert result.returncode == 0
    assert "seed: 9" in result.stdout and "center_coef: 0.01" in result.stdout


EXPECTED = {
    "missing_field.jsonl": "row 2, field 'rejected': missing field",
    "empty_text.jsonl": "row 2, field 'chosen': empty text",
    "identical.jsonl": "row 2, field 'rejected': identical to 'chosen'",
    "wrong_type.jsonl": "row 2, field 'chosen': expected text or a list of messages, got int",
    "bad_ranks.jsonl": "row 2, field 'ranks': [0, 5, 1, 2] is not a ranking of 4 responses",
    "bad_json.jsonl": "row 2: not valid JSON",
    "not_an_object.jsonl": "row 2: expected a JSON object, got list",
    "bad_utf8.jsonl": "row 2: not valid UTF-8",
    "overlong.jsonl": "row 2: sequence of",
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_malformed_data_gives_one_line_and_exit_code_2(name, tmp_path):
    path = MALFORMED / name
    result = tether("rm", "examples/rm_tiny.yaml", f"data.train_file={path}", "data.overlong=error",
                    f"run_dir={tmp_path / 'run'}")
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert f"{path} {EXPECTED[name]}" in errors[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "rm").exists()  # nothing trained or written


@pytest.mark.parametrize("args, message", [
    (["train.batch_size=abc"], "train.batch_size: expected an integer"),
    (["trian.seed=1"], "unknown config key 'trian'"),
    (["loss=dpoo"], "loss: 'dpoo' is not one of dpo, ipo, cdpo"),
    (["model.name_or_path=/nonexistent/model"], "does not exist"),
    (["data.train_file=/nonexistent.jsonl"], "/nonexistent.jsonl: file not found"),
])
def test_bad_config_and_paths_exit_2(args, message, tmp_path):
    result = tether("dpo", "examples/dpo_tiny.yaml", f"run_dir={tmp_path}", *args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("args, message", [
    ([], "model= is required"),
    (["model=/nonexistent/rm", "input=examples/data/prompts.jsonl"], "reward model directory /nonexistent/rm does not exist"),
])
def test_score_input_errors_exit_2(args, message):
    result = tether("score", *args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr


TINY = ["model.name_or_path=embedded", "model.random_init=true",
        "model.config_overrides={hidden_size: 64, intermediate_size: 128, num_hidden_layers: 2, "
        "num_attention_heads: 4, num_key_value_heads: 2, head_dim: 16}", "reward=tether.tasks.toy:period_density",
        "max_new_tokens=4"]


@pytest.mark.parametrize("command, config, extra", [
    ("ppo", "examples/ppo_tiny.yaml", ["num_iterations=2"]),
    ("grpo", "examples/grpo_tiny.yaml", ["num_iterations=2", "advantage=rloo"]),
    ("bon", "examples/bon_tiny.yaml", ["max_prompts=4"]),
    ("rejection-sample", "examples/rejection_tiny.yaml", ["rounds=1", "max_prompts=8"]),
])
def test_online_rl_example_configs_run(command, config, extra, tmp_path):
    where = [f"output={tmp_path / 'bon.jsonl'}"] if command == "bon" else [f"run_dir={tmp_path}"]
    result = tether(command, config, *TINY, *where, *extra)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    if command in ("ppo", "grpo"):  # the last line says there was no held-out evaluation, and how to turn it on
        assert " ".join(result.stderr.split()).endswith(
            "held-out: no held-out evaluation (set heldout.gold=module:function (e.g. tether.tasks.helpful:gold_reward) "
            "and heldout.prompts_file=<held-out prompts> to measure it and arm the reward-hacking alarm)")


COMMAND_OF = {"sft": "sft", "rm": "rm", "dpo": "dpo", "ppo": "ppo", "grpo": "grpo", "bon": "bon",
              "rejection": "rejection-sample", "pipeline": "pipeline"}
RECIPE_EXAMPLES = sorted(p.name for p in (ROOT / "examples").glob("*.yaml") if p.name != "accelerate_fsdp.yaml")


@pytest.mark.parametrize("name", RECIPE_EXAMPLES)
def test_every_example_config_loads(name, monkeypatch):
    from tether.config import load_config
    from tether.recipes.registry import RECIPES

    monkeypatch.chdir(ROOT)
    command = COMMAND_OF[name.split("_")[0]]  # examples are named <command>_<what>.yaml
    config = load_config(RECIPES[command].config, f"examples/{name}", [])  # parsed, typed and validated
    assert type(config) is RECIPES[command].config


def test_the_vllm_example_says_what_it_needs_on_a_cpu(tmp_path):
    import importlib.util

    import torch

    if importlib.util.find_spec("vllm") and torch.cuda.is_available():
        pytest.skip("vLLM and a GPU are here: tests/gpu/test_vllm.py runs the backend")
    result = tether("grpo", "examples/grpo_vllm.yaml", f"run_dir={tmp_path}", *TINY[:3])
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "generation.backend=vllm needs" in result.stderr and "or use generation.backend=transformers" in result.stderr
    assert not (tmp_path / "sampler-init").exists()  # stopped before the policy was loaded and written out


@pytest.mark.parametrize("group", [[], ["label"]])
def test_command_lists_fit_80_columns(group):
    """Every summary whole on its command's line at 80 columns (click cut them at the first 45-58 with '...')."""
    from tether.recipes.registry import GROUPS, RECIPES

    summaries = {**{command: recipe.summary for command, recipe in RECIPES.items()}, **GROUPS}
    result = subprocess.run([sys.executable, "-m", "tether.cli", *group, "--help"], capture_output=True, text=True,
                            cwd=ROOT, env={**os.environ, "COLUMNS": "80"}, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    listed = lines[lines.index("Commands:") + 1:]
    assert max(len(line) for line in lines) <= 80 and not any("..." in line for line in listed)
    prefix = f"{group[0]} " if group else ""
    commands = [key[len(prefix):] for key in summaries if key.startswith(prefix) and " " not in key[len(prefix):]]
    assert len(commands) >= 7
    for command in commands:
        assert any(line.split() and line.split()[0] == command and line.rstrip().endswith(summaries[prefix + command])
                   for line in listed), command


def test_bare_sft_says_train_file_is_required(tmp_path):
    result = tether("sft", f"run_dir={tmp_path}", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: data.train_file is required: give data.train_file=PATH (a .jsonl, .json, .parquet or "
                      ".csv file, or a directory saved with datasets' save_to_disk)"]  # not '.: not a directory ...'
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("command, args, hint", [
    ("sft", ["max_steps=5"], "unknown config key 'max_steps' (did you mean 'train.max_steps'?)"),
    ("sft", ["train.eval_file=x.jsonl"], "unknown config key 'train.eval_file' (did you mean 'data.eval_file'?)"),
    ("ppo", ["train.learning_rate=1e-6"], "unknown config key 'train.learning_rate' (did you mean 'learning_rate'?)"),
])
def test_unknown_key_hints_the_section_that_has_it(command, args, hint, tmp_path):
    result = tether(command, f"run_dir={tmp_path}", *args, "--print-config")
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == f"error: {hint}; see --help for the fields"


def test_unknown_key_with_no_near_name_is_a_plain_error(tmp_path):
    # no section has it and no name is close: the message without a hint, not an IndexError while building one
    result = tether("rm", f"run_dir={tmp_path}", "zzqq=1", "--print-config")
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == "error: unknown config key 'zzqq'; see --help for the fields"
