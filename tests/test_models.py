"""The three models: whole-model gradient checks, parameter names, counts and initialisation,
seeds, dtypes, and the public builder helpers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import all_params, perturb_params
from hypothesis import given
from hypothesis import strategies as st

import ldm_np
from ldm_np.gradcheck import directional_check
from ldm_np.models import (
    build,
    build_decoder,
    build_denoiser,
    build_encoder,
    output_size,
    param_count,
    recommended_defaults,
)

TOL = 1e-6  # a correct model gradient in float64 lands near 1e-9 or below


def small_models(dtype="float64"):
    """One of each model kind, small enough for element-wise gradient checks."""
    return {
        "encoder": build_encoder(5, 3, 4, seed=1, dtype=dtype),
        "decoder": build_decoder(5, 3, 4, seed=2, dtype=dtype),
        "denoiser": build_denoiser(3, 5, 2, 50, seed=3, dtype=dtype),  # odd hidden: a zero embedding column
        "denoiser_cond_fraction": build_denoiser(
            3, 4, 2, 50, time_input="fraction", num_classes=3, seed=4, dtype=dtype
        ),
    }


def inputs_for(name, model, rng, batch=6):
    """Valid inputs for ``model``: the class-conditional batch repeats labels and includes the null label."""
    if name in ("encoder", "decoder"):
        width = model.input_size if name == "encoder" else model.latent_size
        return (rng.standard_normal((batch, width)).astype(model.dtype),)
    z = rng.standard_normal((batch, model.latent_size)).astype(model.dtype)
    t = rng.integers(0, model.num_steps, size=batch)
    if model.num_classes is None:
        return z, t
    labels = np.array([0, 0, 2, 3, 1, 3][:batch])  # 3 is the null label
    return z, t, labels


# --------------------------------------------------------------------------
# Whole-model gradient checks
# --------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(small_models()))
def test_check_module_every_parameter_and_the_input(name):
    rng = np.random.default_rng(0)
    model = perturb_params(small_models()[name], rng)
    report = ldm_np.check_module(model, inputs_for(name, model, rng))
    names = [row.name for row in report]
    assert names == [f"{layer}.{p}" for layer, p, _ in all_params(model)] + ["input 0"]
    assert report.max_error < TOL, f"\n{report}"
    assert report.ok


def test_check_module_conditional_denoiser_with_null_labels():
    """labels=None means "the null label" for every row: checked the same way."""
    rng = np.random.default_rng(1)
    model = perturb_params(small_models()["denoiser_cond_fraction"], rng)
    z, t, _ = inputs_for("denoiser_cond_fraction", model, rng)
    report = ldm_np.check_module(model, (z, t))
    assert report.max_error < TOL, f"\n{report}"
    # Only the null row of the table is used, so the other rows get exactly zero gradient.
    table_grad = model.grads["label_embed"]["table"]
    assert not table_grad[:3].any() and table_grad[3].any()


def test_denoiser_without_blocks_checks_too():
    rng = np.random.default_rng(2)
    model = perturb_params(build_denoiser(2, 3, 0, 10, seed=0, dtype="float64"), rng)
    report = ldm_np.check_module(model, inputs_for("denoiser", model, rng))
    assert report.max_error < TOL, f"\n{report}"


def model_loss_and_grads(model, inputs, dout):
    """Loss sum(out * dout) and the backward's gradients, for a directional check."""
    outs = model(*inputs)
    outs = outs if isinstance(outs, tuple) else (outs,)
    dx = model.backward(*dout)

    def loss():
        res = model.forward(*inputs)
        res = res if isinstance(res, tuple) else (res,)
        return sum(float((o * d).sum()) for o, d in zip(res, dout, strict=True))

    arrays = [p for _, _, p in all_params(model)] + [inputs[0]]
    grads = [model.grads[layer][name].copy() for layer, name, _ in all_params(model)] + [dx]
    return loss, arrays, grads


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_directional_check_medium_denoiser(seed):
    """~55k parameters: one random direction through every parameter and the input (two forwards)."""
    rng = np.random.default_rng(seed)
    model = perturb_params(
        build_denoiser(16, 64, 3, 1000, num_classes=10, seed=seed, dtype="float64"), rng, 0.05
    )
    z = rng.standard_normal((32, 16))
    t, labels = rng.integers(0, 1000, size=32), rng.integers(0, 11, size=32)
    dout = (rng.standard_normal((32, 16)),)
    loss, arrays, grads = model_loss_and_grads(model, (z, t, labels), dout)
    assert model.num_params > 50_000
    assert directional_check(loss, arrays, grads, seed=seed) < TOL


