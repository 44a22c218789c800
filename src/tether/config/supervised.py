"""Configs of the recipes that train on fixed data: SFT (`tether sft`), the reward model (`tether rm`, and the
pipeline's rm stage) and offline preference optimisation (`tether dpo`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from tether.config.fields import NON_NEGATIVE, POSITIVE, doc_field
from tether.config.sections import DataConfig, ModelConfig, TrainConfig


@dataclass
class SFTConfig:
    """Supervised fine-tuning on demonstrations (`tether sft`)."""

    run_dir: str = doc_field("runs/sft", "Run directory; the model is written to <run_dir>/<name>/.")
    name: str = doc_field("sft", "Stage name: output subdirectory, metric prefix and checkpoint folder.")
    model: ModelConfig = doc_field(ModelConfig(), "Model to fine-tune.")
    data: DataConfig = doc_field(DataConfig(), "SFT data: prompt/completion, messages or text rows.")
    train: TrainConfig = doc_field(TrainConfig(), "Optimisation.")
    completion_only_loss: bool = doc_field(True, "Loss on completion tokens only (prompt masked).")
    packing: bool = doc_field(False, "Pack several examples into each max_length sequence (each attends only to itself).")


@dataclass
class RewardModelConfig:
    """Bradley-Terry reward model on preference pairs or rankings (`tether rm`)."""

    run_dir: str = doc_field("runs/rm", "Run directory; the reward model is written to <run_dir>/<name>/.")
    name: str = doc_field("rm", "Stage name: output subdirectory, metric prefix and checkpoint folder.")
    model: ModelConfig = doc_field(ModelConfig(), "Model to initialise the reward model from (usually the SFT model).")
    data: DataConfig = doc_field(DataConfig(), "Preference (prompt/chosen/rejected) or ranking (prompt/responses/ranks) data.")
    train: TrainConfig = doc_field(TrainConfig(learning_rate=1e-5), "Optimisation.")
    use_margin: bool = doc_field(True, "Use the rows' 'margin' field (when present) in the loss: -log σ(r_c - r_r - m).")
    center_coef: float = doc_field(
        0.0, "Reward centering: add coef * (r_c + r_r)^2 to keep rewards near 0 (0.01 is typical).", bounds=NON_NEGATIVE)
    ensemble_size: int = doc_field(1, "Train N members with different seeds; score = mean, disagreement = std.", bounds=POSITIVE)
    ensemble_k: float = doc_field(1.0, "Conservative score = mean - k * std across members.", bounds=NON_NEGATIVE)
    calibration_bins: int = doc_field(10, "Bins for the calibration table.", bounds=POSITIVE)


@dataclass
class PipelineRewardModelConfig(RewardModelConfig):
    """`tether pipeline`'s reward-model stage: `tether rm`'s fields and a gate before RL."""

    min_accuracy: float = doc_field(
        0.0, "Stop the pipeline before PPO (exit 2) when the reward model's held-out accuracy is below this "
             "(0 = never; 0.5 = chance). Below chance or the 'longer wins' baseline is always warned about.")


PreferenceLossName = Literal["dpo", "ipo", "cdpo", "robust", "hinge", "kto", "orpo", "simpo"]


@dataclass
class PreferenceConfig:
    """Offline preference optimisation: DPO, IPO, cDPO, robust DPO, hinge, KTO, ORPO, SimPO (`tether dpo`)."""

    RENAMED = {"beta": "kl_coef"}  # old key → new key (read, with a note)

    run_dir: str = doc_field("runs/dpo", "Run directory; the policy is written to <run_dir>/<name>/.")
    name: str = doc_field("dpo", "Stage name: output subdirectory, metric prefix and checkpoint folder.")
    model: ModelConfig = doc_field(ModelConfig(), "Policy to train (usually the SFT model).")
    ref_model: str | None = doc_field(
        None, "Reference model; empty = the starting policy (with LoRA: the base with adapters disabled).")
    data: DataConfig = doc_field(DataConfig(), "Preference or ranking data (KTO also takes prompt/completion/label rows).")
    train: TrainConfig = doc_field(TrainConfig(learning_rate=5e-6), "Optimisation.")
    loss: PreferenceLossName = doc_field("dpo", "Loss by name (tether.algos.losses.preference.PREFERENCE_LOSSES).")
    kl_coef: float | None = doc_field(
        None, "β (was beta): strength of the KL leash (DPO family), λ for ORPO, SimPO's reward scale; empty = the loss's usual "
              "value: 2.0 for simpo (Meng et al. 2024 used 2.0-2.5), 0.1 for the others.")
    label_smoothing: float = doc_field(0.1, "ε for cdpo / robust: assumed fraction of flipped labels.")
    simpo_gamma_beta_ratio: float = doc_field(
        0.5, "SimPO target reward margin as a ratio γ/β (γ = ratio·β): the SimPO authors suggest 0.5 and "
             "searching 0-1; their models used 0.1-0.8 with β 2.0-2.5.")
    simpo_gamma: float | None = doc_field(
        None, "SimPO margin γ itself, as TRL's CPOConfig.simpo_gamma; when set it replaces "
              "simpo_gamma_beta_ratio·β (leave the ratio at its default).")
    ipo_average_logps: bool = doc_field(True, "IPO on per-token average log-probs (as in the IPO paper) instead of sums.")
    kto_desirable_weight: float = doc_field(1.0, "KTO weight on desirable examples.")
    kto_undesirable_weight: float = doc_field(1.0, "KTO weight on undesirable examples.")
    sft_coef: float = doc_field(
        0.0, "Add this times the chosen responses' NLL (RPO-style regulariser; ORPO has its own).", bounds=NON_NEGATIVE)
