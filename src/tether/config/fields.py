"""Field helpers shared by every config class: :func:`doc_field` (a default, the one-line doc ``--help`` shows
and, where the field asks for it, the range :func:`~tether.config.validate` enforces), the ranges themselves
(:class:`Bounds`: ``POSITIVE``, ``NON_NEGATIVE``, ``FRACTION``), and the ``resume`` fields' type and doc."""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True)
class Bounds:
    """The numbers a field accepts: at least ``low`` (more than ``low`` when ``low_open``) and, with ``high``, less
    than ``high``.

    Given to :func:`doc_field` as ``bounds=``; :func:`~tether.config.validate` rejects a number outside them with
    ``'<dotted key>: must be <bounds>, got <value>'``. A value that is not a number (``None`` in an optional field)
    is not checked; NaN is never admitted (infinity is, where there is no upper bound: ``kl_limit=inf``).
    """

    low: float
    low_open: bool = False
    high: float | None = None

    def admits(self, value: float) -> bool:
        if value != value:  # NaN
            return False
        if value <= self.low if self.low_open else value < self.low:
            return False
        return self.high is None or value < self.high

    def __str__(self) -> str:
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g})"


POSITIVE = Bounds(0, low_open=True)  # "must be > 0": sizes, counts, temperatures
NON_NEGATIVE = Bounds(0)  # "must be >= 0": rates, coefficients, limits where 0 means off or all
FRACTION = Bounds(0, high=1)  # "must be in [0, 1)": held-out shares, warmup, dropout
ABOVE_ONE = Bounds(1, low_open=True)  # "must be > 1": bounds on importance weights


def doc_field(default: Any, doc: str, *, bounds: Bounds | None = None, **kwargs: Any) -> Any:
    """A dataclass field with a one-line doc shown by ``--help``; with ``bounds``, also the range that
    :func:`~tether.config.validate` checks (a field without ``bounds`` is never range-checked)."""
    metadata = {"doc": doc} if bounds is None else {"doc": doc, "bounds": bounds}
    if isinstance(default, (list, dict)) or dataclasses.is_dataclass(default):
        return field(default_factory=lambda d=default: copy.deepcopy(d), metadata=metadata, **kwargs)
    return field(default=default, metadata=metadata, **kwargs)


ResumeMode = Literal["auto", "never", "force"]
RESUME_DOC = ("auto: resume from this stage's newest checkpoint only if it was written with the same config, else stop "
              "and list what differs; never: start afresh (old checkpoints moved aside); force: resume even though "
              "the config differs; true/false = auto/never (docs/checkpoints.md).")
