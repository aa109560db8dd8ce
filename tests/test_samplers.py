"""Tests for ldm_np.samplers: timestep lists, DDPM and DDIM steps, the sampling loop, inversion."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ldm_np.diffusion import PREDICTION_TYPES, convert_prediction
from ldm_np.samplers import (
    SPACINGS,
    StepTrace,
    ddim_invert,
    ddim_step,
    ddpm_step,
    inference_timesteps,
    previous_timesteps,
    sample,
)
from ldm_np.schedules import make_schedule

# A short schedule whose last alpha_bar is near 0 (no terminal-SNR warning),
# so every step can be checked by hand.
SMALL = {dt: make_schedule(10, 0.1, 0.9, "linear", dtype=dt) for dt in ("float32", "float64")}
S10 = SMALL["float64"]
S1000 = make_schedule(1000, 1e-4, 0.02, "linear", dtype="float64")


def draw(shape, seed, dtype="float64"):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def reference(schedule):
    """beta, alpha, alpha_bar and alpha_bar_prev recomputed in float64 from the betas alone."""
    beta = schedule["betas"].astype(np.float64)
    alpha = 1.0 - beta
    ab = np.cumprod(alpha)
    ab_prev = np.append(1.0, ab[:-1])
    return beta, alpha, ab, ab_prev


# --------------------------------------------------------------------------
# Timestep lists
# --------------------------------------------------------------------------


def test_timesteps_match_lin_et_al_table_2():
    """T = 1000, N = 10 (Lin et al., 2023, Table 2, written 0-based)."""
    np.testing.assert_array_equal(inference_timesteps(1000, 10, "leading"), np.arange(900, -1, -100))
    np.testing.assert_array_equal(inference_timesteps(1000, 10, "trailing"), np.arange(999, 0, -100))
    np.testing.assert_array_equal(
        inference_timesteps(1000, 10, "linspace"), [999, 888, 777, 666, 555, 444, 333, 222, 111, 0]
    )
    # Stable Diffusion's configuration: leading with steps_offset = 1.
    np.testing.assert_array_equal(inference_timesteps(1000, 50, "leading", 1), np.arange(981, 0, -20))


def diffusers_formula(T, N, spacing):
    """The three formulas as diffusers' DDIMScheduler.set_timesteps writes them (first N kept)."""
    if spacing == "leading":
        return (np.arange(0, N) * (T // N)).round()[::-1].astype(np.int64)
    if spacing == "trailing":
        return (np.round(np.arange(T, 0, -T / N)).astype(np.int64) - 1)[:N]
    return np.linspace(0, T - 1, N).round()[::-1].astype(np.int64)


def check_timestep_list(T, N, spacing):
    ts = inference_timesteps(T, N, spacing)
    assert ts.dtype == np.int64 and ts.shape == (N,), (T, N, spacing, ts)
    assert ts.min() >= 0 and ts.max() <= T - 1, (T, N, spacing)
    assert np.all(np.diff(ts) < 0), (T, N, spacing)  # strictly decreasing: no step repeated
    if spacing == "trailing" or (spacing == "linspace" and N > 1):
        assert ts[0] == T - 1, (T, N, spacing)  # linspace(0, T - 1, 1) is [0]
    if spacing in ("leading", "linspace"):
        assert ts[-1] == 0, (T, N, spacing)
    np.testing.assert_array_equal(ts, diffusers_formula(T, N, spacing))


@pytest.mark.parametrize("T", [1, 2, 3, 7, 10, 64, 1000])
@pytest.mark.parametrize("spacing", SPACINGS)
def test_timesteps_for_every_n(T, spacing):
    for N in range(1, T + 1):
        check_timestep_list(T, N, spacing)


@settings(deadline=None)
@given(data=st.data(), spacing=st.sampled_from(SPACINGS))
def test_timesteps_property_for_any_t(data, spacing):
    T = data.draw(st.integers(1, 5000), label="T")
    N = data.draw(st.integers(1, T), label="N")
    check_timestep_list(T, N, spacing)


def test_float_arange_quirk_is_handled():
    """NumPy's float arange gives N + 1 values here; the extra one would be timestep -1."""
    assert len(np.arange(1000, 0, -1000 / 61)) == 62
    ts = inference_timesteps(1000, 61, "trailing")
    assert len(ts) == 61 and ts[-1] >= 0


def test_previous_timestep_is_the_next_entry_then_minus_one():
    ts = inference_timesteps(1000, 10, "linspace")
    np.testing.assert_array_equal(previous_timesteps(ts), [888, 777, 666, 555, 444, 333, 222, 111, 0, -1])
    # Not t - T // N, which would send 999 to 899, a step the list never visits.
    assert previous_timesteps(ts)[0] != 999 - 1000 // 10


def test_timestep_errors_name_the_argument():
    with pytest.raises(ValueError, match="num_inference_steps"):
        inference_timesteps(100, 101)
    with pytest.raises(ValueError, match="spacing"):
        inference_timesteps(100, 10, "uniform")
    with pytest.raises(ValueError, match="steps_offset"):
        inference_timesteps(100, 10, "trailing", steps_offset=1)
    with pytest.raises(ValueError, match="steps_offset"):
        inference_timesteps(1000, 1000, "leading", steps_offset=1)  # would visit t = 1000
    with pytest.raises(TypeError, match="num_inference_steps"):
        inference_timesteps(100, 10.0)


# --------------------------------------------------------------------------
# DDPM step
# --------------------------------------------------------------------------


def test_ddpm_step_on_hand_made_arrays():
    beta, alpha, ab, ab_prev = reference(S10)
    x_t = np.array([[1.0, -0.5], [0.25, 2.0]])
    eps = np.array([[0.3, 0.1], [-0.2, 0.4]])
    noise = np.array([[1.0, -1.0], [0.5, 0.0]])
    t = 4
    x0_hat = (x_t - np.sqrt(1 - ab[t]) * eps) / np.sqrt(ab[t])
    coef1 = np.sqrt(ab_prev[t]) * beta[t] / (1 - ab[t])
    coef2 = np.sqrt(alpha[t]) * (1 - ab_prev[t]) / (1 - ab[t])
    var = beta[t] * (1 - ab_prev[t]) / (1 - ab[t])
    expected = coef1 * x0_hat + coef2 * x_t + np.sqrt(var) * noise
    x_prev, got_x0 = ddpm_step(S10, eps, t, x_t, noise)
    np.testing.assert_allclose(got_x0, x0_hat, rtol=1e-12)
    np.testing.assert_allclose(x_prev, expected, rtol=1e-12)
    large, _ = ddpm_step(S10, eps, t, x_t, noise, variance_type="fixed_large")
    np.testing.assert_allclose(large - (coef1 * x0_hat + coef2 * x_t), np.sqrt(beta[t]) * noise, rtol=1e-12)


@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
def test_posterior_mean_from_x0_hat_equals_the_eps_form(prediction_type):
    """mu = coef1 x0_hat + coef2 x_t = (x_t - beta_t / sqrt(1 - ab_t) eps_hat) / sqrt(alpha_t)."""
    beta, alpha, ab, _ = reference(S1000)
    x_t, eps = draw((5, 3), 0), draw((5, 3), 1)
    zeros = np.zeros_like(x_t)
    for t in (0, 1, 2, 10, 500, 998, 999):
        tt = np.full(5, t)
        out = convert_prediction(S1000, eps, tt, x_t, "epsilon", prediction_type)
        mu, _ = ddpm_step(S1000, out, t, x_t, zeros, prediction_type=prediction_type)
        mu_eps = (x_t - beta[t] / np.sqrt(1 - ab[t]) * eps) / np.sqrt(alpha[t])
        np.testing.assert_allclose(mu, mu_eps, rtol=1e-9, atol=1e-9)


def test_ddpm_adds_no_noise_at_t_zero():
    x_t, eps, noise = draw((4, 2), 2), draw((4, 2), 3), draw((4, 2), 4)
    without, x0_hat = ddpm_step(S10, eps, 0, x_t, None)
    with_noise, _ = ddpm_step(S10, eps, 0, x_t, noise)
    np.testing.assert_array_equal(without, with_noise)
    np.testing.assert_allclose(without, x0_hat, rtol=1e-12)  # coef1 = 1, coef2 = 0 at t = 0
    # Per-row t: rows at 0 get none, the others get sigma_t * noise.
    t = np.array([0, 3, 0, 9])
    x_prev, _ = ddpm_step(S10, eps, t, x_t, noise)
    for row, step in enumerate(t):
        alone, _ = ddpm_step(S10, eps[row : row + 1], int(step), x_t[row : row + 1], noise[row : row + 1])
        np.testing.assert_allclose(x_prev[row : row + 1], alone, rtol=1e-12)
    zero_noise, _ = ddpm_step(S10, eps, t, x_t, np.zeros_like(noise))
    np.testing.assert_array_equal(x_prev[t == 0], zero_noise[t == 0])
    assert np.all(np.abs(x_prev[t > 0] - zero_noise[t > 0]) > 0)


def test_ddpm_clip_sample():
    x_t = np.array([[30.0, -30.0, 0.1]])
    eps = np.zeros_like(x_t)
    _, x0_free = ddpm_step(S10, eps, 5, x_t, np.zeros_like(x_t))
    assert np.abs(x0_free).max() > 1.0  # latents are not in [-1, 1]: no clipping by default
    _, x0_clip = ddpm_step(S10, eps, 5, x_t, np.zeros_like(x_t), clip_sample=1.0)
    np.testing.assert_allclose(x0_clip, np.clip(x0_free, -1.0, 1.0))


# --------------------------------------------------------------------------
# DDIM step
# --------------------------------------------------------------------------


def test_ddim_step_on_hand_made_arrays():
    _, _, ab, _ = reference(S10)
    x_t = np.array([[1.0, -0.5], [0.25, 2.0]])
    eps = np.array([[0.3, 0.1], [-0.2, 0.4]])
    noise = np.array([[1.0, -1.0], [0.5, 0.0]])
    t, t_prev, eta = 7, 3, 0.6
    x0_hat = (x_t - np.sqrt(1 - ab[t]) * eps) / np.sqrt(ab[t])
    sigma = eta * np.sqrt((1 - ab[t_prev]) / (1 - ab[t])) * np.sqrt(1 - ab[t] / ab[t_prev])
    expected = np.sqrt(ab[t_prev]) * x0_hat + np.sqrt(1 - ab[t_prev] - sigma**2) * eps + sigma * noise
    x_prev, got_x0 = ddim_step(S10, eps, t, t_prev, x_t, eta=eta, noise=noise)
    np.testing.assert_allclose(got_x0, x0_hat, rtol=1e-12)
    np.testing.assert_allclose(x_prev, expected, rtol=1e-12)


def test_ddim_eta_zero_is_deterministic():
    x_t, eps = draw((3, 2), 5), draw((3, 2), 6)
    a, _ = ddim_step(S10, eps, 8, 5, x_t)
    b, _ = ddim_step(S10, eps, 8, 5, x_t, noise=draw((3, 2), 7))  # noise ignored at eta = 0
    c, _ = ddim_step(S10, eps, 8, 5, x_t, noise=draw((3, 2), 8))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)


@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
def test_ddim_eta_one_on_consecutive_steps_is_the_ddpm_step(prediction_type):
    """sigma(eta = 1, t -> t - 1) is the DDPM posterior std, and the whole steps agree."""
    x_t, eps, noise = draw((4, 3), 9), draw((4, 3), 10), draw((4, 3), 11)
    zeros = np.zeros_like(noise)
    post_std = np.sqrt(S1000["posterior_variance"])
    for t in (0, 1, 2, 50, 500, 999):
        out = convert_prediction(S1000, eps, np.full(4, t), x_t, "epsilon", prediction_type)
        ddim, _ = ddim_step(S1000, out, t, t - 1, x_t, eta=1.0, noise=noise, prediction_type=prediction_type)
        ddim_mean, _ = ddim_step(
            S1000, out, t, t - 1, x_t, eta=1.0, noise=zeros, prediction_type=prediction_type
        )
        ddpm, _ = ddpm_step(S1000, out, t, x_t, noise, prediction_type=prediction_type)
        sigma = (ddim - ddim_mean) / noise
        np.testing.assert_allclose(sigma, post_std[t], rtol=1e-6, atol=1e-12)
        np.testing.assert_allclose(ddim, ddpm, rtol=1e-9, atol=1e-9)


def test_ddim_final_alpha():
    _, _, ab, _ = reference(S10)
    x_t, eps = draw((2, 3), 12), draw((2, 3), 13)
    x_prev, x0_hat = ddim_step(S10, eps, 0, -1, x_t)  # final_alpha_cumprod = 1: the sample is x0_hat
    np.testing.assert_allclose(x_prev, x0_hat, rtol=1e-12)
    x_prev, x0_hat = ddim_step(S10, eps, 0, -1, x_t, final_alpha_cumprod=float(ab[0]))
    # diffusers' set_alpha_to_one=False: one more partial step, ending on the noise level of t = 0.
    np.testing.assert_allclose(x_prev, x_t, rtol=1e-12)


def test_ddim_per_row_timesteps_equal_per_row_calls():
    x_t, eps, noise = draw((3, 2), 14), draw((3, 2), 15), draw((3, 2), 16)
    t, t_prev = np.array([9, 4, 0]), np.array([6, 1, -1])
    x_prev, _ = ddim_step(S10, eps, t, t_prev, x_t, eta=0.5, noise=noise)
    for row in range(3):
        alone, _ = ddim_step(
            S10,
            eps[row : row + 1],
            int(t[row]),
            int(t_prev[row]),
            x_t[row : row + 1],
            0.5,
            noise[row : row + 1],
        )
        np.testing.assert_allclose(x_prev[row : row + 1], alone, rtol=1e-12)


@pytest.mark.parametrize("prediction_type", ["sample", "v"])
def test_ddim_gives_the_same_step_for_every_prediction_type(prediction_type):
    x_t, eps, noise = draw((3, 2), 17), draw((3, 2), 18), draw((3, 2), 19)
    ref, _ = ddim_step(S1000, eps, 600, 400, x_t, eta=0.3, noise=noise)
    out = convert_prediction(S1000, eps, np.full(3, 600), x_t, "epsilon", prediction_type)
    got, _ = ddim_step(S1000, out, 600, 400, x_t, eta=0.3, noise=noise, prediction_type=prediction_type)
    np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-12)


