"""Checks of a loaded config: every field's ``bounds`` (doc_field metadata) and the rules between fields
(min_new_tokens <= max_new_tokens, a GRPO group of at least 2, the RL roles' placement, ...)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from tether.config.feedback import CAIReviseConfig, LabelSimulateConfig
from tether.config.lifecycle import PipelineConfig
from tether.config.online import GRPOConfig, PPOConfig
from tether.config.sections import GenerationBackendConfig, PlacementConfig, SamplingFields
from tether.config.supervised import PreferenceConfig
from tether.errors import ConfigError


def _check_ranges(config: Any, prefix: str = "") -> None:
    """Reject a number outside its field's ``bounds`` (given to :func:`~tether.config.fields.doc_field`), naming the
    dotted key; nested sections are checked too. A field without ``bounds`` is not range-checked."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            _check_ranges(value, prefix=f"{key}.")
            continue
        bounds = f.metadata.get("bounds")
        if bounds is not None and isinstance(value, (int, float)) and not bounds.admits(value):
            raise ConfigError(f"{key}: must be {bounds}, got {value}")


PLACEABLE_ROLES = ("reference", "reward", "generation")


def _validate_roles(generation: GenerationBackendConfig, placement: PlacementConfig) -> None:
    if not 0.0 < generation.gpu_memory_utilization <= 1.0:
        raise ConfigError(f"generation.gpu_memory_utilization: must be in (0, 1], got {generation.gpu_memory_utilization}")
    if generation.max_num_seqs is not None and generation.max_num_seqs <= 0:
        raise ConfigError(f"generation.max_num_seqs: must be > 0, got {generation.max_num_seqs}")
    for key in ("roles", "num_gpus", "num_cpus"):
        for role in getattr(placement, key):
            if role not in PLACEABLE_ROLES:
                raise ConfigError(f"placement.{key}: unknown role '{role}'; the roles that can be placed are "
                                  f"{', '.join(PLACEABLE_ROLES)} (the policy and value model train in this process)")
    for key in ("num_gpus", "num_cpus"):
        for role, amount in getattr(placement, key).items():
            if not isinstance(amount, (int, float)) or isinstance(amount, bool) or amount < 0:
                raise ConfigError(f"placement.{key}.{role}: expected a number >= 0, got {amount!r}")


def _validate_simpo_margin(config: PreferenceConfig) -> None:
    if config.simpo_gamma_beta_ratio < 0:
        raise ConfigError(f"simpo_gamma_beta_ratio: must be >= 0, got {config.simpo_gamma_beta_ratio}")
    if config.simpo_gamma is None:
        return
    if config.simpo_gamma < 0:
        raise ConfigError(f"simpo_gamma: must be >= 0, got {config.simpo_gamma}")
    if config.simpo_gamma_beta_ratio != PreferenceConfig().simpo_gamma_beta_ratio:
        raise ConfigError(f"simpo_gamma ({config.simpo_gamma}) and simpo_gamma_beta_ratio "
                          f"({config.simpo_gamma_beta_ratio}) both set: give the SimPO margin one way, either γ "
                          "itself (simpo_gamma) or γ/β (simpo_gamma_beta_ratio)")


def _changed_from_default(config: Any, keys: tuple[str, ...]) -> list[str]:
    """``key=value`` for each of ``keys`` whose value in ``config`` is not its field's default."""
    fields = type(config).__dataclass_fields__
    return [f"{key}={getattr(config, key)}" for key in keys if getattr(config, key) != fields[key].default]


CONSTRAINT_FIELDS = ("cost_limit", "lagrange_init", "lagrange_lr", "lagrange_max")  # (PPO's and GRPO's; need cost)


