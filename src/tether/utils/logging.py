"""Metric sinks: ``metrics.jsonl`` (always), TensorBoard, and W&B / MLflow when installed and asked for.

Each record in ``metrics.jsonl`` is one JSON object: ``{"stage": "sft", "step": 12,
"time": <unix seconds>, "loss/nll": 2.31, ...}``. Names are documented in docs/metrics.md.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tether.utils.console import console  # noqa: F401 - the console is imported from here too
from tether.utils.distributed import Dist
from tether.utils.files import atomic_write_text


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class MetricsLogger:
    """Append-only metric log for one stage of a run."""

    def __init__(self, run_dir: str | Path, stage: str, report_to: list[str] | None = None, config: dict | None = None,
                 on_open: Callable[[], None] | None = None):
        """Nothing is written until the first ``log``: a run that fails on bad input leaves its run directory
        untouched. ``on_open`` runs then (``prepare_run`` records the config with it)."""
        self.run_dir = Path(run_dir)
        self.stage = stage
        self.path = self.run_dir / "metrics.jsonl"
        self._tb = None
        self._wandb = None
        self._mlflow = None
        self._pending: tuple[list[str], dict, Callable[[], None] | None] | None = (list(report_to or []), config or {},
                                                                                  on_open)

    def _open(self) -> None:
        if self._pending is None:
            return
        report_to, config, on_open = self._pending
        self._pending = None
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if on_open is not None:
            on_open()
        for sink in report_to:
            self._open_sink(sink.strip().lower(), config)

    def _open_sink(self, sink: str, config: dict) -> None:
        if sink == "tensorboard":
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                console.print("[yellow]tensorboard is not installed; metrics go to metrics.jsonl only[/]")
                return
            self._tb = SummaryWriter(log_dir=str(self.run_dir / "tensorboard" / self.stage))
        elif sink == "wandb":
            try:
                import wandb
            except ImportError:
                console.print("[yellow]report_to has wandb but it is not installed (pip install wandb)[/]")
                return
            self._wandb = wandb.init(project="tether", name=f"{self.run_dir.name}-{self.stage}", config=config,
                                     dir=str(self.run_dir), reinit=True)
        elif sink == "mlflow":
            try:
                import mlflow
            except ImportError:
                console.print("[yellow]report_to has mlflow but it is not installed (pip install mlflow)[/]")
                return
            mlflow.start_run(run_name=f"{self.run_dir.name}-{self.stage}")
            self._mlflow = mlflow
        elif sink:
            console.print(f"[yellow]unknown metric sink '{sink}' ignored (tensorboard, wandb, mlflow)[/]")

    def log(self, metrics: dict[str, Any], step: int) -> dict[str, Any]:
        record = {"stage": self.stage, "step": step, "time": round(time.time(), 3)}
        record.update({k: _plain(v) for k, v in metrics.items()})
        if not Dist.current().is_main:  # in a data-parallel run the main process writes the (global) metrics
            return record
        self._open()
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
            handle.flush()
        numeric = {k: v for k, v in record.items() if isinstance(v, (int, float)) and k not in ("step", "time")}
        if self._tb is not None:
            for key, value in numeric.items():
                self._tb.add_scalar(f"{self.stage}/{key}", value, step)
        if self._wandb is not None:
            self._wandb.log({f"{self.stage}/{k}": v for k, v in numeric.items()}, step=step)
        if self._mlflow is not None:
            self._mlflow.log_metrics({f"{self.stage}.{k}".replace("/", "."): v for k, v in numeric.items()}, step=step)
        return record

    def discard_after(self, step: int) -> int:
        """Drop this stage's records past ``step`` from metrics.jsonl (a resumed run logs those steps again, so
        a crash after the last checkpoint leaves no duplicates); returns how many were dropped."""
        if not Dist.current().is_main or not self.path.is_file():
            return 0
        lines = self.path.read_text(encoding="utf-8").splitlines()
        kept = []
        for line in lines:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line torn by a crash mid-write
                continue
            if not (row.get("stage") == self.stage and isinstance(row.get("step"), int) and row["step"] > step):
                kept.append(line)
        if len(kept) == len(lines):
            return 0
        atomic_write_text(self.path, "".join(k + "\n" for k in kept))
        return len(lines) - len(kept)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.flush()
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()
        if self._mlflow is not None:
            self._mlflow.end_run()


def read_metrics(run_dir: str | Path, stage: str | None = None) -> list[dict[str, Any]]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if stage is None or r.get("stage") == stage]