def test_ddim_clipping_recomputes_eps_from_the_clipped_x0():
    x_t = np.array([[3.0, -0.2]])
    eps = np.array([[-2.0, 0.0]])
    _, _, ab, _ = reference(S10)
    x_prev, x0_hat = ddim_step(S10, eps, 6, 2, x_t, clip_sample=1.0)
    assert np.abs(x0_hat).max() <= 1.0
    eps_hat = (x_t - np.sqrt(ab[6]) * x0_hat) / np.sqrt(1 - ab[6])
    np.testing.assert_allclose(x_prev, np.sqrt(ab[2]) * x0_hat + np.sqrt(1 - ab[2]) * eps_hat, rtol=1e-12)


# --------------------------------------------------------------------------
# float32 stays float32; bad input
# --------------------------------------------------------------------------


def linear_model(schedule, mean=0.5, std=0.7):
    """The exact eps prediction for data ~ N(mean, std^2 I): linear in x_t (no training needed)."""

    def model(x_t, t):
        assert t.dtype == np.int64 and t.shape == (x_t.shape[0],)
        a = schedule["sqrt_alphas_cumprod"][t][:, None]  # [batch, 1]
        s = schedule["sqrt_one_minus_alphas_cumprod"][t][:, None]
        var = a * a * std**2 + s * s  # Var(x_t) per coordinate
        x0_hat = mean + a * std**2 / var * (x_t - a * mean)  # E[x0 | x_t]
        return (x_t - a * x0_hat) / s

    return model


