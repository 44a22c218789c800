"""The preference recipe's own choices: SimPO's β and margin, KTO's mismatched pairs, dropout off."""

import json
import math
from collections import Counter

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from tests.helpers import EXAMPLES, TINY_OVERRIDES, tiny_model_config
from tether.config import ConfigError, DataConfig, LoraConfig, PreferenceConfig, TrainConfig, load_config
from tether.data import DataError, UnpairedExample, load_unpaired_dataset
from tether.models import loading
from tether.models.loading import apply_lora, load_tokenizer
from tether.recipes import preference as recipe
from tether.utils.logging import read_metrics

# ----------------------------------------------------------------------------- SimPO's β and margin


def _simpo_loss(cfg: PreferenceConfig, monkeypatch) -> tuple[float, dict]:
    """The recipe's loss on one pair with chosen log π = -4 over 2 tokens and rejected -9 over 3 tokens,
    so a_c = -2, a_r = -3 and a_c - a_r = 1."""
    monkeypatch.setattr(recipe, "policy_logps",
                        lambda model, batch, *_: (torch.tensor([-4.0, -9.0]), torch.tensor([2.0, 3.0])))
    loss, metrics = recipe.preference_loss(None, {"index": torch.tensor([0])}, 1, cfg, None)
    return loss.item(), metrics


def test_simpo_defaults_are_the_papers(monkeypatch):
    # β = 2 and γ = 0.5·β = 1: logit = 2·(-2) - 2·(-3) - 1 = 1, loss = log(1 + e^-1) ≈ 0.3133
    # (the old defaults, β = 0.1 and γ = 0.5: logit = 0.1 - 0.5 = -0.4, loss ≈ 0.9130)
    cfg = load_config(PreferenceConfig, None, ["loss=simpo"])
    loss, metrics = _simpo_loss(cfg, monkeypatch)
    assert loss == pytest.approx(math.log(1 + math.exp(-1.0)), abs=1e-6)
    assert metrics["rewards/margins"].item() == pytest.approx(2.0, abs=1e-6)  # β·(a_c - a_r) = 2·1
    assert recipe.loss_beta(cfg) == 2.0
    # every other loss keeps β = 0.1 unless told otherwise
    assert [recipe.loss_beta(PreferenceConfig(loss=name)) for name in ("dpo", "ipo", "kto", "orpo")] == [0.1] * 4


def test_simpo_margin_is_a_ratio_of_beta_or_an_explicit_gamma(monkeypatch):
    # β = 2.5, γ/β = 0.2 → γ = 0.5: logit = 2.5·1 - 0.5 = 2, loss = log(1 + e^-2) ≈ 0.1269
    cfg = load_config(PreferenceConfig, None, ["loss=simpo", "kl_coef=2.5", "simpo_gamma_beta_ratio=0.2"])
    assert _simpo_loss(cfg, monkeypatch)[0] == pytest.approx(math.log(1 + math.exp(-2.0)), abs=1e-6)
    # TRL's absolute γ (CPOConfig.simpo_gamma) is honoured as is: β = 2.5, γ = 1.5 → logit = 1, log(1 + e^-1)
    cfg = load_config(PreferenceConfig, None, ["loss=simpo", "kl_coef=2.5", "simpo_gamma=1.5"])
    assert _simpo_loss(cfg, monkeypatch)[0] == pytest.approx(math.log(1 + math.exp(-1.0)), abs=1e-6)
    with pytest.raises(ConfigError, match="both set"):
        load_config(PreferenceConfig, None, ["loss=simpo", "simpo_gamma=1.0", "simpo_gamma_beta_ratio=0.8"])
    with pytest.raises(ConfigError, match="simpo_gamma_beta_ratio: must be >= 0"):
        load_config(PreferenceConfig, None, ["simpo_gamma_beta_ratio=-0.5"])


# ----------------------------------------------------------------------------- KTO's mismatched pairs


def test_kto_mismatched_partners_by_hand():
    # prompts A A B A C → groups A: 0 1 3 | B: 2 | C: 4, listed group after group: [0, 1, 3, 2, 4]
    # A (3 members, 2 others): its k-th member takes the (k mod 2)-th example after A's block → 2, 4, 2
    # B (4 others): the first after B's block → 4; C: the first after C's block, wrapping around → 0
    a, b, c = [1, 2], [3], [4, 5]
    assert recipe.mismatched_partners([a, a, b, a, c]) == [2, 4, 4, 2, 0]


