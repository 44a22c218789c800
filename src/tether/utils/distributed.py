"""Data parallelism through accelerate: one process per device, the same recipe code everywhere.

A recipe launched with ``torchrun --nproc_per_node N -m tether.cli sft ...`` or
``accelerate launch --num_processes N -m tether.cli sft ...`` runs N copies of itself;
``Dist.current()`` finds out which copy this is (accelerate reads the launcher's environment and
starts the process group; gloo, since tether computes on CPUs today) and the training code uses it to

- take its slice of each global micro-batch (``shard``): every process draws the same global
  order from the seed, so N processes with ``batch_size`` b see exactly the examples one process
  with ``batch_size`` N·b sees;
- wrap the model for gradient all-reduce (``wrap``: torch DDP, through accelerate) and sum
  item counts and metrics over processes (``sum``), so that the loss of a step is normalised by
  the global number of items and one process and N processes take the same optimizer step;
- write files (checkpoints, metrics, the final model) from the main process only, with a
  barrier after each write so that no process reads what is not yet there.

A single process (no launcher) gets ``Dist`` with ``world_size == 1``: every method is then a
no-op and nothing of torch.distributed is touched.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from tether.config import ConfigError


class DistributedError(ConfigError):
    """A launch configuration tether cannot run correctly; the message says what to do instead (exit code 2)."""


def launched_world_size() -> int:
    """The number of processes a launcher (torchrun, accelerate launch, MPI) started, from its environment."""
    for name in ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE"):
        value = os.environ.get(name)
        if value and value.isdigit():
            return int(value)
    return 1


@dataclass
class Dist:
    """This process's place in a data-parallel run (``world_size == 1``: a plain single process)."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    accelerator: Any = None

    _current = None

    @classmethod
    def current(cls) -> Dist:
        """The run's ``Dist``, created once per process (the process group is started on first use)."""
        if cls._current is None:
            cls._current = cls._create()
        return cls._current

    @classmethod
    def _create(cls) -> Dist:
        if launched_world_size() <= 1:
            return cls()
        from accelerate import Accelerator
        from accelerate.utils import DistributedType

        # compute stays on the CPU for now (gloo): the recipes do not place models and batches on GPUs yet
        accelerator = Accelerator(cpu=True)
        kind = accelerator.distributed_type
        if kind not in (DistributedType.MULTI_CPU, DistributedType.MULTI_GPU):
            raise DistributedError(
                f"accelerate is configured for {kind.value}; tether trains with data parallelism (DDP) today. "
                "Use `accelerate launch` without an FSDP / DeepSpeed config, or torchrun (see docs/scaling.md)")
        if accelerator.process_index != 0:  # one voice: progress and messages come from the main process
            from tether.utils.logging import console

            console.quiet = True
        return cls(accelerator.process_index, accelerator.num_processes, accelerator.device, accelerator)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # --- data ----------------------------------------------------------------------------------
    def shard(self, global_items: list, per_process: int) -> list:
        """This process's slice of a global micro-batch of ``world_size · per_process`` items (may be empty)."""
        return global_items[self.rank * per_process:(self.rank + 1) * per_process]

    def share(self, total: int) -> int:
        """This process's part of a global count (e.g. a minibatch size), at least 1."""
        return max(1, total // self.world_size)

    def require_divisible(self, field: str, total: int) -> None:
        """Refuse (exit code 2) a global batch of ``total`` that the processes cannot share evenly."""
        if total % self.world_size:
            raise DistributedError(f"{field}: {total} prompts cannot be shared evenly by {self.world_size} processes; "
                                   f"use a multiple of {self.world_size}")

    def shard_evenly(self, items: list) -> list:
        """Contiguous, nearly equal slices of ``items``, one per process, in rank order."""
        n = len(items)
        start = self.rank * n // self.world_size
        end = (self.rank + 1) * n // self.world_size
        return items[start:end]

    # --- model ---------------------------------------------------------------------------------
    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """The module to run training forwards through: DDP over all processes, or ``model`` itself."""
        if not self.enabled:
            return model
        return self.accelerator.prepare_model(model)

    @contextlib.contextmanager
    def no_sync(self, wrapped: torch.nn.Module, skip: bool) -> Iterator[None]:
        """Accumulate gradients locally (no all-reduce) when ``skip``: every micro-batch but the step's last."""
        if self.enabled and skip and hasattr(wrapped, "no_sync"):
            with wrapped.no_sync():
                yield
        else:
            yield

    # --- collectives ---------------------------------------------------------------------------
    def sum(self, values: dict[str, float]) -> dict[str, float]:
        """Each value summed over processes (in float64; identical on every process)."""
        if not self.enabled or not values:
            return dict(values)
        keys = sorted(values)
        tensor = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=self._comm_device)
        torch.distributed.all_reduce(tensor)
        return dict(zip(keys, tensor.tolist()))

    def combine(self, values: dict[str, float], summed: tuple[str, ...] = ()) -> dict[str, float]:
        """Metrics of equal shares over processes: the keys in ``summed`` (each process holds its share of a
        global total) added up, every other key averaged."""
        totals = self.sum(values)
        return {k: v if k in summed else v / self.world_size for k, v in totals.items()}

    def sum_int(self, value: int) -> int:
        return int(round(self.sum({"v": value})["v"]))

    def any(self, flag: bool) -> bool:
        """True on every process when ``flag`` is true on any (e.g. a stop signal reached one of them)."""
        return bool(self.sum({"v": float(flag)})["v"] > 0) if self.enabled else flag

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Every process's ``tensor`` (same shape on each), concatenated along dim 0 in rank order."""
        if not self.enabled:
            return tensor
        parts = [torch.empty_like(tensor) for _ in range(self.world_size)]
        torch.distributed.all_gather(parts, tensor.contiguous())
        return torch.cat(parts, dim=0)

    def whiten(self, values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``masked_whiten`` over the masked elements of every process (two passes, as on one process)."""
        from tether.algos.masked import masked_whiten, whiten_with

        if not self.enabled:
            return masked_whiten(values, mask)
        values, weights = values.float(), mask.float()
        totals = self.sum({"sum": float((values * weights).sum()), "n": float(weights.sum())})
        mean = totals["sum"] / totals["n"]
        variance = self.sum({"sq": float((((values - mean) ** 2) * weights).sum())})["sq"] / totals["n"]
        return whiten_with(values, mask, torch.tensor(mean), torch.tensor(variance))

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()

    @property
    def _comm_device(self) -> torch.device:
        return self.device if torch.distributed.get_backend() == "nccl" else torch.device("cpu")


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module inside a DDP wrapper."""
    return getattr(model, "module", model) if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