def test_float32_in_float32_out():
    s = SMALL["float32"]
    x_t, eps, noise = (draw((3, 2), k, "float32") for k in (20, 21, 22))
    t = np.array([9, 4, 0])
    outs = {
        "ddpm int": ddpm_step(s, eps, 5, x_t, noise),
        "ddpm array": ddpm_step(s, eps, t, x_t, noise),
        "ddpm large clip": ddpm_step(s, eps, t, x_t, noise, variance_type="fixed_large", clip_sample=1.0),
        "ddim": ddim_step(s, eps, 5, 2, x_t, eta=1.0, noise=noise),
        "ddim final": ddim_step(s, eps, 0, -1, x_t, final_alpha_cumprod=0.9),
        "ddim array": ddim_step(s, eps, t, t - 1, x_t, eta=0.5, noise=noise),
    }
    for p in PREDICTION_TYPES:
        outs[f"ddpm {p}"] = ddpm_step(s, eps, t, x_t, noise, prediction_type=p)
        outs[f"ddim {p}"] = ddim_step(s, eps, 5, 2, x_t, eta=1.0, noise=noise, prediction_type=p)
    wrong = {
        k: (a.dtype, b.dtype) for k, (a, b) in outs.items() if a.dtype != np.float32 or b.dtype != np.float32
    }
    assert not wrong, wrong
    rng = np.random.default_rng(0)
    model = linear_model(s)
    for sampler in ("ddpm", "ddim"):
        x0, traces = sample(
            model,
            s,
            4,
            sampler=sampler,
            num_inference_steps=5,
            eta=0.5,
            rng=rng,
            shape=2,
            return_trajectory=True,
        )
        assert x0.dtype == np.float32
        for tr in traces:
            for name in (
                "alpha_cumprod_t",
                "alpha_cumprod_prev",
                "sigma",
                "model_output",
                "x0_hat",
                "x_prev",
            ):
                assert np.asarray(getattr(tr, name)).dtype == np.float32, (sampler, tr.t, name)
    x_T = ddim_invert(model, s, draw((4, 2), 23, "float32"), 5)
    assert x_T.dtype == np.float32


