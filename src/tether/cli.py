"""The ``tether`` command line: one thin sub-command per recipe.

Every recipe command takes an optional YAML config file and ``key=value`` overrides::

    tether sft examples/sft_tiny.yaml train.max_steps=20
    tether rm  examples/rm_tiny.yaml model.name_or_path=runs/tiny/sft
    tether dpo examples/dpo_tiny.yaml loss=ipo beta=0.5
    tether score model=runs/tiny/rm input=examples/data/preferences_eval.jsonl
    tether quickstart            # SFT → reward model → DPO on the embedded SmolLM2

``tether <cmd> --help`` lists every field with its type, default and a one-line doc.
Bad input (config, data, model path) prints one line per problem and exits with code 2.
"""

from __future__ import annotations

import os
import shutil
import sys
import textwrap
from collections.abc import Callable
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

from tether import __version__
from tether.config import RECIPE_CONFIGS, describe_fields, dump_yaml, load_config
from tether.errors import ConfigError, TetherInputError, TrainingError

EXIT_BAD_INPUT = 2
EXIT_TRAINING_FAILED = 1

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

app = typer.Typer(
    name="tether",
    help="RLHF end to end: SFT, preferences, reward models, policy optimisation under a KL leash, evaluation.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)

# One line each in `tether --help`: click cuts a summary at 80 columns less 8 and the longest command name
# ('rejection-sample'), so keep them to 56 characters. `tether <cmd> --help` shows the longer description.
SUMMARIES = {
    "sft": "Supervised fine-tuning on demonstrations.",
    "rm": "Bradley-Terry reward model with a held-out report.",
    "dpo": "DPO family: dpo ipo cdpo robust hinge kto orpo simpo.",
    "ppo": "PPO under a KL leash, with a reward-hacking alarm.",
    "grpo": "Critic-free RL: GRPO, RLOO, REINFORCE++.",
    "bon": "Best-of-N sampling against a reward.",
    "rejection-sample": "Sample N, keep the best, fine-tune; repeat.",
    "sample": "Sample K responses per prompt for labeling.",
    "label": "Preference labels: simulate, judge, serve, export.",
    "label simulate": "Label with a simulated annotator panel.",
    "label judge": "Label with an AI judge and a constitution.",
    "label serve": "The web labeling app for human annotators.",
    "label tokens": "Rotate annotator or admin tokens of the labeling app.",
    "label stats": "Annotator throughput, gold accuracy and agreement.",
    "label export": "Votes → preferences.jsonl, or Label Studio tasks.",
    "label import": "Import a Label Studio JSON export into the label store.",
    "cost": "Annotation and accelerator cost estimates.",
    "score": "Score jsonl rows with a reward model (or an ensemble).",
    "eval": "Compare policies: gold, KL, win-rate, alignment tax.",
    "report": "Write report.html for a run directory.",
    "frontier": "Reward-vs-KL frontier: PPO at several β, best-of-N.",
    "pipeline": "The whole lifecycle over your own models and data.",
    "plan": "Accelerator memory per device for each RLHF role.",
    "quickstart": "The whole lifecycle on the embedded SmolLM2 model.",
}

DESCRIPTIONS = {
    "sft": "Supervised fine-tuning on demonstrations (prompt/completion, messages or text).",
    "rm": "Train a Bradley-Terry reward model (pairs or rankings), with a held-out report.",
    "dpo": "Offline preference optimisation: dpo, ipo, cdpo, robust, hinge, kto, orpo, simpo.",
    "ppo": "PPO under a KL leash: reward model or function, value model, adaptive KL, GAE, clipping.",
    "grpo": "Critic-free RL with K samples per prompt: advantage=grpo | rloo | reinforce_pp.",
    "bon": "Best-of-N: sample N per prompt, keep the highest-reward response (KL = log N − (N−1)/N).",
    "rejection-sample": "Rejection-sampling fine-tuning: sample N, keep the best, fine-tune, repeat for R rounds.",
    "sample": "Sample K responses per prompt into samples.jsonl (for labelling).",
    "label simulate": "Label samples with a simulated annotator panel that has a known gold utility.",
    "label judge": "Label with an AI judge (local model or OpenAI-compatible endpoint) and a constitution.",
    "label serve": "The web labeling app: token login, pick the better of two or rank K (mouse or keys), admin page.",
    "label tokens": "Rotate annotator (or admin) tokens of the labeling app; the old ones stop working.",
    "label stats": "Annotator throughput, gold-question accuracy, agreement (kappa, alpha), aggregation quality.",
    "label export": "Aggregate votes (Dawid-Skene or majority) into preferences.jsonl, or export Label Studio tasks.",
    "label import": "Import a Label Studio JSON export into the label store.",
    "cost": "Estimate annotation and accelerator cost (and cost per point of held-out gain).",
    "score": "Score jsonl rows with a trained reward model (or an ensemble).",
    "eval": "Compare policies on held-out prompts: proxy vs gold reward, KL, length, diversity, win-rate, alignment tax.",
    "report": "Write report.html for a run directory: training curves, held-out alarm, RM, labels, eval, samples.",
    "frontier": "Reward-vs-KL frontier: PPO at several fixed β and best-of-N at several N, proxy and gold vs KL.",
    "pipeline": "The whole lifecycle over your models and data: sft → sample → label → rm → ppo → dpo → eval → report.",
    "plan": "Accelerator memory per device for each role (policy, reference, reward, value) under ZeRO, LoRA, offload.",
    "quickstart": "The whole lifecycle on the embedded SmolLM2-135M-Instruct: SFT → sample → simulated panel → "
                  "reward model → PPO + DPO → evaluation → report.html.",
}

EXAMPLES = {
    "sft": "tether sft examples/sft_tiny.yaml train.max_steps=20",
    "rm": "tether rm examples/rm_tiny.yaml ensemble_size=3",
    "dpo": "tether dpo examples/dpo_tiny.yaml loss=simpo",
    "ppo": "tether ppo examples/ppo_tiny.yaml num_iterations=10",
    "grpo": "tether grpo examples/grpo_tiny.yaml advantage=rloo",
    "bon": "tether bon examples/bon_tiny.yaml n=8",
    "rejection-sample": "tether rejection-sample examples/rejection_tiny.yaml rounds=3",
    "sample": "tether sample model.name_or_path=runs/tiny/sft data.train_file=examples/data/prompts.jsonl k=4",
    "label simulate": "tether label simulate samples=runs/samples.jsonl planted_length_bias=1.0",
    "label judge": "tether label judge samples=runs/samples.jsonl judge=embedded max_comparisons=50",
    "label serve": "tether label serve samples=runs/samples.jsonl annotators=[alice,bob]",
    "label tokens": "tether label tokens db=runs/labels.sqlite rotate=[alice]",
    "label stats": "tether label stats db=runs/labels.sqlite",
    "label export": "tether label export db=runs/labels.sqlite output=runs/preferences.jsonl",
    "label import": "tether label import input=label_studio_export.json db=runs/labels.sqlite",
    "cost": "tether cost comparisons=50000 labels_per_comparison=3 rl_sequences=100000",
    "score": "tether score model=runs/tiny/rm input=examples/data/preferences_eval.jsonl",
    "quickstart": "tether quickstart            (or: tether quickstart --tiny)",
    "eval": "tether eval models=[runs/q/sft,runs/q/ppo] reward=runs/q/rm data.train_file=prompts.jsonl",
    "report": "tether report run_dir=runs/quickstart",
    "frontier": "tether frontier ppo.model.name_or_path=runs/q/sft ppo.reward=runs/q/rm prompts_file=prompts.jsonl",
    "pipeline": "tether pipeline examples/pipeline_tiny.yaml rounds=2",
    "plan": "tether plan model=7b gpus=8 algo=ppo zero=3",
}


def _report_bad_input(exc: Exception) -> None:
    lines = getattr(exc, "problems", None) or str(exc).splitlines() or [type(exc).__name__]
    for line in lines:  # (escaped: a message quotes values and install hints such as tether-rlhf[vllm])
        err.print(f"[bold red]error:[/] {escape(str(line))}", markup=True, soft_wrap=True)


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        import transformers

        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
    except ImportError:
        pass


def split_args(args: list[str]) -> tuple[str | None, list[str]]:
    """``[cfg.yaml, a=1, --flag, --b=2]`` → ``("cfg.yaml", ["a=1", "flag=true", "b=2"])``."""
    config_path, overrides = None, []
    for arg in args:
        if arg.startswith("--"):
            body = arg[2:]
            overrides.append(body if "=" in body else f"{body}=true")
        elif "=" in arg:
            overrides.append(arg)
        elif config_path is None:
            config_path = arg
        else:
            raise ConfigError(f"unexpected argument '{arg}': give one config file, then key=value overrides")
    return config_path, overrides


def config_help_text(command: str) -> str:
    """Plain-text help for a recipe command: usage, an example, then every field with type, default and doc."""
    cls = RECIPE_CONFIGS[command]
    width = max(min(shutil.get_terminal_size().columns, 80) - 2, 50)  # as click words `tether --help`
    lines = [f"Usage: tether {command} [CONFIG.yaml] [key=value ...] [--print-config]", "",
             textwrap.fill(DESCRIPTIONS[command], width), "", f"Example: {EXAMPLES[command]}", "",
             f"Fields of {cls.__name__} (YAML keys; nested keys with dots on the command line):", ""]
    for key, type_name, default, doc in describe_fields(cls):
        lines.append(f"  {key}  ({type_name}, default: {default})")
        lines.append(textwrap.fill(doc, width, initial_indent=" " * 6, subsequent_indent=" " * 6))
    lines += ["", "--print-config prints the resolved config (defaults < file < overrides) and exits."]
    return "\n".join(lines)


def print_config_help(command: str) -> None:
    print(config_help_text(command))


def _run_recipe(command: str, args: list[str], runner: Callable[[Any], Any]) -> None:
    if "--help" in args or "-h" in args:
        print_config_help(command)
        raise typer.Exit(0)
    print_only = "--print-config" in args
    args = [a for a in args if a != "--print-config"]
    try:
        config_path, overrides = split_args(args)
        config = load_config(RECIPE_CONFIGS[command], config_path, overrides, command=command)
        if print_only:
            out.print(dump_yaml(config), end="")
            raise typer.Exit(0)
        _quiet_libraries()
        runner(config)
    except typer.Exit:
        raise
    except TetherInputError as exc:  # every layer's bad-input error derives from it
        _report_bad_input(exc)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/]: re-run the same command to resume from the last checkpoint")
        raise typer.Exit(130) from None
    except Exception as exc:  # noqa: BLE001 - the CLI turns known failures into messages
        from tether.utils.signals import StopRequested

        if isinstance(exc, StopRequested):
            err.print(f"[yellow]stopped[/]: {escape(str(exc))}")
            raise typer.Exit(exc.exit_code) from None
        if isinstance(exc, TrainingError):
            err.print(f"[bold red]training stopped:[/] {escape(str(exc))}")
            raise typer.Exit(EXIT_TRAINING_FAILED) from None
        raise


