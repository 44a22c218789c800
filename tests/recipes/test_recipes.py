"""Recipes on a tiny random model: each test asserts what only a working recipe achieves."""

import json
import math
import shutil

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from tests.helpers import EXAMPLES, tiny_model_config
from tether.config import DataConfig, PreferenceConfig, RewardModelConfig, ScoreConfig, SFTConfig, TrainConfig
from tether.recipes.preference import train_preference
from tether.recipes.reward_model import train_reward_model
from tether.recipes.score import score_file
from tether.recipes.sft import train_sft
from tether.utils.logging import read_metrics

DATA = EXAMPLES / "data"


def _train(**kwargs):
    base = dict(batch_size=8, eval_batch_size=16, warmup_ratio=0.1, report_to=["tensorboard"])
    return TrainConfig(**{**base, **kwargs})


@pytest.fixture(scope="module")
def rm_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("rm")
    cfg = RewardModelConfig(
        run_dir=str(run), model=tiny_model_config(),
        data=DataConfig(train_file=str(DATA / "preferences.jsonl"), eval_file=str(DATA / "preferences_eval.jsonl"),
                        max_length=256),
        train=_train(learning_rate=1e-3, max_steps=60), center_coef=0.01)
    return run, train_reward_model(cfg)


def test_sft_loss_falls_and_writes_an_hf_model(tmp_path):
    cfg = SFTConfig(run_dir=str(tmp_path), model=tiny_model_config(),
                    data=DataConfig(train_file=str(DATA / "sft.jsonl"), max_length=256, max_eval_examples=32),
                    train=_train(learning_rate=3e-3, max_steps=30, eval_every=10))
    result = train_sft(cfg)
    evals = [r["eval/loss"] for r in read_metrics(tmp_path, "sft") if "eval/loss" in r]
    assert len(evals) == 3 and evals[-1] < evals[0] - 1.0
    model = AutoModelForCausalLM.from_pretrained(result.model_dir)
    assert model.config.num_hidden_layers == 2
    assert (result.model_dir / "model.safetensors").is_file() and not list(result.model_dir.glob("*.bin"))
    meta = json.loads((result.model_dir / "tether.json").read_text())
    assert meta["recipe"] == "sft" and meta["steps"] == 30
    assert "sft" in (tmp_path / "config.yaml").read_text()
    assert list((tmp_path / "tensorboard" / "sft").glob("events.out.tfevents.*"))


def test_reward_model_beats_the_length_baseline(rm_run):
    run, result = rm_run
    report = json.loads((result.model_dir / "eval_report.json").read_text())
    assert report["n_pairs"] == 192
    assert 0.4 <= report["length_baseline_accuracy"] <= 0.6  # length is uninformative in this data
    assert report["accuracy"] >= report["length_baseline_accuracy"] + 0.2
    assert len(report["calibration"]) == 10 and 0.0 <= report["calibration_ece"] <= 1.0
    rows = read_metrics(run, "rm")
    assert rows[-1]["report/accuracy"] == report["accuracy"]


def test_score_matches_plain_transformers(rm_run, tmp_path):
    _, result = rm_run
    rows = [{"prompt": "How do I keep basil alive?", "response": "Give it light and water when the soil is dry."},
            {"prompt": "How do I keep basil alive?", "response": "Whatever, figure it out yourself."},
            {"prompt": "Say hi", "chosen": "Hi there!", "rejected": "No."}]
    src = tmp_path / "rows.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = score_file(ScoreConfig(model=str(result.model_dir), input=str(src), output=str(tmp_path / "out.jsonl")))
    scored = [json.loads(line) for line in out.read_text().splitlines()]
    model = AutoModelForSequenceClassification.from_pretrained(result.model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(result.model_dir)

    def plain(prompt, response):
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt},
                                              {"role": "assistant", "content": response}], tokenize=False)
        ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")
        with torch.no_grad():
            return model(**ids).logits[0, 0].item()

    assert scored[0]["score"] == pytest.approx(plain(rows[0]["prompt"], rows[0]["response"]), abs=1e-5)
    assert scored[1]["score"] == pytest.approx(plain(rows[1]["prompt"], rows[1]["response"]), abs=1e-5)
    assert scored[2]["chosen_score"] == pytest.approx(plain("Say hi", "Hi there!"), abs=1e-5)
    assert scored[0]["score"] > scored[1]["score"]  # the trained model prefers the helpful answer


