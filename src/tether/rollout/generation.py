"""Sample responses with ``transformers.generate`` and turn them into aligned tensors.

Shapes: B prompts, P prompt positions (left-padded), R response positions (right-padded).
A response ends at its first stop token: any of the EOS ids (the tokenizer's EOS, and every EOS id of the model's
config and generation config, e.g. Llama-3's ``<|eot_id|>``; :mod:`tether.models.special_tokens`). The response mask
is 1 up to and including that token, so a response that ends keeps the stop token it sampled (the reward is placed
there) and everything after it is padding — correct also when the pad token is an EOS token.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from tether.models.decoding import skinny_linears
from tether.models.layout import position_ids  # noqa: F401 - re-exported: rollouts lay out positions with it
from tether.models.precision import autocast_block, precision_of
from tether.models.scoring import scored_logprobs
from tether.models.special_tokens import as_stop_ids, config_stop_ids
from tether.utils.device import model_device
from tether.utils.distributed import Dist


@dataclass
class GenerationConfig:
    max_new_tokens: int = 48
    temperature: float = 1.0
    top_p: float = 1.0
    do_sample: bool = True
    min_new_tokens: int = 0  # EOS suppressed until this many tokens (transformers' MinNewTokensLengthLogitsProcessor)


class RowSeededSampler:
    """Sample each row with its own random stream: Gumbel-max over the tempered, top-p-truncated logits.

    ``argmax(log softmax(z/T) + G)`` with G = −log(−log U), U ~ Uniform(0, 1) drawn from the row's own
    ``torch.Generator``, is an exact sample of softmax(z/T) (restricted to the nucleus when top-p < 1). A
    response then depends only on its prompt and its seed, not on the other rows of the batch or on how
    many processes share the work, so a data-parallel run samples what a single process would.
    Used as the last logits processor of a greedy ``generate``.
    """

    def __init__(self, seeds: list[int], temperature: float, top_p: float, record: bool = False):
        if temperature <= 0:
            raise ValueError("row-seeded sampling needs temperature > 0")
        self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
        self.temperature = temperature
        self.top_p = top_p
        self.sampled_logps: list[torch.Tensor] | None = [] if record else None  # per step (B,), with ``record``

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:  # scores (B, V)
        logps = torch.log_softmax(scores.float() / self.temperature, dim=-1)
        if self.top_p < 1.0:
            logps = nucleus(logps, self.top_p)
        uniforms = torch.stack([torch.rand(scores.shape[-1], generator=g, dtype=torch.float64)
                                for g in self.generators]).clamp_(min=1e-300)  # (B, V)
        gumbel = -torch.log(-torch.log(uniforms)).to(scores.device)
        perturbed = (logps.double() + gumbel).to(scores.dtype)
        if self.sampled_logps is not None:  # the probability this sampler gave the token it picks (nucleus renormalised)
            chosen = perturbed.argmax(-1, keepdim=True)
            self.sampled_logps.append(torch.log_softmax(logps, dim=-1).gather(-1, chosen).squeeze(-1))
        return perturbed


class SampledLogprobs:
    """The sampler's log-probability of each token it sampled, recorded as the last logits processor of a sampling
    ``generate``: the scores it sees are the ones transformers samples from (tempered, nucleus-truncated), so
    ``log_softmax`` of them at the token that appears next is that token's probability under the sampler. The
    token is known one step later (or from the output, for the last one, :meth:`finish`)."""

    def __init__(self):
        self.pending: torch.Tensor | None = None  # (B, V) log-probs of the step whose token is not known yet
        self.sampled_logps: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.pending is not None:
            self.sampled_logps.append(self.pending.gather(-1, input_ids[:, -1:]).squeeze(-1))
        self.pending = torch.log_softmax(scores.float(), dim=-1)
        return scores

    def finish(self, last_tokens: torch.Tensor) -> None:
        if self.pending is not None:
            self.sampled_logps.append(self.pending.gather(-1, last_tokens[:, None]).squeeze(-1))
            self.pending = None


def stack_sampled(steps: list[torch.Tensor], mask: torch.Tensor) -> torch.Tensor | None:
    """Per-step (B,) log-probs → (B, R) aligned with the response, 0 on padding; None when the steps do not cover
    the response (a generate that stopped calling its processors)."""
    if len(steps) != mask.shape[1]:
        return None
    values = torch.stack(steps, dim=1).float().to(mask.device)
    return torch.where(mask.bool(), values, torch.zeros_like(values))  # (a finished row's pad may be at -inf)


def nucleus(logps: torch.Tensor, top_p: float) -> torch.Tensor:
    """log-probs (B, V) with everything outside the smallest set of mass ≥ top_p set to −inf (the top token
    always stays)."""
    sorted_logps, order = logps.sort(dim=-1, descending=True)
    mass_before = sorted_logps.exp().cumsum(-1) - sorted_logps.exp()  # probability of the tokens ranked above
    drop_sorted = mass_before >= top_p
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logps.masked_fill(drop, float("-inf"))


def row_seeds(seed: int, iteration: int, sample_indices: list[int]) -> list[int]:
    """One seed per response from (run seed, iteration, the response's index in the iteration's global batch)."""
    return [(seed * 1_000_003 + iteration) * 65_537 + i for i in sample_indices]


@dataclass
class Rollout:
    prompt_ids: torch.Tensor       # (B, P) left-padded
    prompt_mask: torch.Tensor      # (B, P)
    response_ids: torch.Tensor     # (B, R) right-padded
    response_mask: torch.Tensor    # (B, R) 1 up to and including the first stop token (any EOS id)
    ended_with_eos: torch.Tensor   # (B,) bool: the response ended with a stop token (not cut at the length cap)
    sampler_logps: torch.Tensor | None = None  # (B, R) log-probs the sampling engine reported (vLLM), 0 on padding

    @property
    def input_ids(self) -> torch.Tensor:  # (B, P + R)
        return torch.cat([self.prompt_ids, self.response_ids], dim=1)

    @property
    def attention_mask(self) -> torch.Tensor:  # (B, P + R)
        return torch.cat([self.prompt_mask, self.response_mask], dim=1)

    @property
    def response_lengths(self) -> torch.Tensor:  # (B,)
        return self.response_mask.sum(-1)

    def select(self, idx: torch.Tensor) -> Rollout:
        """The rows ``idx`` (a minibatch), every per-row field alike."""
        sampler = self.sampler_logps[idx] if self.sampler_logps is not None else None
        return Rollout(self.prompt_ids[idx], self.prompt_mask[idx], self.response_ids[idx], self.response_mask[idx],
                       self.ended_with_eos[idx], sampler)


def concat_rollouts(rollouts: Sequence[Rollout], pad_token_id: int) -> Rollout:
    """The rows of several rollouts as one: prompts left-padded and responses right-padded to the longest (with
    ``pad_token_id``, mask 0); the sampler's log-probs kept only when every part has them."""
    if len(rollouts) == 1:
        return rollouts[0]
    prompt_len = max(r.prompt_ids.shape[1] for r in rollouts)
    response_len = max(r.response_ids.shape[1] for r in rollouts)

    def left(t: torch.Tensor, value: float) -> torch.Tensor:
        return torch.nn.functional.pad(t, (prompt_len - t.shape[1], 0), value=value)

    def right(t: torch.Tensor, value: float) -> torch.Tensor:
        return torch.nn.functional.pad(t, (0, response_len - t.shape[1]), value=value)

    sampled = all(r.sampler_logps is not None for r in rollouts)
    return Rollout(torch.cat([left(r.prompt_ids, pad_token_id) for r in rollouts]),
                   torch.cat([left(r.prompt_mask, 0) for r in rollouts]),
                   torch.cat([right(r.response_ids, pad_token_id) for r in rollouts]),
                   torch.cat([right(r.response_mask, 0) for r in rollouts]),
                   torch.cat([r.ended_with_eos for r in rollouts]),
                   torch.cat([right(r.sampler_logps, 0.0) for r in rollouts]) if sampled else None)


