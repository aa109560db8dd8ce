"""Figures for the tutorials and reports, all in one style.

Every function draws one figure and returns the ``matplotlib.figure.Figure``.
Given ``path``, it also writes a PNG there (or a GIF, for the animation) and
closes the figure, so scripts that save hundreds of figures do not keep them
all in memory; the returned figure can still be saved again.

Nothing here picks a backend or calls ``show``: under ``MPLBACKEND=Agg`` (no
display) everything works, and in a notebook the returned figure displays.

Conventions shared by every figure:

- Images are flat rows [n, h*w] (or [n, h, w]) drawn dark-on-light with the
  ``gray_r`` colour map on a fixed value range, [0, 1] by default (the
  digits' pixel range), so two figures can be compared by eye. Grids are one
  mosaic image with thin grey separators: fast to draw even for many images.
- Real data is blue, generated data orange, in every figure.
- Inputs may be NumPy or CuPy arrays (copied to the host); wrong shapes raise
  a ValueError that names the argument. The options every figure shares
  (``path``, ``shape``, ``title``, ``value_range``, ``seed``, ...) are checked
  by name before anything is drawn: a wrong type is a TypeError naming it.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from ..backend import to_numpy
from ..evaluation.metrics import nearest_neighbour
from ..validation import check_callable, check_int, check_path, check_seed

__all__ = [
    "feature_histograms",
    "forward_noising",
    "guidance_grid",
    "image_grid",
    "latent_scatter",
    "loss_curves",
    "real_vs_generated",
    "reconstructions",
    "reverse_process",
    "reverse_process_gif",
    "scatter_2d",
    "schedule_plot",
]

REAL_COLOR = "tab:blue"
GENERATED_COLOR = "tab:orange"
PIXEL_RANGE = (0.0, 1.0)
DPI = 150  # readable on screen and in print, and small files

_STYLE = {
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "figure.titlesize": 12,
    "legend.fontsize": 9,
    "legend.frameon": False,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "image.interpolation": "nearest",  # 8x8 pixels should look like pixels
    "figure.facecolor": "white",
    "savefig.facecolor": "white",
}
# Ink dark on white; the separators between images (NaN) in light grey-blue.
_IMAGE_CMAP = matplotlib.colormaps["gray_r"].with_extremes(bad="#c9cfd8")


def _of_type(types: Any, expected: str) -> Callable[[Any, str], None]:
    def check(value: Any, name: str) -> None:
        if not isinstance(value, types):
            raise TypeError(f"{name} must be {expected}, got {type(value).__name__} {value!r:.60}")

    return check


# The options the figures share, by name; None (where allowed) is never checked.
_OPTION_CHECKS: dict[str, Callable[[Any, str], Any]] = {
    "path": check_path,
    "seed": check_seed,
    "decode": lambda f, name: check_callable(f, name, "decode(x_t) -> images [n, h*w]"),
    "nrows": check_int,
    "columns": check_int,
    "fps": check_int,
    "max_features": check_int,
    "title": _of_type(str, "a string"),
    "shape": _of_type((tuple, list), "a pair (height, width)"),
    "value_range": _of_type((tuple, list), "a pair (low, high) or None"),
    "row_labels": _of_type(Iterable, "a sequence of labels, one per row"),
}


def _styled(fn: Callable[..., Figure]) -> Callable[..., Figure]:
    """Check the shared options, then draw (and save) inside the module's rc settings, leaving the user's alone."""
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Figure:
        for name, value in signature.bind(*args, **kwargs).arguments.items():
            if value is not None and name in _OPTION_CHECKS:
                _OPTION_CHECKS[name](value, name)
        with plt.rc_context(_STYLE):
            return fn(*args, **kwargs)

    return wrapper


def _finish(fig: Figure, path: Any) -> Figure:
    """Save ``fig`` at ``path`` (if given) and close it.

    The format follows the suffix (".png" as intended; ".pdf" or ".svg" work
    too) and is PNG when there is none. Missing folders are created.
    """
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=DPI, bbox_inches="tight", format=None if path.suffix else "png")
        plt.close(fig)
    return fig


# --------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------


def _as_rows(x: Any, name: str, *, width: int | None = None) -> np.ndarray:
    """``x`` as a float64 host array [n, features] with n >= 1."""
    if not hasattr(x, "shape"):
        raise TypeError(f"{name} must be an array, got {type(x).__name__}")
    x = np.asarray(to_numpy(x))
    if x.dtype.kind not in "fiu":
        raise TypeError(f"{name} must be a numeric array, got dtype {x.dtype}")
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"{name} must be a non-empty 2-D array [n, features], got shape {list(x.shape)}")
    if width is not None and x.shape[1] != width:
        raise ValueError(f"{name} must have {width} features per row, got shape {list(x.shape)}")
    return x.astype(np.float64)


def _image_shape(shape: Any, features: int | None = None, name: str = "shape") -> tuple[int, int]:
    """``shape`` as (h, w); None means square images inferred from ``features``."""
    if shape is None:
        side = math.isqrt(features) if features else 0
        if side * side != features:
            raise ValueError(f"{name} must be given: {features} features are not a square image")
        return side, side
    if len(shape) != 2 or any(int(s) != s or s < 1 for s in shape):
        raise ValueError(f"{name} must be a pair of positive integers (height, width), got {shape!r}")
    return int(shape[0]), int(shape[1])


def _as_images(x: Any, name: str, shape: Any) -> np.ndarray:
    """Flat rows [n, h*w] or images [n, h, w] as float64 [n, h, w]."""
    if not hasattr(x, "shape"):
        raise TypeError(f"{name} must be an array of images, got {type(x).__name__}")
    x = np.asarray(to_numpy(x))
    if x.dtype.kind not in "fiu":
        raise TypeError(f"{name} must be a numeric array, got dtype {x.dtype}")
    if x.ndim == 3 and x.shape[0] >= 1 and min(x.shape[1:]) >= 1:
        return x.astype(np.float64)
    if x.ndim != 2 or x.shape[0] < 1:
        raise ValueError(
            f"{name} must be images [n, h*w] or [n, h, w] with n >= 1, got shape {list(x.shape)}"
        )
    h, w = _image_shape(shape, x.shape[1])
    if x.shape[1] != h * w:
        raise ValueError(
            f"{name} has {x.shape[1]} features per row, but shape={(h, w)} needs {h * w}; "
            "pass the images' (height, width) as shape"
        )
    return x.reshape(-1, h, w).astype(np.float64)


def _timesteps(timesteps: Any, num_steps: int, count: int | None = None) -> np.ndarray:
    """Integer timesteps [k] in 0..num_steps-1 (``count`` of them if given)."""
    t = np.asarray(to_numpy(timesteps) if hasattr(timesteps, "shape") else timesteps)
    if t.ndim != 1 or t.size == 0 or t.dtype.kind not in "iu":
        raise ValueError(f"timesteps must be a non-empty 1-D sequence of integers, got {timesteps!r}")
    if count is not None and t.size != count:
        raise ValueError(f"timesteps must have one entry per frame ({count}), got {t.size}")
    if num_steps is not None and (t.min() < 0 or t.max() >= num_steps):
        raise ValueError(f"timesteps must lie in 0..{num_steps - 1}, got {t.min()}..{t.max()}")
    return t.astype(np.int64)


def _alphas_cumprod(schedule: Any, name: str = "schedule") -> np.ndarray:
    """The schedule's alphas_cumprod as a float64 host array [T], checked."""
    if not isinstance(schedule, Mapping) or "alphas_cumprod" not in schedule:
        raise ValueError(f"{name} must be a schedule dict with 'alphas_cumprod' (see make_schedule)")
    ab = np.asarray(to_numpy(schedule["alphas_cumprod"]), dtype=np.float64)
    if ab.ndim != 1 or ab.size == 0 or not ((ab > 0) & (ab <= 1)).all():
        raise ValueError(f"{name}['alphas_cumprod'] must be a 1-D array of values in (0, 1]")
    return ab


