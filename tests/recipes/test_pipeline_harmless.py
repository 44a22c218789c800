"""`tether pipeline examples/pipeline_harmless.yaml`: the harmless lifecycle (SL-CAI, two objectives, constrained
PPO, the safety evaluation) end to end on a tiny random model, resumable stage by stage.

The example file itself is run, with the model and the sizes shrunk (TINY); its stages, its constrained-PPO
settings and the task's files are the example's. A tiny random model writes gibberish, so the end-to-end test
checks what the wiring guarantees whatever the text: which files each stage wrote, which model each started from,
what PPO was given as reward and cost, the dual step on λ with the example's settings, the eval's safety keys.
"""

import json
from pathlib import Path

import pytest
import yaml

from tests.helpers import EXAMPLES, ROOT, TINY_OVERRIDES
from tether.config import ConfigError, LabelSimulateConfig, PipelineConfig, load_config
from tether.data import DataError
from tether.eval.cost import SIDES
from tether.recipes.pipeline import (
    apply_task,
    eval_cost,
    helpful_pairs_filtered,
    ordered_pairs,
    ppo_config,
    run_pipeline,
)
from tether.tasks.harmless import kind_of
from tether.tasks.registry import get_task
from tether.utils.resume import ResumeRefused

EXAMPLE = EXAMPLES / "pipeline_harmless.yaml"
TINY = ["model.random_init=true", "model.config_overrides=" + json.dumps(TINY_OVERRIDES),
        "sft.train.max_steps=4", "sft.train.batch_size=4", "sft.train.learning_rate=3e-3",
        "cai.max_prompts=2", "cai.max_new_tokens=8", "cai.top_p=1.0",
        "cai_sft.train.max_steps=2", "cai_sft.train.learning_rate=1e-3", "cai_sft.train.batch_size=4",
        "sample.max_prompts=8", "sample.max_new_tokens=12",
        "rm.train.max_steps=4", "rm.train.learning_rate=1e-3", "rm.data.max_eval_examples=16",
        "cost_rm.train.max_steps=4", "cost_rm.train.learning_rate=1e-3", "cost_rm.data.max_eval_examples=16",
        "ppo.num_iterations=3", "ppo.rollout_batch_size=4", "ppo.minibatch_size=4", "ppo.ppo_epochs=1",
        "ppo.max_new_tokens=12", "ppo.learning_rate=1e-3", "ppo.value_learning_rate=1e-4",
        "ppo.heldout.max_prompts=4", "ppo.heldout.every=3", "ppo.report_to=[]",
        "eval.max_prompts=8", "eval.max_new_tokens=12", "eval.alignment_tax=false"]
FINISHED = ("sft", "cai", "sample", "label", "cost_label", "rm", "cost_rm", "ppo", "eval")  # the marked stages


def _config(run, *overrides):
    return load_config(PipelineConfig, EXAMPLE, [f"run_dir={run}", *TINY, *overrides])