def test_kto_mismatched_pairs_never_share_a_prompt_when_one_prompt_dominates(tmp_path):
    # one ranking of 6 responses (C(6,2) = 15 pairs → 30 examples) and 4 of 2 responses (1 pair → 2 examples
    # each): the first prompt is 30 of 38 examples, so the old rule (the example n/2 = 19 further on) paired
    # most of its examples with its own prompt's completions
    rows = [{"prompt": "Name a colour.", "responses": ["Red.", "Blue.", "Green.", "Teal.", "Pink.", "Grey."],
             "ranks": [0, 1, 2, 3, 4, 5]}]
    rows += [{"prompt": f"Say the number {n}.", "responses": [f"{n}.", "No."], "ranks": [0, 1]} for n in range(4)]
    path = tmp_path / "ranked.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    examples, _ = load_unpaired_dataset(path, load_tokenizer("embedded"), max_length=128)
    assert len(examples) == 38
    mismatched = recipe.kl_examples(examples)
    assert all(m.prompt_ids == e.prompt_ids and m.desirable == e.desirable for m, e in zip(mismatched, examples))
    partners = recipe.mismatched_partners([e.prompt_ids for e in examples])
    assert all(examples[j].prompt_ids != e.prompt_ids for e, j in zip(examples, partners))
    assert [m.completion_ids for m in mismatched] == [examples[j].completion_ids for j in partners]
    # the ranking's 30 examples spread evenly over the 8 others: each used 30/8 → 3 or 4 times
    ranking_partners = Counter(partners[i] for i, e in enumerate(examples) if e.prompt_ids == examples[0].prompt_ids)
    assert len(ranking_partners) == 8 and set(ranking_partners.values()) == {3, 4}
    assert recipe.mismatched_partners([e.prompt_ids for e in examples]) == partners  # fixed: cached ref log-probs


def test_kto_with_a_single_prompt_fails_loudly():
    examples = [UnpairedExample([7, 8], [9], True), UnpairedExample([7, 8], [10], False)]
    with pytest.raises(DataError, match="every example of the held-out data has the same prompt"):
        recipe.kl_examples(examples, "the held-out data")


# ----------------------------------------------------------------------------- dropout off


def _tiny_llama(dropout: float):
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=100, attention_dropout=dropout, **TINY_OVERRIDES))


def _tiny_gpt2(dropout: float):  # nn.Dropout modules built from the config, unlike Llama's attention
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=2, n_positions=32,
                                      resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout))


def _train_and_eval_logits(model, ids):
    model.train()
    train = model(ids).logits
    model.eval()
    return train, model(ids).logits


@pytest.mark.parametrize("build", [_tiny_llama, _tiny_gpt2], ids=["llama", "gpt2"])
@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_disable_dropout_makes_a_training_forward_the_eval_forward(build, lora):
    ids = torch.randint(0, 100, (2, 12), generator=torch.Generator().manual_seed(0))
    model = build(0.5)
    if lora:
        model = apply_lora(model, LoraConfig(enabled=True, r=4, dropout=0.3, target_modules="all-linear"))
    train, evaluated = _train_and_eval_logits(model, ids)
    assert (train - evaluated).abs().max() > 0.01  # the model really drops something in training
    assert loading.disable_dropout(model) is model
    train, evaluated = _train_and_eval_logits(model, ids)
    assert torch.equal(train, evaluated)
    lora_dropouts = [m.p for name, m in model.named_modules()
                     if "lora_dropout" in name and isinstance(m, torch.nn.Dropout)]
    assert lora_dropouts == ([0.3] * len(lora_dropouts)) and bool(lora_dropouts) == lora  # LoRA's own: as set


@pytest.mark.parametrize("loss", ["dpo", "kto"])
def test_step_one_implicit_rewards_are_zero_with_dropout_in_the_config(tmp_path, loss):
    """Before the first update the policy IS the reference, so every implicit reward is 0 (and KTO's z₀ too) --
    unless the policy is run with dropout: this model's attention drops half its weights in training.

    Bound: each reward is β·(log π − log π_ref) of one response, both sums of ≤ 128 fp32 token log-probs
    (|log p| ≈ 10.8 for this random model), computed in batches of different shapes; a few ulp (1e-6)
    per token over 128 tokens is 1.3e-4 at worst, 1.3e-5 after β = 0.1 (z₀ is not scaled by β).
    Asserted: 1e-4 for the rewards, 1e-3 for z₀. With the attention dropout left on they were 2e-3 to
    8e-2 on this machine (exactly 0 with it off)."""
    model = tiny_model_config()
    model.config_overrides["attention_dropout"] = 0.5
    cfg = PreferenceConfig(
        run_dir=str(tmp_path), name=loss, loss=loss, model=model,
        data=DataConfig(train_file=str(EXAMPLES / "data" / "preferences.jsonl"), eval_fraction=0.0, max_length=128,
                        max_train_examples=16),
        train=TrainConfig(batch_size=8, eval_batch_size=16, max_steps=1, learning_rate=1e-3, report_to=[]))
    recipe.train_preference(cfg)
    first = read_metrics(tmp_path, loss)[0]
    bounds = {"rewards/chosen": 1e-4, "rewards/rejected": 1e-4}
    bounds.update({"kl": 1e-3} if loss == "kto" else {"rewards/margins": 1e-4})
    for key, bound in bounds.items():
        assert abs(first[key]) <= bound, (key, first[key])
