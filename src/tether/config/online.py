"""Configs of the recipes that sample from the policy: PPO (`tether ppo`), GRPO / RLOO / REINFORCE++
(`tether grpo`), best-of-N (`tether bon`), rejection sampling (`tether rejection-sample`) and sampling responses for
labelling (`tether sample`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from tether.config.fields import ABOVE_ONE, NON_NEGATIVE, POSITIVE, RESUME_DOC, ResumeMode, doc_field
from tether.config.sections import (
    DataConfig,
    GenerationBackendConfig,
    HeldOutConfig,
    ModelConfig,
    PlacementConfig,
    SamplingFields,
    TrainConfig,
    ensemble_k_field,
    reward_field,
    sampling_field,
)

LOSS_DOC = ("Policy loss by name (tether.algos.losses.ppo.POLICY_LOSSES): ppo_clip (PPO's clipped surrogate), dapo "
            "(clip-higher, ε_high 0.28, token mean; Yu et al. 2025), cispo (clipped stop-gradient importance weight on "
            "a REINFORCE term; MiniMax-M1 2025), gspo (one length-normalised ratio per response, clipped per response; "
            "tether grpo only; Zheng et al. 2025: set clip_range=3e-4 clip_range_high=4e-4), gmpo (the geometric mean "
            "of token ratios clipped in log space; tether grpo only; Zhao et al. 2025: set clip_range=0.4), sapo (a "
            "soft sigmoid gate instead of a clip, sapo_tau_pos / sapo_tau_neg; Gao et al. 2025).")
MismatchMode = Literal["none", "token_truncate", "token_mask", "sequence_truncate", "sequence_mask"]
MISMATCH_DOC = ("Correct for the sampler's log-probs differing from the trainer's (vLLM, bf16 sampling), when the sampler "
                "reports them: token_truncate (TIS: weight min(ρ, C)), sequence_truncate (one weight per response), "
                "token_mask / sequence_mask (MIS: drop tokens / responses with ρ outside [1/C, C]); ρ = π_old/π_sampler "
                "(Yao et al. 2025; Liu et al. 2025). rollout/mismatch_kl is logged whenever the sampler reports "
                "log-probs.")
MISMATCH_THRESHOLD_DOC = "C of the mismatch correction: the largest importance weight kept (> 1)."
CLIP_HIGH_DOC = ("Upper clip ε_high of the ratio (empty = the loss's usual: 0.28 for dapo, else clip_range, which is "
                 "then ε_low).")


# The constraint's fields (Safe RLHF; docs/ppo.md, Constrained PPO), the same in PPO's and GRPO's configs.
def cost_field():
    return doc_field(
        "", "Constrained RL (Safe RLHF, Dai et al. 2023): a cost (harm) source whose mean per response is held under "
            "cost_limit by a Lagrange multiplier; the same specs as reward (a cost model directory, an ensemble: its "
            "members' plain mean, module:function, a weighted sum); empty = no constraint.")


def cost_limit_field():
    return doc_field(
        0.0, "d: the bound on the expected cost per response, E[cost] <= d (Safe RLHF's 0: the safe/unsafe boundary "
             "of its cost model; for a 0/1 cost, the share of harmful responses allowed). Needs cost.")


def lagrange_init_field():
    return doc_field(1.0, "λ₀: the Lagrange multiplier at the start (Safe RLHF's 1). Needs cost.", bounds=NON_NEGATIVE)


def lagrange_lr_field():
    return doc_field(
        0.1, "η of the dual step after each iteration, λ ← clip(λ + η·(mean cost − cost_limit), 0, lagrange_max), on λ "
             "itself, not log λ (0 = a fixed λ; Safe RLHF's 0.1). Needs cost.", bounds=NON_NEGATIVE)


def lagrange_max_field():
    return doc_field(
        None, "Cap on λ (empty = none; Safe RLHF's script uses 5): the reward keeps at least 1/(1 + cap) of the "
              "score's weight. Needs cost.", bounds=POSITIVE)


def sapo_tau_pos_field():
    return doc_field(1.0, "loss=sapo: τ of the soft gate (4/τ)·σ(τ(ρ − 1)) on positive-advantage tokens (the paper's 1.0; "
                          "larger: the gate closes sooner off-policy).", bounds=POSITIVE)


def sapo_tau_neg_field():
    return doc_field(1.05, "loss=sapo: τ of the gate on the other tokens (the paper's 1.05).", bounds=POSITIVE)


@dataclass
class OnlineRunFields:
    """The fields every online-RL config ends with (PPO's and GRPO's): where and how the roles run, the seed,
    checkpoints and resume, threads, the held-out monitor and the metric sinks. A config composes them by deriving
    from this class after its own fields' class, so they stay last in ``--help`` and ``--print-config``."""

    row_seeded_sampling: bool = doc_field(
        False, "Sample each response from its own seeded stream, so samples do not depend on the batch or the "
               "number of processes (always on in a data-parallel run).")
    generation: GenerationBackendConfig = doc_field(GenerationBackendConfig(), "Sampling engine (transformers or vLLM).")
    placement: PlacementConfig = doc_field(PlacementConfig(), "Where the roles run (in process, or Ray actors).")
    seed: int = doc_field(42, "Seed for prompt order, sampling and initialisation.")
    task: str = doc_field(
        "", "A built-in task (tether.tasks.registry: arithmetic, sentiment, helpful) filling what is left empty: the "
            "prompts, the chat format, the reward where the task has one to train on (arithmetic: verify:math), the "
            "held-out gold and prompts, max_new_tokens where at its default.")
    save_every: int = doc_field(0, "Checkpoint every N iterations (0 = only at the end).", bounds=NON_NEGATIVE)
    resume: ResumeMode | bool = doc_field("auto", RESUME_DOC)
    num_threads: int = doc_field(0, "torch CPU threads (0 = torch's default).", bounds=NON_NEGATIVE)
    heldout: HeldOutConfig = doc_field(HeldOutConfig(), "Held-out gold evaluation and the reward-hacking alarm.")
    report_to: list = doc_field(["tensorboard"], "Extra metric sinks: tensorboard, wandb, mlflow.")


