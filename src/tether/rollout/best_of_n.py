"""Sample N responses per prompt, score them, keep the best (best-of-N, rejection sampling)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from tether.data import PromptExample, collate_prompts
from tether.rollout.generation import GenerationConfig, generate
from tether.utils.distributed import Dist


def best_of_n_kl(n: int) -> float:
    """Analytic KL(π_BoN ‖ π) of best-of-N: log N − (N − 1)/N (Stiennon et al. 2020; an upper bound in general)."""
    return math.log(n) - (n - 1) / n


@dataclass
class Sampled:
    prompt: PromptExample
    responses: list[str]
    scores: list[float]

    @property
    def best(self) -> int:
        return max(range(len(self.scores)), key=lambda i: self.scores[i])


def sample_and_score(policy, tokenizer, reward_source, prompts: list[PromptExample], n: int,
                     generation: GenerationConfig, batch_size: int, desc: str = "sampling") -> list[Sampled]:
    """N samples per prompt, scored (NaN when ``reward_source`` is None); ``batch_size`` prompts at a time."""
    out: list[Sampled] = []
    for start in tqdm(range(0, len(prompts), batch_size), desc=desc, unit="batch", leave=False,
                      disable=not Dist.current().is_main):
        chunk = prompts[start:start + batch_size]
        repeated = [p for p in chunk for _ in range(n)]
        batch = collate_prompts(repeated, tokenizer.pad_token_id)
        rollout = generate(policy, batch["input_ids"], batch["attention_mask"], generation, tokenizer.eos_token_id,
                           tokenizer.pad_token_id)
        texts = [tokenizer.decode(r[m.bool()], skip_special_tokens=True)
                 for r, m in zip(rollout.response_ids, rollout.response_mask)]
        if reward_source is None:  # sampling only (e.g. for labelling)
            scores = [float("nan")] * len(texts)
        else:
            with torch.no_grad():
                scores = reward_source.score(rollout, [p.prompt_text for p in repeated], texts).tolist()
        for i, prompt in enumerate(chunk):
            out.append(Sampled(prompt, texts[i * n:(i + 1) * n], scores[i * n:(i + 1) * n]))
    return out
