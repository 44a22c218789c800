"""Reading configs: YAML files (a data file in a config's place gets a hint) and ``key=value`` overrides merged
over the recipe's defaults, each value checked against its field's type (:func:`from_dict`), and the way back
(:func:`to_dict`, :func:`dump_yaml`, :func:`describe_fields` for ``--help``)."""

from __future__ import annotations

import dataclasses
import difflib
import shlex
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from tether.config.validation import validate
from tether.errors import ConfigError
from tether.utils.console import console


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
    hint = ""
    if quoted:
        either = quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"
        hint = f" (did you mean {either}?)"
    return ConfigError(f"unknown config key '{full}'{hint}; see --help for the fields")


def renamed_keys(cls: type, data: Any, prefix: str = "") -> Any:
    """``data`` with every renamed key of ``cls`` and of its sections (a class's ``RENAMED``: old → new) under its
    new name, printing one note per old key; an old and a new name given together are an error."""
    if not isinstance(data, dict):
        return data
    renames = getattr(cls, "RENAMED", {})
    hints = _hints(cls)
    out: dict = {}
    for key, value in data.items():
        new = renames.get(key)
        if new is not None:
            if new in data:
                raise ConfigError(f"{prefix}{key} and {prefix}{new} are the same setting ({key} is its old name): give "
                                  f"{prefix}{new} alone")
            console.print(f"[yellow]note:[/] {prefix}{key} is now called {prefix}{new}; the old name still works "
                          "for now", soft_wrap=True)
            key = new
        tp = hints.get(key)
        out[key] = renamed_keys(tp, value, f"{prefix}{key}.") if dataclasses.is_dataclass(tp) else value
    return out


def from_dict(cls: type, data: dict, prefix: str = "", root: type | None = None) -> Any:
    """Build dataclass ``cls`` from a (nested) mapping, checking keys and types (``root``: the whole config's class,
    searched for a hint when a key is unknown)."""
    root = root or cls
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {data!r}")
    if root is cls:  # (sections are renamed with the whole config)
        data = renamed_keys(cls, data, prefix)
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
    config = from_dict(cls, _deep_merge(to_dict(cls()), renamed_keys(cls, data)))
    validate(config)
    return config


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
