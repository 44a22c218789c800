"""Generation backends: one interface for sampling rollouts, whatever does the sampling.

``Generator.generate(prompt_ids, prompt_mask, config, eos_token_id, pad_token_id, seeds) -> Rollout`` and
``Generator.sync_weights(policy)`` (called after each policy update; the sampler then samples from the new
weights). ``eos_token_id`` is one id or several (the tokenizer's EOS first); every backend also stops at its
model's own EOS ids (config and generation config: Llama-3's ``<|eot_id|>``, ..., :mod:`tether.models.special_tokens`),
so both stop at the same set, and a response keeps the stop token it sampled, with its sampled log-prob. Backends:

- ``transformers`` (:class:`TransformersGenerator`, the default): the policy's own ``generate`` with the KV cache,
  batched, left-padded prompts. It samples from the live policy, so ``sync_weights`` has nothing to do.
- ``vllm`` (:class:`VLLMGenerator`, optional extra, CUDA only): a colocated ``vllm.LLM`` engine (paged attention,
  continuous batching) holding its own copy of the weights, refreshed by ``sync_weights`` from the trained policy
  (LoRA deltas merged on the fly, FSDP shards gathered). Per-row seeds become vLLM per-request seeds.

``auto`` picks vLLM when it is installed and the policy is on a CUDA device, else transformers.
The PPO/GRPO log-probs are always recomputed by the trained policy (fp32), so a sampler that differs slightly
(vLLM's bf16 kernels) makes the rollout a little off-policy; the gap is reported as ``generation/logprob_gap``.
"""

from __future__ import annotations

import importlib.util
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol

import torch

from tether.errors import TetherInputError
from tether.models.loading import is_peft, replace_dir
from tether.models.special_tokens import as_stop_ids, config_stop_ids
from tether.rollout.generation import GenerationConfig, Rollout, generate
from tether.utils.device import model_device
from tether.utils.distributed import Dist, unwrap


class Generator(Protocol):
    name: str

    def generate(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, config: GenerationConfig,
                 eos_token_id: int | Sequence[int], pad_token_id: int, seeds: list[int] | None = None) -> Rollout:
        ...

    def sync_weights(self, policy: torch.nn.Module) -> None:
        ...


class GenerationBackendError(TetherInputError, RuntimeError):
    """A generation backend that cannot be used here; the message says why and what to do."""


class TransformersGenerator:
    """Sampling with the policy's own ``generate`` (:func:`tether.rollout.generation.generate`; it stops at
    ``eos_token_id`` and the model's own EOS ids)."""

    name = "transformers"

    def __init__(self, model: torch.nn.Module, share_prompts: bool = True):
        self.model = model
        self.share_prompts = share_prompts  # rows with the same prompt share its prefill

    def generate(self, prompt_ids, prompt_mask, config, eos_token_id, pad_token_id, seeds=None) -> Rollout:
        return generate(self.model, prompt_ids, prompt_mask, config, eos_token_id, pad_token_id, seeds=seeds,
                        share_prompts=self.share_prompts)

    def sync_weights(self, policy: torch.nn.Module) -> None:
        if policy is not self.model:  # a separate sampling copy (a remote sampler): take the policy's weights
            self.load_weights(export_weights(policy))

    def load_weights(self, weights) -> None:
        load_named_weights(self.model, weights)


# --------------------------------------------------------------------------- weights out of a trained policy


