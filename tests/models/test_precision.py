"""Precision modes (tether.models.precision): what auto picks and why, what bf16-mixed keeps in fp32, and the
sampler's own log-probs that generation/logprob_gap compares with the trainer's."""

import copy
import math

import pytest
import torch

from tests.helpers import tiny_model_config
from tether.config import EvalConfig, ModelConfig, PPOConfig
from tether.models import precision as P
from tether.rollout.generation import GenerationConfig, RowSeededSampler, SampledLogprobs, generate, response_logprobs

INTEL_EMR = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni\n"
AMX = "flags\t\t: fpu avx512f amx_bf16 amx_tile\n"
GRAVITON3 = "processor\t: 0\nFeatures\t: fp asimd sve i8mm bf16\n"
OLD_X86 = "flags\t\t: fpu sse2 avx2 fma\n"


def test_cpu_flags_from_cpuinfo():
    assert P.cpu_bf16_flags(INTEL_EMR) == ["avx512_bf16"]
    assert P.cpu_bf16_flags(AMX) == ["amx_bf16"]
    assert P.cpu_bf16_flags(GRAVITON3) == ["bf16"]
    assert P.cpu_bf16_flags(OLD_X86) == []
    assert P.cpu_bf16_flags("") == []


def test_explicit_precisions_are_taken_as_given():
    for mode in ("fp32", "bf16-mixed", "bf16"):
        resolved = P.resolve_precision(mode, "cpu")
        assert (resolved.mode, resolved.reason) == (mode, "as configured")
    with pytest.raises(ValueError, match="fp16"):
        P.resolve_precision("fp16", "cpu")


def test_auto_needs_the_flag_and_a_measured_speedup(monkeypatch):
    """auto → bf16-mixed only with a native-bf16 flag AND bf16 matmuls >= 1.2x fp32 here; each refusal says why."""
    monkeypatch.setattr(P, "cpu_bf16_flags", lambda: [])
    monkeypatch.setattr(P, "cpu_bf16_speedup", lambda: pytest.fail("no flag: nothing to measure"))
    none = P.resolve_precision("auto", "cpu")
    assert none.mode == "fp32" and "no native bf16" in none.reason

    monkeypatch.setattr(P, "cpu_bf16_flags", lambda: ["avx512_bf16"])
    monkeypatch.setattr(P, "cpu_bf16_speedup", lambda: 0.62)  # an Intel Xeon without AMX, as measured here
    slow = P.resolve_precision("auto", "cpu")
    assert slow.mode == "fp32" and "0.62x" in slow.reason and "1.2x" in slow.reason
    assert slow.describe().startswith("precision auto → fp32 (avx512_bf16; a bf16 matmul measured 0.62x")

    monkeypatch.setattr(P, "cpu_bf16_speedup", lambda: 1.2)  # the threshold itself is enough
    assert P.resolve_precision("auto", "cpu").mode == "bf16-mixed"
    monkeypatch.setattr(P, "cpu_bf16_speedup", lambda: 1.19)
    assert P.resolve_precision("auto", "cpu").mode == "fp32"


def test_measured_speedup_is_a_positive_ratio():
    ratio = P.cpu_bf16_speedup.__wrapped__(n=128, repeats=2)
    assert 0.05 < ratio < 50


def test_weight_dtype_follows_the_mode_and_refuses_contradictions():
    assert P.weight_dtype("bf16-mixed", "float32") == "float32"
    assert P.weight_dtype("bf16-mixed", "auto") == "float32"
    assert P.weight_dtype("bf16", "float32") == "bfloat16"
    assert P.weight_dtype("fp32", "bfloat16") == "bfloat16"  # model.dtype alone keeps its old meaning
    with pytest.raises(ValueError, match="master weights"):
        P.weight_dtype("bf16-mixed", "bfloat16")
    with pytest.raises(ValueError, match="float16"):
        P.weight_dtype("bf16", "float16")


