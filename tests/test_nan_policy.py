"""The NaN policy (README, "NaN and infinity"), both halves.

1. The entrances (model calls, the pipeline, the command line, the data
   loaders) refuse NaN and infinity with a ValueError naming the argument.
2. The low-level math (op pairs, models' forward/backward, losses, diffusion
   and sampler steps, guidance) propagates them: NaN in, NaN out, no error
   and no warning, as NumPy and PyTorch do.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import ldm_np
from ldm_np import layers, losses
from ldm_np.cli import main
from ldm_np.datasets import load_array, load_dataset
from ldm_np.diffusion import diffusion_loss, predict_x0, q_sample
from ldm_np.guidance import guide
from ldm_np.pipeline import LatentDiffusion
from ldm_np.samplers import ddim_step, ddpm_step, sample

IN, LATENT, T = 5, 3, 20
SCHEDULE = ldm_np.make_schedule(T, kind="cosine")
ENCODER, DECODER, DENOISER = ldm_np.build(IN, LATENT, 8, 1, T)


def with_nan(shape, where=0):
    x = np.full(shape, 0.5, dtype=np.float32)
    x.flat[where] = np.nan
    return x


# ----------------------------------------------------------------- 1. entrances refuse


TINY = {
    "latent_size": 2,
    "hidden_size": 4,
    "num_layers": 1,
    "num_steps": T,
    "vae_steps": 1,
    "denoiser_steps": 1,
}


@pytest.mark.parametrize(
    ("call", "argument"),
    [
        (lambda: ENCODER(with_nan((2, IN))), "x"),
        (lambda: DECODER(with_nan((2, LATENT)).clip(-1, 1)), "z"),
        (lambda: DENOISER(with_nan((2, LATENT)), np.array([1, 2])), "z_t"),
        (lambda: LatentDiffusion(input_size=IN, **TINY).fit_vae(with_nan((8, IN), 7), progress=False), "X"),
        (lambda: LatentDiffusion(input_size=IN, **TINY).encode(with_nan((2, IN))), "X"),
        (lambda: LatentDiffusion(input_size=IN, **TINY).decode(with_nan((2, 2))), "z"),
        (
            lambda: sample(
                DENOISER.forward, SCHEDULE, 2, num_inference_steps=5, x_T=with_nan((2, LATENT)), rng=None
            ),
            "x_T",
        ),
    ],
    ids=["encoder", "decoder", "denoiser", "fit_vae", "encode", "decode", "sample x_T"],
)
def test_entrances_refuse_nan(call, argument):
    with pytest.raises(ValueError, match=f"^{argument} contains NaN or infinity"):
        call()


@pytest.mark.filterwarnings("ignore::UserWarning")  # the CLI's default schedule warns before the data is read
def test_data_loaders_and_the_command_line_refuse_nan(tmp_path, capsys):
    path = tmp_path / "bad.npy"
    np.save(path, with_nan((10, 3), 4))
    for load in (load_array, load_dataset):
        with pytest.raises(ValueError, match="1 NaN or infinite"):
            load(path)
    assert main(["train", "--dataset", str(path), "--out", str(tmp_path / "run"), "--no-figures"]) == 2
    assert "NaN or infinite" in capsys.readouterr().err


# ----------------------------------------------------------------- 2. the math propagates


def nan_in(x, where=0):
    x = np.array(x, dtype=np.float32, copy=True)
    x.flat[where] = np.nan
    return x


def test_the_math_propagates_nan_without_error_or_warning():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((2, LATENT)).astype(np.float32)
    bad = nan_in(z)
    t = np.array([3, 7])
    dense = layers.init_dense(rng, LATENT, 4, np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a NumPy RuntimeWarning would fail here
        outputs = {
            "dense_forward": layers.dense_forward(bad, **dense)[0],
            "silu_forward": layers.silu_forward(bad)[0],
            "Encoder.forward": ENCODER.forward(nan_in(rng.random((2, IN))))[0],
            "Decoder.forward": DECODER.forward(bad),
            "Denoiser.forward": DENOISER.forward(bad, t),
            "Denoiser.backward": DENOISER.backward(bad),
            "kl_divergence_forward": losses.kl_divergence_forward(bad, z)[0],
            "mse_forward": losses.mse_forward(bad, z)[0],
            "q_sample": q_sample(SCHEDULE, bad, t, z),
            "diffusion_loss": diffusion_loss(SCHEDULE, bad, z, z, t)[0],
            "predict_x0": predict_x0(SCHEDULE, bad, t, z, "epsilon"),
            "ddpm_step": ddpm_step(SCHEDULE, bad, t, z, z)[0],
            "ddim_step": ddim_step(SCHEDULE, bad, 5, 2, z, eta=0.5, noise=z)[0],
            "guide": guide(bad, z, 3.0),
        }
    for name, out in outputs.items():
        assert np.isnan(np.asarray(out)).any(), f"{name} did not propagate the NaN"
