"""Adam and AdamW against the published update rules, weight decay, gradient clipping,
state save/restore and dtypes."""

from __future__ import annotations

import copy
import io
import math

import numpy as np
import pytest

from ldm_np.optim import Adam, AdamW, clip_grad_norm, global_grad_norm


def tree(*values, dtype=np.float64):
    """A one-layer parameter tree {"layer": {"w": array}}."""
    return {"layer": {"w": np.array(values, dtype=dtype)}}


def reference_adam(p, grads, lr, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, decoupled=False):
    """Kingma & Ba (2015), Algorithm 1, one scalar at a time in Python floats.

    decoupled=True is AdamW (Loshchilov & Hutter, 2019): p <- p - lr * wd * p before the
    update; otherwise weight decay is an L2 term added to the gradient.
    """
    m = v = 0.0
    history = []
    for t, g in enumerate(grads, start=1):
        if decoupled:
            p = p - lr * weight_decay * p
        else:
            g = g + weight_decay * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
        p = p - lr * m_hat / (math.sqrt(v_hat) + eps)
        history.append(p)
    return history


def test_adam_first_two_steps_by_hand():
    params = tree(1.0, -2.0)
    opt = Adam(lr=0.1)
    opt.step(params, tree(0.5, -1.0))
    # t = 1: m_hat = g and v_hat = g^2, so the step is lr * g / (|g| + eps), almost exactly lr.
    expected_1 = [1.0 - 0.1 * 0.5 / (0.5 + 1e-8), -2.0 + 0.1 * 1.0 / (1.0 + 1e-8)]
    np.testing.assert_allclose(params["layer"]["w"], expected_1, rtol=1e-13)
    opt.step(params, tree(0.2, 0.3))
    # t = 2, first entry: m = 0.9 * 0.05 + 0.1 * 0.2, v = 0.999 * 0.00025 + 0.001 * 0.04.
    m_hat = (0.9 * 0.05 + 0.1 * 0.2) / (1 - 0.9**2)
    v_hat = (0.999 * 0.00025 + 0.001 * 0.04) / (1 - 0.999**2)
    first = expected_1[0] - 0.1 * m_hat / (math.sqrt(v_hat) + 1e-8)
    # second entry: m = 0.9 * -0.1 + 0.1 * 0.3, v = 0.999 * 0.001 + 0.001 * 0.09.
    m_hat = (0.9 * -0.1 + 0.1 * 0.3) / (1 - 0.9**2)
    v_hat = (0.999 * 0.001 + 0.001 * 0.09) / (1 - 0.999**2)
    second = expected_1[1] - 0.1 * m_hat / (math.sqrt(v_hat) + 1e-8)
    np.testing.assert_allclose(params["layer"]["w"], [first, second], rtol=1e-13)
    assert opt.t == 2


@pytest.mark.parametrize(("cls", "decoupled"), [(Adam, False), (AdamW, True)])
@pytest.mark.parametrize("weight_decay", [0.0, 0.3])
def test_adam_and_adamw_match_the_reference_over_several_steps(cls, decoupled, weight_decay):
    rng = np.random.default_rng(5)
    p0 = rng.standard_normal(4)
    grads = [rng.standard_normal(4) for _ in range(5)]
    params = tree(*p0)
    opt = cls(lr=0.05, betas=(0.8, 0.99), eps=1e-6, weight_decay=weight_decay)
    for k, g in enumerate(grads):
        opt.step(params, tree(*g))
        for i in range(4):
            expected = reference_adam(
                p0[i], [gg[i] for gg in grads[: k + 1]], 0.05, 0.8, 0.99, 1e-6, weight_decay, decoupled
            )
            assert params["layer"]["w"][i] == pytest.approx(expected[-1], rel=1e-12, abs=1e-15)


def test_l2_and_decoupled_weight_decay_differ_as_specified():
    """With a zero gradient AdamW only shrinks p by lr * wd * p; Adam's L2 term is a normalised step."""
    zero = tree(0.0, 0.0)
    adamw_params, adam_params = tree(1.0, -4.0), tree(1.0, -4.0)
    AdamW(lr=0.1, weight_decay=0.5).step(adamw_params, zero)
    Adam(lr=0.1, weight_decay=0.5).step(adam_params, zero)
    # AdamW: p (1 - lr wd) = 0.95 p exactly; the Adam part sees g = 0 and moves nothing.
    np.testing.assert_allclose(adamw_params["layer"]["w"], [0.95, -3.8], rtol=1e-15)
    # Adam: g = wd p = [0.5, -2], and the first step is lr * g / (|g| + eps) ~ lr * sign(p).
    np.testing.assert_allclose(
        adam_params["layer"]["w"], [1.0 - 0.1 * 0.5 / (0.5 + 1e-8), -4.0 + 0.1 * 2 / (2 + 1e-8)], rtol=1e-13
    )


def test_defaults():
    assert Adam().weight_decay == 0.0 and AdamW().weight_decay == 0.01
    assert Adam().betas == (0.9, 0.999) and Adam().eps == 1e-8 and Adam().lr == 1e-3
    a, b = tree(1.0, 2.0), tree(1.0, 2.0)
    Adam(lr=0.1).step(a, tree(0.3, -0.1))
    AdamW(lr=0.1, weight_decay=0.0).step(b, tree(0.3, -0.1))
    np.testing.assert_array_equal(a["layer"]["w"], b["layer"]["w"])  # AdamW with wd=0 is Adam


