"""Noise schedules: closed forms, the derived arrays, dtypes, the terminal-SNR warning, bad arguments."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ldm_np.schedules import KINDS, make_schedule

ARRAY_KEYS = (
    "betas",
    "alphas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
)

# Short schedules keep much of the signal at the last step and warn about it; that
# warning is tested on its own below.
quiet = pytest.mark.filterwarnings("ignore:this .* schedule keeps")


def schedule(**kw):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "this .* schedule keeps")
        return make_schedule(**kw)


def test_linear_is_ddpm():
    s = make_schedule(dtype="float64")
    assert s["num_steps"] == 1000 and s["kind"] == "linear"
    assert s["betas"][0] == 1e-4 and s["betas"][-1] == 0.02
    np.testing.assert_allclose(np.diff(s["betas"]), (0.02 - 1e-4) / 999, rtol=1e-9)


def test_scaled_linear_spaces_sqrt_beta_evenly():
    s = schedule(kind="scaled_linear", beta_start=0.00085, beta_end=0.012, dtype="float64")
    root = np.sqrt(s["betas"])
    np.testing.assert_allclose([root[0], root[-1]], [math.sqrt(0.00085), math.sqrt(0.012)], rtol=1e-14)
    np.testing.assert_allclose(np.diff(root), (math.sqrt(0.012) - math.sqrt(0.00085)) / 999, rtol=1e-9)


def test_cosine_follows_nichol_and_dhariwal():
    n = 1000
    s = make_schedule(n, kind="cosine", dtype="float64")

    def f(t):  # alpha_bar(t) is f(t) / f(0)
        return math.cos((t / n + 0.008) / 1.008 * math.pi / 2) ** 2

    expected = np.array([f(t + 1) / f(0) for t in range(n)])
    uncapped = s["betas"] < 0.999
    assert uncapped[: n - 1].all() and s["betas"][-1] == 0.999  # only the last beta is capped
    np.testing.assert_allclose(s["alphas_cumprod"][uncapped], expected[uncapped], rtol=1e-10)
    assert s["alphas_cumprod"][-1] == pytest.approx(s["alphas_cumprod"][-2] * 0.001, rel=1e-12)
    assert s["alphas_cumprod"][-1] > 0


@quiet
@given(
    num_steps=st.integers(1, 1200),
    kind=st.sampled_from(KINDS),
    beta_start=st.floats(1e-5, 1e-3),
    beta_end=st.floats(1e-3, 0.05),
    dtype=st.sampled_from(["float32", "float64"]),
)
def test_derived_arrays(num_steps, kind, beta_start, beta_end, dtype):
    s = make_schedule(num_steps, beta_start, beta_end, kind, dtype=dtype)
    for key in ARRAY_KEYS:
        assert s[key].shape == (num_steps,) and s[key].dtype == np.dtype(dtype), key
    s64 = make_schedule(num_steps, beta_start, beta_end, kind, dtype="float64")
    betas, ab = s64["betas"], s64["alphas_cumprod"]
    assert np.all(betas > 0) and np.all(betas <= 0.999)
    np.testing.assert_allclose(s64["alphas"], 1.0 - betas, rtol=1e-15)
    np.testing.assert_allclose(ab, np.cumprod(1.0 - betas), rtol=1e-12)
    assert np.all(ab > 0) and np.all(ab <= 1) and np.all(np.diff(ab) < 0)  # strictly decreasing in (0, 1]
    assert s64["alphas_cumprod_prev"][0] == 1.0
    np.testing.assert_array_equal(s64["alphas_cumprod_prev"][1:], ab[:-1])
    np.testing.assert_allclose(s64["sqrt_alphas_cumprod"] ** 2, ab, rtol=1e-12)
    np.testing.assert_allclose(s64["sqrt_one_minus_alphas_cumprod"] ** 2, 1.0 - ab, rtol=1e-12)
    pv = s64["posterior_variance"]
    assert pv[0] == 0.0
    if num_steps > 1:
        # beta_t (1 - ab_{t-1}) / (1 - ab_t): the variance of q(x_{t-1} | x_t, x_0), below beta_t.
        t = np.arange(1, num_steps)
        np.testing.assert_allclose(pv[1:], betas[t] * (1 - ab[t - 1]) / (1 - ab[t]), rtol=1e-12)
        assert np.all(pv[1:] <= betas[1:])
        log_pv = s64["posterior_log_variance_clipped"]
        assert log_pv[0] == log_pv[1]  # t = 0 borrows t = 1, so the log stays finite
        np.testing.assert_allclose(log_pv[1:], np.log(pv[1:]), rtol=1e-12)
    # float32 is the float64 schedule rounded once, never computed in float32.
    if dtype == "float32":
        for key in ARRAY_KEYS:
            np.testing.assert_array_equal(s[key], s64[key].astype(np.float32))


def test_float32_default_schedule_is_strictly_decreasing():
    for kind in KINDS:
        ab = schedule(kind=kind)["alphas_cumprod"]
        assert ab.dtype == np.float32 and np.all(np.diff(ab) < 0) and ab[-1] > 0


def test_single_step_schedule_is_finite():
    s = schedule(num_steps=1, dtype="float64")
    assert s["alphas_cumprod_prev"][0] == 1.0 and s["posterior_variance"][0] == 0.0
    assert np.isfinite(s["posterior_log_variance_clipped"]).all()


def test_terminal_snr_warning_fires_for_a_short_linear_schedule():
    with pytest.warns(UserWarning, match=r"sqrt\(alphas_cumprod\[-1\]\)"):
        make_schedule(50)
    # Stable Diffusion's scaled_linear schedule is the documented case (Lin et al., 2023).
    with pytest.warns(UserWarning, match="scaled_linear"):
        make_schedule(1000, 0.00085, 0.012, "scaled_linear")


@pytest.mark.parametrize(("num_steps", "kind"), [(1000, "linear"), (50, "cosine"), (1000, "cosine")])
def test_no_terminal_snr_warning_when_the_signal_is_gone(num_steps, kind):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_schedule(num_steps, kind=kind)


def test_metadata_and_no_shared_state():
    s = make_schedule(dtype="float64")
    assert (s["beta_start"], s["beta_end"]) == (1e-4, 0.02)
    s["betas"][0] = 5.0
    assert make_schedule(dtype="float64")["betas"][0] == 1e-4  # a fresh schedule each call
