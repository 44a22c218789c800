"""Placing the roles of an RL run on Ray actors: reference, reward and generation on their own devices or nodes.

The policy and the value model train in the launching process (one optimiser, one checkpoint); the frozen roles
and the sampler can each live in a Ray actor (``placement.backend: ray``):

- ``reference``: a frozen copy of the starting policy (or ``ref_model``) answering "log π_ref of these tokens";
- ``reward``: the run's reward source (reward model(s) or ``module:function``) answering "scores of these
  responses";
- ``generation``: a sampler (transformers' ``generate``, or vLLM on a GPU) holding its own copy of the policy,
  refreshed after every update by :meth:`RemoteGenerator.sync_weights` (weights through Ray's object store).

Each actor is asked for ``placement.num_gpus[role]`` GPUs and ``placement.num_cpus[role]`` CPUs, so Ray puts it on a
node that has them. The proxies here have the interfaces the recipes already use (a ``RewardSource``, a model
for :func:`tether.rollout.generation.response_logprobs`, a :class:`tether.rollout.backends.Generator`), and the
scoring calls can be started before the policy's own forwards (:meth:`RemoteReward.start`,
:meth:`RemoteReference.start`), so the reference and reward forwards run beside the policy's old log-probs
and values. Every node needs tether (and the model files at the same paths) installed.
"""

from __future__ import annotations

import copy
import importlib.util
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch

from tether.config import ConfigError, GenerationBackendConfig, ModelConfig, PlacementConfig
from tether.rollout.generation import GenerationConfig, Rollout


class PlacementError(ConfigError):
    """A placement that cannot be set up; the message says why (exit code 2)."""


def _require_ray():
    if importlib.util.find_spec("ray") is None:
        raise PlacementError("placement.backend=ray needs Ray: pip install 'tether-rlhf[ray]' (or placement.backend=local)")
    import ray

    return ray


def _cpu(rollout: Rollout) -> Rollout:
    return _on(rollout, torch.device("cpu"))


def _on(rollout: Rollout, device: torch.device) -> Rollout:
    return Rollout(rollout.prompt_ids.to(device), rollout.prompt_mask.to(device), rollout.response_ids.to(device),
                   rollout.response_mask.to(device), rollout.ended_with_eos.to(device),
                   None if rollout.sampler_logps is None else rollout.sampler_logps.to(device))


class RoleWorker:
    """What runs inside a role's Ray actor: one role's model(s), set up by one ``setup_*`` call."""

    def __init__(self, num_threads: int):
        from tether.utils.device import configure_cpu

        configure_cpu(num_threads)
        self.model = None
        self.source = None
        self.generator = None

    # reference -------------------------------------------------------------------------------------------------
    def setup_reference(self, model_cfg: dict, ref_model: str | None, seed: int, pad_token_id: int) -> None:
        from tether.config import from_dict
        from tether.models.loading import load_causal_lm

        cfg = from_dict(ModelConfig, model_cfg)
        if ref_model:
            cfg = ModelConfig(name_or_path=ref_model, trust_remote_code=cfg.trust_remote_code, precision=cfg.precision)
        # the starting policy as the training process loads it (the same seed: the same weights), no adapters
        self.model = load_causal_lm(cfg, seed=seed, pad_token_id=pad_token_id).eval().requires_grad_(False)

    def logprobs(self, rollout: Rollout, temperature: float, padding_free: bool, share_prefixes: bool) -> torch.Tensor:
        from tether.rollout.generation import response_logprobs
        from tether.utils.device import model_device

        with torch.no_grad():
            out = response_logprobs(self.model, _on(rollout, model_device(self.model)), temperature,
                                    padding_free=padding_free, share_prefixes=share_prefixes)
        return out.cpu()

    # reward ----------------------------------------------------------------------------------------------------
    def setup_reward(self, spec: str, tokenizer_path: str, model_cfg: dict, conservative_k: float | None = None,
                     chat_template: str = "auto") -> None:
        from tether.config import from_dict
        from tether.models.loading import load_tokenizer
        from tether.rollout.rewards import load_reward_source

        tokenizer = load_tokenizer(tokenizer_path, from_dict(ModelConfig, model_cfg))
        self.source = load_reward_source(spec, tokenizer, conservative_k=conservative_k, chat_template=chat_template,
                                         precision=model_cfg.get("precision", "fp32"))

    def score(self, rollout: Rollout, prompts: list[str], responses: list[str],
              rows: list[dict] | None = None) -> torch.Tensor:
        with torch.no_grad():
            return self.source.score(rollout, prompts, responses, rows).float().cpu()

    # generation ------------------------------------------------------------------------------------------------
    def setup_generator(self, model_cfg: dict, generation: dict, seed: int, pad_token_id: int,
                        sampler_dir: str | None) -> str:
        from tether.config import from_dict
        from tether.models.loading import load_causal_lm
        from tether.rollout.backends import TransformersGenerator, VLLMGenerator, choose_backend

        gen = from_dict(GenerationBackendConfig, generation)
        backend = choose_backend(gen.backend, torch.cuda.is_available())
        if backend == "vllm":
            if sampler_dir is None:
                raise PlacementError("a vLLM sampler needs the policy's architecture on disk (sampler-init)")
            self.generator = VLLMGenerator(sampler_dir, dtype=gen.dtype, gpu_memory_utilization=gen.gpu_memory_utilization,
                                           max_num_seqs=gen.max_num_seqs, enforce_eager=gen.enforce_eager, seed=seed)
        else:
            cfg = from_dict(ModelConfig, model_cfg)
            cfg.lora.enabled = False  # the sampler holds merged weights (LoRA deltas are added when they are sent)
            self.generator = TransformersGenerator(load_causal_lm(cfg, seed=seed, pad_token_id=pad_token_id).eval(),
                                                   share_prompts=cfg.share_prefixes)
        return backend

    def generate(self, prompt_ids, prompt_mask, config: GenerationConfig, eos_token_id: int | list[int],
                 pad_token_id: int, seeds: list[int] | None) -> Rollout:
        return _cpu(self.generator.generate(prompt_ids, prompt_mask, config, eos_token_id, pad_token_id, seeds))

    def load_weights(self, weights: list[tuple[str, torch.Tensor]]) -> None:
        self.generator.load_weights(weights)


