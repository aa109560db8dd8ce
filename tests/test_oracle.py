"""Tests for ldm_np.oracle: the exact denoiser of a finite data set, and samplers driven by it."""

from __future__ import annotations

import numpy as np
import pytest

from ldm_np.backend import gpu_available, to_device, to_numpy
from ldm_np.datasets import moons
from ldm_np.diffusion import PREDICTION_TYPES, convert_prediction
from ldm_np.evaluation.metrics import nearest_distance
from ldm_np.oracle import OracleDenoiser, main, pairwise_scale
from ldm_np.samplers import ddpm_step, sample
from ldm_np.schedules import make_schedule

SCHEDULES = {dt: make_schedule(1000, 1e-4, 0.02, "linear", dtype=dt) for dt in ("float32", "float64")}
S64 = SCHEDULES["float64"]
# 16 points: the closest two are 0.16 apart, far more than the noise std 0.01
# left at t = 0, so every sample must end exactly on one of them.
DATA = {dt: moons(16, seed=1, noise=0.05, dtype=dt) for dt in ("float32", "float64")}


def brute_force_weights(data, x_t, t, schedule):
    """softmax_i(-||x_t - sqrt(ab) x_i||^2 / (2 (1 - ab))) with explicit differences, float64."""
    ab = schedule["alphas_cumprod"].astype(np.float64)[t][:, None, None]  # [batch, 1, 1]
    diff = x_t[:, None, :] - np.sqrt(ab) * data[None, :, :]  # [batch, n, d]
    logits = -(diff**2).sum(-1) / (2 * (1 - ab[:, :, 0]))  # [batch, n]
    logits -= logits.max(axis=1, keepdims=True)
    w = np.exp(logits)
    return w / w.sum(axis=1, keepdims=True)


# --------------------------------------------------------------------------
# The oracle itself
# --------------------------------------------------------------------------


def test_weights_match_the_brute_force_softmax():
    data = DATA["float64"]
    oracle = OracleDenoiser(data, S64)
    x_t = np.random.default_rng(0).standard_normal((5, 2))
    t = np.array([0, 20, 200, 600, 999])
    np.testing.assert_allclose(oracle.weights(x_t, t), brute_force_weights(data, x_t, t, S64), atol=1e-10)


def test_weights_stay_finite_far_from_the_data_at_t_zero():
    """Logits reach -1e10 here: without subtracting the row maximum, exp underflows to 0/0."""
    oracle = OracleDenoiser(DATA["float32"], SCHEDULES["float32"])
    x_t = np.full((2, 2), 1e3, dtype=np.float32)
    w = oracle.weights(x_t, np.array([0, 0]))
    assert np.isfinite(w).all()
    np.testing.assert_allclose(w.sum(axis=1), 1.0, rtol=1e-6)
    assert (w >= 0).all()


def test_x0_hat_is_the_data_point_at_t_zero_and_the_mean_at_t_max():
    data = DATA["float64"]
    oracle = OracleDenoiser(data, S64, "sample")
    a0 = S64["sqrt_alphas_cumprod"][0]
    np.testing.assert_allclose(oracle(a0 * data, 0), data, atol=1e-12)  # x_t = sqrt(ab) x_i, no noise
    # At t = 999 sqrt(ab) = 0.006: x_t says almost nothing, so x0_hat is nearly the data mean.
    x_t = np.random.default_rng(1).standard_normal((4, 2))
    np.testing.assert_allclose(oracle(x_t, 999), np.broadcast_to(data.mean(0), (4, 2)), atol=0.05)


def test_prediction_types_are_the_same_estimate():
    data = DATA["float64"]
    x_t = np.random.default_rng(2).standard_normal((6, 2))
    t = np.array([0, 5, 50, 300, 700, 999])
    eps = OracleDenoiser(data, S64, "epsilon")(x_t, t)
    for p in ("sample", "v"):
        got = OracleDenoiser(data, S64, p)(x_t, t)
        np.testing.assert_allclose(
            got, convert_prediction(S64, eps, t, x_t, "epsilon", p), rtol=1e-9, atol=1e-9
        )


def test_oracle_accepts_an_int_t_and_has_a_repr():
    oracle = OracleDenoiser(DATA["float64"], S64, "v")
    x_t = np.random.default_rng(3).standard_normal((3, 2))
    np.testing.assert_array_equal(oracle(x_t, 40), oracle(x_t, np.full(3, 40)))
    assert repr(oracle) == "OracleDenoiser(n=16, d=2, prediction_type='v', num_steps=1000, dtype=float64)"


def test_float32_in_float32_out():
    s = SCHEDULES["float32"]
    x_t = np.random.default_rng(4).standard_normal((3, 2)).astype(np.float32)
    t = np.array([0, 500, 999])
    for p in PREDICTION_TYPES:
        oracle = OracleDenoiser(DATA["float64"], s, p)  # float64 data is cast to the schedule's dtype
        assert oracle.data.dtype == np.float32
        assert oracle(x_t, t).dtype == np.float32
        assert oracle.weights(x_t, t).dtype == np.float32


