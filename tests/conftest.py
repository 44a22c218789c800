import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"

TINY_OVERRIDES = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
                  "num_key_value_heads": 2, "head_dim": 16}


@pytest.fixture(scope="session")
def tokenizer():
    from tether.models.embedded import load_embedded_tokenizer

    return load_embedded_tokenizer()


@pytest.fixture
def write_jsonl(tmp_path):
    def write(name, rows):
        path = tmp_path / name
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return path

    return write


def tiny_model_config(**extra):
    from tether.config import ModelConfig

    return ModelConfig(name_or_path="embedded", random_init=True, config_overrides=dict(TINY_OVERRIDES), **extra)