@dataclass
class _PPOFields:
    run_dir: str = doc_field("runs/ppo", "Run directory; the policy is written to <run_dir>/<name>/.")
    name: str = doc_field("ppo", "Stage name: output subdirectory, metric prefix and checkpoint folder.")
    model: ModelConfig = doc_field(ModelConfig(), "Policy to train (usually the SFT model); also the reference.")
    ref_model: str | None = doc_field(None, "Reference model; empty = a frozen copy of the starting policy "
                                            "(with LoRA: the base with adapters disabled, no copy).")
    reward: str = reward_field()
    ensemble_k: float | None = ensemble_k_field()
    cost: str = cost_field()
    cost_limit: float = cost_limit_field()
    lagrange_init: float = lagrange_init_field()
    lagrange_lr: float = lagrange_lr_field()
    lagrange_max: float | None = lagrange_max_field()
    value_model: str | None = doc_field(None, "Value model init; empty = the reward model directory (an ensemble: its "
                                              "first member; a function reward: the policy).")
    data: DataConfig = doc_field(DataConfig(max_length=512), "Prompts (any format with a prompt).")
    num_iterations: int = doc_field(20, "Rollout + update iterations.", bounds=POSITIVE)
    rollout_batch_size: int = doc_field(16, "Prompts sampled per iteration.", bounds=POSITIVE)
    minibatch_size: int = doc_field(8, "Responses per gradient step in an update epoch.", bounds=POSITIVE)
    ppo_epochs: int = doc_field(2, "Passes over each rollout batch.", bounds=POSITIVE)
    learning_rate: float = doc_field(1e-6, "Policy learning rate.", bounds=NON_NEGATIVE)
    value_learning_rate: float = doc_field(1e-5, "Value model learning rate.")
    clip_range: float = doc_field(0.2, "Policy ratio clip ε.")
    clip_range_high: float | None = doc_field(None, CLIP_HIGH_DOC, bounds=NON_NEGATIVE)
    loss: str = doc_field("ppo_clip", LOSS_DOC)
    sapo_tau_pos: float = sapo_tau_pos_field()
    sapo_tau_neg: float = sapo_tau_neg_field()
    mismatch_correction: MismatchMode = doc_field("none", MISMATCH_DOC)
    mismatch_threshold: float = doc_field(2.0, MISMATCH_THRESHOLD_DOC, bounds=ABOVE_ONE)
    value_clip_range: float = doc_field(0.2, "Value clip around the old values.")
    dual_clip: float | None = doc_field(None, "Dual-clip constant c > 1 (None = off).")
    value_coef: float = doc_field(0.1, "Weight of the value loss.", bounds=NON_NEGATIVE)
    entropy_coef: float = doc_field(0.0, "Entropy bonus weight.", bounds=NON_NEGATIVE)
    gamma: float = doc_field(1.0, "Discount.")
    lam: float = doc_field(0.95, "GAE λ.")
    kl_coef: float = doc_field(0.05, "β: weight of the per-token KL penalty −β·KL_t (with adaptive_kl, its starting "
                                     "value; was init_kl_coef).")
    adaptive_kl: bool = doc_field(True, "Adapt β toward target_kl (Ziegler et al. 2019); false = fixed β.")
    target_kl: float = doc_field(6.0, "Target KL per response (nats) for the adaptive controller.", bounds=POSITIVE)
    kl_horizon: int = doc_field(10000, "Adaptive controller horizon (samples).", bounds=POSITIVE)
    kl_estimator: Literal["k1", "k2", "k3"] = doc_field("k1", "Per-token KL estimator in the reward penalty.")
    kl_limit: float = doc_field(20.0, "Stop the run when the mean KL per response exceeds this (nats).")
    missing_eos_penalty: float = doc_field(1.0, "Subtracted from the score of a response that ends without EOS.")
    normalize_scores: bool = doc_field(True, "Normalise scores with running mean/std before the KL penalty.")
    score_clip: float = doc_field(5.0, "Clip (normalised) scores to ±this (0 = off).")
    whiten_advantages: bool = doc_field(True, "Whiten advantages over the batch's response tokens.")
    approx_kl_stop: float = doc_field(0.0, "End the whole update (this epoch and the rest) before the step of the first "
                                      "minibatch whose approx KL(π_old‖π) exceeds this, as Stable-Baselines3's "
                                      "target_kl does (0 = off).")
    max_grad_norm: float = doc_field(1.0, "Clip each model's gradient norm.", bounds=NON_NEGATIVE)


