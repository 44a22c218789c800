"""The docs say what the code does: metric names, config keys and install names.

- Every metric name the code logs is in docs/metrics.md. The names are found statically: string
  literals shaped like ``group/name`` used as a dict key or a subscript anywhere in src/tether (the
  metrics dicts every recipe builds and logs), plus the reward-model report's keys, which the reward
  model recipe logs as ``report/<key>``. (tests/test_readme.py checks the other way round: every key
  of the metrics.jsonl the README's walk-through writes.)
- Every config key a page names exists in the recipe configs (tether.recipes.registry.RECIPES): the
  ``key=value`` overrides of each ``tether <command>`` line in code (checked against that command's
  config), backticked ``key=`` and ``section.key`` names, and the rows of option tables.
- Every ``pip install '<distribution>[extra]'`` hint names this distribution and one of its extras.

Each check first makes sure it found something (a minimum count and names it must find), so it
cannot pass by finding nothing, and each has a test that a deliberate mistake fails it.
"""

from __future__ import annotations

import ast
import dataclasses
import re
import shlex
import typing
from pathlib import Path

import pytest

from tests.helpers import ROOT

SRC = ROOT / "src" / "tether"
METRICS_DOC = ROOT / "docs" / "metrics.md"
PAGES = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]
METRIC = re.compile(r"^[a-z_]+/[a-z_/<>]+$")
BACKTICKED = re.compile(r"`([^`\n]+)`")


# ------------------------------------------------------------------------------------------------- metrics


def logged_metric_names(src: Path = SRC) -> dict[str, str]:
    """Metric-shaped string literals used as dict keys or subscripts in the source: name → where."""
    found: dict[str, str] = {}
    for path in sorted(src.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Dict):
                places = [k for k in node.keys if k is not None]
            elif isinstance(node, ast.Subscript):
                places = [node.slice]
            else:
                continue
            for place in places:  # (a key may be an expression: `x["time/a" if fast else "time/b"]`)
                for leaf in ast.walk(place):
                    if isinstance(leaf, ast.Constant) and isinstance(leaf.value, str) and METRIC.match(leaf.value):
                        found.setdefault(leaf.value, f"{path.relative_to(src.parent)}:{leaf.lineno}")
    return found


def reward_model_report_metrics() -> set[str]:
    """``report/<key>`` for each number of the reward-model report (tether.recipes.reward_model logs them so)."""
    import torch

    from tether.eval.reward_model import reward_model_report

    report = reward_model_report(torch.tensor([1.0, 0.5, 2.0]), torch.tensor([0.0, 1.0, 1.0]), [10, 20, 30],
                                 [20, 10, 30], n_bins=2, disagreement=torch.tensor([0.1, 0.2, 0.3, 0.1, 0.2, 0.3]))
    return {f"report/{k}" for k, v in report.items() if isinstance(v, (int, float))} | {"report/n_train_pairs"}


def documented_metrics(text: str | None = None) -> set[str]:
    """The metric names docs/metrics.md gives: every backticked name (`a/b`, `time/<stage>`, `loss`)."""
    text = METRICS_DOC.read_text(encoding="utf-8") if text is None else text
    return {name for span in BACKTICKED.findall(text) for name in re.split(r",\s*", span)
            if re.fullmatch(r"[a-z_]+(/[a-z_<>]+)*", name)}


def documented_metric(name: str, documented: set[str]) -> bool:
    """``name`` is documented: by itself, by a pattern such as `time/<stage>`, or as `eval/<documented name>`
    (docs/metrics.md: held-out evaluations are logged at the same step with an eval/ prefix)."""
    if name in documented:
        return True
    for pattern in (d for d in documented if "<" in d):
        if re.fullmatch(re.sub(r"<[^>]+>", "[a-z_/]+", pattern), name):
            return True
    return name.startswith("eval/") and documented_metric(name.removeprefix("eval/"), documented)