class RemoteReference:
    """The frozen reference in a Ray actor; :func:`tether.rollout.generation.response_logprobs` calls it."""

    def __init__(self, actor):
        self.actor = actor

    def start(self, rollout: Rollout, temperature: float, padding_free: bool = True,
              share_prefixes: bool = True) -> Callable[[], torch.Tensor]:
        """Send the request now; call the result for the (B, R) log-probs on the rollout's device."""
        return _pending(self.actor.logprobs.remote(_cpu(rollout), temperature, padding_free, share_prefixes),
                        rollout.response_ids.device)

    def response_logprobs(self, rollout: Rollout, temperature: float = 1.0, padding_free: bool = True,
                          share_prefixes: bool = True) -> torch.Tensor:
        return self.start(rollout, temperature, padding_free, share_prefixes)()


class RemoteReward:
    """The reward source in a Ray actor (a ``RewardSource``)."""

    def __init__(self, actor):
        self.actor = actor

    def start(self, rollout: Rollout, prompts: list[str], responses: list[str],
              rows: list[dict] | None = None) -> Callable[[], torch.Tensor]:
        """Send the request now; call the result for the (B,) scores on the rollout's device."""
        return _pending(self.actor.score.remote(_cpu(rollout), prompts, responses, rows), rollout.response_ids.device)

    def score(self, rollout: Rollout, prompts: list[str], responses: list[str],
              rows: list[dict] | None = None) -> torch.Tensor:
        return self.start(rollout, prompts, responses, rows)()


class RemoteGenerator:
    """The sampler in a Ray actor (a :class:`tether.rollout.backends.Generator`); ``sync_weights`` ships the
    policy's weights (LoRA deltas added) through the object store after every update."""

    def __init__(self, actor, backend: str):
        self.actor = actor
        self.name = f"ray:{backend}"

    def generate(self, prompt_ids, prompt_mask, config, eos_token_id, pad_token_id, seeds=None) -> Rollout:
        import ray

        rollout = ray.get(self.actor.generate.remote(prompt_ids.cpu(), prompt_mask.cpu(), config, eos_token_id,
                                                     pad_token_id, seeds))
        return _on(rollout, prompt_ids.device)

    def sync_weights(self, policy: torch.nn.Module) -> None:
        import ray

        from tether.rollout.backends import export_weights

        weights = [(name, tensor.detach().cpu()) for name, tensor in export_weights(policy)]
        ray.get(self.actor.load_weights.remote(ray.put(weights)))


def _pending(ref, device: torch.device) -> Callable[[], torch.Tensor]:
    """A Ray result to wait for: the tensor on ``device``."""
    def wait() -> torch.Tensor:
        import ray

        return ray.get(ref).to(device)

    return wait


