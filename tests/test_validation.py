"""Bad input gets a ValueError or TypeError that names the argument, never an IndexError or a
raw NumPy broadcasting error from deep inside a forward pass."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import ldm_np
from ldm_np.gradcheck import numerical_gradient
from ldm_np.losses import kl_divergence
from ldm_np.models import build, build_decoder, build_denoiser, build_encoder, output_size, param_count
from ldm_np.optim import Adam, AdamW, clip_grad_norm
from ldm_np.schedules import make_schedule
from ldm_np.vae import reparameterize
from ldm_np.validation import check_array, check_dtype_name, check_float, check_int, check_timesteps

F32 = np.float32


@pytest.fixture(scope="module")
def models():
    encoder, decoder, denoiser = build(6, 3, 4, 1, 10)
    conditional = build_denoiser(3, 4, 1, 10, num_classes=2)
    return {"encoder": encoder, "decoder": decoder, "denoiser": denoiser, "conditional": conditional}


def good_denoiser_inputs(batch=2):
    return np.zeros((batch, 3), F32), np.zeros(batch, np.int64)


# --------------------------------------------------------------------------
# Model inputs
# --------------------------------------------------------------------------

BAD_ARRAYS = [
    # (array, error type, what the message must say)
    (np.zeros((2, 5), F32), ValueError, r"must have shape \[batch, 6\], got \[2, 5\]"),
    (np.zeros(6, F32), ValueError, r"shape \[batch, 6\], got \[6\]"),
    (np.zeros((2, 6, 1), F32), ValueError, r"shape \[batch, 6\]"),
    (np.zeros((0, 6), F32), ValueError, "must not be empty"),
    (np.zeros((2, 6), np.int64), TypeError, "floating-point array"),
    (np.zeros((2, 6), bool), TypeError, "floating-point array"),
    (np.zeros((2, 6), np.complex64), TypeError, "floating-point array"),
    (np.zeros((2, 6), np.float64), TypeError, "must have dtype float32"),
    (np.zeros((2, 6), np.float16), TypeError, "must have dtype float32"),
    (np.full((2, 6), np.nan, F32), ValueError, "NaN or infinity"),
    (np.array([[0, 0, 0, 0, 0, np.inf]], F32), ValueError, "NaN or infinity"),
    ([[0.0] * 6], TypeError, "must be an array"),
]


@pytest.mark.parametrize(("x", "error", "message"), BAD_ARRAYS)
def test_encoder_rejects_bad_x(x, error, message, models):
    with pytest.raises(error, match=message) as info:
        models["encoder"](x)
    assert str(info.value).startswith("x ")


@pytest.mark.parametrize(
    ("z", "error", "message"),
    [
        (np.zeros((2, 4), F32), ValueError, r"^z must have shape \[batch, 3\]"),
        (np.zeros((2, 3), np.float64), TypeError, "^z must have dtype float32"),
        (np.zeros((2, 3), np.int32), TypeError, "^z must be a floating-point array"),
        (np.zeros((0, 3), F32), ValueError, "^z must not be empty"),
        (np.array([[np.nan, 0, 0]], F32), ValueError, "^z contains NaN"),
    ],
)
def test_decoder_rejects_bad_z(z, error, message, models):
    with pytest.raises(error, match=message):
        models["decoder"](z)


@pytest.mark.parametrize(
    ("z_t", "error", "message"),
    [
        (np.zeros((2, 4), F32), ValueError, r"^z_t must have shape \[batch, 3\]"),
        (np.zeros((2, 3), np.float64), TypeError, "^z_t must have dtype float32"),
        (np.zeros((2, 3), bool), TypeError, "^z_t must be a floating-point array"),
        (np.zeros((0, 3), F32), ValueError, "^z_t must not be empty"),
        (np.array([[np.inf, 0, 0], [0, 0, 0]], F32), ValueError, "^z_t contains NaN or infinity"),
    ],
)
def test_denoiser_rejects_bad_z_t(z_t, error, message, models):
    with pytest.raises(error, match=message):
        models["denoiser"](z_t, np.zeros(2, np.int64))


@pytest.mark.parametrize(
    ("t", "error", "message"),
    [
        (np.array([0.0, 1.0]), TypeError, "^t must be an integer array"),
        (np.array([0.5, 1.5]), TypeError, "^t must be an integer array"),
        (np.array([True, False]), TypeError, "^t must be an integer array"),
        (np.array([0, 10]), ValueError, r"^t must lie in 0\.\.9 \(num_steps=10\), got values from 0 to 10"),
        (np.array([-1, 3]), ValueError, r"^t must lie in 0\.\.9"),
        (np.array([1, 2, 3]), ValueError, r"^t must have shape \[2\], got \[3\]"),
        (np.array([[1, 2]]), ValueError, r"^t must have shape \[2\]"),
        (np.array(3), ValueError, r"^t must have shape \[2\]"),
        ([0, 1], TypeError, "^t must be an integer array of shape"),
        (3, TypeError, "^t must be an integer array of shape"),
    ],
)
def test_denoiser_rejects_bad_t(t, error, message, models):
    with pytest.raises(error, match=message):
        models["denoiser"](*good_denoiser_inputs()[:1], t)


def test_denoiser_labels(models):
    z, t = good_denoiser_inputs()
    with pytest.raises(ValueError, match="labels were given, but this denoiser is unconditional"):
        models["denoiser"](z, t, np.array([0, 1]))
    conditional = models["conditional"]
    conditional(z, t, np.array([0, 2]))  # 2 is the null label: fine
    with pytest.raises(ValueError, match=r"^labels must lie in 0\.\.2"):
        conditional(z, t, np.array([0, 3]))
    with pytest.raises(TypeError, match=r"^labels must be an integer array"):
        conditional(z, t, np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"^labels must have shape \[2\]"):
        conditional(z, t, np.array([0]))


def test_backward_rejects_wrongly_shaped_gradients(models):
    encoder, decoder, denoiser = models["encoder"], models["decoder"], models["denoiser"]
    encoder(np.zeros((2, 6), F32))
    with pytest.raises(ValueError, match=r"^dmu must have shape \[2, 3\]"):
        encoder.backward(np.zeros((2, 4), F32), np.zeros((2, 3), F32))
    encoder(np.zeros((2, 6), F32))
    with pytest.raises(TypeError, match=r"^dlog_var must have dtype float32"):
        encoder.backward(np.zeros((2, 3), F32), np.zeros((2, 3), np.float64))
    decoder(np.zeros((2, 3), F32))
    with pytest.raises(ValueError, match=r"^dx_hat must have shape \[2, 6\]"):
        decoder.backward(np.zeros((3, 6), F32))
    denoiser(*good_denoiser_inputs())
    with pytest.raises(ValueError, match=r"^dout must have shape \[2, 3\]"):
        denoiser.backward(np.zeros((2, 1), F32))


ENCODER = build_encoder(6, 3, 4)  # Hypothesis tests cannot take function-scoped fixtures


@given(
    shape=st.lists(st.integers(0, 7), min_size=0, max_size=3).map(tuple),
    dtype=st.sampled_from(["f4", "f8", "i4", "?"]),
)
def test_encoder_on_random_arrays_either_works_or_names_x(shape, dtype):
    encoder = ENCODER
    x = np.zeros(shape, dtype)
    valid = len(shape) == 2 and shape[0] >= 1 and shape[1] == 6 and dtype == "f4"
    if valid:
        mu, log_var = encoder(x)
        assert mu.shape == log_var.shape == (shape[0], 3)
    else:
        with pytest.raises((ValueError, TypeError), match=r"^x "):
            encoder(x)


# --------------------------------------------------------------------------
# Sizes and builder arguments
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"input_size": 6, "latent_size": 0}, ValueError, "^latent_size must be >= 1, got 0"),
        ({"input_size": 6, "hidden_size": -3}, ValueError, "^hidden_size must be >= 1, got -3"),
        ({"input_size": 2.5}, TypeError, "^input_size must be an integer, got float 2.5"),
        ({"input_size": "6"}, TypeError, "^input_size must be an integer"),
        ({"input_size": True}, TypeError, "^input_size must be an integer, got bool"),
        ({"input_size": 6, "num_layers": -1}, ValueError, "^num_layers must be >= 0"),
        ({"input_size": 6, "num_steps": 0}, ValueError, "^num_steps must be >= 1"),
        ({"input_size": 6, "dtype": "float16"}, TypeError, r"^dtype must be one of \('float32', 'float64'\)"),
        ({"input_size": 6, "dtype": "int32"}, TypeError, "^dtype must be one of"),
        ({"input_size": 6, "dtype": "not a dtype"}, TypeError, "^dtype must be one of"),
        ({"input_size": 6, "device": "tpu"}, ValueError, "^device must be one of"),
        ({"input_size": 6, "time_input": "seconds"}, ValueError, "^time_input must be one of"),
    ],
)
def test_build_rejects_bad_sizes(kwargs, error, message):
    with pytest.raises(error, match=message):
        build(**kwargs)


def test_individual_builders_and_helpers_reject_bad_sizes():
    with pytest.raises(ValueError, match=r"^latent_size must be >= 1"):
        build_encoder(6, latent_size=0)
    with pytest.raises(TypeError, match=r"^hidden_size must be an integer"):
        build_decoder(6, hidden_size=4.0)
    with pytest.raises(ValueError, match=r"^num_classes must be >= 1"):
        build_denoiser(num_classes=0)
    with pytest.raises(ValueError, match=r"^latent_size must be >= 1"):
        output_size(0)
    with pytest.raises(ValueError, match=r"^hidden_size must be >= 1"):
        param_count(hidden_size=0)
    with pytest.raises(TypeError, match=r"^input_size must be an integer"):
        param_count(input_size=2.5)


# --------------------------------------------------------------------------
# Schedules and optimizers
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"num_steps": 0}, ValueError, "^num_steps must be >= 1"),
        ({"num_steps": 10.0}, TypeError, "^num_steps must be an integer"),
        ({"kind": "squaredcos_cap_v2"}, ValueError, "^kind must be one of"),
        ({"beta_start": 0.0}, ValueError, r"^beta_start must be in \(0.0, 1.0\]"),
        ({"beta_start": -0.1}, ValueError, "^beta_start must be in"),
        ({"beta_end": 1.5}, ValueError, "^beta_end must be <= 1.0"),
        ({"beta_end": 1.0}, ValueError, "^beta_end must be < 1"),
        (
            {"beta_start": 0.03, "beta_end": 0.02},
            ValueError,
            r"^beta_end \(0.02\) must be >= beta_start \(0.03\)",
        ),
        ({"beta_start": float("nan")}, ValueError, "^beta_start must be finite"),
        ({"beta_end": "0.02"}, TypeError, "^beta_end must be a real number"),
        ({"dtype": "float16"}, TypeError, "^dtype must be one of"),
        ({"device": "cuda"}, ValueError, "^device must be one of"),
    ],
)
def test_make_schedule_rejects_bad_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        make_schedule(**kwargs)


@pytest.mark.parametrize("cls", [Adam, AdamW])
@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"lr": -1e-3}, ValueError, "^lr must be >= 0.0, got -0.001"),
        ({"lr": "1e-3"}, TypeError, "^lr must be a real number"),
        ({"lr": float("inf")}, ValueError, "^lr must be finite"),
        ({"betas": (0.9,)}, TypeError, r"^betas must be a pair"),
        ({"betas": 0.9}, TypeError, r"^betas must be a pair"),
        ({"betas": (1.0, 0.999)}, ValueError, "^betas must each be < 1"),
        ({"betas": (0.9, -0.1)}, ValueError, r"^betas\[1\] must be in \[0.0, 1.0\]"),
        ({"eps": 0.0}, ValueError, "^eps must be > 0.0, got 0.0"),
        ({"weight_decay": -0.1}, ValueError, "^weight_decay must be >= 0.0"),
        ({"weight_decay": None}, TypeError, "^weight_decay must be a real number"),
    ],
)
def test_optimizers_reject_bad_arguments(cls, kwargs, error, message):
    with pytest.raises(error, match=message):
        cls(**kwargs)


def test_clip_grad_norm_rejects_bad_max_norm():
    grads = {"a": {"w": np.ones(3)}}
    with pytest.raises(ValueError, match=r"^max_norm must be > 0.0"):
        clip_grad_norm(grads, 0.0)
    with pytest.raises(TypeError, match=r"^max_norm must be a real number"):
        clip_grad_norm(grads, None)


# --------------------------------------------------------------------------
# Losses, reparameterization, embedding, checker
# --------------------------------------------------------------------------


@pytest.mark.parametrize("fn", [kl_divergence])
def test_kl_rejects_mismatched_or_1d_inputs(fn):
    with pytest.raises(ValueError, match=r"^log_var must have shape \[3, 2\], got \[3, 1\]"):
        fn(np.zeros((3, 2)), np.zeros((3, 1)))
    with pytest.raises(ValueError, match=r"^mu must have shape \[batch, batch\], got \[4\]"):
        fn(np.zeros(4), np.zeros(4))
    with pytest.raises(TypeError, match=r"^log_var must have dtype float64"):
        fn(np.zeros((3, 2)), np.zeros((3, 2), F32))


def test_reparameterize_rejects_mismatched_inputs():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=r"^log_var must have shape \[2, 3\]"):
        reparameterize(np.zeros((2, 3)), np.zeros((3, 2)), rng)
    with pytest.raises(TypeError, match=r"^log_var must have dtype float64"):
        reparameterize(np.zeros((2, 3)), np.zeros((2, 3), F32), rng)
    with pytest.raises(TypeError, match=r"^mu must be a floating-point array"):
        reparameterize(np.zeros((2, 3), np.int64), np.zeros((2, 3)), rng)
    with pytest.raises(ValueError, match=r"^mu must not be empty"):
        reparameterize(np.zeros((0, 3)), np.zeros((0, 3)), rng)


def test_denoiser_rejects_unknown_time_input():
    with pytest.raises(ValueError, match=r"^time_input must be one of"):
        build_denoiser(3, 4, 1, 10, time_input="seconds")
    with pytest.raises(TypeError, match=r"^time_input must be one of"):
        build_denoiser(3, 4, 1, 10, time_input=1)


def test_load_params_names_the_bad_parameter():
    encoder = build_encoder(6, 3, 4)
    params = {layer: dict(group) for layer, group in encoder.params.items()}
    params["enc_mu"]["kernel"] = np.zeros((4, 2), F32)
    with pytest.raises(
        ValueError, match=r"^parameter enc_mu.kernel has shape \[4, 2\], the model expects \[4, 3\]"
    ):
        encoder.load_params(params)
    del params["enc_mu"]
    with pytest.raises(ValueError, match=r"^missing parameter enc_mu.kernel"):
        encoder.load_params(params)


def test_checker_rejects_float32_and_mismatched_shapes():
    with pytest.raises(TypeError, match="gradient checks need float64"):
        numerical_gradient(lambda: 0.0, np.zeros(2, F32))
    with pytest.raises(ValueError, match="shapes differ"):
        ldm_np.rel_error(np.zeros((2, 3)), np.zeros((3, 2)))


# --------------------------------------------------------------------------
# The checks themselves
# --------------------------------------------------------------------------


def test_check_helpers_directly():
    assert check_int(np.int64(3), "n") == 3 and type(check_int(np.int64(3), "n")) is int
    assert check_float(np.float32(0.5), "x") == 0.5
    assert check_dtype_name("float32") == np.float32
    assert check_array(np.ones((2, 3)), "x", shape=(None, 3)) is not None
    assert check_array(np.full((2, 3), np.nan), "x", shape=(None, 3), finite=False) is not None
    with pytest.raises(ValueError, match=r"^x must be in \[0.0, 1.0\], got -1.0"):
        check_float(-1, "x", low=0.0, high=1.0)
    with pytest.raises(ValueError, match=r"^x must be <= 1.0, got 2.0"):
        check_float(2, "x", high=1.0)
    with pytest.raises(ValueError, match=r"^t must not be empty"):
        check_timesteps(np.zeros(0, np.int64), "t", batch=None, num_steps=5)
    assert check_timesteps(np.array([0, 4], np.uint8), "t", batch=None, num_steps=5) is not None


# --------------------------------------------------------------------------
# Diffusion checks: schedules, same-shaped arrays with their timesteps, labels
# --------------------------------------------------------------------------


def test_check_schedule_diffusion_arrays_and_labels():
    from ldm_np.schedules import make_schedule
    from ldm_np.validation import check_diffusion_arrays, check_labels, check_schedule

    s = make_schedule(10, 0.1, 0.9, "linear")
    assert check_schedule(s) is s
    for bad in (None, {"betas": 1}, [s]):
        with pytest.raises(TypeError, match="schedule must be a noise schedule"):
            check_schedule(bad)
    x = np.zeros((3, 2), np.float32)
    t = np.array([0, 4, 9])
    assert check_diffusion_arrays(s, t, x0=x, noise=x) is t
    assert check_diffusion_arrays(s, 9, x0=x) == 9
    with pytest.raises(ValueError, match="noise must have shape"):
        check_diffusion_arrays(s, t, x0=x, noise=np.zeros((3, 3), np.float32))
    with pytest.raises(TypeError, match="noise must have dtype float32"):
        check_diffusion_arrays(s, t, x0=x, noise=x.astype(np.float64))
    with pytest.raises(ValueError, match=r"t must lie in 0\.\.9"):
        check_diffusion_arrays(s, 10, x0=x)
    with pytest.raises(TypeError, match="schedule"):
        check_diffusion_arrays(None, t, x0=x)
    labels = np.array([0, 2])
    assert check_labels(labels, "labels", high=2, xp=np) is labels
    with pytest.raises(ValueError, match=r"labels must lie in 0..2, got 0..3"):
        check_labels(np.array([0, 3]), "labels", high=2, xp=np)
    with pytest.raises(TypeError, match="labels must be an integer array"):
        check_labels(np.array([0.0, 1.0]), "labels", high=2, xp=np)
    with pytest.raises(ValueError, match="non-empty"):
        check_labels(np.zeros((2, 1), np.int64), "labels", high=2, xp=np)


def test_check_seed_path_and_param_trees():
    from pathlib import Path

    from ldm_np.validation import check_param_trees, check_path, check_seed

    gen = np.random.default_rng(0)
    assert check_seed(np.int64(3)) == 3 and check_seed(gen) is gen
    for bad in (None, 1.5, "3", True):
        with pytest.raises(TypeError, match=r"^seed must be an int >= 0 or a numpy.random.Generator"):
            check_seed(bad)
    with pytest.raises(ValueError, match=r"^seed must be >= 0, got -1"):
        check_seed(-1)
    assert check_path("a.npy") == "a.npy" and check_path(Path("a.npy")) == Path("a.npy")
    with pytest.raises(TypeError, match=r"^path must be a file path"):
        check_path(3)
    params = {"dense": {"kernel": np.zeros((2, 2), F32), "bias": np.zeros(2, F32)}}
    check_param_trees(params=params, grads=params)
    with pytest.raises(TypeError, match=r"^grads must be a parameter tree"):
        check_param_trees(params=params, grads={"dense": [np.zeros(2, F32)]})
    with pytest.raises(ValueError, match=r"^grads has no entry for dense.bias of params"):
        check_param_trees(params=params, grads={"dense": {"kernel": np.zeros((2, 2), F32)}})
