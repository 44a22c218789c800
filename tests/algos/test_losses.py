"""Each loss at one point worked out by hand (math on Python floats, not the same torch formula)."""

import math

import pytest
import torch

from tether.algos.losses.preference import PREFERENCE_LOSSES, REFERENCE_FREE, UNPAIRED, get_preference_loss
from tether.algos.losses.reward_model import (
    bradley_terry_loss,
    calibration_bins,
    ensemble_scores,
    expected_calibration_error,
    pairwise_accuracy,
)
from tether.algos.losses.sft import sft_loss


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


def log_sigmoid(x):
    return math.log(sigmoid(x))


def t(*values):
    return torch.tensor(values, dtype=torch.float32)


# policy chosen -1, rejected -3, reference chosen -2, rejected -2.5  =>  h = (-1 + 3) - (-2 + 2.5) = 1.5
PC, PR, RC, RR = t(-1.0), t(-3.0), t(-2.0), t(-2.5)
H = 1.5
BETA = 0.1


def test_dpo_by_hand():
    losses, metrics = PREFERENCE_LOSSES["dpo"](PC, PR, RC, RR, BETA)
    assert losses.shape == (1,)
    assert losses.item() == pytest.approx(math.log(1 + math.exp(-0.15)), abs=1e-6)
    assert metrics["rewards/chosen"].item() == pytest.approx(0.1 * (-1 + 2), abs=1e-6)
    assert metrics["rewards/rejected"].item() == pytest.approx(0.1 * (-3 + 2.5), abs=1e-6)
    assert metrics["rewards/margins"].item() == pytest.approx(0.15, abs=1e-6)
    assert metrics["rewards/accuracies"].item() == 1.0
    assert metrics["logps/chosen"].item() == -1.0 and metrics["logps/rejected"].item() == -3.0


def test_dpo_gradient_by_hand():
    pc = PC.clone().requires_grad_(True)
    eps = 0.2
    losses, _ = PREFERENCE_LOSSES["dpo"](pc, PR, RC, RR, BETA, label_smoothing=eps)
    losses.sum().backward()
    expected = -BETA * (1 - eps) * sigmoid(-BETA * H) + eps * BETA * sigmoid(BETA * H)
    assert pc.grad.item() == pytest.approx(expected, abs=1e-6)


def test_swapping_chosen_and_rejected_raises_the_dpo_loss():
    good, _ = PREFERENCE_LOSSES["dpo"](PC, PR, RC, RR, BETA)
    bad, _ = PREFERENCE_LOSSES["dpo"](PR, PC, RR, RC, BETA)
    assert bad.item() == pytest.approx(math.log(1 + math.exp(0.15)), abs=1e-6)
    assert bad.item() > good.item()


def test_cdpo_and_robust_by_hand():
    eps = 0.1
    cdpo, _ = PREFERENCE_LOSSES["cdpo"](PC, PR, RC, RR, BETA)  # default label_smoothing 0.1
    assert cdpo.item() == pytest.approx(-(1 - eps) * log_sigmoid(0.15) - eps * log_sigmoid(-0.15), abs=1e-6)
    robust, _ = PREFERENCE_LOSSES["robust"](PC, PR, RC, RR, BETA, label_smoothing=eps)
    expected = (-(1 - eps) * log_sigmoid(0.15) + eps * log_sigmoid(-0.15)) / (1 - 2 * eps)
    assert robust.item() == pytest.approx(expected, abs=1e-6)


def test_ipo_and_hinge_by_hand():
    ipo, _ = PREFERENCE_LOSSES["ipo"](PC, PR, RC, RR, 1.0)
    assert ipo.item() == pytest.approx((1.5 - 0.5) ** 2, abs=1e-6)  # target margin 1/(2β) = 0.5
    hinge, _ = PREFERENCE_LOSSES["hinge"](PC, PR, RC, RR, 0.5)
    assert hinge.item() == pytest.approx(1 - 0.5 * 1.5, abs=1e-6)
    hinge_done, _ = PREFERENCE_LOSSES["hinge"](PC, PR, RC, RR, 1.0)
    assert hinge_done.item() == 0.0  # margin met: 1 - 1.5 < 0