def test_score_formats_rows_as_the_reward_model_was_trained(rm_run, tmp_path):
    # a reward model trained on plain text (data.chat_template=never, as the sentiment quickstart's) is scored on
    # plain text by default, though its tokenizer carries a chat template; the reference is plain transformers
    _, result = rm_run
    plain_dir = tmp_path / "rm-plain"
    shutil.copytree(result.model_dir, plain_dir)
    meta = json.loads((plain_dir / "tether.json").read_text())
    meta["config"]["data"]["chat_template"] = "never"
    (plain_dir / "tether.json").write_text(json.dumps(meta))
    src = tmp_path / "rows.jsonl"
    src.write_text(json.dumps({"prompt": "The room", "response": " was clean and quiet."}) + "\n")
    score = json.loads(score_file(ScoreConfig(model=str(plain_dir), input=str(src))).read_text())["score"]
    templated = json.loads(score_file(ScoreConfig(model=str(plain_dir), input=str(src), chat_template="always",
                                                  output=str(tmp_path / "t.jsonl"))).read_text())["score"]
    model = AutoModelForSequenceClassification.from_pretrained(plain_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(plain_dir)
    ids = tokenizer("The room")["input_ids"] + tokenizer(" was clean and quiet.", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        expected = model(input_ids=torch.tensor([ids + [tokenizer.eos_token_id]])).logits[0, 0].item()
    assert score == pytest.approx(expected, abs=1e-5)
    assert abs(templated - score) > 1e-3  # the two formats do score differently: the setting matters


def test_reward_model_ensemble(tmp_path):
    cfg = RewardModelConfig(
        run_dir=str(tmp_path), model=tiny_model_config(), ensemble_size=2, ensemble_k=1.0,
        data=DataConfig(train_file=str(DATA / "preferences.jsonl"), eval_file=str(DATA / "preferences_eval.jsonl"),
                        max_length=256, max_eval_examples=32, max_train_examples=64),
        train=_train(learning_rate=1e-3, max_steps=4))
    result = train_reward_model(cfg)
    assert json.loads((result.model_dir / "ensemble.json").read_text())["members"] == ["member-0", "member-1"]
    assert result.report["ensemble_disagreement_mean"] > 0  # different seeds disagree
    src = tmp_path / "rows.jsonl"
    src.write_text(json.dumps({"prompt": "Hi", "response": "Hello!"}) + "\n")
    row = json.loads(score_file(ScoreConfig(model=str(result.model_dir), input=str(src))).read_text())
    assert row["score_conservative"] == pytest.approx(row["score"] - row["score_std"], abs=1e-6)


def _dpo_config(tmp_path, loss, steps, **extra):
    return PreferenceConfig(
        run_dir=str(tmp_path), name=loss, model=extra.pop("model", tiny_model_config()), loss=loss,
        kl_coef=extra.pop("kl_coef", 0.1),
        data=DataConfig(train_file=str(DATA / "preferences.jsonl"), eval_file=str(DATA / "preferences_eval.jsonl"),
                        max_length=256, max_eval_examples=32),
        train=_train(learning_rate=1e-3, max_steps=steps, **extra))


# Before the first update the policy IS the reference, so the implicit rewards are 0 up to float rounding:
# each is β·(log π − log π_ref) of one response, sums of ≤ 256 fp32 token log-probs (|log p| ≈ 10.8 here)
# from batches of different shapes; a few ulp (1e-6) per token is 2.6e-4 at worst, 2.6e-5 after β = 0.1.
# Asserted: 1e-4 (on this machine they are exactly 0; a policy that differs from its reference by a
# dropout mask gave 1e-2).
AT_THE_REFERENCE = 1e-4


def test_dpo_learns_the_preferences(tmp_path):
    result = train_preference(_dpo_config(tmp_path, "dpo", 20))
    rows = read_metrics(tmp_path, "dpo")
    first, last = rows[0], [r for r in rows if "eval/rewards/accuracies" in r][-1]
    assert first["rewards/margins"] == pytest.approx(0.0, abs=AT_THE_REFERENCE)  # policy == reference at step 1
    assert last["eval/rewards/accuracies"] >= 0.7 and last["eval/rewards/margins"] > 0.2
    assert AutoModelForCausalLM.from_pretrained(result.model_dir).config.num_hidden_layers == 2


# Held-out implicit reward margin (KTO: mean chosen minus mean rejected reward) each loss must pass after 3
# steps. Before training it is 0 for the losses with a reference (policy == reference) and, for this random
# model, 0.007 (orpo, λ = 1) and 0.014 (simpo) for the reference-free ones (held-out accuracy 0.59).
# Correct runs reached at step 3: ipo 0.0085, cdpo / robust / hinge 0.24, kto 0.23, simpo 0.18, orpo 0.069,
# with held-out accuracy 0.81-0.94. The asserts ask for about a third of the margin and accuracy >= 0.65
# (5 of the 32 pairs below the lowest correct run). Each loss with its sign flipped ended at accuracy
# 0.22-0.28 (orpo 0.44, margin -0.002; kto's margin -0.24). The scales differ: IPO works on per-token mean
# log-probs (ipo_average_logps); simpo's and orpo's rewards are β times a mean log-prob, β = 2 for simpo.
# ORPO runs at λ = β = 1, not the paper's 0.1: at 0.1 its NLL term dominates 3 steps, and with the odds
# term's sign flipped the margin still rose (0.0019 against 0.0055), too close to tell apart.
MARGIN_AFTER_3_STEPS = {"ipo": 0.003, "cdpo": 0.08, "robust": 0.08, "hinge": 0.08, "kto": 0.08, "orpo": 0.023,
                        "simpo": 0.06}
TEST_BETA = {"orpo": 1.0}  # others: the loss's own default β (None → 2.0 for simpo, 0.1 otherwise)


@pytest.mark.parametrize("loss", list(MARGIN_AFTER_3_STEPS))
def test_every_preference_loss_learns_the_preferences(tmp_path, loss):
    result = train_preference(_dpo_config(tmp_path, loss, 3, kl_coef=TEST_BETA.get(loss)))
    rows = read_metrics(tmp_path, loss)
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3]
    assert all(math.isfinite(r["loss"]) for r in rows if "loss" in r)
    held_out = [r for r in rows if "eval/loss" in r][-1]
    if loss == "kto":
        margin = held_out["eval/rewards/chosen"] - held_out["eval/rewards/rejected"]
    else:
        margin = held_out["eval/rewards/margins"]
        assert held_out["eval/rewards/accuracies"] >= 0.65
    assert margin > MARGIN_AFTER_3_STEPS[loss]
    assert (result.model_dir / "model.safetensors").is_file()


def test_dpo_with_lora_uses_the_adapter_free_base_as_reference(tmp_path):
    model = tiny_model_config()
    model.lora.enabled = True
    model.lora.r = 4
    result = train_preference(_dpo_config(tmp_path, "dpo", 3, model=model))
    rows = read_metrics(tmp_path, "dpo")
    # LoRA's B starts at 0, so the policy IS its adapter-free base, the reference (bound: AT_THE_REFERENCE)
    assert rows[0]["rewards/margins"] == pytest.approx(0.0, abs=AT_THE_REFERENCE)
    merged = AutoModelForCausalLM.from_pretrained(result.model_dir)
    assert not any("lora" in name for name, _ in merged.named_parameters())


def test_rerunning_a_finished_stage_resumes_instead_of_retraining(tmp_path):
    cfg = SFTConfig(run_dir=str(tmp_path), model=tiny_model_config(),
                    data=DataConfig(train_file=str(DATA / "sft.jsonl"), max_length=128, eval_fraction=0.0),
                    train=_train(learning_rate=1e-3, max_steps=4, save_every=2))
    first = train_sft(cfg)
    second = train_sft(cfg)
    assert first.train.resumed_from is None and second.train.resumed_from == 4
    assert len([r for r in read_metrics(tmp_path, "sft") if "loss" in r]) == 4


def test_reward_model_with_lora_on_rankings(tmp_path):
    model = tiny_model_config()
    model.lora.enabled = True
    model.lora.r = 4
    cfg = RewardModelConfig(
        run_dir=str(tmp_path), model=model,
        data=DataConfig(train_file=str(DATA / "rankings.jsonl"), eval_fraction=0.2, max_length=256),
        train=_train(learning_rate=1e-3, max_steps=3))
    result = train_reward_model(cfg)
    # 100 rankings of 4 responses, every 10th with one tie: 600 - 10 = 590 ordered pairs, 20% held out
    assert result.report["n_train_pairs"] + result.report["n_pairs"] == 590
    saved = AutoModelForSequenceClassification.from_pretrained(result.model_dir)
    assert saved.config.num_labels == 1 and not any("lora" in n for n, _ in saved.named_parameters())
