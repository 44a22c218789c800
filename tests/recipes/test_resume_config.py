"""A run whose config differs from its checkpoint's (or from the one that made its output) never resumes or
overwrites silently: `resume=auto` stops with one line listing what differs (exit 2), `never` starts afresh with the
old checkpoints moved aside, `force` resumes anyway. An unchanged config resumes exactly as before.

(Exact resume itself: test_loop.py, test_ppo.py, test_resume.py.)
"""

import hashlib
import json

import pytest
from typer.testing import CliRunner

from tests.helpers import EXAMPLES, ROOT, tiny_model_config
from tether.cli import app
from tether.config import (
    DataConfig,
    GRPOConfig,
    PPOConfig,
    PreferenceConfig,
    RejectionSamplingConfig,
    RewardModelConfig,
    SFTConfig,
    TrainConfig,
)
from tether.utils.logging import read_metrics
from tether.utils.resume import ResumeRefused

DATA = EXAMPLES / "data"
REWARD = "tether.tasks.toy:short_and_ended"
# the README's PPO example, made small: a function reward instead of runs/tiny/rm, 2 iterations of 4 prompts
PPO_SMALL = [f"reward={REWARD}", "num_iterations=2", "rollout_batch_size=4", "minibatch_size=4", "max_new_tokens=6",
             "report_to=[]"]
HELDOUT = ["heldout.gold=tether.tasks.helpful:gold_reward",
           "heldout.prompts_file=examples/data/preferences_eval.jsonl", "heldout.max_prompts=4"]


