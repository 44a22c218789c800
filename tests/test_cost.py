import pytest

from tether.config import CostConfig
from tether.recipes.cost import count_parameters, estimate_cost


def test_cost_by_hand():
    cfg = CostConfig(comparisons=100, labels_per_comparison=3, seconds_per_comparison=60, hourly_rate=20,
                     params=10**9, tokens_per_sequence=512, rm_epochs=1, rl_sequences=1000, gpu_tflops=1000, mfu=0.5,
                     gpu_hour_price=2.0, gain=4.0)
    report = estimate_cost(cfg, cfg.params)
    assert report["annotation_hours"] == pytest.approx(100 * 3 * 60 / 3600)  # 5 h
    assert report["annotation_cost"] == pytest.approx(100.0)
    assert report["flops"]["sampling_for_labels"] == 2 * 10**9 * 2 * 100 * 512
    assert report["flops"]["reward_model"] == 6 * 10**9 * 2 * 100 * 512
    assert report["flops"]["rl"] == 18 * 10**9 * 1000 * 512
    total = (2 * 2 * 100 + 6 * 2 * 100 + 18 * 1000) * 10**9 * 512
    assert report["gpu_hours"] == pytest.approx(total / (1000e12 * 0.5) / 3600)
    assert report["cost_per_point_of_gain"] == pytest.approx((100.0 + report["gpu_hours"] * 2.0) / 4.0)


def test_parameters_are_counted_from_safetensors_headers():
    assert count_parameters("embedded") == 134_515_008  # SmolLM2-135M (tied embeddings stored once)
