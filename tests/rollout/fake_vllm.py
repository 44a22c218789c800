"""A stand-in for the ``vllm`` package, for testing :class:`tether.rollout.backends.VLLMGenerator` without a GPU.

It keeps to the part of vLLM's API the backend uses (``LLM(...)``, ``SamplingParams(...)``, ``LLM.generate`` with
token-id prompts and per-request params, ``RequestOutput.outputs[0].token_ids / .logprobs / .finish_reason``, the
engine's model under ``llm_engine.model_executor.driver_worker.worker.model_runner.model`` with ``load_weights``,
``reset_prefix_cache``) and runs a real transformers model loaded from the directory it is given, so what it samples
and the log-probs it reports follow the weights it was last sent. Every call is recorded for the tests to check.

Stopping is vLLM's: a request stops at its ``stop_token_ids`` and also at every EOS id of the model directory's
generation config (vLLM's ``SamplingParams.update_from_generation_config`` adds them to each request), keeping the
stop token it sampled in ``token_ids``; ``min_tokens`` holds back all of those ids."""
from __future__ import annotations

import importlib.machinery
import sys
import types
from dataclasses import dataclass, field
from types import SimpleNamespace

import torch


@dataclass
class SamplingParams:
    """vLLM's field names; an unknown keyword is a TypeError, as in vLLM."""

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int | None = 16
    min_tokens: int = 0
    stop_token_ids: list[int] = field(default_factory=list)
    logprobs: int | None = None
    seed: int | None = None


class _EngineModel:
    def __init__(self, llm: LLM):
        self.llm = llm

    def load_weights(self, weights):
        from tether.rollout.backends import load_named_weights

        weights = [(name, tensor.detach().clone()) for name, tensor in weights]
        self.llm.loads.append([name for name, _ in weights])
        if not self.llm.frozen:
            load_named_weights(self.llm.model, weights)


class LLM:
    instances: list[LLM] = []

    def __init__(self, model: str, **kwargs):
        from transformers import AutoModelForCausalLM

        self.kwargs = {"model": model, **kwargs}
        self.model = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).eval()
        self.calls: list[tuple[list[dict], list[SamplingParams]]] = []
        self.loads: list[list[str]] = []
        self.prefix_resets = 0
        # canned (token_ids, finish_reason) or (token_ids, finish_reason, logprob of each token) per request
        self.script: list[tuple] | None = None
        self.frozen = False  # True: load_weights records the call and ignores the weights (a broken sync)
        self.logprob_noise = 0.0  # σ of Gaussian noise added to each reported log-prob (a mismatched engine)
        self.noise = torch.Generator().manual_seed(1234)
        eos = self.model.generation_config.eos_token_id  # an int, a list or None, as in the directory
        self.generation_eos = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
        runner = SimpleNamespace(model=_EngineModel(self))
        self.llm_engine = SimpleNamespace(model_executor=SimpleNamespace(
            driver_worker=SimpleNamespace(worker=SimpleNamespace(model_runner=runner))))
        LLM.instances.append(self)

    def reset_prefix_cache(self):
        self.prefix_resets += 1

    def generate(self, prompts, sampling_params, use_tqdm=True):
        assert isinstance(sampling_params, list) and len(sampling_params) == len(prompts)
        self.calls.append((prompts, sampling_params))
        if self.script is not None:
            return [_output(ids, reason, _scripted(ids, logps)) for ids, reason, *logps in self.script]
        return [self._sample(p["prompt_token_ids"], params) for p, params in zip(prompts, sampling_params)]

    @torch.no_grad()
    def _sample(self, prompt: list[int], params: SamplingParams):
        if params.top_p != 1.0 or params.n != 1 or params.temperature <= 0:
            raise NotImplementedError("the fake engine samples n=1 at temperature > 0 without top-p")
        stream = torch.Generator().manual_seed(params.seed if params.seed is not None else 0)
        stops = list(dict.fromkeys([*params.stop_token_ids, *self.generation_eos]))  # vLLM adds the config's EOS ids
        ids, tokens, logprobs, reason = list(prompt), [], [], "length"
        for step in range(params.max_tokens):
            logits = self.model(torch.tensor([ids])).logits[0, -1].float() / params.temperature
            if step < params.min_tokens:
                logits[stops] = float("-inf")
            logp = torch.log_softmax(logits, -1)  # "processed_logprobs": after temperature and the token bans
            token = int(torch.multinomial(logp.exp(), 1, generator=stream))
            tokens.append(token)
            reported = float(logp[token]) + self.logprob_noise * float(torch.randn(1, generator=self.noise))
            logprobs.append({token: SimpleNamespace(logprob=reported)})
            ids.append(token)
            if token in stops:  # vLLM keeps a stop token id in the output's token_ids
                reason = "stop"
                break
        return _output(tokens, reason, logprobs)


def _scripted(token_ids, logps):
    """vLLM's per-token logprobs entries ({token: Logprob}) for scripted log-probs, or None when none are given."""
    if not logps:
        return None
    return [{token: SimpleNamespace(logprob=float(lp))} for token, lp in zip(token_ids, logps[0])]


def _output(token_ids, finish_reason, logprobs):
    return SimpleNamespace(outputs=[SimpleNamespace(token_ids=tuple(token_ids), finish_reason=finish_reason,
                                                    logprobs=logprobs)])


def module() -> types.ModuleType:
    fake = types.ModuleType("vllm")
    fake.__spec__ = importlib.machinery.ModuleSpec("vllm", None)  # importlib.util.find_spec("vllm") finds it
    fake.LLM, fake.SamplingParams = LLM, SamplingParams
    return fake


def install(monkeypatch) -> None:
    """``import vllm`` gives the fake, and the backend believes a CUDA device is present (only the backend: the
    recipes still compute on the CPU)."""
    from tether.rollout import backends

    LLM.instances.clear()
    monkeypatch.setitem(sys.modules, "vllm", module())
    monkeypatch.setattr(backends, "cuda_available", lambda: True)
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "VLLM_ENABLE_V1_MULTIPROCESSING"):
        monkeypatch.setenv(key, "unset")  # recorded, so the values the backend sets are undone afterwards
        monkeypatch.delenv(key)
