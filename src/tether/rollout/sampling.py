"""Sample → decode → score, in batches: the one loop best-of-N, rejection sampling, the frontier, ``tether eval``
and the held-out monitor all run.

:func:`scored_batches` yields one :class:`ScoredBatch` per batch of prompts (each prompt sampled ``n`` times, its
samples consecutive), with the decoded responses and each reward source's scores; a caller that needs more per
batch (e.g. the KL to a reference) computes it from ``batch.rollout`` before asking for the next. With ``seed``
the whole pass samples from its own random stream (``forked_rng``), so it gives the same answers wherever it is
called from and leaves the caller's stream as it was.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from tether.data import PromptExample, collate_prompts
from tether.rollout.generation import GenerationConfig, Rollout, generate
from tether.utils.device import forked_rng
from tether.utils.distributed import Dist


def decode_responses(tokenizer, rollout: Rollout) -> list[str]:
    """Each response's text: its tokens up to and including the first stop token, special tokens dropped."""
    return [tokenizer.decode(r[m.bool()], skip_special_tokens=True)
            for r, m in zip(rollout.response_ids, rollout.response_mask)]


def generation_of(cfg: Any) -> GenerationConfig:
    """The sampling settings of any config that samples (``max_new_tokens``, ``temperature``, and ``top_p`` and
    ``min_new_tokens`` where it has them), so that no caller drops one."""
    return GenerationConfig(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                            top_p=getattr(cfg, "top_p", 1.0), min_new_tokens=getattr(cfg, "min_new_tokens", 0))


@dataclass
class ScoredBatch:
    prompts: list[PromptExample]  # the batch's prompts, each once
    n: int  # samples per prompt: rows i·n … i·n + n − 1 are prompt i's
    rollout: Rollout
    responses: list[str]
    scores: dict[str, list[float]] = field(default_factory=dict)  # per source name, one score per row

    @property
    def rows(self) -> list[PromptExample]:
        """The prompt of each row (each prompt repeated n times)."""
        return [p for p in self.prompts for _ in range(self.n)]


@torch.no_grad()
def scored_batches(policy, tokenizer, prompts: list[PromptExample], generation: GenerationConfig,
                   sources: Mapping[str, Any], prompts_per_batch: int, n: int = 1, seed: int | None = None,
                   desc: str | None = None) -> Iterator[ScoredBatch]:
    """``n`` samples of each prompt from ``policy``, ``prompts_per_batch`` prompts at a time, decoded and scored by
    each of ``sources`` (name → a reward source with ``score(rollout, prompts, responses, rows)``; None: not scored).
    ``seed``: sample from a forked random stream seeded with it. ``desc``: show a progress bar so labelled."""
    with forked_rng() if seed is not None else contextlib.nullcontext():
        if seed is not None:
            torch.manual_seed(seed)
        starts = range(0, len(prompts), max(1, prompts_per_batch))
        if desc is not None:
            starts = tqdm(starts, desc=desc, unit="batch", leave=False, disable=not Dist.current().is_main)
        for start in starts:
            chunk = prompts[start:start + max(1, prompts_per_batch)]
            rows = [p for p in chunk for _ in range(n)]
            batch = collate_prompts(rows, tokenizer.pad_token_id)
            rollout = generate(policy, batch["input_ids"], batch["attention_mask"], generation,
                               tokenizer.eos_token_id, tokenizer.pad_token_id)
            responses = decode_responses(tokenizer, rollout)
            texts = [p.prompt_text for p in rows]
            fields = [p.fields for p in rows]
            scores = {name: source.score(rollout, texts, responses, fields).tolist()
                      for name, source in sources.items() if source is not None}
            yield ScoredBatch(chunk, n, rollout, responses, scores)
