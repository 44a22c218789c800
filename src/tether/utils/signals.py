"""Stop a long run cleanly on SIGTERM / SIGINT: finish the current step, save a checkpoint, exit.

    with graceful_stop() as stop:
        for step in ...:
            ...                     # one optimizer step / RL iteration
            if stop.requested:      # a safe point: the state is consistent
                save_checkpoint(...)
                raise StopRequested(stop.signal, "...how to resume...")

The first signal only sets ``requested`` (the run saves at the next safe point); a second
SIGINT (Ctrl-C twice) interrupts at once. Handlers are installed only in the main thread
and the previous ones are restored on exit.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


class StopRequested(Exception):
    """Raised after a checkpoint was saved because a signal asked the run to stop."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum


class StopFlag:
    def __init__(self) -> None:
        self.signal: int = 0

    @property
    def requested(self) -> bool:
        return self.signal != 0


@contextlib.contextmanager
def graceful_stop() -> Iterator[StopFlag]:
    flag = StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = {}

    def handler(signum, frame):
        if flag.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        flag.signal = signum
        name = signal.Signals(signum).name
        print(f"\n{name} received: finishing the current step, saving a checkpoint, then stopping "
              "(Ctrl-C again to stop at once)", flush=True)

    for signum in (signal.SIGTERM, signal.SIGINT):
        previous[signum] = signal.signal(signum, handler)
    try:
        yield flag
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def resume_message(stage: str, where: str, step: int, signum: int) -> str:
    return (f"{stage}: stopped by {signal.Signals(signum).name} after step {step}; checkpoint saved in {where}. "
            "Run the same command again to resume from it.")
