"""The VAE pieces: reparameterization (gradients and sampled statistics), the log-variance
clamp, and the whole VAE loss backpropagated through decoder, reparameterization and encoder."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import batches, checkable_arrays, make_rng, perturb_params, widths
from hypothesis import given
from hypothesis import strategies as st

from ldm_np import vae
from ldm_np.gradcheck import numerical_gradient, rel_error
from ldm_np.losses import (
    kl_divergence,
    kl_divergence_backward,
    kl_divergence_forward,
    mse_backward,
    mse_forward,
)
from ldm_np.models import build_decoder, build_encoder
from ldm_np.vae import (
    LOG_VAR_MAX,
    LOG_VAR_MIN,
    clamp_log_var_backward,
    clamp_log_var_forward,
    reparameterize,
    reparameterize_backward,
    reparameterize_forward,
)

TOL = 1e-6  # a correct gradient in float64 lands near 1e-9 or below
seeds = st.integers(0, 2**32 - 1)


# --------------------------------------------------------------------------
# Reparameterization: gradients
# --------------------------------------------------------------------------


@given(data=st.data(), shape=st.tuples(batches, widths), seed=seeds)
def test_reparameterize_forward_gradients(data, shape, seed):
    mu = data.draw(checkable_arrays(shape), label="mu")
    log_var = data.draw(checkable_arrays(shape), label="log_var")
    rng = make_rng(seed)
    eps = rng.standard_normal(shape)
    z, cache = reparameterize_forward(mu, log_var, eps)
    np.testing.assert_allclose(z, mu + np.sqrt(np.exp(log_var)) * eps, rtol=1e-12, atol=1e-12)
    dz = rng.standard_normal(shape)
    dmu, dlog_var = reparameterize_backward(dz, cache)
    assert (
        rel_error(dmu, numerical_gradient(lambda: reparameterize_forward(mu, log_var, eps)[0], mu, dz)) < TOL
    )
    num_lv = numerical_gradient(lambda: reparameterize_forward(mu, log_var, eps)[0], log_var, dz)
    assert rel_error(dlog_var, num_lv) < TOL


# --------------------------------------------------------------------------
# Reparameterization: the samples have mean mu and variance exp(log_var)
# --------------------------------------------------------------------------

MU = np.array([0.5, -1.0, 2.0, 0.0])
LOG_VAR = np.array([-1.0, 0.7, 1.5, -3.0])
N = 100_000


def moments_match(z, mu, var, n_se=5.0):
    """Sample mean and variance within n_se standard errors of (mu, var), column by column.

    For n draws from N(mu, var): the standard error of the mean is sqrt(var / n) and
    that of the sample variance is var * sqrt(2 / (n - 1)). Five standard errors make a
    false alarm a ~1e-6 event per column with this fixed seed anyway.
    """
    n = z.shape[0]
    mean_ok = np.abs(z.mean(axis=0) - mu) < n_se * np.sqrt(var / n)
    var_ok = np.abs(z.var(axis=0, ddof=1) - var) < n_se * var * np.sqrt(2.0 / (n - 1))
    return bool(mean_ok.all() and var_ok.all())


def test_reparameterize_samples_have_the_right_mean_and_variance():
    mu, log_var = np.tile(MU, (N, 1)), np.tile(LOG_VAR, (N, 1))
    z, _ = reparameterize(mu, log_var, np.random.default_rng(7))
    assert z.shape == mu.shape and z.dtype == np.float64
    assert moments_match(z, MU, np.exp(LOG_VAR))
    # The classic mistake, exp(log_var) (the variance) where exp(0.5 * log_var) (the std)
    # belongs, gives variance exp(2 log_var): the same check rejects it.
    eps = (z - mu) / np.exp(0.5 * log_var)
    wrong = mu + np.exp(log_var) * eps
    assert not moments_match(wrong, MU, np.exp(LOG_VAR))


def test_reparameterize_returns_its_generator_and_advances_it():
    mu, log_var = np.zeros((3, 2)), np.zeros((3, 2))
    rng = np.random.default_rng(11)
    z1, rng_out = reparameterize(mu, log_var, rng)
    assert rng_out is rng
    z2, _ = reparameterize(mu, log_var, rng)
    assert not np.array_equal(z1, z2)  # the state moved on
    z1_again, _ = reparameterize(mu, log_var, np.random.default_rng(11))
    np.testing.assert_array_equal(z1, z1_again)  # same seed, same draw


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_reparameterize_keeps_dtype(dtype):
    mu, log_var = np.zeros((4, 3), dtype=dtype), np.full((4, 3), -1.0, dtype=dtype)
    z, _ = reparameterize(mu, log_var, np.random.default_rng(0))
    assert z.dtype == dtype
    z, cache = reparameterize_forward(mu, log_var, np.ones((4, 3), dtype=dtype))
    dmu, dlog_var = reparameterize_backward(np.ones((4, 3), dtype=dtype), cache)
    assert z.dtype == dmu.dtype == dlog_var.dtype == dtype


# --------------------------------------------------------------------------
# The log-variance clamp
# --------------------------------------------------------------------------

# Values kept at least 0.5 (>> h = 1e-6) from the clamp edges -30 and 20, so no central
# difference straddles a kink.
inside = st.floats(LOG_VAR_MIN + 0.5, LOG_VAR_MAX - 0.5)
outside = st.one_of(st.floats(-80.0, LOG_VAR_MIN - 0.5), st.floats(LOG_VAR_MAX + 0.5, 80.0))


@given(data=st.data(), shape=st.tuples(batches, widths), seed=seeds)
def test_clamp_log_var_values_and_gradient(data, shape, seed):
    values = data.draw(
        st.lists(st.one_of(inside, outside), min_size=shape[0] * shape[1], max_size=shape[0] * shape[1])
    )
    log_var = np.array(values, dtype=np.float64).reshape(shape)
    clamped, mask = clamp_log_var_forward(log_var)
    np.testing.assert_array_equal(clamped, np.minimum(np.maximum(log_var, LOG_VAR_MIN), LOG_VAR_MAX))
    dout = make_rng(seed).standard_normal(shape)
    dlog_var = clamp_log_var_backward(dout, mask)
    # Where the clamp bites the gradient is exactly zero; elsewhere it passes unchanged.
    active = (log_var <= LOG_VAR_MIN) | (log_var >= LOG_VAR_MAX)
    np.testing.assert_array_equal(dlog_var[active], 0.0)
    np.testing.assert_array_equal(dlog_var[~active], dout[~active])
    numeric = numerical_gradient(lambda: clamp_log_var_forward(log_var)[0], log_var, dout)
    assert rel_error(dlog_var, numeric) < TOL


def test_clamp_keeps_float32_and_exp_stays_finite():
    log_var = np.array([[-1e4, -30.5, 0.0, 20.5, 1e4]], dtype=np.float32)
    clamped, mask = clamp_log_var_forward(log_var)
    assert clamped.dtype == np.float32 and np.isfinite(np.exp(clamped)).all()
    assert clamp_log_var_backward(np.ones_like(log_var), mask).dtype == np.float32


# --------------------------------------------------------------------------
# The whole VAE loss: decoder, reparameterization, KL and encoder together
# --------------------------------------------------------------------------

KL_WEIGHT = 0.1


def vae_loss(encoder, decoder, x, eps, target):
    mu, log_var = encoder.forward(x)
    z, _ = reparameterize_forward(mu, log_var, eps)
    return mse_forward(decoder.forward(z), target)[0] + KL_WEIGHT * kl_divergence(mu, log_var)


def vae_backward(encoder, decoder, x, eps, target):
    """One training step's backward; reads vae.reparameterize_backward at call time (monkeypatchable).

    ``target`` is a copy of ``x``: the gradient checked is the one through the encoder.
    """
    mu, log_var = encoder(x)
    z, cache = reparameterize_forward(mu, log_var, eps)
    dx_hat = mse_backward(1.0, mse_forward(decoder(z), target)[1])
    dz = decoder.backward(dx_hat)
    dmu, dlog_var = vae.reparameterize_backward(dz, cache)
    dmu_kl, dlog_var_kl = kl_divergence_backward(KL_WEIGHT, kl_divergence_forward(mu, log_var)[1])
    return encoder.backward(dmu + dmu_kl, dlog_var + dlog_var_kl)


def vae_errors(seed=0, output_activation="linear"):
    rng = np.random.default_rng(seed)
    encoder = perturb_params(build_encoder(5, 3, 4, seed=seed, dtype="float64"), rng)
    decoder = build_decoder(5, 3, 4, output_activation=output_activation, seed=seed + 1, dtype="float64")
    decoder = perturb_params(decoder, rng)
    x, eps = rng.standard_normal((4, 5)), rng.standard_normal((4, 3))
    target = x.copy()

    def loss():
        return vae_loss(encoder, decoder, x, eps, target)

    dx = vae_backward(encoder, decoder, x, eps, target)
    errors = {"input": rel_error(dx, numerical_gradient(loss, x))}
    for model in (encoder, decoder):
        for layer, group in model.params.items():
            for name, p in group.items():
                numeric = numerical_gradient(loss, p)
                errors[f"{layer}.{name}"] = rel_error(model.grads[layer][name], numeric)
    return errors


@pytest.mark.parametrize("output_activation", ["linear", "sigmoid"])
@pytest.mark.parametrize("seed", [0, 1])
def test_vae_loss_gradients_through_every_parameter(seed, output_activation):
    errors = vae_errors(seed, output_activation)
    assert len(errors) == 1 + 2 * 4 + 2 * 3  # the input, 4 encoder and 3 decoder dense layers
    assert max(errors.values()) < TOL, errors


def test_a_reparameterize_backward_missing_the_half_is_caught(monkeypatch):
    def buggy(dz, cache):
        std, eps = cache
        return dz, dz * eps * std  # forgot the 0.5 from d/dlog_var exp(0.5 * log_var)

    monkeypatch.setattr(vae, "reparameterize_backward", buggy)
    errors = vae_errors(0)
    assert errors["enc_log_var.kernel"] > 1e-2 and errors["enc_log_var.bias"] > 1e-2
    assert errors["dec_output.kernel"] < TOL  # the decoder is untouched by the bug


def test_a_sigmoid_decoder_outputs_probabilities_and_names_its_activation(rng):
    linear = build_decoder(5, 3, 4, seed=1, dtype="float64")
    squashed = build_decoder(5, 3, 4, output_activation="sigmoid", seed=1, dtype="float64")
    z = 10.0 * rng.standard_normal((6, 3))
    logits, x_hat = linear(z), squashed(z)  # same seed: same weights
    np.testing.assert_allclose(x_hat, 1.0 / (1.0 + np.exp(-logits)), rtol=1e-12)
    assert ((x_hat >= 0.0) & (x_hat <= 1.0)).all()
    assert "output_activation='sigmoid'" in repr(squashed) and "output_activation" not in repr(linear)


def test_an_unknown_output_activation_is_refused():
    with pytest.raises(ValueError, match="output_activation"):
        build_decoder(5, 3, 4, output_activation="tanh")
