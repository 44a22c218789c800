"""Memory planning for RLHF roles: how much accelerator memory each model needs, per device.

Pure arithmetic (no torch), so it can be checked by hand. For a model with P parameters,
per device, in bytes:

- weights: P · b_w (b_w = 2 for bf16/fp16, 4 for fp32); ZeRO-3 divides by the device count;
- gradients (trainable roles): P_train · b_w; ZeRO-2 and -3 divide by the device count;
- optimiser (AdamW): P_train · 12 (fp32 master copy + two moments; 8 when training in
  fp32, which needs no master copy); ZeRO-1/2/3 divide by the device count, CPU offload
  moves it (and, with ZeRO-3, the weights) to host memory;
- activations (trainable roles): per layer ≈ s · b · h · (34 + 5 · a · s / h) bytes in
  16-bit (Korthikanti et al. 2022), or 2 · s · b · h with activation checkpointing;
- KV cache (the generating role): 2 · layers · kv_heads · head_dim · s · b · b_w.

LoRA trains only the adapters (≈ 2 · r · (d_in + d_out) per adapted matrix; the attention
and MLP projections of every layer here) and lets the reference be the same weights with
the adapters disabled, so the reference costs nothing extra.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

GIB = 1024 ** 3


@dataclass(frozen=True)
class Shape:
    """The numbers memory depends on."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    tied: bool = False

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def params(self) -> int:
        """Embedding (+ untied head) + per layer: attention q,o (h²) and k,v (h·kv·d), MLP (3·h·i), 2 norms."""
        kv = self.kv_heads * self.head_dim
        per_layer = 2 * self.hidden * self.hidden + 2 * self.hidden * kv + 3 * self.hidden * self.intermediate \
            + 2 * self.hidden
        head = 0 if self.tied else self.vocab * self.hidden
        return self.vocab * self.hidden + head + self.layers * per_layer + self.hidden

    def lora_params(self, r: int) -> int:
        """Adapters on q, k, v, o and the three MLP projections of every layer: r · (d_in + d_out) each."""
        kv = self.kv_heads * self.head_dim
        h, i = self.hidden, self.intermediate
        per_layer = r * ((h + h) + (h + kv) + (h + kv) + (h + h) + 2 * (h + i) + (i + h))
        return self.layers * per_layer


PRESETS = {
    "135m": Shape(576, 30, 9, 3, 1536, 49152, tied=True),        # SmolLM2-135M
    "1b": Shape(2048, 16, 32, 8, 8192, 128256, tied=True),       # Llama-3.2-1B
    "7b": Shape(4096, 32, 32, 32, 11008, 32000),                 # Llama-2-7B
    "8b": Shape(4096, 32, 32, 8, 14336, 128256),                 # Llama-3-8B
    "13b": Shape(5120, 40, 40, 40, 13824, 32000),                # Llama-2-13B
    "70b": Shape(8192, 80, 64, 8, 28672, 128256),                # Llama-3-70B
}


def shape_from(spec: str) -> Shape:
    """A preset name (135m, 1b, 7b, 8b, 13b, 70b) or a directory / config.json of an HF model."""
    if spec.lower() in PRESETS:
        return PRESETS[spec.lower()]
    path = Path(spec)
    config = path / "config.json" if path.is_dir() else path
    if not config.is_file():
        raise ValueError(f"model '{spec}': not a preset ({', '.join(PRESETS)}) nor an HF model directory")
    c = json.loads(config.read_text())
    heads = c["num_attention_heads"]
    return Shape(c["hidden_size"], c["num_hidden_layers"], heads, c.get("num_key_value_heads", heads),
                 c["intermediate_size"], c["vocab_size"], bool(c.get("tie_word_embeddings", False)))


@dataclass
class Role:
    name: str
    weights: float
    gradients: float = 0.0
    optimizer: float = 0.0
    activations: float = 0.0
    kv_cache: float = 0.0
    host: float = 0.0   # offloaded to CPU memory

    @property
    def device_total(self) -> float:
        return self.weights + self.gradients + self.optimizer + self.activations + self.kv_cache


def activation_bytes(shape: Shape, seq: int, batch: int, checkpointing: bool) -> float:
    """Activations kept for backward, 16-bit: per layer s·b·h·(34 + 5·a·s/h), or 2·s·b·h with checkpointing."""
    sbh = seq * batch * shape.hidden
    per_layer = 2 * sbh if checkpointing else sbh * (34 + 5 * shape.heads * seq / shape.hidden)
    return shape.layers * per_layer