def _tiny(precision: str):
    from tether.models.loading import load_causal_lm

    return load_causal_lm(tiny_model_config(precision=precision), seed=3)


def test_bf16_mixed_keeps_fp32_weights_heads_and_gradients():
    fp32, mixed = _tiny("fp32"), _tiny("bf16-mixed")
    assert P.precision_of(mixed) == "bf16-mixed" and P.precision_of(fp32) == "fp32"
    assert all(p.dtype == torch.float32 for p in mixed.parameters())
    ids = torch.randint(0, 1000, (2, 12))
    out32, out = fp32(input_ids=ids).logits.detach(), mixed(input_ids=ids).logits.detach()
    assert out.dtype == torch.float32  # the vocabulary head ran in fp32 (autocast would give bf16)
    gap = float((out - out32).abs().max())
    assert 0 < gap < 0.05 * float(out32.abs().max())  # bf16 products in the body: close, not identical
    inner = []
    mixed.model.layers[0].mlp.down_proj.register_forward_hook(lambda m, a, o: inner.append(o.dtype))
    mixed(input_ids=ids).logits.float().logsumexp(-1).mean().backward()
    assert inner == [torch.bfloat16]  # the body's products run in bf16
    assert all(p.grad is None or p.grad.dtype == torch.float32 for p in mixed.parameters())


def test_reward_and_value_heads_are_fp32():
    from tether.models.loading import load_reward_model

    model = load_reward_model(tiny_model_config(precision="bf16-mixed"), seed=0, pad_token_id=0)
    score = model(input_ids=torch.randint(1, 1000, (2, 8))).logits
    assert score.dtype == torch.float32


def test_a_deep_copy_computes_with_its_own_weights():
    """The reference made from the policy (copy.deepcopy) must not run the policy's weights through a forward bound
    to the original."""
    policy = _tiny("bf16-mixed")
    reference = copy.deepcopy(policy)
    assert P.precision_of(reference) == "bf16-mixed"
    ids = torch.randint(0, 1000, (1, 6))
    before = reference(input_ids=ids).logits
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.5)
    assert torch.equal(reference(input_ids=ids).logits, before)


def test_autocast_block_only_for_bf16_mixed():
    seen = []
    for mode in ("fp32", "bf16-mixed"):
        with P.autocast_block(_tiny(mode)):
            seen.append(torch.is_autocast_enabled("cpu"))
    assert seen == [False, True]
    assert not torch.is_autocast_enabled("cpu")


def test_sampled_logprobs_worked_by_hand():
    """Two steps over a 3-token vocabulary, scores log(1, 2, 1) then log(1, 1, 2): tokens 1 then 2 were drawn, each
    with probability 1/2; a token 0 then 0 has 1/4 and 1/4."""
    recorder = SampledLogprobs()
    step1 = torch.log(torch.tensor([[1.0, 2.0, 1.0], [1.0, 2.0, 1.0]]))
    step2 = torch.log(torch.tensor([[1.0, 1.0, 2.0], [1.0, 1.0, 2.0]]))
    assert recorder(torch.tensor([[7], [7]]), step1) is step1  # scores pass through unchanged
    recorder(torch.tensor([[7, 1], [7, 0]]), step2)  # the token drawn at step 1 shows up now
    recorder.finish(torch.tensor([2, 0]))
    got = torch.stack(recorder.sampled_logps, dim=1)
    half, quarter = math.log(0.5), math.log(0.25)
    assert torch.allclose(got, torch.tensor([[half, half], [quarter, quarter]]), atol=1e-6)


def test_row_seeded_sampler_records_the_probability_of_its_pick():
    """A one-hot-ish distribution: the sampler must pick the dominant token and record log softmax(z / T) there."""
    z = torch.tensor([[0.0, 9.0, 0.0]])
    sampler = RowSeededSampler([0], temperature=2.0, top_p=1.0, record=True)
    picked = int(sampler(torch.tensor([[5]]), z).argmax())
    expected = 4.5 - math.log(2 + math.exp(4.5))  # log softmax([0, 4.5, 0])[1]
    assert picked == 1 and abs(float(sampler.sampled_logps[0][0]) - expected) < 1e-6


