"""Configs of the planning tools, which train nothing: annotation and compute cost (`tether cost`) and accelerator
memory per role (`tether plan`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from tether.config.fields import doc_field


@dataclass
class CostConfig:
    """Estimate annotation and compute cost of an RLHF run (`tether cost`)."""

    comparisons: int = doc_field(10000, "Preference comparisons wanted.")
    labels_per_comparison: int = doc_field(1, "Annotators per comparison (3 for majority / Dawid-Skene).")
    seconds_per_comparison: float = doc_field(60.0, "Annotator time per comparison.")
    hourly_rate: float = doc_field(20.0, "Annotator cost per hour (your currency).")
    model: str = doc_field("embedded", "Model directory whose parameters are counted ('' = use params).")
    params: int = doc_field(0, "Parameter count when no model is given.")
    tokens_per_sequence: int = doc_field(512, "Prompt + response tokens per sequence.")
    rm_epochs: float = doc_field(1.0, "Reward-model epochs over the comparisons.")
    rl_sequences: int = doc_field(0, "Responses sampled during RL (PPO: iterations x rollout batch).")
    gpu_tflops: float = doc_field(989.0, "Peak dense bf16 TFLOP/s of one accelerator (H100 SXM: 989).")
    mfu: float = doc_field(0.35, "Model FLOPs utilisation you expect to reach.")
    gpu_hour_price: float = doc_field(2.5, "Price of one accelerator-hour.")
    gain: float = doc_field(0.0, "Held-out gain the run bought (e.g. win-rate points); 0 = not known yet.")


@dataclass
class PlanConfig:
    """Accelerator memory per device for each RLHF role (`tether plan`)."""

    model: str = doc_field("7b", "Preset (135m, 1b, 7b, 8b, 13b, 70b) or an HF model directory / config.json.")
    reward_model: str = doc_field("", "Reward / value model shape if different from the policy (same forms).")
    algo: Literal["sft", "rm", "dpo", "grpo", "ppo"] = doc_field("ppo", "Which roles are in memory.")
    gpus: int = doc_field(8, "Devices the roles are sharded over (ZeRO / FSDP).")
    dtype: Literal["bf16", "fp16", "fp32"] = doc_field("bf16", "Weight dtype (16-bit adds an fp32 master copy in the optimiser).")
    zero: int = doc_field(0, "ZeRO stage / FSDP sharding: 0 none, 1 optimiser, 2 + gradients, 3 + weights.")
    offload: bool = doc_field(False, "Offload the optimiser (and with zero=3 the weights) to CPU memory.")
    lora_r: int = doc_field(0, "LoRA rank (0 = full fine-tuning); with LoRA the reference shares the policy's weights.")
    seq: int = doc_field(1024, "Tokens per sequence (prompt + response).")
    micro_batch: int = doc_field(4, "Sequences per device per forward.")
    checkpointing: bool = doc_field(True, "Activation (gradient) checkpointing.")
    device_gib: float = doc_field(80.0, "Memory per device, to say whether it fits.")
