"""Gao et al. 2022's forms fitted by least squares: values worked by hand."""

import math

import pytest

from tether.eval.frontier_fit import fit_gao, gao_curve, peak_kl


def test_exact_points_give_back_their_coefficients():
    # best-of-N, α = 2, β = 0.5 at KL 0.25, 1, 4 (d = 0.5, 1, 2): R = d(2 − 0.5d) = 0.875, 1.5, 2.0
    fit = fit_gao([0.0, 0.25, 1.0, 4.0], [0.0, 0.875, 1.5, 2.0], "best-of-n")
    assert (fit.alpha, fit.beta, fit.r2, fit.n_points) == pytest.approx((2.0, 0.5, 1.0, 3))  # KL 0: no information
    assert fit.peak_kl == pytest.approx(4.0)  # d* = α / 2β = 2
    # RL, α = 1, β = 0.5: R = d(1 − 0.5 ln d) = 0.673287, 1, 1.306853; peak at d* = e^(α/β − 1) = e, KL* = e²
    fit = fit_gao([0.25, 1.0, 4.0], [0.673287, 1.0, 1.306853], "rl")
    assert (fit.alpha, fit.beta) == pytest.approx((1.0, 0.5), abs=1e-5)
    assert fit.peak_kl == pytest.approx(math.e ** 2, rel=1e-4)
    assert fit(4.0) == pytest.approx(1.306853, abs=1e-5) == gao_curve("rl", 1.0, 0.5, 4.0)


def test_least_squares_by_hand():
    """KL 1, 4, 9 (d = 1, 2, 3), gains 1, 1, 1, best-of-N: regressors d and −d². Normal equations
    s11 = 14, s12 = −36, s22 = 98, t1 = 6, t2 = −14, det = 76: α = (6·98 − 14·36)/76 = 84/76,
    β = (14·(−14) + 36·6)/76 = 20/76; peak d* = α/2β = 2.1, KL* = 4.41; the gains do not vary, so R² is undefined."""
    fit = fit_gao([1.0, 4.0, 9.0], [1.0, 1.0, 1.0], "best-of-n")
    assert fit.alpha == pytest.approx(84 / 76) and fit.beta == pytest.approx(20 / 76)
    assert fit.peak_kl == pytest.approx(4.41) and fit.r2 is None
    # the same points with gains 1, 1, 0 lie exactly on α = 1.5, β = 0.5 (s: t1 = 3, t2 = −5 → 114/76, 38/76)
    exact = fit_gao([1.0, 4.0, 9.0], [1.0, 1.0, 0.0], "best-of-n")
    assert (exact.alpha, exact.beta, exact.r2) == pytest.approx((1.5, 0.5, 1.0))


def test_a_reward_that_keeps_rising_has_no_peak():
    fit = fit_gao([1.0, 4.0, 9.0], [1.0, 2.0, 3.0], "best-of-n")  # R = d exactly: β = 0
    assert fit.beta == pytest.approx(0.0, abs=1e-12) and fit.peak_kl is None
    assert peak_kl("rl", 1.0, -0.2) is None


def test_too_few_points_or_a_bad_form():
    assert fit_gao([0.0, 1.0], [0.0, 0.5], "rl") is None  # one point at KL > 0: two unknowns
    assert fit_gao([], [], "best-of-n") is None
    with pytest.raises(ValueError, match="form"):
        fit_gao([1.0, 4.0], [1.0, 2.0], "linear")
    with pytest.raises(ValueError, match="gains"):
        fit_gao([1.0, 4.0], [1.0], "rl")