def kv_cache_bytes(shape: Shape, seq: int, batch: int, bytes_per: int) -> float:
    return 2 * shape.layers * shape.kv_heads * shape.head_dim * seq * batch * bytes_per


def plan(shape: Shape, algo: str, gpus: int = 1, dtype: str = "bf16", zero: int = 0, offload: bool = False,
         lora_r: int = 0, seq: int = 1024, micro_batch: int = 4, checkpointing: bool = True,
         reward_shape: Shape | None = None) -> list[Role]:
    """Per-device memory of each role of ``algo`` (sft, rm, dpo, grpo, ppo)."""
    if zero not in (0, 1, 2, 3):
        raise ValueError("zero must be 0, 1, 2 or 3")
    if algo not in ("sft", "rm", "dpo", "grpo", "ppo"):
        raise ValueError(f"unknown algo '{algo}' (sft, rm, dpo, grpo, ppo)")
    b = 4 if dtype == "fp32" else 2
    shard = max(1, gpus)

    def trainable(name: str, s: Shape, generates: bool) -> Role:
        p = s.params
        p_train = s.lora_params(lora_r) if lora_r else p
        weights = p * b / (shard if zero == 3 else 1)
        grads = p_train * b / (shard if zero >= 2 else 1)
        optim = p_train * (8 if b == 4 else 12) / (shard if zero >= 1 else 1)
        role = Role(name, weights, grads, optim, activation_bytes(s, seq, micro_batch, checkpointing),
                    kv_cache_bytes(s, seq, micro_batch, b) if generates else 0.0)
        if offload:
            role.host += role.optimizer
            role.optimizer = 0.0
            if zero == 3:
                role.host += role.weights
                role.weights = 0.0
        return role

    def frozen(name: str, s: Shape) -> Role:
        return Role(name, s.params * b / (shard if zero == 3 else 1))

    rs = reward_shape or shape
    roles = [trainable("policy" if algo not in ("sft", "rm") else algo, shape, algo in ("grpo", "ppo"))]
    if algo in ("dpo", "grpo", "ppo"):
        roles.append(Role("reference (adapters off: shared)", 0.0) if lora_r else frozen("reference", shape))
    if algo in ("grpo", "ppo"):
        roles.append(frozen("reward", rs))
    if algo == "ppo":
        value = trainable("value", rs, False)
        value.kv_cache = 0.0
        roles.append(value)
    return roles


def run_plan(cfg) -> list[Role]:
    """``tether plan``: print the per-device table and whether it fits."""
    from rich.table import Table

    from tether.data import DataError
    from tether.utils.logging import console

    try:
        shape = shape_from(cfg.model)
        reward_shape = shape_from(cfg.reward_model) if cfg.reward_model else None
        roles = plan(shape, cfg.algo, cfg.gpus, cfg.dtype, cfg.zero, cfg.offload, cfg.lora_r, cfg.seq, cfg.micro_batch,
                     cfg.checkpointing, reward_shape)
    except ValueError as exc:
        raise DataError(str(exc)) from None
    table = Table(title=f"{cfg.algo} on {cfg.model} ({shape.params / 1e9:.2f}B parameters), {cfg.gpus} device(s), "
                        f"{cfg.dtype}, ZeRO-{cfg.zero}{' + offload' if cfg.offload else ''}"
                        f"{f', LoRA r={cfg.lora_r}' if cfg.lora_r else ''} — GiB per device")
    for column in ("role", "weights", "gradients", "optimizer", "activations", "KV cache", "total", "host (CPU)"):
        table.add_column(column, justify="right")
    for r in roles:
        table.add_row(r.name, *(f"{v / GIB:.2f}" for v in (r.weights, r.gradients, r.optimizer, r.activations,
                                                           r.kv_cache, r.device_total, r.host)))
    total = sum(r.device_total for r in roles)
    console.print(table)
    verdict = "fits" if total <= cfg.device_gib * GIB else "does NOT fit"
    console.print(f"all roles on every device: {total / GIB:.1f} GiB — {verdict} in {cfg.device_gib:g} GiB "
                  "(activations and KV cache are estimates; leave 10-20% for the framework and fragmentation)")
    return roles
