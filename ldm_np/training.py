"""The two training stages, one step at a time.

Stage 1 trains the VAE. Stage 2 freezes it and trains the denoiser on the
scaled latents z_0 = s * mu(x). Each stage is a plain step function (what a
tutorial steps through) and a loop around it (what ``LatentDiffusion.fit``
runs): learning-rate warm-up and cosine decay, gradient clipping, an EMA of
the denoiser's weights, a progress bar, and losses brought to the host only
every ``log_every`` steps, because on a GPU reading a value waits for the
device.

All randomness of step ``n`` comes from a generator seeded with
``(seed, stage, n)``, so a run resumed from a checkpoint at step n draws the
same batches and noise as one that never stopped.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from . import anomaly
from .backend import get_array_module, to_numpy
from .diffusion import diffusion_loss, q_sample
from .losses import kl_divergence_backward, kl_divergence_forward, mse_backward, mse_forward
from .module import ParamTree, iter_params
from .optim import Adam, clip_grad_norm
from .vae import (
    Decoder,
    Encoder,
    clamp_log_var_backward,
    clamp_log_var_forward,
    reparameterize_backward,
    reparameterize_forward,
)

VAE_STAGE, DENOISER_STAGE = 1, 2


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite; the message names the step and likely causes."""


def step_rng(seed: int, stage: int, step: int, xp: Any = np) -> Any:
    """The generator for one training step: a pure function of (seed, stage, step)."""
    if xp is np:
        return np.random.default_rng([seed, stage, step])
    # CuPy seeds from one integer: fold the three into it.
    return xp.random.default_rng(int(np.random.SeedSequence([seed, stage, step]).generate_state(1)[0]))