def _invoke(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result, (result.stdout or "") + (result.stderr or "")


def _error_lines(output):
    return [line for line in output.splitlines() if line.startswith("error:")]


def _digests(folder):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_the_readme_heldout_line_does_not_resume_a_finished_ppo_run(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # the example's paths are relative to the repository root
    run = tmp_path / "tiny"
    first, output = _invoke("ppo", EXAMPLES / "ppo_tiny.yaml", f"run_dir={run}", *PPO_SMALL)
    assert first.exit_code == 0, output[-3000:]
    before = _digests(run / "checkpoints")

    # the README's next line: + the held-out gold evaluation. It used to resume "iteration 2/2", exit 0 and write
    # no ppo_heldout.json
    second, output = _invoke("ppo", EXAMPLES / "ppo_tiny.yaml", f"run_dir={run}", *PPO_SMALL, *HELDOUT)
    assert second.exit_code == 2, output[-3000:]
    assert "Traceback" not in output
    (error,) = _error_lines(output)  # one line: what differs (old → new) and what to do
    assert 'heldout.gold: "" → "tether.tasks.helpful:gold_reward"' in error, error
    assert "heldout.prompts_file" in error and "resume=never" in error and "resume=force" in error, error
    assert _digests(run / "checkpoints") == before and not (run / "ppo_heldout.json").exists()

    # asked for a new run: it trains from iteration 0, with the held-out curve, the old checkpoints moved aside
    third, output = _invoke("ppo", EXAMPLES / "ppo_tiny.yaml", f"run_dir={run}", *PPO_SMALL, *HELDOUT, "resume=never")
    assert third.exit_code == 0, output[-3000:]
    curve = json.loads((run / "ppo_heldout.json").read_text())
    assert [p["iteration"] for p in curve["points"]] == [0, 2]  # (heldout.every=5: before training and at the end)
    (aside,) = (run / "checkpoints").glob("ppo.old-*")
    assert {k: v for k, v in _digests(aside).items() if k != "metrics.jsonl"} == {
        k.removeprefix("ppo/"): v for k, v in before.items()}
    assert [r["step"] for r in read_metrics(run, "ppo") if "reward/score_mean" in r] == [1, 2]  # the new run's, once
    old_rows = [json.loads(line) for line in (aside / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in old_rows] == [1, 2] and "heldout/gold_mean" not in str(old_rows)


def _ppo(run_dir, **extra):
    base = dict(run_dir=str(run_dir), model=tiny_model_config(), reward=REWARD,
                data=DataConfig(train_file=str(DATA / "prompts.jsonl")), num_iterations=2, rollout_batch_size=4,
                minibatch_size=4, max_new_tokens=6, learning_rate=1e-3, report_to=[])
    return PPOConfig(**{**base, **extra})


def test_an_unchanged_ppo_config_resumes_and_a_longer_one_extends(tmp_path):
    from tether.recipes.ppo import train_ppo

    assert len(train_ppo(_ppo(tmp_path)).history) == 2
    # the same run again (threads and metric sinks do not change the result): resumed at 2/2, nothing to do
    again = train_ppo(_ppo(tmp_path, num_threads=1, report_to=["tensorboard"], save_every=1))
    assert again.iterations == 2 and again.history == []
    longer = train_ppo(_ppo(tmp_path, num_iterations=3))  # more iterations: goes on from the checkpoint
    assert longer.iterations == 3 and len(longer.history) == 1
    with pytest.raises(ResumeRefused, match=r"learning_rate: 0\.001 → 0\.002"):
        train_ppo(_ppo(tmp_path, num_iterations=4, learning_rate=2e-3))
    forced = train_ppo(_ppo(tmp_path, num_iterations=4, learning_rate=2e-3, resume="force"))
    assert forced.iterations == 4 and len(forced.history) == 1
    assert [r["step"] for r in read_metrics(tmp_path, "ppo")] == [1, 2, 3, 4]  # one run, each iteration once


def _sft(run_dir, **train):
    return SFTConfig(run_dir=str(run_dir), model=tiny_model_config(),
                     data=DataConfig(train_file=str(DATA / "sft.jsonl"), max_length=128, eval_fraction=0.0),
                     train=TrainConfig(**{"learning_rate": 1e-3, "max_steps": 2, "batch_size": 4, "report_to": [],
                                          **train}))


def _rm(run_dir, **train):
    return RewardModelConfig(run_dir=str(run_dir), model=tiny_model_config(),
                             data=DataConfig(train_file=str(DATA / "preferences.jsonl"), max_length=128,
                                             eval_fraction=0.0),
                             train=TrainConfig(**{"learning_rate": 1e-3, "max_steps": 2, "batch_size": 4,
                                                  "report_to": [], **train}))


def _dpo(run_dir, **train):
    return PreferenceConfig(run_dir=str(run_dir), model=tiny_model_config(),
                            data=DataConfig(train_file=str(DATA / "preferences.jsonl"), max_length=128,
                                            eval_fraction=0.0, max_train_examples=16),
                            train=TrainConfig(**{"learning_rate": 1e-3, "max_steps": 2, "batch_size": 4,
                                                 "report_to": [], **train}))


def _grpo(run_dir, **train):
    return GRPOConfig(run_dir=str(run_dir), model=tiny_model_config(), reward=REWARD,
                      data=DataConfig(train_file=str(DATA / "prompts.jsonl")), group_size=2, prompts_per_iteration=2,
                      num_iterations=2, minibatch_size=4, max_new_tokens=6, report_to=[],
                      **{"seed": train.get("seed", 42), "resume": train.get("resume", "auto")})


def _recipe(name):
    from tether.recipes.grpo import train_grpo
    from tether.recipes.preference import train_preference
    from tether.recipes.reward_model import train_reward_model
    from tether.recipes.sft import train_sft

    return {"sft": (_sft, train_sft, "train.seed"), "rm": (_rm, train_reward_model, "train.seed"),
            "dpo": (_dpo, train_preference, "train.seed"), "grpo": (_grpo, train_grpo, "seed")}[name]


@pytest.mark.parametrize("recipe", ["sft", "rm", "dpo", "grpo"])
def test_every_training_recipe_refuses_a_changed_config_and_starts_afresh_when_asked(recipe, tmp_path):
    make, train, seed_key = _recipe(recipe)
    train(make(tmp_path))
    stage = recipe  # (each recipe's default name)
    checkpoints = tmp_path / "checkpoints" / stage
    before = _digests(checkpoints)
    with pytest.raises(ResumeRefused) as refused:
        train(make(tmp_path, seed=7))
    message = str(refused.value)
    assert "\n" not in message and f"{seed_key}: 42 → 7" in message, message
    switch = "resume" if recipe == "grpo" else "train.resume"
    assert f"{switch}=never" in message and f"{switch}=force" in message, message
    assert _digests(checkpoints) == before  # nothing was resumed, trained or written
    train(make(tmp_path, seed=7, resume="never"))  # a new run: the old checkpoints are kept aside, not mixed in
    (aside,) = (tmp_path / "checkpoints").glob(f"{stage}.old-*")
    assert {k: v for k, v in _digests(aside).items() if k != "metrics.jsonl"} == before
    rows = [r for r in read_metrics(tmp_path, stage) if "loss" in r or "policy/loss" in r]
    assert [r["step"] for r in rows] == [1, 2]  # the new run's steps, once


def test_an_output_made_with_another_model_is_not_overwritten(tmp_path):
    from tether.recipes.sft import train_sft

    train_sft(_sft(tmp_path, save_final_checkpoint=False))  # no checkpoint: only the model directory records it
    before = _digests(tmp_path / "sft")
    other = _sft(tmp_path, save_final_checkpoint=False)
    other.model.config_overrides["num_hidden_layers"] = 1
    with pytest.raises(ResumeRefused, match=r"sft: .*sft was made with another config \(model\.config_overrides\."
                                            r"num_hidden_layers: 2 → 1\); set train\.resume=never"):
        train_sft(other)
    assert _digests(tmp_path / "sft") == before
    train_sft(_sft(tmp_path, save_final_checkpoint=False))  # the same config again retrains it, as before
    other.train.resume = False  # (the older spelling of never)
    result = train_sft(other)
    assert result.train.resumed_from is None and _digests(tmp_path / "sft") != before


def test_a_checkpoint_of_another_model_is_a_one_line_error_not_a_traceback(tmp_path):
    common = [EXAMPLES / "sft_tiny.yaml", f"run_dir={tmp_path}", f"data.train_file={DATA / 'sft.jsonl'}",
              "train.max_steps=2", "train.batch_size=4", "data.max_length=128", "train.report_to=[]",
              "train.eval_every=0"]
    first, output = _invoke("sft", *common)
    assert first.exit_code == 0, output[-3000:]
    # the checkpoint's weights do not fit a 1-layer model; force skips the config check, the shapes still count
    second, output = _invoke("sft", *common, "model.config_overrides.num_hidden_layers=1", "train.resume=force")
    assert second.exit_code == 2 and "Traceback" not in output, output[-3000:]
    (error,) = _error_lines(output)
    assert "was written for another model (it has a parameter model.layers.1." in error, error
    assert "train.resume=never" in error


def _rejection(run_dir, train=None, **extra):
    base = dict(run_dir=str(run_dir), model=tiny_model_config(), reward=REWARD,
                data=DataConfig(train_file=str(DATA / "prompts.jsonl")), rounds=1, n=2, max_new_tokens=6, max_prompts=4,
                train=TrainConfig(learning_rate=1e-3, max_steps=1, batch_size=4, save_final_checkpoint=False,
                                  report_to=[], **(train or {})))
    return RejectionSamplingConfig(**{**base, **extra})


def test_rejection_sampling_does_not_skip_a_round_made_with_another_config(tmp_path):
    from tether.recipes.best_of_n import run_rejection_sampling

    run_rejection_sampling(_rejection(tmp_path))
    before = _digests(tmp_path / "round-1")
    longer = run_rejection_sampling(_rejection(tmp_path, rounds=2))  # more rounds extend the run: round 1 is kept
    assert len(longer.rounds) == 2 and _digests(tmp_path / "round-1") == before
    with pytest.raises(ResumeRefused, match=r"round-1 was made with another config \(n: 2 → 3\)"):
        run_rejection_sampling(_rejection(tmp_path, n=3))
    fresh = run_rejection_sampling(_rejection(tmp_path, n=3, train={"resume": "never"}))
    (aside,) = tmp_path.glob("rejection-sample.old-*")
    assert _digests(aside / "round-1") == before and (aside / "round-2").is_dir()
    assert len(fresh.rounds) == 1 and [r["step"] for r in read_metrics(tmp_path, "rejection-sample")] == [1]
