"""`tether plan`: memory arithmetic checked by hand."""

import json

import pytest

from tether.plan import GIB, PRESETS, Shape, activation_bytes, kv_cache_bytes, plan, shape_from


def test_parameter_counts_match_the_published_models():
    assert PRESETS["7b"].params == 6_738_415_616        # Llama-2-7B
    assert PRESETS["135m"].params == 134_515_008        # SmolLM2-135M (tied embeddings)
    assert PRESETS["8b"].params == 8_030_261_248        # Llama-3-8B


def test_shape_from_an_hf_config(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({
        "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "intermediate_size": 128, "vocab_size": 100, "tie_word_embeddings": True}))
    shape = shape_from(str(tmp_path))
    # embedding 100·64 + 2 layers · (2·64² + 2·64·32 + 3·64·128 + 2·64) + final norm 64
    assert shape.params == 6400 + 2 * (8192 + 4096 + 24576 + 128) + 64
    with pytest.raises(ValueError, match="not a preset"):
        shape_from("no/such/model")


def test_roles_and_sharding_by_hand():
    s = Shape(hidden=8, layers=1, heads=2, kv_heads=2, intermediate=16, vocab=10, tied=True)
    p = s.params  # 80 + (128 + 128 + 384 + 16) + 8 = 744
    assert p == 744
    roles = {r.name: r for r in plan(s, "ppo", gpus=4, dtype="bf16", zero=0, seq=4, micro_batch=1)}
    assert set(roles) == {"policy", "reference", "reward", "value"}
    assert roles["policy"].weights == 2 * p and roles["policy"].gradients == 2 * p
    assert roles["policy"].optimizer == 12 * p            # fp32 master + two AdamW moments
    assert roles["reference"].gradients == 0 and roles["reference"].weights == 2 * p
    assert roles["value"].kv_cache == 0 and roles["policy"].kv_cache == kv_cache_bytes(s, 4, 1, 2)
    z3 = {r.name: r for r in plan(s, "ppo", gpus=4, zero=3, seq=4, micro_batch=1)}
    assert z3["policy"].weights == 2 * p / 4 and z3["policy"].gradients == 2 * p / 4
    assert z3["policy"].optimizer == 12 * p / 4 and z3["reference"].weights == 2 * p / 4
    z1 = {r.name: r for r in plan(s, "ppo", gpus=4, zero=1, seq=4, micro_batch=1)}
    assert z1["policy"].gradients == 2 * p and z1["policy"].optimizer == 12 * p / 4
    off = {r.name: r for r in plan(s, "ppo", gpus=4, zero=3, offload=True, seq=4, micro_batch=1)}
    assert off["policy"].optimizer == 0 and off["policy"].weights == 0
    assert off["policy"].host == 12 * p / 4 + 2 * p / 4
    fp32 = {r.name: r for r in plan(s, "sft", dtype="fp32", seq=4, micro_batch=1)}
    assert fp32["sft"].optimizer == 8 * p and fp32["sft"].weights == 4 * p   # no master copy in fp32


def test_lora_trains_adapters_and_shares_the_reference():
    s = PRESETS["7b"]
    roles = {r.name: r for r in plan(s, "dpo", lora_r=16)}
    # per layer: r · ((h+h) + (h+kv) + (h+kv) + (h+h) + 2·(h+i) + (i+h)) with kv = h here
    per_layer = 16 * (4 * 8192 + 2 * (4096 + 11008) + (11008 + 4096))
    assert s.lora_params(16) == 32 * per_layer
    assert roles["policy"].optimizer == 12 * s.lora_params(16)
    assert roles["reference (adapters off: shared)"].weights == 0


def test_activation_and_kv_cache_formulas():
    s = Shape(hidden=8, layers=2, heads=2, kv_heads=1, intermediate=16, vocab=10)
    # s·b·h = 4·1·8 = 32 per layer; without checkpointing × (34 + 5·2·4/8) = 39
    assert activation_bytes(s, 4, 1, checkpointing=False) == 2 * 32 * 39
    assert activation_bytes(s, 4, 1, checkpointing=True) == 2 * 2 * 32
    # 2 (k and v) · layers · kv_heads · head_dim · s · b · bytes = 2·2·1·4·4·1·2
    assert kv_cache_bytes(s, 4, 1, 2) == 128


def test_cli_says_whether_it_fits(tmp_path):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "tether.cli", "plan", "model=7b", "gpus=8", "algo=ppo", "zero=3",
                          "lora_r=16"], capture_output=True, text=True)
    assert out.returncode == 0 and "fits in 80 GiB" in out.stderr + out.stdout
    bad = subprocess.run([sys.executable, "-m", "tether.cli", "plan", "model=nope"], capture_output=True, text=True)
    assert bad.returncode == 2 and "not a preset" in bad.stderr
    assert GIB == 2 ** 30