def learning_rate(step: int, base_lr: float, warmup: int, total: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to 0 at ``total``.

    lr(n) = base * (n + 1) / warmup                        for n < warmup
    lr(n) = base * 0.5 * (1 + cos(pi * (n - warmup) / (total - warmup)))   after
    """
    if step < warmup:
        return base_lr * (step + 1) / warmup
    span = max(total - warmup, 1)
    progress = min((step - warmup) / span, 1.0)
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * progress))


# --------------------------------------------------------------------------
# Exponential moving average of weights
# --------------------------------------------------------------------------


class EMA:
    """Exponential moving average of parameters, with warm-up.

    After update n (n = 0, 1, ...):  shadow = d * shadow + (1 - d) * params,
    d = min(decay, (1 + n) / (10 + n)). The warm-up keeps the early average
    from being dominated by the random initial weights.
    """

    def __init__(self, params: ParamTree, decay: float = 0.999) -> None:
        self.decay = float(decay)
        self.num_updates = 0
        self.shadow: ParamTree = {
            layer: {k: v.copy() for k, v in group.items()} for layer, group in params.items()
        }

    def current_decay(self) -> float:
        n = self.num_updates
        return min(self.decay, (1.0 + n) / (10.0 + n))

    def update(self, params: ParamTree) -> None:
        """One update of every shadow array: shadow = d * shadow + (1 - d) * params."""
        d = self.current_decay()
        for layer, name, p in iter_params(params):
            shadow = self.shadow[layer][name]
            shadow *= d
            shadow += (1 - d) * p
        self.num_updates += 1


# --------------------------------------------------------------------------
# Stage 1: the VAE
# --------------------------------------------------------------------------


def vae_step(
    encoder: Encoder,
    decoder: Decoder,
    optimizer: Adam,
    x: Any,
    eps: Any,
    *,
    beta: float = 1.0,
    recon_std: float = 0.1,
    grad_clip: float | None = None,
) -> dict[str, Any]:
    """One VAE training step on a batch ``x`` [batch, input] with noise ``eps`` [batch, latent].

    loss = recon + beta * KL, per sample, averaged over the batch:

        recon = sum_features (x - x_hat)^2 / (2 recon_std^2)
        KL    = KL(q(z | x) || N(0, I)), summed over latent dims

    With beta = 1 this is the negative ELBO of a Gaussian likelihood
    N(x; x_hat, recon_std^2 I), up to a constant: the units are nats per
    sample. A smaller ``recon_std`` (or beta < 1) trades prior match for
    sharper reconstructions. Returns the losses as 0-d device arrays.
    """
    mu, log_var_raw = encoder.forward(x)  # [batch, latent] each
    log_var, c_clamp = clamp_log_var_forward(log_var_raw)
    z, c_rep = reparameterize_forward(mu, log_var, eps)
    x_hat = decoder.forward(z)  # [batch, input]
    mse, c_mse = mse_forward(x_hat, x)
    kl, c_kl = kl_divergence_forward(mu, log_var)
    # mse averages over batch * features; recon is the per-sample sum / (2 sigma^2).
    # Both weights in the data's dtype: NumPy 1.x turns a float32 scalar times a
    # Python float into float64.
    recon_scale = x.dtype.type(x.shape[1] / (2.0 * recon_std**2))
    beta = x.dtype.type(beta)
    recon = recon_scale * mse

    dx_hat = mse_backward(recon_scale, c_mse)  # dloss/dmse = recon_scale
    dmu_kl, dlog_var_kl = kl_divergence_backward(beta, c_kl)  # dloss/dKL = beta
    dz = decoder.backward(dx_hat)
    dmu_rep, dlog_var_rep = reparameterize_backward(dz, c_rep)
    dlog_var_raw = clamp_log_var_backward(dlog_var_rep + dlog_var_kl, c_clamp)
    encoder.backward(dmu_rep + dmu_kl, dlog_var_raw)

    params = {**encoder.params, **decoder.params}
    grads = {**encoder.grads, **decoder.grads}
    if grad_clip is not None:
        clip_grad_norm(grads, grad_clip)
    optimizer.step(params, grads)
    return {"loss": recon + beta * kl, "recon": recon, "kl": kl}


# --------------------------------------------------------------------------
# Stage 2: the denoiser
# --------------------------------------------------------------------------


def denoiser_step(
    denoiser: Any,
    optimizer: Adam,
    schedule: dict[str, Any],
    z0: Any,
    t: Any,
    noise: Any,
    *,
    labels: Any = None,
    ema: EMA | None = None,
    prediction_type: str = "epsilon",
    min_snr_gamma: float | None = None,
    grad_clip: float | None = 1.0,
) -> dict[str, Any]:
    """One denoiser training step on clean latents ``z0`` [batch, latent].

    z_t = sqrt(ab_t) z0 + sqrt(1 - ab_t) noise; the denoiser predicts the
    target of ``prediction_type`` from (z_t, t); the loss is its (optionally
    min-SNR weighted) mean squared error. The VAE is not touched.
    """
    z_t = q_sample(schedule, z0, t, noise)  # [batch, latent]
    out = denoiser.forward(z_t, t, labels)  # [batch, latent]
    loss, dout = diffusion_loss(
        schedule, out, z0, noise, t, prediction_type=prediction_type, min_snr_gamma=min_snr_gamma
    )
    denoiser.backward(dout)
    if grad_clip is not None:
        clip_grad_norm(denoiser.grads, grad_clip)
    optimizer.step(denoiser.params, denoiser.grads)
    if ema is not None:
        ema.update(denoiser.params)
    return {"loss": loss}


# --------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------


@dataclass
class LoopState:
    """Where a stage stands: the next step to run and the logged losses."""

    step: int = 0
    history: list | None = None

    def __post_init__(self) -> None:
        if self.history is None:
            self.history = []


def run_loop(
    step_fn: Callable[[int], dict[str, Any]],
    state: LoopState,
    num_steps: int,
    *,
    name: str,
    log_every: int = 25,
    progress: bool = True,
    on_checkpoint: Callable[[], None] | None = None,
    checkpoint_every: int | None = None,
) -> LoopState:
    """Run ``step_fn(n)`` for n = state.step .. num_steps - 1.

    Every ``log_every`` steps the loss is read on the host (the only sync),
    appended to ``state.history`` and checked: a NaN or infinite loss raises
    ``TrainingDiverged`` before any checkpoint of the bad weights is written.
    A Ctrl-C (SIGINT, and SIGTERM where the command line maps it to Ctrl-C)
    during a step takes effect once that step is done (``finish_step_on_interrupt``): KeyboardInterrupt is raised with
    ``state.step`` the number of completed steps and no step half applied, so
    the caller can save and resume exactly there.
    """
    bar = tqdm(
        total=num_steps, initial=state.step, desc=name, disable=not progress, dynamic_ncols=True, leave=True
    )
    try:
        with finish_step_on_interrupt() as interrupted:
            while state.step < num_steps:
                n = state.step
                anomaly.set_step(n)  # names the step in detect_anomaly's message
                losses = step_fn(n)
                state.step = n + 1
                last = state.step == num_steps
                logged = state.step % log_every == 0 or last
                save_now = bool(on_checkpoint and checkpoint_every and state.step % checkpoint_every == 0)
                if logged or save_now:
                    values = losses_to_host(losses)  # the loop's one host sync
                    if not all(math.isfinite(v) for v in values.values()):
                        raise TrainingDiverged(
                            f"{name}: the loss became {values['loss']} at step {n}. Likely causes: a "
                            "learning rate too high for this data, or data far from unit scale (standardise "
                            "it). The last checkpoint (if any) holds the last good weights. To find the layer where the "
                            "first NaN or infinity appears, run the steps again inside `with ldm_np.detect_anomaly():`."
                        )
                    if logged:
                        state.history.append((n, values["loss"]))
                        bar.set_postfix({k: f"{v:.4g}" for k, v in values.items()}, refresh=False)
                    if save_now and not last:
                        on_checkpoint()
                bar.update(1)
                if interrupted():
                    raise KeyboardInterrupt
    finally:
        bar.close()
    return state


@contextlib.contextmanager
def finish_step_on_interrupt() -> Iterator[Callable[[], bool]]:
    """Hold a Ctrl-C back until the current training step is done; yields "was there one?".

    A KeyboardInterrupt raised in the middle of a step could leave it half
    applied: some parameters updated by Adam, others not. Inside this block SIGINT only sets
    a flag, which the loop checks between steps. Where Python's own handler
    is not the one installed (a program that handles SIGINT itself), or off
    the main thread, where handlers cannot be set, nothing changes.
    """
    pending: list[int] = []
    main = threading.current_thread() is threading.main_thread()
    # Any signal that would raise KeyboardInterrupt (SIGINT; SIGTERM where the command line maps it so).
    deferred = [
        s for s in (signal.SIGINT, signal.SIGTERM) if signal.getsignal(s) is signal.default_int_handler
    ]
    if not main or not deferred:
        yield lambda: False
        return
    previous = {s: signal.signal(s, lambda signum, frame: pending.append(signum)) for s in deferred}
    try:
        yield lambda: bool(pending)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def losses_to_host(losses: dict[str, Any]) -> dict[str, float]:
    """The step's losses as Python floats, read from the device in one copy.

    This is the training loop's only host synchronisation: on a GPU it waits
    for every queued kernel of the step to finish. ``run_loop`` calls it every
    ``log_every`` steps, never in between. The 0-d losses are stacked first,
    so the VAE's three losses cost one device-to-host copy, not three.
    """
    xp = get_array_module(*losses.values())
    stacked = xp.stack([xp.asarray(v, dtype=xp.float64) for v in losses.values()])  # [num_losses]
    return dict(zip(losses, to_numpy(stacked).tolist(), strict=True))


def batch_indices(rng: Any, num_rows: int, batch_size: int) -> Any:
    """``batch_size`` row indices drawn uniformly with replacement."""
    return rng.integers(0, num_rows, size=batch_size)
