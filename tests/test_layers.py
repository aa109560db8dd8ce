"""Property tests of the building blocks: every hand-written backward against central differences.

Each test draws shapes and float64 values with Hypothesis, runs the forward,
takes a fixed random upstream gradient ``dout`` and compares the backward with
``numerical_gradient`` of sum(forward * dout). A correct backward lands near
1e-9 or below; the tests assert < 1e-6 (``TOL``), while a wrong one is off by
order 1e-1.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import batches, checkable_arrays, float_arrays, make_rng, widths
from hypothesis import given
from hypothesis import strategies as st

from ldm_np.denoiser import label_embedding_backward, label_embedding_forward
from ldm_np.gradcheck import numerical_gradient, rel_error
from ldm_np.layers import (
    LAYERNORM_EPS,
    dense_backward,
    dense_forward,
    layernorm_backward,
    layernorm_forward,
    residual_block_backward,
    residual_block_forward,
    sigmoid,
    sigmoid_backward,
    sigmoid_forward,
    silu_backward,
    silu_forward,
    timestep_embedding,
    timestep_frequencies,
)

TOL = 1e-6  # a correct backward in float64 lands near 1e-9 or below
seeds = st.integers(0, 2**32 - 1)


def grad_errors(forward, arrays, analytic, dout):
    """rel_error of each analytic gradient against the numerical gradient of sum(forward() * dout)."""
    return [rel_error(g, numerical_gradient(forward, a, dout)) for a, g in zip(arrays, analytic, strict=True)]


# --------------------------------------------------------------------------
# Dense
# --------------------------------------------------------------------------


@given(data=st.data(), batch=batches, n_in=widths, n_out=widths, seed=seeds)
def test_dense_gradients(data, batch, n_in, n_out, seed):
    x = data.draw(checkable_arrays((batch, n_in)), label="x")
    kernel = data.draw(checkable_arrays((n_in, n_out)), label="kernel")
    bias = data.draw(checkable_arrays((n_out,)), label="bias")
    y, cache = dense_forward(x, kernel, bias)
    np.testing.assert_allclose(y, x @ kernel + bias, rtol=1e-12, atol=1e-12)
    dout = make_rng(seed).standard_normal(y.shape)
    dx, dkernel, dbias = dense_backward(dout, cache)
    assert dx.shape == x.shape and dkernel.shape == kernel.shape and dbias.shape == bias.shape
    errors = grad_errors(
        lambda: dense_forward(x, kernel, bias)[0], [x, kernel, bias], [dx, dkernel, dbias], dout
    )
    assert max(errors) < TOL, errors


def test_dense_forward_does_not_modify_its_inputs(rng):
    x, kernel, bias = rng.standard_normal((3, 4)), rng.standard_normal((4, 2)), rng.standard_normal(2)
    copies = [a.copy() for a in (x, kernel, bias)]
    dense_forward(x, kernel, bias)
    for a, c in zip((x, kernel, bias), copies, strict=True):
        np.testing.assert_array_equal(a, c)


# --------------------------------------------------------------------------
# SiLU
# --------------------------------------------------------------------------


@given(x=st.tuples(batches, widths).flatmap(lambda s: float_arrays(s, bound=8.0)), seed=seeds)
def test_silu_values_and_gradient(x, seed):
    y, cache = silu_forward(x)
    np.testing.assert_allclose(y, x / (1.0 + np.exp(-x)), rtol=1e-12, atol=1e-15)
    dout = make_rng(seed).standard_normal(x.shape)
    dx = silu_backward(dout, cache)
    (err,) = grad_errors(lambda: silu_forward(x)[0], [x], [dx], dout)
    assert err < TOL


@given(x=st.tuples(batches, widths).flatmap(lambda s: float_arrays(s, bound=8.0)), seed=seeds)
def test_sigmoid_values_and_gradient(x, seed):
    y, cache = sigmoid_forward(x)
    np.testing.assert_allclose(y, 1.0 / (1.0 + np.exp(-x)), rtol=1e-12, atol=1e-15)
    dout = make_rng(seed).standard_normal(x.shape)
    dx = sigmoid_backward(dout, cache)
    (err,) = grad_errors(lambda: sigmoid_forward(x)[0], [x], [dx], dout)
    assert err < TOL


def test_sigmoid_backward_without_the_one_minus_y_is_caught(rng):
    x, dout = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    y, _ = sigmoid_forward(x)
    (err,) = grad_errors(lambda: sigmoid_forward(x)[0], [x], [dout * y], dout)  # forgot (1 - y)
    assert err > 1e-2


def test_sigmoid_is_finite_and_saturates_for_extreme_float32():
    x = np.array([-1e30, -100.0, 0.0, 100.0, 1e30], dtype=np.float32)
    s = sigmoid(x)
    assert s.dtype == np.float32 and np.isfinite(s).all()
    np.testing.assert_array_equal(s[[0, 2, 4]], [0.0, 0.5, 1.0])


# --------------------------------------------------------------------------
# LayerNorm
# --------------------------------------------------------------------------


@given(data=st.data(), batch=batches, n=st.integers(3, 16), seed=seeds)
def test_layernorm_gradients(data, batch, n, seed):
    # x is drawn by Hypothesis (flat rows, zeros, repeated values: the hard cases for
    # LayerNorm); gamma, beta and dout are generic. n >= 3: with two features every row
    # with |x1 - x2| >> sqrt(eps) normalises to (-1, 1), so dx is ~eps / |x1 - x2|^3,
    # far below the finite-difference noise, and there is nothing to compare.
    # One generic row is appended: if every drawn row is flat, xhat is only rounding
    # residue (~1e-13), and so is dgamma = sum dout * xhat, too small to check.
    rng = make_rng(seed)
    x = np.vstack(
        [data.draw(checkable_arrays((batch, n), bound=3.0), label="x"), rng.standard_normal((1, n))]
    )
    gamma, beta = 1.0 + 0.3 * rng.standard_normal(n), 0.3 * rng.standard_normal(n)
    y, cache = layernorm_forward(x, gamma, beta)
    mean, var = x.mean(axis=1, keepdims=True), x.var(axis=1, keepdims=True)  # biased variance
    np.testing.assert_allclose(
        y, gamma * (x - mean) / np.sqrt(var + LAYERNORM_EPS) + beta, rtol=1e-10, atol=1e-10
    )
    dout = rng.standard_normal(x.shape)
    dx, dgamma, dbeta = layernorm_backward(dout, cache)
    errors = grad_errors(
        lambda: layernorm_forward(x, gamma, beta)[0], [x, gamma, beta], [dx, dgamma, dbeta], dout
    )
    assert max(errors) < TOL, errors
    # LayerNorm ignores a constant added to a row, so each row of dx sums to 0.
    np.testing.assert_allclose(dx.sum(axis=1), 0.0, atol=1e-9 * (1.0 + np.abs(dx).max()))


@pytest.mark.parametrize("spread", [0.0, 1e-9, 1e-4, 1e-3])
def test_layernorm_near_constant_rows(spread, rng):
    """(Almost) constant rows have var << eps: the output is ~beta, the gradients are finite and check.

    The last row is ordinary, so dgamma (which sums dout * xhat, ~0 on the flat rows)
    has a size that central differences can resolve.
    """
    n = 6
    x = 1.7 + spread * rng.standard_normal((4, n))
    x[0] = -0.3  # an exactly constant row
    x[3] = rng.standard_normal(n)
    gamma, beta = 1.0 + 0.3 * rng.standard_normal(n), 0.3 * rng.standard_normal(n)
    y, cache = layernorm_forward(x, gamma, beta)
    assert np.isfinite(y).all()
    # |y - beta| = |gamma| |x - mean| / sqrt(var + eps) <= ~|gamma| spread / sqrt(eps) on the flat rows.
    atol = 10 * (spread + 1e-15) / math.sqrt(LAYERNORM_EPS)
    np.testing.assert_allclose(y[:3], np.broadcast_to(beta, (3, n)), atol=atol)
    dout = rng.standard_normal(x.shape)
    dx, dgamma, dbeta = layernorm_backward(dout, cache)
    assert all(np.isfinite(g).all() for g in (dx, dgamma, dbeta))
    errors = grad_errors(
        lambda: layernorm_forward(x, gamma, beta)[0], [x, gamma, beta], [dx, dgamma, dbeta], dout
    )
    assert max(errors) < TOL, errors


# --------------------------------------------------------------------------
# Residual block: h + down(SiLU(up(LayerNorm(h))))
# --------------------------------------------------------------------------


@given(batch=batches, hidden=st.integers(2, 6), seed=seeds)
def test_residual_block_gradients(batch, hidden, seed):
    # hidden >= 2: a one-feature LayerNorm outputs beta alone, so the up-kernel gradient
    # is beta * sum(du) and a small random beta sinks it below the finite-difference noise.
    rng = make_rng(seed)
    h = rng.standard_normal((batch, hidden))
    norm = {"gamma": 1.0 + 0.3 * rng.standard_normal(hidden), "beta": 0.3 * rng.standard_normal(hidden)}
    up = {
        "kernel": rng.standard_normal((hidden, 4 * hidden)) * 0.5,
        "bias": 0.3 * rng.standard_normal(4 * hidden),
    }
    down = {
        "kernel": rng.standard_normal((4 * hidden, hidden)) * 0.5,
        "bias": 0.3 * rng.standard_normal(hidden),
    }

    def forward():
        return residual_block_forward(h, norm, up, down)[0]

    out, cache = residual_block_forward(h, norm, up, down)
    a = (h - h.mean(1, keepdims=True)) / np.sqrt(h.var(1, keepdims=True) + LAYERNORM_EPS) * norm[
        "gamma"
    ] + norm["beta"]
    u = a @ up["kernel"] + up["bias"]
    np.testing.assert_allclose(
        out, h + (u / (1 + np.exp(-u))) @ down["kernel"] + down["bias"], rtol=1e-10, atol=1e-10
    )
    dout = rng.standard_normal(out.shape)
    dh, dnorm, dup, ddown = residual_block_backward(dout, cache)
    arrays = [h, norm["gamma"], norm["beta"], up["kernel"], up["bias"], down["kernel"], down["bias"]]
    grads = [dh, dnorm["gamma"], dnorm["beta"], dup["kernel"], dup["bias"], ddown["kernel"], ddown["bias"]]
    errors = grad_errors(forward, arrays, grads, dout)
    assert max(errors) < TOL, errors


# --------------------------------------------------------------------------
# Label embedding (class-conditional denoiser)
# --------------------------------------------------------------------------


@given(num_labels=st.integers(1, 5), hidden=widths, extra=st.integers(1, 8), seed=seeds)
def test_label_embedding_gradient_with_repeated_labels(num_labels, hidden, extra, seed):
    rng = make_rng(seed)
    table = rng.standard_normal((num_labels, hidden))
    # More labels than rows, plus label 0 twice: the batch always repeats a label.
    labels = np.concatenate([[0, 0], rng.integers(0, num_labels, size=num_labels + extra)])
    out, cache = label_embedding_forward(labels, table)
    np.testing.assert_array_equal(out, table[labels])
    dout = rng.standard_normal(out.shape)
    dtable = label_embedding_backward(dout, cache)
    (err,) = grad_errors(lambda: label_embedding_forward(labels, table)[0], [table], [dtable], dout)
    assert err < TOL
    # The same sum written out: row k collects dout[b] for every b with labels[b] == k.
    expected = np.stack([dout[labels == k].sum(axis=0) for k in range(num_labels)])
    np.testing.assert_allclose(dtable, expected, rtol=1e-12, atol=1e-12)


def test_fancy_index_plus_equals_would_fail_the_label_check(rng):
    """The bug add.at prevents: ``dtable[labels] += dout`` keeps only one of two repeated labels."""
    table, labels = rng.standard_normal((3, 4)), np.array([1, 1, 2])
    out, cache = label_embedding_forward(labels, table)
    dout = rng.standard_normal(out.shape)
    wrong = np.zeros_like(table)
    wrong[labels] += dout
    numeric = numerical_gradient(lambda: label_embedding_forward(labels, table)[0], table, dout)
    assert rel_error(wrong, numeric) > 0.1
    assert rel_error(label_embedding_backward(dout, cache), numeric) < TOL


# --------------------------------------------------------------------------
# Timestep embedding (no parameters; values only)
# --------------------------------------------------------------------------


def test_timestep_embedding_at_t0_is_sines_zero_then_cosines_one():
    for dim in (2, 7, 8, 33):
        emb = timestep_embedding(np.zeros(3, dtype=np.int64), dim, 1000, dtype="float64")
        half = dim // 2
        expected = np.concatenate([np.zeros(half), np.ones(half), np.zeros(dim % 2)])
        np.testing.assert_array_equal(emb, np.broadcast_to(expected, (3, dim)))


@given(dim=st.integers(1, 33), num_steps=st.integers(1, 2000), data=st.data())
def test_timestep_embedding_closed_form(dim, num_steps, data):
    t = data.draw(st.lists(st.integers(0, num_steps - 1), min_size=1, max_size=8).map(np.array), label="t")
    emb = timestep_embedding(t, dim, num_steps, "index", dtype="float64")
    assert emb.shape == (t.shape[0], dim) and emb.dtype == np.float64
    half = dim // 2
    # w_i = 10000 ** (-i / (half - 1)): the first channel turns once per radian, the last once per 10000.
    w = np.array([10000.0 ** (-i / max(half - 1, 1)) for i in range(half)])
    np.testing.assert_allclose(emb[:, :half], np.sin(t[:, None] * w), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(emb[:, half : 2 * half], np.cos(t[:, None] * w), rtol=1e-9, atol=1e-9)
    if dim % 2:
        np.testing.assert_array_equal(emb[:, -1], 0.0)  # odd dim: a zero last column
    # "fraction" embeds t / num_steps: the same as "index" at that (non-integer) position.
    frac = timestep_embedding(t, dim, num_steps, "fraction", dtype="float64")
    np.testing.assert_array_equal(
        frac, timestep_embedding(t / num_steps, dim, num_steps, "index", dtype="float64")
    )


def test_timestep_frequencies_span_one_to_ten_thousandth():
    w = timestep_frequencies(16, np, "float64")
    assert w.shape == (8,)
    np.testing.assert_allclose([w[0], w[-1]], [1.0, 1e-4], rtol=1e-12)
    assert np.all(np.diff(w) < 0)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("time_input", ["index", "fraction"])
def test_timestep_embedding_keeps_dtype(dtype, time_input):
    t = np.array([0, 5, 999], dtype=np.int64)
    emb = timestep_embedding(t, 9, 1000, time_input, dtype=dtype)
    assert emb.dtype == np.dtype(dtype) and emb.shape == (3, 9)


def test_fraction_embedding_barely_varies_in_slow_channels():
    """The documented weakness of "fraction": s in [0, 1) leaves slow channels almost constant."""
    t = np.arange(1000)
    frac = timestep_embedding(t, 64, 1000, "fraction", dtype="float64")
    index = timestep_embedding(t, 64, 1000, "index", dtype="float64")
    sines_frac, sines_index = frac[:, :32], index[:, :32]
    spread_frac = sines_frac.max(axis=0) - sines_frac.min(axis=0)
    spread_index = sines_index.max(axis=0) - sines_index.min(axis=0)
    assert (spread_frac < 0.05).sum() > 16  # most sine channels nearly flat over the whole schedule
    assert (spread_index < 0.05).sum() == 0  # with "index" every sine channel varies
