"""LatentDiffusion end to end on tiny configurations: training, latents, checkpoints, resume."""

from __future__ import annotations

import numpy as np
import pytest

import ldm_np.pipeline as pipeline_module
from ldm_np.datasets import load_digits
from ldm_np.diffusion import diffusion_loss, q_sample
from ldm_np.losses import kl_per_dimension
from ldm_np.module import iter_params
from ldm_np.pipeline import LatentDiffusion, LDMConfig

TINY = {
    "latent_size": 4,
    "hidden_size": 32,
    "num_layers": 1,
    "num_steps": 100,
    "beta_end": 0.2,
    "vae_steps": 60,
    "vae_batch_size": 32,
    "denoiser_steps": 60,
    "denoiser_batch_size": 32,
    "warmup_steps": 10,
}


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits()
    return X[:300], y[:300]


@pytest.fixture(scope="module")
def trained(digits):
    X, _ = digits
    model = LatentDiffusion(input_size=64, **TINY)
    model.fit(X, progress=False, log_every=5)
    return model


def snapshot(model):
    return {
        f"{which}.{layer}.{name}": p.copy()
        for which in ("encoder", "decoder", "denoiser")
        for layer, name, p in iter_params(getattr(model, which).params)
    }


def test_both_stages_learned(trained, digits):
    # Measured on fixed data against the same model at its initial weights, not on a few logged
    # batch losses. 60 VAE steps move the reconstructions only a little (0.488 against 0.504, in
    # standardised units), deterministically; 60 denoiser steps cut its loss about 7x.
    fresh = LatentDiffusion(input_size=64, **TINY)
    Xs = trained.standardize(digits[0])

    def recon(m):
        return float(((m.decoder.forward(m.encoder.forward(Xs)[0]) - Xs) ** 2).mean())

    assert recon(trained) < 0.99 * recon(fresh)
    z0 = trained.encode(digits[0])  # [300, 4]
    r = np.random.default_rng(0)
    t, noise = r.integers(0, 100, 300), r.standard_normal(z0.shape).astype(np.float32)
    z_t = q_sample(trained.schedule, z0, t, noise)

    def loss(m):
        return float(diffusion_loss(trained.schedule, m.denoiser.forward(z_t, t), z0, noise, t)[0])

    assert loss(trained) < 0.3 * loss(fresh)


def test_scale_factor_makes_the_latents_unit_variance(trained, digits):
    z = trained.encode(digits[0])
    assert z.shape == (300, 4) and z.dtype == np.float32
    assert float(z.std()) == pytest.approx(1.0, abs=1e-4)


def test_stage_two_leaves_the_vae_frozen(digits):
    X, _ = digits
    model = LatentDiffusion(input_size=64, **TINY)
    model.fit_vae(X, progress=False)
    before = snapshot(model)
    model.fit_denoiser(X, progress=False)
    after = snapshot(model)
    for name in before:
        same = np.array_equal(before[name], after[name])
        assert same == (not name.startswith("denoiser")), name


def test_samples_are_in_the_data_units_and_range(trained):
    x = trained.sample(20, seed=1)
    assert x.shape == (20, 64) and x.dtype == np.float32
    assert x.min() >= 0.0 and x.max() <= 1.0
    np.testing.assert_array_equal(x, trained.sample(20, seed=1))  # DDIM, eta = 0: deterministic
    assert not np.array_equal(x, trained.sample(20, seed=2))


def test_save_load_gives_identical_samples(trained, tmp_path):
    path = trained.save(tmp_path / "m.safetensors")
    loaded = LatentDiffusion.load(path)
    assert loaded.config == trained.config
    assert loaded.scale_factor == trained.scale_factor
    for sampler in ("ddim", "ddpm"):
        np.testing.assert_array_equal(
            loaded.sample(8, seed=3, sampler=sampler), trained.sample(8, seed=3, sampler=sampler)
        )
    np.testing.assert_array_equal(
        loaded.sample(8, seed=3, use_ema=False), trained.sample(8, seed=3, use_ema=False)
    )


def interrupt_at(monkeypatch, name, at):
    """Make the ``at``-th call of pipeline_module.<name> raise KeyboardInterrupt (Ctrl-C)."""
    real = getattr(pipeline_module, name)
    calls = {"n": 0}

    def wrapped(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == at:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline_module, name, wrapped)


@pytest.mark.parametrize("stage_fn", ["vae_step", "denoiser_step"])
def test_interrupted_and_resumed_run_is_bit_identical(digits, tmp_path, monkeypatch, stage_fn):
    X, _ = digits
    reference = LatentDiffusion(input_size=64, **TINY)
    reference.fit(X, progress=False)

    ckpt = tmp_path / "run.safetensors"
    model = LatentDiffusion(input_size=64, **TINY)
    interrupt_at(monkeypatch, stage_fn, 25)
    with pytest.raises(KeyboardInterrupt):
        model.fit(X, progress=False, checkpoint=ckpt)
    monkeypatch.undo()

    resumed = LatentDiffusion.load(ckpt)
    stage = resumed.vae_state if stage_fn == "vae_step" else resumed.denoiser_state
    assert stage.step == 24  # every completed step was kept
    resumed.fit(X, progress=False)

    ref, got = snapshot(reference), snapshot(resumed)
    for name in ref:
        np.testing.assert_array_equal(got[name], ref[name], err_msg=name)
    for layer, name, p in iter_params(reference.ema.shadow):
        np.testing.assert_array_equal(resumed.ema.shadow[layer][name], p)
    assert resumed.denoiser_state.history == reference.denoiser_state.history


