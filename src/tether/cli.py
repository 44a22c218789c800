"""The ``tether`` command line: one thin sub-command per recipe.

Every recipe command takes an optional YAML config file and ``key=value`` overrides::

    tether sft examples/sft_tiny.yaml train.max_steps=20
    tether rm  examples/rm_tiny.yaml model.name_or_path=runs/tiny/sft
    tether dpo examples/dpo_tiny.yaml loss=ipo kl_coef=0.5
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
from tether.config import describe_fields, dump_yaml, load_config
from tether.errors import ConfigError, TetherInputError, TrainingError
from tether.recipes.registry import GROUPS, RECIPES, Recipe

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
    entry = RECIPES[command]
    cls = entry.config
    width = max(min(shutil.get_terminal_size().columns, 80) - 2, 50)  # as click words `tether --help`
    lines = [f"Usage: tether {command} [CONFIG.yaml] [key=value ...] [--print-config]", "",
             textwrap.fill(entry.description, width), "", f"Example: {entry.example}", "",
             f"Fields of {cls.__name__} (YAML keys; nested keys with dots on the command line):", ""]
    for key, type_name, default, doc in describe_fields(cls):
        lines.append(f"  {key}  ({type_name}, default: {default})")
        lines.append(textwrap.fill(doc, width, initial_indent=" " * 6, subsequent_indent=" " * 6))
    lines += ["", "--print-config prints the resolved config (defaults < file < overrides) and exits."]
    return "\n".join(lines)


def print_config_help(command: str) -> None:
    print(config_help_text(command))


def _run_recipe(command: str, args: list[str], runner: Callable[[Any], Any] | None = None) -> None:
    """Parse ``args`` (a config file, key=value overrides, --help, --print-config) into ``command``'s config and run
    it with ``runner`` (default: the registry's function), turning bad input into exit code 2."""
    if "--help" in args or "-h" in args:
        print_config_help(command)
        raise typer.Exit(0)
    print_only = "--print-config" in args
    args = [a for a in args if a != "--print-config"]
    try:
        config_path, overrides = split_args(args)
        config = load_config(RECIPES[command].config, config_path, overrides, command=command)
        if print_only:
            out.print(dump_yaml(config), end="")
            raise typer.Exit(0)
        _quiet_libraries()
        (runner or RECIPES[command].runner())(config)
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


def recipe_command(group: typer.Typer, entry: Recipe) -> None:
    """Register ``entry`` (e.g. ``label simulate``) on ``group``: its summary in the command list, its description
    for ``--help``; the command parses its arguments and runs the registry's function."""
    def command(ctx: typer.Context) -> None:
        _run_recipe(entry.command, ctx.args)

    command.__name__ = f"{entry.command.replace(' ', '_').replace('-', '_')}_command"
    group.command(entry.command.split()[-1], help=entry.description, short_help=entry.summary,
                  context_settings=CONTEXT)(command)


label_app = typer.Typer(help="Preference labels: simulate a panel, check agreement, export preferences.",
                        no_args_is_help=True, rich_markup_mode=None)
cai_app = typer.Typer(help="Constitutional AI: critique and revise responses against a constitution (SL-CAI).",
                      no_args_is_help=True, rich_markup_mode=None)
GROUP_APPS = {"label": label_app, "cai": cai_app}
for _entry in RECIPES.values():  # `label simulate` goes into the label group, `cai revise` into the cai group
    recipe_command(GROUP_APPS[_entry.command.split()[0]] if " " in _entry.command else app, _entry)
for _name, _group in GROUP_APPS.items():
    app.add_typer(_group, name=_name, short_help=GROUPS[_name])


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