# --------------------------------------------------------------------------
# Image mosaics
# --------------------------------------------------------------------------


def _mosaic(tiles: np.ndarray, pad: int) -> np.ndarray:
    """Tiles [rows, cols, h, w] -> one image with ``pad`` NaN pixels between and around them."""
    rows, cols, h, w = tiles.shape
    padded = np.full((rows, cols, h + pad, w + pad), np.nan)
    padded[:, :, pad:, pad:] = tiles
    image = padded.transpose(0, 2, 1, 3).reshape(rows * (h + pad), cols * (w + pad))
    return np.pad(image, ((0, pad), (0, pad)), constant_values=np.nan)


def _tile_inches(h: int, w: int, *, headers: bool = False) -> float:
    """Size of one image on the page: 0.45 in for the 8x8 digits, more for larger ones.

    Grids with column headers get at least 0.8 in, so headers such as
    "t = 999" do not run into each other.
    """
    return min(1.2, max(0.8 if headers else 0.45, 0.05 * max(h, w)))


def _draw_tiles(
    ax: Any,
    tiles: np.ndarray,
    *,
    value_range: tuple[float, float] | None,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
) -> Any:
    """Draw tiles [rows, cols, h, w] (NaN = empty) as one mosaic on ``ax``; returns the AxesImage."""
    rows, cols, h, w = tiles.shape
    pad = max(1, max(h, w) // 8)
    if value_range is None:
        finite = tiles[np.isfinite(tiles)]
        value_range = (float(finite.min()), float(finite.max())) if finite.size else PIXEL_RANGE
    im = ax.imshow(_mosaic(tiles, pad), cmap=_IMAGE_CMAP, vmin=value_range[0], vmax=value_range[1])
    ax.grid(False)
    ax.tick_params(length=0, labelsize=9)
    for spine in ax.spines.values():
        spine.set_visible(False)
    centres_y = pad + np.arange(rows) * (h + pad) + (h - 1) / 2
    centres_x = pad + np.arange(cols) * (w + pad) + (w - 1) / 2
    ax.set_yticks(centres_y if row_labels is not None else [], row_labels if row_labels is not None else [])
    ax.set_xticks(centres_x if col_labels is not None else [], col_labels if col_labels is not None else [])
    ax.xaxis.set_ticks_position("top")  # column labels read as headers
    return im


def _grid_tiles(images: np.ndarray, nrows: int | None, ncols: int | None = None) -> np.ndarray:
    """Images [n, h, w] -> tiles [nrows, ncols, h, w], filling row by row, NaN after the last."""
    n, h, w = images.shape
    if nrows is None and ncols is None:
        ncols = math.ceil(math.sqrt(n))
    if ncols is None:
        ncols = math.ceil(n / nrows)
    if nrows is None:
        nrows = math.ceil(n / ncols)
    tiles = np.full((nrows * ncols, h, w), np.nan)
    tiles[:n] = images
    return tiles.reshape(nrows, ncols, h, w)


def _check_labels(labels: Any, count: int, name: str) -> list[str] | None:
    if labels is None:
        return None
    labels = [str(s) for s in labels]
    if len(labels) != count:
        raise ValueError(f"{name} must have {count} entries (one per row), got {len(labels)}")
    return labels


@_styled
def image_grid(
    images: Any,
    *,
    shape: tuple[int, int] = (8, 8),
    nrows: int | None = None,
    title: str | None = None,
    row_labels: Sequence[str] | None = None,
    value_range: tuple[float, float] | None = PIXEL_RANGE,
    path: Any = None,
) -> Figure:
    """A grid of images, filled row by row.

    Parameters
    ----------
    images : array [n, h*w] (flat rows, reshaped with ``shape``) or [n, h, w]
        (``shape`` is then ignored).
    shape : (h, w) of each flat row; (8, 8) for the digits.
    nrows : rows of the grid; by default about sqrt(n) rows and columns.
    title : the figure's title.
    row_labels : one label per grid row, written on the left.
    value_range : (low, high) mapped to white and black; None uses the
        images' own minimum and maximum.
    path : where to write the PNG; None writes nothing.
    """
    imgs = _as_images(images, "images", shape)  # [n, h, w]
    n, h, w = imgs.shape
    if nrows is not None and (int(nrows) != nrows or not 1 <= nrows <= n):
        raise ValueError(f"nrows must be an integer in 1..{n} (the number of images), got {nrows!r}")
    tiles = _grid_tiles(imgs, nrows)  # [rows, cols, h, w]
    rows, cols = tiles.shape[:2]
    labels = _check_labels(row_labels, rows, "row_labels")
    size = _tile_inches(h, w)
    fig = plt.figure(
        figsize=(cols * size + (1.2 if labels else 0.3), rows * size + 0.7), layout="constrained"
    )
    ax = fig.add_subplot()
    _draw_tiles(ax, tiles, value_range=value_range, row_labels=labels)
    if title:
        ax.set_title(title)
    return _finish(fig, path)


@_styled
def real_vs_generated(
    real: Any,
    generated: Any,
    shape: tuple[int, int] = (8, 8),
    path: Any = None,
    *,
    value_range: tuple[float, float] | None = PIXEL_RANGE,
) -> Figure:
    """Real images (left, blue title) beside generated ones (right, orange title).

    real : [n, h*w] or [n, h, w];  generated : [m, h*w] or [m, h, w], the same (h, w).
    """
    real_imgs = _as_images(real, "real", shape)
    gen_imgs = _as_images(generated, "generated", shape)
    if real_imgs.shape[1:] != gen_imgs.shape[1:]:
        raise ValueError(
            f"real and generated images must have the same size, got {list(real_imgs.shape[1:])} "
            f"and {list(gen_imgs.shape[1:])}"
        )
    h, w = real_imgs.shape[1:]
    grids = [_grid_tiles(real_imgs, None), _grid_tiles(gen_imgs, None)]
    size = _tile_inches(h, w)
    rows = max(g.shape[0] for g in grids)
    cols = sum(g.shape[1] for g in grids)
    fig, axes = plt.subplots(
        1,
        2,
        figsize=(cols * size + 0.8, rows * size + 0.8),
        layout="constrained",
        gridspec_kw={"width_ratios": [g.shape[1] for g in grids]},
    )
    names = (f"Real data (n = {len(real_imgs)})", f"Generated (n = {len(gen_imgs)})")
    for ax, tiles, name, color in zip(axes, grids, names, (REAL_COLOR, GENERATED_COLOR)):
        _draw_tiles(ax, tiles, value_range=value_range)
        ax.set_title(name, color=color, fontweight="bold")
    return _finish(fig, path)


@_styled
def reconstructions(
    x: Any,
    x_hat: Any,
    shape: tuple[int, int] = (8, 8),
    path: Any = None,
    *,
    columns: int = 10,
    value_range: tuple[float, float] | None = PIXEL_RANGE,
) -> Figure:
    """Inputs and their reconstructions in pairs of rows: original above, reconstruction below.

    x, x_hat : [n, h*w] or [n, h, w], the same shape. The title gives the
    mean squared error over every pixel shown. ``columns`` images per row.
    """
    orig = _as_images(x, "x", shape)  # [n, h, w]
    recon = _as_images(x_hat, "x_hat", shape)
    if orig.shape != recon.shape:
        raise ValueError(
            f"x and x_hat must have the same shape, got {list(orig.shape)} and {list(recon.shape)}"
        )
    n, h, w = orig.shape
    cols = min(n, columns)
    top = _grid_tiles(orig, None, cols)  # [pairs, cols, h, w]
    bottom = _grid_tiles(recon, None, cols)
    tiles = np.stack([top, bottom], axis=1).reshape(-1, cols, h, w)  # [2 * pairs, cols, h, w]
    labels = ["original", "reconstruction"] * top.shape[0]
    mse = float(np.mean((orig - recon) ** 2))
    size = _tile_inches(h, w)
    fig = plt.figure(figsize=(cols * size + 1.5, tiles.shape[0] * size + 0.7), layout="constrained")
    ax = fig.add_subplot()
    _draw_tiles(ax, tiles, value_range=value_range, row_labels=labels)
    ax.set_title(f"Reconstructions (mean squared error {mse:.4g})")
    return _finish(fig, path)


@_styled
def nearest_neighbours(
    samples: Any,
    train: Any,
    shape: tuple[int, int] = (8, 8),
    path: Any = None,
    *,
    columns: int = 10,
    value_range: tuple[float, float] | None = PIXEL_RANGE,
) -> Figure:
    """Samples (top row) above their nearest training images (bottom row), nearest in pixels.

    samples : [n, h*w] or [n, h, w], the first ``columns`` of them are drawn;
    train : [m, h*w] or [m, h, w], the images the model trained on. Each
    column's header is the Euclidean pixel distance of the pair. A model that
    copies its training set shows identical pairs at distance 0; one that
    draws new images shows relatives, not twins.
    """
    columns = check_int(columns, "columns")
    gen = _as_images(samples, "samples", shape)[:columns]  # [n, h, w]
    real = _as_images(train, "train", shape)
    if gen.shape[1:] != real.shape[1:]:
        raise ValueError(
            f"samples and train must have the same image size, got {list(gen.shape[1:])} and {list(real.shape[1:])}"
        )
    n, h, w = gen.shape
    index, distance = nearest_neighbour(gen.reshape(n, -1), real.reshape(len(real), -1))
    tiles = np.stack([gen, real[index]])  # [2, n, h, w]
    size = _tile_inches(h, w, headers=True)
    fig = plt.figure(figsize=(n * size + 1.8, 2 * size + 0.9), layout="constrained")
    ax = fig.add_subplot()
    _draw_tiles(
        ax,
        tiles,
        value_range=value_range,
        row_labels=["sample", "nearest\ntraining"],
        col_labels=[f"{d:.2f}" for d in distance],
    )
    ax.set_title("Samples and their nearest training images (pixel distance above each pair)")
    return _finish(fig, path)


# --------------------------------------------------------------------------
# Training curves and schedules
# --------------------------------------------------------------------------


def _moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Mean over a trailing window (shorter at the start), ignoring NaN."""
    finite = np.isfinite(values)
    v = np.where(finite, values, 0.0)
    csum = np.concatenate([[0.0], np.cumsum(v)])
    ccount = np.concatenate([[0], np.cumsum(finite)])
    hi = np.arange(1, len(values) + 1)
    lo = np.maximum(hi - window, 0)
    count = ccount[hi] - ccount[lo]
    return np.where(count > 0, (csum[hi] - csum[lo]) / np.maximum(count, 1), np.nan)


@_styled
def loss_curves(histories: Mapping[str, Sequence[tuple[int, float]]], path: Any = None) -> Figure:
    """Training losses, one panel per stage (e.g. "vae", "denoiser").

    histories : {stage: [(step, loss), ...]}. A panel uses a log-scale y axis
    when all its losses are positive. Long, noisy curves (over 100 points)
    also get a moving average over about 2% of the points.
    """
    if not isinstance(histories, Mapping) or not histories:
        raise ValueError("histories must be a non-empty dict {stage: [(step, loss), ...]}")
    curves = {}
    for stage, history in histories.items():
        arr = np.asarray(list(history), dtype=np.float64) if history is not None else np.empty(0)
        if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] != 2:
            raise ValueError(f"histories[{stage!r}] must be a non-empty list of (step, loss) pairs")
        curves[str(stage)] = arr
    cols = min(3, len(curves))
    rows = math.ceil(len(curves) / cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(4.2 * cols, 3.2 * rows), layout="constrained", squeeze=False
    )
    for ax, (stage, arr) in zip(axes.flat, curves.items()):
        steps, values = arr[:, 0], arr[:, 1]
        finite = values[np.isfinite(values)]
        if len(values) > 100:
            window = max(5, len(values) // 50)
            ax.plot(steps, values, color=REAL_COLOR, alpha=0.3, lw=0.8, label="loss")
            ax.plot(
                steps,
                _moving_average(values, window),
                color=REAL_COLOR,
                lw=1.8,
                label=f"moving average ({window} points)",
            )
            ax.legend(loc="upper right")
        else:
            ax.plot(steps, values, color=REAL_COLOR, lw=1.5, marker="." if len(values) < 30 else None)
        if finite.size and (finite > 0).all():
            ax.set_yscale("log")
        if finite.size:
            ax.text(0.02, 0.04, f"last: {values[-1]:.4g}", transform=ax.transAxes, fontsize=9, color="0.3")
        ax.set_title(stage)
        ax.set_xlabel("step")
        ax.set_ylabel("loss" + (" (log scale)" if ax.get_yscale() == "log" else ""))
    for ax in list(axes.flat)[len(curves) :]:
        ax.set_visible(False)
    return _finish(fig, path)


@_styled
def schedule_plot(schedules: Mapping[str, Mapping[str, Any]], path: Any = None) -> Figure:
    """Noise schedules compared: alpha_bar_t and log-SNR against t, one line per schedule.

        log-SNR(t) = log(alpha_bar_t / (1 - alpha_bar_t))

    alpha_bar_t is the share of the signal's variance left at step t; the
    legend gives each schedule's length and its last alpha_bar (near 0 means
    the last step is close to pure noise, as sampling assumes).
    """
    if not isinstance(schedules, Mapping) or not schedules:
        raise ValueError("schedules must be a non-empty dict {name: schedule dict}")
    fig, (ax_ab, ax_snr) = plt.subplots(1, 2, figsize=(10, 4.2), layout="constrained")
    for name, schedule in schedules.items():
        ab = _alphas_cumprod(schedule, f"schedules[{name!r}]")  # [T]
        t = np.arange(ab.size)
        label = f"{name} (T = {ab.size}, last " + r"$\bar\alpha$" + f" = {ab[-1]:.1e})"
        ab_safe = np.clip(ab, 1e-20, 1.0 - 1e-16)  # finite log at both ends
        ax_ab.plot(t, ab, lw=1.8, label=label)
        ax_snr.plot(t, np.log(ab_safe / (1.0 - ab_safe)), lw=1.8, label=label)
    ax_ab.set_title(r"Signal kept: $\bar\alpha_t = \prod_{s \leq t} (1 - \beta_s)$")
    ax_ab.set_ylabel(r"$\bar\alpha_t$")
    ax_snr.set_title("Signal-to-noise ratio")
    ax_snr.set_ylabel(r"log-SNR $= \log(\bar\alpha_t / (1 - \bar\alpha_t))$")
    for ax in (ax_ab, ax_snr):
        ax.set_xlabel("timestep t")
    # One legend for both panels, below them, where it hides no curve.
    fig.legend(*ax_ab.get_legend_handles_labels(), loc="outside lower center", ncols=min(3, len(schedules)))
    return _finish(fig, path)


# --------------------------------------------------------------------------
# The diffusion processes
# --------------------------------------------------------------------------


def _alpha_label(t: int, ab: float) -> str:
    return f"t = {t}\n" + r"$\bar\alpha$" + f" = {ab:.2f}"


@_styled
def forward_noising(
    x0_examples: Any,
    schedule: Mapping[str, Any],
    timesteps: Sequence[int],
    shape: tuple[int, int] | None = None,
    decode: Callable[[Any], Any] | None = None,
    path: Any = None,
    *,
    seed: Any = 0,
) -> Figure:
    """The forward process q(x_t | x_0): the same examples noised at increasing t.

        x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps,   eps ~ N(0, I)

    One eps per example, shared by every column, so each row shows one noise
    pattern taking over as t grows.

    Parameters
    ----------
    x0_examples : array [n, features]: images (flat rows), latents (with
        ``decode``) or 2-D points.
    schedule : a schedule dict (``make_schedule``) with ``alphas_cumprod``.
    timesteps : integers in 0..T-1, one column (or panel) each.
    shape : (h, w) of the images; None infers a square.
    decode : for latent examples, maps x_t [n, latent] to images [n, h*w]:
        the figure then shows what the decoder makes of each noisy latent.
    seed : int or numpy.random.Generator, for eps.

    With 2-D examples and neither ``shape`` nor ``decode``, each t gets a
    scatter panel of all the points instead (use many examples then).
    """
    x0 = _as_rows(x0_examples, "x0_examples")  # [n, features]
    ab = _alphas_cumprod(schedule)
    t = _timesteps(timesteps, ab.size)
    eps = np.random.default_rng(seed).standard_normal(x0.shape)  # [n, features]
    a = ab[t][:, None, None]  # [k, 1, 1]
    xt = np.sqrt(a) * x0[None] + np.sqrt(1.0 - a) * eps[None]  # [k, n, features]

    if x0.shape[1] == 2 and decode is None and shape is None:
        fig, axes = plt.subplots(
            1,
            len(t),
            figsize=(2.6 * len(t) + 0.4, 3.6),
            layout="constrained",
            sharex=True,
            sharey=True,
            squeeze=False,
        )
        for ax, points, ti in zip(axes[0], xt, t):
            ax.scatter(
                points[:, 0],
                points[:, 1],
                s=max(1.0, min(12.0, 3000 / len(points))),
                color=REAL_COLOR,
                alpha=0.6,
                linewidths=0,
            )
            ax.set_title(_alpha_label(ti, ab[ti]))
            ax.set_aspect("equal", adjustable="box")
            ax.set_xlabel("$x_1$")
        axes[0, 0].set_ylabel("$x_2$")
        fig.suptitle(r"Forward process: $x_t$ at increasing t")
        return _finish(fig, path)

    if decode is not None:
        dtype = np.asarray(to_numpy(x0_examples)).dtype
        dtype = dtype if dtype.kind == "f" else np.float64
        images = np.stack([_as_rows(decode(z.astype(dtype)), "decode(x_t)") for z in xt])  # [k, n, h*w]
        value_range = PIXEL_RANGE  # decoded images live in pixel space
        title = r"Forward process in latent space: decode($z_t$) at increasing t"
    else:
        images = xt
        # Noisy values leave [0, 1]: one range for every panel, so fading is visible.
        value_range = (min(0.0, float(np.percentile(xt, 1))), max(1.0, float(np.percentile(xt, 99))))
        title = r"Forward process: $x_t$ at increasing t"
    h, w = _image_shape(shape, images.shape[2])
    if images.shape[2] != h * w:
        raise ValueError(f"the images have {images.shape[2]} features, but shape={(h, w)} needs {h * w}")
    tiles = images.reshape(len(t), -1, h, w).transpose(1, 0, 2, 3)  # [n, k, h, w]
    size = _tile_inches(h, w, headers=True)
    fig = plt.figure(figsize=(len(t) * size + 2.2, tiles.shape[0] * size + 1.2), layout="constrained")
    ax = fig.add_subplot()
    im = _draw_tiles(
        ax,
        tiles,
        value_range=value_range,
        row_labels=[f"example {i + 1}" for i in range(tiles.shape[0])],
        col_labels=[_alpha_label(ti, ab[ti]) for ti in t],
    )
    fig.colorbar(im, ax=ax, shrink=0.8, label="pixel value")
    ax.set_title(title)
    return _finish(fig, path)


def _frames_to_images(frames: Any, shape: Any, decode: Callable | None) -> np.ndarray:
    """A list of k arrays [n, features] -> images [k, n, h, w] (decoded first if asked)."""
    if isinstance(frames, np.ndarray) and frames.ndim == 3:
        frames = list(frames)
    if not isinstance(frames, Sequence) or len(frames) == 0:
        raise ValueError("frames must be a non-empty list of arrays [n, features]")
    rows = []
    for i, frame in enumerate(frames):
        frame = frame if decode is None else decode(frame)
        rows.append(_as_images(frame, f"frames[{i}]", shape))
    if any(r.shape != rows[0].shape for r in rows):
        raise ValueError(f"every frame must have the same shape, got {sorted({r.shape for r in rows})}")
    return np.stack(rows)  # [k, n, h, w]


@_styled
def reverse_process(
    frames: Sequence[Any],
    timesteps: Sequence[int],
    shape: tuple[int, int] = (8, 8),
    path: Any = None,
    *,
    decode: Callable[[Any], Any] | None = None,
    value_range: tuple[float, float] | None = PIXEL_RANGE,
) -> Figure:
    """The reverse process, left to right: one sample per row, one step per column.

    frames : list of k arrays [n, features], e.g. the decoded x0 estimates at
        k steps of the sampler (``decode`` maps latents to images first).
    timesteps : k integers, the t of each frame, for the column headers.
    """
    images = _frames_to_images(frames, shape, decode)  # [k, n, h, w]
    t = _timesteps(timesteps, None, images.shape[0])
    k, n, h, w = images.shape
    tiles = images.transpose(1, 0, 2, 3)  # [n, k, h, w]
    size = _tile_inches(h, w, headers=True)
    fig = plt.figure(figsize=(k * size + 1.0, n * size + 1.0), layout="constrained")
    ax = fig.add_subplot()
    _draw_tiles(
        ax,
        tiles,
        value_range=value_range,
        row_labels=[f"sample {i + 1}" for i in range(n)],
        col_labels=[f"t = {ti}" for ti in t],
    )
    ax.set_title(r"Reverse process: estimate of $x_0$ at each step (noise $\rightarrow$ sample)")
    return _finish(fig, path)


@_styled
def reverse_process_gif(
    frames: Sequence[Any],
    timesteps: Sequence[int],
    shape: tuple[int, int] = (8, 8),
    path: Any = None,
    fps: int = 8,
    *,
    decode: Callable[[Any], Any] | None = None,
    value_range: tuple[float, float] | None = PIXEL_RANGE,
) -> Figure:
    """The reverse process as an animated GIF: one grid of samples per frame.

    Same inputs as ``reverse_process``; ``path`` (a ``.gif`` file) is
    required. The last frame is held for one second so the result can be
    seen. Written with matplotlib's PillowWriter (Pillow ships with matplotlib).
    """
    from matplotlib.animation import FuncAnimation, PillowWriter

    if path is None or Path(path).suffix.lower() != ".gif":
        raise ValueError(f"path must name a .gif file, got {path!r}")
    if int(fps) != fps or fps < 1:
        raise ValueError(f"fps must be a positive integer, got {fps!r}")
    images = _frames_to_images(frames, shape, decode)  # [k, n, h, w]
    t = _timesteps(timesteps, None, images.shape[0])
    k, _, h, w = images.shape
    grids = [_grid_tiles(frame, None) for frame in images]  # k x [rows, cols, h, w]
    rows, cols = grids[0].shape[:2]
    size = max(0.6, _tile_inches(h, w))  # a GIF has no zoom: a little larger than a PNG's tiles
    fig = plt.figure(figsize=(max(3.2, cols * size + 0.4), rows * size + 1.0), layout="constrained")
    ax = fig.add_subplot()
    im = _draw_tiles(ax, grids[0], value_range=value_range)
    title = ax.set_title("")

    def draw(i: int) -> list:
        j = min(i, k - 1)
        im.set_data(_mosaic(grids[j], max(1, max(h, w) // 8)))
        title.set_text(f"Reverse process, step {j + 1}/{k}\nestimate of $x_0$ at t = {t[j]}")
        return [im, title]

    anim = FuncAnimation(fig, draw, frames=k + int(fps), blit=False)  # + fps frames: hold the end 1 s
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    anim.save(path, writer=PillowWriter(fps=int(fps)), dpi=100)
    plt.close(fig)
    return fig


@_styled
def guidance_grid(
    images_by_scale: Mapping[float, Any],
    shape: tuple[int, int] = (8, 8),
    path: Any = None,
    *,
    row_labels: Sequence[str] | None = None,
    value_range: tuple[float, float] | None = PIXEL_RANGE,
) -> Figure:
    """Samples at several guidance scales: one column per scale w, one seed per row.

    images_by_scale : {w: images [n, h*w]}, every array from the same n
        seeds in the same order, so each row shows one seed's sample as w grows.
        Columns are sorted by w.
    row_labels : optional, one per row (e.g. the class each row asked for).
    """
    if not isinstance(images_by_scale, Mapping) or not images_by_scale:
        raise ValueError("images_by_scale must be a non-empty dict {guidance scale: images [n, features]}")
    scales = sorted(images_by_scale)
    columns = [_as_images(images_by_scale[s], f"images_by_scale[{s!r}]", shape) for s in scales]
    if any(c.shape != columns[0].shape for c in columns):
        raise ValueError(
            "every scale needs images of the same shape (same seeds), got "
            + ", ".join(f"{s}: {list(c.shape)}" for s, c in zip(scales, columns))
        )
    tiles = np.stack(columns, axis=1)  # [n, scales, h, w]
    n, _, h, w = tiles.shape
    labels = _check_labels(row_labels, n, "row_labels")
    size = _tile_inches(h, w, headers=True)
    fig = plt.figure(figsize=(len(scales) * size + 1.2, n * size + 1.0), layout="constrained")
    ax = fig.add_subplot()
    _draw_tiles(
        ax, tiles, value_range=value_range, row_labels=labels, col_labels=[f"w = {s:g}" for s in scales]
    )
    ax.set_title("Guidance scale w, left to right (same seed in each row)")
    return _finish(fig, path)


# --------------------------------------------------------------------------
# Point clouds
# --------------------------------------------------------------------------


@_styled
def latent_scatter(z: Any, labels: Any = None, path: Any = None, *, title: str = "Latent space") -> Figure:
    """Latent codes as a 2-D scatter, coloured by label.

    z : array [n, latent], latent >= 2. With latent > 2 the points are
        projected on their first two principal components (PCA via the SVD
        of the centred codes); the axes give each component's share of the
        variance.
    labels : None, integer classes [n] (up to 20: a legend), or any other
        values [n] (e.g. true coordinates: a colour bar).
    """
    codes = _as_rows(z, "z")  # [n, latent]
    n, latent = codes.shape
    if latent < 2:
        raise ValueError(f"z must have at least 2 columns (latent dimensions), got shape {[n, latent]}")
    if latent == 2:
        xy, axis_names = codes, ("$z_1$", "$z_2$")
    else:
        centred = codes - codes.mean(axis=0)  # [n, latent]
        _, s, vt = np.linalg.svd(centred, full_matrices=False)  # s [latent], vt [latent, latent]
        xy = centred @ vt[:2].T  # [n, 2]
        share = s**2 / max(float((s**2).sum()), 1e-300)
        axis_names = tuple(f"PC {i + 1} ({100 * share[i]:.0f}% of variance)" for i in range(2))
    size = max(2.0, min(20.0, 4000 / n))
    fig, ax = plt.subplots(figsize=(6.0, 5.0), layout="constrained")
    if labels is None:
        ax.scatter(xy[:, 0], xy[:, 1], s=size, color=REAL_COLOR, alpha=0.7, linewidths=0)
    else:
        lab = np.asarray(to_numpy(labels) if hasattr(labels, "shape") else labels)
        if lab.shape != (n,):
            raise ValueError(f"labels must have shape [{n}] (one per row of z), got {list(lab.shape)}")
        classes = np.unique(lab)
        if lab.dtype.kind in "iub" and classes.size <= 20:
            cmap = matplotlib.colormaps["tab10" if classes.size <= 10 else "tab20"]
            for i, c in enumerate(classes):
                mask = lab == c
                ax.scatter(
                    xy[mask, 0], xy[mask, 1], s=size, color=cmap(i), alpha=0.7, linewidths=0, label=str(c)
                )
            ax.legend(
                title="label",
                markerscale=max(1.0, 30 / size) ** 0.5,
                loc="center left",
                bbox_to_anchor=(1.0, 0.5),
            )
        else:
            points = ax.scatter(
                xy[:, 0], xy[:, 1], s=size, c=lab.astype(np.float64), cmap="viridis", alpha=0.8, linewidths=0
            )
            fig.colorbar(points, ax=ax, label="label")
    ax.set_xlabel(axis_names[0])
    ax.set_ylabel(axis_names[1])
    ax.set_title(f"{title} (n = {n}, {latent} dimensions)")
    return _finish(fig, path)


@_styled
def scatter_2d(real: Any, generated: Any, path: Any = None) -> Figure:
    """A 2-D toy data set beside samples from a model, on the same axes.

    real : [n, 2] or None (samples alone, one panel);  generated : [m, 2].
    The right panel repeats the real points in light grey behind the
    samples, so misplaced mass stands out.
    """
    g = _as_rows(generated, "generated", width=2)
    size_g = max(1.0, min(12.0, 3000 / len(g)))
    if real is None:
        fig, ax_g = plt.subplots(figsize=(5.0, 4.3), layout="constrained")
        axes = (ax_g,)
    else:
        r = _as_rows(real, "real", width=2)
        fig, (ax_r, ax_g) = plt.subplots(
            1, 2, figsize=(9.0, 4.3), layout="constrained", sharex=True, sharey=True
        )
        axes = (ax_r, ax_g)
        size_r = max(1.0, min(12.0, 3000 / len(r)))
        ax_r.scatter(r[:, 0], r[:, 1], s=size_r, color=REAL_COLOR, alpha=0.6, linewidths=0, label="real")
        ax_g.scatter(r[:, 0], r[:, 1], s=size_r, color="0.8", linewidths=0, label="real (for reference)")
        ax_r.set_title(f"Real data (n = {len(r)})", color=REAL_COLOR, fontweight="bold")
    ax_g.scatter(
        g[:, 0], g[:, 1], s=size_g, color=GENERATED_COLOR, alpha=0.6, linewidths=0, label="generated"
    )
    ax_g.set_title(f"Generated (n = {len(g)})", color=GENERATED_COLOR, fontweight="bold")
    for ax in axes:
        ax.set_aspect("equal", adjustable="box")
        ax.set_xlabel("$x_1$")
        ax.legend(loc="upper right", markerscale=2.0)
    axes[0].set_ylabel("$x_2$")
    return _finish(fig, path)


@_styled
def feature_histograms(real: Any, generated: Any, path: Any = None, *, max_features: int = 16) -> Figure:
    """Per-feature histograms of the data and of samples, for data that are neither images nor 2-D.

    real : [n, d] or None;  generated : [m, d]. Shows the first
    ``max_features`` features (of d), one panel each, real and generated
    on the same bins: a marginal that the model misses shows at a glance.
    """
    g = _as_rows(generated, "generated")
    d = g.shape[1]
    r = None if real is None else _as_rows(real, "real", width=d)
    k = min(d, max(1, int(max_features)))
    cols = min(k, 4)
    rows = -(-k // cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(2.6 * cols, 2.0 * rows), layout="constrained", squeeze=False
    )
    for j, ax in enumerate(axes.flat):
        if j >= k:
            ax.set_visible(False)
            continue
        both = g[:, j] if r is None else np.concatenate([r[:, j], g[:, j]])
        lo, hi = float(both.min()), float(both.max())
        bins = np.linspace(lo, hi if hi > lo else lo + 1.0, 31)
        if r is not None:
            ax.hist(r[:, j], bins=bins, density=True, color=REAL_COLOR, alpha=0.5, label="real")
        ax.hist(g[:, j], bins=bins, density=True, color=GENERATED_COLOR, alpha=0.5, label="generated")
        ax.set_title(f"feature {j + 1}")
        ax.set_yticks([])
    axes.flat[0].legend(loc="upper right")
    shown = f"the first {k} of {d} features" if k < d else f"all {d} features"
    fig.suptitle(f"Per-feature histograms ({shown})")
    return _finish(fig, path)