def start_score(reward_source, rollout: Rollout, prompts: list[str], responses: list[str],
                rows: list[dict] | None = None) -> Callable[[], torch.Tensor]:
    """Start scoring (a remote reward starts now, in its actor); call the result for the (B,) scores. ``rows``: each
    response's prompt row, for the sources that check against it (verifiers)."""
    if isinstance(reward_source, RemoteReward):
        return reward_source.start(rollout, prompts, responses, rows)
    return lambda: reward_source.score(rollout, prompts, responses, rows)


def start_logprobs(model, rollout: Rollout, temperature: float, padding_free: bool,
                   share_prefixes: bool) -> Callable[[], torch.Tensor] | None:
    """Start a remote reference's log-probs now (call the result for them); None for an in-process model."""
    if isinstance(model, RemoteReference):
        return model.start(rollout, temperature, padding_free, share_prefixes)
    return None


class RayRoles:
    """The run's Ray actors, one per placed role; ``close()`` ends them (and Ray, if this run started it)."""

    def __init__(self, placement: PlacementConfig, seed: int):
        from tether.utils.distributed import Dist

        if Dist.current().enabled:
            raise PlacementError("placement.backend=ray places roles from one training process; launch the run "
                                 "without torchrun / accelerate (data-parallel policy training with Ray roles is not "
                                 "supported yet)")
        ray = _require_ray()
        self.ray = ray
        self.placement = placement
        self.seed = seed
        self.started = False
        if not ray.is_initialized():
            ray.init(address=placement.address or None, include_dashboard=False, log_to_driver=True,
                     configure_logging=False)
            self.started = True
        self.actors: dict[str, object] = {}

    def placed(self, role: str) -> bool:
        return role in self.placement.roles

    def _actor(self, role: str):
        cpus = float(self.placement.num_cpus.get(role, 1))
        gpus = float(self.placement.num_gpus.get(role, 0))
        threads = self.placement.num_threads or max(1, int(cpus))
        actor_cls = self.ray.remote(num_cpus=cpus, num_gpus=gpus)(RoleWorker)
        actor = actor_cls.options(name=None).remote(threads)
        self.actors[role] = actor
        return actor

    def reference(self, model_cfg: ModelConfig, ref_model: str | None, pad_token_id: int) -> RemoteReference:
        actor = self._actor("reference")
        self.ray.get(actor.setup_reference.remote(asdict(model_cfg), ref_model, self.seed, pad_token_id))
        return RemoteReference(actor)

    def reward(self, spec: str, model_cfg: ModelConfig, conservative_k: float | None = None,
               chat_template: str = "auto") -> RemoteReward:
        actor = self._actor("reward")
        spec = ",".join(str(Path(p.strip()).resolve()) if Path(p.strip()).is_dir() else p for p in spec.split(","))
        self.ray.get(actor.setup_reward.remote(spec, _absolute(model_cfg.name_or_path), asdict(model_cfg), conservative_k,
                                                chat_template))
        return RemoteReward(actor)

    def generator(self, model_cfg: ModelConfig, generation: GenerationBackendConfig, pad_token_id: int,
                  policy: torch.nn.Module, tokenizer, run_dir: Path) -> RemoteGenerator:
        from tether.rollout.backends import choose_backend, sampler_model_dir

        actor = self._actor("generation")
        wants_vllm = choose_backend(generation.backend, self.placement.num_gpus.get("generation", 0) > 0) == "vllm"
        sampler_dir = str(sampler_model_dir(policy, tokenizer, run_dir).resolve()) if wants_vllm else None
        cfg = copy.deepcopy(model_cfg)
        cfg.name_or_path = _absolute(cfg.name_or_path)
        backend = self.ray.get(actor.setup_generator.remote(asdict(cfg), asdict(generation), self.seed, pad_token_id,
                                                            sampler_dir))
        generator = RemoteGenerator(actor, backend)
        generator.sync_weights(policy)  # the policy as it is now (a resumed run's weights, not the starting ones)
        return generator

    def close(self) -> None:
        for actor in self.actors.values():
            self.ray.kill(actor)
        self.actors.clear()
        if self.started:
            self.ray.shutdown()
            self.started = False


def _absolute(path: str) -> str:
    """A local model path made absolute (an actor's working directory may differ); other names unchanged."""
    return str(Path(path).resolve()) if Path(path).exists() else path