def test_same_seed_same_weights_different_seed_different(digits):
    X, _ = digits
    cfg = dict(TINY, vae_steps=10, denoiser_steps=10)
    a = snapshot(LatentDiffusion(input_size=64, **cfg).fit(X, progress=False))
    b = snapshot(LatentDiffusion(input_size=64, **cfg).fit(X, progress=False))
    c = snapshot(LatentDiffusion(input_size=64, seed=1, **cfg).fit(X, progress=False))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not all(np.array_equal(a[k], c[k]) for k in a)


def test_active_units_are_reported(trained, digits):
    # kl_per_dim is the KL of each latent dimension, averaged over the training data ...
    mu, log_var = trained.encoder.forward(trained.standardize(digits[0]))
    np.testing.assert_allclose(trained.kl_per_dim, kl_per_dimension(mu, log_var), rtol=1e-5)
    # ... and active_units counts the dimensions above the threshold: here all 4 (KL 0.03 to 0.3 nats).
    assert (
        trained.active_units
        == sum(k > pipeline_module.ACTIVE_UNIT_THRESHOLD for k in trained.kl_per_dim)
        == 4
    )


def test_posterior_collapse_warns(digits):
    X, _ = digits
    model = LatentDiffusion(input_size=64, **dict(TINY, vae_steps=80, kl_weight=1e4))
    with pytest.warns(UserWarning, match="posterior collapse"):
        model.fit_vae(X, progress=False)


@pytest.mark.parametrize(
    ("X", "error", "match"),
    [
        (np.zeros((10, 64), dtype=np.int64), TypeError, "floating-point"),
        (np.zeros((10, 63), dtype=np.float32), ValueError, r"X must have shape \[batch, 64\]"),
        (np.full((10, 64), np.nan, dtype=np.float32), ValueError, "NaN"),
        (np.zeros((1, 64), dtype=np.float32), ValueError, "at least 2 rows"),
        (np.zeros((0, 64), dtype=np.float32), ValueError, "empty"),
        ([[1.0, 2.0]], ValueError, "shape"),
    ],
)
def test_bad_training_data_is_refused_with_a_clear_message(X, error, match):
    model = LatentDiffusion(input_size=64, **TINY)
    with pytest.raises(error, match=match):
        model.fit_vae(X, progress=False)


def test_float64_data_is_cast_to_the_model_dtype(digits):
    model = LatentDiffusion(input_size=64, **dict(TINY, vae_steps=5, denoiser_steps=5))
    model.fit(digits[0].astype(np.float64), progress=False)
    assert model.encode(digits[0][:3].astype(np.float64)).dtype == np.float32


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("latent_size", 0, ValueError),
        ("hidden_size", 2.5, TypeError),
        ("schedule", "quadratic", ValueError),
        ("prediction_type", "noise", ValueError),
        ("kl_weight", -1.0, ValueError),
        ("p_uncond", 1.5, ValueError),
        ("latent_noise", -0.1, ValueError),
        ("latent_noise", float("nan"), ValueError),
        ("dtype", "int32", TypeError),
    ],
)
def test_bad_config_names_the_field(field, value, error):
    with pytest.raises(error, match=field):
        LDMConfig(input_size=64, **{field: value}).validate()


def test_labels_on_an_unconditional_model_are_refused(trained):
    with pytest.raises(ValueError, match="unconditional"):
        trained.sample(4, labels=np.zeros(4, dtype=np.int64))


def test_a_sigmoid_decoder_sees_the_data_scaled_to_zero_one_and_keeps_it_through_a_save(digits, tmp_path):
    X = digits[0] * 16.0  # the raw grey levels 0..16: the scaling must not assume [0, 1]
    model = LatentDiffusion(input_size=64, output_activation="sigmoid", **{**TINY, "denoiser_steps": 5})
    model.fit(X, progress=False)
    Xs = model.standardize(X)
    assert float(Xs.min()) == 0.0 and float(Xs.max()) == 1.0  # min and range: the sigmoid's [0, 1]
    np.testing.assert_allclose(model.unstandardize(Xs), X, atol=1e-5)
    assert model.decoder.output_activation == "sigmoid"
    x = model.sample(16, seed=0)
    assert (x >= 0.0).all() and (x <= 16.0).all()
    loaded = LatentDiffusion.load(model.save(tmp_path / "m.safetensors"))
    assert loaded.config.output_activation == "sigmoid" and loaded.decoder.output_activation == "sigmoid"
    np.testing.assert_array_equal(loaded.sample(16, seed=0), x)


def test_latent_noise_trains_the_denoiser_on_jittered_latents(digits, monkeypatch):
    """Stage 2 sees z0 = s mu + c eps': the same rows as without it, moved by noise of sd c."""
    X, _ = digits
    seen: dict[float, list[np.ndarray]] = {0.0: [], 0.3: []}
    step = pipeline_module.denoiser_step

    for c in seen:

        def record(denoiser, optimizer, schedule, z0, t, noise, c=c, **kw):
            seen[c].append(z0.copy())
            return step(denoiser, optimizer, schedule, z0, t, noise, **kw)

        monkeypatch.setattr(pipeline_module, "denoiser_step", record)
        LatentDiffusion(input_size=64, **{**TINY, "denoiser_steps": 20}, latent_noise=c).fit(
            X, progress=False
        )
    # eps' is drawn after the batch's rows, t and noise: the same rows at every step, moved by c eps'.
    gaps = np.concatenate(seen[0.3]) - np.concatenate(seen[0.0])  # [20 * batch, latent]
    assert abs(gaps.std() - 0.3) < 0.02 and abs(gaps.mean()) < 0.02
