"""The one console every message goes to (stderr, so that stdout carries only a command's result).

A leaf: it imports nothing of tether's, so every module of ``tether.utils`` can print without an import loop. In a
data-parallel run the non-main processes set ``console.quiet`` (:meth:`tether.utils.distributed.Dist.current`).

Messages are not wrapped at the console's width (``soft_wrap``): a long path in a message stays one piece that can
be copied, in a terminal and in a log alike (rich would otherwise break it anywhere, even mid-name). Tables and
progress bars still fit the width.
"""

from __future__ import annotations

from rich.console import Console

console = Console(stderr=True, highlight=False, soft_wrap=True)
