"""What the process launcher says about this run, from the environment alone (a leaf: imports nothing of tether's)."""

from __future__ import annotations

import os
from collections.abc import Mapping


def launched_world_size(env: Mapping[str, str] | None = None) -> int:
    """The number of processes a launcher (torchrun, accelerate launch, MPI) started, from its environment
    (``os.environ`` unless given)."""
    env = os.environ if env is None else env
    for name in ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE"):
        value = env.get(name)
        if value and value.isdigit():
            return int(value)
    return 1