def test_the_metric_scan_finds_the_logged_names():
    found = logged_metric_names()
    assert len(found) >= 50, sorted(found)
    assert {"policy/loss", "policy/early_stopped", "policy/update_steps", "value/loss", "objective/kl",
            "reward/normalized_mean", "reward/score_std", "train/lr", "heldout/gold_mean",
            "time/logprobs_values", "time/score_logprobs_values"} <= set(found)
    assert not any(name.startswith("runs/") for name in found)  # paths are not metric names
    assert {"report/accuracy", "report/reward_std", "report/ensemble_disagreement_mean"} <= reward_model_report_metrics()


def test_every_logged_metric_is_in_docs_metrics_md():
    documented = documented_metrics()
    names = {**logged_metric_names(), **{n: "the reward-model report" for n in reward_model_report_metrics()}}
    missing = {name: where for name, where in names.items() if not documented_metric(name, documented)}
    assert not missing, f"logged but not in docs/metrics.md: {missing}"


def test_a_metric_dropped_from_the_docs_fails_the_check():
    text = METRICS_DOC.read_text(encoding="utf-8")
    documented = documented_metrics(text)
    # the names only their own entry documents (not a pattern such as `time/<stage>`, nor the eval/ prefix)
    names = [n for n in sorted(set(logged_metric_names()) | reward_model_report_metrics())
             if n in documented and not documented_metric(n, documented - {n})]
    assert len(names) >= 40
    for name in names:
        without = "\n".join(line for line in text.splitlines() if f"`{name}`" not in line)
        assert not documented_metric(name, documented_metrics(without)), name


def test_eval_prefixed_and_pattern_names():
    documented = {"loss", "rewards/accuracies", "time/<stage>"}
    assert documented_metric("eval/loss", documented) and documented_metric("eval/rewards/accuracies", documented)
    assert documented_metric("time/update", documented)
    assert not documented_metric("eval/perplexity", documented) and not documented_metric("timing/update", documented)


# ------------------------------------------------------------------------------------------------- config keys


def config_keys(cls: type, prefix: str = "") -> set[str]:
    """Every key of config class ``cls``, nested ones dotted (``train.max_steps``), and its sections (``train``)."""
    keys = set()
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        keys.add(key)
        if dataclasses.is_dataclass(hints[f.name]):
            keys |= config_keys(hints[f.name], f"{key}.")
    return keys


def _recipe_configs() -> dict[str, type]:
    from tether.recipes.registry import RECIPES

    return {command: recipe.config for command, recipe in RECIPES.items()}


def any_recipe_keys() -> set[str]:
    return set().union(*(config_keys(cls) for cls in _recipe_configs().values()))


def code_blocks(text: str) -> tuple[list[tuple[str, str]], str]:
    """The fenced code blocks of a markdown text as (language, body), and the text outside them."""
    blocks, outside, fence = [], [], None
    for line in text.splitlines(keepends=True):
        if fence is None and line.startswith("```"):
            fence = (line[3:].strip(), [])
        elif fence is not None and line.rstrip() == "```":
            blocks.append((fence[0], "".join(fence[1])))
            fence = None
        elif fence is not None:
            fence[1].append(line)
        else:
            outside.append(line)
    return blocks, "".join(outside)


def _code_lines(text: str) -> list[str]:
    """Lines of fenced code blocks (continuations joined) and inline code spans."""
    blocks, outside = code_blocks(text)
    lines = [line for _, body in blocks for line in body.replace("\\\n", " ").splitlines()]
    return lines + BACKTICKED.findall(outside)