def export_weights(model: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) of every weight of ``model`` under the plain transformers names, as a sampler loads them.

    DDP wrappers are looked through; FSDP2 shards are gathered one tensor at a time (``full_tensor``); a peft
    LoRA model yields its base weights with the adapters' deltas added (W + B·A·scale), computed without merging
    in place, so the base, which is also the reference, is not touched by rounding. Tied weights come once."""
    model = unwrap(model)
    if not is_peft(model):
        for name, param in model.named_parameters():
            yield name, _full(param).detach()
        return
    from peft.tuners.lora import LoraLayer

    base = model.get_base_model()
    layers = {name: module for name, module in base.named_modules() if isinstance(module, LoraLayer)}
    for name, param in base.named_parameters():
        if ".lora_" in name or "original_module" in name:
            continue
        owner, _, leaf = name.rpartition(".")
        clean = name.replace(".base_layer", "").replace(".modules_to_save.default", "")
        tensor = _full(param).detach()
        layer = layers.get(owner.removesuffix(".base_layer")) if owner.endswith(".base_layer") else None
        if layer is not None and leaf == "weight" and not getattr(layer, "merged", False):
            for adapter in layer.active_adapters:
                if adapter in layer.lora_A:
                    tensor = tensor + layer.get_delta_weight(adapter).to(tensor.dtype)
        yield clean, tensor


def _full(param: torch.Tensor) -> torch.Tensor:
    return param.full_tensor() if hasattr(param, "full_tensor") else param


@torch.no_grad()
def load_named_weights(model: torch.nn.Module, weights) -> None:
    """Copy (name, tensor) pairs into ``model``'s parameters of the same names; every parameter must be given."""
    params = dict(model.named_parameters())
    seen = set()
    for name, tensor in weights:
        if name not in params:
            raise KeyError(f"weight sync: the sampler has no parameter '{name}' (is it the same architecture?)")
        params[name].copy_(tensor.to(params[name].device, params[name].dtype))
        seen.add(name)
    missing = sorted(set(params) - seen)
    if missing:
        raise KeyError(f"weight sync: no weights sent for {missing[:5]}{' …' if len(missing) > 5 else ''}")


# --------------------------------------------------------------------------- vLLM


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def cuda_available() -> bool:
    return torch.cuda.is_available()


def require_vllm() -> None:
    """Raise :class:`GenerationBackendError` unless vLLM is installed and a CUDA GPU is present."""
    if not vllm_available():
        raise GenerationBackendError("generation.backend=vllm needs vLLM: pip install 'tether-rlhf[vllm]' "
                                     "(CUDA GPUs only); or use generation.backend=transformers")
    if not cuda_available():
        raise GenerationBackendError("generation.backend=vllm needs a CUDA GPU; on this machine use "
                                     "generation.backend=transformers")


class VLLMGenerator:
    """A colocated vLLM engine as the sampler, its weights refreshed from the policy after each update.

    ``model_dir``: a transformers directory with the policy's architecture and tokenizer (its weights are replaced
    by the first ``sync_weights``). In a multi-process run each process holds its own engine
    (``distributed_executor_backend="external_launcher"``, as TRL's colocate mode), sampling its share.

    Stop ids: vLLM stops at the tokenizer's EOS and at every EOS id of the directory's generation config whatever it
    is asked; each request is given those ids and ``eos_token_id`` as ``stop_token_ids``, so the engine and the
    rollout's mask agree. vLLM keeps the stop token it sampled (with its log-prob) in the output; nothing is ever
    appended (a "stop" finish without a stop token, as a stop string gives, counts as not ended)."""

    name = "vllm"

    def __init__(self, model_dir: str | Path, *, dtype: str = "auto", gpu_memory_utilization: float = 0.3,
                 max_model_len: int | None = None, max_num_seqs: int | None = None, enforce_eager: bool = False,
                 seed: int = 0, dist=None):
        require_vllm()
        from vllm import LLM

        dist = dist or Dist.current()
        os.environ.setdefault("RANK", str(dist.rank))
        os.environ.setdefault("LOCAL_RANK", str(dist.rank))
        os.environ.setdefault("WORLD_SIZE", str(dist.world_size))
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", "29533")
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # the engine in this process: its model reachable
        kwargs = dict(model=str(model_dir), dtype=dtype, gpu_memory_utilization=gpu_memory_utilization,
                      max_model_len=max_model_len, enforce_eager=enforce_eager, seed=seed + dist.rank,
                      distributed_executor_backend="external_launcher", enable_prefix_caching=True,
                      trust_remote_code=False, logprobs_mode="processed_logprobs")
        if max_num_seqs:
            kwargs["max_num_seqs"] = max_num_seqs
        self.model_stop_ids = config_stop_ids(model_dir)  # the EOS ids the engine stops at anyway
        self.llm = LLM(**kwargs)

    def generate(self, prompt_ids, prompt_mask, config, eos_token_id, pad_token_id, seeds=None) -> Rollout:
        from vllm import SamplingParams

        if seeds is not None and len(seeds) != prompt_ids.shape[0]:
            raise ValueError(f"{len(seeds)} seeds for {prompt_ids.shape[0]} prompts")
        rows = [ids[mask.bool()].tolist() for ids, mask in zip(prompt_ids, prompt_mask)]  # left padding dropped
        stops = as_stop_ids(eos_token_id, self.model_stop_ids)
        params = [SamplingParams(n=1, temperature=config.temperature if config.do_sample else 0.0,
                                 top_p=config.top_p, max_tokens=config.max_new_tokens,
                                 min_tokens=config.min_new_tokens, stop_token_ids=list(stops), logprobs=0,
                                 seed=None if seeds is None else int(seeds[i]))
                  for i in range(len(rows))]
        outputs = self.llm.generate([{"prompt_token_ids": r} for r in rows], sampling_params=params, use_tqdm=False)
        completions, logps = [], []
        for out in outputs:
            sample = out.outputs[0]
            ids = list(sample.token_ids)  # as sampled, the stop token included: nothing is added
            completions.append(ids)
            logps.append([entry[token].logprob for entry, token in zip(sample.logprobs or [], ids)])
        return rollout_from_completions(prompt_ids, prompt_mask, completions, stops, pad_token_id, logps)

    def sync_weights(self, policy: torch.nn.Module) -> None:
        self.load_weights(export_weights(policy))

    def load_weights(self, weights) -> None:
        engine_model(self.llm).load_weights(weights)
        self.llm.reset_prefix_cache()  # cached prompt states were computed with the old weights


