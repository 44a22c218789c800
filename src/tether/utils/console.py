"""The one console every message goes to (stderr, so that stdout carries only a command's result).

A leaf: it imports nothing of tether's, so every module of ``tether.utils`` can print without an import loop. In a
data-parallel run the non-main processes set ``console.quiet`` (:meth:`tether.utils.distributed.Dist.current`).
"""

from __future__ import annotations

from rich.console import Console

console = Console(stderr=True, highlight=False)
