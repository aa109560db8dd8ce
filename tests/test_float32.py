"""float32 stays float32, and every optimised form equals its textbook formula.

Part 1: under NumPy 2's promotion rules a NumPy float64 scalar (from a
schedule, from ``np.sqrt`` of a Python float, from a float64 hyperparameter)
turns a float32 array into float64 silently, and an in-place update then
casts it back, so the only trace is a slower step. These tests run every
forward, backward, loss and optimizer step of the library in float32 and
assert that every array they produce (outputs, caches, gradients, Adam's
moments and work arrays) is float32.

Part 2: the fast paths (SiLU and its gradient in row blocks, LayerNorm with
fewer passes, Adam in place and in chunks, the sinusoidal embedding written
in place, ``batch_sum``, skipping unused input gradients) are compared in
float64 with the plain formulas written out here, to a tight tolerance.
"""

from __future__ import annotations

import numpy as np
import pytest

from ldm_np import layers, optim
from ldm_np.denoiser import Denoiser, label_embedding_backward, label_embedding_forward
from ldm_np.layers import (
    LAYERNORM_EPS,
    batch_sum,
    dense_backward,
    dense_forward,
    dense_param_grads,
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
from ldm_np.losses import kl_divergence, kl_divergence_backward, kl_per_dimension, mse_loss
from ldm_np.optim import Adam, AdamW, clip_grad_norm, global_grad_norm
from ldm_np.parallel import DataParallel
from ldm_np.schedules import make_schedule
from ldm_np.vae import (
    Decoder,
    Encoder,
    clamp_log_var_backward,
    clamp_log_var_forward,
    reparameterize,
    reparameterize_backward,
    reparameterize_with_noise,
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

# Batches that take both the one-block path and the row-block path of the
# elementwise layers (row blocks start above 2 * ROW_BLOCK_BYTES).
BATCHES = [3, 2 * layers.ROW_BLOCK_BYTES // (4 * 64) + 5]


@pytest.mark.parametrize("batch", BATCHES)
def test_layers_keep_float32(rng, batch):
    x = f32(rng, batch, 16)
    kernel, bias = f32(rng, 16, 64), f32(rng, 64)
    y, c_dense = dense_forward(x, kernel, bias)
    assert_f32(y, c_dense, dense_backward(f32(rng, batch, 64), c_dense))
    assert_f32(dense_param_grads(f32(rng, batch, 64), c_dense), batch_sum(y))

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


@pytest.mark.parametrize("dloss", [1.0, np.float32(0.5), np.float64(0.5), np.array(0.5)])
def test_losses_keep_float32(rng, dloss):
    pred, target = f32(rng, 4, 5), f32(rng, 4, 5)
    loss, dpred = mse_loss(pred, target)
    assert_f32(loss, dpred)
    mu, log_var = f32(rng, 4, 3), f32(rng, 4, 3, scale=0.5)
    assert_f32(kl_divergence(mu, log_var), kl_per_dimension(mu, log_var))
    assert_f32(kl_divergence_backward(mu, log_var, dloss))


def test_reparameterization_and_clamp_keep_float32(rng):
    mu, log_var, eps = f32(rng, 4, 3), f32(rng, 4, 3, scale=40.0), f32(rng, 4, 3)
    clamped, inside = clamp_log_var_forward(log_var)
    z, cache = reparameterize_with_noise(mu, clamped, eps)
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
    assert_f32(model.params, opt.state_arrays(), opt._scratch)


@pytest.mark.parametrize("batch", BATCHES)
def test_vae_keeps_float32_through_a_training_step(rng, batch):
    enc, dec = Encoder(12, 3, 64, seed=0), Decoder(12, 3, 64, seed=1)
    x = rng.random((batch, 12)).astype(np.float32)
    mu, log_var = enc(x)
    z, c_rep = reparameterize_with_noise(mu, log_var, f32(rng, batch, 3))
    x_hat = dec(z)
    assert_f32(mu, log_var, z, x_hat, enc._cache, dec._cache)
    _, dx_hat = mse_loss(x_hat, x)
    dz = dec.backward(dx_hat)
    dmu, dlog_var = reparameterize_backward(dz, c_rep)
    assert_f32(dz, dmu, dlog_var, dec.grads)
    enc(x)
    assert_f32(enc.backward(dmu, dlog_var), enc.grads)
    enc(x)
    assert enc.backward(dmu, dlog_var, input_grad=False) is None
    assert_f32(enc.grads)
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
    assert_f32(z_t, out, model._cache)
    loss, dout = mse_loss(out, noise)
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
    # Two shards each, so the sharded path (reduction of the gradients included) is what is checked.
    vae = harness.VAEStep(
        enc,
        dec,
        rng.random((8, 12)).astype(np.float32),
        np.random.default_rng(0),
        DataParallel([enc, dec], 2, min_shard_rows=1),
    )
    step = harness.DenoiserStep(
        den,
        make_schedule(1000),
        f32(rng, 8, 4),
        np.random.default_rng(1),
        DataParallel([den], 2, min_shard_rows=1),
    )
    for _ in range(2):
        assert_f32(vae(), step())
    assert_f32(enc.params, dec.params, enc.grads, dec.grads, den.params, den.grads)
    for replica in (*vae.parallel.replicas[1], step.parallel.replicas[1][0]):
        assert_f32(replica.grads)
    for opt in (vae.opt, step.opt):
        assert_f32(opt.state_arrays(), opt._scratch)


# --------------------------------------------------------------------------
# Part 2: the optimised forms equal the textbook formulas (float64)
# --------------------------------------------------------------------------

TIGHT = {"rtol": 1e-12, "atol": 1e-14}


@pytest.fixture(params=["one block", "row blocks"])
def blocks(request, monkeypatch):
    """Run a test with the elementwise layers on whole arrays, and again cut into many small row blocks."""
    if request.param == "row blocks":
        monkeypatch.setattr(layers, "ROW_BLOCK_BYTES", 8 * 64)  # blocks of 8 rows of 64 float64
    return request.param


def textbook_sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def test_sigmoid_is_the_logistic_function(rng):
    x = 6.0 * rng.standard_normal((50, 64))
    np.testing.assert_allclose(sigmoid(x), textbook_sigmoid(x), **TIGHT)
    out = np.empty_like(x)
    assert sigmoid(x, out=out) is out
    np.testing.assert_array_equal(out, sigmoid(x))


def test_row_blocks_cover_every_row_once(monkeypatch):
    monkeypatch.setattr(layers, "ROW_BLOCK_BYTES", 1000)
    a = np.zeros((37, 10))  # 80 bytes a row: 12 rows a block
    seen = np.zeros(37, dtype=int)
    for rows in layers.row_blocks(a):
        seen[rows] += 1
    assert (seen == 1).all() and len(layers.row_blocks(a)) == 4
    assert layers.row_blocks(np.zeros((3, 10))) == [...]  # small: one block
    assert layers.row_blocks(np.zeros(10_000)) == [...]  # 1-d: one block


def test_silu_forward_and_backward_equal_the_textbook_formulas(rng, blocks):
    x, dy = 4.0 * rng.standard_normal((50, 64)), rng.standard_normal((50, 64))
    x0, dy0 = x.copy(), dy.copy()
    y, cache = silu_forward(x)
    s = textbook_sigmoid(x)
    np.testing.assert_allclose(y, x * s, **TIGHT)
    np.testing.assert_allclose(cache[1], s, **TIGHT)
    dx = silu_backward(dy, cache)
    np.testing.assert_allclose(dx, dy * s * (1.0 + x * (1.0 - s)), **TIGHT)
    # Nothing is modified in place, and a second backward gives the same numbers.
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(dy, dy0)
    np.testing.assert_array_equal(silu_backward(dy, cache), dx)


def test_row_blocks_give_bit_identical_silu(rng, monkeypatch):
    x, dy = 4.0 * rng.standard_normal((50, 64)), rng.standard_normal((50, 64))
    y, cache = silu_forward(x)
    dx = silu_backward(dy, cache)
    monkeypatch.setattr(layers, "ROW_BLOCK_BYTES", 8 * 64)
    y_b, cache_b = silu_forward(x)
    np.testing.assert_array_equal(y_b, y)
    np.testing.assert_array_equal(cache_b[1], cache[1])
    np.testing.assert_array_equal(silu_backward(dy, cache_b), dx)


def textbook_layernorm(x, gamma, beta, eps=LAYERNORM_EPS):
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    xhat = (x - mean) / np.sqrt(var + eps)
    return xhat * gamma + beta, xhat, 1.0 / np.sqrt(var + eps)


def test_layernorm_forward_equals_the_textbook_formula(rng):
    x = 3.0 + 2.0 * rng.standard_normal((20, 33))
    gamma, beta = 1.0 + 0.3 * rng.standard_normal(33), 0.3 * rng.standard_normal(33)
    y, (xhat, rstd, g) = layernorm_forward(x, gamma, beta)
    y_ref, xhat_ref, rstd_ref = textbook_layernorm(x, gamma, beta)
    np.testing.assert_allclose(y, y_ref, **TIGHT)
    np.testing.assert_allclose(xhat, xhat_ref, **TIGHT)
    np.testing.assert_allclose(rstd, rstd_ref, **TIGHT)
    assert g is gamma


def test_layernorm_backward_equals_the_textbook_formula(rng):
    x, dy = 2.0 * rng.standard_normal((20, 33)), rng.standard_normal((20, 33))
    gamma, beta = 1.0 + 0.3 * rng.standard_normal(33), 0.3 * rng.standard_normal(33)
    _, cache = layernorm_forward(x, gamma, beta)
    cache_copy = [np.copy(c) for c in cache]
    dy0 = dy.copy()
    dx, dgamma, dbeta = layernorm_backward(dy, cache)
    xhat, rstd, _ = cache
    n = x.shape[-1]
    g = dy * gamma
    dx_ref = rstd / n * (n * g - g.sum(-1, keepdims=True) - xhat * (g * xhat).sum(-1, keepdims=True))
    np.testing.assert_allclose(dx, dx_ref, **TIGHT)
    np.testing.assert_allclose(dgamma, (dy * xhat).sum(0), **TIGHT)
    np.testing.assert_allclose(dbeta, dy.sum(0), **TIGHT)
    np.testing.assert_array_equal(dy, dy0)
    for c, c0 in zip(cache, cache_copy, strict=True):
        np.testing.assert_array_equal(c, c0)
    np.testing.assert_array_equal(layernorm_backward(dy, cache)[0], dx)


def test_batch_sum_and_dense_param_grads(rng):
    x, kernel, bias = rng.standard_normal((9, 5)), rng.standard_normal((5, 4)), rng.standard_normal(4)
    dy = rng.standard_normal((9, 4))
    np.testing.assert_array_equal(batch_sum(dy), dy.sum(axis=0))
    _, cache = dense_forward(x, kernel, bias)
    _, dkernel, dbias = dense_backward(dy, cache)
    dk, db = dense_param_grads(dy, cache)
    np.testing.assert_array_equal(dk, dkernel)
    np.testing.assert_array_equal(db, dbias)


def test_batch_sum_on_a_device_is_a_matrix_vector_product(rng):
    strict_xp = pytest.importorskip("strict_xp")
    dy = rng.standard_normal((9, 4))
    got = batch_sum(strict_xp.to_strict(dy))
    assert strict_xp.is_strict(got)
    np.testing.assert_allclose(strict_xp.strict.asnumpy(got), dy.sum(axis=0), **TIGHT)


@pytest.mark.parametrize("dim", [1, 6, 7, 64])
def test_timestep_embedding_equals_the_concatenated_formula(dim):
    t = np.array([0, 1, 17, 999])
    for time_input, s in (("index", t.astype(np.float64)), ("fraction", t / 1000)):
        freqs = timestep_frequencies(dim, np, "float64")
        angles = s[:, None] * freqs[None, :]
        parts = [np.sin(angles), np.cos(angles)] + ([np.zeros((4, 1))] if dim % 2 else [])
        want = np.concatenate(parts, axis=1)
        got = timestep_embedding(t, dim, 1000, time_input, dtype="float64")
        np.testing.assert_array_equal(got, want)


def test_encoder_without_input_gradient_gives_the_same_parameter_gradients(rng):
    enc = Encoder(12, 3, 16, seed=0, dtype="float64")
    x, dmu, dlog_var = rng.standard_normal((5, 12)), rng.standard_normal((5, 3)), rng.standard_normal((5, 3))
    enc(x)
    dx = enc.backward(dmu, dlog_var)
    full = {layer: {k: v.copy() for k, v in group.items()} for layer, group in enc.grads.items()}
    enc(x)
    assert enc.backward(dmu, dlog_var, input_grad=False) is None
    for layer, group in full.items():
        for name, value in group.items():
            np.testing.assert_array_equal(enc.grads[layer][name], value)
    assert dx.shape == x.shape


def textbook_adam(p, grads, lr, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, decoupled=False):
    """Kingma & Ba (2015) on whole arrays, each step a fresh expression (no in-place tricks)."""
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    for t, g in enumerate(grads, start=1):
        if decoupled:
            p = p - lr * weight_decay * p
        else:
            g = g + weight_decay * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
        p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
    return p, m, v


@pytest.mark.parametrize(
    ("cls", "weight_decay", "decoupled"), [(Adam, 0.0, False), (Adam, 0.1, False), (AdamW, 0.1, True)]
)
@pytest.mark.parametrize("shape", [(7, 3), (optim.UPDATE_CHUNK + 1000,), (3, optim.UPDATE_CHUNK // 2 + 7)])
def test_adam_in_place_and_in_chunks_equals_the_textbook_update(rng, cls, weight_decay, decoupled, shape):
    p0 = rng.standard_normal(shape)
    grads = [rng.standard_normal(shape) for _ in range(4)]
    params = {"layer": {"w": p0.copy()}}
    opt = cls(lr=0.01, weight_decay=weight_decay)
    for g in grads:
        opt.step(params, {"layer": {"w": g}})
    p_ref, m_ref, v_ref = textbook_adam(p0, grads, 0.01, weight_decay=weight_decay, decoupled=decoupled)
    np.testing.assert_allclose(params["layer"]["w"], p_ref, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(opt.state["layer.w"]["m"], m_ref, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(opt.state["layer.w"]["v"], v_ref, rtol=1e-12, atol=1e-18)
    assert sorted(opt.state_arrays()) == ["m.layer.w", "v.layer.w"]  # the work array is not state


def test_adam_updates_a_non_contiguous_parameter_in_place(rng):
    base = rng.standard_normal((5, optim.UPDATE_CHUNK // 4 + 3))
    p = base.T  # a transposed view: it cannot be cut into flat chunks, so it is updated whole
    p0 = p.copy()
    grads = [rng.standard_normal(p.shape) for _ in range(3)]
    opt = Adam(lr=0.01)
    for g in grads:
        opt.step({"l": {"w": p}}, {"l": {"w": g}})
    p_ref, _, _ = textbook_adam(p0, grads, 0.01)
    np.testing.assert_allclose(base.T, p_ref, rtol=1e-12, atol=1e-15)  # the caller's array changed
