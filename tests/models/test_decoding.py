"""Decoding steps' few-row linear layers computed as W·xᵀ (tether.models.decoding): the same products."""
import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM

from tether.models import decoding
from tether.models.decoding import skinny_linear, skinny_linears
from tether.rollout.generation import GenerationConfig, generate


def test_skinny_linear_is_the_linear_product():
    torch.manual_seed(0)
    w, b = torch.randn(300, 40), torch.randn(300)
    x = torch.randn(2, 3, 40)                             # 6 rows: the W·xᵀ path
    torch.testing.assert_close(skinny_linear(x, w, b), F.linear(x, w, b), atol=1e-5, rtol=1e-5)
    assert skinny_linear(x, w, None).shape == (2, 3, 300) and skinny_linear(x, w, None).is_contiguous()
    # worked by hand: W = [[1, 2], [3, 4], [5, 6]], x = [[1, -1], [0, 2]] → x·Wᵀ = [[-1, -1, -1], [4, 8, 12]], + b
    out = skinny_linear(torch.tensor([[1.0, -1.0], [0.0, 2.0]]), torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]),
                        torch.tensor([0.5, 0.0, -0.5]))
    assert out.tolist() == [[-0.5, -1.0, -1.5], [4.5, 8.0, 11.5]]
    one = torch.randn(1, 40)                              # one row (a matrix-vector product): exactly F.linear
    assert torch.equal(skinny_linear(one, w, b), F.linear(one, w, b))
    many = torch.randn(decoding.SKINNY_ROWS + 1, 40)      # too many rows: exactly F.linear
    assert torch.equal(skinny_linear(many, w, b), F.linear(many, w, b))
    half = x.to(torch.bfloat16)                           # another dtype: exactly F.linear
    assert torch.equal(skinny_linear(half, w.bfloat16(), None), F.linear(half, w.bfloat16()))


def _tiny():
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                        num_attention_heads=2, num_key_value_heads=1, eos_token_id=2,
                                        pad_token_id=0)).eval()


def test_skinny_linears_switches_plain_linears_for_the_block_only():
    model = _tiny()
    hooked = model.model.layers[0].mlp.up_proj
    hooked.forward = lambda x: F.linear(x, hooked.weight)  # an instance forward (as accelerate's hooks set)
    x = torch.tensor([[1, 5, 9, 3]])
    with torch.no_grad():
        before = model(x).logits
        with skinny_linears(model) as switched:
            assert switched == 2 * 7 + 1 - 1            # q k v o gate up down per layer + the head, less the hooked one
            assert vars(model.lm_head)["forward"].__func__ is decoding._forward
            inside = model(x).logits
    torch.testing.assert_close(inside, before, atol=1e-5, rtol=1e-5)
    linears = [m for m in model.modules() if type(m) is torch.nn.Linear and m is not hooked]
    assert all("forward" not in vars(m) for m in linears) and "forward" in vars(hooked)


def test_generate_samples_the_same_tokens_either_way(monkeypatch):
    model = _tiny()
    prompts, mask = torch.tensor([[0, 7, 8], [4, 5, 6]]), torch.tensor([[0, 1, 1], [1, 1, 1]])
    config = GenerationConfig(max_new_tokens=6, temperature=1.0)
    rows = []
    monkeypatch.setattr(decoding, "skinny_linear", lambda x, w, b: rows.append(x.numel() // x.shape[-1])
                        or skinny_linear(x, w, b))
    skinny = generate(model, prompts, mask, config, eos_token_id=2, pad_token_id=0, seeds=[1, 2])
    assert rows.count(2) >= 5 * 15  # the decoding steps after the first: 2 rows through each of the 15 layers
    monkeypatch.setattr(decoding, "SKINNY_ROWS", 0)       # every product through F.linear
    plain = generate(model, prompts, mask, config, eos_token_id=2, pad_token_id=0, seeds=[1, 2])
    assert torch.equal(skinny.response_ids, plain.response_ids)
    assert torch.equal(skinny.response_mask, plain.response_mask)