def response_mask_from_ids(response_ids: torch.Tensor,
                           eos_token_id: int | Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(mask (B, R), ended_with_eos (B,)): 1 up to and including the first stop token of each row (``eos_token_id``:
    one id or several, e.g. every EOS id of the generation config)."""
    stops = torch.tensor(as_stop_ids(eos_token_id), dtype=response_ids.dtype, device=response_ids.device)
    is_eos = torch.isin(response_ids, stops)
    ended = is_eos.any(-1)
    first_eos = torch.where(ended, is_eos.float().argmax(-1), torch.full_like(ended, response_ids.shape[1], dtype=torch.long))
    positions = torch.arange(response_ids.shape[1], device=response_ids.device).expand_as(response_ids)
    mask = (positions <= first_eos.unsqueeze(-1)).long()
    return mask, ended


def shared_prompt_cache(model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor):
    """The KV cache of every row's first P − 1 prompt positions, each distinct prompt computed once (a GRPO group's
    K samples share one prefill), or None where it would not help or the model's cache is not a plain KV cache.

    ``generate`` given this cache runs only each row's last prompt token before decoding, as transformers does
    for a cached prefix. The cached keys and values are those of the full-batch prefill (the same positions and
    mask per row), so the samples are the same."""
    from transformers.cache_utils import DynamicCache, DynamicLayer

    n_rows, n_prompt = prompt_ids.shape
    if n_prompt < 2 or n_rows < 2 or not hasattr(model, "config"):
        return None
    unique, inverse = torch.unique(torch.cat([prompt_ids, prompt_mask], dim=1), dim=0, return_inverse=True)
    if unique.shape[0] == n_rows:  # every prompt distinct: nothing to share
        return None
    try:
        cache = DynamicCache(config=model.config)
    except (AttributeError, KeyError, TypeError, ValueError):  # a config transformers' cache cannot lay out
        return None
    if not cache.layers or not all(isinstance(layer, DynamicLayer) for layer in cache.layers):
        return None  # recurrent or other non-KV state: prefill as usual
    ids, mask = unique[:, :n_prompt], unique[:, n_prompt:]
    model(input_ids=ids[:, :-1], attention_mask=mask[:, :-1], position_ids=position_ids(mask)[:, :-1],
          use_cache=True, logits_to_keep=1, **{cache_argument(model): cache})
    cache.batch_select_indices(inverse.to(ids.device))
    return cache


def cache_argument(model) -> str:
    """The name the model's forward takes a KV cache under: ``cache`` (transformers ≥ 5.25), else
    ``past_key_values``."""
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # (a PEFT wrapper forwards it)
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


@torch.no_grad()
def generate(model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, config: GenerationConfig,
             eos_token_id: int | Sequence[int], pad_token_id: int, seeds: list[int] | None = None,
             share_prompts: bool = True) -> Rollout:
    """Sample one response per (left-padded) prompt; the prompts may be on any device, the rollout is on the model's.

    A response stops at the first of ``eos_token_id`` (one id or several; the tokenizer's EOS first) and of the
    model's own EOS ids (its config's and generation config's, :func:`tether.models.special_tokens.config_stop_ids`:
    what transformers' ``generate`` and vLLM stop at by default), and keeps that token; ``min_new_tokens`` holds
    back all of them.

    With ``seeds`` (one per row) each row is sampled from its own random stream (:class:`RowSeededSampler`),
    independent of the batch it is in; without, from torch's global generator (transformers' sampler).

    Under FSDP the policy's weights are gathered by the first decoding step and stay gathered to the end of the
    rollout (``Dist.gathered``): one all-gather per rollout instead of one per token, and the later steps are no
    collectives, so a process whose rows are done goes on without stepping along with the others (transformers'
    ``synced_gpus``, which would keep it running forwards until the last process is done, is off).

    With ``share_prompts``, rows with the same prompt (a GRPO group) share one prefill of it
    (:func:`shared_prompt_cache`).
    """
    dist = Dist.current()
    device = model_device(model)  # the prompts follow the model; the rollout is on its device
    prompt_ids, prompt_mask = prompt_ids.to(device), prompt_mask.to(device)
    was_training = model.training
    model.eval()
    stops = as_stop_ids(eos_token_id, config_stop_ids(model))
    kwargs = dict(max_new_tokens=config.max_new_tokens, do_sample=config.do_sample, pad_token_id=pad_token_id,
                  eos_token_id=stops or None)
    if config.min_new_tokens:
        kwargs["min_new_tokens"] = config.min_new_tokens
    # the sampler's own log-probs where it computes in another precision than the trainer's recomputation
    record = config.do_sample and precision_of(model) != "fp32"
    recorder: RowSeededSampler | SampledLogprobs | None = None
    if config.do_sample and seeds is not None:
        from transformers import LogitsProcessorList

        if len(seeds) != prompt_ids.shape[0]:
            raise ValueError(f"{len(seeds)} seeds for {prompt_ids.shape[0]} prompts")
        sampler = RowSeededSampler(seeds, config.temperature, config.top_p, record=record)
        recorder = sampler if record else None
        kwargs.update(do_sample=False, logits_processor=LogitsProcessorList([sampler]))
    elif config.do_sample:
        kwargs.update(temperature=config.temperature, top_p=config.top_p, top_k=0)
        if record:  # the warpers as processors, in transformers' order, so that the recorder sees what is sampled
            from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopPLogitsWarper

            recorder = SampledLogprobs()
            warpers = [TemperatureLogitsWarper(config.temperature)] if config.temperature != 1.0 else []
            warpers += [TopPLogitsWarper(config.top_p)] if config.top_p < 1.0 else []
            kwargs.update(temperature=1.0, top_p=1.0, logits_processor=LogitsProcessorList([*warpers, recorder]))
    # (CPU: decoding steps' few-row products as W·xᵀ, faster; bf16-mixed: one bf16 copy of the weights per rollout)
    with dist.gathered(model), skinny_linears(model), autocast_block(model):
        cache = shared_prompt_cache(model, prompt_ids, prompt_mask) if share_prompts else None
        if cache is not None:
            kwargs[cache_argument(model)] = cache
        output = model.generate(input_ids=prompt_ids, attention_mask=prompt_mask, synced_gpus=False, **kwargs)
    model.train(was_training)
    response_ids = output[:, prompt_ids.shape[1]:]
    if response_ids.shape[1] == 0:
        raise RuntimeError("generation produced no tokens (max_new_tokens must be > 0)")
    mask, ended = response_mask_from_ids(response_ids, stops)
    sampled = None
    if recorder is not None:
        if isinstance(recorder, SampledLogprobs):
            recorder.finish(response_ids[:, -1])
        sampled = stack_sampled(recorder.sampled_logps, mask)
    response_ids = torch.where(mask.bool(), response_ids, torch.full_like(response_ids, pad_token_id))
    return Rollout(prompt_ids, prompt_mask, response_ids, mask, ended, sampled)


def response_logprobs(model, rollout: Rollout, temperature: float = 1.0, return_entropy: bool = False,
                      padding_free: bool = True,
                      share_prefixes: bool = True) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """log π(response token) under ``model`` at the sampling temperature → (B, R) fp32, 0 on padding
    (with ``return_entropy``, also each response position's entropy, 0 on padding). Scored padding-free, the
    samples of one prompt sharing its forward, and with the vocabulary head only at response positions, where the
    model allows (:mod:`tether.models.scoring`)."""
    if not isinstance(model, torch.nn.Module):  # a role in another process (tether.rollout.placement)
        if return_entropy:
            raise ValueError("entropy is computed by the trained policy, not by a remote role")
        return model.response_logprobs(rollout, temperature, padding_free=padding_free, share_prefixes=share_prefixes)
    n_prompt = rollout.prompt_ids.shape[1]
    score = torch.cat([torch.zeros_like(rollout.prompt_mask), rollout.response_mask], dim=1)
    out = scored_logprobs(model, rollout.input_ids, rollout.attention_mask, score, temperature=temperature,
                          padding_free=padding_free, return_entropy=return_entropy, share_prefixes=share_prefixes)
    if not return_entropy:
        return out[:, n_prompt:]
    logps, entropy = out
    return logps[:, n_prompt:], entropy[:, n_prompt:]
