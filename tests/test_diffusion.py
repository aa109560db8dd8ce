"""Tests for ldm_np.diffusion: the forward process, prediction-type conversions and the loss."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from ldm_np.diffusion import (
    PREDICTION_TYPES,
    convert_prediction,
    diffusion_loss,
    log_snr,
    min_snr_weights,
    predict_eps,
    predict_v,
    predict_x0,
    q_sample,
    snr,
    target_for,
    velocity,
)
from ldm_np.gradcheck import TOLERANCE, numerical_gradient, rel_error
from ldm_np.schedules import make_schedule

SCHEDULES = {dt: make_schedule(1000, 1e-4, 0.02, "linear", dtype=dt) for dt in ("float32", "float64")}
S64 = SCHEDULES["float64"]


def alpha_bar_reference(schedule):
    """alphas_cumprod recomputed from the betas in float64: the equations, not the schedule's arrays."""
    return np.cumprod(1.0 - schedule["betas"].astype(np.float64))


def draw(shape, seed, dtype="float64"):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


# --------------------------------------------------------------------------
# Forward process
# --------------------------------------------------------------------------


def test_q_sample_on_hand_made_arrays():
    x0 = np.array([[1.0, -2.0], [0.5, 0.0]])
    noise = np.array([[0.5, 0.25], [-1.0, 2.0]])
    t = np.array([10, 500])
    ab = alpha_bar_reference(S64)[t][:, None]
    expected = np.sqrt(ab) * x0 + np.sqrt(1.0 - ab) * noise
    np.testing.assert_allclose(q_sample(S64, x0, t, noise), expected, rtol=1e-12, atol=1e-14)


def test_q_sample_int_t_equals_array_t():
    x0, noise = draw((3, 4), 0), draw((3, 4), 1)
    np.testing.assert_array_equal(q_sample(S64, x0, 7, noise), q_sample(S64, x0, np.full(3, 7), noise))


@pytest.mark.parametrize("step", [0, 250, 999])
def test_q_sample_mean_and_variance_match_the_closed_form(step):
    """x_t = sqrt(ab) x0 + sqrt(1 - ab) eps, eps ~ N(0, I): mean sqrt(ab) x0, variance 1 - ab."""
    n = 200_000
    x0 = np.tile(np.array([[1.5, -0.5, 0.0]]), (n, 1))  # [n, 3], the same x0 in every row
    noise = np.random.default_rng(step).standard_normal(x0.shape)
    x_t = q_sample(S64, x0, np.full(n, step), noise)
    ab = alpha_bar_reference(S64)[step]
    var = 1.0 - ab
    # Standard errors: of a mean, sqrt(var / n); of a sample variance of
    # Gaussian data, var * sqrt(2 / (n - 1)). Five of them: a correct formula
    # fails with probability ~6e-7 per coordinate (the seed is fixed anyway),
    # while sqrt(ab) <-> ab or a missing square root misses by far more.
    se_mean = np.sqrt(var / n)
    se_var = var * np.sqrt(2.0 / (n - 1))
    np.testing.assert_array_less(np.abs(x_t.mean(axis=0) - np.sqrt(ab) * x0[0]), 5 * se_mean)
    np.testing.assert_array_less(np.abs(x_t.var(axis=0, ddof=1) - var), 5 * se_var)


def test_velocity_formula_and_rotation():
    x0, noise = draw((4, 3), 2), draw((4, 3), 3)
    t = np.array([0, 10, 500, 999])
    ab = alpha_bar_reference(S64)[t][:, None]
    v = velocity(S64, x0, noise, t)
    np.testing.assert_allclose(v, np.sqrt(ab) * noise - np.sqrt(1.0 - ab) * x0, rtol=1e-12, atol=1e-14)
    # (x_t, v) is (x0, noise) rotated by phi with cos(phi) = sqrt(ab): norms add up the same.
    x_t = q_sample(S64, x0, t, noise)
    np.testing.assert_allclose((x_t**2 + v**2).sum(1), (x0**2 + noise**2).sum(1), rtol=1e-12)


def test_snr_and_log_snr():
    t = np.array([0, 1, 100, 999])
    ab = alpha_bar_reference(S64)[t]
    np.testing.assert_allclose(snr(S64, t), ab / (1.0 - ab), rtol=1e-9)
    np.testing.assert_allclose(log_snr(S64, t), np.log(ab / (1.0 - ab)), rtol=1e-9, atol=1e-12)
    all_t = np.arange(1000)
    assert np.all(np.diff(snr(S64, all_t)) < 0)  # less signal at every step
    assert snr(S64, 5).shape == ()


# --------------------------------------------------------------------------
# Prediction-type conversions
# --------------------------------------------------------------------------

bounded = st.floats(-5.0, 5.0, allow_nan=False, allow_infinity=False, allow_subnormal=False)


