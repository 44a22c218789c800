"""The README's walk-through on the tiny model, run as a user types it.

The commands come from README.md itself: the ```bash block that starts with ``tether sft
examples/sft_tiny.yaml``, continuation lines joined and comments dropped, so this test follows the
README as it changes. They run in order, each as its own ``python -m tether.cli`` process, in a fresh
directory holding a copy of examples/ (the README's paths are relative to the repository root), and
then the outputs the README promises are checked: every command exits 0, PPO's held-out line writes
``ppo_heldout.json``, ``tether eval`` compares policies that all started from the SFT model on prompts
no stage trained on and writes into the run directory, and the report has every section those stages
feed. The walk-through is sized to take about two minutes (one compute thread per command).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.helpers import ROOT
from tests.test_docs import code_blocks

FIRST_COMMAND = "tether sft examples/sft_tiny.yaml"
# Commands the walk-through may name that cannot run in the default suite, by the config file they take
NOT_HERE = {"dpo_smollm2_lora.yaml": "the real model", "grpo_vllm.yaml": "a CUDA GPU and vLLM",
            "ppo_ray.yaml": "Ray actors", "pipeline_tiny.yaml": "a minute more (tests/recipes/test_pipeline.py runs it)"}
RUN_DIR = "runs/tiny"


def walkthrough_commands(readme: str) -> list[list[str]]:
    """The README walk-through's commands, each split as a shell would split it."""
    blocks = [body for language, body in code_blocks(readme)[0] if language == "bash"]
    block = next((b for b in blocks if any(line.startswith(FIRST_COMMAND) for line in b.splitlines())), None)
    assert block is not None, f"README.md has no ```bash block with a line starting {FIRST_COMMAND!r}"
    lines = block.replace("\\\n", " ").splitlines()
    return [args for args in (shlex.split(line, comments=True) for line in lines) if args]


def _skipped(args: list[str]) -> str | None:
    return next((why for name, why in NOT_HERE.items() if any(a.endswith(name) for a in args)), None)


def test_the_walkthrough_parser_reads_continuations_and_comments():
    text = ("```bash\nls\n```\n\n```bash\n# 1. first\n" + FIRST_COMMAND + "   # a comment\n"
            "tether eval models=[a,b] \\\n    data.train_file=x.jsonl\n\n```\n")
    assert walkthrough_commands(text) == [FIRST_COMMAND.split(),
                                          ["tether", "eval", "models=[a,b]", "data.train_file=x.jsonl"]]


@pytest.fixture(scope="module")
def walkthrough(tmp_path_factory):
    """Run every command of the walk-through; stop at the first that fails (the later ones need its output)."""
    where = tmp_path_factory.mktemp("readme")
    shutil.copytree(ROOT / "examples", where / "examples")
    commands = walkthrough_commands((ROOT / "README.md").read_text(encoding="utf-8"))
    # one compute thread: the tiny model gains little from two, and the suite's other worker keeps its core
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    runs = []
    for args in commands:
        assert args[0] == "tether", f"not a tether command: {shlex.join(args)}"
        if _skipped(args):
            continue
        start = time.time()
        result = subprocess.run([sys.executable, "-m", "tether.cli", *args[1:]], cwd=where, capture_output=True,
                                text=True, timeout=900, env=env)
        runs.append({"args": args, "result": result, "seconds": round(time.time() - start, 1)})
        if result.returncode != 0:
            break
    return {"where": where, "run": where / RUN_DIR, "commands": commands, "runs": runs}


def _run_of(walkthrough, command: str, *needles: str) -> dict:
    """The run of ``tether <command>`` whose arguments contain every needle (exactly one)."""
    found = [r for r in walkthrough["runs"] if r["args"][1] == command
             and all(any(n in a for a in r["args"]) for n in needles)]
    assert len(found) == 1, f"expected one `tether {command}` line with {needles} in the README walk-through"
    return found[0]