def test_step_errors_name_the_argument():
    s = SMALL["float32"]
    x_t, eps = draw((2, 2), 24, "float32"), draw((2, 2), 25, "float32")
    with pytest.raises(ValueError, match="eta"):
        ddim_step(s, eps, 5, 2, x_t, eta=1.5, noise=eps)
    with pytest.raises(ValueError, match="eta"):
        ddim_step(s, eps, 5, 2, x_t, eta=-0.1)
    with pytest.raises(ValueError, match="noise"):
        ddim_step(s, eps, 5, 2, x_t, eta=0.5)
    with pytest.raises(ValueError, match="t_prev"):
        ddim_step(s, eps, 5, 5, x_t)
    with pytest.raises(ValueError, match="t_prev"):
        ddim_step(s, eps, 5, -2, x_t)
    with pytest.raises(ValueError, match="t_prev"):
        ddim_step(s, eps, np.array([5, 3]), np.array([2, 3]), x_t)
    with pytest.raises(ValueError, match="prediction_type"):
        ddim_step(s, eps, 5, 2, x_t, prediction_type="v_prediction")
    with pytest.raises(ValueError, match="variance_type"):
        ddpm_step(s, eps, 5, x_t, eps, variance_type="learned")
    with pytest.raises(ValueError, match="noise"):
        ddpm_step(s, eps, 5, x_t, None)
    with pytest.raises(ValueError, match="t must lie"):
        ddpm_step(s, eps, 10, x_t, eps)
    with pytest.raises(ValueError, match="clip_sample"):
        ddpm_step(s, eps, 5, x_t, eps, clip_sample=0.0)
    with pytest.raises(ValueError, match="model_output"):
        ddpm_step(s, eps[:1], 5, x_t, eps)
    with pytest.raises(TypeError, match="x_t must have dtype float32"):
        ddim_step(s, eps, 5, 2, x_t.astype(np.float64))


