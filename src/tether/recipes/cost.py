"""``tether cost``: what a round of RLHF costs in annotator time and accelerator time.

Compute is estimated from the usual transformer FLOP counts (Kaplan et al. 2020): a
forward pass costs 2·N FLOPs per token, forward + backward 6·N, for N parameters.

- labelling samples: 2 responses per comparison generated → 2·N per token
- reward model: 2 sequences per comparison, trained → 6·N per token per epoch
- RL (PPO): per sampled token, generation 2·N + policy update 6·N + reference 2·N +
  reward 2·N + value update 6·N = 18·N

GPU-hours = FLOPs / (peak FLOP/s × MFU) / 3600. With a measured held-out gain, the report
adds the cost per point of gain (the "cost per quality unit").
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.table import Table

from tether.config import ConfigError, CostConfig
from tether.utils.logging import console


def count_parameters(model_dir: str) -> int:
    """Parameters in a model directory's safetensors files, read from the headers (nothing is loaded)."""
    from safetensors import safe_open

    from tether.models.loading import resolve_model_path

    folder = Path(resolve_model_path(model_dir))
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{folder} has no .safetensors files to count")
    total = 0
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            for name in handle.keys():
                shape = handle.get_slice(name).get_shape()
                count = 1
                for dim in shape:
                    count *= dim
                total += count
    return total


def estimate_cost(cfg: CostConfig, params: int) -> dict[str, Any]:
    annotation_hours = cfg.comparisons * cfg.labels_per_comparison * cfg.seconds_per_comparison / 3600
    tokens = cfg.tokens_per_sequence
    flops = {
        "sampling_for_labels": 2 * params * 2 * cfg.comparisons * tokens,
        "reward_model": 6 * params * 2 * cfg.comparisons * tokens * cfg.rm_epochs,
        "rl": 18 * params * cfg.rl_sequences * tokens,
    }
    total_flops = sum(flops.values())
    gpu_hours = total_flops / (cfg.gpu_tflops * 1e12 * cfg.mfu) / 3600
    report = {
        "params": params, "annotation_hours": annotation_hours,
        "annotation_cost": annotation_hours * cfg.hourly_rate,
        "flops": flops, "total_flops": total_flops, "gpu_hours": gpu_hours,
        "compute_cost": gpu_hours * cfg.gpu_hour_price,
    }
    report["total_cost"] = report["annotation_cost"] + report["compute_cost"]
    if cfg.gain > 0:
        report["cost_per_point_of_gain"] = report["total_cost"] / cfg.gain
    return report


def run_cost(cfg: CostConfig) -> dict[str, Any]:
    params = cfg.params or (count_parameters(cfg.model) if cfg.model else 0)
    if params <= 0:
        raise ConfigError("give model= (a directory to count) or params=")
    report = estimate_cost(cfg, params)
    table = Table(title=f"cost of {cfg.comparisons} comparisons on a {params / 1e6:.1f}M-parameter model")
    table.add_column("item")
    table.add_column("amount", justify="right")
    table.add_row("annotation", f"{report['annotation_hours']:.1f} h → {report['annotation_cost']:,.2f}")
    for stage, value in report["flops"].items():
        table.add_row(f"compute: {stage}", f"{value:.3g} FLOPs")
    table.add_row("compute", f"{report['gpu_hours']:.3g} GPU-h → {report['compute_cost']:,.2f}")
    table.add_row("total", f"{report['total_cost']:,.2f}")
    if "cost_per_point_of_gain" in report:
        table.add_row("per point of held-out gain", f"{report['cost_per_point_of_gain']:,.2f}")
    console.print(table)
    print(json.dumps(report))
    return report