@st.composite
def batch_case(draw_):
    batch = draw_(st.integers(1, 4))
    dim = draw_(st.integers(1, 5))
    t = draw_(arrays(np.int64, batch, elements=st.integers(0, 999)))
    x0 = draw_(arrays(np.float64, (batch, dim), elements=bounded))
    noise = draw_(arrays(np.float64, (batch, dim), elements=bounded))
    return t, x0, noise


@settings(deadline=None)
@given(case=batch_case(), prediction_type=st.sampled_from(PREDICTION_TYPES))
def test_targets_convert_back_to_x0_and_noise(case, prediction_type):
    t, x0, noise = case
    x_t = q_sample(S64, x0, t, noise)
    out = target_for(prediction_type, x0, noise, S64, t)
    # Dividing by sqrt(ab) ~ 0.006 at t = 999 magnifies float64 rounding of
    # |x_t| <= 10 to ~1e-12; 1e-9 is far below any formula mistake.
    np.testing.assert_allclose(predict_x0(S64, out, t, x_t, prediction_type), x0, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(predict_eps(S64, out, t, x_t, prediction_type), noise, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(
        predict_v(S64, out, t, x_t, prediction_type), velocity(S64, x0, noise, t), rtol=1e-9, atol=1e-9
    )


@settings(deadline=None)
@given(
    case=batch_case(),
    pair=st.sampled_from(list(itertools.permutations(PREDICTION_TYPES, 2))),
)
def test_conversions_round_trip(case, pair):
    """Any model output, re-expressed as another type and back, is unchanged."""
    t, out, x_t = case  # arbitrary values: an untrained model's output at an arbitrary x_t
    from_type, to_type = pair
    there = convert_prediction(S64, out, t, x_t, from_type, to_type)
    back = convert_prediction(S64, there, t, x_t, to_type, from_type)
    # Going through x0 divides by sqrt(ab) and through eps by sqrt(1 - ab),
    # each at least 0.006: rounding stays below 1e-11 for |values| <= 5.
    np.testing.assert_allclose(back, out, rtol=1e-9, atol=1e-9)


def test_conversion_to_the_same_type_is_the_identity():
    t, out, x_t = np.array([3, 900]), draw((2, 3), 4), draw((2, 3), 5)
    for p in PREDICTION_TYPES:
        np.testing.assert_allclose(convert_prediction(S64, out, t, x_t, p, p), out, rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------
# The loss
# --------------------------------------------------------------------------

# t spans SNRs above and below gamma = 5 (SNR ~ 1e4 at t = 0, ~9 at 100, ~0.5 at 300).
LOSS_T = np.array([0, 100, 300, 999])


def loss_case(seed=0):
    x0, noise = draw((4, 3), seed), draw((4, 3), seed + 1)
    out = draw((4, 3), seed + 2)  # non-trivial values: zeros hide broken gradients
    return out, x0, noise


@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
@pytest.mark.parametrize("gamma", [None, 5.0])
def test_loss_value_matches_the_definition(prediction_type, gamma):
    out, x0, noise = loss_case()
    loss, _ = diffusion_loss(S64, out, x0, noise, LOSS_T, prediction_type, gamma)
    target = target_for(prediction_type, x0, noise, S64, LOSS_T)
    ab = alpha_bar_reference(S64)[LOSS_T]
    ratio = ab / (1.0 - ab)
    if gamma is None:
        w = np.ones(4)
    else:
        clipped = np.minimum(ratio, gamma)
        w = {"epsilon": clipped / ratio, "sample": clipped, "v": clipped / (ratio + 1.0)}[prediction_type]
    expected = (w[:, None] * (out - target) ** 2).mean()
    np.testing.assert_allclose(loss, expected, rtol=1e-9)


@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
@pytest.mark.parametrize("gamma", [None, 5.0])
def test_loss_gradient_against_finite_differences(prediction_type, gamma):
    out, x0, noise = loss_case(seed=10)
    _, dout = diffusion_loss(S64, out, x0, noise, LOSS_T, prediction_type, gamma)
    num = numerical_gradient(
        lambda: diffusion_loss(S64, out, x0, noise, LOSS_T, prediction_type, gamma)[0], out
    )
    # A correct gradient of this quadratic lands near 1e-10 in float64.
    assert rel_error(dout, num) < TOLERANCE


def test_the_three_min_snr_losses_are_one_loss_of_x0_hat():
    """min-SNR weights turn every type's squared error into min(SNR, gamma) |x0_hat - x0|^2."""
    x0, noise = draw((4, 3), 20), draw((4, 3), 21)
    x_t = q_sample(S64, x0, LOSS_T, noise)
    x0_hat = x0 + 0.1 * draw((4, 3), 22)  # a model's imperfect estimate
    losses = []
    for p in PREDICTION_TYPES:
        out = convert_prediction(S64, x0_hat, LOSS_T, x_t, "sample", p)
        losses.append(diffusion_loss(S64, out, x0, noise, LOSS_T, p, min_snr_gamma=5.0)[0])
    np.testing.assert_allclose(losses, losses[0], rtol=1e-9)


def test_min_snr_with_a_huge_gamma_is_plain_mse_for_epsilon():
    out, x0, noise = loss_case(seed=30)
    plain = diffusion_loss(S64, out, x0, noise, LOSS_T, "epsilon")
    weighted = diffusion_loss(S64, out, x0, noise, LOSS_T, "epsilon", min_snr_gamma=1e9)
    np.testing.assert_allclose(weighted[0], plain[0], rtol=1e-12)
    np.testing.assert_allclose(weighted[1], plain[1], rtol=1e-12)
    np.testing.assert_allclose(min_snr_weights(S64, LOSS_T, "epsilon", 1e9), 1.0, rtol=1e-12)


def test_loss_accepts_an_int_t():
    out, x0, noise = loss_case(seed=40)
    a = diffusion_loss(S64, out, x0, noise, 50, "v", 5.0)
    b = diffusion_loss(S64, out, x0, noise, np.full(4, 50), "v", 5.0)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


# --------------------------------------------------------------------------
# float32 stays float32
# --------------------------------------------------------------------------


def test_float32_in_float32_out():
    s = SCHEDULES["float32"]
    x0, noise, out = (draw((3, 2), k, "float32") for k in (50, 51, 52))
    t = np.array([0, 400, 999])
    x_t = q_sample(s, x0, t, noise)
    results = {
        "q_sample": x_t,
        "q_sample int t": q_sample(s, x0, 3, noise),
        "velocity": velocity(s, x0, noise, t),
        "snr": snr(s, t),
        "log_snr": log_snr(s, t),
        "min_snr_weights": min_snr_weights(s, t, "v", 5.0),
    }
    for p in PREDICTION_TYPES:
        results[f"predict_x0 {p}"] = predict_x0(s, out, t, x_t, p)
        results[f"predict_eps {p}"] = predict_eps(s, out, t, x_t, p)
        results[f"predict_v {p}"] = predict_v(s, out, t, x_t, p)
        results[f"target_for {p}"] = target_for(p, x0, noise, s, t)
        results[f"convert {p}"] = convert_prediction(s, out, t, x_t, p, "v")
        for gamma in (None, 5.0):
            loss, dout = diffusion_loss(s, out, x0, noise, t, p, gamma)
            results[f"loss {p} {gamma}"] = loss
            results[f"dout {p} {gamma}"] = dout
    wrong = {name: r.dtype for name, r in results.items() if r.dtype != np.float32}
    assert not wrong, wrong


# --------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------


def test_bad_input_names_the_argument():
    s = SCHEDULES["float32"]
    x0, noise = draw((2, 3), 60, "float32"), draw((2, 3), 61, "float32")
    t = np.array([1, 2])
    with pytest.raises(ValueError, match="prediction_type"):
        diffusion_loss(s, x0, x0, noise, t, prediction_type="eps")
    with pytest.raises(ValueError, match="prediction_type"):
        predict_x0(s, x0, t, x0, "v_prediction")  # diffusers' name: ldm_np says "v"
    with pytest.raises(ValueError, match="t must lie"):
        q_sample(s, x0, np.array([0, 1000]), noise)
    with pytest.raises(ValueError, match="t must lie"):
        q_sample(s, x0, -1, noise)
    with pytest.raises(TypeError, match="t must be an integer"):
        q_sample(s, x0, np.array([0.0, 1.0]), noise)
    with pytest.raises(ValueError, match=r"t must have shape \[2\]"):
        q_sample(s, x0, np.array([0, 1, 2]), noise)
    with pytest.raises(TypeError, match="x0 must have dtype float32"):
        q_sample(s, x0.astype(np.float64), t, noise)  # no silent float64 upcast
    with pytest.raises(ValueError, match="noise must have shape"):
        q_sample(s, x0, t, noise[:, :2])
    with pytest.raises(ValueError, match=r"x0 must have shape \[batch, latent\]"):
        q_sample(s, x0[0], t, noise)
    with pytest.raises(ValueError, match="model_output must have shape"):
        diffusion_loss(s, x0[:1], x0, noise, t)
    with pytest.raises(ValueError, match="min_snr_gamma"):
        diffusion_loss(s, x0, x0, noise, t, min_snr_gamma=0.0)
    with pytest.raises(ValueError, match="to_type"):
        convert_prediction(s, x0, t, x0, "v", "x0")


def test_no_warnings_from_the_float32_paths():
    s = SCHEDULES["float32"]
    x0, noise = draw((2, 3), 70, "float32"), draw((2, 3), 71, "float32")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x_t = q_sample(s, x0, np.array([0, 999]), noise)
        for p in PREDICTION_TYPES:
            predict_x0(s, x_t, np.array([0, 999]), x_t, p)