def tether_command_overrides(text: str) -> list[tuple[str, str, str]]:
    """(command, key, the line) for every key=value of every `tether <command>` (or `-m tether.cli <command>`)."""
    commands = _recipe_configs()
    found = []
    for line in _code_lines(text):
        for match in re.finditer(r"(?:^|[\s(;&|])(?:tether|-m tether\.cli)\s+(.*)", line):
            try:
                args = shlex.split(match.group(1), comments=True)
            except ValueError:  # an unbalanced quote in prose
                args = match.group(1).split()
            if len(args) >= 2 and f"{args[0]} {args[1]}" in commands:
                command, rest = f"{args[0]} {args[1]}", args[2:]
            elif args and args[0] in commands:
                command, rest = args[0], args[1:]
            else:
                continue
            for arg in rest:
                if arg in {"&&", "||", ";", "|"} or arg.startswith("#"):
                    break
                key = arg.split("=", 1)[0]
                if "=" in arg and re.fullmatch(r"[a-z_][a-z0-9_.]*", key):
                    found.append((command, key, line.strip()))
    return found


# backticked names shaped like config keys that name files or modules, and the other tools' settings the docs quote
NOT_CONFIG = re.compile(r"\.(json|jsonl|yaml|yml|html|md|py|txt|sqlite|csv|parquet|safetensors|gguf)$|^tether\.|^torch\.")
NOT_TETHER_KEYS = {
    "key=value": "the form of an override", "num_labels=1": "a transformers argument",
    "use_safetensors=True": "a transformers argument", "model.generate": "a transformers method",
    "bf16=False": "a TRL argument", "gradient_checkpointing=False": "a TRL argument",
    "synchronous=FULL": "an SQLite setting", "data.prompt": "a Label Studio task field",
    "data.response_a": "a Label Studio task field", "data.response_b": "a Label Studio task field",
    "ppo.shaped_advantages": "a function of tether.recipes.ppo",
    "full_state_dict=True,": "torch's StateDictOptions", "cpu_offload=True": "torch's StateDictOptions",
}


def named_config_keys(text: str) -> list[tuple[str, str]]:
    """(key, where) for each backticked `key=` / `key=value` and `section.key` (section = a config section)."""
    sections = {k for k in any_recipe_keys() if any(o.startswith(f"{k}.") for o in any_recipe_keys())}
    names = []
    for span in BACKTICKED.findall(code_blocks(text)[1]):
        if re.search(r"(^|\s)(tether|-m tether\.cli)\s", span) or re.search(r"\(|==", span):
            continue  # a command line (tether_command_overrides checks it), a Python call or a version pin
        for token in span.split():
            key = token.split("=", 1)[0]
            if token in NOT_TETHER_KEYS:
                continue
            if "=" in token and re.fullmatch(r"[a-z_][a-z0-9_.]*", key):
                names.append((key, span))
            elif re.fullmatch(r"[a-z_]+(\.[a-z_0-9]+)+", token) and token.split(".")[0] in sections \
                    and not NOT_CONFIG.search(token):
                names.append((token, span))
    return names


def option_table_keys(text: str) -> list[tuple[str, str]]:
    """(key, row) for the backticked names in the first column of tables headed `option` (docs/ppo.md's)."""
    keys, in_table = [], False
    for line in text.splitlines():
        if not line.startswith("|"):
            in_table = False
            continue
        first = line.split("|")[1].strip()
        if first == "option":
            in_table = True
        elif in_table:
            keys += [(k, line) for k in BACKTICKED.findall(first) if re.fullmatch(r"[a-z_][a-z0-9_.]*", k)]
    return keys


def test_the_config_key_scans_find_keys():
    text = "\n".join(p.read_text(encoding="utf-8") for p in PAGES)
    commands = tether_command_overrides(text)
    assert len(commands) >= 40 and ("ppo", "heldout.gold") in {(c, k) for c, k, _ in commands}
    assert ("eval", "data.train_file") in {(c, k) for c, k, _ in commands}
    named = {k for k, _ in named_config_keys(text)}
    assert len(named) >= 30 and {"heldout.gold", "model.dtype", "train.report_to", "ensemble_k"} <= named
    table = {k for k, _ in option_table_keys(text)}
    assert len(table) >= 20 and {"clip_range", "kl_coef"} <= table


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_config_key_a_page_names_exists(page):
    text = page.read_text(encoding="utf-8")
    configs = _recipe_configs()
    wrong = [f"`tether {c}` has no key '{k}': {line}" for c, k, line in tether_command_overrides(text)
             if k not in config_keys(configs[c])]
    everywhere = any_recipe_keys()
    leaves = {k.rsplit(".", 1)[-1] for k in everywhere}
    wrong += [f"no recipe config has '{k}': `{span}`" for k, span in named_config_keys(text) if k not in everywhere]
    wrong += [f"no recipe config has a field '{k}': {row}" for k, row in option_table_keys(text) if k not in leaves]
    assert not wrong, "\n".join(wrong)


