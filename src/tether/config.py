"""Typed configs: one dataclass per recipe, YAML files plus ``key=value`` overrides.

Every field carries a one-line doc (``metadata["doc"]``) so ``tether <cmd> --help``
can list it with its type and default. Nested sections are addressed with dots on
the command line::

    tether sft examples/sft_tiny.yaml train.learning_rate=3e-4 model.lora.enabled=true

Values on the command line are parsed as YAML scalars (``3e-4`` → float, ``true`` →
bool, ``[a, b]`` → list) and then checked against the field's type; an unknown key
or a value of the wrong type raises :class:`ConfigError` with a suggestion.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import shlex
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from tether.errors import ConfigError  # noqa: E402,F401 - its home is tether.errors; imported from here too


def doc_field(default: Any, doc: str, **kwargs: Any) -> Any:
    """A dataclass field with a one-line doc shown by ``--help``."""
    if isinstance(default, (list, dict)) or dataclasses.is_dataclass(default):
        return field(default_factory=lambda d=default: copy.deepcopy(d), metadata={"doc": doc}, **kwargs)
    return field(default=default, metadata={"doc": doc}, **kwargs)


# --------------------------------------------------------------------------- sections


@dataclass
class LoraConfig:
    """Low-rank adapters (peft). Off by default: on CPU full fine-tuning of a 135M model is about as fast."""

    enabled: bool = doc_field(False, "Train LoRA adapters instead of all weights.")
    r: int = doc_field(16, "Adapter rank.")
    alpha: int = doc_field(32, "LoRA alpha (scaling = alpha / r).")
    dropout: float = doc_field(0.05, "Dropout on the adapter input.")
    target_modules: str = doc_field("all-linear", "Modules to adapt: 'all-linear' or a comma-separated list of names.")
    merge_on_save: bool = doc_field(True, "Merge adapters into the base weights when saving the final model.")


@dataclass
class ModelConfig:
    """Which model to start from and how to load it."""

    name_or_path: str = doc_field(
        "embedded", "'embedded' (SmolLM2-135M-Instruct shipped with tether), a local HF directory, or a hub id.")
    random_init: bool = doc_field(
        False, "Build the architecture from the config with random weights (tests, tiny demos) instead of loading weights.")
    config_overrides: dict = doc_field({}, "Config fields to change before building, e.g. {num_hidden_layers: 2}.")
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = doc_field(
        "float32", "Weight dtype (precision=bf16 loads bf16 weights; bf16-mixed keeps these float32).")
    precision: Literal["fp32", "bf16-mixed", "bf16", "auto"] = doc_field(
        "fp32", "Numeric precision: fp32; bf16-mixed (fp32 master weights and optimizer state, matrix products in "
                "bf16 under autocast, the vocabulary and score heads, log-probs, KL and losses in fp32); bf16 (bf16 "
                "weights); auto (bf16-mixed on a bf16 GPU, or on a CPU with native bf16 where a bf16 matmul "
                "measures >= 1.2x fp32; else fp32). docs/performance.md.")
    trust_remote_code: bool = doc_field(False, "Allow model code from the model directory (off: a security risk).")
    revision: str | None = doc_field(None, "Hub revision (branch, tag or commit) for hub ids.")
    gradient_checkpointing: bool = doc_field(False, "Recompute activations in backward to save memory.")
    padding_free: bool = doc_field(
        True, "Score token log-probs on packed rows (no padding positions; block-diagonal attention) when the model's "
              "forward supports it (probed once); the vocabulary head runs only where a token is scored either way.")
    share_prefixes: bool = doc_field(
        True, "Run sequences with the same prompt (a preference pair's chosen and rejected, GRPO's samples of one "
              "prompt) as one row: the prompt once, each continuation attending to it through a 4-D mask. Exact; "
              "used when it saves positions and the model's forward honours custom masks (probed once). Sampling "
              "with transformers likewise prefills each distinct prompt once for all its samples.")
    lora: LoraConfig = doc_field(LoraConfig(), "LoRA adapters.")


@dataclass
class DataConfig:
    """Where the data is and how it is tokenised."""

    train_file: str = doc_field("", "Training data: .jsonl/.json/.parquet/.csv or a saved HF datasets directory.")
    eval_file: str | None = doc_field(None, "Held-out data; if empty, eval_fraction of the training rows are held out.")
    eval_fraction: float = doc_field(0.1, "Fraction of training rows held out when eval_file is not given (0 = none).")
    max_eval_examples: int = doc_field(0, "Evaluate on at most this many held-out examples (0 = all).")
    max_length: int = doc_field(512, "Maximum tokens of prompt + response.")
    max_prompt_length: int = doc_field(
        0, "When a row is too long, its prompt is cut from the left to this many tokens (0 = half of max_length).")
    chat_template: Literal["auto", "always", "never"] = doc_field(
        "auto", "auto: use the tokenizer's chat template when it has one; never: concatenate text and append EOS.")
    overlong: Literal["truncate", "skip", "error"] = doc_field(
        "truncate", "Rows over max_length: truncate (counted and reported), skip (counted) or error (exit 2).")
    max_train_examples: int = doc_field(0, "Use at most this many training examples (0 = all); the rest are counted.")


ResumeMode = Literal["auto", "never", "force"]
RESUME_DOC = ("auto: resume from this stage's newest checkpoint only if it was written with the same config, else stop "
              "and list what differs; never: start afresh (old checkpoints moved aside); force: resume even though "
              "the config differs; true/false = auto/never (docs/checkpoints.md).")


def prompt_budget(data: "DataConfig") -> int:
    """The effective max_prompt_length (0 means half of max_length)."""
    return data.max_prompt_length or data.max_length // 2


@dataclass
class TrainConfig:
    """Optimisation, schedule, logging and checkpointing."""

    learning_rate: float = doc_field(2e-5, "Peak learning rate (AdamW).")
    weight_decay: float = doc_field(0.0, "AdamW weight decay (not applied to biases and norms).")
    adam_betas: list = doc_field([0.9, 0.999], "AdamW betas.")
    lr_scheduler: Literal["cosine", "linear", "constant"] = doc_field("cosine", "Decay after warmup.")
    warmup_ratio: float = doc_field(0.1, "Fraction of optimizer steps spent warming up linearly from 0.")
    num_epochs: float = doc_field(1.0, "Passes over the training data (may be fractional).")
    max_steps: int = doc_field(0, "Stop after this many optimizer steps (0 = use num_epochs).")
    batch_size: int = doc_field(8, "Examples (or pairs) per micro-batch.")
    grad_accum_steps: int = doc_field(1, "Micro-batches per optimizer step (effective batch = batch_size x this).")
    eval_batch_size: int = doc_field(8, "Examples (or pairs) per evaluation batch.")
    max_grad_norm: float = doc_field(1.0, "Clip the global gradient norm to this (0 = no clipping).")
    seed: int = doc_field(42, "Seed for data order, initialisation and dropout.")
    log_every: int = doc_field(1, "Log metrics every N optimizer steps.")
    eval_every: int = doc_field(0, "Evaluate every N optimizer steps (0 = only at the end).")
    save_every: int = doc_field(0, "Write a resumable checkpoint every N optimizer steps (0 = only at the end).")
    keep_checkpoints: int = doc_field(2, "Keep the newest N checkpoints.")
    save_final_checkpoint: bool = doc_field(
        True, "Also checkpoint the finished run (optimizer included), so re-running it resumes instead of retraining.")
    resume: ResumeMode | bool = doc_field("auto", RESUME_DOC)
    num_threads: int = doc_field(0, "torch CPU threads (0 = torch's default).")
    report_to: list = doc_field(["tensorboard"], "Extra metric sinks: tensorboard, wandb, mlflow (metrics.jsonl always).")


# --------------------------------------------------------------------------- recipes


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
    center_coef: float = doc_field(0.0, "Reward centering: add coef * (r_c + r_r)^2 to keep rewards near 0 (0.01 is typical).")
    ensemble_size: int = doc_field(1, "Train N members with different seeds; score = mean, disagreement = std.")
    ensemble_k: float = doc_field(1.0, "Conservative score = mean - k * std across members.")
    calibration_bins: int = doc_field(10, "Bins for the calibration table.")


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

    run_dir: str = doc_field("runs/dpo", "Run directory; the policy is written to <run_dir>/<name>/.")
    name: str = doc_field("dpo", "Stage name: output subdirectory, metric prefix and checkpoint folder.")
    model: ModelConfig = doc_field(ModelConfig(), "Policy to train (usually the SFT model).")
    ref_model: str | None = doc_field(
        None, "Reference model; empty = the starting policy (with LoRA: the base with adapters disabled).")
    data: DataConfig = doc_field(DataConfig(), "Preference or ranking data (KTO also takes prompt/completion/label rows).")
    train: TrainConfig = doc_field(TrainConfig(learning_rate=5e-6), "Optimisation.")
    loss: PreferenceLossName = doc_field("dpo", "Loss by name (tether.algos.losses.preference.PREFERENCE_LOSSES).")
    beta: float | None = doc_field(
        None, "β: strength of the KL leash (DPO family), λ for ORPO, SimPO's reward scale; empty = the loss's usual "
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
    sft_coef: float = doc_field(0.0, "Add this times the chosen responses' NLL (RPO-style regulariser; ORPO has its own).")


@dataclass
class HeldOutConfig:
    """Held-out evaluation during RL and the reward-hacking alarm (off unless ``gold`` is set)."""

    gold: str = doc_field("", "Gold / held-out reward, module:function(prompts, responses) → scores, e.g. "
                              "tether.tasks.helpful:gold_reward (empty = no held-out evaluation).")
    prompts_file: str = doc_field("", "Held-out prompts (any format with a prompt); empty = data.eval_file.")
    max_prompts: int = doc_field(32, "Held-out prompts evaluated each time (the same ones every time).")
    every: int = doc_field(5, "Evaluate every N iterations (and once before training, on the reference).")
    seed: int = doc_field(1234, "Sampling seed of the held-out evaluation (it never disturbs the training RNG).")
    patience: int = doc_field(2, "Consecutive evaluations a rule must hold before the alarm fires.")
    gold_drop: float = doc_field(0.1, "Alarm when gold falls this far below its best while the proxy rises past "
                                      "its value at that best.")
    length_ratio: float = doc_field(2.0, "Alarm when mean response length exceeds this x the reference's.")
    ngram_share: float = doc_field(0.6, "Alarm when one word trigram is in more than this share of responses "
                                        "(and at least twice the reference's share).")
    stop_on_alarm: bool = doc_field(False, "Stop training when the alarm fires (the policy is still saved).")
    keep_best: bool = doc_field(False, "Save the policy with the best held-out gold reward to <run_dir>/<name>-best/.")


@dataclass
class GenerationBackendConfig:
    """Which engine samples the rollouts (docs/ppo.md#generation-backends)."""

    backend: Literal["auto", "transformers", "vllm"] = doc_field(
        "auto", "auto = vLLM when it is installed and the policy is on a CUDA GPU, else transformers' generate.")
    gpu_memory_utilization: float = doc_field(
        0.3, "vLLM: fraction of the GPU's memory its engine may take (weights + KV cache); the rest is training's.")
    dtype: str = doc_field("auto", "vLLM: weight dtype of the engine (auto = the model's; bfloat16 on most GPUs).")
    max_num_seqs: int | None = doc_field(None, "vLLM: most sequences decoded at once (None = vLLM's default).")
    enforce_eager: bool = doc_field(False, "vLLM: no CUDA graphs (starts faster, decodes slower).")


@dataclass
class PlacementConfig:
    """Where the RL roles run (docs/scaling.md#placing-roles-with-ray)."""

    backend: Literal["local", "ray"] = doc_field(
        "local", "local = every role in the training process; ray = the roles in `roles` as Ray actors.")
    address: str = doc_field("", "Ray cluster address (empty = RAY_ADDRESS, else start Ray on this machine).")
    roles: list = doc_field(["reference", "reward", "generation"],
                            "Roles placed on Ray actors: reference, reward, generation (policy and value train here).")
    num_gpus: dict = doc_field({}, "GPUs per role's actor, e.g. {generation: 1, reference: 1} (default 0).")
    num_cpus: dict = doc_field({}, "CPUs per role's actor (default 1).")
    num_threads: int = doc_field(0, "torch CPU threads inside each actor (0 = its num_cpus).")


@dataclass
class PPOConfig:
    """PPO under a KL leash to the frozen reference (`tether ppo`)."""

    run_dir: str = doc_field("runs/ppo", "Run directory; the policy is written to <run_dir>/<name>/.")
    name: str = doc_field("ppo", "Stage name: output subdirectory, metric prefix and checkpoint folder.")
    model: ModelConfig = doc_field(ModelConfig(), "Policy to train (usually the SFT model); also the reference.")
    ref_model: str | None = doc_field(None, "Reference model; empty = a frozen copy of the starting policy "
                                            "(with LoRA: the base with adapters disabled, no copy).")
    reward: str = doc_field("", "Reward: a reward model directory (or comma-separated ensemble) or module:function.")
    ensemble_k: float | None = doc_field(
        None, "For an ensemble reward: score = mean − k·std of its members, so answers they disagree on score lower "
              "(against reward hacking); empty = the k stored in the ensemble's ensemble.json, 0 = the plain mean.")
    value_model: str | None = doc_field(None, "Value model init; empty = the reward model directory (an ensemble: its "
                                              "first member; a function reward: the policy).")
    data: DataConfig = doc_field(DataConfig(max_length=512), "Prompts (any format with a prompt).")
    max_new_tokens: int = doc_field(48, "Longest response sampled.")
    temperature: float = doc_field(1.0, "Sampling temperature (log-probs are computed at the same temperature).")
    top_p: float = doc_field(1.0, "Nucleus sampling; keep 1.0 so the ratio matches the sampling distribution.")
    min_new_tokens: int = doc_field(
        0, "Suppress EOS until this many tokens (0 = off). Fixes response lengths for benchmarks; the responses are "
           "then sampled from a truncated distribution, so keep 0 for training.")
    num_iterations: int = doc_field(20, "Rollout + update iterations.")
    rollout_batch_size: int = doc_field(16, "Prompts sampled per iteration.")
    minibatch_size: int = doc_field(8, "Responses per gradient step in an update epoch.")
    ppo_epochs: int = doc_field(2, "Passes over each rollout batch.")
    learning_rate: float = doc_field(1e-6, "Policy learning rate.")
    value_learning_rate: float = doc_field(1e-5, "Value model learning rate.")
    clip_range: float = doc_field(0.2, "Policy ratio clip ε.")
    value_clip_range: float = doc_field(0.2, "Value clip around the old values.")
    dual_clip: float | None = doc_field(None, "Dual-clip constant c > 1 (None = off).")
    value_coef: float = doc_field(0.1, "Weight of the value loss.")
    entropy_coef: float = doc_field(0.0, "Entropy bonus weight.")
    gamma: float = doc_field(1.0, "Discount.")
    lam: float = doc_field(0.95, "GAE λ.")
    init_kl_coef: float = doc_field(0.05, "β: weight of the per-token KL penalty −β·KL_t.")
    adaptive_kl: bool = doc_field(True, "Adapt β toward target_kl (Ziegler et al. 2019); false = fixed β.")
    target_kl: float = doc_field(6.0, "Target KL per response (nats) for the adaptive controller.")
    kl_horizon: int = doc_field(10000, "Adaptive controller horizon (samples).")
    kl_estimator: Literal["k1", "k2", "k3"] = doc_field("k1", "Per-token KL estimator in the reward penalty.")
    kl_limit: float = doc_field(20.0, "Stop the run when the mean KL per response exceeds this (nats).")
    missing_eos_penalty: float = doc_field(1.0, "Subtracted from the score of a response that ends without EOS.")
    normalize_scores: bool = doc_field(True, "Normalise scores with running mean/std before the KL penalty.")
    score_clip: float = doc_field(5.0, "Clip (normalised) scores to ±this (0 = off).")
    whiten_advantages: bool = doc_field(True, "Whiten advantages over the batch's response tokens.")
    approx_kl_stop: float = doc_field(0.0, "End the whole update (this epoch and the rest) before the step of the first "
                                      "minibatch whose approx KL(π_old‖π) exceeds this, as Stable-Baselines3's "
                                      "target_kl does (0 = off).")
    max_grad_norm: float = doc_field(1.0, "Clip each model's gradient norm.")
    row_seeded_sampling: bool = doc_field(
        False, "Sample each response from its own seeded stream, so samples do not depend on the batch or the "
               "number of processes (always on in a data-parallel run).")
    generation: GenerationBackendConfig = doc_field(GenerationBackendConfig(), "Sampling engine (transformers or vLLM).")
    placement: PlacementConfig = doc_field(PlacementConfig(), "Where the roles run (in process, or Ray actors).")
    seed: int = doc_field(42, "Seed for prompt order, sampling and initialisation.")
    save_every: int = doc_field(0, "Checkpoint every N iterations (0 = only at the end).")
    resume: ResumeMode | bool = doc_field("auto", RESUME_DOC)
    num_threads: int = doc_field(0, "torch CPU threads (0 = torch's default).")
    heldout: HeldOutConfig = doc_field(HeldOutConfig(), "Held-out gold evaluation and the reward-hacking alarm.")
    report_to: list = doc_field(["tensorboard"], "Extra metric sinks: tensorboard, wandb, mlflow.")


@dataclass
class GRPOConfig:
    """Critic-free policy optimisation with K samples per prompt: GRPO, RLOO, REINFORCE++ (`tether grpo`)."""

    run_dir: str = doc_field("runs/grpo", "Run directory; the policy is written to <run_dir>/<name>/.")
    name: str = doc_field("grpo", "Stage name: output subdirectory, metric prefix and checkpoint folder.")
    advantage: Literal["grpo", "rloo", "reinforce_pp"] = doc_field(
        "grpo", "Baseline: group mean/std (grpo), leave-one-out (rloo), global batch whitening (reinforce_pp).")
    model: ModelConfig = doc_field(ModelConfig(), "Policy to train (usually the SFT model); also the reference.")
    ref_model: str | None = doc_field(None, "Reference model; empty = a frozen copy of the starting policy "
                                            "(with LoRA: the base with adapters disabled).")
    reward: str = doc_field("", "Reward: a reward model directory (or comma-separated ensemble) or module:function.")
    ensemble_k: float | None = doc_field(
        None, "For an ensemble reward: score = mean − k·std of its members, so answers they disagree on score lower "
              "(against reward hacking); empty = the k stored in the ensemble's ensemble.json, 0 = the plain mean.")
    data: DataConfig = doc_field(DataConfig(max_length=512), "Prompts (any format with a prompt).")
    group_size: int = doc_field(4, "K: responses sampled per prompt.")
    prompts_per_iteration: int = doc_field(4, "Prompts per iteration (batch = prompts x K responses).")
    max_new_tokens: int = doc_field(48, "Longest response sampled.")
    temperature: float = doc_field(1.0, "Sampling temperature (log-probs are computed at the same temperature).")
    top_p: float = doc_field(1.0, "Nucleus sampling; keep 1.0 so the ratio matches the sampling distribution.")
    min_new_tokens: int = doc_field(
        0, "Suppress EOS until this many tokens (0 = off). Fixes response lengths for benchmarks; the responses are "
           "then sampled from a truncated distribution, so keep 0 for training.")
    num_iterations: int = doc_field(20, "Rollout + update iterations.")
    minibatch_size: int = doc_field(8, "Responses per gradient step.")
    update_epochs: int = doc_field(1, "Passes over each rollout batch (1 = on-policy; >1 uses the clipped ratio).")
    learning_rate: float = doc_field(1e-6, "Policy learning rate.")
    clip_range: float = doc_field(0.2, "Policy ratio clip ε.")
    kl_coef: float = doc_field(0.04, "β of the KL term (0 = no leash).")
    kl_in_reward: bool = doc_field(
        False, "KL as a per-token reward penalty (k1) instead of a k3 loss term (GRPO's choice); reinforce_pp always "
               "puts it in the reward.")
    scale_by_std: bool = doc_field(True, "grpo: divide by the group std; false = Dr. GRPO (no difficulty bias).")
    loss_aggregation: Literal["token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"] = doc_field(
        "token_mean", "How token losses are averaged; seq_mean_token_mean (original GRPO) has a length bias.")
    missing_eos_penalty: float = doc_field(0.0, "Subtracted from the score of a response that ends without EOS.")
    kl_limit: float = doc_field(20.0, "Stop the run when the mean KL per response exceeds this (nats).")
    max_grad_norm: float = doc_field(1.0, "Clip the gradient norm.")
    row_seeded_sampling: bool = doc_field(
        False, "Sample each response from its own seeded stream, so samples do not depend on the batch or the "
               "number of processes (always on in a data-parallel run).")
    generation: GenerationBackendConfig = doc_field(GenerationBackendConfig(), "Sampling engine (transformers or vLLM).")
    placement: PlacementConfig = doc_field(PlacementConfig(), "Where the roles run (in process, or Ray actors).")
    seed: int = doc_field(42, "Seed for prompt order, sampling and initialisation.")
    save_every: int = doc_field(0, "Checkpoint every N iterations (0 = only at the end).")
    resume: ResumeMode | bool = doc_field("auto", RESUME_DOC)
    num_threads: int = doc_field(0, "torch CPU threads (0 = torch's default).")
    heldout: HeldOutConfig = doc_field(HeldOutConfig(), "Held-out gold evaluation and the reward-hacking alarm.")
    report_to: list = doc_field(["tensorboard"], "Extra metric sinks: tensorboard, wandb, mlflow.")


@dataclass
class BestOfNConfig:
    """Best-of-N sampling against a reward (`tether bon`)."""

    model: ModelConfig = doc_field(ModelConfig(), "Policy to sample from.")
    reward: str = doc_field("", "Reward: a reward model directory (or comma-separated ensemble) or module:function.")
    ensemble_k: float | None = doc_field(
        None, "For an ensemble reward: score = mean − k·std of its members, so answers they disagree on score lower "
              "(against reward hacking); empty = the k stored in the ensemble's ensemble.json, 0 = the plain mean.")
    data: DataConfig = doc_field(DataConfig(max_length=512), "Prompts (any format with a prompt).")
    output: str = doc_field("runs/bon/best_of_n.jsonl", "Where to write prompt / best response / scores rows.")
    n: int = doc_field(4, "Samples per prompt.")
    max_new_tokens: int = doc_field(48, "Longest response sampled.")
    temperature: float = doc_field(1.0, "Sampling temperature.")
    top_p: float = doc_field(1.0, "Nucleus sampling.")
    batch_size: int = doc_field(8, "Prompts per generation batch (each sampled n times).")
    max_prompts: int = doc_field(0, "Use at most this many prompts (0 = all).")
    seed: int = doc_field(42, "Sampling seed.")
    num_threads: int = doc_field(0, "torch CPU threads (0 = torch's default).")


@dataclass
class RejectionSamplingConfig:
    """Rejection-sampling fine-tuning, Llama 2 style (`tether rejection-sample`)."""

    run_dir: str = doc_field("runs/rejection", "Run directory: round-<r>/ holds each round's data and model.")
    model: ModelConfig = doc_field(ModelConfig(), "Policy to start from (usually the SFT model).")
    reward: str = doc_field("", "Reward: a reward model directory (or comma-separated ensemble) or module:function.")
    ensemble_k: float | None = doc_field(
        None, "For an ensemble reward: score = mean − k·std of its members, so answers they disagree on score lower "
              "(against reward hacking); empty = the k stored in the ensemble's ensemble.json, 0 = the plain mean.")
    data: DataConfig = doc_field(DataConfig(max_length=512), "Prompts (any format with a prompt).")
    rounds: int = doc_field(2, "Sample → keep the best → fine-tune, this many times.")
    n: int = doc_field(4, "Samples per prompt.")
    threshold: float | None = doc_field(None, "Keep a prompt's best response only if its score is at least this.")
    max_new_tokens: int = doc_field(48, "Longest response sampled.")
    temperature: float = doc_field(1.0, "Sampling temperature.")
    batch_size: int = doc_field(8, "Prompts per generation batch (each sampled n times).")
    max_prompts: int = doc_field(0, "Prompts per round (0 = all).")
    train: TrainConfig = doc_field(TrainConfig(learning_rate=1e-5, num_epochs=1.0), "Fine-tuning on each round's best.")
    seed: int = doc_field(42, "Sampling seed.")


@dataclass
class SampleConfig:
    """Sample K responses per prompt for labelling (`tether sample`)."""

    model: ModelConfig = doc_field(ModelConfig(), "Policy to sample from (usually the SFT model).")
    data: DataConfig = doc_field(DataConfig(max_length=512), "Prompts (any format with a prompt).")
    output: str = doc_field("runs/samples.jsonl", "Where to write prompt / responses / generation rows.")
    k: int = doc_field(4, "Responses per prompt.")
    max_new_tokens: int = doc_field(64, "Longest response.")
    temperature: float = doc_field(0.9, "Sampling temperature.")
    top_p: float = doc_field(1.0, "Nucleus sampling.")
    batch_size: int = doc_field(8, "Prompts per generation batch (each sampled k times).")
    max_prompts: int = doc_field(0, "Use at most this many prompts (0 = all).")
    seed: int = doc_field(42, "Sampling seed.")


@dataclass
class LabelSimulateConfig:
    """Label sampled responses with a simulated annotator panel (`tether label simulate`)."""

    samples: str = doc_field("", "samples.jsonl from `tether sample` (prompt + responses rows).")
    db: str = doc_field("runs/labels.sqlite", "Label store (SQLite) to write.")
    utility: str = doc_field("tether.tasks.helpful:gold_utility", "Gold utility, module:function(prompt, response).")
    panel_size: int = doc_field(5, "Annotators in the panel.")
    noise_scale: float = doc_field(1.0, "Multiplies every annotator's noise temperature (0.35-1.0): the gold "
                                        "utility's scale (e.g. 0.25 for VADER's compound score in [-1, 1]).")
    labels_per_item: int = doc_field(3, "Annotators per comparison.")
    planted_length_bias: float = doc_field(0.0, "Utility bonus per 100 characters every annotator adds (0 = off).")
    adversarial: int = doc_field(0, "How many of the annotators answer the opposite of their judgement.")
    gold_fraction: float = doc_field(0.1, "Fraction of comparisons that are gold questions (answer known, not shown).")
    pairs_per_prompt: int = doc_field(1, "Comparisons made from each prompt's K responses (mode=pairs).")
    mode: Literal["pairs", "ranking"] = doc_field(
        "pairs", "pairs: pick the better of two responses; ranking: rank all K responses of a prompt "
        "(Plackett-Luce), exported as rankings and expanded to C(K,2) pairs for the reward model.")
    seed: int = doc_field(0, "Seed for the panel's noise and the gold-question draw.")


@dataclass
class LabelJudgeConfig:
    """Label comparisons with an AI judge and a written constitution (`tether label judge`)."""

    samples: str = doc_field("", "samples.jsonl from `tether sample` (prompt + responses rows).")
    db: str = doc_field("runs/labels.sqlite", "Label store (SQLite) to write.")
    judge: str = doc_field("embedded", "Local judge model: 'embedded' or an HF directory (ignored with base_url).")
    base_url: str = doc_field("", "OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1 (empty = local model).")
    api_model: str = doc_field("", "Model name sent to the endpoint.")
    api_key_env: str = doc_field("OPENAI_API_KEY", "Environment variable holding the endpoint's API key.")
    constitution: str = doc_field("", "Text file with one principle per line (empty = the built-in constitution).")
    utility: str = doc_field("tether.tasks.helpful:gold_utility", "Gold utility for the agreement report ('' = none).")
    pairs_per_prompt: int = doc_field(1, "Comparisons made from each prompt's responses.")
    max_comparisons: int = doc_field(0, "Judge at most this many comparisons (0 = all).")
    seed: int = doc_field(0, "Seed for the order within pairs and the principle drawn per comparison.")


@dataclass
class LabelServeConfig:
    """The web labeling app (`tether label serve`)."""

    db: str = doc_field("runs/labels.sqlite", "Label store (SQLite); created if missing.")
    samples: str = doc_field("", "Load comparisons from this samples.jsonl first (empty = serve what the store has).")
    pairs_per_prompt: int = doc_field(1, "Comparisons made from each prompt's responses when loading samples.")
    mode: Literal["pairs", "ranking"] = doc_field(
        "pairs", "How loaded samples are shown: pairs (pick the better of two) or ranking (rank all K responses).")
    annotators: list = doc_field([], "Annotator names to create; each new one gets a token, printed once.")
    tokens_file: str = doc_field("", "Also write new tokens here (mode 600); default <db stem>.tokens.json.")
    admin_token: str = doc_field("", "Admin token for /admin (empty = keep the stored one, or make one and print it).")
    guidelines: str = doc_field("", "Markdown file of instructions for annotators (or a .txt constitution, one "
                                    "principle per line); empty = the built-in constitution.")
    host: str = doc_field("127.0.0.1", "Interface to bind; 127.0.0.1 keeps the app off the network.")
    port: int = doc_field(8765, "Port.")
    rate_limit: int = doc_field(600, "Labels per annotator per minute (0 = unlimited).")
    seed: int = doc_field(0, "Seed for the response order within loaded pairs.")


@dataclass
class LabelTokensConfig:
    """Rotate annotator or admin tokens of the labeling app (`tether label tokens`)."""

    db: str = doc_field("runs/labels.sqlite", "Label store (SQLite).")
    rotate: list = doc_field([], "Annotators whose tokens to replace; 'admin' = the admin token. Old tokens and "
                                 "their sessions stop working.")
    tokens_file: str = doc_field("", "Write the new tokens here (mode 600, other entries kept); default "
                                     "<db stem>.tokens.json.")


@dataclass
class LabelStatsConfig:
    """Agreement and quality report for a label store (`tether label stats`)."""

    db: str = doc_field("runs/labels.sqlite", "Label store (SQLite).")
    output: str = doc_field("", "Also write the report as JSON here (default: <db stem>.stats.json).")


@dataclass
class LabelExportConfig:
    """Aggregate votes and export preferences.jsonl (`tether label export`)."""

    db: str = doc_field("runs/labels.sqlite", "Label store (SQLite).")
    output: str = doc_field("runs/preferences.jsonl", "TRL-format preference rows with source and agreement.")
    method: Literal["dawid_skene", "majority"] = doc_field("dawid_skene", "How votes become one preference per item.")
    min_agreement: float = doc_field(0.0, "Drop items whose votes agree with the winner less than this (counted).")
    include_gold: bool = doc_field(False, "Also export gold questions.")
    include_both_bad: bool = doc_field(False, "Also export items most annotators marked 'both bad' (from their other "
                                              "votes).")
    format: Literal["trl", "labelstudio"] = doc_field(
        "trl", "trl: aggregated preferences.jsonl; labelstudio: every item and label as Label Studio tasks (JSON).")


@dataclass
class LabelImportConfig:
    """Import a Label Studio JSON export into the label store (`tether label import`)."""

    input: str = doc_field("", "Label Studio JSON export (list of tasks with data prompt/response_a/response_b).")
    db: str = doc_field("runs/labels.sqlite", "Label store (SQLite) to add to.")


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
class ScoreConfig:
    """Score rows with a trained reward model (`tether score`)."""

    model: str = doc_field("", "Reward model directory (or a comma-separated list: an ensemble).")
    input: str = doc_field("", "Rows to score: prompt/response, prompt/completion, or prompt/chosen/rejected.")
    output: str = doc_field("", "Where to write the scored jsonl (default: <input stem>.scored.jsonl).")
    batch_size: int = doc_field(8, "Rows per forward pass.")
    max_length: int = doc_field(1024, "Longer rows are truncated from the left (counted and reported).")
    chat_template: Literal["auto", "always", "never"] = doc_field("auto", "As in data.chat_template.")
    ensemble_k: float = doc_field(1.0, "Conservative score = mean - k * std when several models are given.")
    precision: Literal["fp32", "bf16-mixed", "bf16", "auto"] = doc_field(
        "fp32", "Numeric precision of every model this loads, as model.precision.")


@dataclass
class EvalConfig:
    """Evaluate policies on held-out prompts: reward, gold, KL, diversity, win-rate, alignment tax (`tether eval`)."""

    run_dir: str = doc_field("runs/eval", "Where eval.json and eval_samples.jsonl are written.")
    models: list = doc_field([], "Model directories to evaluate, e.g. [runs/q/sft,runs/q/ppo,runs/q/dpo].")
    reference: str = doc_field("", "Reference policy for KL and win-rate (empty = the first of models).")
    reward: str = doc_field("", "Proxy reward: reward model directory (or ensemble) or module:function (empty = skip).")
    ensemble_k: float | None = doc_field(
        None, "For an ensemble reward: score = mean − k·std of its members, so answers they disagree on score lower "
              "(against reward hacking); empty = the k stored in the ensemble's ensemble.json, 0 = the plain mean.")
    gold: str = doc_field("tether.tasks.helpful:gold_reward",
                          "Gold / held-out reward, module:function(prompts, responses, ids) (empty = skip).")
    data: DataConfig = doc_field(DataConfig(max_length=512), "Held-out prompts (any format with a prompt).")
    max_prompts: int = doc_field(32, "Evaluate on at most this many prompts (0 = all).")
    max_new_tokens: int = doc_field(48, "Longest response.")
    temperature: float = doc_field(1.0, "Sampling temperature (KL is measured at the same temperature).")
    batch_size: int = doc_field(16, "Prompts per generation batch.")
    evaluator_temperature: float = doc_field(
        0.1, "Noise of the held-out evaluator judging win-rates: P(A wins) = σ((gold_A − gold_B) / this).")
    general_text: str = doc_field("", "Held-out general text for perplexity (empty = the packaged paragraphs).")
    multiple_choice: str = doc_field("", "Multiple-choice jsonl {question, choices, answer} (empty = packaged set).")
    alignment_tax: bool = doc_field(True, "Measure perplexity and multiple-choice accuracy before vs after.")
    bootstrap_resamples: int = doc_field(
        2000, "Resamples of the paired bootstrap over prompts behind every interval (gold_gain, proxy_gain, "
              "win_rate_interval); drawn with seed.")
    interval_level: float = doc_field(0.95, "Confidence level of those intervals, in (0, 1): 0.95 = 95% intervals.")
    seed: int = doc_field(0, "Sampling, evaluator and bootstrap seed.")
    num_threads: int = doc_field(0, "torch CPU threads (0 = default).")
    precision: Literal["fp32", "bf16-mixed", "bf16", "auto"] = doc_field(
        "fp32", "Numeric precision of every model this loads, as model.precision.")


@dataclass
class FrontierConfig:
    """Reward-vs-KL frontier: PPO at several fixed β and best-of-N at several N, proxy and gold vs KL (`tether frontier`)."""

    run_dir: str = doc_field("runs/frontier", "Run directory: ppo-beta-<β>/ per PPO run, frontier.json, report.html.")
    ppo: PPOConfig = doc_field(PPOConfig(), "The PPO run to sweep (model, reward, data, iterations ...); each point "
                                            "overrides init_kl_coef and turns adaptive_kl off.")
    betas: list = doc_field([0.5, 0.1, 0.02], "Fixed β per PPO run, strong to weak leash ([] = no PPO points).")
    ns: list = doc_field([1, 2, 4, 8, 16], "Best-of-N sizes from the starting policy ([] = no best-of-N points).")
    dpo: PreferenceConfig = doc_field(PreferenceConfig(), "The DPO run to sweep (data.train_file = the preferences, "
                                                          "train.*, loss ...); it starts from ppo.model, which is "
                                                          "also its reference.")
    dpo_betas: list = doc_field([], "β per DPO run ([] = no DPO points), e.g. [0.5, 0.1].")
    gold: str = doc_field("tether.tasks.helpful:gold_reward", "Gold / held-out reward, module:function.")
    prompts_file: str = doc_field("", "Held-out prompts (empty = ppo.data.eval_file).")
    max_prompts: int = doc_field(32, "Held-out prompts per point.")
    batch_size: int = doc_field(16, "Prompts per generation batch (best-of-N: each sampled max(ns) times).")
    seed: int = doc_field(0, "Sampling seed of the evaluation.")


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


@dataclass
class ReportConfig:
    """Write a self-contained report.html for a run directory (`tether report`)."""

    run_dir: str = doc_field("runs/quickstart", "Run directory to report on (metrics.jsonl, *_heldout.json, ...).")
    output: str = doc_field("", "Where to write the report (default <run_dir>/report.html).")
    title: str = doc_field("", "Report title (default: the run directory's name).")
    max_samples: int = doc_field(12, "Prompts shown in the side-by-side answer table.")


@dataclass
class PipelineConfig:
    """The whole lifecycle over your own models and data, resumable, in rounds (`tether pipeline config.yaml`).

    Each stage section is that recipe's full config; the pipeline sets the paths between
    stages (run directories, models, data files), so only set what the stage should do.
    """

    run_dir: str = doc_field("runs/pipeline", "Run directory; with rounds > 1 each round writes to round-<r>/.")
    model: ModelConfig = doc_field(ModelConfig(precision="auto"),
                                   "The pretrained model SFT starts from; its precision (default auto) is every "
                                   "stage's.")
    task: str = doc_field("", "A built-in task (helpful, sentiment) filling every data file, gold and utility left "
                              "empty/default, as tether quickstart uses them (empty = your own files).")
    rounds: int = doc_field(1, "Iterative RLHF: each round re-samples from the current policy, relabels, continues "
                               "the reward model on all preferences so far and continues the policy.")
    stages: list = doc_field(["sft", "sample", "label", "rm", "ppo", "dpo", "eval", "report"],
                             "Stages to run, in this order (drop one to skip it).")
    sft_model: str = doc_field("", "Bring your own SFT model directory (skips sft).")
    preferences: str = doc_field("", "Bring your own preferences / rankings file (skips sample and label in round 1).")
    reward: str = doc_field("", "Bring your own reward: a reward model directory or module:function (skips rm).")
    extra_preferences: str = doc_field("", "Pairs appended to the labelled preferences for rm and dpo (e.g. a "
                                           "curated set); empty = none.")
    resume: ResumeMode | bool = doc_field(
        "auto", "auto: skip finished stages whose settings are unchanged, stop and list what differs at one whose "
                "are not; never: move run_dir aside and start afresh; force: skip finished stages even if changed.")
    sft: SFTConfig = doc_field(SFTConfig(), "SFT stage (set data.train_file to your demonstrations).")
    sample: SampleConfig = doc_field(SampleConfig(), "Sampling K responses per prompt for labelling "
                                                     "(data.train_file empty = ppo.data.train_file).")
    label: LabelSimulateConfig = doc_field(LabelSimulateConfig(), "Labelling by the simulated panel (utility = your "
                                                                  "gold utility, module:function(prompt, response)).")
    export: LabelExportConfig = doc_field(LabelExportConfig(), "Aggregating labels into preferences.")
    rm: PipelineRewardModelConfig = doc_field(PipelineRewardModelConfig(),
                                              "Reward model stage; rm.min_accuracy is the gate before RL.")
    ppo: PPOConfig = doc_field(PPOConfig(), "PPO stage (set data.train_file to your RL prompts).")
    dpo: PreferenceConfig = doc_field(PreferenceConfig(), "DPO-family stage on the same preferences.")
    eval: EvalConfig = doc_field(EvalConfig(), "Final evaluation (data.train_file = held-out prompts).")


@dataclass
class QuickstartConfig:
    """The whole lifecycle on the embedded model and the built-in task (`tether quickstart`).

    SFT → sample K responses → simulated annotator panel → reward model → PPO (with the
    held-out gold evaluation and the hacking alarm) and DPO on the same preferences →
    held-out evaluation → report.html.
    """

    run_dir: str = doc_field("runs/quickstart", "Run directory for all stages.")
    task: str = doc_field("sentiment", "Built-in task (tether.tasks.registry): sentiment (continue a neutral review, "
                                       "gold = VADER) or helpful (everyday questions, gold = cues of a helpful answer).")
    seed: int = doc_field(0, "Seed of every stage: training order and initialisation, sampling, the panel, evaluation.")
    tiny: bool = doc_field(False, "Use a tiny random model instead of SmolLM2 (a smoke test in a few minutes).")
    sft_steps: int = doc_field(12, "SFT optimizer steps.")
    sample_prompts: int = doc_field(64, "Training prompts sampled for labelling.")
    k: int = doc_field(4, "Responses sampled per prompt.")
    pairs_per_prompt: int = doc_field(3, "Comparisons the panel labels per prompt (from the K responses).")
    labels_per_item: int = doc_field(3, "Simulated annotators per comparison.")
    planted_length_bias: float = doc_field(0.0, "The panel's planted bias for longer answers (utility per 100 chars).")
    shipped_pairs: bool = doc_field(True, "Train RM and DPO on the panel's preferences plus the task's shipped pairs "
                                          "(false: the panel's labels alone, biases and all).")
    rm_steps: int = doc_field(60, "Reward-model optimizer steps (4 pairs each).")
    ppo_iterations: int = doc_field(16, "PPO iterations.")
    ppo_batch: int = doc_field(16, "Prompts per PPO iteration (one update epoch in two minibatches).")
    ppo_epochs: int = doc_field(2, "PPO update epochs over each iteration's rollouts (two minibatches each).")
    ppo_learning_rate: float = doc_field(1.5e-5, "PPO policy learning rate.")
    init_kl_coef: float = doc_field(0.1, "PPO's initial β (adaptive toward target_kl).")
    target_kl: float = doc_field(3.0, "PPO's target KL per response (nats).")
    dpo_steps: int = doc_field(24, "DPO optimizer steps.")
    max_new_tokens: int | None = doc_field(None, "Longest sampled response (empty = the task's: 40 helpful, 24 "
                                                 "sentiment).")
    temperature: float = doc_field(0.7, "Sampling temperature for labelling samples and PPO's rollouts (log-probs "
                                                "are computed at the same temperature).")
    eval_temperature: float = doc_field(0.7, "Sampling temperature of the final evaluation (KL at the same "
                                                     "temperature).")
    heldout_prompts: int = doc_field(32, "Held-out prompts for the gold evaluation during PPO.")
    heldout_every: int = doc_field(8, "PPO iterations between held-out evaluations.")
    eval_prompts: int = doc_field(0, "Test prompts for the final evaluation (0 = all: 120 helpful, 160 sentiment).")
    batch_size: int = doc_field(8, "Micro-batch size for SFT (pairs for RM/DPO use half).")
    precision: Literal["fp32", "bf16-mixed", "bf16", "auto"] = doc_field(
        "auto", "Numeric precision of every stage (model.precision): auto picks bf16-mixed where this machine "
                "computes bf16 faster than fp32 (measured at the start), fp32 otherwise, and says which.")
    max_length: int = doc_field(192, "Maximum tokens per sequence.")
    eval_examples: int = doc_field(48, "Held-out pairs for the reward-model report.")
    num_threads: int = doc_field(0, "torch CPU threads (0 = default).")
    resume: Literal["auto", "never"] = doc_field(
        "auto", "auto: stop, listing what differs, if run_dir holds a quickstart made with other settings (or another "
                "model); never: move run_dir aside and start afresh.")


RECIPE_CONFIGS: dict[str, type] = {
    "sft": SFTConfig,
    "rm": RewardModelConfig,
    "dpo": PreferenceConfig,
    "ppo": PPOConfig,
    "grpo": GRPOConfig,
    "sample": SampleConfig,
    "label simulate": LabelSimulateConfig,
    "label judge": LabelJudgeConfig,
    "label serve": LabelServeConfig,
    "label tokens": LabelTokensConfig,
    "label stats": LabelStatsConfig,
    "label export": LabelExportConfig,
    "label import": LabelImportConfig,
    "bon": BestOfNConfig,
    "rejection-sample": RejectionSamplingConfig,
    "cost": CostConfig,
    "score": ScoreConfig,
    "eval": EvalConfig,
    "report": ReportConfig,
    "frontier": FrontierConfig,
    "pipeline": PipelineConfig,
    "plan": PlanConfig,
    "quickstart": QuickstartConfig,
}


# --------------------------------------------------------------------------- loading


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "|".join(str(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it (ints widen to float)."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(str, choices))}")
        return value
    if origin in (typing.Union, types.UnionType):
        errors = []
        for option in typing.get_args(tp):
            try:
                return _coerce(value, option, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{key}: {value!r} is not a {_type_name(tp)}")
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"{key}: expected null, got {value!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads `1e-3` (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    if tp is list or origin is list:
        if isinstance(value, list):
            return value
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        raise ConfigError(f"{key}: expected a list, got {value!r}")
    if tp is dict or origin is dict:
        if isinstance(value, dict):
            return value
        raise ConfigError(f"{key}: expected a mapping like {{a: 1}}, got {value!r}")
    return value


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _dotted_keys(cls: type, prefix: str = "") -> list[str]:
    """Every settable key of config class ``cls``, nested ones with dots (``train.max_steps``)."""
    keys = []
    for f in dataclasses.fields(cls):
        tp = _hints(cls)[f.name]
        keys += _dotted_keys(tp, f"{prefix}{f.name}.") if dataclasses.is_dataclass(tp) else [f"{prefix}{f.name}"]
    return keys


def _unknown_key_error(root: type, cls: type, prefix: str, key: str, value: Any) -> ConfigError:
    """'unknown config key' with a hint: a misspelt section ('trian' → 'train'); else the same name in another
    section (SFT's ``max_steps`` → ``train.max_steps``, PPO's ``train.learning_rate`` → ``learning_rate``); else a
    close name at the same level, then anywhere."""
    full = f"{prefix}{key}"
    hints = _hints(cls)
    names = list(hints)
    close = difflib.get_close_matches(str(key), names, n=1)
    if close and isinstance(value, dict) and dataclasses.is_dataclass(hints[close[0]]):
        suggestions = [f"{prefix}{close[0]}"]
    else:
        while isinstance(value, dict) and len(value) == 1:  # name the leaf that was typed: train.learning_rate
            sub, value = next(iter(value.items()))
            full = f"{full}.{sub}"
        leaf = full.rsplit(".", 1)[-1]
        keys = _dotted_keys(root)
        suggestions = [k for k in keys if k.rsplit(".", 1)[-1] == leaf]
        if not suggestions and close and not isinstance(value, dict):
            suggestions = [f"{prefix}{close[0]}"]
        if not suggestions:
            near = set(difflib.get_close_matches(leaf, {k.rsplit(".", 1)[-1] for k in keys}, n=3, cutoff=0.8))
            suggestions = [k for k in keys if k.rsplit(".", 1)[-1] in near]
    quoted = [f"'{k}'" for k in suggestions[:3]]
    either = quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"
    hint = f" (did you mean {either}?)" if quoted else ""
    return ConfigError(f"unknown config key '{full}'{hint}; see --help for the fields")


def from_dict(cls: type, data: dict, prefix: str = "", root: type | None = None) -> Any:
    """Build dataclass ``cls`` from a (nested) mapping, checking keys and types (``root``: the whole config's class,
    searched for a hint when a key is unknown)."""
    root = root or cls
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {data!r}")
    hints = _hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        full = f"{prefix}{key}"
        if key not in names:
            raise _unknown_key_error(root, cls, prefix, key, value)
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = from_dict(tp, value if value is not None else {}, prefix=f"{full}.", root=root)
        else:
            kwargs[key] = _coerce(value, tp, full)
    instance = cls(**kwargs)
    return instance


def to_dict(config: Any) -> dict:
    return dataclasses.asdict(config)


def _deep_merge(base: dict, update: dict) -> dict:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and key != "config_overrides":
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _set_dotted(data: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``'train.learning_rate=3e-4'`` → ``('train.learning_rate', 0.0003)``."""
    if "=" not in text:
        raise ConfigError(f"cannot read '{text}': overrides look like key=value (e.g. train.learning_rate=3e-4)")
    key, raw = text.split("=", 1)
    key = key.strip().lstrip("-").replace("-", "_")
    if not key:
        raise ConfigError(f"cannot read '{text}': empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str):  # YAML 1.1 reads `3e-4` as a string; a user means the number
        try:
            value = float(value)
        except ValueError:
            pass
    return key, value


# A data file given where the config belongs gets a hint naming the field that takes it. Data suffixes are never
# configs; a .json file is one when it holds a mapping of config keys (YAML reads JSON). The fields that take a
# data file, the first one a recipe's config has being the one suggested:
DATA_FILE_SUFFIXES = (".jsonl", ".csv", ".parquet", ".arrow")
DATA_FILE_FIELDS = ("input", "samples", "data.train_file", "prompts_file")
SAVED_DATASET_FILES = ("dataset_info.json", "dataset_dict.json")  # what datasets' save_to_disk writes
DATA_ROW_KEYS = {"prompt", "chosen", "rejected", "messages", "completion", "text", "responses", "ranks", "label"}


def _has_field(cls: type, dotted: str) -> bool:
    for part in dotted.split("."):
        if not dataclasses.is_dataclass(cls) or part not in {f.name for f in dataclasses.fields(cls)}:
            return False
        cls = _hints(cls)[part]
    return True


def _looks_like_data(loaded: Any, cls: type) -> bool:
    """A parsed .json file that is rows of data (a list, or a mapping of row fields), not config keys."""
    if isinstance(loaded, list):
        return True
    if not isinstance(loaded, dict):
        return False
    if any(isinstance(loaded.get(k), list) for k in ("data", "train", "rows", "examples")):
        return True  # {"data": [...]}, as tether.data.io reads it
    keys = {str(k) for k in loaded}
    return bool(keys & DATA_ROW_KEYS) and not any(_has_field(cls, k) for k in keys)


def _override_keys(overrides: list[str]) -> set[str]:
    keys = set()
    for item in overrides:
        try:
            keys.add(parse_override(item)[0])
        except ConfigError:
            pass  # reported when the overrides are applied
    return keys


def _data_file_error(path: Path, cls: type, overrides: list[str], command: str | None,
                     kind: str = "a data file") -> ConfigError:
    """'x.jsonl is a data file, not a config; did you mean `tether rm data.train_file=x.jsonl`?'"""
    field = next((f for f in DATA_FILE_FIELDS if _has_field(cls, f)), None)
    what = f"{path} is {kind}, not a config"
    given = _override_keys(overrides)
    if field is None:
        if not command:
            return ConfigError(f"{what}: give a YAML config file")
        return ConfigError(f"{what}: `tether {command}` takes a YAML config file and key=value overrides "
                           f"(see `tether {command} --help`)")
    if field in given:
        return ConfigError(f"{what} ({field} is already given): leave it out, or give a YAML config file")
    suggestion = shlex.join([*(["tether", *command.split()] if command else []), f"{field}={path}", *overrides])
    return ConfigError(f"{what}; did you mean `{suggestion}`?")


def _config_text(p: Path) -> str:
    """A config file's text: UTF-8, with or without a byte-order mark, or UTF-16 with one (as editors on Windows
    write them; tether.data.io reads data files the same way)."""
    from tether.utils.files import text_codec

    raw = p.read_bytes()
    codec, mark = text_codec(raw)
    try:
        return raw[mark:].decode(codec)
    except UnicodeDecodeError as exc:
        name = "UTF-8" if codec == "utf-8" else "UTF-16"
        raise ConfigError(f"{p}: not valid {name} (byte {exc.start + mark}); re-save the file as UTF-8") from None


def _read_config_file(p: Path, cls: type, overrides: list[str], command: str | None) -> dict:
    """The mapping in a YAML config file; a data file or a saved dataset in its place gets a hint."""
    if p.suffix.lower() in DATA_FILE_SUFFIXES:
        raise _data_file_error(p, cls, overrides, command)
    if p.is_dir():
        if any((p / name).is_file() for name in SAVED_DATASET_FILES):
            raise _data_file_error(p, cls, overrides, command, kind="a saved dataset")
        raise ConfigError(f"{p} is a directory, not a config file; give a YAML file (or only key=value overrides)")
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist")
    try:
        loaded = yaml.safe_load(_config_text(p))
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"{p}: not valid YAML ({first})") from None
    if p.suffix.lower() == ".json" and _looks_like_data(loaded, cls):
        raise _data_file_error(p, cls, overrides, command)
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{p}: the top level must be a mapping of config keys")
    return loaded


def load_config(cls: type, path: str | Path | None = None, overrides: list[str] | None = None,
                command: str | None = None) -> Any:
    """Defaults ← YAML file ← ``key=value`` overrides, validated into ``cls``.

    ``command`` (e.g. ``"rm"``) only words the hint given when ``path`` is a data file.
    """
    data: dict = _read_config_file(Path(path), cls, overrides or [], command) if path else {}
    for item in overrides or []:
        key, value = parse_override(item)
        _set_dotted(data, key, value)
    # Start from the recipe's own defaults so a partial section (``train: {batch_size: 4}``)
    # keeps the recipe-specific defaults of the fields it does not mention.
    config = from_dict(cls, _deep_merge(to_dict(cls()), data))
    validate(config)
    return config


def _check_ranges(config: Any, prefix: str = "") -> None:
    positive = {"batch_size", "eval_batch_size", "grad_accum_steps", "max_length", "max_new_tokens", "num_iterations",
                "rollout_batch_size", "minibatch_size", "ppo_epochs", "prompts_per_iteration", "update_epochs",
                "n", "rounds", "k", "panel_size", "labels_per_item", "pairs_per_prompt",
                "temperature", "kl_horizon", "target_kl",
                "ensemble_size", "calibration_bins", "log_every", "r", "alpha", "keep_checkpoints"}
    non_negative = {"learning_rate", "weight_decay", "max_steps", "eval_every", "save_every", "max_grad_norm",
                    "num_epochs", "center_coef", "ensemble_k", "num_threads", "max_eval_examples",
                    "max_train_examples", "max_prompt_length", "sft_coef", "value_coef", "entropy_coef", "kl_coef",
                    "sft_steps", "rm_steps", "dpo_steps", "eval_examples", "max_prompts",
                    "max_comparisons", "min_new_tokens"}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            _check_ranges(value, prefix=f"{key}.")
        elif f.name in positive and isinstance(value, (int, float)) and value <= 0:
            raise ConfigError(f"{key}: must be > 0, got {value}")
        elif f.name in non_negative and isinstance(value, (int, float)) and value < 0:
            raise ConfigError(f"{key}: must be >= 0, got {value}")
        elif f.name in {"eval_fraction", "warmup_ratio", "dropout", "gold_fraction"} and not 0.0 <= value < 1.0:
            raise ConfigError(f"{key}: must be in [0, 1), got {value}")


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


def validate(config: Any) -> None:
    """Range checks that apply to every recipe config (raise ConfigError)."""
    _check_ranges(config)
    if isinstance(config, LabelSimulateConfig) and config.labels_per_item > config.panel_size:
        raise ConfigError(f"labels_per_item ({config.labels_per_item}) cannot exceed panel_size ({config.panel_size})")
    if isinstance(config, GRPOConfig) and config.group_size < 2:
        raise ConfigError(f"group_size: needs at least 2 samples per prompt for a baseline, got {config.group_size}")
    if isinstance(config, (PPOConfig, GRPOConfig)) and config.min_new_tokens > config.max_new_tokens:
        raise ConfigError(f"min_new_tokens ({config.min_new_tokens}) cannot exceed max_new_tokens "
                          f"({config.max_new_tokens})")
    if isinstance(config, (PPOConfig, GRPOConfig)):
        _validate_roles(config.generation, config.placement)
    if isinstance(config, PreferenceConfig):
        if config.beta is not None and config.beta <= 0:
            raise ConfigError(f"beta: must be > 0, got {config.beta}")
        _validate_simpo_margin(config)
        if not 0.0 <= config.label_smoothing < 0.5:
            raise ConfigError(f"label_smoothing: must be in [0, 0.5), got {config.label_smoothing}")
    if isinstance(config, PipelineConfig) and not 0.0 <= config.rm.min_accuracy <= 1.0:
        raise ConfigError(f"rm.min_accuracy: must be in [0, 1] (a held-out accuracy), got {config.rm.min_accuracy}")
    data = getattr(config, "data", None)
    if data is not None and data.max_prompt_length >= data.max_length:
        raise ConfigError(f"data.max_prompt_length ({data.max_prompt_length}) must be smaller than data.max_length "
                          f"({data.max_length})")
    train = getattr(config, "train", None)
    if train is not None and len(train.adam_betas) != 2:
        raise ConfigError(f"train.adam_betas: expected two numbers, got {train.adam_betas}")


def describe_fields(cls: type, prefix: str = "", instance: Any = None) -> list[tuple[str, str, str, str]]:
    """Rows of (key, type, default, doc) for ``--help``, nested sections flattened with dots.

    Defaults are the recipe's own (e.g. the DPO section's learning rate), not the section class's.
    """
    rows = []
    hints = _hints(cls)
    instance = instance if instance is not None else cls()
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(tp):
            rows.extend(describe_fields(tp, prefix=f"{key}.", instance=getattr(instance, f.name)))
            continue
        default = getattr(instance, f.name)
        rows.append((key, _type_name(tp), yaml.safe_dump(default, default_flow_style=True).strip().removesuffix("\n...").strip(),
                     f.metadata.get("doc", "")))
    return rows


def dump_yaml(config: Any) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False, allow_unicode=True)
