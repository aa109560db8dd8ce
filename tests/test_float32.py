"""float32 stays float32.

Under NumPy 2's promotion rules a NumPy float64 scalar (from a schedule,
from ``np.sqrt`` of a Python float, from a float64 hyperparameter) turns a
float32 array into float64 silently, and an in-place update then casts it
back, so the only trace is a slower step. These tests run every forward,
backward, loss and optimizer step of the library in float32 and assert that
every array they produce (outputs, caches, gradients, Adam's moments) is
float32.
"""

from __future__ import annotations

import numpy as np
import pytest

from ldm_np.denoiser import Denoiser, label_embedding_backward, label_embedding_forward
from ldm_np.layers import (
    dense_backward,
    dense_forward,
    layernorm_backward,
    layernorm_forward,
    residual_block_backward,
    residual_block_forward,
    sigmoid,
    silu_backward,
    silu_forward,
    timestep_embedding,
    timestep_frequencies,
)
from ldm_np.losses import (
    kl_divergence,
    kl_divergence_backward,
    kl_divergence_forward,
    kl_per_dimension,
    mse_backward,
    mse_forward,
)
from ldm_np.optim import Adam, AdamW, clip_grad_norm, global_grad_norm
from ldm_np.schedules import make_schedule
from ldm_np.vae import (
    Decoder,
    Encoder,
    clamp_log_var_backward,
    clamp_log_var_forward,
    reparameterize,
    reparameterize_backward,
    reparameterize_forward,
)

F32 = np.dtype(np.float32)


def float_leaves(tree):
    """Every floating-point array inside nested tuples, lists and dicts (integer and bool arrays skipped)."""
    if isinstance(tree, dict):
        for value in tree.values():
            yield from float_leaves(value)
    elif isinstance(tree, (tuple, list)):
        for value in tree:
            yield from float_leaves(value)
    elif hasattr(tree, "dtype") and np.dtype(tree.dtype).kind == "f":
        yield tree


def assert_f32(*trees):
    leaves = [leaf for tree in trees for leaf in float_leaves(tree)]
    assert leaves, "nothing to check"
    bad = [(leaf.dtype, getattr(leaf, "shape", ())) for leaf in leaves if leaf.dtype != F32]
    assert not bad, f"float64 crept in: {bad}"


def f32(rng, *shape, scale=1.0):
    return (scale * rng.standard_normal(shape)).astype(np.float32)


# --------------------------------------------------------------------------
# Part 1: float32 in, float32 everywhere
# --------------------------------------------------------------------------

BATCHES = [3, 1100]


@pytest.mark.parametrize("batch", BATCHES)
def test_layers_keep_float32(rng, batch):
    x = f32(rng, batch, 16)
    kernel, bias = f32(rng, 16, 64), f32(rng, 64)
    y, c_dense = dense_forward(x, kernel, bias)
    assert_f32(y, c_dense, dense_backward(f32(rng, batch, 64), c_dense))

    assert_f32(sigmoid(y))
    s, c_silu = silu_forward(y)
    assert_f32(s, c_silu, silu_backward(f32(rng, batch, 64), c_silu))

    gamma, beta = 1.0 + f32(rng, 64, scale=0.1), f32(rng, 64, scale=0.1)
    a, c_norm = layernorm_forward(y, gamma, beta)
    assert_f32(a, c_norm, layernorm_backward(f32(rng, batch, 64), c_norm))

    norm = {"gamma": gamma, "beta": beta}
    up = {"kernel": f32(rng, 64, 256, scale=0.1), "bias": f32(rng, 256)}
    down = {"kernel": f32(rng, 256, 64, scale=0.1), "bias": f32(rng, 64)}
    h, c_block = residual_block_forward(y, norm, up, down)
    assert_f32(h, c_block, residual_block_backward(f32(rng, batch, 64), c_block))


@pytest.mark.parametrize("time_input", ["index", "fraction"])
@pytest.mark.parametrize("dim", [7, 256])
def test_timestep_embedding_keeps_float32(time_input, dim):
    emb = timestep_embedding(np.array([0, 1, 999]), dim, 1000, time_input, dtype="float32")
    assert emb.dtype == F32 and emb.shape == (3, dim)
    assert timestep_frequencies(dim, np, "float32").dtype == F32


def test_label_embedding_keeps_float32(rng):
    table = f32(rng, 5, 8)
    out, cache = label_embedding_forward(np.array([0, 3, 3]), table)
    assert_f32(out, label_embedding_backward(f32(rng, 3, 8), cache))


@pytest.mark.parametrize("dloss", [1.0, np.float32(0.5), np.array(0.5, dtype=np.float32)])
def test_losses_keep_float32(rng, dloss):
    pred, target = f32(rng, 4, 5), f32(rng, 4, 5)
    loss, cache = mse_forward(pred, target)
    assert_f32(loss, cache, mse_backward(dloss, cache))
    mu, log_var = f32(rng, 4, 3), f32(rng, 4, 3, scale=0.5)
    kl, cache = kl_divergence_forward(mu, log_var)
    assert_f32(kl, cache, kl_divergence(mu, log_var), kl_per_dimension(mu, log_var))
    assert_f32(kl_divergence_backward(dloss, cache))