# where an in-process vLLM engine keeps its model, by engine generation (the first that resolves is used)
ENGINE_MODEL_PATHS = (
    "llm_engine.model_executor.driver_worker.worker.model_runner.model",          # V1, executor exposed
    "llm_engine.engine_core.engine_core.model_executor.driver_worker.worker.model_runner.model",  # V1 in-process core
    "llm_engine.model_executor.driver_worker.model_runner.model",                 # V0
)


def engine_model(llm):
    """The ``torch.nn.Module`` inside an in-process vLLM ``LLM`` (its ``load_weights`` takes (name, tensor)
    pairs under the transformers names)."""
    for path in ENGINE_MODEL_PATHS:
        node = llm
        for part in path.split("."):
            node = getattr(node, part, None)
            if node is None:
                break
        if node is not None:
            return node
    raise GenerationBackendError("cannot reach the vLLM engine's model for weight sync (tried "
                                 + ", ".join(ENGINE_MODEL_PATHS) + "); is VLLM_ENABLE_V1_MULTIPROCESSING=0 set "
                                 "and the engine started with distributed_executor_backend=external_launcher?")


def rollout_from_completions(prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, completions: list[list[int]],
                             eos_token_id: int | Sequence[int], pad_token_id: int,
                             sampler_logps: list[list[float]] | None = None) -> Rollout:
    """A :class:`Rollout` from per-row completion token lists: right-padded to the longest, the mask 1 up to and
    including each row's first stop token (any of ``eos_token_id``: one id or several; the whole row when it has
    none), later tokens replaced by pad (so pad == EOS is no ambiguity: the mask comes from the lists, not from the
    padded tensor)."""
    stops = set(as_stop_ids(eos_token_id))
    width = max(1, max((len(c) for c in completions), default=0))
    ids = torch.full((len(completions), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros(len(completions), width, dtype=torch.long)
    logps = torch.zeros(len(completions), width)
    ended = torch.zeros(len(completions), dtype=torch.bool)
    for i, row in enumerate(completions):
        first_stop = next((j for j, token in enumerate(row) if token in stops), None)
        length = len(row) if first_stop is None else first_stop + 1
        ended[i] = first_stop is not None
        ids[i, :length] = torch.tensor(row[:length], dtype=torch.long)
        mask[i, :length] = 1
        if sampler_logps is not None and sampler_logps[i]:
            row_logps = sampler_logps[i][:length]
            logps[i, :len(row_logps)] = torch.tensor(row_logps, dtype=torch.float32)
    device = prompt_ids.device
    return Rollout(prompt_ids, prompt_mask, ids.to(device), mask.to(device), ended.to(device),
                   sampler_logps=None if sampler_logps is None else logps.to(device))


# --------------------------------------------------------------------------- choosing one


def choose_backend(backend: str, on_cuda: bool) -> str:
    """``auto`` → ``vllm`` when vLLM is installed and the sampler gets a CUDA device, else ``transformers``."""
    if backend not in ("auto", "transformers", "vllm"):
        raise GenerationBackendError(f"generation.backend: expected auto, transformers or vllm, got '{backend}'")
    if backend != "auto":
        return backend
    return "vllm" if vllm_available() and on_cuda else "transformers"


def resolve_backend(backend: str, policy: torch.nn.Module) -> str:
    """:func:`choose_backend` for a sampler colocated with ``policy`` (on the policy's device)."""
    return choose_backend(backend, model_device(policy).type == "cuda")


def make_generator(cfg, policy: torch.nn.Module, run_dir: Path, tokenizer, max_model_len: int, seed: int,
                   share_prompts: bool = True) -> Generator:
    """The run's sampler for ``cfg`` (a :class:`tether.config.GenerationBackendConfig`); a vLLM sampler starts from
    the policy's current weights (and caches shared prompts itself; ``share_prompts`` is for transformers)."""
    backend = resolve_backend(cfg.backend, policy)
    if backend == "transformers":
        return TransformersGenerator(policy, share_prompts)
    model_dir = sampler_model_dir(policy, tokenizer, run_dir)
    generator = VLLMGenerator(model_dir, dtype=cfg.dtype, gpu_memory_utilization=cfg.gpu_memory_utilization,
                              max_model_len=max_model_len, max_num_seqs=cfg.max_num_seqs,
                              enforce_eager=cfg.enforce_eager, seed=seed)
    generator.sync_weights(policy)
    return generator


def sampler_model_dir(policy: torch.nn.Module, tokenizer, run_dir: Path) -> Path:
    """A transformers directory with the policy's architecture, for an engine that loads from disk: the policy's
    current weights (LoRA deltas added, the policy itself untouched) and tokenizer, written once under
    ``<run_dir>/sampler-init`` (the first ``sync_weights`` loads the live weights anyway)."""
    import shutil
    import tempfile

    target = Path(run_dir) / "sampler-init"
    dist = Dist.current()
    if not (target / "config.json").is_file():
        state = {name: tensor.cpu().contiguous() for name, tensor in export_weights(policy)}  # every process gathers
        if dist.is_main:
            model = unwrap(policy)
            model = model.get_base_model() if is_peft(model) else model
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".sampler-init.tmp-", dir=target.parent))
            try:
                model.save_pretrained(tmp, state_dict=state, safe_serialization=True)
                tokenizer.save_pretrained(tmp)
                replace_dir(tmp, target)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    dist.barrier()
    return target