@dataclass
class PPOConfig(OnlineRunFields, SamplingFields, _PPOFields):
    """PPO under a KL leash to the frozen reference (`tether ppo`)."""

    RENAMED = {"init_kl_coef": "kl_coef"}  # old key → new key (read, with a note)


@dataclass
class _GRPOFields:

    run_dir: str = doc_field("runs/grpo", "Run directory; the policy is written to <run_dir>/<name>/.")
    name: str = doc_field("grpo", "Stage name: output subdirectory, metric prefix and checkpoint folder.")
    advantage: str = doc_field(
        "grpo", "Advantage estimator by name (tether.algos.advantages.ADVANTAGE_ESTIMATORS): group mean/std (grpo), "
                "group mean alone (dr_grpo), leave-one-out (rloo), global batch whitening (reinforce_pp), group mean then "
                "global whitening (reinforce_pp_baseline).")
    model: ModelConfig = doc_field(ModelConfig(), "Policy to train (usually the SFT model); also the reference.")
    ref_model: str | None = doc_field(None, "Reference model; empty = a frozen copy of the starting policy "
                                            "(with LoRA: the base with adapters disabled).")
    reward: str = reward_field()
    ensemble_k: float | None = ensemble_k_field()
    cost: str = cost_field()
    cost_limit: float = cost_limit_field()
    lagrange_init: float = lagrange_init_field()
    lagrange_lr: float = lagrange_lr_field()
    lagrange_max: float | None = lagrange_max_field()
    data: DataConfig = doc_field(DataConfig(max_length=512), "Prompts (any format with a prompt).")
    group_size: int = doc_field(4, "K: responses sampled per prompt.")
    prompts_per_iteration: int = doc_field(4, "Prompts per iteration (batch = prompts x K responses).", bounds=POSITIVE)
    num_iterations: int = doc_field(20, "Rollout + update iterations.", bounds=POSITIVE)
    minibatch_size: int = doc_field(8, "Responses per gradient step.", bounds=POSITIVE)
    update_epochs: int = doc_field(
        1, "Passes over each rollout batch (1 = on-policy; >1 uses the clipped ratio).", bounds=POSITIVE)
    learning_rate: float = doc_field(1e-6, "Policy learning rate.", bounds=NON_NEGATIVE)
    clip_range: float = doc_field(0.2, "Policy ratio clip ε.")
    clip_range_high: float | None = doc_field(None, CLIP_HIGH_DOC, bounds=NON_NEGATIVE)
    loss: str = doc_field("ppo_clip", LOSS_DOC)
    sapo_tau_pos: float = sapo_tau_pos_field()
    sapo_tau_neg: float = sapo_tau_neg_field()
    mismatch_correction: MismatchMode = doc_field("none", MISMATCH_DOC)
    mismatch_threshold: float = doc_field(2.0, MISMATCH_THRESHOLD_DOC, bounds=ABOVE_ONE)
    kl_coef: float = doc_field(0.04, "β of the KL term (0 = no leash).", bounds=NON_NEGATIVE)
    kl_in_reward: bool = doc_field(
        False, "KL as a per-token reward penalty (k1) instead of a k3 loss term (GRPO's choice); reinforce_pp always "
               "puts it in the reward.")
    scale_by_std: bool = doc_field(True, "grpo: divide by the group std; false = Dr. GRPO (no difficulty bias).")
    loss_aggregation: Literal["token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"] = doc_field(
        "token_mean", "How token losses are averaged; seq_mean_token_mean (original GRPO) has a length bias.")
    missing_eos_penalty: float = doc_field(0.0, "Subtracted from the score of a response that ends without EOS.")
    overlong_buffer: int = doc_field(
        0, "DAPO's soft overlong penalty: over the last this many tokens of max_new_tokens the score falls linearly, "
           "to −overlong_penalty at the budget (0 = off; Yu et al. 2025 used 4096 of 20480).", bounds=NON_NEGATIVE)
    overlong_penalty: float = doc_field(1.0, "The soft overlong penalty at the budget (its largest).", bounds=NON_NEGATIVE)
    mask_truncated: bool = doc_field(
        False, "Leave responses cut at max_new_tokens out of the policy loss (DAPO's overlong filtering): their "
               "tokens neither count nor weigh in its mean; their scores still shape the group's advantages.")
    dynamic_sampling: bool = doc_field(
        False, "DAPO's dynamic sampling: groups whose K rewards are all equal (no advantage, no gradient) are "
               "dropped and more prompts sampled until prompts_per_iteration groups remain, at most "
               "dynamic_sampling_max_rounds extra rounds (then the iteration trains on the groups it has).")
    dynamic_sampling_max_rounds: int = doc_field(4, "Extra sampling rounds an iteration may take to fill its batch.",
                                                 bounds=NON_NEGATIVE)
    kl_limit: float = doc_field(20.0, "Stop the run when the mean KL per response exceeds this (nats).")
    max_grad_norm: float = doc_field(1.0, "Clip the gradient norm.", bounds=NON_NEGATIVE)


