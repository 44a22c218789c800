"""`tether rm` ends with a loud warning when its reward model is worse than chance or the 'longer wins' baseline."""

from tests.helpers import ROOT


def _rm(tmp_path, monkeypatch, accuracy):
    """`tether rm` on the tiny example for one step, its held-out report replaced by one with ``accuracy``."""
    from typer.testing import CliRunner

    from tether.cli import app
    from tether.recipes import reward_model

    report = {"n_pairs": 8, "accuracy": accuracy, "length_baseline_accuracy": 0.396, "reward_length_correlation": 0.1,
              "mean_margin": -0.2, "calibration_ece": 0.3, "calibration": []}
    monkeypatch.setattr(reward_model, "evaluate_pairs", lambda *args, **kwargs: dict(report))
    monkeypatch.chdir(ROOT)
    return CliRunner().invoke(app, ["rm", "examples/rm_tiny.yaml", f"run_dir={tmp_path}", "train.max_steps=1",
                                    "train.eval_every=0", "data.max_train_examples=8", "data.max_eval_examples=8",
                                    "train.report_to=[]"])


def test_a_reward_model_below_chance_ends_tether_rm_with_a_warning(tmp_path, monkeypatch):
    result = _rm(tmp_path, monkeypatch, accuracy=0.188)
    assert result.exit_code == 0, result.output  # a warning: the model is written, the user decides
    last = " ".join(result.stderr.strip().split("reward model done")[-1].split())
    assert last.endswith("warning: the reward model's held-out accuracy 0.188 is below chance (0.5) and below the "
                         "'longer response wins' baseline (0.396): RL against it optimises the wrong thing. Check the "
                         "preferences (chosen and rejected swapped?), add pairs or train longer")