@pytest.mark.parametrize("cls", [Adam, AdamW])
def test_a_quadratic_is_minimised(cls):
    """f(p) = 0.5 sum a (p - c)^2 with curvatures spread over two decades."""
    a, c = np.array([0.1, 1.0, 10.0]), np.array([1.5, -2.0, 0.25])
    params = {"q": {"p": np.zeros(3)}}
    opt = cls(lr=0.05, weight_decay=0.0)
    for step in range(3000):
        if step == 2000:
            opt.lr = 0.005  # lr may change between steps; a smaller one settles the oscillation
        opt.step(params, {"q": {"p": a * (params["q"]["p"] - c)}})
    np.testing.assert_allclose(params["q"]["p"], c, atol=1e-2)


# --------------------------------------------------------------------------
# Gradient clipping
# --------------------------------------------------------------------------


def test_clip_grad_norm_scales_to_max_norm():
    grads = {"a": {"w": np.array([3.0, 4.0])}, "b": {"w": np.array([12.0])}}  # global norm 13
    norm = clip_grad_norm(grads, 1.0)
    assert float(norm) == pytest.approx(13.0)  # the norm before clipping
    clipped = np.concatenate([grads["a"]["w"], grads["b"]["w"]])
    assert float(np.linalg.norm(clipped)) == pytest.approx(1.0, rel=1e-6)
    np.testing.assert_allclose(clipped, np.array([3.0, 4.0, 12.0]) / 13.0, rtol=1e-6)  # direction kept


def test_clip_grad_norm_leaves_small_gradients_untouched():
    grads = {"a": {"w": np.array([0.3, -0.4])}}  # norm 0.5
    before = grads["a"]["w"].copy()
    assert float(clip_grad_norm(grads, 1.0)) == pytest.approx(0.5)
    np.testing.assert_array_equal(grads["a"]["w"], before)


def test_clip_grad_norm_keeps_float32():
    grads = {"a": {"w": np.full(10, 100.0, dtype=np.float32)}}
    norm = clip_grad_norm(grads, 0.5)
    assert grads["a"]["w"].dtype == np.float32 and np.asarray(norm).dtype == np.float32
    assert float(global_grad_norm(grads)) == pytest.approx(0.5, rel=1e-5)


# --------------------------------------------------------------------------
# State save and restore, dtypes
# --------------------------------------------------------------------------


def two_layer_tree(rng, dtype=np.float64):
    return {
        "l1": {"kernel": rng.standard_normal((3, 2)).astype(dtype)},
        "l2": {"bias": rng.standard_normal(2).astype(dtype)},
    }


@pytest.mark.parametrize("cls", [Adam, AdamW])
def test_state_round_trip_through_a_file_gives_identical_next_steps(cls):
    rng = np.random.default_rng(0)
    params = two_layer_tree(rng)
    opt = cls(lr=0.01)
    for _ in range(3):
        opt.step(params, two_layer_tree(rng))
    assert sorted(opt.state_arrays()) == ["m.l1.kernel", "m.l2.bias", "v.l1.kernel", "v.l2.bias"]
    buffer = io.BytesIO()
    np.savez(buffer, **opt.state_arrays())
    buffer.seek(0)
    with np.load(buffer) as saved:
        restored = cls(lr=0.01)
        restored.load_state_arrays(dict(saved), opt.t)
    params_copy = copy.deepcopy(params)
    for _ in range(2):
        grads = two_layer_tree(rng)
        opt.step(params, grads)
        restored.step(params_copy, grads)
    for layer in params:
        for name in params[layer]:
            np.testing.assert_array_equal(params[layer][name], params_copy[layer][name])
    assert restored.t == opt.t == 5


def test_state_round_trip_in_memory_does_not_share_arrays():
    rng = np.random.default_rng(1)
    params = two_layer_tree(rng)
    opt = Adam(lr=0.01)
    opt.step(params, two_layer_tree(rng))
    restored = Adam(lr=0.01)
    restored.load_state_arrays(opt.state_arrays(), opt.t)
    params_copy = copy.deepcopy(params)
    grads = two_layer_tree(rng)
    opt.step(params, grads)
    restored.step(params_copy, grads)
    np.testing.assert_array_equal(params["l1"]["kernel"], params_copy["l1"]["kernel"])


@pytest.mark.parametrize("cls", [Adam, AdamW])
def test_float32_params_and_state_stay_float32(cls):
    rng = np.random.default_rng(2)
    params = two_layer_tree(rng, np.float32)
    opt = cls(lr=np.float64(1e-2), weight_decay=np.float64(0.1))  # NumPy float64 hyperparameters
    for _ in range(2):
        opt.step(params, two_layer_tree(rng, np.float32))
    assert all(v.dtype == np.float32 for group in params.values() for v in group.values())
    assert all(v.dtype == np.float32 for v in opt.state_arrays().values())


def test_repr_shows_the_hyperparameters_and_step():
    opt = AdamW(lr=0.002, weight_decay=0.05)
    opt.step(tree(1.0), tree(0.1))
    assert repr(opt) == "AdamW(lr=0.002, betas=(0.9, 0.999), eps=1e-08, weight_decay=0.05, t=1)"
