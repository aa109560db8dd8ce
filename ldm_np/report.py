"""The figures a training run writes, from a trained ``LatentDiffusion``."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from . import figures
from .backend import to_numpy
from .schedules import make_schedule

# Where along the schedule the forward-noising figure looks, as fractions of T - 1.
FORWARD_FRACTIONS = (0.0, 0.05, 0.1, 0.2, 0.4, 0.6, 1.0)


def write_figures(
    model: Any,
    X: np.ndarray,
    labels: np.ndarray | None,
    out: str | Path,
    image_shape: list[int] | None,
    *,
    seed: int = 0,
) -> list[Path]:
    """Write the run's figures to ``out``; returns their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    rng = np.random.default_rng(seed)
    samples, _, traces = model.sample(64, seed=seed, return_latents=True, return_trajectory=True)
    samples = to_numpy(samples)
    real = X[rng.choice(X.shape[0], size=min(64, X.shape[0]), replace=False)]

    paths.append(out / "loss_curves.png")
    figures.loss_curves(
        {"stage 1: VAE": model.vae_state.history, "stage 2: denoiser": model.denoiser_state.history},
        path=paths[-1],
    )

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # short schedules warn about terminal SNR; here they are only drawn
        schedules = {
            kind: make_schedule(model.config.num_steps, kind=kind)
            for kind in ("linear", "scaled_linear", "cosine")
        }
    paths.append(out / "schedule.png")
    figures.schedule_plot(schedules, path=paths[-1])

    z = to_numpy(model.encode(X))
    paths.append(out / "latent_space.png")
    figures.latent_scatter(z, labels, path=paths[-1])

    if image_shape is None:
        paths.append(out / "samples.png")
        figures.scatter_2d(X, samples, path=paths[-1])
        return paths

    shape = tuple(image_shape)
    decode = lambda zz: to_numpy(model.decode(zz))  # noqa: E731
    paths.append(out / "samples.png")
    figures.real_vs_generated(real, samples, shape, path=paths[-1])

    x_hat = decode(model.encode(real[:16]))
    paths.append(out / "reconstructions.png")
    figures.reconstructions(real[:16], x_hat, shape, path=paths[-1])

    paths.append(out / "forward_noising.png")
    z0 = to_numpy(model.encode(real[:6]))
    forward_steps = [round(f * (model.config.num_steps - 1)) for f in FORWARD_FRACTIONS]
    figures.forward_noising(
        z0, to_numpy(model.schedule), forward_steps, shape=shape, decode=decode, path=paths[-1], seed=seed
    )

    frames = [decode(tr.x0_hat[:8]) for tr in traces]
    steps = [int(tr.t) for tr in traces]
    keep = np.unique(np.linspace(0, len(frames) - 1, 10).round().astype(int))  # 10 columns
    paths.append(out / "reverse_process.png")
    figures.reverse_process([frames[i] for i in keep], [steps[i] for i in keep], shape, path=paths[-1])
    paths.append(out / "reverse_process.gif")
    figures.reverse_process_gif(frames, steps, shape, paths[-1])
    return paths