def test_every_command_of_the_walkthrough_exits_0(walkthrough):
    runs = walkthrough["runs"]
    for run in runs:
        result = run["result"]
        assert result.returncode == 0, (f"`{shlex.join(run['args'])}` exited {result.returncode}:\n"
                                        f"{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
        assert "Traceback" not in result.stderr
    # nothing was skipped but what cannot run here, and the story has every stage
    ran = [r["args"] for r in runs]
    assert len(ran) == len([c for c in walkthrough["commands"] if not _skipped(c)])
    assert {args[1] for args in ran} >= {"sft", "rm", "score", "ppo", "grpo", "dpo", "eval", "report"}
    print("\n" + "\n".join(f"{r['seconds']:6.1f} s  {shlex.join(r['args'])}" for r in runs))


def test_every_policy_starts_from_the_sft_model(walkthrough):
    run = walkthrough["run"]
    sft = str(Path(RUN_DIR) / "sft")
    for stage in ("rm", "ppo", "grpo", "dpo"):
        recorded = json.loads((run / stage / "tether.json").read_text())
        assert recorded["config"]["model"]["name_or_path"] == sft, stage
        assert recorded["config"]["model"]["random_init"] is False, stage
    assert json.loads((run / "ppo" / "tether.json").read_text())["config"]["reward"] == str(Path(RUN_DIR) / "rm")


def test_the_heldout_line_writes_ppo_heldout_json(walkthrough):
    ppo = _run_of(walkthrough, "ppo", "heldout.gold=")
    assert ppo["result"].returncode == 0
    curve = json.loads((walkthrough["run"] / "ppo_heldout.json").read_text())
    iterations = [p["iteration"] for p in curve["points"]]
    assert iterations[0] == 0 and len(iterations) >= 2  # the SFT model before any update, then the policy
    assert all(isinstance(p["gold"], float) and isinstance(p["proxy"], float) for p in curve["points"])
    assert curve["gold"] == "tether.tasks.helpful:gold_reward"


def _prompts(path: Path) -> set[str]:
    return {json.loads(line)["prompt"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()}


def test_eval_compares_the_policies_with_sft_on_held_out_prompts_in_the_run_directory(walkthrough):
    where, run = walkthrough["where"], walkthrough["run"]
    evaluation = _run_of(walkthrough, "eval")
    assert not any(a.startswith("run_dir=") for a in evaluation["args"])  # the default: the models' run directory
    summary = json.loads((run / "eval.json").read_text())
    assert summary["reference"] == "sft"
    assert set(summary["models"]) == {"sft", "ppo", "grpo", "dpo"}
    assert summary["models"]["sft"]["kl_mean"] == 0.0  # the reference against itself
    # PPO and RLOO took a few small steps from the SFT model under a KL leash: well under 5 nats from it (a policy
    # trained from other weights, as the README's examples once did, sits about 35 nats away)
    assert all(summary["models"][name]["kl_mean"] < 5.0 for name in ("ppo", "grpo")), summary["models"]
    assert (run / "eval_samples.jsonl").is_file() and not (where / "runs" / "eval").exists()
    printed = evaluation["result"].stdout + evaluation["result"].stderr
    for name in ("eval.json", "eval_samples.jsonl", "config.yaml"):  # it says where it wrote
        assert str(Path(RUN_DIR) / name) in printed, name
    # held out: no stage trained on a prompt the evaluation used
    config = yaml.safe_load((run / "config.yaml").read_text())
    eval_prompts = _prompts(where / config["eval"]["data"]["train_file"])
    assert len(eval_prompts) >= summary["prompts"] > 0
    for stage in ("sft", "rm", "ppo", "grpo", "dpo"):
        trained = _prompts(where / config[stage]["data"]["train_file"])
        assert not eval_prompts & trained, f"{stage} trained on evaluation prompts"


def test_the_report_has_every_section_the_stages_feed(walkthrough):
    report = _run_of(walkthrough, "report")
    assert report["result"].returncode == 0
    page = (walkthrough["run"] / "report.html").read_text(encoding="utf-8")
    for section in ("alarm", "eval", "training", "reward-model", "config"):  # held-out curve, evaluation, ...
        assert f"<h2 id='{section}'>" in page, section
    assert "id='answers'" in page  # the same prompts answered by each model
    for stage in ("sft", "rm", "ppo", "grpo", "dpo"):  # a training curve for every stage
        assert f"<h3>{stage}</h3>" in page, stage


def test_the_run_directory_holds_what_the_readme_layout_says(walkthrough):
    """Every entry the walk-through left in runs/tiny is named in the README's run-directory layout."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    layout = next(body for _, body in code_blocks(readme)[0] if body.startswith("runs/<name>/"))
    named = set(re.findall(r"[\w.-]+", layout))
    score = _run_of(walkthrough, "score")
    own_output = Path(next(a for a in score["args"] if a.startswith("output=")).split("=", 1)[1]).name
    entries = {p.name for p in walkthrough["run"].iterdir()} - {own_output}
    assert {"eval.json", "eval_samples.jsonl", "report.html", "ppo_heldout.json", "metrics.jsonl"} <= entries
    assert entries <= named, f"in {RUN_DIR} but not in the README's layout: {sorted(entries - named)}"


def test_every_metric_the_walkthrough_logged_is_documented(walkthrough):
    """The dynamic half of tests/test_docs.py's check: each key of each metrics.jsonl record is in docs/metrics.md
    (held-out evaluations as `eval/<name>` of a documented name, as docs/metrics.md says)."""
    from tests.test_docs import documented_metric, documented_metrics

    documented = documented_metrics()
    logged = set()
    for line in (walkthrough["run"] / "metrics.jsonl").read_text().splitlines():
        logged |= set(json.loads(line)) - {"stage", "step", "time"}
    assert len(logged) >= 50 and {"policy/loss", "heldout/gold_mean", "report/accuracy"} <= logged
    missing = sorted(name for name in logged if not documented_metric(name, documented))
    assert not missing, f"logged but not in docs/metrics.md: {missing}"
