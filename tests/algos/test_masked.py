import math

import pytest
import torch

from tether.algos.masked import masked_mean, masked_sum, masked_var, masked_whiten, masked_whiten_across

VALUES = torch.tensor([[1.0, 2.0, 3.0, 100.0], [4.0, 5.0, -7.0, -9.0]])
MASK = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])


def test_masked_sum_and_mean_ignore_padding():
    assert masked_sum(VALUES, MASK).item() == 15.0  # 1+2+3+4+5
    assert masked_mean(VALUES, MASK).item() == 3.0
    assert masked_mean(VALUES, MASK, dim=1).tolist() == [2.0, 4.5]
    assert masked_sum(VALUES, MASK, dim=1).tolist() == [6.0, 9.0]


def test_masked_values_do_not_matter():
    changed = VALUES.clone()
    changed[MASK == 0] = 1e6
    assert masked_mean(changed, MASK).item() == masked_mean(VALUES, MASK).item()
    assert masked_var(changed, MASK).item() == masked_var(VALUES, MASK).item()


def test_masked_var_by_hand():
    # values 1,2,3,4,5: mean 3, squared deviations 4+1+0+1+4 = 10
    assert masked_var(VALUES, MASK, unbiased=False).item() == pytest.approx(10 / 5)
    assert masked_var(VALUES, MASK, unbiased=True).item() == pytest.approx(10 / 4)


def test_all_zero_mask_fails_loudly():
    with pytest.raises(ValueError, match="no real positions"):
        masked_mean(VALUES, torch.zeros_like(MASK))


def test_whiten_over_masked_elements():
    w = masked_whiten(VALUES, MASK)
    assert w[MASK == 0].tolist() == [0.0, 0.0, 0.0]
    # (x - 3) / sqrt(2) for x = 1..5
    expected = [(x - 3) / math.sqrt(2.0) for x in (1, 2, 3, 4, 5)]
    assert w[MASK == 1].tolist() == pytest.approx(expected, abs=1e-6)
    scaled = masked_whiten(VALUES, MASK, shift_mean=False)
    assert scaled[MASK == 1].tolist() == pytest.approx([e + 3 for e in expected], abs=1e-6)


def test_whiten_across_processes_uses_the_summed_moments():
    """Two processes holding rows 0 and 1: the reducer adds the other process's sums (the row 1 half here: sum 9,
    n 2, squares about the global mean 3: 1 + 4 = 5), so each half is whitened with μ = 3, σ² = 2 as the whole."""
    other = {"sum": 9.0, "n": 2.0, "sq": 5.0}
    total = lambda values: {k: v + other[k] for k, v in values.items()}  # noqa: E731
    half = masked_whiten_across(VALUES[:1], MASK[:1], total)
    assert half[MASK[:1] == 1].tolist() == pytest.approx([(x - 3) / math.sqrt(2.0) for x in (1, 2, 3)], abs=1e-6)
    assert half[0, 3].item() == 0.0
    assert torch.equal(masked_whiten_across(VALUES, MASK, None), masked_whiten(VALUES, MASK))  # one process
