"""Guidance: classifier-free guidance, its rescale, and reconstruction guidance through the decoder."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import perturb_params

from ldm_np.datasets import moons
from ldm_np.denoiser import Denoiser
from ldm_np.diffusion import PREDICTION_TYPES, convert_prediction, predict_x0
from ldm_np.gradcheck import TOLERANCE, numerical_gradient, rel_error
from ldm_np.guidance import (
    classifier_free_guidance_fn,
    curvature_along,
    guide,
    reconstruction_guidance_fn,
    reconstruction_loss,
    rescale_guidance,
)
from ldm_np.oracle import OracleDenoiser
from ldm_np.samplers import sample
from ldm_np.schedules import make_schedule
from ldm_np.vae import Decoder

# --------------------------------------------------------------------------
# The two pure functions
# --------------------------------------------------------------------------


def test_guide_is_the_linear_extrapolation(rng):
    c, u = rng.standard_normal((2, 5, 3)).astype(np.float32)
    assert np.array_equal(guide(c, u, 0.0), u)  # u + 0 (c - u) is u, bit for bit
    np.testing.assert_allclose(guide(c, u, 1.0), c, rtol=0, atol=1e-6)
    np.testing.assert_allclose(guide(c, u, 3.0), 3 * c - 2 * u, rtol=1e-5, atol=1e-5)
    # A NumPy float64 scale must not promote float32 predictions to float64.
    assert guide(c, u, np.float64(2.0)).dtype == np.float32


def test_rescale_with_phi_zero_is_a_no_op(rng):
    g, c = rng.standard_normal((2, 4, 6))
    assert rescale_guidance(g, c, 0.0) is g


def test_rescale_with_phi_one_matches_the_conditional_std(rng):
    c = rng.standard_normal((4, 6)).astype(np.float32)
    g = (5.0 * c + rng.standard_normal((4, 6))).astype(np.float32)  # guidance inflated the spread
    out = rescale_guidance(g, c, 1.0)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.std(axis=1), c.std(axis=1), rtol=1e-5)
    # Each row is only scaled: its direction is kept.
    np.testing.assert_allclose(
        out / out.std(axis=1, keepdims=True), g / g.std(axis=1, keepdims=True), rtol=1e-4
    )
    half = rescale_guidance(g, c, 0.5)
    np.testing.assert_allclose(half, 0.5 * out + 0.5 * g, rtol=1e-5, atol=1e-6)


def test_rescale_leaves_a_row_without_spread_alone():
    g = np.array([[2.0, 2.0, 2.0], [1.0, 2.0, 3.0]])
    c = np.array([[1.0, 0.0, -1.0], [0.0, 0.0, 2.0]])
    out = rescale_guidance(g, c, 1.0)  # no division by zero (RuntimeWarnings are errors here)
    assert np.array_equal(out[0], g[0])
    np.testing.assert_allclose(out[1].std(), c[1].std())


# --------------------------------------------------------------------------
# classifier_free_guidance_fn on a small denoiser
# --------------------------------------------------------------------------

T = 50


@pytest.fixture
def small():
    """A float64 denoiser with 3 classes, moved off its initial point, its schedule, and inputs."""
    gen = np.random.default_rng(3)
    model = Denoiser(latent_size=4, hidden_size=16, num_layers=1, num_steps=T, num_classes=3, dtype="float64")
    perturb_params(model, gen)
    schedule = make_schedule(T, kind="cosine", dtype="float64")
    z = gen.standard_normal((6, 4))
    t = gen.integers(0, T, size=6)
    labels = np.array([0, 1, 2, 2, 1, 0])
    return model, schedule, z, t, labels


def test_guidance_scale_one_is_the_conditional_prediction_exactly(small):
    model, schedule, z, t, labels = small
    fn = classifier_free_guidance_fn(model, labels, 1.0, prediction_type="epsilon", schedule=schedule)
    assert np.array_equal(fn(z, t), model.forward(z, t, labels))


def test_guidance_scale_zero_is_the_unconditional_prediction_exactly(small):
    model, schedule, z, t, labels = small
    fn = classifier_free_guidance_fn(model, labels, 0.0, prediction_type="epsilon", schedule=schedule)
    assert np.array_equal(fn(z, t), model.forward(z, t, np.full(6, model.null_label)))
    assert np.array_equal(fn(z, t), model.forward(z, t))  # labels=None means the null label


@pytest.mark.parametrize("phi", [0.0, 0.7])
def test_guided_output_from_one_batched_forward(small, phi):
    model, schedule, z, t, labels = small
    cond = model.forward(z, t, labels)
    uncond = model.forward(z, t, np.full(6, 3))
    fn = classifier_free_guidance_fn(
        model, labels, 3.0, prediction_type="v", schedule=schedule, guidance_rescale=phi
    )
    calls = []
    forward = model.forward
    model.forward = lambda *a: calls.append(a[0].shape) or forward(*a)
    out = fn(z, t)
    assert calls == [(12, 4)]  # one forward of 2B rows
    np.testing.assert_allclose(
        out, rescale_guidance(guide(cond, uncond, 3.0), cond, phi), rtol=1e-12, atol=1e-12
    )


@pytest.mark.parametrize("from_type", PREDICTION_TYPES)
def test_guiding_the_output_equals_guiding_eps_or_x0(small, from_type, rng):
    # The docstring's argument: every conversion is affine in the output for fixed
    # (x_t, t), so guidance commutes with it.
    _, schedule, z, t, _ = small
    c, u = rng.standard_normal((2, *z.shape))
    guided = guide(c, u, 4.0)
    for to_type in PREDICTION_TYPES:
        conv = lambda o, to=to_type: convert_prediction(schedule, o, t, z, from_type, to)  # noqa: E731
        np.testing.assert_allclose(conv(guided), guide(conv(c), conv(u), 4.0), rtol=1e-10, atol=1e-10)


def test_guidance_refuses_bad_input(small):
    model, schedule, z, t, labels = small
    with pytest.raises(ValueError, match="class-conditional"):
        classifier_free_guidance_fn(
            Denoiser(4, 16, 1, T, dtype="float64"), labels, 2.0, prediction_type="epsilon", schedule=schedule
        )
    with pytest.raises(ValueError, match=r"0\.\.3"):
        classifier_free_guidance_fn(
            model, np.array([0, 4]), 2.0, prediction_type="epsilon", schedule=schedule
        )
    with pytest.raises(ValueError, match="guidance_scale"):
        classifier_free_guidance_fn(model, labels, -1.0, prediction_type="epsilon", schedule=schedule)
    with pytest.raises(ValueError, match="prediction_type"):
        classifier_free_guidance_fn(model, labels, 2.0, prediction_type="eps", schedule=schedule)
    fn = classifier_free_guidance_fn(model, labels, 2.0, prediction_type="epsilon", schedule=schedule)
    with pytest.raises(ValueError, match="6 rows"):
        fn(z[:3], t[:3])


# --------------------------------------------------------------------------
# Guided sampling with oracle denoisers: lands on the requested class
# --------------------------------------------------------------------------


class PerClassOracle:
    """The optimal denoiser of each class for conditional rows, of all the data for null rows."""

    def __init__(self, data, classes, schedule, prediction_type):
        self.num_classes = int(classes.max()) + 1
        self.null_label = self.num_classes
        self.dtype = data.dtype
        self.oracles = [
            OracleDenoiser(data[classes == k], schedule, prediction_type) for k in range(self.num_classes)
        ]
        self.oracles.append(OracleDenoiser(data, schedule, prediction_type))

    def forward(self, z_t, t, labels):
        out = np.empty_like(z_t)
        for k, oracle in enumerate(self.oracles):
            rows = labels == k
            if rows.any():
                out[rows] = oracle(z_t[rows], t[rows])
        return out


def moon_of(points):
    """Which half circle of ``datasets.moons`` each point lies nearer: 0 upper, 1 lower.

    Undoes the generator's centring (1/2, 1/4) and scale 0.705, then compares the distances
    to the unit circles around (0, 0) (upper moon) and (1, 1/2) (lower moon).
    """
    xy = points * 0.705 + np.array([0.5, 0.25])  # [n, 2]
    to_upper = np.abs(np.linalg.norm(xy, axis=1) - 1.0)
    to_lower = np.abs(np.linalg.norm(xy - np.array([1.0, 0.5]), axis=1) - 1.0)
    return (to_lower < to_upper).astype(np.int64)


@pytest.mark.parametrize(
    ("prediction_type", "w"), [("epsilon", 1.0), ("epsilon", 3.0), ("v", 3.0), ("sample", 2.0)]
)
def test_guided_oracle_sampling_lands_on_the_requested_class(prediction_type, w):
    schedule = make_schedule(1000, dtype="float64")
    data = moons(64, seed=0, noise=0.05, dtype="float64")  # [64, 2]
    classes = moon_of(data)  # upper moon 0, lower moon 1
    oracle = PerClassOracle(data, classes, schedule, prediction_type)
    labels = np.tile([0, 1], 40)  # [80]
    fn = classifier_free_guidance_fn(oracle, labels, w, prediction_type=prediction_type, schedule=schedule)
    x0 = sample(fn, schedule, 80, num_inference_steps=50, prediction_type=prediction_type,
                rng=np.random.default_rng(0), shape=2)  # fmt: skip
    sq = ((x0[:, None, :] - data[None]) ** 2).sum(-1)  # [80, 64]
    assert np.array_equal(classes[sq.argmin(axis=1)], labels)
    # Unguided (null label) samples land on both moons: the test above is not trivial.
    x_null = sample(lambda z, t: oracle.forward(z, t, np.full(80, 2)), schedule, 80, num_inference_steps=50,
                    prediction_type=prediction_type, rng=np.random.default_rng(0), shape=2)  # fmt: skip
    null_classes = classes[((x_null[:, None, :] - data[None]) ** 2).sum(-1).argmin(axis=1)]
    assert 0.25 < null_classes.mean() < 0.75


# --------------------------------------------------------------------------
# Reconstruction guidance through the decoder
# --------------------------------------------------------------------------


@pytest.fixture
def decoder_setup():
    gen = np.random.default_rng(7)
    decoder = perturb_params(Decoder(input_size=6, latent_size=3, hidden_size=8, dtype="float64"), gen)
    z = gen.standard_normal((4, 3))
    x_known = gen.standard_normal((4, 6))
    mask = (gen.random((4, 6)) < 0.5).astype(np.float64)
    return decoder, z, x_known, mask


def test_reconstruction_loss_value(decoder_setup):
    decoder, z, x_known, mask = decoder_setup
    loss, _ = reconstruction_loss(decoder, z, x_known, mask, 1.7)
    x_hat = decoder.forward(z / 1.7)
    assert np.isclose(loss, 0.5 * (mask * (x_hat - x_known) ** 2).sum(), rtol=1e-13)


def test_reconstruction_loss_gradient_check(decoder_setup):
    decoder, z, x_known, mask = decoder_setup
    _, dz = reconstruction_loss(decoder, z, x_known, mask, 1.7)
    num = numerical_gradient(lambda: reconstruction_loss(decoder, z, x_known, mask, 1.7)[0], z)
    err = rel_error(dz, num)
    assert err < TOLERANCE, err  # around 1e-9 or less in float64
    # Unknown entries carry no gradient: with an all-zero mask the loss is flat.
    loss0, dz0 = reconstruction_loss(decoder, z, x_known, np.zeros_like(mask), 1.7)
    assert loss0 == 0.0 and not dz0.any()


def test_reconstruction_loss_refuses_an_int_mask(decoder_setup):
    decoder, z, x_known, mask = decoder_setup
    with pytest.raises(TypeError, match="mask"):
        reconstruction_loss(decoder, z, x_known, mask.astype(np.int64), 1.0)  # would upcast silently


def test_curvature_along_matches_the_jacobian(decoder_setup, rng):
    decoder, z, _, mask = decoder_setup
    d = rng.standard_normal(z.shape)
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    c = curvature_along(decoder, z, d, mask, 1.7)  # [4, 1]
    for i in range(z.shape[0]):
        # Row k of J (d x_hat_k / d z) from one backward pass per output.
        jac = np.empty((6, 3))
        for k in range(6):
            decoder.forward(z[i : i + 1] / 1.7)
            jac[k] = decoder.backward(np.eye(6)[k : k + 1])[0] / 1.7
        exact = ((mask[i] * (jac @ d[i])) ** 2).sum()
        assert np.isclose(c[i, 0], exact, rtol=1e-4), (c[i, 0], exact)  # central difference, h = 1e-2


@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
def test_reconstruction_guidance_moves_x0_hat_down_the_gradient(decoder_setup, prediction_type, rng):
    decoder, _, x_known, mask = decoder_setup
    schedule = make_schedule(T, kind="cosine", dtype="float64")
    z_t = rng.standard_normal((4, 3))
    t = np.array([0, 10, 30, 49])
    raw = rng.standard_normal((4, 3))
    fn = reconstruction_guidance_fn(lambda z, tt: raw, decoder, x_known, mask, 1.3, 0.7,
                                    prediction_type=prediction_type, schedule=schedule)  # fmt: skip
    x0_raw = predict_x0(schedule, raw, t, z_t, prediction_type)
    _, grad = reconstruction_loss(decoder, x0_raw, x_known, mask, 1.3)
    d = grad / np.linalg.norm(grad, axis=1, keepdims=True)
    c = curvature_along(decoder, x0_raw, d, mask, 1.3)
    x0_new = predict_x0(schedule, fn(z_t, t), t, z_t, prediction_type)
    length = np.linalg.norm(grad, axis=1, keepdims=True) / c  # [4, 1]
    np.testing.assert_allclose(x0_new, x0_raw - 0.7 * length * d, rtol=1e-9, atol=1e-9)
    # With strength 1 the step minimises the linearised loss along -g: the linear
    # model's residual is then orthogonal to the change J d.
    x_hat = decoder.forward(x0_raw / 1.3)
    decoder.clear_cache()
    jd = (decoder.forward((x0_raw + 1e-6 * d) / 1.3) - decoder.forward((x0_raw - 1e-6 * d) / 1.3)) / 2e-6
    decoder.clear_cache()
    before = mask * (x_hat - x_known)  # [4, 6]
    after = before - length * mask * jd  # [4, 6]
    cosine = (
        (after * mask * jd).sum(axis=1) / np.linalg.norm(before, axis=1) / np.linalg.norm(mask * jd, axis=1)
    )
    assert np.abs(cosine).max() < 1e-3  # c's central difference (h = 1e-2) is good to ~1e-4
    off = reconstruction_guidance_fn(lambda z, tt: raw, decoder, x_known, mask, 1.3, 0.0,
                                     prediction_type=prediction_type, schedule=schedule)  # fmt: skip
    np.testing.assert_allclose(off(z_t, t), raw, rtol=1e-9, atol=1e-9)


def test_reconstruction_guidance_leaves_rows_with_nothing_known(decoder_setup, rng):
    decoder, _, x_known, mask = decoder_setup
    mask[1] = 0.0
    schedule = make_schedule(T, kind="cosine", dtype="float64")
    z_t, raw = rng.standard_normal((2, 4, 3))
    fn = reconstruction_guidance_fn(lambda z, tt: raw, decoder, x_known, mask, 1.0, 1.0,
                                    prediction_type="epsilon", schedule=schedule)  # fmt: skip
    out = fn(z_t, np.full(4, 20))
    np.testing.assert_allclose(out[1], raw[1], rtol=1e-12)
    assert not np.allclose(out[0], raw[0])


def test_draw_classes_follows_the_label_frequencies_and_its_seed():
    from ldm_np.guidance import draw_classes

    labels = np.repeat(np.arange(4), [10, 20, 30, 40])  # p = 0.1, 0.2, 0.3, 0.4
    y = draw_classes(labels, 100_000, seed=3)
    assert y.dtype == np.int64 and y.shape == (100_000,)
    np.testing.assert_allclose(np.bincount(y, minlength=4) / y.size, [0.1, 0.2, 0.3, 0.4], atol=0.005)
    np.testing.assert_array_equal(draw_classes(labels, 50, seed=3), draw_classes(labels, 50, seed=3))
    assert not np.array_equal(draw_classes(labels, 50, seed=3), draw_classes(labels, 50, seed=4))
    assert set(draw_classes(np.array([2, 2, 5]), 200).tolist()) == {2, 5}  # absent classes are never drawn


@pytest.mark.parametrize(
    "labels, n, error",
    [
        (np.array([0.0, 1.0]), 5, TypeError),
        (np.array([[0, 1]]), 5, ValueError),
        (np.array([], dtype=np.int64), 5, ValueError),
        (np.array([-1, 1]), 5, ValueError),
        (np.array([0, 1]), 0, ValueError),
        ([0, 1], 5, TypeError),
    ],
)
def test_draw_classes_refuses_bad_input(labels, n, error):
    from ldm_np.guidance import draw_classes

    with pytest.raises(error):
        draw_classes(labels, n)
