"""The figures a training run writes, from a trained ``LatentDiffusion``."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..backend import to_numpy
from ..schedules import make_schedule
from . import plots as figures

# Where along the schedule the forward-noising figure looks, as fractions of T - 1.
FORWARD_FRACTIONS = (0.0, 0.05, 0.1, 0.2, 0.4, 0.6, 1.0)

# Class-conditional runs: the guidance scales of guidance.png, and the one of
# class_grid.png. Measured on the digits demo (``guidance_report``): w = 1 gives
# 97% of samples in the class asked for at a Frechet ratio of 0.60, w = 2 99.8%
# at 1.44, w = 3 99.8% at 2.38, w = 7 98% at 8.2.
GUIDANCE_SCALES = (0.0, 1.0, 3.0, 7.0)
CLASS_GRID_GUIDANCE = 2.0
CLASS_GRID_COLUMNS = 10


def write_figures(
    model: Any,
    X: np.ndarray,
    labels: np.ndarray | None,
    out: str | Path,
    image_shape: list[int] | None,
    *,
    seed: int = 0,
    holdout: np.ndarray | None = None,
) -> list[Path]:
    """Write the run's figures to ``out``; returns their paths.

    Image data also get, for a class-conditional model, class_grid.png and
    guidance.png, and, given ``holdout`` rows (not trained on), inpainting.png.
    """
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

    if model.config.num_classes is not None:
        paths += write_conditional_figures(model, out, shape, seed=seed)
    if holdout is not None and len(holdout):
        paths.append(out / "inpainting.png")
        write_inpainting_figure(model, holdout[:8], shape, paths[-1], seed=seed)
    return paths


def write_conditional_figures(model: Any, out: Path, shape: tuple[int, int], *, seed: int = 0) -> list[Path]:
    """class_grid.png (one row per class) and guidance.png (the same seeds at several w)."""
    K = model.config.num_classes
    names = [f"class {k}" for k in range(K)]
    labels = np.repeat(np.arange(K, dtype=np.int64), CLASS_GRID_COLUMNS)  # [K * columns]
    x = to_numpy(model.sample(labels.shape[0], labels=labels, guidance_scale=CLASS_GRID_GUIDANCE, seed=seed))
    grid = out / "class_grid.png"
    figures.image_grid(x, shape=shape, nrows=K, row_labels=names, path=grid,
                       title=f"One row per class (guidance w = {CLASS_GRID_GUIDANCE:g})")  # fmt: skip
    # One sample per class, drawn from the same z_T at every scale (same seed, same n).
    by_scale = {
        w: to_numpy(model.sample(K, labels=np.arange(K, dtype=np.int64), guidance_scale=w, seed=seed))
        for w in GUIDANCE_SCALES
    }
    guidance = out / "guidance.png"
    figures.guidance_grid(by_scale, shape, path=guidance, row_labels=names)
    return [grid, guidance]


def top_half_mask(n: int, shape: tuple[int, int], dtype: Any = "float32") -> np.ndarray:
    """A mask [n, h*w] that knows the top half of each image (the first h // 2 rows of pixels)."""
    h, w = shape
    mask = np.zeros((n, h, w), dtype=dtype)
    mask[:, : h // 2] = 1
    return mask.reshape(n, h * w)


def write_inpainting_figure(
    model: Any, x: np.ndarray, shape: tuple[int, int], path: Path, *, seed: int = 0
) -> Path:
    """Rows: held-out images, their known top half, and two completions (seeds ``seed``, ``seed + 1``)."""
    mask = top_half_mask(x.shape[0], shape, x.dtype)
    known = np.where(mask > 0, x, np.nan)  # the unknown half is drawn as empty tiles' grey
    fills = [to_numpy(model.inpaint(x, mask, seed=seed + i)) for i in range(2)]
    figures.image_grid(
        np.concatenate([x, known, *fills]),
        shape=shape,
        nrows=4,
        row_labels=["held out", "known half", f"seed {seed}", f"seed {seed + 1}"],
        title="Inpainting: the top half known, the rest by reconstruction guidance",
        path=path,
    )
    return path