# --------------------------------------------------------------------------
# The sampling loop
# --------------------------------------------------------------------------


def test_ddim_sampling_is_deterministic_given_x_T():
    model = linear_model(S1000)
    x_T = draw((6, 3), 30)
    a = sample(model, S1000, 6, num_inference_steps=20, rng=None, x_T=x_T)
    b = sample(model, S1000, 6, num_inference_steps=20, rng=np.random.default_rng(1), x_T=x_T)
    c = sample(model, S1000, 6, num_inference_steps=20, rng=np.random.default_rng(2), x_T=x_T)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)


@pytest.mark.parametrize("sampler,eta", [("ddpm", 0.0), ("ddim", 0.0), ("ddim", 1.0)])
def test_sampling_is_reproducible_for_a_seed(sampler, eta):
    model = linear_model(SMALL["float64"])
    kw = dict(sampler=sampler, num_inference_steps=5, eta=eta, shape=3)
    a = sample(model, S10, 8, rng=np.random.default_rng(3), **kw)
    b = sample(model, S10, 8, rng=np.random.default_rng(3), **kw)
    c = sample(model, S10, 8, rng=np.random.default_rng(4), **kw)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_samples_of_the_exact_linear_model_have_the_data_distribution():
    """With the exact model, both samplers reproduce N(0.5, 0.7^2): a whole-loop check."""
    model = linear_model(S1000)
    n = 4000
    for sampler, steps in (("ddpm", 1000), ("ddim", 50)):
        x0 = sample(
            model, S1000, n, sampler=sampler, num_inference_steps=steps, rng=np.random.default_rng(5), shape=2
        )
        # Standard errors: mean 0.7 / sqrt(n) = 0.011, std 0.7 / sqrt(2 n) = 0.008; DDIM-50's
        # discretisation adds ~0.01. 0.05 is several of each, and far below a wrong step.
        np.testing.assert_allclose(x0.mean(axis=0), 0.5, atol=0.05)
        np.testing.assert_allclose(x0.std(axis=0), 0.7, atol=0.05)