@dataclass
class GRPOConfig(OnlineRunFields, SamplingFields, _GRPOFields):
    """Critic-free policy optimisation with K samples per prompt: GRPO, RLOO, REINFORCE++ (`tether grpo`)."""


@dataclass
class _BestOfNFields:

    model: ModelConfig = doc_field(ModelConfig(), "Policy to sample from.")
    reward: str = reward_field()
    ensemble_k: float | None = ensemble_k_field()
    data: DataConfig = doc_field(DataConfig(max_length=512), "Prompts (any format with a prompt).")
    output: str = doc_field("runs/bon/best_of_n.jsonl", "Where to write prompt / best response / scores rows.")
    n: int = doc_field(4, "Samples per prompt.", bounds=POSITIVE)
    batch_size: int = doc_field(8, "Prompts per generation batch (each sampled n times).", bounds=POSITIVE)
    max_prompts: int = doc_field(0, "Use at most this many prompts (0 = all).", bounds=NON_NEGATIVE)
    seed: int = doc_field(42, "Sampling seed.")
    num_threads: int = doc_field(0, "torch CPU threads (0 = torch's default).", bounds=NON_NEGATIVE)


@dataclass
class BestOfNConfig(SamplingFields, _BestOfNFields):
    """Best-of-N sampling against a reward (`tether bon`)."""