CONTEXT = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}


def recipe_command(group: typer.Typer, command: str) -> Callable:
    """Register ``command`` (e.g. ``"label simulate"``) on ``group``: its one-line summary in the command list, its
    description for ``--help``."""
    return group.command(command.split()[-1], help=DESCRIPTIONS[command], short_help=SUMMARIES[command],
                         context_settings=CONTEXT)


@recipe_command(app, "sft")
def sft_command(ctx: typer.Context) -> None:
    from tether.recipes.sft import train_sft

    _run_recipe("sft", ctx.args, train_sft)


@recipe_command(app, "rm")
def rm_command(ctx: typer.Context) -> None:
    from tether.recipes.reward_model import train_reward_model

    _run_recipe("rm", ctx.args, train_reward_model)


@recipe_command(app, "dpo")
def dpo_command(ctx: typer.Context) -> None:
    from tether.recipes.preference import train_preference

    _run_recipe("dpo", ctx.args, train_preference)


@recipe_command(app, "ppo")
def ppo_command(ctx: typer.Context) -> None:
    from tether.recipes.ppo import train_ppo

    _run_recipe("ppo", ctx.args, train_ppo)


@recipe_command(app, "grpo")
def grpo_command(ctx: typer.Context) -> None:
    from tether.recipes.grpo import train_grpo

    _run_recipe("grpo", ctx.args, train_grpo)


