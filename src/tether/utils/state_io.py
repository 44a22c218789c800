"""Save and load nested training state (optimizer, RNGs, counters) without pickle.

A nested structure of dicts / lists / numbers / strings / tensors is split into a
JSON skeleton and a flat ``{key: tensor}`` dict stored with safetensors. Loading
reverses it; nothing is ever unpickled.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

_TENSOR = "__tensor__"
_TUPLE = "__tuple__"
_INTKEYS = "__intkeys__"


def _split(obj: Any, tensors: dict[str, torch.Tensor], path: str) -> Any:
    if isinstance(obj, torch.Tensor):
        tensors[path] = obj.detach().cpu().contiguous()
        return {_TENSOR: path}
    if isinstance(obj, dict):
        int_keys = all(isinstance(k, int) for k in obj) and bool(obj)
        out = {str(k): _split(v, tensors, f"{path}.{k}") for k, v in obj.items()}
        return {_INTKEYS: out} if int_keys else out
    if isinstance(obj, tuple):
        return {_TUPLE: [_split(v, tensors, f"{path}.{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_split(v, tensors, f"{path}.{i}") for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if hasattr(obj, "tolist"):  # numpy arrays and scalars
        return obj.tolist()
    raise TypeError(f"cannot store {type(obj).__name__} at {path}")


def _join(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {_TENSOR}:
            return tensors[obj[_TENSOR]]
        if set(obj) == {_TUPLE}:
            return tuple(_join(v, tensors) for v in obj[_TUPLE])
        if set(obj) == {_INTKEYS}:
            return {int(k): _join(v, tensors) for k, v in obj[_INTKEYS].items()}
        return {k: _join(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_join(v, tensors) for v in obj]
    return obj


def save_state(obj: Any, folder: str | Path, name: str) -> list[Path]:
    """Write ``<name>.json`` (+ ``<name>.safetensors`` if it holds tensors); returns the files written."""
    folder = Path(folder)
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _split(obj, tensors, name)
    files = [folder / f"{name}.json"]
    files[0].write_text(json.dumps(skeleton))
    if tensors:
        files.append(folder / f"{name}.safetensors")
        save_file(tensors, str(files[1]))
    return files


def load_state(folder: str | Path, name: str) -> Any:
    folder = Path(folder)
    skeleton = json.loads((folder / f"{name}.json").read_text())
    tensor_file = folder / f"{name}.safetensors"
    tensors = load_file(str(tensor_file)) if tensor_file.is_file() else {}
    return _join(skeleton, tensors)
