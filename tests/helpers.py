"""Shared test helpers (imported as tests.helpers; pytest puts the repository root on sys.path)."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"

TINY_OVERRIDES = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
                  "num_key_value_heads": 2, "head_dim": 16}


def tiny_model_config(**extra):
    """SmolLM2's tokenizer and architecture shrunk to 2 layers x 64 wide, randomly initialised."""
    from tether.config import ModelConfig

    return ModelConfig(name_or_path="embedded", random_init=True, config_overrides=dict(TINY_OVERRIDES), **extra)