@recipe_command(app, "bon")
def bon_command(ctx: typer.Context) -> None:
    from tether.recipes.best_of_n import run_best_of_n

    _run_recipe("bon", ctx.args, run_best_of_n)


@recipe_command(app, "rejection-sample")
def rejection_command(ctx: typer.Context) -> None:
    from tether.recipes.best_of_n import run_rejection_sampling

    _run_recipe("rejection-sample", ctx.args, run_rejection_sampling)


@recipe_command(app, "sample")
def sample_command(ctx: typer.Context) -> None:
    from tether.recipes.label import run_sample

    _run_recipe("sample", ctx.args, run_sample)


label_app = typer.Typer(help="Preference labels: simulate a panel, check agreement, export preferences.",
                        no_args_is_help=True, rich_markup_mode=None)
app.add_typer(label_app, name="label", short_help=SUMMARIES["label"])


@recipe_command(label_app, "label simulate")
def label_simulate_command(ctx: typer.Context) -> None:
    from tether.recipes.label import run_label_simulate

    _run_recipe("label simulate", ctx.args, run_label_simulate)


@recipe_command(label_app, "label judge")
def label_judge_command(ctx: typer.Context) -> None:
    from tether.recipes.label import run_label_judge

    _run_recipe("label judge", ctx.args, run_label_judge)


