"""A checkpoint written by ldm_np 0.1.0 (the version with CPU data parallelism) still loads and samples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ldm_np.pipeline import LatentDiffusion

DATA = Path(__file__).resolve().parent / "data"


def test_a_0_1_0_checkpoint_loads_and_samples_what_it_sampled_then():
    # Written by ldm_np 0.1.0: input 6, latent 2, hidden 8, one block, 10 diffusion steps,
    # 4 training steps per stage; its config holds the retired "workers" field. The
    # samples beside it were drawn by 0.1.0 with seed 0 and 5 DDIM steps.
    with pytest.warns(UserWarning, match="keeps sqrt"):  # its 10-step linear schedule, flagged at build
        model = LatentDiffusion.load(DATA / "ldm_np_0.1.0.safetensors")
    assert not hasattr(model.config, "workers")
    assert (model.config.input_size, model.config.latent_size, model.config.hidden_size) == (6, 2, 8)
    assert model.vae_state.step == 4 and model.denoiser_state.step == 4
    x = model.sample(3, seed=0, num_inference_steps=5)
    # The same weights and noise; the textbook SiLU and LayerNorm round differently in float32.
    np.testing.assert_allclose(x, np.load(DATA / "ldm_np_0.1.0_samples.npy"), rtol=1e-4, atol=1e-5)