def test_reparameterization_and_clamp_keep_float32(rng):
    mu, log_var, eps = f32(rng, 4, 3), f32(rng, 4, 3, scale=40.0), f32(rng, 4, 3)
    clamped, inside = clamp_log_var_forward(log_var)
    z, cache = reparameterize_forward(mu, clamped, eps)
    assert_f32(clamped, z, cache, reparameterize_backward(f32(rng, 4, 3), cache))
    assert_f32(clamp_log_var_backward(f32(rng, 4, 3), inside))
    z, _ = reparameterize(mu, clamped, np.random.default_rng(0))
    assert_f32(z)


def check_optimizer_keeps_float32(model, opt, rng):
    for _ in range(2):
        for group in model.grads.values():
            for name in group:
                group[name] = f32(rng, *group[name].shape)
        clip_grad_norm(model.grads, 1.0)
        assert_f32(global_grad_norm(model.grads))
        opt.step(model.params, model.grads)
    assert_f32(model.params, opt.state_arrays())


@pytest.mark.parametrize("batch", BATCHES)
def test_vae_keeps_float32_through_a_training_step(rng, batch):
    enc, dec = Encoder(12, 3, 64, seed=0), Decoder(12, 3, 64, seed=1)
    x = rng.random((batch, 12)).astype(np.float32)
    mu, log_var = enc(x)
    z, c_rep = reparameterize_forward(mu, log_var, f32(rng, batch, 3))
    x_hat = dec(z)
    assert_f32(mu, log_var, z, x_hat)
    dx_hat = mse_backward(1.0, mse_forward(x_hat, x)[1])
    dz = dec.backward(dx_hat)
    dmu, dlog_var = reparameterize_backward(dz, c_rep)
    assert_f32(dz, dmu, dlog_var, dec.grads)
    enc(x)
    assert_f32(enc.backward(dmu, dlog_var), enc.grads)
    check_optimizer_keeps_float32(enc, Adam(lr=np.float64(1e-3)), rng)
    check_optimizer_keeps_float32(dec, AdamW(lr=np.float64(1e-3), weight_decay=np.float64(0.01)), rng)


@pytest.mark.parametrize(
    ("latent", "num_classes", "batch"), [(4, None, BATCHES[0]), (4, 3, 5), (287, None, BATCHES[1])]
)
def test_denoiser_keeps_float32_through_a_training_step(rng, latent, num_classes, batch):
    model = Denoiser(latent, 64, 2, 1000, num_classes=num_classes, seed=0)
    schedule = make_schedule(1000, dtype="float32")
    assert_f32({k: v for k, v in schedule.items() if hasattr(v, "dtype")})
    z0, noise = f32(rng, batch, latent), f32(rng, batch, latent)
    t = rng.integers(0, 1000, size=batch)
    # Noising with float32 schedule entries (a NumPy float64 scalar here would upcast).
    z_t = (
        schedule["sqrt_alphas_cumprod"][t][:, None] * z0
        + schedule["sqrt_one_minus_alphas_cumprod"][t][:, None] * noise
    )
    labels = None if num_classes is None else rng.integers(0, num_classes + 1, size=batch)
    out = model(z_t, t, labels)
    assert_f32(z_t, out)
    loss, cache = mse_forward(out, noise)
    dout = mse_backward(1.0, cache)
    assert_f32(loss, dout, model.backward(dout), model.grads)
    check_optimizer_keeps_float32(model, Adam(lr=1e-3, weight_decay=0.1), rng)


def test_diffusion_q_sample_keeps_float32(rng):
    diffusion = pytest.importorskip("ldm_np.diffusion")
    schedule = make_schedule(1000, dtype="float32")
    z0, noise = f32(rng, 6, 4), f32(rng, 6, 4)
    assert_f32(diffusion.q_sample(schedule, z0, rng.integers(0, 1000, size=6), noise))


def test_benchmark_steps_keep_float32(rng):
    harness = pytest.importorskip("benchmarks.harness")
    enc, dec = Encoder(12, 3, 32, seed=0), Decoder(12, 3, 32, seed=1)
    den = Denoiser(4, 32, 1, 1000, seed=2)
    vae = harness.VAEStep(enc, dec, rng.random((8, 12)).astype(np.float32), np.random.default_rng(0))
    step = harness.DenoiserStep(den, make_schedule(1000), f32(rng, 8, 4), np.random.default_rng(1))
    for _ in range(2):
        assert_f32(vae(), step())
    assert_f32(enc.params, dec.params, enc.grads, dec.grads, den.params, den.grads)
    for opt in (vae.opt, step.opt):
        assert_f32(opt.state_arrays())