@dataclass
class _RejectionSamplingFields:

    run_dir: str = doc_field("runs/rejection", "Run directory: round-<r>/ holds each round's data and model.")
    model: ModelConfig = doc_field(ModelConfig(), "Policy to start from (usually the SFT model).")
    reward: str = reward_field()
    ensemble_k: float | None = ensemble_k_field()
    data: DataConfig = doc_field(DataConfig(max_length=512), "Prompts (any format with a prompt).")
    rounds: int = doc_field(2, "Sample → keep the best → fine-tune, this many times.", bounds=POSITIVE)
    n: int = doc_field(4, "Samples per prompt.", bounds=POSITIVE)
    threshold: float | None = doc_field(None, "Keep a prompt's best response only if its score is at least this.")
    batch_size: int = doc_field(8, "Prompts per generation batch (each sampled n times).", bounds=POSITIVE)
    max_prompts: int = doc_field(0, "Prompts per round (0 = all).", bounds=NON_NEGATIVE)
    train: TrainConfig = doc_field(TrainConfig(learning_rate=1e-5, num_epochs=1.0), "Fine-tuning on each round's best.")
    seed: int = doc_field(42, "Sampling seed.")


@dataclass
class RejectionSamplingConfig(SamplingFields, _RejectionSamplingFields):
    """Rejection-sampling fine-tuning, Llama 2 style (`tether rejection-sample`)."""


@dataclass
class _SampleFields:

    model: ModelConfig = doc_field(ModelConfig(), "Policy to sample from (usually the SFT model).")
    data: DataConfig = doc_field(DataConfig(max_length=512), "Prompts (any format with a prompt).")
    output: str = doc_field("runs/samples.jsonl", "Where to write prompt / responses / generation rows.")
    k: int = doc_field(4, "Responses per prompt.", bounds=POSITIVE)
    batch_size: int = doc_field(8, "Prompts per generation batch (each sampled k times).", bounds=POSITIVE)
    max_prompts: int = doc_field(0, "Use at most this many prompts (0 = all).", bounds=NON_NEGATIVE)
    seed: int = doc_field(42, "Sampling seed.")


@dataclass
class SampleConfig(SamplingFields, _SampleFields):
    """Sample K responses per prompt for labelling (`tether sample`)."""

    max_new_tokens: int = sampling_field("max_new_tokens", 64)
    temperature: float = sampling_field("temperature", 0.9)
