"""The paired bootstrap over prompts (tether.eval.intervals) against values worked out by hand.

Every expected number below is derived in the comments, not obtained by calling the code a second time.
Each test names the mistakes it catches; each was checked by applying the mistake to
src/tether/eval/intervals.py by hand, watching the test fail, and reverting:

- test_a_hand_worked_bootstrap: a different index draw (``integers(0, n - 1)``, another generator or
  ``size=(n, resamples)``), resampling ``a`` and ``b`` with different indices, the wrong percentile method
  (``method="lower"`` / ``"nearest"``), the level mixed up (percentiles ``100·(1 − level)`` and ``100·level``
  instead of halves either side), and the estimate taken as the mean of the resamples instead of the full data;
- test_exact_intervals_of_a_two_valued_difference: low and high swapped, the percentiles mis-scaled (fractions
  0.025 / 0.975 passed to numpy's 0–100 percentile), an index draw that never picks the last prompt
  (``integers(0, n − 1)``), resampling ``a`` and ``b`` independently, the estimate taken from the resamples;
- test_pairing_keeps_a_constant_difference_exact: resampling ``a`` and ``b`` independently (the interval
  becomes hundreds wide);
- test_degenerate_and_invalid_input: a missing check (unequal lengths, NaN / inf, empty input, a level or
  a number of resamples out of range) — each must raise ValueError with a message naming the problem;
- test_interval_helpers: ``clears_zero`` / ``above`` as "the whole interval is on one side" (not the estimate).
"""

import math

import numpy as np
import pytest

from tether.eval.intervals import Interval, bootstrap_mean, paired_bootstrap, resample_indices

# numpy.random.default_rng(1).integers(0, 3, size=(4, 3)), run once and pasted here (numpy 2.x; the
# Generator's integer stream is part of numpy's reproducibility policy).
INDICES_SEED_1 = [[1, 1, 2],
                  [2, 0, 0],
                  [2, 2, 0],
                  [0, 2, 1]]


def test_a_hand_worked_bootstrap():
    assert resample_indices(3, 4, seed=1).tolist() == INDICES_SEED_1
    a, b = [10.0, 4.0, 7.0], [7.0, 4.0, 1.0]  # per-prompt differences d = a − b = [3, 0, 6]
    # resample means of d over each row of indices (the same row for a and b):
    #   [1, 1, 2] → (0 + 0 + 6) / 3 = 2
    #   [2, 0, 0] → (6 + 3 + 3) / 3 = 4
    #   [2, 2, 0] → (6 + 6 + 3) / 3 = 5
    #   [0, 2, 1] → (3 + 6 + 0) / 3 = 3
    # sorted: m = [2, 3, 4, 5], R = 4; numpy's linear percentile p reads position p/100 · (R − 1) = 0.03 · p.
    # estimate = mean(a) − mean(b) = 7 − 4 = 3 (the mean of the resamples would be 3.5).
    # level 0.5 → percentiles 25 and 75 → positions 0.75 and 2.25:
    #   low = 2 + 0.75 · (3 − 2) = 2.75, high = 4 + 0.25 · (5 − 4) = 4.25
    half = paired_bootstrap(a, b, resamples=4, seed=1, level=0.5)
    assert (half.estimate, half.low, half.high, half.n, half.level) == (3.0, 2.75, 4.25, 3, 0.5)
    # level 0.95 → percentiles 2.5 and 97.5 → positions 0.075 and 2.925:
    #   low = 2 + 0.075 · 1 = 2.075, high = 4 + 0.925 · 1 = 4.925
    wide = paired_bootstrap(a, b, resamples=4, seed=1)
    assert wide.estimate == 3.0 and wide.n == 3 and wide.level == 0.95
    assert wide.low == pytest.approx(2.075, abs=1e-12) and wide.high == pytest.approx(4.925, abs=1e-12)
    # one sample, the same indices: the means of [3, 0, 6] over the rows are the same 2, 4, 5, 3
    single = bootstrap_mean([3.0, 0.0, 6.0], resamples=4, seed=1, level=0.5)
    assert (single.estimate, single.low, single.high, single.n) == (3.0, 2.75, 4.25, 3)


