"""Data parallelism through accelerate: one process per device, the same recipe code everywhere.

A recipe launched with ``torchrun --nproc_per_node N -m tether.cli sft ...`` or
``accelerate launch --num_processes N -m tether.cli sft ...`` runs N copies of itself;
``Dist.current()`` finds out which copy this is (accelerate reads the launcher's environment and
starts the process group: nccl when the processes compute on GPUs, gloo on CPUs; see ``tether.utils.device``)
and the training code uses it to

- take its slice of each global micro-batch (``shard``): every process draws the same global
  order from the seed, so N processes with ``batch_size`` b see exactly the examples one process
  with ``batch_size`` N·b sees;
- wrap the model for gradient all-reduce (``wrap``: torch DDP, through accelerate) and sum
  item counts and metrics over processes (``sum``), so that the loss of a step is normalised by
  the global number of items and one process and N processes take the same optimizer step;
- write files (checkpoints, metrics, the final model) from the main process only, with a
  barrier after each write so that no process reads what is not yet there.

FSDP (``accelerate launch`` with an FSDP config, or ``ACCELERATE_USE_FSDP=true torchrun ...``): every training
recipe shards weights, gradients and optimizer state with torch's FSDP2 (``fully_shard``: one unit per transformer
block, plus the root) instead of replicating them with DDP; the online-RL recipes also shard their frozen reference
(``shard_frozen``), and a rollout gathers the policy's weights once (``gathered``): every forward of a sharded model
is a collective, but with the weights kept gathered the decoding steps are not, so each process stops at its own
EOS. The state dicts
that checkpoints and the final model are written from are gathered in full first (``full_model_state`` /
``full_optimizer_state``), so every file is the same as a single process writes. accelerate itself does not shard
on CPUs (``Accelerator(cpu=True)`` ignores an FSDP config), which is why tether reads the launcher's ``FSDP_*``
settings (``fsdp_settings``) and calls ``fully_shard`` itself. DeepSpeed is refused (see ``fsdp_settings``).

A single process (no launcher) gets ``Dist`` with ``world_size == 1``: every method is then a
no-op and nothing of torch.distributed is touched.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from tether.errors import ConfigError
from tether.utils.console import console
from tether.utils.device import resolve_device
from tether.utils.launcher import launched_world_size


class DistributedError(ConfigError):
    """A launch configuration tether cannot run correctly; the message says what to do instead (exit code 2)."""


@dataclass(frozen=True)
class FSDPSettings:
    """What tether takes from an accelerate FSDP config (the ``FSDP_*`` variables ``accelerate launch`` sets)."""

    reshard_after_forward: bool = True  # FULL_SHARD; False: SHARD_GRAD_OP (weights stay gathered until backward)
    wrap_blocks: bool = True  # TRANSFORMER_BASED_WRAP: one FSDP unit per block; False (NO_WRAP): the root only
    block_classes: tuple[str, ...] = ()  # FSDP_TRANSFORMER_CLS_TO_WRAP; empty: the model's ``_no_split_modules``


def _flag(env, name: str) -> bool:
    return env.get(name, "false").strip().lower() in ("1", "true", "yes")


def fsdp_settings(env=None) -> FSDPSettings | None:
    """The FSDP settings the launcher asked for (``ACCELERATE_USE_FSDP``), None for plain data parallelism.

    Settings tether cannot honour are refused rather than ignored; settings that cannot change the result on
    CPUs (offloading to host memory, prefetching, the state-dict type: tether always writes full state dicts)
    are accepted as they are."""
    env = os.environ if env is None else env
    if _flag(env, "ACCELERATE_USE_DEEPSPEED"):
        raise DistributedError(
            "accelerate is configured for DeepSpeed; tether does not run DeepSpeed (its engine takes over backward, "
            "accumulation, clipping and the optimizer step, and writes pickled checkpoints; on CPUs accelerate also "
            "starts it with every process taking itself for process 0 of 1). Use an FSDP config instead: the same "
            "ZeRO-3 sharding of weights, gradients and optimizer state (see docs/scaling.md)")
    if not _flag(env, "ACCELERATE_USE_FSDP"):
        return None
    strategy = env.get("FSDP_SHARDING_STRATEGY", "FULL_SHARD").strip().upper()
    strategy = {"1": "FULL_SHARD", "2": "SHARD_GRAD_OP", "3": "NO_SHARD", "4": "HYBRID_SHARD",
                "5": "HYBRID_SHARD_ZERO2"}.get(strategy, strategy)
    if strategy not in ("FULL_SHARD", "SHARD_GRAD_OP"):
        raise DistributedError(
            f"FSDP sharding strategy {strategy}: tether shards with FULL_SHARD or SHARD_GRAD_OP"
            + (" (NO_SHARD is data parallelism: launch without the FSDP config)" if strategy == "NO_SHARD" else ""))
    reshard = env.get("FSDP_RESHARD_AFTER_FORWARD")
    if env.get("FSDP_VERSION", "1").strip() == "2" and reshard is not None:  # FSDP2 configs: a boolean
        reshard_after_forward = reshard.strip().lower() in ("1", "true", "yes", "full_shard")
    else:  # FSDP1 configs: the sharding strategy says it
        reshard_after_forward = strategy == "FULL_SHARD"
    policy = env.get("FSDP_AUTO_WRAP_POLICY", "TRANSFORMER_BASED_WRAP").strip().upper()
    if policy not in ("TRANSFORMER_BASED_WRAP", "NO_WRAP"):
        raise DistributedError(f"FSDP auto wrap policy {policy}: tether wraps TRANSFORMER_BASED_WRAP (one unit per "
                               "transformer block) or NO_WRAP (the whole model as one unit)")
    if _flag(env, "FSDP_ACTIVATION_CHECKPOINTING"):
        raise DistributedError("FSDP activation checkpointing: use the recipe's model.gradient_checkpointing=true "
                               "instead (it works with FSDP)")
    if env.get("FSDP_IGNORED_MODULES", "").strip():
        raise DistributedError("FSDP ignored modules: not supported by tether; every trained parameter is sharded")
    classes = tuple(c.strip() for c in env.get("FSDP_TRANSFORMER_CLS_TO_WRAP", "").split(",") if c.strip())
    return FSDPSettings(reshard_after_forward, policy == "TRANSFORMER_BASED_WRAP", classes)


@dataclass
class Dist:
    """This process's place in a data-parallel run (``world_size == 1``: a plain single process)."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    accelerator: Any = None
    fsdp: FSDPSettings | None = None  # set: models are sharded with FSDP2 instead of replicated with DDP
    _mesh: Any = field(default=None, repr=False, compare=False)  # FSDP's device mesh, made on first use
    _blocks: set[int] = field(default_factory=set, repr=False, compare=False)  # ids of the block units sharded

    _current = None

    @classmethod
    def current(cls) -> Dist:
        """The run's ``Dist``, created once per process (the process group is started on first use)."""
        if cls._current is None:
            cls._current = cls._create()
        return cls._current

    @classmethod
    def _create(cls) -> Dist:
        device = resolve_device()  # TETHER_DEVICE (default: this process's GPU when there is one, else the CPU)
        if launched_world_size() <= 1:
            return cls(device=device)
        if device.type not in ("cpu", "cuda"):
            raise DistributedError(f"{device.type}: multi-process runs compute on CPUs (gloo) or CUDA GPUs (nccl)")
        fsdp = fsdp_settings()  # read from the launcher's environment: Accelerator(cpu=True) ignores FSDP configs
        if fsdp is not None and device.type == "cuda" and _flag(os.environ, "FSDP_OFFLOAD_PARAMS"):
            raise DistributedError("FSDP parameter offloading (fsdp_offload_params: true): not implemented by tether; "
                                   "on GPUs the shards stay on the device. Set it to false, or shard over more GPUs")
        from accelerate import Accelerator
        from accelerate.utils import DistributedType

        # on GPUs accelerate starts nccl and sets each process's device (cuda:LOCAL_RANK); on CPUs, gloo
        accelerator = Accelerator(cpu=device.type == "cpu")
        kind = accelerator.distributed_type
        allowed = (DistributedType.MULTI_CPU, DistributedType.MULTI_GPU) + ((DistributedType.FSDP,) if fsdp else ())
        if kind not in allowed:
            raise DistributedError(
                f"accelerate is configured for {kind.value}; tether trains with data parallelism (DDP) or FSDP. "
                "Use `accelerate launch` with a multi-process or FSDP config, or torchrun (see docs/scaling.md)")
        if accelerator.device.type != device.type or (device.type == "cuda" and accelerator.device.index != device.index):
            raise DistributedError(f"accelerate placed process {accelerator.process_index} on {accelerator.device}, "
                                   f"but {device} was resolved from TETHER_DEVICE / LOCAL_RANK; launch one process "
                                   "per GPU with torchrun or accelerate launch")
        if fsdp is not None and accelerator.mixed_precision != "no":
            raise DistributedError(f"FSDP with mixed_precision={accelerator.mixed_precision}: not supported by tether; "
                                   "use mixed_precision 'no' and the recipe's model.precision (bf16-mixed: tether's own "
                                   "autocast with fp32 master weights) or model.dtype instead")
        if accelerator.process_index != 0:  # one voice: progress and messages come from the main process
            console.quiet = True
        return cls(accelerator.process_index, accelerator.num_processes, accelerator.device, accelerator, fsdp)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def sharded(self) -> bool:
        """True when models are sharded with FSDP (their parameters are DTensor shards)."""
        return self.enabled and self.fsdp is not None

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
    def wrap(self, model: torch.nn.Module, roots: list[torch.nn.Module] | None = None) -> torch.nn.Module:
        """The module to run training forwards through: DDP over all processes, or ``model`` itself.

        Under an FSDP launch ``model`` is sharded in place with FSDP2 and returned (build the optimizer from its
        parameters afterwards). ``roots``: the modules that are called directly (default: ``model``), each made an
        FSDP unit over what its blocks leave, e.g. the policy, the value model's trunk and its score head for
        PPO, whose container is never called as a whole. Under DDP ``roots`` is not used."""
        if not self.enabled:
            return model
        if self.fsdp is None:
            return self.accelerator.prepare_model(model)
        return self._shard(model, roots or [model])

    def shard_frozen(self, model: torch.nn.Module | None) -> torch.nn.Module | None:
        """A frozen model (the RL reference) sharded like a trained one under FSDP; as it is otherwise (each process
        holds a copy, nothing to synchronise)."""
        if model is None or not self.sharded:
            return model
        return self._shard(model, [model])

    def _shard(self, model: torch.nn.Module, roots: list[torch.nn.Module]) -> torch.nn.Module:
        from torch.distributed.fsdp import FSDPModule, fully_shard
        from torch.distributed.tensor import DTensor

        if isinstance(model, FSDPModule):
            return model
        if any(hasattr(m, "peft_config") for m in model.modules()):
            raise DistributedError("FSDP with LoRA adapters is not supported by tether (LoRA already keeps the "
                                   "optimizer state small); train LoRA with plain data parallelism")
        if self._mesh is None:
            from torch.distributed.device_mesh import init_device_mesh

            self._mesh = init_device_mesh(self._comm_device.type, (self.world_size,))
        settings = self.fsdp
        blocks: list[torch.nn.Module] = []
        if settings.wrap_blocks:
            names = settings.block_classes or tuple(
                {n for m in model.modules() for n in (getattr(m, "_no_split_modules", None) or ())})
            blocks = [m for m in model.modules() if type(m).__name__ in names]
            if settings.block_classes and not blocks:
                raise DistributedError(f"FSDP_TRANSFORMER_CLS_TO_WRAP: {type(model).__name__} has no module of "
                                       f"class {', '.join(settings.block_classes)}")
        units = f"{len(blocks)} × {type(blocks[0]).__name__} + the rest" if blocks else "one unit"
        name = type(model).__name__  # (sharding changes the class to FSDP<name>)
        for block in blocks:
            fully_shard(block, mesh=self._mesh, reshard_after_forward=settings.reshard_after_forward)
            self._blocks.add(id(block))
        # each root unit holds what its blocks leave (embeddings, tied with the LM head, final norm, heads); torch
        # decides its resharding (it keeps a root gathered between forward and backward)
        for root in roots:
            fully_shard(root, mesh=self._mesh)
        left = [n for n, p in model.named_parameters() if not isinstance(p, DTensor)]
        if left:  # a parameter outside every unit would be neither sharded nor synchronised
            raise DistributedError(f"FSDP: {name} parameters outside every unit: {', '.join(left[:3])}")
        console.print(f"FSDP: {name} sharded over {self.world_size} processes ({units}; "
                      f"reshard after forward: {settings.reshard_after_forward})")
        return model

    @contextlib.contextmanager
    def gathered(self, model: torch.nn.Module) -> Iterator[None]:
        """Under FSDP: ``model``'s weights stay gathered from its first forward in the block to the end (a rollout's
        decoding steps then all-gather once, not once per token), and are freed afterwards. Otherwise nothing."""
        from torch.distributed.fsdp import FSDPModule

        units = [m for m in model.modules() if isinstance(m, FSDPModule)] if self.sharded else []
        for unit in units:
            unit.set_reshard_after_forward(False, recurse=False)
        try:
            yield
        finally:
            for unit in units:
                unit.reshard()
                # blocks go back to the launch's setting; a root unit stays gathered between forward and backward,
                # as torch sets it
                block = id(unit) in self._blocks
                unit.set_reshard_after_forward(self.fsdp.reshard_after_forward and block, recurse=False)

    @contextlib.contextmanager
    def no_sync(self, wrapped: torch.nn.Module, skip: bool) -> Iterator[None]:
        """Accumulate gradients locally (no all-reduce / reduce-scatter) when ``skip``: every micro-batch but the
        step's last."""
        if self.enabled and skip and hasattr(wrapped, "set_requires_gradient_sync"):  # FSDP2
            wrapped.set_requires_gradient_sync(False)
            try:
                yield
            finally:
                wrapped.set_requires_gradient_sync(True)
        elif self.enabled and skip and hasattr(wrapped, "no_sync"):
            with wrapped.no_sync():
                yield
        else:
            yield

    # --- full state dicts of a sharded model (collectives: every process calls them) -------------
    def full_model_state(self, model: torch.nn.Module, names: list[str] | None = None) -> dict[str, torch.Tensor]:
        """The whole state dict of an FSDP model, gathered on the main process's CPU (``{}`` on the others).

        Names that share one parameter (tied embeddings) share one tensor, as in the state dict of an unsharded
        model, so writers that drop tied duplicates write the same keys. ``names``: only these entries."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if not self.is_main:
            return {}
        groups: dict[int, list[str]] = {}
        for name, param in model.named_parameters(remove_duplicate=False):
            groups.setdefault(id(param), []).append(name)
        for aliases in groups.values():
            first = next((n for n in aliases if n in full), None)
            for alias in aliases:
                if first is not None and alias in full:
                    full[alias] = full[first]
        return full if names is None else {n: full[n] for n in names}

    def full_optimizer_state(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        """The optimizer's state dict as one process holds it (full tensors, parameters numbered in group order),
        gathered on the main process's CPU (``{}`` on the others)."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        full = get_optimizer_state_dict(model, optimizer,
                                        options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if not self.is_main:
            return {}
        local = optimizer.state_dict()  # numbering and hyperparameters (its tensors are shards; not kept)
        fqns = self._optimizer_fqns(model, optimizer)
        state = {index: full["state"][fqns[index]] for index in local["state"]}
        return {"state": state, "param_groups": local["param_groups"]}

    def load_full_state(self, model: torch.nn.Module, weights: dict[str, torch.Tensor],
                        optimizer: torch.optim.Optimizer | None = None, optimizer_state: dict | None = None) -> None:
        """Load full (unsharded) weights and optimizer state, as ``full_*_state`` return them, into an FSDP model and
        its optimizer; every process holds the full dicts and keeps its shard."""
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_model_state_dict,
            set_optimizer_state_dict,
        )

        options = StateDictOptions(full_state_dict=True, strict=False)
        set_model_state_dict(model, weights, options=options)
        if optimizer is not None and optimizer_state is not None:
            fqns = self._optimizer_fqns(model, optimizer)
            by_name = {"state": {fqns[int(i)]: v for i, v in optimizer_state["state"].items()},
                       "param_groups": [{**g, "params": [fqns[int(i)] for i in g["params"]]}
                                        for g in optimizer_state["param_groups"]]}
            set_optimizer_state_dict(model, optimizer, by_name, options=options)

    @staticmethod
    def _optimizer_fqns(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[int, str]:
        """Parameter number in ``optimizer.state_dict()`` → the parameter's name in ``model``."""
        names = {id(p): n for n, p in model.named_parameters()}
        params = [p for group in optimizer.param_groups for p in group["params"]]
        return {index: names[id(p)] for index, p in enumerate(params)}

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

    @property
    def reducer(self) -> Callable[[dict[str, float]], dict[str, float]] | None:
        """:meth:`sum` in a data-parallel run, None in a single process: what statistics over every process's data
        (``tether.algos.masked.masked_whiten_across``) take to know whether to reduce."""
        return self.sum if self.enabled else None

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()

    @property
    def _comm_device(self) -> torch.device:
        return self.device if torch.distributed.get_backend() == "nccl" else torch.device("cpu")


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module inside a DDP wrapper."""
    return getattr(model, "module", model) if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
