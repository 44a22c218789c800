"""Load causal LMs, reward models and tokenizers; save them as plain HF directories.

Every model tether writes is an ordinary HF directory (safetensors + tokenizer +
``tether.json``) that ``AutoModelForCausalLM`` / ``AutoModelForSequenceClassification``
load without tether. Loading never unpickles: ``use_safetensors=True`` always, and
``trust_remote_code`` is off unless the config turns it on.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from tether import __version__
from tether.config import LoraConfig, ModelConfig
from tether.errors import TetherInputError
from tether.models.embedded import embedded_model_dir, embedded_tokenizer_dir, is_embedded
from tether.models.precision import resolve_precision, use_precision, weight_dtype
from tether.models.special_tokens import fit_embeddings
from tether.utils.distributed import Dist, unwrap
from tether.utils.files import apply_umask
from tether.utils.logging import console

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "auto": "auto"}


class ModelLoadError(TetherInputError, RuntimeError):
    """A model or tokenizer that cannot be loaded; the message says what to do."""


def resolve_model_path(name_or_path: str, weights: bool = True) -> str:
    """'embedded' → the converted SmolLM2 directory (or just its tokenizer+config when ``weights`` is False);
    a local directory → itself; anything else is treated as a hub id."""
    if not name_or_path:
        raise ModelLoadError("model.name_or_path is empty: give 'embedded', a local HF directory or a hub id")
    if is_embedded(name_or_path):
        return str(embedded_model_dir() if weights else embedded_tokenizer_dir())
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelLoadError(f"{path} is a file; a model is a directory with config.json (or an adapter)")
        if not (path / "config.json").is_file() and not (path / "adapter_config.json").is_file():
            raise ModelLoadError(f"{path} has no config.json: not a Hugging Face model directory")
        return str(path)
    if name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1:
        raise ModelLoadError(f"model directory {name_or_path} does not exist")
    return name_or_path  # a hub id: the ordinary transformers path (needs network access)


def _hub_kwargs(cfg: ModelConfig) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"trust_remote_code": cfg.trust_remote_code}
    if cfg.revision:
        kwargs["revision"] = cfg.revision
    return kwargs


def load_tokenizer(name_or_path: str, cfg: ModelConfig | None = None):
    """Tokenizer with a pad token (EOS when the model has none) and right padding for training."""
    from transformers import AutoTokenizer

    cfg = cfg or ModelConfig(name_or_path=name_or_path)
    path = resolve_model_path(name_or_path, weights=False)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, **_hub_kwargs(cfg))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot load a tokenizer from {name_or_path}: {str(exc).splitlines()[0]}") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    return tokenizer


def _model_config(cfg: ModelConfig, path: str, num_labels: int | None, pad_token_id: int | None):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path, **_hub_kwargs(cfg))
    for key, value in cfg.config_overrides.items():
        if not hasattr(config, key):
            raise ModelLoadError(f"model.config_overrides: {config.model_type} config has no field '{key}'")
        setattr(config, key, value)
    if num_labels is not None:
        config.num_labels = num_labels
    if pad_token_id is not None:
        config.pad_token_id = pad_token_id
    return config


_announced: set[str] = set()  # precision choices already printed by this process


def resolved_precision(asked: str) -> str:
    """The mode (fp32 / bf16-mixed / bf16) the precision setting ``asked`` means on this process's device; the
    choice of ``auto`` and its reason are printed once per process."""
    resolved = resolve_precision(asked, Dist.current().device)
    if asked == "auto" and resolved.describe() not in _announced:
        _announced.add(resolved.describe())
        console.print(resolved.describe())
    return resolved.mode


def _load(auto_cls, cfg: ModelConfig, seed: int, num_labels: int | None, pad_token_id: int | None):
    path = resolve_model_path(cfg.name_or_path, weights=not cfg.random_init)
    torch.manual_seed(seed)  # random init (and new heads) are reproducible
    mode = resolved_precision(cfg.precision)
    try:
        dtype = DTYPES[weight_dtype(mode, cfg.dtype)]
    except ValueError as exc:
        raise ModelLoadError(str(exc)) from None
    try:
        config = _model_config(cfg, path, num_labels, pad_token_id)
        if cfg.random_init:
            model = auto_cls.from_config(config, dtype=None if dtype == "auto" else dtype,
                                         trust_remote_code=cfg.trust_remote_code)
        else:
            model = auto_cls.from_pretrained(path, config=config, dtype=dtype, use_safetensors=True,
                                             **_hub_kwargs(cfg))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot load {cfg.name_or_path}: {str(exc).splitlines()[0]}") from None
    model = use_precision(place(model), mode)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.config.use_cache = False
    return model


def place(model):
    """``model`` on the device this process computes on (``TETHER_DEVICE``; see :mod:`tether.utils.device`)."""
    return model.to(Dist.current().device)


def load_causal_lm(cfg: ModelConfig, seed: int = 0, pad_token_id: int | None = None):
    """A causal LM as the config says (weights, random init, overrides, LoRA not yet applied), on this process's
    device."""
    from transformers import AutoModelForCausalLM

    return _load(AutoModelForCausalLM, cfg, seed, None, pad_token_id)


def load_reward_model(cfg: ModelConfig, seed: int = 0, pad_token_id: int | None = None):
    """``AutoModelForSequenceClassification`` with ``num_labels=1``: a scalar head on the last non-pad token.

    Initialised from ``cfg.name_or_path`` (usually the SFT model); the score head is new
    and seeded. ``pad_token_id``: from :func:`tether.models.special_tokens.reward_pad_token_id`, never an EOS id,
    so that transformers' pooling (the rightmost token that is not the pad id) reads each sequence's last real
    token, as tether does; an id past the embeddings gets a new row.
    """
    from transformers import AutoModelForSequenceClassification

    # a pad token of its own (reward_pad_token_id) may be past the embeddings: loaded first, then given its row
    # (an embedding's padding_idx must lie inside it)
    model = _load(AutoModelForSequenceClassification, cfg, seed, 1, None)
    if pad_token_id is not None:
        fit_embeddings(model, pad_token_id)
        model.config.pad_token_id = pad_token_id
    if model.config.pad_token_id is None:
        raise ModelLoadError("the reward model needs a pad token id to find the last token of each sequence")
    return model


DROPOUT_MODULES = (torch.nn.Dropout, torch.nn.Dropout1d, torch.nn.Dropout2d, torch.nn.Dropout3d, torch.nn.AlphaDropout,
                   torch.nn.FeatureAlphaDropout)


def _is_dropout_rate(name: str, value: Any) -> bool:
    """A float attribute that transformers reads as a dropout probability (``attention_dropout``, ``dropout``,
    ``dropout_p``, ``attn_pdrop``, ``layerdrop``, ...)."""
    return "drop" in name.lower() and isinstance(value, float) and not isinstance(value, bool)


def disable_dropout(model):
    """Turn off every dropout of ``model`` except LoRA's own, in place, and return the model.

    Dropout makes a training-mode forward differ from an eval-mode one, so a policy trained with it is
    compared with a dropout-free reference (DPO family) or estimates KTO's z₀ noisily; TRL and
    OpenRLHF switch it off the same way. Three places hold a dropout probability, all set to 0:
    ``torch.nn.Dropout`` modules (and its 1d/2d/3d/alpha kin); float attributes of modules that
    attention reads at forward time (Llama copies ``config.attention_dropout`` into
    ``LlamaAttention.attention_dropout`` when built); and the model's config (and every sub-config a
    module holds), which some architectures read at forward time, so the saved model's config.json
    records the dropout it was trained with (0). Works the same for random-init and pretrained models,
    before or after LoRA: LoRA's ``lora_dropout`` is left as ``model.lora.dropout`` says (it acts only
    on the adapter branch, which is zero at the start, and is a regulariser the user chose).
    """
    from transformers import PretrainedConfig

    for name, module in model.named_modules():
        if "lora_dropout" in name:
            continue
        if isinstance(module, DROPOUT_MODULES):
            module.p = 0.0
        for attr, value in list(vars(module).items()):
            if _is_dropout_rate(attr, value):
                setattr(module, attr, 0.0)
            elif isinstance(value, PretrainedConfig):
                _zero_config_dropout(value)
    config = getattr(model, "config", None)
    if isinstance(config, PretrainedConfig):
        _zero_config_dropout(config)
    return model


def _zero_config_dropout(config) -> None:
    from transformers import PretrainedConfig

    for attr, value in list(vars(config).items()):
        if _is_dropout_rate(attr, value):
            setattr(config, attr, 0.0)
        elif isinstance(value, PretrainedConfig):
            _zero_config_dropout(value)  # e.g. a multimodal model's text_config


def apply_lora(model, lora: LoraConfig, task_type: str = "CAUSAL_LM"):
    """Wrap ``model`` with peft LoRA adapters (a no-op when ``lora.enabled`` is False)."""
    if not lora.enabled:
        return model
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    targets: Any = lora.target_modules
    if targets != "all-linear":
        targets = [t.strip() for t in targets.split(",") if t.strip()]
    peft_config = PeftLoraConfig(
        r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=targets, task_type=task_type,
        modules_to_save=["score"] if task_type == "SEQ_CLS" else None,
    )
    return get_peft_model(model, peft_config)


def is_peft(model) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "disable_adapter")


def _fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())


def replace_dir(tmp: Path, target: Path) -> None:
    """Atomically put directory ``tmp`` at ``target``, replacing what was there. ``tmp`` and its files first get the
    modes ``mkdir`` / ``open`` give under the umask (``mkdtemp`` makes 0o700, safetensors writes 0o600)."""
    apply_umask(tmp)
    _fsync_tree(tmp)
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}-{time.time_ns()}")
        os.replace(target, old)
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def save_model(model, tokenizer, out_dir: str | Path, meta: dict[str, Any], merge_lora: bool = True) -> Path:
    """Write an HF directory (safetensors only) atomically, with ``tether.json`` describing how it was made.

    In a data-parallel run the main process writes it and every process returns once it is complete. Under
    FSDP every process takes part in gathering the full state dict first, so the directory is the same as a
    single process writes."""
    out_dir = Path(out_dir)
    dist = Dist.current()
    if dist.enabled:
        full = dist.full_model_state(model) if dist.sharded else None  # a collective: every process gathers
        if dist.is_main:
            _write_model_dir(unwrap(model), tokenizer, out_dir, meta, merge_lora, full)
        dist.barrier()
        return out_dir
    return _write_model_dir(model, tokenizer, out_dir, meta, merge_lora)


def _write_model_dir(model, tokenizer, out_dir: Path, meta: dict[str, Any], merge_lora: bool,
                     state_dict: dict[str, torch.Tensor] | None = None) -> Path:
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        to_save = model
        if is_peft(model) and merge_lora:
            to_save = model.merge_and_unload()
        gathered = {} if state_dict is None else {"state_dict": state_dict}  # the full weights of an FSDP model
        to_save.save_pretrained(tmp, safe_serialization=True, **gathered)
        tokenizer.save_pretrained(tmp)
        info = {"tether_version": __version__, "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S"), **meta}
        (tmp / "tether.json").write_text(json.dumps(info, indent=2, default=str) + "\n")
        replace_dir(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def read_tether_meta(model_dir: str | Path) -> dict[str, Any]:
    path = Path(model_dir) / "tether.json"
    return json.loads(path.read_text()) if path.is_file() else {}
