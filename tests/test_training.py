"""The training steps and loop: gradients, loss decrease, EMA, schedules, divergence."""

from __future__ import annotations

import math
import os
import signal
import sys
import time

import numpy as np
import pytest
from conftest import perturb_params

from ldm_np import build_decoder, build_denoiser, build_encoder, make_schedule
from ldm_np.diffusion import diffusion_loss, q_sample
from ldm_np.gradcheck import directional_check
from ldm_np.module import iter_params
from ldm_np.optim import Adam
from ldm_np.training import (
    EMA,
    LoopState,
    TrainingDiverged,
    denoiser_step,
    learning_rate,
    run_loop,
    step_rng,
    vae_step,
)


def vae_loss(encoder, decoder, x, eps, beta, recon_std):
    """The VAE loss recomputed from scratch, independently of vae_step."""
    mu, log_var = encoder.forward(x)
    log_var = np.clip(log_var, -30, 20)
    z = mu + np.exp(0.5 * log_var) * eps
    x_hat = decoder.forward(z)
    recon = ((x - x_hat) ** 2).sum(axis=1).mean() / (2 * recon_std**2)
    kl = (-0.5 * (1 + log_var - mu**2 - np.exp(log_var)).sum(axis=1)).mean()
    return recon + beta * kl


def test_vae_step_gradient_matches_finite_differences():
    rng = np.random.default_rng(0)
    enc = build_encoder(5, 3, 6, dtype="float64")
    dec = build_decoder(5, 3, 6, dtype="float64")
    perturb_params(enc, rng, scale=0.1)
    perturb_params(dec, rng, scale=0.1)
    x = rng.standard_normal((4, 5))
    eps = rng.standard_normal((4, 3))
    # lr = 0: the step fills the gradients but leaves the weights as they are.
    losses = vae_step(enc, dec, Adam(lr=0.0), x, eps, beta=0.7, recon_std=0.5)
    assert float(losses["loss"]) == pytest.approx(vae_loss(enc, dec, x, eps, 0.7, 0.5), rel=1e-12)
    arrays = [p for m in (enc, dec) for _, _, p in iter_params(m.params)]
    grads = [g for m in (enc, dec) for _, _, g in iter_params(m.grads)]
    err = directional_check(lambda: vae_loss(enc, dec, x, eps, 0.7, 0.5), arrays, grads)
    assert err < 1e-7  # typically ~1e-10


def test_vae_log_var_clamp_stops_the_gradient():
    enc = build_encoder(3, 2, 4, dtype="float64")
    dec = build_decoder(3, 2, 4, dtype="float64")
    enc.params["enc_log_var"]["bias"][:] = 100.0  # every log_var far above the clamp at 20
    x = np.ones((2, 3))
    vae_step(enc, dec, Adam(lr=0.0), x, np.zeros((2, 2)), beta=1.0, recon_std=1.0)
    assert np.all(enc.grads["enc_log_var"]["kernel"] == 0.0)
    assert np.all(enc.grads["enc_log_var"]["bias"] == 0.0)
    assert np.any(enc.grads["enc_mu"]["kernel"] != 0.0)


def test_vae_training_reduces_the_loss():
    rng = np.random.default_rng(1)
    # Rank-2 data in 6 dimensions: a 3-d latent can represent it exactly.
    x_all = (rng.standard_normal((64, 2)) @ rng.standard_normal((2, 6))).astype("float32")
    enc, dec = build_encoder(6, 3, 32), build_decoder(6, 3, 32)
    opt = Adam(lr=3e-3)
    eps_all = np.random.default_rng(9).standard_normal((64, 3)).astype("float32")
    before = vae_loss(enc, dec, x_all, eps_all, 1.0, 0.5)  # all the data, fixed noise: no batch noise
    for n in range(300):
        r = step_rng(0, 1, n)
        eps = r.standard_normal((32, 3), dtype="float32")
        vae_step(enc, dec, opt, x_all[r.integers(0, 64, 32)], eps, recon_std=0.5)
    after = vae_loss(enc, dec, x_all, eps_all, 1.0, 0.5)
    assert after < 0.6 * before, (before, after)