def test_trajectory_callback_and_trace():
    model = linear_model(S1000)
    seen = []
    x0, traces = sample(
        model,
        S1000,
        3,
        num_inference_steps=13,  # 1000 / 13 is not an integer: t - T // N would be wrong
        spacing="trailing",
        rng=np.random.default_rng(6),
        shape=2,
        callback=seen.append,
        return_trajectory=True,
    )
    ts = inference_timesteps(1000, 13, "trailing")
    assert [tr.t for tr in traces] == ts.tolist()
    assert [tr.t_prev for tr in traces] == previous_timesteps(ts).tolist()
    assert seen == traces and all(isinstance(tr, StepTrace) for tr in traces)
    np.testing.assert_array_equal(traces[-1].x_prev, x0)
    assert float(traces[-1].alpha_cumprod_prev) == 1.0  # final_alpha_cumprod
    text = repr(traces[0])
    assert text.startswith("StepTrace(t=999, t_prev=922, alpha_cumprod_t=")
    assert "x0_hat=<3x2 mean=" in text and "sigma=0" in text
    _, ddpm_traces = sample(
        model, S10, 2, sampler="ddpm", rng=np.random.default_rng(7), shape=2, return_trajectory=True
    )
    assert [tr.t for tr in ddpm_traces] == list(range(9, -1, -1))
    assert float(ddpm_traces[-1].sigma) == 0.0 and float(ddpm_traces[0].sigma) > 0.0


