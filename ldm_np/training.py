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

from .backend import get_array_module, to_numpy
from .diffusion import diffusion_loss, q_sample
from .losses import kl_divergence, kl_divergence_backward, mse_loss
from .module import ParamTree, iter_params
from .optim import Adam, clip_grad_norm
from .parallel import DataParallel, parallel_map
from .vae import (
    Decoder,
    Encoder,
    clamp_log_var_backward,
    clamp_log_var_forward,
    reparameterize_backward,
    reparameterize_with_noise,
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

    def update(self, params: ParamTree, *, workers: int = 1) -> None:
        """One update of every shadow array; ``workers`` threads share the parameters out."""
        d = self.current_decay()

        def update_one(item: tuple[str, str, Any]) -> None:
            layer, name, p = item
            s = self.shadow[layer][name]
            # s = d s + (1 - d) p, written as one in-place update
            s -= (1.0 - d) * (s - p)

        parallel_map(update_one, list(iter_params(params)), workers)
        self.num_updates += 1


# --------------------------------------------------------------------------
# Stage 1: the VAE
# --------------------------------------------------------------------------


def vae_forward_backward(
    encoder: Encoder,
    decoder: Decoder,
    x: Any,
    eps: Any,
    *,
    beta: float = 1.0,
    recon_std: float = 0.1,
    weight: float = 1.0,
) -> dict[str, Any]:
    """The VAE loss of a batch ``x`` [batch, input] with noise ``eps`` [batch, latent], and its gradients.

    Fills ``encoder.grads`` and ``decoder.grads`` with the gradients of
    ``weight * loss`` and returns ``weight *`` each loss (0-d device arrays).
    The loss is the one in ``vae_step``; ``weight`` is a shard's share of
    the batch under data parallelism, 1 otherwise.
    """
    mu, log_var_raw = encoder.forward(x)  # [batch, latent] each
    log_var, inside = clamp_log_var_forward(log_var_raw)
    z, rep_cache = reparameterize_with_noise(mu, log_var, eps)
    x_hat = decoder.forward(z)  # [batch, input]

    # mse_loss averages over batch * features; rescale to the per-sample sum / (2 sigma^2).
    mse, dx_hat = mse_loss(x_hat, x)
    scale = x.shape[1] / (2.0 * recon_std**2)
    recon = mse * scale
    dx_hat *= scale * weight
    kl = kl_divergence(mu, log_var)
    dmu_kl, dlog_var_kl = kl_divergence_backward(mu, log_var, beta * weight)

    dz = decoder.backward(dx_hat)
    dmu, dlog_var = reparameterize_backward(dz, rep_cache)
    dmu = dmu + dmu_kl
    dlog_var = clamp_log_var_backward(dlog_var + dlog_var_kl, inside)
    encoder.backward(dmu, dlog_var, input_grad=False)  # the data need no gradient
    return {"loss": (recon + beta * kl) * weight, "recon": recon * weight, "kl": kl * weight}


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
    parallel: DataParallel | None = None,
) -> dict[str, Any]:
    """One VAE training step on a batch ``x`` [batch, input] with noise ``eps`` [batch, latent].

    loss = recon + beta * KL, per sample, averaged over the batch:

        recon = sum_features (x - x_hat)^2 / (2 recon_std^2)
        KL    = KL(q(z | x) || N(0, I)), summed over latent dims

    With beta = 1 this is the negative ELBO of a Gaussian likelihood
    N(x; x_hat, recon_std^2 I), up to a constant: the units are nats per
    sample. A smaller ``recon_std`` (or beta < 1) trades prior match for
    sharper reconstructions. Returns the losses as 0-d device arrays.

    ``parallel``, a ``DataParallel([encoder, decoder])``, splits the batch
    among its workers (``ldm_np.parallel``): the same step up to float rounding.
    """
    kwargs = {"beta": beta, "recon_std": recon_std}
    if parallel is None:
        losses = vae_forward_backward(encoder, decoder, x, eps, **kwargs)
    else:
        _check_parallel(parallel, [encoder, decoder])
        shards = parallel.run(
            lambda models, x, eps, weight: vae_forward_backward(*models, x, eps, weight=weight, **kwargs),
            x,
            eps,
        )
        parallel.reduce_grads()
        losses = {name: sum(s[name] for s in shards) for name in shards[0]}
    workers = _update_workers(parallel)
    params = {**encoder.params, **decoder.params}
    grads = {**encoder.grads, **decoder.grads}
    if grad_clip is not None:
        clip_grad_norm(grads, grad_clip, workers=workers)
    optimizer.step(params, grads, workers=workers)
    return losses


def _update_workers(parallel: DataParallel | None) -> int:
    """Threads for the optimizer, clipping and EMA: as many as the batch had shards.

    After a batch too small to split, BLAS ran with its own threads, and
    OpenBLAS's idle worker still spins on the other core for a moment: a
    second thread for Adam then made a denoiser step at batch 256 about 6%
    slower on 2 cores. After a split it saves about a tenth of Adam's time.
    """
    return 1 if parallel is None else parallel.last_shards