def test_simpo_by_hand():
    # chosen -4 over 2 tokens, rejected -9 over 3 tokens: a_c = -2, a_r = -3, a_c - a_r = 1
    # β = 2, γ/β = 0.5 (the defaults) → γ = 1: logit = 2·(-2) - 2·(-3) - 1 = 1, loss = log(1 + e^-1) ≈ 0.3133
    losses, metrics = PREFERENCE_LOSSES["simpo"](t(-4.0), t(-9.0), None, None, 2.0,
                                                 chosen_lengths=t(2.0), rejected_lengths=t(3.0))
    assert losses.item() == pytest.approx(math.log(1 + math.exp(-1.0)), abs=1e-6)
    assert metrics["rewards/chosen"].item() == pytest.approx(2.0 * -2, abs=1e-6)
    assert metrics["rewards/rejected"].item() == pytest.approx(2.0 * -3, abs=1e-6)
    assert metrics["rewards/margins"].item() == pytest.approx(2.0, abs=1e-6)
    # the margin scales with β: β = 2.5, γ/β = 0.2 → γ = 0.5: logit = 2.5·1 - 0.5 = 2, loss = log(1 + e^-2) ≈ 0.1269
    losses, _ = PREFERENCE_LOSSES["simpo"](t(-4.0), t(-9.0), None, None, 2.5, gamma_beta_ratio=0.2,
                                           chosen_lengths=t(2.0), rejected_lengths=t(3.0))
    assert losses.item() == pytest.approx(math.log(1 + math.exp(-2.0)), abs=1e-6)


def test_orpo_by_hand():
    a_c, a_r = -0.5, -2.0  # mean log-probs: chosen -1 over 2 tokens, rejected -6 over 3
    log_odds = (a_c - a_r) - (math.log(1 - math.exp(a_c)) - math.log(1 - math.exp(a_r)))
    losses, metrics = PREFERENCE_LOSSES["orpo"](t(-1.0), t(-6.0), None, None, 0.1,
                                                chosen_lengths=t(2.0), rejected_lengths=t(3.0))
    assert losses.item() == pytest.approx(0.5 - 0.1 * log_sigmoid(log_odds), abs=1e-5)
    assert metrics["log_odds_ratio"].item() == pytest.approx(log_odds, abs=1e-5)
    assert metrics["loss/nll"].item() == pytest.approx(0.5, abs=1e-6)


def test_reference_free_losses_need_lengths():
    with pytest.raises(ValueError, match="chosen_lengths"):
        PREFERENCE_LOSSES["simpo"](PC, PR, None, None, 2.0)


def test_kto_by_hand():
    policy, ref = t(-1.0, -2.0), t(-1.5, -1.0)  # r = 0.5 (desirable), -1.0 (undesirable)
    desirable = torch.tensor([True, False])
    losses, metrics = PREFERENCE_LOSSES["kto"](policy, ref, desirable, 0.5, torch.tensor(0.2),
                                               desirable_weight=1.0, undesirable_weight=2.0)
    assert losses[0].item() == pytest.approx(1 - sigmoid(0.5 * (0.5 - 0.2)), abs=1e-6)
    assert losses[1].item() == pytest.approx(2.0 * (1 - sigmoid(0.5 * (0.2 + 1.0))), abs=1e-6)
    assert metrics["rewards/chosen"].item() == pytest.approx(0.25, abs=1e-6)
    assert metrics["rewards/rejected"].item() == pytest.approx(-0.5, abs=1e-6)
    # a negative KL estimate is clamped to 0
    clamped, _ = PREFERENCE_LOSSES["kto"](policy, ref, desirable, 0.5, torch.tensor(-3.0))
    assert clamped[0].item() == pytest.approx(1 - sigmoid(0.25), abs=1e-6)


def test_registry():
    assert {"dpo", "ipo", "cdpo", "robust", "hinge", "kto", "orpo", "simpo"} <= set(PREFERENCE_LOSSES)
    assert REFERENCE_FREE == {"orpo", "simpo"} and UNPAIRED == {"kto"}
    with pytest.raises(ValueError, match="choose one of"):
        get_preference_loss("dpoo")


def test_bradley_terry_by_hand():
    chosen, rejected = t(2.0, 0.0), t(1.0, 0.5)
    losses, metrics = bradley_terry_loss(chosen, rejected)
    assert losses.tolist() == pytest.approx([-log_sigmoid(1.0), -log_sigmoid(-0.5)], abs=1e-6)
    assert metrics["rewards/accuracies"].item() == 0.5
    assert metrics["rewards/margins"].item() == pytest.approx(0.25, abs=1e-6)
    with_margin, _ = bradley_terry_loss(chosen, rejected, margin=t(0.5, 0.0), center_coef=0.01)
    assert with_margin.tolist() == pytest.approx(
        [-log_sigmoid(1.0 - 0.5) + 0.01 * 3.0 ** 2, -log_sigmoid(-0.5) + 0.01 * 0.5 ** 2], abs=1e-6)


