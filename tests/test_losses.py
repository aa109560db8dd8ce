"""Losses: values against their closed forms, gradients against central differences, dtypes kept."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import batches, checkable_arrays, float_arrays, make_rng, widths
from hypothesis import given
from hypothesis import strategies as st

from ldm_np.gradcheck import numerical_gradient, rel_error
from ldm_np.losses import (
    kl_divergence,
    kl_divergence_backward,
    kl_divergence_forward,
    kl_per_dimension,
    mse_backward,
    mse_forward,
)

TOL = 1e-6  # a correct gradient in float64 lands near 1e-9 or below
seeds = st.integers(0, 2**32 - 1)
shapes = st.tuples(batches, widths)


@given(data=st.data(), shape=shapes)
def test_mse_loss_value_and_gradient(data, shape):
    pred = data.draw(checkable_arrays(shape), label="pred")
    target = data.draw(checkable_arrays(shape), label="target")
    loss, cache = mse_forward(pred, target)
    dpred = mse_backward(1.0, cache)
    batch, width = shape
    expected = sum((pred[b, j] - target[b, j]) ** 2 for b in range(batch) for j in range(width)) / (
        batch * width
    )
    assert float(loss) == pytest.approx(expected, rel=1e-12, abs=1e-300)
    assert dpred.shape == pred.shape
    numeric = numerical_gradient(lambda: mse_forward(pred, target)[0], pred)
    assert rel_error(dpred, numeric) < TOL


def test_mse_loss_is_zero_at_the_target(rng):
    x = rng.standard_normal((4, 3))
    loss, cache = mse_forward(x, x.copy())
    dpred = mse_backward(1.0, cache)
    assert float(loss) == 0.0 and not dpred.any()


@given(data=st.data(), shape=shapes)
def test_kl_divergence_matches_its_closed_form(data, shape):
    mu = data.draw(float_arrays(shape, bound=3.0), label="mu")
    log_var = data.draw(float_arrays(shape, bound=3.0), label="log_var")
    kl = float(kl_divergence(mu, log_var))
    # KL(N(m, s^2) || N(0, 1)) = log(1/s) + (s^2 + m^2 - 1) / 2 per dimension; sum, then mean over the batch.
    s = np.exp(0.5 * log_var)
    expected = (np.log(1.0 / s) + (s**2 + mu**2 - 1.0) / 2.0).sum(axis=1).mean()
    assert kl == pytest.approx(expected, rel=1e-10, abs=1e-10)
    assert kl >= -1e-12  # a KL divergence is never negative
    np.testing.assert_allclose(kl_per_dimension(mu, log_var).sum(), kl, rtol=1e-10, atol=1e-10)


def test_kl_divergence_is_zero_for_the_prior():
    zeros = np.zeros((5, 4))
    assert float(kl_divergence(zeros, zeros)) == 0.0
    dmu, dlog_var = kl_divergence_backward(1.0, kl_divergence_forward(zeros, zeros)[1])
    assert not dmu.any() and not dlog_var.any()


@given(data=st.data(), shape=shapes, dloss=st.sampled_from([1.0, 0.37, -2.0]))
def test_kl_divergence_backward(data, shape, dloss):
    # log_var = 0 exactly (the prior) makes dlog_var exactly 0 while the mu^2 terms leave
    # ~1e-9 of rounding noise in the numerical gradient: that point is checked exactly in
    # test_kl_divergence_is_zero_for_the_prior, and here |log_var| >= 0.5.
    mu = data.draw(checkable_arrays(shape, smallest=0.5), label="mu")
    log_var = data.draw(checkable_arrays(shape, smallest=0.5, zero=False), label="log_var")
    dmu, dlog_var = kl_divergence_backward(dloss, kl_divergence_forward(mu, log_var)[1])
    num_mu = numerical_gradient(lambda: dloss * kl_divergence(mu, log_var), mu)
    num_lv = numerical_gradient(lambda: dloss * kl_divergence(mu, log_var), log_var)
    assert rel_error(dmu, num_mu) < TOL
    assert rel_error(dlog_var, num_lv) < TOL


@pytest.mark.parametrize("dloss", [1.0, 0.5, np.float32(0.5), np.array(0.5, dtype=np.float32)])
def test_losses_keep_float32(dloss, rng):
    """A Python float or a float32 upstream gradient keeps float32 values and gradients float32."""
    mu = rng.standard_normal((3, 4)).astype(np.float32)
    log_var = rng.standard_normal((3, 4)).astype(np.float32)
    kl, cache = kl_divergence_forward(mu, log_var)
    assert kl.dtype == np.float32 and kl_divergence(mu, log_var).dtype == np.float32
    dmu, dlog_var = kl_divergence_backward(dloss, cache)
    assert dmu.dtype == np.float32 and dlog_var.dtype == np.float32
    loss, cache = mse_forward(mu, log_var)
    assert loss.dtype == np.float32 and mse_backward(dloss, cache).dtype == np.float32


@given(seed=seeds)
def test_mse_and_kl_gradients_compose(seed):
    """A weighted sum of the two losses, as in VAE training: gradients add up."""
    rng = make_rng(seed)
    mu, log_var, target = (rng.standard_normal((3, 2)) for _ in range(3))
    beta = 0.1

    def total():
        return mse_forward(mu, target)[0] + beta * kl_divergence(mu, log_var)

    dmu_kl, dlog_var = kl_divergence_backward(beta, kl_divergence_forward(mu, log_var)[1])
    dmu = mse_backward(1.0, mse_forward(mu, target)[1]) + dmu_kl
    assert rel_error(dmu, numerical_gradient(total, mu)) < TOL
    assert rel_error(dlog_var, numerical_gradient(total, log_var)) < TOL