@pytest.mark.parametrize("kind", ["encoder", "decoder"])
def test_directional_check_medium_vae(kind):
    rng = np.random.default_rng(3)
    builder = build_encoder if kind == "encoder" else build_decoder
    model = perturb_params(builder(64, 8, 128, seed=0, dtype="float64"), rng, 0.05)
    x = rng.standard_normal((16, 64 if kind == "encoder" else 8))
    out = model(x)
    dout = tuple(rng.standard_normal(o.shape) for o in (out if isinstance(out, tuple) else (out,)))
    loss, arrays, grads = model_loss_and_grads(model, (x,), dout)
    assert directional_check(loss, arrays, grads) < TOL


# --------------------------------------------------------------------------
# Names, shapes, counts
# --------------------------------------------------------------------------


def dense(n_in, n_out):
    return {"kernel": (n_in, n_out), "bias": (n_out,)}


def expected_shapes(i, l_, h, n_layers, num_classes=None):
    """The seed design's layers, written out independently of the library."""
    encoder = {
        "enc_dense_0": dense(i, h),
        "enc_dense_1": dense(h, h),
        "enc_mu": dense(h, l_),
        "enc_log_var": dense(h, l_),
    }
    decoder = {"dec_dense_0": dense(l_, h), "dec_dense_1": dense(h, h), "dec_output": dense(h, i)}
    denoiser = {"time_mlp_1": dense(h, h), "z_proj": dense(l_, h)}
    for k in range(1, n_layers + 1):
        denoiser[f"denoiser_block_{k}_norm"] = {"gamma": (h,), "beta": (h,)}
        denoiser[f"denoiser_block_{k}_up"] = dense(h, 4 * h)
        denoiser[f"denoiser_block_{k}_down"] = dense(4 * h, h)
    denoiser["noise_pred"] = dense(h, l_)
    if num_classes is not None:
        denoiser["label_embed"] = {"table": (num_classes + 1, h)}
    return encoder, decoder, denoiser


def shapes_of(tree):
    return {layer: {name: tuple(v.shape) for name, v in group.items()} for layer, group in tree.items()}


sizes = st.fixed_dictionaries(
    {
        "input_size": st.integers(1, 9),
        "latent_size": st.integers(1, 6),
        "hidden_size": st.integers(1, 9),
        "num_layers": st.integers(0, 3),
    }
)


@given(kw=sizes)
def test_names_shapes_and_param_count(kw):
    models = build(**kw, dtype="float64")
    expected = expected_shapes(kw["input_size"], kw["latent_size"], kw["hidden_size"], kw["num_layers"])
    for model, shapes in zip(models, expected, strict=True):
        assert shapes_of(model.params) == shapes
        assert list(model.params) == list(shapes)  # the seed's order, too
    total = sum(int(v.size) for m in models for _, _, v in all_params(m))
    assert param_count(**kw) == total == sum(m.num_params for m in models)


def test_default_param_count_is_the_seeds():
    assert param_count() == 2_490_751
    assert param_count(**recommended_defaults()) == 2_490_751
    models = build(287)
    assert sum(m.num_params for m in models) == 2_490_751


def test_conditional_denoiser_adds_a_label_table_with_a_null_row():
    model = build_denoiser(4, 6, 1, 20, num_classes=5, dtype="float64")
    assert shapes_of(model.params) == expected_shapes(1, 4, 6, 1, num_classes=5)[2]
    assert model.null_label == 5
    assert build_denoiser(4, 6, 1, 20).null_label is None


@pytest.mark.parametrize("name", list(small_models()))
def test_grads_mirror_params(name):
    model = small_models()[name]
    assert shapes_of(model.grads) == shapes_of(model.params)
    for layer, p, value in all_params(model):
        grad = model.grads[layer][p]
        assert grad.dtype == value.dtype and not grad.any() and grad is not value


# --------------------------------------------------------------------------
# Initialisation and seeds
# --------------------------------------------------------------------------


def test_initialisation_glorot_kernels_zero_biases_unit_gammas():
    for model in (
        *build(40, 8, 32, 2, dtype="float64"),
        build_denoiser(8, 32, 1, num_classes=4, dtype="float64"),
    ):
        for layer, group in model.params.items():
            if "kernel" in group:
                k = group["kernel"]
                limit = math.sqrt(6.0 / (k.shape[0] + k.shape[1]))
                assert np.abs(k).max() <= limit, layer
                # U(-a, a) with >= 256 draws: the extremes come close to a, the mean near 0.
                assert np.abs(k).max() > 0.9 * limit, layer
                assert abs(k.mean()) < 5 * limit / math.sqrt(3 * k.size), layer  # 5 standard errors
                np.testing.assert_array_equal(group["bias"], 0.0)
            elif "gamma" in group:
                np.testing.assert_array_equal(group["gamma"], 1.0)
                np.testing.assert_array_equal(group["beta"], 0.0)
            else:
                table = group["table"]  # N(0, 1 / hidden)
                assert layer == "label_embed"
                assert 0.75 / math.sqrt(32) < table.std() < 1.25 / math.sqrt(32)


