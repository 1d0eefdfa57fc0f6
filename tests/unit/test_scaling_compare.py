"""Comparisons between two scaling-law fits: exponent ratio, data multiplier, crossings, N to beat a baseline."""
from __future__ import annotations

import numpy as np
import pytest

from radscale.scaling.compare import (data_multiplier, exponent_ratio, find_crossings, n_star,
                                      smallest_n_beating, unreachable_why)
from radscale.scaling.fit import fit_scaling_law
from radscale.scaling.forms import power_law, saturating_power_law

N = np.geomspace(3e4, 3.5e6, 8)


def _paired_replicates(p_a: np.ndarray, p_b: np.ndarray, m: int = 4000, r: int = 200, seed: int = 0):
    """Both encoders scored on the same m test images; replicate r resamples the same images for both."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, m, size=(r, m))
    out = []
    for p in (p_a, p_b):
        wrong = rng.random((len(p), m)) < p[:, None]
        out.append((wrong.mean(axis=1), np.stack([wrong[:, i].mean(axis=1) for i in idx], axis=1)))
    return out


@pytest.fixture(scope="module")
def power_pair():
    (ea, ra), (eb, rb) = _paired_replicates(power_law(N, 4.0, 0.3), power_law(N, 1.0, 0.15))
    return fit_scaling_law(N, ea, err_replicates=ra), fit_scaling_law(N, eb, err_replicates=rb)


def test_n_star_formula_and_unreachable_targets():
    assert n_star(2.0, 0.5, 0.1, 0.3) == pytest.approx((2.0 / 0.2) ** 2)
    assert n_star(2.0, 0.5, 0.0, 2.0 * 1e4 ** -0.5) == pytest.approx(1e4)
    assert np.isinf(n_star(2.0, 0.5, 0.1, 0.1)) and np.isinf(n_star(2.0, 0.5, 0.1, 0.05))
    assert np.isinf(n_star(2.0, -0.1, 0.0, 0.3))  # error grows with N: never reaches τ
    assert np.isnan(n_star(np.nan, 0.5, 0.0, 0.3))


def test_exponent_ratio_recovers_the_truth_with_paired_ci(power_pair):
    res = exponent_ratio(*power_pair, names=("RAD-DINO", "MI2"))
    assert res.ratio == pytest.approx(2.0, rel=0.15)
    assert res.ci[0] < 2.0 < res.ci[1] and res.ci[0] < res.ratio < res.ci[1]
    assert res.n_replicates == 200
    text = res.describe()
    assert "\n" not in text and "alpha_RAD-DINO/alpha_MI2" in text and "95% CI" in text and "N^−α" in text


def test_unpaired_replicates_are_refused():
    err = power_law(N, 2.0, 0.3) * np.exp(np.random.default_rng(1).normal(0, 0.02, N.size))
    a = fit_scaling_law(N, err, n_boot=50, seed=1)
    b = fit_scaling_law(N, err, n_boot=50, seed=2)
    with pytest.raises(ValueError, match="not paired"):
        exponent_ratio(a, b)
    with pytest.raises(ValueError, match="need bootstrap replicates"):
        exponent_ratio(fit_scaling_law(N, err), b)
    same_seed = fit_scaling_law(N, err * 1.1, n_boot=50, seed=1)  # same N grid and seed: paired by construction
    assert exponent_ratio(a, same_seed).ratio == pytest.approx(1.0)


def test_data_multiplier_matches_the_formula_and_flags_unreachable_targets():
    n = np.geomspace(1e3, 1e7, 10)
    ea = saturating_power_law(n, 0.10, 3.0, 0.4)
    eb = saturating_power_law(n, 0.02, 1.0, 0.2)
    noise = np.random.default_rng(3).normal(0, 0.003, (2, n.size))
    fa = fit_scaling_law(n, ea * np.exp(noise[0]), form="saturating", method="huber", n_boot=40, seed=0)
    fb = fit_scaling_law(n, eb * np.exp(noise[1]), form="saturating", method="huber", n_boot=40, seed=0)
    res = data_multiplier(fa, fb, [0.2, 0.12, 0.05], names=("A", "B"))
    pa, pb = fa.params, fb.params
    def star(p, t):
        return (p["a"] / (t - p["e_inf"])) ** (1 / p["alpha"])
    expect = [star(pa, t) / star(pb, t) for t in (0.2, 0.12)]
    assert res.ratio[:2] == pytest.approx(expect, rel=1e-12)
    assert res.reachable_a == (True, True, False) and res.reachable_b == (True, True, True)
    assert np.isnan(res.n_star_a[2]) and np.isnan(res.ratio[2]) and np.isfinite(res.n_star_b[2])
    for i in range(2):
        assert res.ci_ratio[i][0] <= res.ratio[i] <= res.ci_ratio[i][1]
        assert res.ci_a[i][0] <= res.n_star_a[i] <= res.ci_a[i][1]
    assert res.ratio[0] < 1 < res.ratio[1]  # A is ahead at τ = 0.2, behind at τ = 0.12: no single "k× better"
    text = res.describe()
    assert "\n" not in text and "(a/(τ − e∞))^(1/α)" in text and "unreachable for A" in text


def test_find_crossings_locates_the_analytic_crossing(power_pair):
    fa, fb = power_pair
    a1, x1, a2, x2 = fa.params["a"], fa.params["alpha"], fb.params["a"], fb.params["alpha"]
    analytic = (a1 / a2) ** (1 / (x1 - x2))  # a1 N^-x1 = a2 N^-x2
    res = find_crossings(fa, fb, (1e3, 1e9), names=("A", "B"))
    assert len(res.n_cross) == 1 and res.n_cross[0] == pytest.approx(analytic, rel=1e-8)
    assert res.better_at_start == "B"  # A starts worse (a = 4) but falls faster
    assert res.p_cross > 0.9
    assert "\n" not in res.describe() and "crossings" in res.describe()
    none = find_crossings(fa, fb, (1e3, 1e4))
    assert none.n_cross == () and "none" in none.describe()
    with pytest.raises(ValueError, match="n_range"):
        find_crossings(fa, fb, (1e5, 1e4))


def test_smallest_n_beating_a_baseline(power_pair):
    fit = power_pair[0]
    baseline = float(fit.predict(np.array([1e6]))[0])
    res = smallest_n_beating(fit, baseline, name="RAD-DINO")
    assert res.n_star == pytest.approx(1e6, rel=1e-9) and res.reachable and not res.extrapolated
    assert res.ci[0] < 1e6 < res.ci[1] and res.p_unreachable == 0.0
    far = smallest_n_beating(fit, float(fit.predict(np.array([1e9]))[0]))
    assert far.extrapolated and "extrapolated" in far.describe()
    assert "\n" not in res.describe() and "N* = (a/(baseline − e∞))^(1/α)" in res.describe()


def test_smallest_n_beating_with_a_noisy_baseline_and_a_floor():
    n = np.geomspace(1e3, 1e7, 10)
    err = saturating_power_law(n, 0.1, 3.0, 0.4) * np.exp(np.random.default_rng(4).normal(0, 0.003, n.size))
    fit = fit_scaling_law(n, err, form="saturating", method="huber", n_boot=40, seed=0)
    below_floor = smallest_n_beating(fit, 0.05)
    assert not below_floor.reachable and np.isnan(below_floor.n_star) and "unreachable" in below_floor.describe()
    tau = 0.15
    noisy = smallest_n_beating(fit, tau, baseline_replicates=np.random.default_rng(5).normal(tau, 0.005, 40))
    fixed = smallest_n_beating(fit, tau)
    assert noisy.n_star == fixed.n_star
    assert noisy.ci[1] - noisy.ci[0] > fixed.ci[1] - fixed.ci[0]  # the baseline's noise widens the interval
    with pytest.raises(ValueError, match="3 baseline replicates for 40 fit replicates"):
        smallest_n_beating(fit, tau, baseline_replicates=[0.1, 0.1, 0.1])


def test_unreachable_n_star_says_why():
    assert np.isnan(n_star(2.0, 0.5, 0.0, np.nan))  # an undefined baseline is not "unreachable"
    assert unreachable_why(2.0, -0.01, 0.0, 0.3) == "the fitted error does not fall with N (α ≤ 0)"
    assert unreachable_why(2.0, 0.5, 0.1, 0.05) == "τ ≤ e∞"
    assert unreachable_why(5.0, 1e-4, 0.0, 0.4).startswith("beyond the float range")  # (12.5)^(1e4) overflows
    assert unreachable_why(2.0, 0.5, 0.0, 0.3) == ""
    rising = np.repeat([[0.300], [0.301], [0.302]], 40, axis=1)  # error rises with N: α < 0
    fit = fit_scaling_law(np.array([100.0, 300.0, 1000.0]), rising[:, 0], err_replicates=rising)
    res = smallest_n_beating(fit, 0.35)
    assert not res.reachable and "does not fall with N" in res.describe()
    with pytest.raises(ValueError, match="metric undefined"):
        smallest_n_beating(fit, float("nan"))


def test_exponent_ratio_does_not_rank_exponents_that_are_not_positive():
    n = np.array([100.0, 300.0, 1000.0, 3000.0])
    reps = lambda e: np.repeat(e[:, None], 20, axis=1)       # noqa: E731
    up_fast, up_slow = 0.3 * (n / 100) ** 0.006, 0.3 * (n / 100) ** 0.003
    a = fit_scaling_law(n, up_fast, err_replicates=reps(up_fast))
    b = fit_scaling_law(n, up_slow, err_replicates=reps(up_slow))
    res = exponent_ratio(a, b, names=("G", "F"))
    assert res.ratio == pytest.approx(2.0, rel=1e-3) and res.p_nonpositive == 1.0
    assert "means G's error falls faster" not in res.describe() and "does not fall with N" in res.describe()