@recipe_command(label_app, "label serve")
def label_serve_command(ctx: typer.Context) -> None:
    from tether.recipes.label import run_label_serve

    _run_recipe("label serve", ctx.args, run_label_serve)


@recipe_command(label_app, "label tokens")
def label_tokens_command(ctx: typer.Context) -> None:
    from tether.recipes.label import run_label_tokens

    _run_recipe("label tokens", ctx.args, run_label_tokens)


@recipe_command(label_app, "label stats")
def label_stats_command(ctx: typer.Context) -> None:
    from tether.recipes.label import run_label_stats

    _run_recipe("label stats", ctx.args, run_label_stats)


@recipe_command(label_app, "label export")
def label_export_command(ctx: typer.Context) -> None:
    from tether.recipes.label import run_label_export

    _run_recipe("label export", ctx.args, run_label_export)


@recipe_command(label_app, "label import")
def label_import_command(ctx: typer.Context) -> None:
    from tether.recipes.label import run_label_import

    _run_recipe("label import", ctx.args, run_label_import)


@recipe_command(app, "cost")
def cost_command(ctx: typer.Context) -> None:
    from tether.recipes.cost import run_cost

    _run_recipe("cost", ctx.args, run_cost)


@recipe_command(app, "score")
def score_command(ctx: typer.Context) -> None:
    from tether.recipes.score import score_file

    _run_recipe("score", ctx.args, score_file)


@recipe_command(app, "eval")
def eval_command(ctx: typer.Context) -> None:
    from tether.recipes.evaluate import run_eval

    _run_recipe("eval", ctx.args, run_eval)


@recipe_command(app, "report")
def report_command(ctx: typer.Context) -> None:
    from tether.eval.report import write_report

    _run_recipe("report", ctx.args, write_report)


@recipe_command(app, "frontier")
def frontier_command(ctx: typer.Context) -> None:
    from tether.recipes.frontier import run_frontier

    _run_recipe("frontier", ctx.args, run_frontier)


@recipe_command(app, "pipeline")
def pipeline_command(ctx: typer.Context) -> None:
    from tether.recipes.pipeline import run_pipeline

    _run_recipe("pipeline", ctx.args, run_pipeline)


@recipe_command(app, "plan")
def plan_command(ctx: typer.Context) -> None:
    from tether.plan import run_plan

    _run_recipe("plan", ctx.args, run_plan)


@recipe_command(app, "quickstart")
def quickstart_command(ctx: typer.Context) -> None:
    from tether.recipes.quickstart import run_quickstart

    _run_recipe("quickstart", ctx.args, run_quickstart)


def _version(value: bool) -> None:
    if value:
        out.print(f"tether {__version__}")
        raise typer.Exit(0)


@app.callback()
def main_callback(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version."),
) -> None:
    """RLHF end to end, under a KL leash."""


def main() -> None:
    try:
        app()
    except BrokenPipeError:  # e.g. `tether score ... | head`
        sys.exit(0)


if __name__ == "__main__":
    main()
