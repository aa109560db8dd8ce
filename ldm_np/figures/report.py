"""The figures a training run writes, from a trained ``LatentDiffusion``."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..backend import to_numpy
from ..guidance import draw_classes
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


def data_kind(num_features: int, image_shape: Any) -> str:
    """How a run's data are drawn: "image" (a grid of pictures), "2d" (a scatter), or "table" (anything else)."""
    if image_shape:
        return "image"
    return "2d" if num_features == 2 else "table"


def samples_figure(
    x: np.ndarray, image_shape: Any, path: str | Path, *, real: np.ndarray | None = None, title: str = ""
) -> Path:
    """Samples x [n, features] drawn as their shape allows: an image grid, a 2-D scatter, or histograms."""
    kind = data_kind(x.shape[1], image_shape)
    if kind == "image":
        figures.image_grid(x[:64], shape=tuple(image_shape), title=title or None, path=path)
    elif kind == "2d":
        figures.scatter_2d(real, x, path=path)
    else:
        figures.feature_histograms(real, x, path=path)
    return Path(path)


def write_figures(
    model: Any,
    X: np.ndarray,
    labels: np.ndarray | None,
    out: str | Path,
    image_shape: list[int] | None,
    *,
    seed: int = 0,
    holdout: np.ndarray | None = None,
    note: Callable[[str], Any] = print,
) -> list[Path]:
    """Write the run's figures to ``out``, those that suit the data's shape; returns their paths.

    Every run gets loss_curves.png and schedule.png, and latent_space.png
    (the latents, or their first two principal components). Then by shape:

    - images: samples.png (real beside generated; a class-conditional
      model draws each sample's class from ``labels``' frequencies), reconstructions.png,
      nearest_training.png (samples above their nearest training images),
      forward_noising.png, reverse_process.png/.gif; for a class-conditional
      model class_grid.png and guidance.png; given ``holdout`` rows (not
      trained on), inpainting.png;
    - 2-D points: samples.png, a scatter of real and generated;
    - anything else: samples.png, per-feature histograms of real and
      generated, and projection.png, both projected on the data's first
      two principal components.

    What is skipped is said in one line through ``note``. A figure that
    fails is a warning, never an error: the model is trained and saved.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    kind = data_kind(X.shape[1], image_shape)

    def attempt(name: str, draw: Callable[[Path], Any]) -> None:
        path = out / name
        try:
            draw(path)
        except Exception as exc:  # a figure never fails the run
            warnings.warn(f"{name} not written: {type(exc).__name__}: {exc}", RuntimeWarning, stacklevel=3)
        else:
            paths.append(path)

    rng = np.random.default_rng(seed)
    # A class-conditional model draws each sample's class from the rows' class frequencies.
    conditional = model.config.num_classes is not None and labels is not None and np.ndim(labels) == 1
    classes = {"labels": draw_classes(labels, 64, seed)} if conditional else {}
    samples, _, traces = model.sample(64, seed=seed, return_latents=True, return_trajectory=True, **classes)
    samples = to_numpy(samples)
    real = X[rng.choice(X.shape[0], size=min(64, X.shape[0]), replace=False)]

    histories = {"stage 1: VAE": model.vae_state.history, "stage 2: denoiser": model.denoiser_state.history}
    if any(histories.values()):
        attempt(
            "loss_curves.png",
            lambda p: figures.loss_curves({k: v for k, v in histories.items() if v}, path=p),
        )
    else:
        note("loss_curves.png skipped: no losses were logged")

    def schedule_figure(path: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter(
                "ignore"
            )  # short schedules warn about terminal SNR; here they are only drawn
            schedules = {
                k: make_schedule(model.config.num_steps, kind=k)
                for k in ("linear", "scaled_linear", "cosine")
            }
        figures.schedule_plot(schedules, path=path)

    attempt("schedule.png", schedule_figure)

    # Labels colour the latents when they are classes (or values) one per row.
    point_labels = labels if labels is not None and np.ndim(labels) == 1 else None
    if model.config.latent_size >= 2:
        attempt(
            "latent_space.png",
            lambda p: figures.latent_scatter(to_numpy(model.encode(X)), point_labels, path=p),
        )
    else:
        note("latent_space.png skipped: a 1-dimensional latent space has no 2-D picture")

    if kind == "2d":
        attempt("samples.png", lambda p: figures.scatter_2d(X, samples, path=p))
        return paths
    if kind == "table":
        many = to_numpy(model.sample(min(1000, max(64, X.shape[0])), seed=seed))
        attempt("samples.png", lambda p: figures.feature_histograms(X, many, path=p))
        attempt("projection.png", lambda p: projection_figure(X, many, p))
        note(
            f"image figures skipped: {X.shape[1]} features are neither an image nor 2-D points "
            "(samples.png shows per-feature histograms, projection.png a 2-D projection)"
        )
        return paths

    shape = tuple(image_shape)
    decode = lambda zz: to_numpy(model.decode(zz))  # noqa: E731
    attempt("samples.png", lambda p: figures.real_vs_generated(real, samples, shape, path=p))
    attempt(
        "reconstructions.png",
        lambda p: figures.reconstructions(real[:16], decode(model.encode(real[:16])), shape, path=p),
    )
    attempt("nearest_training.png", lambda p: figures.nearest_neighbours(samples, X, shape, path=p))
    forward_steps = [round(f * (model.config.num_steps - 1)) for f in FORWARD_FRACTIONS]
    attempt(
        "forward_noising.png",
        lambda p: figures.forward_noising(
            to_numpy(model.encode(real[:6])), to_numpy(model.schedule), forward_steps,
            shape=shape, decode=decode, path=p, seed=seed,
        ),
    )  # fmt: skip

    frames = [decode(tr.x0_hat[:8]) for tr in traces]
    steps = [int(tr.t) for tr in traces]
    keep = np.unique(np.linspace(0, len(frames) - 1, 10).round().astype(int))  # 10 columns
    attempt(
        "reverse_process.png",
        lambda p: figures.reverse_process([frames[i] for i in keep], [steps[i] for i in keep], shape, path=p),
    )
    attempt("reverse_process.gif", lambda p: figures.reverse_process_gif(frames, steps, shape, p))

    if model.config.num_classes is not None:
        try:
            paths += write_conditional_figures(model, out, shape, seed=seed)
        except Exception as exc:
            warnings.warn(f"class_grid.png / guidance.png not written: {exc}", RuntimeWarning, stacklevel=2)
    if holdout is not None and len(holdout):
        attempt("inpainting.png", lambda p: write_inpainting_figure(model, holdout[:8], shape, p, seed=seed))
    return paths


def projection_figure(real: np.ndarray, generated: np.ndarray, path: Path) -> Path:
    """Real and generated rows projected on the real data's first two principal components.

    With the SVD of the centred data, X - m = U S V^T, a row x maps to
    (x - m) V[:, :2]; the samples use the same m and V, so both clouds sit
    in one coordinate system.
    """
    mean = real.mean(axis=0)
    _, _, vt = np.linalg.svd(real - mean, full_matrices=False)  # vt [features, features]
    project = lambda x: (x - mean) @ vt[:2].T  # noqa: E731  [n, 2]
    figures.scatter_2d(project(real), project(generated), path=path)
    return path


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