def test_bad_input_names_the_argument():
    s = SCHEDULES["float32"]
    oracle = OracleDenoiser(DATA["float32"], s)
    with pytest.raises(ValueError, match="x_t must have shape"):
        oracle(np.zeros((2, 3), dtype=np.float32), np.array([0, 1]))
    with pytest.raises(TypeError, match="x_t must have dtype float32"):
        oracle(np.zeros((2, 2)), np.array([0, 1]))
    with pytest.raises(ValueError, match="t must lie"):
        oracle(np.zeros((2, 2), dtype=np.float32), np.array([0, 1000]))
    with pytest.raises(ValueError, match="prediction_type"):
        OracleDenoiser(DATA["float32"], s, "x0")
    with pytest.raises(ValueError, match="data"):
        OracleDenoiser(np.zeros(5, dtype=np.float32), s)


# --------------------------------------------------------------------------
# Samplers driven by the oracle
# --------------------------------------------------------------------------


@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
@pytest.mark.parametrize("sampler,steps", [("ddpm", 1000), ("ddim", 50)])
def test_oracle_samples_land_on_the_data(sampler, steps, prediction_type):
    s, data = SCHEDULES["float32"], DATA["float32"]
    oracle = OracleDenoiser(data, s, prediction_type)
    x0 = sample(
        oracle,
        s,
        64,
        sampler=sampler,
        num_inference_steps=steps,
        prediction_type=prediction_type,
        rng=np.random.default_rng(0),
        shape=2,
    )
    d = nearest_distance(x0, data)  # [64]
    nn_median = pairwise_scale(data.astype(np.float64))["median_nn"]  # 0.23
    # "On a point" = within 1e-3 (0.4% of the typical gap). A rare sample that
    # ends between two points is a blend, so ask for 95%, not all.
    assert (d < 1e-3).mean() >= 0.95, np.sort(d)[-5:]
    assert d.mean() < 0.01 * nn_median
    hit = np.unique(np.argmin(((x0[:, None, :] - data[None]) ** 2).sum(-1), axis=1))
    assert len(hit) >= 10  # spread over the data set, not collapsed onto a few points


def chi_square_over_points(x0, data):
    idx = np.argmin(((x0[:, None, :] - data[None]) ** 2).sum(-1), axis=1)
    counts = np.bincount(idx, minlength=len(data))
    expected = len(x0) / len(data)
    return float(((counts - expected) ** 2 / expected).sum())


# chi^2 with 15 degrees of freedom exceeds 37.7 with probability 0.001.
CHI2_15_AT_0_001 = 37.7


def test_ddpm_with_the_oracle_picks_every_data_point_equally_often():
    """The target distribution is uniform over the 16 points; DDPM-1000 must reproduce it.

    With 1,600 samples (100 per point) the statistic averages 15 for a
    correct sampler (21.3 at this seed). A planted bug, twice the noise at
    every step, lands on the data just as well but gives 144: landing alone
    is not enough to trust a sampler.
    """
    s, data = SCHEDULES["float32"], DATA["float32"]
    oracle = OracleDenoiser(data, s)
    x0 = sample(oracle, s, 1600, sampler="ddpm", rng=np.random.default_rng(1), shape=2)
    assert chi_square_over_points(x0, data) < CHI2_15_AT_0_001

    rng = np.random.default_rng(1)
    x = rng.standard_normal((1600, 2), dtype=np.float32)
    for t in range(999, -1, -1):
        noise = 2.0 * rng.standard_normal(x.shape, dtype=np.float32)  # the planted bug
        x, _ = ddpm_step(s, oracle(x, t), t, x, noise)
    assert (nearest_distance(x, data) < 1e-3).mean() > 0.95  # still lands...
    assert chi_square_over_points(x, data) > 3 * CHI2_15_AT_0_001  # ...but with the wrong weights


def test_main_prints_the_table(capsys):
    rows = main(num_points=16, num_samples=32, seed=1)
    out = capsys.readouterr().out
    assert "2-D moons" in out and "median nearest-neighbour distance" in out
    assert len(rows) == 6
    assert {(r["sampler"], r["steps"]) for r in rows} == {("ddpm", 1000), ("ddim", 50)}
    for r in rows:
        assert r["median"] < 1e-5 and r["mean"] < 1e-3, r
        assert f"{r['mean']:.2e}" in out


@pytest.mark.gpu
@pytest.mark.skipif(not gpu_available(), reason="needs CuPy and a CUDA GPU")
def test_gpu_sampling_matches_cpu():
    """Same x_T (drawn on the host, then moved): DDIM with eta = 0 gives the same samples on both devices."""
    cpu = SCHEDULES["float32"]
    gpu = make_schedule(1000, 1e-4, 0.02, "linear", dtype="float32", device="gpu")
    x_T = np.random.default_rng(2).standard_normal((32, 2), dtype=np.float32)
    for p in PREDICTION_TYPES:
        kw = dict(num_inference_steps=50, prediction_type=p, rng=None)
        on_cpu = sample(OracleDenoiser(DATA["float32"], cpu, p), cpu, 32, x_T=x_T, **kw)
        on_gpu = sample(OracleDenoiser(DATA["float32"], gpu, p), gpu, 32, x_T=to_device(x_T, "gpu"), **kw)
        np.testing.assert_allclose(to_numpy(on_gpu), on_cpu, atol=1e-4)