def test_a_wrong_key_fails_the_config_check():
    configs = _recipe_configs()
    text = "```bash\ntether ppo examples/ppo_tiny.yaml train.learning_rate=1e-5 \\\n    heldout.gld=x\n```\n" \
           "Set `train.max_step=3` or `model.lora.rank`.\n\n| option | default |\n|---|---|\n| `clip_rnge` | 0.2 |\n"
    bad = [k for c, k, _ in tether_command_overrides(text) if k not in config_keys(configs[c])]
    assert bad == ["train.learning_rate", "heldout.gld"]  # PPO has no train section
    assert [k for k, _ in named_config_keys(text) if k not in any_recipe_keys()] == ["train.max_step", "model.lora.rank"]
    assert [k for k, _ in option_table_keys(text)] == ["clip_rnge"]


def test_configuration_md_lists_every_config_and_its_sections():
    """docs/configuration.md's table: every config class, and for each command the sections it really has."""
    text = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    configs = _recipe_configs()
    assert len(configs) >= 20
    missing = [cls.__name__ for cls in configs.values() if f"`{cls.__name__}`" not in text]
    assert not missing, f"docs/configuration.md does not name {missing}"
    rows = 0
    for line in text.splitlines():
        cells = [c.strip() for c in line.split("|")[1:-1]]
        command = re.fullmatch(r"`tether ([a-z-]+(?: [a-z]+)?)`", cells[0]) if len(cells) == 3 else None
        if command is None or command.group(1) not in configs:
            continue
        cls = configs[command.group(1)]
        hints = typing.get_type_hints(cls)
        sections = {f.name for f in dataclasses.fields(cls) if dataclasses.is_dataclass(hints[f.name])}
        listed = {name for name in BACKTICKED.findall(cells[2]) if "." not in name}
        assert listed == sections, f"{cells[0]}: the table says {sorted(listed)}, the config has {sorted(sections)}"
        rows += 1
    assert rows >= 12


# ------------------------------------------------------------------------------------------------- install names

INSTALL_HINT = re.compile(r"pip install [\"']?([A-Za-z0-9_.-]+)\[([a-z0-9_,-]+)\]")


def install_hints() -> list[tuple[str, str, str]]:
    """(distribution, extra, file) for every `pip install '<name>[extra]'` in src/, docs/, README.md, examples/."""
    files = [*SRC.rglob("*.py"), *(ROOT / "docs").glob("*.md"), ROOT / "README.md", *(ROOT / "examples").rglob("*.yaml")]
    return [(name, extra, str(f.relative_to(ROOT))) for f in files
            for name, extras in INSTALL_HINT.findall(f.read_text(encoding="utf-8")) for extra in extras.split(",")]


def test_install_hints_name_this_distribution_and_its_extras():
    tomllib = pytest.importorskip("tomllib")  # (Python 3.11+)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    hints = install_hints()
    assert len(hints) >= 5 and {"ray", "vllm", "serve"} <= {extra for _, extra, _ in hints}
    wrong = [h for h in hints if h[0] not in {project["name"], "."} or h[1] not in project["optional-dependencies"]]
    assert not wrong, f"install hints that name another distribution or no such extra: {wrong}"
    assert INSTALL_HINT.findall("pip install 'tether[ray]'") == [("tether", "ray")]  # the old name is caught
