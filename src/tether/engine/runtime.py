"""Run-time helpers every recipe uses: run-directory setup (seed, threads, precision, metric sinks, config.yaml),
held-out splits, prompt loading, the frozen reference."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import yaml

from tether.config import DataConfig, ModelConfig, to_dict
from tether.data import load_prompt_dataset
from tether.data.datasets import limit  # noqa: F401 - re-exported for the recipes
from tether.models.loading import is_peft, load_causal_lm, resolved_precision
from tether.utils.device import configure_cpu  # noqa: F401 - re-exported for the recipes
from tether.utils.files import atomic_write_text  # noqa: F401 - re-exported for the recipes
from tether.utils.logging import MetricsLogger, console
from tether.utils.resume import check_before_start

T = TypeVar("T")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def settle_precision(config: Any) -> Any:
    """``config`` with every ``precision: auto`` in it (``model.precision``, eval's and score's ``precision``, at any
    depth) replaced, in place, by the mode it means on this process's device (printed once with the reason), so that
    ``config.yaml`` and resume checks record what the run computed in. Returns ``config``."""
    import dataclasses

    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        return config
    for item in dataclasses.fields(config):
        value = getattr(config, item.name)
        if item.name == "precision" and value == "auto":
            setattr(config, item.name, resolved_precision(value))
        elif dataclasses.is_dataclass(value):
            settle_precision(value)
    return config


def record_config(run_dir: Path, stage: str, config: Any) -> None:
    """Store the resolved config of ``stage`` in ``<run_dir>/config.yaml`` (one section per stage), with
    ``precision: auto`` settled (:func:`settle_precision`)."""
    settle_precision(config)
    path = run_dir / "config.yaml"
    existing: dict = {}
    if path.is_file():
        try:
            existing = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError:
            existing = {}
    existing[stage] = to_dict(config)
    atomic_write_text(path, yaml.safe_dump(existing, sort_keys=False, allow_unicode=True))


def prepare_run(config: Any, stage: str) -> tuple[Path, MetricsLogger]:
    """Seed, set threads, and a metric logger that creates the run directory, saves the config and opens the
    metric sinks at its first record, so bad input found before training leaves no trace in the run directory.
    A stage whose checkpoint or output was made with another config stops here, before anything is loaded
    (``resume=auto``, see :mod:`tether.utils.resume`)."""
    settle_precision(config)
    check_before_start(config, stage, to_dict(config))
    run_dir = Path(config.run_dir)
    train = getattr(config, "train", None)
    if train is not None:
        configure_cpu(train.num_threads)
        seed_everything(train.seed)
    report_to = train.report_to if train is not None else getattr(config, "report_to", [])
    logger = MetricsLogger(run_dir, stage, report_to=list(report_to), config=to_dict(config),
                           on_open=lambda: record_config(run_dir, stage, config))
    return run_dir, logger


def split_held_out(examples: list[T], fraction: float, seed: int) -> tuple[list[T], list[T]]:
    """Deterministic held-out split; at least one example on each side when fraction > 0."""
    if fraction <= 0 or len(examples) < 2:
        return examples, []
    order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(seed)).tolist()
    n_eval = min(len(examples) - 1, max(1, int(round(fraction * len(examples)))))
    held = set(order[:n_eval])
    return [e for i, e in enumerate(examples) if i not in held], [e for i, e in enumerate(examples) if i in held]


def load_train_eval(loader: Callable, data: DataConfig, seed: int, tokenizer, **kwargs: Any) -> tuple[list, list]:
    """Training and held-out examples with ``loader`` (one of tether.data's load_*_dataset functions).

    Held-out data comes from ``data.eval_file`` or a seeded ``data.eval_fraction`` split;
    each file's load report (counts of truncated / skipped rows) is printed.
    """
    examples, report = loader(data.train_file, tokenizer, **kwargs)
    console.print(report.summary())
    if data.eval_file:
        eval_examples, eval_report = loader(data.eval_file, tokenizer, **kwargs)
        console.print(eval_report.summary())
        train_examples = examples
    else:
        train_examples, eval_examples = split_held_out(examples, data.eval_fraction, seed)
    return (limit(train_examples, data.max_train_examples, "train"),
            limit(eval_examples, data.max_eval_examples, "eval"))


def load_generation_prompts(cfg: Any, tokenizer, max_prompts: int = 0) -> list:
    """Prompts for sampling: ``cfg.data`` read by any format with a prompt, each cut from the left to leave
    room for ``cfg.max_new_tokens`` within ``cfg.data.max_length``; the load report is printed."""
    prompts, report = load_prompt_dataset(cfg.data.train_file, tokenizer,
                                          max_prompt_length=cfg.data.max_length - cfg.max_new_tokens,
                                          chat_template=cfg.data.chat_template)
    console.print(report.summary())
    return limit(prompts, max_prompts, "prompts")


def frozen_reference(ref_model: str | None, policy, pad_token_id: int, trust_remote_code: bool = False,
                     precision: str = "fp32"):
    """The frozen reference of an RL run: ``ref_model`` if given (computing in ``precision``, the policy's), else a
    copy of the starting policy (its precision included), or None for a LoRA policy (its reference is the same base
    with the adapters disabled)."""
    import copy

    if ref_model:
        reference = load_causal_lm(ModelConfig(name_or_path=ref_model, trust_remote_code=trust_remote_code,
                                               precision=precision),
                                   pad_token_id=pad_token_id)
    elif is_peft(policy):
        return None
    else:
        reference = copy.deepcopy(policy)
    return reference.eval().requires_grad_(False)