def timed_sync(generator: Generator, policy: torch.nn.Module) -> dict[str, float]:
    """``generator.sync_weights(policy)`` after an update (the next rollout samples from the updated policy);
    ``time/weight_sync`` for a sampler that holds its own copy (the in-process transformers one has nothing to do)."""
    start = time.time()
    generator.sync_weights(policy)
    return {} if generator.name == "transformers" else {"time/weight_sync": time.time() - start}


def sampler_gap(rollout: Rollout, logps: torch.Tensor | None) -> dict[str, float]:
    """How far the sampling engine's log-probs are from the trained policy's on the sampled tokens (vLLM, or a
    policy computing in bf16-mixed / bf16, whose generate records them: :mod:`tether.models.precision`):
    ``generation/logprob_gap`` is the mean |log π_train − log π_sampler| over response tokens. Near 0 when both run
    the same weights at the same precision; a growing gap means the rollouts are off-policy (a stale sync, or
    bf16 kernels) and the clipped ratio no longer measures the sampler's distribution."""
    if rollout.sampler_logps is None or logps is None:
        return {}
    mask = rollout.response_mask.bool()
    diff = (logps.float() - rollout.sampler_logps.float())[mask]
    return {"generation/logprob_gap": float(diff.abs().mean()) if diff.numel() else 0.0}