def test_ddpm_ignores_num_inference_steps_and_visits_every_step():
    calls = []
    model = linear_model(S10)

    def counting(x_t, t):
        calls.append(int(t[0]))
        return model(x_t, t)

    sample(counting, S10, 2, sampler="ddpm", num_inference_steps=3, rng=np.random.default_rng(8), shape=2)
    assert calls == list(range(9, -1, -1))


def test_progress_bar_runs(capsys):
    sample(
        linear_model(S10), S10, 2, num_inference_steps=3, rng=np.random.default_rng(9), shape=2, progress=True
    )
    assert "ddim" in capsys.readouterr().err


def test_sample_errors_name_the_argument():
    model = linear_model(S10)
    rng = np.random.default_rng(10)
    with pytest.raises(ValueError, match="sampler"):
        sample(model, S10, 2, sampler="euler", rng=rng, shape=2)
    with pytest.raises(ValueError, match="spacing"):
        sample(model, S10, 2, spacing="uniform", num_inference_steps=5, rng=rng, shape=2)
    with pytest.raises(ValueError, match="spacing"):
        sample(model, S10, 2, sampler="ddpm", spacing="uniform", rng=rng, shape=2)
    with pytest.raises(ValueError, match="prediction_type"):
        sample(model, S10, 2, prediction_type="x0", num_inference_steps=5, rng=rng, shape=2)
    with pytest.raises(ValueError, match="num_inference_steps"):
        sample(model, S10, 2, num_inference_steps=11, rng=rng, shape=2)
    with pytest.raises(ValueError, match="eta"):
        sample(model, S10, 2, eta=2.0, num_inference_steps=5, rng=rng, shape=2)
    with pytest.raises(ValueError, match="shape"):
        sample(model, S10, 2, num_inference_steps=5, rng=rng)
    with pytest.raises(ValueError, match="rng"):
        sample(model, S10, 2, num_inference_steps=5, rng=None, shape=2)
    with pytest.raises(TypeError, match="rng"):
        sample(model, S10, 2, num_inference_steps=5, rng=np.random.RandomState(0), shape=2)
    with pytest.raises(ValueError, match="x_T"):
        sample(model, S10, 2, num_inference_steps=5, rng=rng, x_T=draw((3, 2), 0))
    with pytest.raises(ValueError, match="model output"):
        sample(lambda x, t: x[:, :1], S10, 2, num_inference_steps=5, rng=rng, shape=2)
    with pytest.raises(TypeError, match="model output must have dtype float64"):
        sample(lambda x, t: x.astype(np.float32), S10, 2, num_inference_steps=5, rng=rng, shape=2)


# --------------------------------------------------------------------------
# Inversion
# --------------------------------------------------------------------------


def test_ddim_inversion_round_trip_with_the_exact_linear_model():
    model = linear_model(S1000)
    x0 = 0.5 + 0.7 * draw((8, 4), 40)

    def round_trip(n, iterations=0, spacing="leading"):
        x_T = ddim_invert(model, S1000, x0, n, spacing=spacing, fixed_point_iterations=iterations)
        back = sample(model, S1000, 8, num_inference_steps=n, spacing=spacing, rng=None, x_T=x_T)
        return np.abs(back - x0).max()

    # The one-evaluation inversion is first order: about 0.07 at N = 50, 4x less at N = 200.
    assert round_trip(50) < 0.1
    assert round_trip(200) < round_trip(50) / 3
    assert round_trip(50, spacing="trailing") < 0.1
    # Fixed-point iterations invert the discrete sampler itself (~4e-11 here).
    assert round_trip(50, iterations=10) < 1e-8
