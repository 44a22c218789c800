"""The errors tether raises on purpose, at the bottom of the package so that every layer can use them.

Two families, which the CLI turns into two exit codes:

- :class:`TetherInputError` (exit code 2): the input cannot be used: a config key, a data row, a model path, a
  reward spec. The message names the file, row and field, and says what to change. Each layer's own input error
  (``DataError``, ``ModelLoadError``, ``RewardSpecError``, ...) derives from it, so a caller catches them all with
  one ``except TetherInputError``.
- :class:`TrainingError` (exit code 3): training started and cannot go on (repeated NaN losses, out of memory);
  the message says why.
"""

from __future__ import annotations


class TetherInputError(Exception):
    """Input that cannot be used; the message (or ``problems``, one line each) says which and why."""


class ConfigError(TetherInputError, ValueError):
    """A config file or override that cannot be used; the message says which key and why."""


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. repeated NaN losses); the message says why."""
