"""The gradient checker itself: rel_error, numerical_gradient, directional_check, check_module,
and proof that it catches planted bugs in the backward passes the models really call."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import float_arrays, perturb_params
from hypothesis import given
from hypothesis import strategies as st

import ldm_np
from ldm_np import denoiser as denoiser_module
from ldm_np import layers
from ldm_np import vae as vae_module
from ldm_np.gradcheck import (
    TOLERANCE,
    GradCheckReport,
    GradCheckRow,
    directional_check,
    numerical_gradient,
    rel_error,
)
from ldm_np.models import build_decoder, build_denoiser, build_encoder

TOL = 1e-6  # a correct gradient in float64 lands near 1e-9 or below; the bugs below give ~1e-1 or more
BUG = 1e-2  # what a planted bug must at least produce


# --------------------------------------------------------------------------
# rel_error
# --------------------------------------------------------------------------


@given(a=float_arrays(st.tuples(st.integers(1, 4), st.integers(1, 4)), bound=1e3))
def test_rel_error_properties(a):
    assert rel_error(a, a) == 0.0
    b = a + 1.0
    assert rel_error(a, b) == rel_error(b, a)
    assert 0.0 < rel_error(a, b) <= 1.0
    m = np.abs(a).max()
    assert rel_error(a, -a) == pytest.approx(2 * m / max(2 * m, 1e-8), rel=1e-12)  # 1 unless floored


def test_rel_error_known_values_and_floor():
    assert rel_error(np.array([1.0, 2.0]), np.array([1.0, 2.2])) == pytest.approx(0.2 / 4.2)
    assert rel_error(np.zeros(3), np.full(3, 1e-12)) == pytest.approx(1e-4)  # scale floored at 1e-8
    assert rel_error(np.zeros((0, 3)), np.zeros((0, 3))) == 0.0
    with pytest.raises(ValueError, match="shapes differ"):
        rel_error(np.zeros(3), np.zeros(4))


# --------------------------------------------------------------------------
# numerical_gradient
# --------------------------------------------------------------------------


def test_numerical_gradient_of_known_functions(rng):
    x = rng.standard_normal((3, 4))
    np.testing.assert_allclose(numerical_gradient(lambda: (x**2).sum(), x), 2 * x, rtol=1e-7, atol=1e-9)
    dout = rng.standard_normal((3, 4))
    np.testing.assert_allclose(
        numerical_gradient(lambda: np.sin(x), x, dout), np.cos(x) * dout, rtol=1e-7, atol=1e-9
    )


def test_numerical_gradient_restores_x_exactly(rng):
    x = rng.standard_normal((5, 2))
    before = x.copy()
    numerical_gradient(lambda: np.tanh(x).sum(), x)
    np.testing.assert_array_equal(x, before)


@pytest.mark.parametrize("make_view", [lambda a: a.T, lambda a: a[:, ::2], lambda a: a[::-1]])
def test_numerical_gradient_through_non_contiguous_views(make_view, rng):
    """A transposed kernel is a view; perturbing a reshaped copy of it would give all zeros."""
    base = rng.standard_normal((4, 6))
    x = make_view(base)
    grad = numerical_gradient(lambda: (x**3).sum(), x)
    np.testing.assert_allclose(grad, 3 * x**2, rtol=1e-7, atol=1e-9)


def test_numerical_gradient_of_a_0d_array():
    x = np.array(0.5)
    assert float(numerical_gradient(lambda: x**2, x)) == pytest.approx(1.0, rel=1e-8)


def test_numerical_gradient_refuses_float32():
    x = np.ones(3, dtype=np.float32)
    with pytest.raises(TypeError, match="float64"):
        numerical_gradient(lambda: x.sum(), x)


# --------------------------------------------------------------------------
# directional_check
# --------------------------------------------------------------------------


def test_directional_check_accepts_right_and_rejects_wrong_gradients(rng):
    a, b = rng.standard_normal((3, 4)), rng.standard_normal(5)

    def loss():
        return float((np.sin(a) ** 2).sum() + (b**3).sum())

    right = [2 * np.sin(a) * np.cos(a), 3 * b**2]
    assert directional_check(loss, [a, b], right) < TOL
    wrong = [right[0], 2 * b**2]
    assert directional_check(loss, [a, b], wrong) > BUG
    before = a.copy()
    directional_check(loss, [a, b], right)
    np.testing.assert_allclose(a, before, rtol=0, atol=1e-15)  # put back (up to rounding)


# --------------------------------------------------------------------------
# check_module's report
# --------------------------------------------------------------------------


def test_report_table_and_flags():
    report = GradCheckReport(
        [GradCheckRow("enc_mu.kernel", (4, 3), 2e-10), GradCheckRow("input 0", (2, 4), 0.3)]
    )
    assert report.max_error == 0.3 and not report.ok
    assert report[0].ok and not report[1].ok
    text = str(report)
    assert "enc_mu.kernel" in text and "4x3" in text and "NO" in text and "yes" in text
    assert GradCheckReport().ok and GradCheckReport().max_error == 0.0
    assert TOLERANCE == TOL


def test_check_module_covers_every_input_asked_for(rng):
    model = perturb_params(build_decoder(3, 2, 3, dtype="float64"), rng)
    report = ldm_np.check_module(model, (rng.standard_normal((2, 2)),))
    assert [r.name for r in report][-1] == "input 0" and len(report) == 7
    assert all(
        r.shape == tuple(model.params[r.name.split(".")[0]][r.name.split(".")[1]].shape) for r in report[:-1]
    )
    report = ldm_np.check_module(model, (rng.standard_normal((2, 2)),), wrt_inputs=())
    assert len(report) == 6


# --------------------------------------------------------------------------
# Planted bugs: the checker must catch them
# --------------------------------------------------------------------------


def square_encoder(rng):
    """Every layer square (4 -> 4), so a backward that forgets a transpose still runs."""
    model = perturb_params(build_encoder(4, 4, 4, seed=0, dtype="float64"), rng)
    return model, (rng.standard_normal((5, 4)),)


def dense_backward_no_transpose(dy, cache):
    x, kernel = cache
    return dy @ kernel, x.T @ dy, dy.sum(axis=0)  # dx uses kernel, not kernel.T


def dense_backward_transposed_dkernel(dy, cache):
    x, kernel = cache
    return dy @ kernel.T, dy.T @ x, dy.sum(axis=0)  # dkernel transposed: [out, in]


def dense_backward_forgets_bias(dy, cache):
    x, kernel = cache
    return dy @ kernel.T, x.T @ dy, np.zeros(kernel.shape[1])


def test_correct_square_encoder_passes(rng):
    model, inputs = square_encoder(rng)
    report = ldm_np.check_module(model, inputs)
    assert report.max_error < TOL, f"\n{report}"


@pytest.mark.parametrize(
    ("bug", "caught_in"),
    [
        (dense_backward_no_transpose, ["input 0", "enc_dense_0.kernel"]),
        (dense_backward_transposed_dkernel, ["enc_mu.kernel", "enc_dense_1.kernel"]),
        (dense_backward_forgets_bias, ["enc_mu.bias", "enc_dense_0.bias"]),
    ],
)
def test_planted_dense_bugs_are_caught(bug, caught_in, rng, monkeypatch):
    model, inputs = square_encoder(rng)
    monkeypatch.setattr(vae_module, "dense_backward", bug)  # the name Encoder.backward calls
    report = ldm_np.check_module(model, inputs)
    errors = {row.name: row.error for row in report}
    assert not report.ok
    for name in caught_in:
        assert errors[name] > BUG, f"\n{report}"


def small_conditional_denoiser(rng):
    model = perturb_params(build_denoiser(3, 4, 2, 20, num_classes=3, seed=0, dtype="float64"), rng)
    z, t = rng.standard_normal((6, 3)), rng.integers(0, 20, size=6)
    return model, (z, t, np.array([1, 1, 1, 0, 2, 2]))


def test_planted_label_embedding_bug_is_caught(rng, monkeypatch):
    """Fancy-index += instead of add.at: repeated labels get one contribution, not their sum."""

    def buggy(dout, cache):
        labels, shape = cache
        dtable = np.zeros(shape)
        dtable[labels] += dout
        return dtable

    model, inputs = small_conditional_denoiser(rng)
    assert ldm_np.check_module(model, inputs).max_error < TOL
    monkeypatch.setattr(denoiser_module, "label_embedding_backward", buggy)
    errors = {row.name: row.error for row in ldm_np.check_module(model, inputs)}
    assert errors["label_embed.table"] > BUG
    assert errors["noise_pred.kernel"] < TOL


def test_planted_layernorm_bug_is_caught(rng, monkeypatch):
    """A LayerNorm backward that forgets the gradient through the variance."""

    def buggy(dy, cache):
        xhat, rstd, gamma = cache
        g = dy * gamma
        dx = rstd * (g - g.mean(axis=-1, keepdims=True))  # missing - xhat * mean(g * xhat)
        return dx, (dy * xhat).sum(axis=0), dy.sum(axis=0)

    model, inputs = small_conditional_denoiser(rng)
    monkeypatch.setattr(layers, "layernorm_backward", buggy)  # called by residual_block_backward
    report = ldm_np.check_module(model, inputs)
    errors = {row.name: row.error for row in report}
    assert errors["input 0"] > BUG and errors["denoiser_block_1_up.kernel"] > BUG
    assert errors["noise_pred.kernel"] < TOL  # above the blocks: untouched


def test_planted_silu_bug_is_caught_by_a_directional_check(rng, monkeypatch):
    """The cheap whole-model check catches a SiLU backward that drops the x * sigma'(x) term."""
    model, (z, t, labels) = small_conditional_denoiser(rng)
    dout = rng.standard_normal((6, 3))

    def loss():
        return float((model.forward(z, t, labels) * dout).sum())

    def run():
        model(z, t, labels)
        dz = model.backward(dout)
        arrays = [p for group in model.params.values() for p in group.values()] + [z]
        grads = [
            model.grads[layer][name].copy() for layer, group in model.params.items() for name in group
        ] + [dz]
        return directional_check(loss, arrays, grads)

    assert run() < TOL
    monkeypatch.setattr(layers, "silu_backward", lambda dy, cache: dy * cache[1])
    assert run() > BUG