def _check_parallel(parallel: Any, models: list[Any]) -> None:
    if not isinstance(parallel, DataParallel):
        raise TypeError(f"parallel must be a DataParallel, got {type(parallel).__name__}")
    if len(parallel.models) != len(models) or any(
        a is not b for a, b in zip(parallel.models, models, strict=False)
    ):
        names = ", ".join(type(m).__name__ for m in models)
        raise ValueError(
            f"parallel must wrap the models being trained ({names}), in that order; got {parallel!r}"
        )


# --------------------------------------------------------------------------
# Stage 2: the denoiser
# --------------------------------------------------------------------------


def denoiser_forward_backward(
    denoiser: Any,
    schedule: dict[str, Any],
    z0: Any,
    t: Any,
    noise: Any,
    labels: Any = None,
    *,
    prediction_type: str = "epsilon",
    min_snr_gamma: float | None = None,
    weight: float = 1.0,
) -> Any:
    """The diffusion loss of a batch of clean latents ``z0`` [batch, latent], and its gradients.

    Fills ``denoiser.grads`` with the gradients of ``weight * loss`` and
    returns ``weight * loss`` (a 0-d device array); see ``denoiser_step``.
    """
    z_t = q_sample(schedule, z0, t, noise)
    out = denoiser.forward(z_t, t, labels) if labels is not None else denoiser.forward(z_t, t)
    loss, dout = diffusion_loss(
        schedule, out, z0, noise, t, prediction_type=prediction_type, min_snr_gamma=min_snr_gamma
    )
    if weight != 1.0:
        dout *= weight
    denoiser.backward(dout)
    return loss * weight


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
    parallel: DataParallel | None = None,
) -> dict[str, Any]:
    """One denoiser training step on clean latents ``z0`` [batch, latent].

    z_t = sqrt(ab_t) z0 + sqrt(1 - ab_t) noise; the denoiser predicts the
    target of ``prediction_type`` from (z_t, t); the loss is its (optionally
    min-SNR weighted) mean squared error. The VAE is not touched.

    ``parallel``, a ``DataParallel([denoiser])``, splits the batch among its
    workers (``ldm_np.parallel``): the same step up to float rounding.
    """
    kwargs = {"prediction_type": prediction_type, "min_snr_gamma": min_snr_gamma}
    if parallel is None:
        loss = denoiser_forward_backward(denoiser, schedule, z0, t, noise, labels, **kwargs)
    else:
        _check_parallel(parallel, [denoiser])
        shards = parallel.run(
            lambda models, *batch: denoiser_forward_backward(
                models[0], schedule, *batch[:-1], weight=batch[-1], **kwargs
            ),
            z0,
            t,
            noise,
            labels,
        )
        parallel.reduce_grads()
        loss = sum(shards)
    workers = _update_workers(parallel)
    if grad_clip is not None:
        clip_grad_norm(denoiser.grads, grad_clip, workers=workers)
    optimizer.step(denoiser.params, denoiser.grads, workers=workers)
    if ema is not None:
        ema.update(denoiser.params, workers=workers)
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
    A Ctrl-C (SIGINT) during a step takes effect once that step is done
    (``finish_step_on_interrupt``): KeyboardInterrupt is raised with
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
                losses = step_fn(n)
                state.step = n + 1
                last = state.step == num_steps
                if state.step % log_every == 0 or last:
                    values = losses_to_host(losses)  # the loop's one host sync
                    if not all(math.isfinite(v) for v in values.values()):
                        raise TrainingDiverged(
                            f"{name}: the loss became {values['loss']} at step {n}. Likely causes: a "
                            "learning rate too high for this data, or data far from unit scale (standardise "
                            "it). The last checkpoint (if any) holds the last good weights."
                        )
                    state.history.append((n, values["loss"]))
                    bar.set_postfix({k: f"{v:.4g}" for k, v in values.items()}, refresh=False)
                    if (
                        on_checkpoint is not None
                        and checkpoint_every
                        and (state.step % checkpoint_every == 0)
                        and not last
                    ):
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
    applied: some parameters updated by Adam, others not (with several
    workers, some threads still writing). Inside this block SIGINT only sets
    a flag, which the loop checks between steps. Where Python's own handler
    is not the one installed (a program that handles SIGINT itself), or off
    the main thread, where handlers cannot be set, nothing changes.
    """
    pending: list[int] = []
    main = threading.current_thread() is threading.main_thread()
    if not main or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield lambda: False
        return
    previous = signal.signal(signal.SIGINT, lambda signum, frame: pending.append(signum))
    try:
        yield lambda: bool(pending)
    finally:
        signal.signal(signal.SIGINT, previous)


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
