"""``module:name`` specs (reward functions, gold utilities, judges' hooks) → the Python object they name."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any


def import_object(spec: str) -> Any:
    """The object ``spec`` (``package.module:name``) names. Like ``python -m``, modules beside the directory the
    command runs in are found. Raises ImportError (no such module, no such name, or a spec without ``:``), the
    message naming the spec; callers turn it into their own input error."""
    module_name, colon, name = spec.partition(":")
    if not colon or not module_name or not name:
        raise ImportError(f"'{spec}' is not module:function")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return getattr(importlib.import_module(module_name), name)
    except AttributeError:
        raise ImportError(f"module '{module_name}' has no '{name}'") from None