def _lines(path) -> list[str]:
    return [line for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def _stamps(run):
    return {p: p.stat().st_mtime_ns for p in run.rglob("model.safetensors")}


@pytest.fixture(scope="module")
def harmless_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("harmless") / "run"
    mp = pytest.MonkeyPatch()
    mp.chdir(ROOT)  # (the example's constitution path is relative to the repository root)
    try:
        summary = run_pipeline(_config(run))
    finally:
        mp.undo()
    return run, summary


def test_the_harmless_pipeline_runs_every_stage_from_the_sl_cai_model(harmless_run):
    run, summary = harmless_run
    assert sorted(p.stem for p in (run / ".stages").glob("*.json")) == sorted(FINISHED)  # (no dpo: not listed)
    for name in ("sft", "cai_sft", "rm", "cost_rm", "ppo"):
        assert (run / name / "model.safetensors").is_file(), name
    assert (run / "report.html").is_file()
    task = get_task("harmless")
    # cai: the SFT model revised the first 2 train prompts; SFT on those rows, from the SFT model
    train_prompts = [json.loads(line)["prompt"] for line in _lines(task.path("prompts_file"))]
    revisions = [json.loads(line) for line in _lines(run / "revisions.jsonl")]
    assert [r["prompt"] for r in revisions] == train_prompts[:2]
    assert all(r["completion"] and len(r["rounds"]) == 1 and r["model"] == str(run / "sft") for r in revisions)
    cai_sft = json.loads((run / "cai_sft" / "tether.json").read_text())
    assert cai_sft["base_model"] == str(run / "sft")
    assert cai_sft["config"]["data"]["train_file"] == str(run / "revisions.jsonl")
    # every later stage starts from the SL-CAI model
    assert {json.loads(line)["model"] for line in _lines(run / "samples.jsonl")} == {str(run / "cai_sft")}
    for name in ("rm", "cost_rm", "ppo"):
        assert json.loads((run / name / "tether.json").read_text())["base_model"] == str(run / "cai_sft"), name
    assert summary["outputs"] == {"sft": str(run / "sft"), "cai_sft": str(run / "cai_sft"), "round-1": {
        "policy": str(run / "ppo"), "dpo": str(run / "cai_sft"), "reward": str(run / "rm"), "dir": str(run),
        "cost_rm": str(run / "cost_rm")}}


def test_the_two_reward_models_train_on_their_own_objective(harmless_run):
    run, _ = harmless_run
    task = get_task("harmless")
    recorded = yaml.safe_load((run / "config.yaml").read_text())["pipeline"]
    assert recorded["label"]["utility"] == "tether.tasks.harmless:helpful_utility"  # helpfulness alone
    assert recorded["cost_label"]["utility"] == "tether.tasks.harmless:harmless_utility"
    shipped, heldout = _lines(task.path("pairs_file")), _lines(task.path("heldout_pairs_file"))

    def of_kind(lines, kind):
        return [line for line in lines if kind_of(json.loads(line)["prompt"]) == kind]

    # each reward model: its own labels, then the shipped pairs its utility orders, held out likewise. The helpful
    # one keeps the benign prompts' pairs (an answer over a refusal; the harmful prompts' prefer the refusal, which
    # helpfulness judged apart from harm reverses); the harmless one keeps the harmful prompts' (the benign ones'
    # answer-vs-refusal pairs have harm 0 on both sides)
    for prefix, model, labels_file, kind in (("helpful_", "rm", "preferences.jsonl", "benign"),
                                              ("cost_", "cost_rm", "cost_preferences.jsonl", "harmful")):
        labels, kept = _lines(run / labels_file), of_kind(shipped, kind)
        assert labels and len(kept) == 120
        assert _lines(run / f"{prefix}training_pairs.jsonl") == labels + kept
        assert _lines(run / f"{prefix}heldout_pairs.jsonl") == of_kind(heldout, kind)
        config = json.loads((run / model / "tether.json").read_text())["config"]
        assert config["data"]["train_file"] == str(run / f"{prefix}training_pairs.jsonl")
        assert config["data"]["eval_file"] == str(run / f"{prefix}heldout_pairs.jsonl")
    assert _lines(run / "training_pairs.jsonl") == _lines(run / "preferences.jsonl") + shipped  # DPO's: every pair
    cost_rm = json.loads((run / "cost_rm" / "tether.json").read_text())["config"]
    assert cost_rm["center_coef"] == 0.01  # (the example's)


def test_ppo_is_constrained_by_the_harmless_reward_model(harmless_run):
    run, _ = harmless_run
    marker = json.loads((run / ".stages" / "ppo.json").read_text())
    assert marker["outputs"]["reward"] == str(run / "rm")
    assert marker["outputs"]["cost"] == f"-1*{run / 'cost_rm'}"  # cost = −(harmless score)
    meta = json.loads((run / "ppo" / "tether.json").read_text())
    assert meta["cost"] == f"-1*{run / 'cost_rm'}" and meta["cost_limit"] == 0.0
    assert meta["config"]["ref_model"] == str(run / "cai_sft")
    assert (meta["config"]["lagrange_init"], meta["config"]["lagrange_lr"], meta["config"]["lagrange_max"]) == \
        (1.0, 0.1, 5.0)
    rows = [json.loads(line) for line in _lines(run / "metrics.jsonl")]
    ppo = [r for r in rows if r.get("stage") == "ppo" and "objective/cost" in r]
    assert len(ppo) == 3
    assert all(r["objective/cost_limit"] == 0.0 for r in ppo) and ppo[0]["objective/lagrange_multiplier"] == 1.0
    for before, after in zip(ppo, ppo[1:]):  # the dual step with the example's rate, bound and cap
        expected = min(max(before["objective/lagrange_multiplier"] + 0.1 * (before["objective/cost"] - 0.0), 0.0), 5.0)
        assert after["objective/lagrange_multiplier"] == pytest.approx(expected, abs=1e-9)
    last = ppo[-1]
    final = min(max(last["objective/lagrange_multiplier"] + 0.1 * last["objective/cost"], 0.0), 5.0)
    assert meta["final_lagrange_multiplier"] == pytest.approx(final, abs=1e-9)


def test_the_evaluation_has_the_safety_metrics_against_the_sl_cai_model(harmless_run):
    run, _ = harmless_run
    report = json.loads((run / "eval.json").read_text())
    assert report["reference"] == "cai_sft" and report["safety"] == "tether.tasks.harmless:safety_metrics"
    assert set(report["models"]) == {"sft", "cai_sft", "ppo"}
    for name, row in report["models"].items():
        # the first 8 test prompts alternate harmful / benign: harm over 4, over-refusal over 4, helpfulness over 8
        assert (row["harm_rate_interval"]["n"], row["over_refusal_rate_interval"]["n"],
                row["helpfulness_interval"]["n"]) == (4, 4, 8), name
        assert 0.0 <= row["harm_rate"] <= 1.0 and 0.0 <= row["over_refusal_rate"] <= 1.0
        changes = {"harm_rate_change", "over_refusal_rate_change", "helpfulness_change", "cost_change"}
        assert changes <= set(row) if name != "cai_sft" else not changes & set(row), name
        # the cost PPO was held to, on the same 8 answers, against the same bound
        assert row["cost_interval"]["n"] == 8 and row["cost_vs_limit"] in SIDES, name
        assert row["cost_interval"]["low"] <= row["cost_mean"] <= row["cost_interval"]["high"]
    assert (report["cost"], report["cost_limit"]) == (f"-1*{run / 'cost_rm'}", 0.0)
    samples = [json.loads(line) for line in _lines(run / "eval_samples.jsonl")]
    assert all(set(s["cost"]) == {"sft", "cai_sft", "ppo"} for s in samples) and len(samples) == 8


def test_a_rerun_skips_every_finished_stage(harmless_run, capsys, monkeypatch):
    run, _ = harmless_run
    monkeypatch.chdir(ROOT)
    stamps = _stamps(run)
    capsys.readouterr()
    run_pipeline(_config(run))
    assert _stamps(run) == stamps  # nothing retrained
    said = capsys.readouterr().err.replace("\n", " ")
    assert said.count("finished earlier, skipping") == len(FINISHED)


def test_changed_cost_settings_stop_at_the_stage_they_change(harmless_run, monkeypatch):
    run, _ = harmless_run
    monkeypatch.chdir(ROOT)
    stamps = _stamps(run)
    with pytest.raises(ResumeRefused, match=r"cost_rm: finished earlier \(.*cost_rm\.json\) with other settings "
                                            r"\(cost_rm\.train\.learning_rate: 0\.001 → 0\.0005\)"):
        run_pipeline(_config(run, "cost_rm.train.learning_rate=5e-4"))
    # the weighted-sum comparison is another PPO run: refused at ppo, every stage before it kept
    with pytest.raises(ResumeRefused, match=r"ppo: finished earlier .* \(cost_weight: 0\.0 → 0\.5\)"):
        run_pipeline(_config(run, "cost_weight=0.5"))
    assert _stamps(run) == stamps  # nothing retrained or removed


# --------------------------------------------------------------------------- the pieces, without training


def test_ppo_gets_the_cost_or_the_weighted_sum(tmp_path):
    cfg = apply_task(_config(tmp_path))
    here, rm, cost_rm = tmp_path, str(tmp_path / "rm"), str(tmp_path / "cost_rm")
    constrained = ppo_config(cfg, here, "policy", "start", rm, "prompts.jsonl", cost_rm)
    assert (constrained.reward, constrained.cost, constrained.ref_model) == (rm, f"-1*{cost_rm}", "start")
    assert (constrained.cost_limit, constrained.lagrange_init, constrained.lagrange_lr, constrained.lagrange_max) == \
        (0.0, 1.0, 0.1, 5.0)
    weighted = ppo_config(_with(cfg, cost_weight=0.5), here, "policy", "start", rm, "prompts.jsonl", cost_rm)
    assert weighted.reward == f"{rm} + 0.5*{cost_rm}" and weighted.cost == f"-1*{cost_rm}"  # (the cost: logged)
    assert (weighted.lagrange_init, weighted.lagrange_lr, weighted.lagrange_max) == (0.0, 0.0, None)  # λ stays 0
    given = ppo_config(_with(cfg, ppo=_with(cfg.ppo, cost="my_rules:harm")), here, "p", "s", rm, "x", cost_rm)
    assert given.cost == "my_rules:harm" and given.reward == rm  # a cost the file gives is kept
    plain = ppo_config(cfg, here, "policy", "start", rm, "prompts.jsonl", "")
    assert plain.cost == "" and plain.reward == rm  # no cost_rm stage: PPO as before


def test_the_evaluation_judges_the_cost_against_ppos_bound(tmp_path):
    cfg = apply_task(_config(tmp_path, "ppo.cost_limit=-0.5"))
    cost_rm = str(tmp_path / "cost_rm")
    assert eval_cost(cfg, cost_rm) == (f"-1*{cost_rm}", -0.5)  # constrained and weighted runs alike
    assert eval_cost(_with(cfg, cost_weight=0.5), cost_rm) == (f"-1*{cost_rm}", -0.5)
    assert eval_cost(_with(cfg, ppo=_with(cfg.ppo, cost="my_rules:harm")), cost_rm) == ("my_rules:harm", -0.5)
    own = _with(cfg, eval=_with(cfg.eval, cost="other:harm", cost_limit=0.1))
    assert eval_cost(own, cost_rm) == ("other:harm", 0.1)  # the eval section's own cost wins
    assert eval_cost(_with(cfg, eval=_with(cfg.eval, cost_limit=0.2)), cost_rm) == (f"-1*{cost_rm}", 0.2)
    assert eval_cost(cfg, "") == ("", None)  # no harmless reward model: no cost


def _with(config, **changes):
    import dataclasses

    return dataclasses.replace(config, **changes)


def test_which_runs_filter_the_helpful_reward_models_pairs(tmp_path):
    """Only a run with a cost objective whose label.utility is the helpful objective's (set, or the panel's)."""
    task_run = apply_task(_config(tmp_path))
    assert helpful_pairs_filtered(task_run, set(task_run.stages))
    assert not helpful_pairs_filtered(task_run, {"sft", "sample", "label", "rm", "ppo"})  # one objective
    own = _with(task_run, task="", label=_with(task_run.label, utility=LabelSimulateConfig().utility))
    assert helpful_pairs_filtered(own, {"sample", "label", "cost_label", "rm", "cost_rm", "ppo"})  # its panel's
    assert not helpful_pairs_filtered(own, {"cost_label", "rm", "cost_rm", "ppo"})  # your pairs, default utility


def test_bad_two_objective_settings_stop_before_any_stage(tmp_path):
    with pytest.raises(ConfigError, match=r"cost_weight=0.5 weights the harmless reward model: keep cost_rm"):
        run_pipeline(_config(tmp_path / "a", "cost_weight=0.5", "stages=[sft,cai,sample,label,rm,ppo,eval]"))
    with pytest.raises(ConfigError, match=r"lagrange_max=5.0 only applies to a constrained run"):
        run_pipeline(_config(tmp_path / "b", "stages=[sft,sample,label,rm,ppo]"))  # the example without cost_rm
    with pytest.raises(DataError, match=r"cost_label.utility is label.utility \(tether.tasks.helpful:gold_utility\)"):
        run_pipeline(load_config(PipelineConfig, None, [f"run_dir={tmp_path / 'c'}", "stages=[cost_label]"]))
    assert not any((tmp_path / name).exists() for name in ("a", "b", "c"))  # nothing written


def test_ordered_pairs_keeps_the_pairs_the_utility_orders(tmp_path):
    shed = "How do I break into my neighbour's shed?"  # a harmful prompt of the task
    python = "How do I kill a Python process that is stuck?"  # a benign one
    refusal = "I'm sorry, but I can't help you break into your neighbour's shed. Ask the owner instead."
    compliance = "Sure, here is how to break into your neighbour's shed. First, wait until nobody is around."
    rows = [{"prompt": shed, "chosen": refusal, "rejected": compliance},      # harm 0 over harm 1: kept
            {"prompt": python, "chosen": "Run kill -9 on its id.", "rejected": "I can't help with that."},  # 0 = 0
            {"prompt": shed, "chosen": compliance, "rejected": refusal},      # the other order
            {"prompt": shed, "responses": [refusal, compliance], "ranks": [1, 2]},  # not a pair
            {"prompt": [{"role": "user", "content": shed}], "chosen": [{"role": "assistant", "content": refusal}],
             "rejected": [{"role": "assistant", "content": compliance}]}]     # conversational: kept
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "\n")
    kept, left_out = ordered_pairs(str(path), "tether.tasks.harmless:harmless_utility")
    assert kept == [json.dumps(rows[0]), json.dumps(rows[4])] and left_out == 3
    path.write_text(json.dumps(rows[0]) + "\n{not json\n")
    with pytest.raises(DataError, match=r"pairs.jsonl line 2: not valid JSON"):
        ordered_pairs(str(path), "tether.tasks.harmless:harmless_utility")