def params_equal(a, b):
    return all(
        np.array_equal(x, y) for (_, _, x), (_, _, y) in zip(all_params(a), all_params(b), strict=True)
    )


def test_same_seed_same_params_different_seed_different():
    for builder, args in (
        (build_encoder, (6, 3, 5)),
        (build_decoder, (6, 3, 5)),
        (build_denoiser, (3, 5, 2)),
    ):
        assert params_equal(builder(*args, seed=7), builder(*args, seed=7))
        a, b = builder(*args, seed=7), builder(*args, seed=8)
        assert not any(
            np.array_equal(a.params[k]["kernel"], b.params[k]["kernel"])
            for k in a.params
            if "kernel" in a.params[k]
        )


def test_build_seeds_its_three_models_from_seed_seed_plus_1_and_plus_2():
    encoder, decoder, denoiser = build(6, 3, 5, 2, seed=10)
    assert params_equal(encoder, build_encoder(6, 3, 5, seed=10))
    assert params_equal(decoder, build_decoder(6, 3, 5, seed=11))
    assert params_equal(denoiser, build_denoiser(3, 5, 2, seed=12))


def test_float32_and_float64_builds_start_from_the_same_numbers():
    a, b = build_denoiser(3, 5, 2, seed=0, dtype="float32"), build_denoiser(3, 5, 2, seed=0, dtype="float64")
    for (_, _, x), (_, _, y) in zip(all_params(a), all_params(b), strict=True):
        np.testing.assert_array_equal(x, y.astype(np.float32))


# --------------------------------------------------------------------------
# dtypes survive forward and backward
# --------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", list(small_models()))
def test_dtype_survives_forward_and_backward(name, dtype):
    rng = np.random.default_rng(0)
    model = perturb_params(small_models(dtype)[name], rng)
    inputs = inputs_for(name, model, rng)
    outs = model(*inputs)
    outs = outs if isinstance(outs, tuple) else (outs,)
    assert all(o.dtype == np.dtype(dtype) for o in outs)
    dx = model.backward(*(np.ones_like(o) for o in outs))
    assert dx.dtype == np.dtype(dtype) and dx.shape == inputs[0].shape
    for layer, p, value in all_params(model):
        assert value.dtype == np.dtype(dtype)
        assert model.grads[layer][p].dtype == np.dtype(dtype), f"{layer}.{p}"
        assert model.grads[layer][p].shape == value.shape


# --------------------------------------------------------------------------
# Behaviour
# --------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(small_models()))
def test_backward_before_forward_raises(name):
    model = small_models()[name]
    dout = np.zeros((2, 3))
    with pytest.raises(RuntimeError, match="before a forward"):
        model.backward(*((dout, dout) if name == "encoder" else (dout,)))


def test_conditional_null_labels_equal_labels_none():
    rng = np.random.default_rng(0)
    model = perturb_params(small_models()["denoiser_cond_fraction"], rng)
    z, t, _ = inputs_for("denoiser_cond_fraction", model, rng)
    null = np.full(z.shape[0], model.null_label)
    np.testing.assert_array_equal(model(z, t), model(z, t, null))
    assert not np.array_equal(model(z, t), model(z, t, np.zeros_like(null)))


def test_denoiser_output_depends_on_t():
    rng = np.random.default_rng(0)
    model = perturb_params(build_denoiser(3, 8, 1, 100, dtype="float64"), rng)
    z = np.tile(rng.standard_normal((1, 3)), (2, 1))
    out = model(z, np.array([0, 99]))
    assert not np.allclose(out[0], out[1])


def test_output_size_and_recommended_defaults():
    for latent in (1, 7, 32):  # the denoiser predicts a vector of the latent's size, whatever it is
        den = build_denoiser(latent, 8, 1, 10)
        assert (
            output_size(latent) == latent == den(np.zeros((2, latent), np.float32), np.array([0, 9])).shape[1]
        )
    assert output_size(**recommended_defaults()) == 32
    defaults = recommended_defaults()
    assert defaults == {
        "input_size": 287,
        "latent_size": 32,
        "hidden_size": 256,
        "num_layers": 4,
        "num_steps": 1000,
    }
    defaults["latent_size"] = 1
    assert recommended_defaults()["latent_size"] == 32  # a copy each time
    denoiser = build(**recommended_defaults(), dtype="float32")[2]
    assert denoiser(np.zeros((2, 32), np.float32), np.array([0, 999])).shape == (2, output_size(32))


def test_repr_names_the_configuration():
    text = repr(build_denoiser(3, 5, 2, 50, num_classes=4))
    for part in (
        "Denoiser(",
        "latent_size=3",
        "hidden_size=5",
        "num_layers=2",
        "num_classes=4",
        "float32",
        "'cpu'",
    ):
        assert part in text
    assert f"params={build_denoiser(3, 5, 2, 50, num_classes=4).num_params:,}" in text
