"""Configs of the commands that run the whole lifecycle: the pipeline over your own models and data
(`tether pipeline`) and the quickstart on the embedded model and a built-in task (`tether quickstart`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from tether.config.evaluation import EvalConfig
from tether.config.feedback import CAIReviseConfig, LabelExportConfig, LabelJudgeConfig, LabelSimulateConfig
from tether.config.fields import NON_NEGATIVE, POSITIVE, ResumeMode, doc_field
from tether.config.online import PPOConfig, SampleConfig
from tether.config.sections import ModelConfig
from tether.config.supervised import PipelineRewardModelConfig, PreferenceConfig, SFTConfig


@dataclass
class PipelineConfig:
    """The whole lifecycle over your own models and data, resumable, in rounds (`tether pipeline config.yaml`).

    Each stage section is that recipe's full config; the pipeline sets the paths between
    stages (run directories, models, data files), so only set what the stage should do.
    The stages cai (SL-CAI), cost_label and cost_rm (a second, harmlessness objective, for constrained PPO) run
    when listed in stages (examples/pipeline_harmless.yaml; docs/pipeline.md).
    """

    run_dir: str = doc_field("runs/pipeline", "Run directory; with rounds > 1 each round writes to round-<r>/.")
    model: ModelConfig = doc_field(ModelConfig(precision="auto"),
                                   "The pretrained model SFT starts from; its precision (default auto) is every "
                                   "stage's.")
    task: str = doc_field("", "A built-in task (helpful, sentiment, arithmetic, harmless) filling every data file, "
                              "gold and utility left empty/default, as tether quickstart uses them (empty = your own "
                              "files).")
    rounds: int = doc_field(1, "Iterative RLHF: each round re-samples from the current policy, relabels, continues "
                               "the reward model on all preferences so far and continues the policy.", bounds=POSITIVE)
    stages: list = doc_field(["sft", "sample", "label", "rm", "ppo", "dpo", "eval", "report"],
                             "Stages to run, in the pipeline's order (drop one to skip it); also cai (SL-CAI after "
                             "sft), cost_label and cost_rm (a harmlessness objective: constrained PPO) when listed.")
    sft_model: str = doc_field("", "Bring your own SFT model directory (skips sft).")
    preferences: str = doc_field("", "Bring your own preferences / rankings file (skips sample and label in round 1).")
    reward: str = doc_field("", "Bring your own reward: a reward model directory or module:function (skips rm).")
    extra_preferences: str = doc_field("", "Pairs appended to the labelled preferences for rm and dpo (e.g. a "
                                           "curated set), and for cost_rm those of them cost_label.utility orders; "
                                           "empty = none.")
    cost_preferences: str = doc_field("", "Bring your own harmlessness preferences (chosen = the safer; skips "
                                          "cost_label in round 1).")
    cost_weight: float = doc_field(
        0.0, "With cost_rm: 0 = constrained PPO (ppo.cost = -1 x the harmless score, held under ppo.cost_limit); "
             "w > 0 = the weighted-sum comparison: reward + w x the harmless score, the cost only logged (lambda 0).",
        bounds=NON_NEGATIVE)
    cost_labeler: Literal["panel", "judge"] = doc_field(
        "panel", "Who labels the harmlessness preferences: panel (the simulated panel, cost_label) or judge (the AI "
                 "judge with a constitution, cost_judge: RL-CAI).")
    resume: ResumeMode | bool = doc_field(
        "auto", "auto: skip finished stages whose settings are unchanged, stop and list what differs at one whose "
                "are not; never: move run_dir aside and start afresh; force: skip finished stages even if changed.")
    sft: SFTConfig = doc_field(SFTConfig(), "SFT stage (set data.train_file to your demonstrations).")
    cai: CAIReviseConfig = doc_field(CAIReviseConfig(), "SL-CAI's revisions by the SFT model (stage cai; "
                                                        "data.train_file empty = the sampling / PPO prompts).")
    cai_sft: SFTConfig = doc_field(SFTConfig(), "SFT of the SFT model on the revisions (stage cai); the result is "
                                                "the model every later stage starts from.")
    sample: SampleConfig = doc_field(SampleConfig(), "Sampling K responses per prompt for labelling "
                                                     "(data.train_file empty = ppo.data.train_file).")
    label: LabelSimulateConfig = doc_field(LabelSimulateConfig(), "Labelling by the simulated panel (utility = your "
                                                                  "gold utility, module:function(prompt, response)).")
    export: LabelExportConfig = doc_field(LabelExportConfig(), "Aggregating labels into preferences.")
    cost_label: LabelSimulateConfig = doc_field(
        LabelSimulateConfig(), "Harmlessness labels by the simulated panel on the same samples (stage cost_label; "
                               "utility = higher is safer, e.g. tether.tasks.harmless:harmless_utility).")
    cost_judge: LabelJudgeConfig = doc_field(LabelJudgeConfig(), "The AI judge of cost_labeler=judge (constitution: "
                                                                 "harmlessness principles, one per line).")
    rm: PipelineRewardModelConfig = doc_field(PipelineRewardModelConfig(),
                                              "Reward model stage; rm.min_accuracy is the gate before RL.")
    cost_rm: PipelineRewardModelConfig = doc_field(PipelineRewardModelConfig(),
                                                   "Harmless reward model on the cost labels (stage cost_rm); "
                                                   "cost_rm.min_accuracy gates it too.")
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

    RENAMED = {"init_kl_coef": "kl_coef"}  # old key → new key (read, with a note)

    run_dir: str = doc_field("runs/quickstart", "Run directory for all stages.")
    task: str = doc_field("sentiment", "Built-in task (tether.tasks.registry): sentiment (continue a neutral review, "
                                       "gold = VADER), helpful (everyday questions, gold = cues of a helpful answer) "
                                       "or harmless (+ safety metrics; the constrained lifecycle: "
                                       "examples/pipeline_harmless.yaml).")
    seed: int = doc_field(0, "Seed of every stage: training order and initialisation, sampling, the panel, evaluation.")
    tiny: bool = doc_field(False, "Use a tiny random model instead of SmolLM2 (a smoke test in a few minutes).")
    sft_steps: int = doc_field(12, "SFT optimizer steps.", bounds=NON_NEGATIVE)
    sample_prompts: int = doc_field(64, "Training prompts sampled for labelling.")
    k: int = doc_field(4, "Responses sampled per prompt.", bounds=POSITIVE)
    pairs_per_prompt: int = doc_field(3, "Comparisons the panel labels per prompt (from the K responses).", bounds=POSITIVE)
    labels_per_item: int = doc_field(3, "Simulated annotators per comparison.", bounds=POSITIVE)
    planted_length_bias: float = doc_field(0.0, "The panel's planted bias for longer answers (utility per 100 chars).")
    shipped_pairs: bool = doc_field(True, "Train RM and DPO on the panel's preferences plus the task's shipped pairs "
                                          "(false: the panel's labels alone, biases and all).")
    rm_steps: int = doc_field(160, "Reward-model optimizer steps (4 pairs each; 160 is about one pass over the "
                                   "sentiment task's panel and shipped pairs).", bounds=NON_NEGATIVE)
    ppo_iterations: int = doc_field(16, "PPO iterations.")
    ppo_batch: int = doc_field(16, "Prompts per PPO iteration (one update epoch in two minibatches).")
    ppo_epochs: int = doc_field(2, "PPO update epochs over each iteration's rollouts (two minibatches each).", bounds=POSITIVE)
    ppo_learning_rate: float = doc_field(1.5e-5, "PPO policy learning rate.")
    kl_coef: float = doc_field(0.1, "PPO's initial β (adaptive toward target_kl; was init_kl_coef).")
    target_kl: float = doc_field(3.0, "PPO's target KL per response (nats).", bounds=POSITIVE)
    missing_eos_penalty: float = doc_field(1.0, "Subtracted from PPO's score of an answer cut off at max_new_tokens "
                                                "(no EOS).", bounds=NON_NEGATIVE)
    dpo_steps: int = doc_field(24, "DPO optimizer steps.", bounds=NON_NEGATIVE)
    max_new_tokens: int | None = doc_field(None, "Longest sampled response (empty = the task's: 40 helpful, 24 "
                                                 "sentiment).", bounds=POSITIVE)
    temperature: float = doc_field(0.7, "Sampling temperature for labelling samples and PPO's rollouts (log-probs "
                                                "are computed at the same temperature).", bounds=POSITIVE)
    eval_temperature: float = doc_field(0.7, "Sampling temperature of the final evaluation (KL at the same "
                                                     "temperature).")
    heldout_prompts: int = doc_field(32, "Held-out prompts for the gold evaluation during PPO.")
    heldout_every: int = doc_field(8, "PPO iterations between held-out evaluations.")
    eval_prompts: int = doc_field(0, "Test prompts for the final evaluation (0 = all: 120 helpful, 160 sentiment).")
    batch_size: int = doc_field(8, "Micro-batch size for SFT (pairs for RM/DPO use half).", bounds=POSITIVE)
    precision: Literal["fp32", "bf16-mixed", "bf16", "auto"] = doc_field(
        "fp32", "Numeric precision of every stage (model.precision). fp32 by default: the recorded numbers, on any "
                "machine. auto picks bf16-mixed where this machine computes bf16 faster (measured at the start): "
                "on a CPU with AMX 9.0 min instead of 11.2, but in every bf16-mixed run measured PPO moved less at "
                "these settings and missed the win-rate check (docs/results.md).")
    max_length: int = doc_field(192, "Maximum tokens per sequence.", bounds=POSITIVE)
    eval_examples: int = doc_field(48, "Held-out pairs for the reward-model report.", bounds=NON_NEGATIVE)
    num_threads: int = doc_field(0, "torch CPU threads (0 = default).", bounds=NON_NEGATIVE)
    resume: Literal["auto", "never"] = doc_field(
        "auto", "auto: stop, listing what differs, if run_dir holds a quickstart made with other settings (or another "
                "model); never: move run_dir aside and start afresh.")