def test_pairwise_accuracy_counts_ties_half():
    assert pairwise_accuracy(t(1.0, 2.0, 3.0, 0.0), t(0.0, 2.0, 4.0, -1.0)) == pytest.approx((1 + 0.5 + 0 + 1) / 4)


def test_ensemble_scores_by_hand():
    members = torch.tensor([[1.0, 0.0], [3.0, 0.0]])  # 2 members, 2 items
    out = ensemble_scores(members, k=2.0)
    assert out["mean"].tolist() == [2.0, 0.0]
    assert out["std"].tolist() == [1.0, 0.0]
    assert out["conservative"].tolist() == [0.0, 0.0]


def test_calibration_by_hand():
    # two pairs with r_c - r_r = 0 (p = 0.5) and one with a large positive margin (p ≈ 1)
    bins = calibration_bins(t(0.0, 0.0, 10.0), t(0.0, 0.0, 0.0), n_bins=2)
    # symmetrised points: (0.5, 1), (0.5, 0), (0.5, 1), (0.5, 0), (≈1, 1), (≈0, 0)
    low, high = bins
    assert low["count"] == 1 and low["observed"] == 0.0
    assert high["count"] == 5 and high["observed"] == pytest.approx(3 / 5)
    assert high["mean_predicted"] == pytest.approx((0.5 * 4 + sigmoid(10.0)) / 5, abs=1e-6)
    ece = expected_calibration_error(bins)
    assert ece == pytest.approx(1 / 6 * (1 - sigmoid(10.0)) + 5 / 6 * abs((0.5 * 4 + sigmoid(10.0)) / 5 - 0.6),
                                abs=1e-6)


def test_sft_loss_by_hand_and_accumulation():
    table = torch.log_softmax(torch.tensor([[0.0, 1.0], [1.0, 0.0]]), dim=-1)
    ids_a = torch.tensor([[0, 1, 0]])
    mask_a = torch.tensor([[0, 1, 1]])
    loss, metrics = sft_loss(table[ids_a], ids_a, mask_a)
    expected = -(table[0, 1].item() + table[1, 0].item()) / 2
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert metrics["tokens"].item() == 2
    # gradient accumulation: micro-batches of 2 and 1 scored tokens, normalised by the step total (3)
    ids_b = torch.tensor([[1, 1]])
    mask_b = torch.tensor([[1, 1]])
    part_a, _ = sft_loss(table[ids_a], ids_a, mask_a, num_items=3)
    part_b, _ = sft_loss(table[ids_b], ids_b, mask_b, num_items=3)
    big = -(table[0, 1].item() + table[1, 0].item() + table[1, 1].item()) / 3
    assert (part_a + part_b).item() == pytest.approx(big, abs=1e-6)
    # only scored positions count: with the mask on the last token alone, the loss is that token's NLL
    only_first_masked = torch.tensor([[0, 0, 1]])
    l1, _ = sft_loss(table[ids_a], ids_a, only_first_masked)
    l2, _ = sft_loss(table[torch.tensor([[0, 0, 0]])], torch.tensor([[0, 0, 0]]), only_first_masked)
    assert l1.item() == pytest.approx(-table[1, 0].item(), abs=1e-6)
    assert l2.item() == pytest.approx(-table[0, 0].item(), abs=1e-6)


@pytest.mark.parametrize("name", ["dpo", "cdpo", "robust", "ipo", "hinge", "simpo", "orpo"])
def test_a_misspelled_preference_option_is_an_error_not_ignored(name):
    from tether.algos.losses.preference import get_preference_loss

    logps = torch.tensor([-1.0]), torch.tensor([-2.0]), torch.tensor([-1.5]), torch.tensor([-1.5])
    with pytest.raises(TypeError, match="label_smothing"):
        get_preference_loss(name)(*logps, 0.1, label_smothing=0.2)


def test_policy_losses_by_name():
    from tether.algos.losses.ppo import POLICY_LOSSES, policy_loss, policy_loss_fn

    assert policy_loss_fn("ppo_clip") is policy_loss
    assert list(POLICY_LOSSES) == ["ppo_clip", "dapo", "cispo", "gspo", "gmpo", "sapo"]
    with pytest.raises(ValueError, match="choose one of ppo_clip"):
        policy_loss_fn("ppo")
