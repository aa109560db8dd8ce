"""Tests for ldm_np.anomaly: off and free by default, and when on, the first non-finite layer output is named."""

from __future__ import annotations

import numpy as np
import pytest

import ldm_np
from ldm_np import anomaly
from ldm_np.anomaly import AnomalyError, check, detect_anomaly


class Unreadable:
    """An 'array' that fails if anything reads it: proves that the detector, off, does not look."""

    def __getattr__(self, name):
        raise AssertionError(f"the detector read .{name} while off")


def test_off_by_default_and_free():
    assert not anomaly.is_enabled()
    x = np.array([np.nan, 1.0])
    assert check(x, "Denoiser", "denoiser_block_2_up", "forward") is x  # NaN passes: off
    u = Unreadable()
    assert check(u, "Denoiser", "noise_pred", "backward") is u  # not even read


def test_on_raises_at_the_first_non_finite_value_naming_module_layer_pass_and_step():
    with detect_anomaly():
        assert anomaly.is_enabled()
        anomaly.set_step(37)
        check(np.ones((2, 3), np.float32), "Denoiser", "denoiser_block_1_up", "forward")  # finite: passes
        x = np.ones((2, 3), np.float32)
        x[1, 2] = np.nan
        x[0, 0] = np.inf
        with pytest.raises(AnomalyError) as info:
            check(x, "Denoiser", "denoiser_block_2_up", "forward")
    msg = str(info.value)
    for part in (
        "forward pass of Denoiser",
        "layer denoiser_block_2_up",
        "training step 37",
        "1 NaN",
        "1 infinite",
    ):
        assert part in msg, (part, msg)
    assert not anomaly.is_enabled() and anomaly._State.step is None  # restored on leaving


def test_an_explicit_step_and_the_backward_pass():
    with (
        detect_anomaly(),
        pytest.raises(AnomalyError, match=r"backward pass of Encoder .* enc_mu at training step 3"),
    ):
        check(np.array([-np.inf]), "Encoder", "enc_mu", "backward", step=3)


def test_the_step_is_recorded_only_while_on():
    anomaly.set_step(5)  # off: ignored, so no stale step reaches a later block
    with detect_anomaly():
        assert anomaly._State.step is None
        anomaly.set_step(6)
        with pytest.raises(AnomalyError, match="training step 6"):
            check(np.array([np.nan]), "Decoder", "dec_output", "forward")
    assert anomaly._State.step is None


def test_restored_after_an_exception_and_when_nested():
    with pytest.raises(KeyError), detect_anomaly():
        raise KeyError("x")
    assert not anomaly.is_enabled()
    with detect_anomaly():
        with detect_anomaly():
            pass
        assert anomaly.is_enabled()  # the inner block does not switch off the outer one
    assert not anomaly.is_enabled()


def test_bad_arguments_are_refused_while_on():
    x = np.ones(2)
    with detect_anomaly():
        with pytest.raises(ValueError, match="pass_"):
            check(x, "Decoder", "dec_out", "sideways")
        with pytest.raises(TypeError, match="module and layer"):
            check(x, 3, "dec_out", "forward")
        with pytest.raises(TypeError, match="step"):
            check(x, "Decoder", "dec_out", "forward", step=1.5)
        with pytest.raises(TypeError, match="step"):
            anomaly.set_step("7")


def test_exported_from_the_package():
    assert ldm_np.detect_anomaly is detect_anomaly


# --------------------------------------------------------------------------
# Wired into the models
# --------------------------------------------------------------------------


def test_denoiser_names_the_block_layer_where_the_nan_is_born():
    den = ldm_np.build_denoiser(latent_size=3, hidden_size=8, num_layers=3, num_steps=10)
    z, t = np.ones((2, 3), np.float32), np.array([1, 2])
    den.params["denoiser_block_2_up"]["kernel"][0, 0] = np.nan
    assert np.isnan(den(z, t)).all()  # off: the NaN propagates silently (the math's half of the policy)
    with (
        detect_anomaly(),
        pytest.raises(AnomalyError, match=r"forward pass of Denoiser .* denoiser_block_2_up"),
    ):
        den(z, t)
    den.params["denoiser_block_2_up"]["kernel"][0, 0] = 0.0
    den(z, t)
    dout = np.full((2, 3), np.nan, np.float32)
    with detect_anomaly(), pytest.raises(AnomalyError, match=r"backward pass of Denoiser .* noise_pred"):
        den.backward(dout)


@pytest.mark.parametrize("which", ["encoder", "decoder"])
def test_vae_layers_are_checked_forward_and_backward(which):
    enc, dec = ldm_np.build_encoder(5, 2, 4), ldm_np.build_decoder(5, 2, 4)
    model, x, first, last = (
        (enc, np.ones((3, 5), np.float32), "enc_dense_1", "enc_dense_0")
        if which == "encoder"
        else (dec, np.ones((3, 2), np.float32), "dec_dense_1", "dec_output")
    )
    model.params[first]["bias"][0] = np.inf
    with (
        detect_anomaly(),
        pytest.raises(AnomalyError, match=f"forward pass of {type(model).__name__} .* {first}"),
    ):
        model(x)
    model.params[first]["bias"][0] = 0.0
    out = model(x)
    grads = [np.full(o.shape, np.nan, np.float32) for o in (out if isinstance(out, tuple) else (out,))]
    with detect_anomaly(), pytest.raises(AnomalyError, match=f"backward pass of {type(model).__name__}"):
        model.backward(*grads)
    model(x)
    model.backward(*[np.ones_like(g) for g in grads])  # finite: passes without the detector too
    assert last in model.grads


def test_training_divergence_points_to_the_detector_and_the_detector_names_the_step():
    from ldm_np.pipeline import LatentDiffusion
    from ldm_np.training import TrainingDiverged

    X = np.random.default_rng(0).random((64, 6)).astype(np.float32)
    opts = {
        "input_size": 6,
        "latent_size": 2,
        "hidden_size": 8,
        "vae_steps": 20,
        "warmup_steps": 0,
        "vae_lr": 1e4,
    }
    with np.errstate(all="ignore"), pytest.raises(TrainingDiverged, match="detect_anomaly"):
        LatentDiffusion(**opts).fit_vae(X, progress=False, log_every=2)
    with (
        np.errstate(all="ignore"),
        detect_anomaly(),
        pytest.raises(AnomalyError, match=r"at training step \d+"),
    ):
        LatentDiffusion(**opts).fit_vae(X, progress=False, log_every=2)