def test_denoiser_training_reduces_the_loss_and_updates_ema():
    rng = np.random.default_rng(2)
    z_all = rng.standard_normal((8, 2)).astype("float32")  # 8 points: easy to learn
    schedule = make_schedule(100, beta_end=0.2)
    den = build_denoiser(2, 32, 2, 100)
    ema = EMA(den.params, decay=0.99)
    opt = Adam(lr=2e-3)

    def batch(n, size=128):
        r = step_rng(0, 2, n)
        return (
            z_all[r.integers(0, 8, size)],
            r.integers(0, 100, size),
            r.standard_normal((size, 2), dtype="float32"),
        )

    def held_out_loss():
        # One fixed batch of 4,096 rows, no update: the same question at every point, so the
        # comparison measures learning, not batch-to-batch noise.
        z0, t, noise = batch(10**6, 4096)
        out = den.forward(q_sample(schedule, z0, t, noise), t)
        return float(diffusion_loss(schedule, out, z0, noise, t)[0])

    losses = {0: held_out_loss()}
    for n in range(420):
        denoiser_step(den, opt, schedule, *batch(n), ema=ema)
        if n + 1 in (20, 100, 420):
            losses[n + 1] = held_out_loss()
    # Measured: 2.88, 0.29, 0.26, 0.20. A fast start, and still learning late.
    assert losses[20] < 0.2 * losses[0], losses
    assert losses[420] < 0.85 * losses[100], losses
    assert ema.num_updates == 420
    assert not np.array_equal(ema.shadow["noise_pred"]["kernel"], den.params["noise_pred"]["kernel"])


def test_ema_follows_its_formula():
    params = {"layer": {"w": np.array([0.0, 1.0])}}
    ema = EMA(params, decay=0.9)
    expected = params["layer"]["w"].copy()
    for n, value in enumerate([1.0, 3.0, -2.0, 5.0]):
        params["layer"]["w"][:] = value
        d = min(0.9, (1 + n) / (10 + n))
        expected = d * expected + (1 - d) * params["layer"]["w"]
        ema.update(params)
        np.testing.assert_allclose(ema.shadow["layer"]["w"], expected, rtol=1e-15)
    # The shadow is a copy, not a view of the live weights.
    assert ema.shadow["layer"]["w"] is not params["layer"]["w"]


def test_learning_rate_warms_up_then_decays_to_zero():
    assert learning_rate(0, 1.0, 10, 110) == pytest.approx(0.1)
    assert learning_rate(9, 1.0, 10, 110) == pytest.approx(1.0)
    assert learning_rate(10, 1.0, 10, 110) == pytest.approx(1.0)
    assert learning_rate(60, 1.0, 10, 110) == pytest.approx(0.5)
    assert learning_rate(110, 1.0, 10, 110) == pytest.approx(0.0, abs=1e-12)
    assert learning_rate(5, 1.0, 0, 10) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))


def test_step_rng_is_a_pure_function_of_seed_stage_step():
    a = step_rng(3, 1, 17).standard_normal(5)
    b = step_rng(3, 1, 17).standard_normal(5)
    c = step_rng(3, 2, 17).standard_normal(5)
    d = step_rng(3, 1, 18).standard_normal(5)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c) and not np.array_equal(a, d)


def test_run_loop_stops_on_a_non_finite_loss_with_the_step_named():
    def step(n):
        return {"loss": np.float32(np.inf if n == 7 else 1.0)}

    state = LoopState()
    with pytest.raises(TrainingDiverged, match="step 7"):
        run_loop(step, state, 20, name="test", log_every=1, progress=False)
    assert state.step == 8


def test_run_loop_logs_every_n_steps_and_checkpoints_on_schedule():
    saved = []
    state = run_loop(
        lambda n: {"loss": np.float32(n)},
        LoopState(),
        10,
        name="t",
        log_every=2,
        progress=False,
        on_checkpoint=lambda: saved.append(1),
        checkpoint_every=4,
    )
    assert [s for s, _ in state.history] == [1, 3, 5, 7, 9]
    assert len(saved) == 2  # after steps 4 and 8; the final save is the caller's


@pytest.fixture
def python_sigint_handler():
    """Python's own Ctrl-C handler during the test, as in an interactive run.

    A test process started in the background by a shell inherits "ignore SIGINT",
    and the loop rightly leaves such a setting alone.
    """
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.skipif(not hasattr(signal, "SIGINT") or sys.platform == "win32", reason="needs POSIX SIGINT")
def test_ctrl_c_in_the_middle_of_a_step_stops_after_that_step(python_sigint_handler):
    finished = []

    def step(n):
        if n == 3:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C arrives half way through step 3
            time.sleep(0.05)  # the rest of the step still runs
        finished.append(n)
        return {"loss": np.float32(n)}

    state = LoopState()
    with pytest.raises(KeyboardInterrupt):
        run_loop(step, state, 10, name="t", log_every=1, progress=False)
    assert finished == [0, 1, 2, 3]  # step 3 ran to its end, step 4 never started
    assert state.step == 4 and [s for s, _ in state.history] == [0, 1, 2, 3]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Python's handler is back


def test_a_program_with_its_own_sigint_handler_keeps_it():
    calls = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: calls.append(signum))
    try:

        def step(n):
            if n == 1:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.05)
            return {"loss": np.float32(n)}

        state = run_loop(step, LoopState(), 3, name="t", log_every=1, progress=False)
        assert state.step == 3 and calls == [signal.SIGINT]  # its handler ran; the loop went on
    finally:
        signal.signal(signal.SIGINT, previous)