def test_exact_intervals_of_a_two_valued_difference():
    # d = a − b = [1, 0]: a resample of 2 prompts has mean 0 (both picks prompt 2, probability ¼), ½ (one of
    # each, ½) or 1 (both prompt 1, ¼). With R = 4000 resamples about 1000 / 2000 / 1000 of each (standard
    # deviation of a count ≈ √(4000 · ¼ · ¾) ≈ 27), so in the sorted means:
    # - 95%: percentiles 2.5 and 97.5 (positions ≈ 100 and ≈ 3900) fall inside the runs of 0s and 1s → [0, 1];
    # - 40%: percentiles 30 and 70 (positions ≈ 1200 and ≈ 2800) fall inside the run of ½s, ≥ 7 standard
    #   deviations from either edge → [½, ½].
    a, b = [5.0, 2.0], [4.0, 2.0]
    wide = paired_bootstrap(a, b, resamples=4000, seed=0)
    assert (wide.estimate, wide.low, wide.high, wide.n) == (0.5, 0.0, 1.0, 2)
    narrow = paired_bootstrap(a, b, resamples=4000, seed=0, level=0.4)
    assert (narrow.low, narrow.high) == (0.5, 0.5)
    # the same for the win outcomes of one sample: a win and a loss
    assert bootstrap_mean([1.0, 0.0], resamples=4000, seed=0).to_dict() == {
        "estimate": 0.5, "low": 0.0, "high": 1.0, "n": 2, "level": 0.95}
    # and the mean of n = 1 outcome can only be that outcome
    assert bootstrap_mean([0.5], resamples=50).to_dict() == {"estimate": 0.5, "low": 0.5, "high": 0.5, "n": 1,
                                                             "level": 0.95}


def test_pairing_keeps_a_constant_difference_exact():
    # per-prompt values spread over hundreds, but a beats b by exactly 0.5 on every prompt; n = 4, so every
    # mean is a sum of integers (or of half-integers) divided by 4: exact in binary floating point.
    a = [100.0, -300.0, 50.0, 1000.0]
    b = [x - 0.5 for x in a]
    paired = paired_bootstrap(a, b, resamples=2000, seed=0)
    assert (paired.estimate, paired.low, paired.high) == (0.5, 0.5, 0.5)  # every resample differs by exactly 0.5
    # resampling a and b with independent indices (the unpaired bootstrap) mixes the prompts' spread in:
    rng = np.random.default_rng(0)
    x, y = np.array(a), np.array(b)
    unpaired = x[rng.integers(0, 4, (2000, 4))].mean(1) - y[rng.integers(0, 4, (2000, 4))].mean(1)
    low, high = np.percentile(unpaired, [2.5, 97.5])
    assert high - low > 400  # (the spread of a single resample mean alone is about ±250)


def test_degenerate_and_invalid_input():
    # constant input and a single prompt: nothing varies between resamples, so a zero-width interval
    assert paired_bootstrap([2.0, 2.0, 2.0], [1.0, 1.0, 1.0]).to_dict() == {
        "estimate": 1.0, "low": 1.0, "high": 1.0, "n": 3, "level": 0.95}
    assert paired_bootstrap([0.75], [0.25], resamples=10) == Interval(0.5, 0.5, 0.5, 1, 0.95)
    with pytest.raises(ValueError, match="paired, one value per prompt each: got 3 and 2 values"):
        paired_bootstrap([1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(ValueError, match=r"b: every value must be finite; position 1 is nan"):
        paired_bootstrap([1.0, 2.0], [1.0, math.nan])
    with pytest.raises(ValueError, match="values: every value must be finite; position 0 is inf"):
        bootstrap_mean([math.inf, 1.0])
    with pytest.raises(ValueError, match=r"a: needs at least one value \(n ≥ 1\)"):
        paired_bootstrap([], [])
    with pytest.raises(ValueError, match="level: expected a number strictly between 0 and 1"):
        bootstrap_mean([1.0, 2.0], level=95)
    with pytest.raises(ValueError, match="resamples: expected an integer ≥ 1"):
        bootstrap_mean([1.0, 2.0], resamples=0)


def test_interval_helpers():
    gain = Interval(0.16, 0.05, 0.27, 120)
    assert gain.clears_zero and gain.above(0.0) and not gain.above(0.05) and gain.below(0.3) and not gain.below(0.27)
    assert not Interval(0.1, -0.02, 0.22, 120).clears_zero  # the estimate is positive, the interval is not
    assert Interval(-0.1, -0.2, -0.01, 50).clears_zero and Interval(-0.1, -0.2, -0.01, 50).below(0.0)
    assert Interval(0.6, 0.52, 0.7, 30).above(0.5) and not Interval(0.6, 0.5, 0.7, 30).above(0.5)
    assert Interval.from_dict(gain.to_dict()) == gain
    assert gain.to_dict() == {"estimate": 0.16, "low": 0.05, "high": 0.27, "n": 120, "level": 0.95}
