"""Rollout/trainer mismatch correction: truncated and masked importance weights, token and sequence level, worked
by hand (C = 2, log C = 0.6931)."""

import math

import pytest
import torch

from tether.algos.mismatch import mismatch_correction, mismatch_metrics

E = math.exp
# log ρ = log π_old − log π_sampler per token; row 0 has one padding position
LOG_RHO = torch.tensor([[0.1, 1.0, -1.0, 0.0], [0.5, 0.3, 0.0, 0.0]])
MASK = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
SAMPLER = torch.full((2, 4), -2.0)
TRAIN = SAMPLER + LOG_RHO + torch.tensor([[0, 0, 0, 9.0], [0, 0, 9.0, 9.0]])  # padding holds junk, never read


@pytest.mark.parametrize("mode, weights, keep, corrected", [
    # TIS per token: min(ρ, 2): e^1 = 2.72 is capped at 2
    ("token_truncate", [[E(0.1), 2.0, E(-1.0), 0], [E(0.5), E(0.3), 0, 0]],
     [[1, 1, 1, 0], [1, 1, 0, 0]], [[0, 1, 0, 0], [0, 0, 0, 0]]),
    # MIS per token: ρ = e^1 > 2 and e^−1 < 1/2 are dropped, the rest weighted by ρ
    ("token_mask", [[E(0.1), 0, 0, 0], [E(0.5), E(0.3), 0, 0]],
     [[1, 0, 0, 0], [1, 1, 0, 0]], [[0, 1, 1, 0], [0, 0, 0, 0]]),
    # per response: ∏ρ = e^0.1 (kept as is), e^0.8 = 2.23 > 2 (capped at 2 / the response dropped)
    ("sequence_truncate", [[E(0.1)] * 3 + [0], [2.0, 2.0, 0, 0]],
     [[1, 1, 1, 0], [1, 1, 0, 0]], [[0, 0, 0, 0], [1, 1, 0, 0]]),
    ("sequence_mask", [[E(0.1)] * 3 + [0], [0, 0, 0, 0]],
     [[1, 1, 1, 0], [0, 0, 0, 0]], [[0, 0, 0, 0], [1, 1, 0, 0]]),
    ("none", [[1.0] * 4, [1.0] * 4], [[1, 1, 1, 0], [1, 1, 0, 0]], [[0] * 4, [0] * 4]),
])
def test_weights_and_kept_tokens_by_hand(mode, weights, keep, corrected):
    out = mismatch_correction(TRAIN, SAMPLER, MASK, mode, threshold=2.0)
    torch.testing.assert_close(out.weights, torch.tensor(weights), atol=1e-6, rtol=0)
    assert out.keep.tolist() == keep
    assert out.corrected.int().tolist() == corrected


def test_weights_carry_no_gradient():
    train = TRAIN.clone().requires_grad_(True)
    assert not mismatch_correction(train, SAMPLER, MASK, "token_truncate").weights.requires_grad


def test_mismatch_kl_and_corrected_share_by_hand():
    # k3 = ρ − 1 − log ρ: 0.1 → 0.005171, 1.0 → 0.718282, −1.0 → 0.367879, 0.5 → 0.148721, 0.3 → 0.049859
    expected = (E(0.1) - 1.1 + E(1) - 2 + E(-1) + E(0.5) - 1.5 + E(0.3) - 1.3) / 5
    metrics = mismatch_metrics(TRAIN, SAMPLER, MASK, mismatch_correction(TRAIN, SAMPLER, MASK, "token_mask"))
    assert metrics["rollout/mismatch_kl"] == pytest.approx(expected, rel=1e-6)
    assert metrics["rollout/mismatch_corrected_frac"] == pytest.approx(2 / 5)
    assert mismatch_metrics(SAMPLER, SAMPLER, MASK)["rollout/mismatch_kl"] == 0.0


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="unknown mismatch correction 'tis'"):
        mismatch_correction(TRAIN, SAMPLER, MASK, "tis")
    with pytest.raises(ValueError, match="must be > 1"):
        mismatch_correction(TRAIN, SAMPLER, MASK, "token_mask", threshold=1.0)


def test_the_config_offers_every_mode():
    from typing import get_args

    from tether.algos.mismatch import MISMATCH_MODES
    from tether.config.online import MismatchMode

    assert get_args(MismatchMode) == MISMATCH_MODES
