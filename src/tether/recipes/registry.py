"""Every ``tether`` command in one table: its config class, the function that runs it, its help.

The CLI builds its commands from :data:`RECIPES` (``tether --help`` lists the summaries, ``tether <command> --help``
the description, the example and every field of the config); the quickstart and the pipeline run their stages
through it; the docs tests check the docs against it. A new command is a config class, a function taking it, and
one :class:`Recipe` here.

The function is named as ``module:function`` and imported only when the command runs, so that ``tether --help``
does not load torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tether.config import (
    BestOfNConfig,
    CAIReviseConfig,
    CostConfig,
    EvalConfig,
    FrontierConfig,
    GRPOConfig,
    LabelExportConfig,
    LabelImportConfig,
    LabelJudgeConfig,
    LabelServeConfig,
    LabelSimulateConfig,
    LabelStatsConfig,
    LabelTokensConfig,
    PipelineConfig,
    PlanConfig,
    PPOConfig,
    PreferenceConfig,
    QuickstartConfig,
    RejectionSamplingConfig,
    ReportConfig,
    RewardModelConfig,
    SampleConfig,
    ScoreConfig,
    SFTConfig,
)
from tether.utils.imports import import_object


@dataclass(frozen=True)
class Recipe:
    command: str  # the words that name it on the command line ("sft", "label simulate")
    config: type  # its config dataclass
    run: str  # "module:function" taking the config
    summary: str  # one line in `tether --help`: at most 56 characters (click cuts the list at 80 columns)
    description: str  # the first paragraph of `tether <command> --help`
    example: str  # a command line shown in `tether <command> --help`

    def runner(self) -> Callable[[Any], Any]:
        """The function that runs the command (imported now)."""
        return import_object(self.run)


RECIPES: dict[str, Recipe] = {recipe.command: recipe for recipe in (
    Recipe("sft", SFTConfig, "tether.recipes.sft:train_sft",
           "Supervised fine-tuning on demonstrations.",
           "Supervised fine-tuning on demonstrations (prompt/completion, messages or text).",
           "tether sft examples/sft_tiny.yaml train.max_steps=20"),
    Recipe("rm", RewardModelConfig, "tether.recipes.reward_model:train_reward_model",
           "Bradley-Terry reward model with a held-out report.",
           "Train a Bradley-Terry reward model (pairs or rankings), with a held-out report.",
           "tether rm examples/rm_tiny.yaml ensemble_size=3"),
    Recipe("dpo", PreferenceConfig, "tether.recipes.preference:train_preference",
           "DPO family: dpo ipo cdpo robust hinge kto orpo simpo.",
           "Offline preference optimisation: dpo, ipo, cdpo, robust, hinge, kto, orpo, simpo.",
           "tether dpo examples/dpo_tiny.yaml loss=simpo"),
    Recipe("ppo", PPOConfig, "tether.recipes.ppo:train_ppo",
           "PPO under a KL leash, with a reward-hacking alarm.",
           "PPO under a KL leash: reward model or function, value model, adaptive KL, GAE, clipping.",
           "tether ppo examples/ppo_tiny.yaml num_iterations=10"),
    Recipe("grpo", GRPOConfig, "tether.recipes.grpo:train_grpo",
           "Critic-free RL: GRPO, RLOO, REINFORCE++.",
           "Critic-free RL with K samples per prompt: advantage=grpo | dr_grpo | rloo | reinforce_pp | "
           "reinforce_pp_baseline; loss=ppo_clip | dapo | cispo | gspo.",
           "tether grpo examples/grpo_tiny.yaml advantage=rloo"),
    Recipe("bon", BestOfNConfig, "tether.recipes.best_of_n:run_best_of_n",
           "Best-of-N sampling against a reward.",
           "Best-of-N: sample N per prompt, keep the highest-reward response (KL = log N − (N−1)/N).",
           "tether bon examples/bon_tiny.yaml n=8"),
    Recipe("rejection-sample", RejectionSamplingConfig, "tether.recipes.best_of_n:run_rejection_sampling",
           "Sample N, keep the best, fine-tune; repeat.",
           "Rejection-sampling fine-tuning: sample N, keep the best, fine-tune, repeat for R rounds.",
           "tether rejection-sample examples/rejection_tiny.yaml rounds=3"),
    Recipe("sample", SampleConfig, "tether.recipes.label:run_sample",
           "Sample K responses per prompt for labeling.",
           "Sample K responses per prompt into samples.jsonl (for labelling).",
           "tether sample model.name_or_path=runs/tiny/sft data.train_file=examples/data/prompts.jsonl k=4"),
    Recipe("label simulate", LabelSimulateConfig, "tether.recipes.label:run_label_simulate",
           "Label with a simulated annotator panel.",
           "Label samples with a simulated annotator panel that has a known gold utility.",
           "tether label simulate samples=runs/samples.jsonl planted_length_bias=1.0"),
    Recipe("label judge", LabelJudgeConfig, "tether.recipes.label:run_label_judge",
           "Label with an AI judge and a constitution.",
           "Label with an AI judge (local model or OpenAI-compatible endpoint) and a constitution.",
           "tether label judge samples=runs/samples.jsonl judge=embedded max_comparisons=50"),
    Recipe("label serve", LabelServeConfig, "tether.recipes.label:run_label_serve",
           "The web labeling app for human annotators.",
           "The web labeling app: token login, pick the better of two or rank K (mouse or keys), admin page.",
           "tether label serve samples=runs/samples.jsonl annotators=[alice,bob]"),
    Recipe("label tokens", LabelTokensConfig, "tether.recipes.label:run_label_tokens",
           "Rotate annotator or admin tokens of the labeling app.",
           "Rotate annotator (or admin) tokens of the labeling app; the old ones stop working.",
           "tether label tokens db=runs/labels.sqlite rotate=[alice]"),
    Recipe("label stats", LabelStatsConfig, "tether.recipes.label:run_label_stats",
           "Annotator throughput, gold accuracy and agreement.",
           "Annotator throughput, gold-question accuracy, agreement (kappa, alpha), aggregation quality.",
           "tether label stats db=runs/labels.sqlite"),
    Recipe("label export", LabelExportConfig, "tether.recipes.label:run_label_export",
           "Votes → preferences.jsonl, or Label Studio tasks.",
           "Aggregate votes (Dawid-Skene or majority) into preferences.jsonl, or export Label Studio tasks.",
           "tether label export db=runs/labels.sqlite output=runs/preferences.jsonl"),
    Recipe("label import", LabelImportConfig, "tether.recipes.label:run_label_import",
           "Import a Label Studio JSON export into the label store.",
           "Import a Label Studio JSON export into the label store.",
           "tether label import input=label_studio_export.json db=runs/labels.sqlite"),
    Recipe("cai revise", CAIReviseConfig, "tether.recipes.cai:run_cai_revise",
           "Constitutional AI: critique and revise → SFT rows.",
           "Constitutional AI's supervised phase (SL-CAI): respond to each prompt, then critique and revise the "
           "response against principles of a constitution; revisions.jsonl is ready for `tether sft`.",
           "tether cai revise data.train_file=examples/data/prompts.jsonl max_prompts=20 rounds=2"),
    Recipe("cost", CostConfig, "tether.recipes.cost:run_cost",
           "Annotation and accelerator cost estimates.",
           "Estimate annotation and accelerator cost (and cost per point of held-out gain).",
           "tether cost comparisons=50000 labels_per_comparison=3 rl_sequences=100000"),
    Recipe("score", ScoreConfig, "tether.recipes.score:score_file",
           "Score jsonl rows with a reward model (or an ensemble).",
           "Score jsonl rows with a trained reward model (or an ensemble).",
           "tether score model=runs/tiny/rm input=examples/data/preferences_eval.jsonl"),
    Recipe("eval", EvalConfig, "tether.recipes.evaluate:run_eval",
           "Compare policies: gold, KL, win-rate, alignment tax.",
           "Compare policies on held-out prompts: proxy vs gold reward, KL, length, diversity, win-rate, alignment tax.",
           "tether eval models=[runs/q/sft,runs/q/ppo] reward=runs/q/rm data.train_file=prompts.jsonl"),
    Recipe("report", ReportConfig, "tether.eval.report:write_report",
           "Write report.html for a run directory.",
           "Write report.html for a run directory: training curves, held-out alarm, RM, labels, eval, samples.",
           "tether report run_dir=runs/quickstart"),
    Recipe("frontier", FrontierConfig, "tether.recipes.frontier:run_frontier",
           "Reward-vs-KL frontier: PPO at several β, best-of-N.",
           "Reward-vs-KL frontier: PPO at several fixed β and best-of-N at several N, proxy and gold vs KL.",
           "tether frontier ppo.model.name_or_path=runs/q/sft ppo.reward=runs/q/rm prompts_file=prompts.jsonl"),
    Recipe("pipeline", PipelineConfig, "tether.recipes.pipeline:run_pipeline",
           "The whole lifecycle over your own models and data.",
           "The whole lifecycle over your models and data: sft → sample → label → rm → ppo → dpo → eval → report.",
           "tether pipeline examples/pipeline_tiny.yaml rounds=2"),
    Recipe("plan", PlanConfig, "tether.plan:run_plan",
           "Accelerator memory per device for each RLHF role.",
           "Accelerator memory per device for each role (policy, reference, reward, value) under ZeRO, LoRA, offload.",
           "tether plan model=7b gpus=8 algo=ppo zero=3"),
    Recipe("quickstart", QuickstartConfig, "tether.recipes.quickstart:run_quickstart",
           "The whole lifecycle on the embedded SmolLM2 model.",
           "The whole lifecycle on the embedded SmolLM2-135M-Instruct: SFT → sample → simulated panel → "
           "reward model → PPO + DPO → evaluation → report.html.",
           "tether quickstart            (or: tether quickstart --tiny)"),
)}

# `tether label` and `tether cai` are groups of commands; each has its own line in `tether --help`
GROUPS = {"label": "Preference labels: simulate, judge, serve, export.",
          "cai": "Constitutional AI: critique → revision (SL-CAI)."}


def recipe(command: str) -> Recipe:
    """The recipe ``command`` names (KeyError for an unknown one)."""
    return RECIPES[command]
