"""Data errors that name the file, the row and the field."""

from __future__ import annotations

from tether.errors import TetherInputError

MAX_SHOWN = 20


class DataError(TetherInputError, ValueError):
    """Input data that cannot be used. ``problems`` holds one line per problem.

    The CLI prints the lines and exits with code 2; nothing is dropped silently.
    """

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__(self._render())

    def _render(self) -> str:
        shown = self.problems[:MAX_SHOWN]
        extra = len(self.problems) - len(shown)
        return "\n".join(shown + ([f"... and {extra} more problems"] if extra > 0 else []))

    def __str__(self) -> str:
        return self._render()


class Problems:
    """Collects problems for one file; ``raise_if_any`` turns them into a DataError."""

    def __init__(self, path: str):
        self.path = path
        self.lines: list[str] = []

    def add(self, row: int | None, field: str | None, message: str) -> None:
        where = self.path if row is None else f"{self.path} row {row}"
        self.lines.append(f"{where}, field '{field}': {message}" if field else f"{where}: {message}")

    def raise_if_any(self) -> None:
        if self.lines:
            raise DataError(self.lines)
