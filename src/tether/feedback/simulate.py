"""A simulated annotator panel with a known gold utility (AlpacaFarm-style).

Each annotator compares two responses to a prompt. Annotator a prefers response A with
probability σ((u_A − u_B) / temperature_a) where u is the gold utility plus, when the
annotator has the planted bias, ``length_bias`` × (characters / 100). On top of that, a
``random_rate`` fraction of answers are coin flips, and an ``adversarial`` annotator
reports the opposite of their judgement. ``accuracy``, when set, replaces the
Bradley–Terry model with a flat rate of agreeing with the gold preference (used to inject
known accuracies in tests). Labels come out in the same schema as people's.

Rankings of K responses follow the Plackett–Luce model, the K-way form of Bradley–Terry:
the annotator picks the best with probability softmax(u / temperature), then the best of
the rest, and so on (for K = 2 this is exactly the pairwise model above).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field


@dataclass
class AnnotatorSpec:
    name: str
    temperature: float = 0.5         # Bradley–Terry noise on the utility gap
    length_bias: float = 0.0         # planted bias: utility bonus per 100 characters
    random_rate: float = 0.0         # fraction of coin-flip answers
    adversarial: bool = False        # answers the opposite of their judgement
    accuracy: float | None = None    # if set: agree with the gold preference with this probability
    seconds_per_item: float = 20.0   # mean time per comparison (for throughput and cost reports)


@dataclass
class Comparison:
    item: str
    prompt: str
    response_a: str
    response_b: str
    is_gold: bool = False


@dataclass
class Label:
    annotator: str
    item: str
    choice: int                      # 0 = response_a preferred, 1 = response_b
    is_gold: bool
    seconds: float
    extra: dict = field(default_factory=dict)


def default_panel(n: int = 5, planted_length_bias: float = 0.0, noise_scale: float = 1.0) -> list[AnnotatorSpec]:
    """A panel whose members agree with each other about 65–75% of the time on the built-in helpful task.

    Each annotator's Bradley–Terry temperature is one of 0.35–1.0 times ``noise_scale``: the noise is on the
    gold utility's scale, so a utility on another scale (VADER's compound score lies in [−1, 1], the helpful
    task's utility spans about 4) needs its own ``noise_scale`` for the same agreement.
    """
    if not noise_scale > 0:
        raise ValueError(f"noise_scale must be positive, got {noise_scale}")
    temperatures = [0.35, 0.5, 0.6, 0.8, 1.0, 0.45, 0.7, 0.9]
    return [AnnotatorSpec(f"annotator-{i + 1}", temperature=temperatures[i % len(temperatures)] * noise_scale,
                          length_bias=planted_length_bias, random_rate=0.1) for i in range(n)]


def held_out_evaluator() -> AnnotatorSpec:
    """A low-noise, unbiased evaluator standing for held-out human evaluation (not used to train anything)."""
    return AnnotatorSpec("held-out-evaluator", temperature=0.1, length_bias=0.0, random_rate=0.0)


def prefers_a(spec: AnnotatorSpec, utility_a: float, utility_b: float, len_a: int, len_b: int,
              rng: random.Random) -> bool:
    """One simulated judgement: True when the annotator reports response A as better."""
    if spec.accuracy is not None:
        gold_a = utility_a > utility_b if utility_a != utility_b else rng.random() < 0.5
        judged_a = gold_a if rng.random() < spec.accuracy else not gold_a
    elif rng.random() < spec.random_rate:
        judged_a = rng.random() < 0.5
    else:
        gap = (utility_a - utility_b) + spec.length_bias * (len_a - len_b) / 100
        judged_a = rng.random() < 1 / (1 + math.exp(-gap / spec.temperature))
    return (not judged_a) if spec.adversarial else judged_a


def simulate_labels(comparisons: Sequence[Comparison], panel: Sequence[AnnotatorSpec], labels_per_item: int,
                    utility: Callable[[str, str], float], seed: int = 0) -> list[Label]:
    """Each comparison is labelled by ``labels_per_item`` annotators drawn without replacement."""
    if labels_per_item > len(panel):
        raise ValueError(f"labels_per_item={labels_per_item} is more than the panel's {len(panel)} annotators")
    rng = random.Random(seed)
    labels = []
    for comp in comparisons:
        u_a, u_b = utility(comp.prompt, comp.response_a), utility(comp.prompt, comp.response_b)
        for spec in rng.sample(list(panel), labels_per_item):
            choice_a = prefers_a(spec, u_a, u_b, len(comp.response_a), len(comp.response_b), rng)
            seconds = rng.expovariate(1 / spec.seconds_per_item)
            labels.append(Label(spec.name, comp.item, 0 if choice_a else 1, comp.is_gold, round(seconds, 2)))
    return labels


def gold_choice(comp: Comparison, utility: Callable[[str, str], float]) -> int | None:
    """The gold utility's preference (0 = A, 1 = B, None on an exact tie)."""
    u_a, u_b = utility(comp.prompt, comp.response_a), utility(comp.prompt, comp.response_b)
    return None if u_a == u_b else (0 if u_a > u_b else 1)


def simulate_ranking(spec: AnnotatorSpec, utilities: Sequence[float], lengths: Sequence[int],
                     rng: random.Random) -> list[int]:
    """One simulated K-way ranking (response indices, best first) under Plackett–Luce."""
    k = len(utilities)
    if spec.accuracy is not None:
        gold = sorted(range(k), key=lambda i: (-utilities[i], rng.random()))
        if rng.random() < spec.accuracy:
            ranking = gold
        else:
            ranking = list(range(k))
            rng.shuffle(ranking)
    elif rng.random() < spec.random_rate:
        ranking = list(range(k))
        rng.shuffle(ranking)
    else:
        scores = [(u + spec.length_bias * n / 100) / spec.temperature for u, n in zip(utilities, lengths)]
        left, ranking = list(range(k)), []
        while left:
            top = max(scores[i] for i in left)
            weights = [math.exp(scores[i] - top) for i in left]
            pick = rng.choices(left, weights=weights)[0]
            ranking.append(pick)
            left.remove(pick)
    return ranking[::-1] if spec.adversarial else ranking


def simulate_rankings(items: Sequence[tuple[str, str, Sequence[str]]], panel: Sequence[AnnotatorSpec],
                      labels_per_item: int, utility: Callable[[str, str], float], seed: int = 0
                      ) -> list[tuple[str, str, list[int], float]]:
    """(annotator, item id, ranking best first, seconds) for each (item id, prompt, responses)."""
    if labels_per_item > len(panel):
        raise ValueError(f"labels_per_item={labels_per_item} is more than the panel's {len(panel)} annotators")
    rng = random.Random(seed)
    out = []
    for item_id, prompt, responses in items:
        utilities = [utility(prompt, r) for r in responses]
        lengths = [len(r) for r in responses]
        for spec in rng.sample(list(panel), labels_per_item):
            ranking = simulate_ranking(spec, utilities, lengths, rng)
            seconds = rng.expovariate(1 / (spec.seconds_per_item * (len(responses) - 1)))
            out.append((spec.name, item_id, ranking, round(seconds, 2)))
    return out
