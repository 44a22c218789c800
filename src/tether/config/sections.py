"""The reusable sections of the recipe configs: the model (and its LoRA adapters), the data, the optimisation, the
held-out evaluation during RL, the sampling settings, the sampling engine and the placement of the RL roles."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from tether.config.fields import FRACTION, NON_NEGATIVE, POSITIVE, RESUME_DOC, ResumeMode, doc_field


@dataclass
class LoraConfig:
    """Low-rank adapters (peft). Off by default: on CPU full fine-tuning of a 135M model is about as fast."""

    enabled: bool = doc_field(False, "Train LoRA adapters instead of all weights.")
    r: int = doc_field(16, "Adapter rank.", bounds=POSITIVE)
    alpha: int = doc_field(32, "LoRA alpha (scaling = alpha / r).", bounds=POSITIVE)
    dropout: float = doc_field(0.05, "Dropout on the adapter input.", bounds=FRACTION)
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
    eval_fraction: float = doc_field(
        0.1, "Fraction of training rows held out when eval_file is not given (0 = none).", bounds=FRACTION)
    max_eval_examples: int = doc_field(0, "Evaluate on at most this many held-out examples (0 = all).", bounds=NON_NEGATIVE)
    max_length: int = doc_field(512, "Maximum tokens of prompt + response.", bounds=POSITIVE)
    max_prompt_length: int = doc_field(
        0, "When a row is too long, its prompt is cut from the left to this many tokens (0 = half of max_length).",
        bounds=NON_NEGATIVE)
    chat_template: Literal["auto", "always", "never"] = doc_field(
        "auto", "auto: use the tokenizer's chat template when it has one; never: concatenate text and append EOS.")
    overlong: Literal["truncate", "skip", "error"] = doc_field(
        "truncate", "Rows over max_length: truncate (counted and reported), skip (counted) or error (exit 2).")
    max_train_examples: int = doc_field(
        0, "Use at most this many training examples (0 = all); the rest are counted.", bounds=NON_NEGATIVE)


def prompt_budget(data: "DataConfig") -> int:
    """The effective max_prompt_length (0 means half of max_length)."""
    return data.max_prompt_length or data.max_length // 2


@dataclass
class TrainConfig:
    """Optimisation, schedule, logging and checkpointing."""

    learning_rate: float = doc_field(2e-5, "Peak learning rate (AdamW).", bounds=NON_NEGATIVE)
    weight_decay: float = doc_field(0.0, "AdamW weight decay (not applied to biases and norms).", bounds=NON_NEGATIVE)
    adam_betas: list = doc_field([0.9, 0.999], "AdamW betas.")
    lr_scheduler: Literal["cosine", "linear", "constant"] = doc_field("cosine", "Decay after warmup.")
    warmup_ratio: float = doc_field(0.1, "Fraction of optimizer steps spent warming up linearly from 0.", bounds=FRACTION)
    num_epochs: float = doc_field(1.0, "Passes over the training data (may be fractional).", bounds=NON_NEGATIVE)
    max_steps: int = doc_field(0, "Stop after this many optimizer steps (0 = use num_epochs).", bounds=NON_NEGATIVE)
    batch_size: int = doc_field(8, "Examples (or pairs) per micro-batch.", bounds=POSITIVE)
    grad_accum_steps: int = doc_field(
        1, "Micro-batches per optimizer step (effective batch = batch_size x this).", bounds=POSITIVE)
    eval_batch_size: int = doc_field(8, "Examples (or pairs) per evaluation batch.", bounds=POSITIVE)
    max_grad_norm: float = doc_field(1.0, "Clip the global gradient norm to this (0 = no clipping).", bounds=NON_NEGATIVE)
    seed: int = doc_field(42, "Seed for data order, initialisation and dropout.")
    log_every: int = doc_field(1, "Log metrics every N optimizer steps.", bounds=POSITIVE)
    eval_every: int = doc_field(0, "Evaluate every N optimizer steps (0 = only at the end).", bounds=NON_NEGATIVE)
    save_every: int = doc_field(
        0, "Write a resumable checkpoint every N optimizer steps (0 = only at the end).", bounds=NON_NEGATIVE)
    keep_checkpoints: int = doc_field(2, "Keep the newest N checkpoints.", bounds=POSITIVE)
    save_final_checkpoint: bool = doc_field(
        True, "Also checkpoint the finished run (optimizer included), so re-running it resumes instead of retraining.")
    resume: ResumeMode | bool = doc_field("auto", RESUME_DOC)
    num_threads: int = doc_field(0, "torch CPU threads (0 = torch's default).", bounds=NON_NEGATIVE)
    report_to: list = doc_field(["tensorboard"], "Extra metric sinks: tensorboard, wandb, mlflow (metrics.jsonl always).")


@dataclass
class HeldOutConfig:
    """Held-out evaluation during RL and the reward-hacking alarm (off unless ``gold`` is set)."""

    gold: str = doc_field("", "Gold / held-out reward, module:function(prompts, responses) → scores (e.g. "
                              "tether.tasks.helpful:gold_reward) or verify:<checker> (empty = no held-out "
                              "evaluation).")
    prompts_file: str = doc_field("", "Held-out prompts (any format with a prompt); empty = data.eval_file.")
    max_prompts: int = doc_field(32, "Held-out prompts evaluated each time (the same ones every time).", bounds=NON_NEGATIVE)
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
    num_threads: int = doc_field(0, "torch CPU threads inside each actor (0 = its num_cpus).", bounds=NON_NEGATIVE)


@dataclass
class SamplingFields:
    """The sampling settings of every recipe that samples from a policy (PPO, GRPO, best-of-N, rejection sampling,
    sampling for labelling), declared once. A config composes them by deriving from this class (flat keys:
    ``max_new_tokens=64``, as every config has always read them); :func:`sampling_field` gives one of them another
    default in a config that needs it. ``tether.rollout.sampling.generation_of`` turns them into a
    ``GenerationConfig``."""

    max_new_tokens: int = doc_field(48, "Longest response sampled.", bounds=POSITIVE)
    temperature: float = doc_field(
        1.0, "Sampling temperature (log-probs and KL are computed at the same temperature).", bounds=POSITIVE)
    top_p: float = doc_field(1.0, "Nucleus sampling; in RL keep 1.0, so the ratio and the KL are taken under the "
                                  "distribution that sampled the tokens.")
    min_new_tokens: int = doc_field(
        0, "Suppress EOS until this many tokens (0 = off). Fixes response lengths for benchmarks; the responses are "
           "then sampled from a truncated distribution, so keep 0 for training.", bounds=NON_NEGATIVE)


def sampling_field(name: str, default: Any) -> Any:
    """:class:`SamplingFields`' field ``name`` (its doc and bounds) with another ``default``."""
    spec = SamplingFields.__dataclass_fields__[name]
    return dataclasses.field(default=default, metadata=spec.metadata)


def reward_field() -> Any:
    """The ``reward`` field of every config that scores samples against a reward."""
    return doc_field("", "Reward: a reward model directory (or comma-separated ensemble), verify:<checker> "
                         "(math, code, format) or module:function; weighted: \"0.8*verify:math + 0.2*verify:format\".")


def ensemble_k_field() -> Any:
    """The ``ensemble_k`` field that goes with :func:`reward_field`."""
    return doc_field(
        None, "For an ensemble reward: score = mean − k·std of its members, so answers they disagree on score lower "
              "(against reward hacking); empty = the k stored in the ensemble's ensemble.json, 0 = the plain mean.",
        bounds=NON_NEGATIVE)
