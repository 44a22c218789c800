"""Typed configs: one dataclass per recipe, YAML files plus ``key=value`` overrides.

Every field carries a one-line doc (``metadata["doc"]``) so ``tether <cmd> --help``
can list it with its type and default. Nested sections are addressed with dots on
the command line::

    tether sft examples/sft_tiny.yaml train.learning_rate=3e-4 model.lora.enabled=true

Values on the command line are parsed as YAML scalars (``3e-4`` → float, ``true`` →
bool, ``[a, b]`` → list) and then checked against the field's type; an unknown key
or a value of the wrong type raises :class:`ConfigError` with a suggestion. A field
declared with ``bounds`` (``doc_field(8, "...", bounds=POSITIVE)``) is also range-checked.

Where things live (every name is importable from ``tether.config`` itself):

- ``fields``: ``doc_field``, the ranges (``Bounds``, ``POSITIVE``, ``NON_NEGATIVE``, ``FRACTION``), ``ResumeMode``.
- ``sections``: the reusable sections (model, LoRA, data, train, held-out, generation, placement).
- ``supervised``, ``online``, ``feedback``, ``evaluation``, ``planning``, ``lifecycle``: the recipe configs.
- ``loading``: YAML and overrides → a config (``load_config``, ``from_dict``) and back (``to_dict``, ``dump_yaml``).
- ``validation``: ``validate``, the checks run on every loaded config.
"""

from __future__ import annotations

from tether.config.evaluation import EvalConfig, FrontierConfig, ReportConfig, ScoreConfig
from tether.config.feedback import (
    CAIReviseConfig,
    LabelExportConfig,
    LabelImportConfig,
    LabelJudgeConfig,
    LabelServeConfig,
    LabelSimulateConfig,
    LabelStatsConfig,
    LabelTokensConfig,
)
from tether.config.fields import FRACTION, NON_NEGATIVE, POSITIVE, RESUME_DOC, Bounds, ResumeMode, doc_field
from tether.config.lifecycle import PipelineConfig, QuickstartConfig
from tether.config.loading import (
    DATA_FILE_FIELDS,
    DATA_FILE_SUFFIXES,
    DATA_ROW_KEYS,
    SAVED_DATASET_FILES,
    describe_fields,
    dump_yaml,
    from_dict,
    load_config,
    parse_override,
    to_dict,
)
from tether.config.online import BestOfNConfig, GRPOConfig, PPOConfig, RejectionSamplingConfig, SampleConfig
from tether.config.planning import CostConfig, PlanConfig
from tether.config.sections import (
    DataConfig,
    GenerationBackendConfig,
    HeldOutConfig,
    LoraConfig,
    ModelConfig,
    PlacementConfig,
    TrainConfig,
    prompt_budget,
)
from tether.config.supervised import (
    PipelineRewardModelConfig,
    PreferenceConfig,
    PreferenceLossName,
    RewardModelConfig,
    SFTConfig,
)
from tether.config.validation import PLACEABLE_ROLES, validate
from tether.errors import ConfigError  # its home is tether.errors; importable from here too

__all__ = [
    "DATA_FILE_FIELDS", "DATA_FILE_SUFFIXES", "DATA_ROW_KEYS", "FRACTION", "NON_NEGATIVE", "PLACEABLE_ROLES", "POSITIVE",
    "RESUME_DOC", "SAVED_DATASET_FILES", "BestOfNConfig", "Bounds", "CAIReviseConfig", "ConfigError", "CostConfig",
    "DataConfig", "EvalConfig", "FrontierConfig", "GenerationBackendConfig", "GRPOConfig", "HeldOutConfig",
    "LabelExportConfig", "LabelImportConfig", "LabelJudgeConfig", "LabelServeConfig", "LabelSimulateConfig",
    "LabelStatsConfig", "LabelTokensConfig", "LoraConfig", "ModelConfig", "PipelineConfig", "PipelineRewardModelConfig",
    "PlacementConfig", "PlanConfig", "PPOConfig", "PreferenceConfig", "PreferenceLossName", "QuickstartConfig",
    "RejectionSamplingConfig", "ReportConfig", "ResumeMode", "RewardModelConfig", "SampleConfig", "ScoreConfig",
    "SFTConfig", "TrainConfig", "describe_fields", "doc_field", "dump_yaml", "from_dict", "load_config",
    "parse_override", "prompt_budget", "to_dict", "validate",
]
