"""Sample N responses per prompt, score them, keep the best (best-of-N, rejection sampling)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from tether.data import PromptExample
from tether.rollout.generation import GenerationConfig
from tether.rollout.sampling import scored_batches


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
    for batch in scored_batches(policy, tokenizer, prompts, generation, {"reward": reward_source}, batch_size, n,
                                desc=desc):
        scores = batch.scores.get("reward", [float("nan")] * len(batch.responses))  # no source: sampling only
        for i, prompt in enumerate(batch.prompts):
            out.append(Sampled(prompt, batch.responses[i * n:(i + 1) * n], scores[i * n:(i + 1) * n]))
    return out