def validate_constraint(config: PPOConfig | GRPOConfig) -> None:
    """The constraint's fields (docs/ppo.md, Constrained PPO; the same in GRPO): set only with a ``cost``, a finite
    ``cost_limit``, and a cap ``lagrange_max`` no lower than the start ``lagrange_init``."""
    if not config.cost:
        changed = _changed_from_default(config, CONSTRAINT_FIELDS)
        if changed:
            raise ConfigError(f"{', '.join(changed)} only applies to a constrained run: set cost= (a cost model "
                              "directory or module:function whose mean per response is held under cost_limit), or "
                              "drop it")
        return
    if not math.isfinite(config.cost_limit):
        raise ConfigError(f"cost_limit: must be a finite number, got {config.cost_limit}")
    if config.lagrange_max is not None and config.lagrange_max < config.lagrange_init:
        raise ConfigError(f"lagrange_max ({config.lagrange_max}) cannot be below lagrange_init "
                          f"({config.lagrange_init}): the cap bounds the multiplier from its start")


SAPO_FIELDS = ("sapo_tau_pos", "sapo_tau_neg")  # (read by loss=sapo alone)


def _validate_loss_options(config: PPOConfig | GRPOConfig) -> None:
    """A loss's own settings (``sapo_tau_*``) set for another loss would be ignored: an error instead."""
    if config.loss == "sapo":
        return
    changed = _changed_from_default(config, SAPO_FIELDS)
    if changed:
        raise ConfigError(f"{', '.join(changed)} only applies to loss=sapo (this run's loss is {config.loss})")


def validate(config: Any) -> None:
    """Range checks that apply to every recipe config (raise ConfigError)."""
    _check_ranges(config)
    if isinstance(config, LabelSimulateConfig) and config.labels_per_item > config.panel_size:
        raise ConfigError(f"labels_per_item ({config.labels_per_item}) cannot exceed panel_size ({config.panel_size})")
    if isinstance(config, GRPOConfig) and config.group_size < 2:
        raise ConfigError(f"group_size: needs at least 2 samples per prompt for a baseline, got {config.group_size}")
    if isinstance(config, GRPOConfig) and config.overlong_buffer > config.max_new_tokens:
        raise ConfigError(f"overlong_buffer ({config.overlong_buffer}) cannot exceed max_new_tokens "
                          f"({config.max_new_tokens})")
    if isinstance(config, SamplingFields) and config.min_new_tokens > config.max_new_tokens:
        raise ConfigError(f"min_new_tokens ({config.min_new_tokens}) cannot exceed max_new_tokens "
                          f"({config.max_new_tokens})")
    if isinstance(config, (SamplingFields, CAIReviseConfig)) and not 0 < config.top_p <= 1:
        raise ConfigError(f"top_p: must be in (0, 1], got {config.top_p}")
    if isinstance(config, (PPOConfig, GRPOConfig)):
        _validate_roles(config.generation, config.placement)
        validate_constraint(config)
        _validate_loss_options(config)
    if isinstance(config, PreferenceConfig):
        if config.kl_coef is not None and config.kl_coef <= 0:
            raise ConfigError(f"kl_coef: must be > 0, got {config.kl_coef}")
        _validate_simpo_margin(config)
        if not 0.0 <= config.label_smoothing < 0.5:
            raise ConfigError(f"label_smoothing: must be in [0, 0.5), got {config.label_smoothing}")
    if isinstance(config, PipelineConfig):
        for name in ("rm", "cost_rm"):
            accuracy = getattr(config, name).min_accuracy
            if not 0.0 <= accuracy <= 1.0:
                raise ConfigError(f"{name}.min_accuracy: must be in [0, 1] (a held-out accuracy), got {accuracy}")
    data = getattr(config, "data", None)
    if data is not None and data.max_prompt_length >= data.max_length:
        raise ConfigError(f"data.max_prompt_length ({data.max_prompt_length}) must be smaller than data.max_length "
                          f"({data.max_length})")
    train = getattr(config, "train", None)
    if train is not None and len(train.adam_betas) != 2:
        raise ConfigError(f"train.adam_betas: expected two numbers, got {train.adam_betas}")