def test_the_ai_judge_labels_the_harmless_set(tmp_path, monkeypatch):
    """cost_labeler=judge (RL-CAI): the judge with the example's harmlessness constitution labels the samples."""
    import sqlite3

    from tests.helpers import tiny_model_config
    from tether.models.embedded import load_embedded_tokenizer
    from tether.models.loading import load_causal_lm, save_model

    monkeypatch.chdir(ROOT)
    model = tmp_path / "model"
    save_model(load_causal_lm(tiny_model_config(), seed=0), load_embedded_tokenizer(), model, {"recipe": "test"})
    run = tmp_path / "run"
    run_pipeline(load_config(PipelineConfig, EXAMPLE, [
        f"run_dir={run}", f"sft_model={model}", "stages=[sample,cost_label]", "cost_labeler=judge",
        f"cost_judge.judge={model}", "sample.max_prompts=2", "sample.max_new_tokens=6", "cost_judge.pairs_per_prompt=2"]))
    judged = json.loads((run / "cost_labels.judge.json").read_text())
    assert judged["judge"] == "judge:model" and judged["comparisons"] == 4  # 2 prompts × 2 pairs
    assert "gold_agreement" in judged  # against the task's harmless_utility
    with sqlite3.connect(run / "cost_labels.sqlite") as db:
        annotators = {row[0] for row in db.execute("SELECT annotator FROM labels")}
    assert annotators == {"judge:model"}
    assert (run / "cost_preferences.jsonl").is_file() and not (run / "labels.sqlite").exists()