@pytest.mark.parametrize("seeded", [False, True])
def test_generate_reports_the_sampler_logprobs_in_bf16_mixed(seeded):
    from tether.models.loading import load_tokenizer

    tokenizer = load_tokenizer("embedded")
    prompts = torch.randint(5, 1000, (3, 5))
    mask = torch.ones_like(prompts)
    config = GenerationConfig(max_new_tokens=8, temperature=0.8)
    seeds = [11, 12, 13] if seeded else None
    fp32 = generate(_tiny("fp32"), prompts, mask, config, tokenizer.eos_token_id, tokenizer.pad_token_id, seeds=seeds)
    assert fp32.sampler_logps is None  # the trainer's own recomputation is exact there: nothing to compare
    model = _tiny("bf16-mixed")
    torch.manual_seed(0)
    rollout = generate(model, prompts, mask, config, tokenizer.eos_token_id, tokenizer.pad_token_id, seeds=seeds)
    sampled = rollout.sampler_logps
    assert sampled is not None and sampled.shape == rollout.response_ids.shape
    real = rollout.response_mask.bool()
    assert torch.all(sampled[~real] == 0) and torch.all(sampled[real] < 0)
    with torch.no_grad():
        trainer = response_logprobs(model, rollout, temperature=0.8)
    gap = float((trainer - sampled)[real].abs().mean())
    assert gap < 1e-2  # the same bf16 model, decoded step by step vs scored in one forward
    assert float((trainer - sampled)[real].abs().max()) > 0  # (two different computations, not one copied)


def test_settle_precision_records_the_mode_auto_picked(monkeypatch):
    from tether.engine import runtime
    from tether.engine.runtime import settle_precision

    monkeypatch.setattr(runtime, "resolved_precision", lambda asked: "bf16-mixed" if asked == "auto" else asked)
    ppo = PPOConfig(model=ModelConfig(precision="auto"))
    assert settle_precision(ppo) is ppo and ppo.model.precision == "bf16-mixed"
    evaluation = EvalConfig(precision="auto")
    assert settle_precision(evaluation).precision == "bf16-mixed"
    explicit = PPOConfig(model=ModelConfig(precision="fp32"))
    assert settle_precision(explicit).model.precision == "fp32"


def test_bf16_mixed_generate_places_left_padded_rows_like_fp32():
    """Step-0 logits of ``generate`` for a left-padded row against a forward at the row's own positions (GPT-2:
    absolute position embeddings show a shift). transformers' generate passes position_ids only to a forward whose
    signature has them: with a bare (*args, **kwargs) wrapper the padded row decoded 0.47 off (positions counted
    from the padding), the unpadded one 4e-4 (bf16 rounding)."""
    from transformers import GPT2Config, GPT2LMHeadModel, LogitsProcessor, LogitsProcessorList

    from tether.models.precision import use_precision

    class FirstScores(LogitsProcessor):
        scores = None

        def __call__(self, input_ids, scores):
            self.scores = scores.clone() if self.scores is None else self.scores
            return scores

    ids = torch.tensor([[0, 0, 0, 5, 6, 7, 8], [1, 2, 3, 4, 5, 6, 7]])
    mask = (torch.arange(7) >= torch.tensor([[3], [0]])).long()
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=2, n_positions=32)).eval()
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0)).logits
    use_precision(model, "bf16-mixed")
    first = FirstScores()
    model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=1, do_sample=False, pad_token_id=0,
                   logits_processor=LogitsProcessorList([first]))
    assert float((first.scores[1] - expected[1, -1]).abs().max()) < 1e-2  # unpadded: bf16 rounding only
    assert float((first.scores[0] - expected[0, -1]).abs().max()) < 1e-2  # left-padded: 0.47 with the bare wrapper
