"""`tether pipeline` does not skip a finished stage whose settings changed without saying so: its marker records
the settings, `resume=auto` stops with what differs, `force` keeps the stage, `never` moves the run aside.

(The full resumable pipeline: test_pipeline.py, test_pipeline_resume.py.)
"""

import pytest

from tether.config import PipelineConfig, load_config
from tether.recipes.pipeline import Stages, run_pipeline
from tether.utils.resume import ResumeRefused


def _config(run_dir, *overrides):
    return load_config(PipelineConfig, None, [f"run_dir={run_dir}", "sft_model=somewhere/sft", *overrides])


def test_a_finished_stage_with_changed_settings_is_not_skipped_silently(tmp_path):
    Stages(tmp_path, _config(tmp_path)).mark("ppo", {"model": "ppo"}, 1.0)
    # unchanged (threads, metric sinks and another stage's settings do not count): skipped as before
    same = _config(tmp_path, "ppo.num_threads=2", "ppo.report_to=[]", "dpo.kl_coef=0.5")
    assert Stages(tmp_path, same).done("ppo")["outputs"] == {"model": "ppo"}
    changed = _config(tmp_path, "ppo.learning_rate=1e-5")
    with pytest.raises(ResumeRefused, match=r"ppo: finished earlier \(.*ppo\.json\) with other settings "
                                            r"\(ppo\.learning_rate: 1e-06 → 1e-05\); set resume=never"):
        Stages(tmp_path, changed).done("ppo")
    kept = _config(tmp_path, "ppo.learning_rate=1e-5", "resume=force")
    assert Stages(tmp_path, kept).done("ppo")["outputs"] == {"model": "ppo"}


def test_resume_never_moves_the_earlier_pipeline_aside(tmp_path):
    run = tmp_path / "run"
    Stages(run, _config(run)).mark("sft", {"model": "sft"}, 1.0)
    (run / "metrics.jsonl").write_text('{"stage": "sft", "step": 1}\n')
    with pytest.raises(ValueError, match="ppo.data.train_file is required"):  # (stops at its first stage's input)
        run_pipeline(_config(run, "resume=never", "stages=[ppo]", "reward=tether.tasks.toy:short_and_ended"))
    (aside,) = tmp_path.glob("run.old-*")
    assert (aside / ".stages" / "sft.json").is_file() and (aside / "metrics.jsonl").is_file()
    assert not (run / ".stages").exists()


def test_resume_never_refuses_to_move_an_input_inside_the_run_directory(tmp_path):
    run = tmp_path / "run"
    (run / "mine").mkdir(parents=True)
    with pytest.raises(ValueError, match="is inside run_dir .* move it out of run_dir first"):
        run_pipeline(load_config(PipelineConfig, None, [f"run_dir={run}", f"sft_model={run / 'mine'}",
                                                        "resume=never"]))
    assert (run / "mine").is_dir()


def test_a_stage_that_would_now_start_from_another_model_is_not_skipped_silently(tmp_path):
    """``derived.start``: a run finished without ``cai`` and run again with it would sample (and train the reward
    models, PPO, DPO, and evaluate) from the SL-CAI model; the finished stages recorded the SFT model."""
    cfg = _config(tmp_path)
    Stages(tmp_path, cfg, {"start": "sft", "cost_rm": False}).mark("sample", {"samples": "s.jsonl"}, 1.0)
    assert Stages(tmp_path, cfg, {"start": "sft", "cost_rm": True}).done("sample")  # (cost_rm: PPO's alone)
    with pytest.raises(ResumeRefused, match=r"sample: finished earlier .* \(derived\.start: \"sft\" → \"cai_sft\"\)"):
        Stages(tmp_path, cfg, {"start": "cai_sft", "cost_rm": False}).done("sample")
    Stages(tmp_path, cfg, {"start": "sft", "cost_rm": False}).mark("ppo", {"model": "ppo"}, 1.0)
    with pytest.raises(ResumeRefused, match=r"ppo: finished earlier .* \(derived\.cost_rm: false → true\)"):
        Stages(tmp_path, cfg, {"start": "sft", "cost_rm": True}).done("ppo")
    # a marker written before these settings existed (an earlier tether) is not refused for lacking them
    assert Stages(tmp_path, cfg).done("ppo") and Stages(tmp_path / "old", cfg).done("ppo") is None
    Stages(tmp_path / "old", cfg).mark("ppo", {"model": "ppo"}, 1.0)
    assert Stages(tmp_path / "old", cfg, {"start": "cai_sft", "cost_rm": True}).done("ppo")["outputs"] == {"model": "ppo"}
