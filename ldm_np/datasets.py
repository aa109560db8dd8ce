"""Data for ldm_np: handwritten digits, 2-D toy sets, a lifted manifold, your own files.

Everything here returns host NumPy arrays with rows as samples, ``[n, features]``,
in a float dtype you choose (float32 by default). Move them to a GPU yourself
if you train there; the data are small.

- ``load_digits``: 1,797 handwritten digits, 8x8 pixels scaled into [0, 1], and
  their labels. Shipped inside the package (``ldm_np/data/digits.csv.gz``), so
  nothing is ever downloaded.
- ``moons``, ``swiss_roll``, ``eight_gaussians``, ``checkerboard``, ``rings``:
  2-D point clouds, centred near 0 with a total variance near 2 (about 1 per
  coordinate; the moons keep their shape, so theirs is 1.5 in x and 0.5 in
  y), so one set of hyperparameters suits all of them.
- ``manifold``: one of those 2-D shapes bent into ``dim`` dimensions by a fixed
  smooth map. The true 2-D coordinates come back too, so a learned 2-D latent
  space can be plotted against the truth.
- ``load_array``: your own data from a ``.npy`` or ``.csv`` file, checked.
- ``load_dataset``: any of the above by name, for scripts and command lines.

Randomness comes only from the ``seed`` argument (an int, or a
``numpy.random.Generator`` to draw from): the same seed gives the same data.

The digits are the "Optical Recognition of Handwritten Digits" data set,
E. Alpaydin and C. Kaynak, UCI Machine Learning Repository, 1998,
DOI 10.24432/C50P49, licensed CC BY 4.0 (see ``ldm_np/data/README.md``).
"""

from __future__ import annotations

import gzip
import os
import warnings
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np

from .validation import (
    check_array,
    check_choice,
    check_dtype_name,
    check_float,
    check_int,
    check_path,
    check_seed,
)

__all__ = [
    "DATASETS",
    "TOY_SHAPES",
    "checkerboard",
    "eight_gaussians",
    "load_array",
    "load_dataset",
    "load_digits",
    "manifold",
    "manifold_map",
    "moons",
    "rings",
    "swiss_roll",
]

TOY_SHAPES = ("moons", "swiss_roll", "eight_gaussians", "checkerboard", "rings")
DATASETS = ("digits", *TOY_SHAPES, "manifold")

Seed = int | np.random.Generator

_DIGITS_FILE = files("ldm_np") / "data" / "digits.csv.gz"
_DIGITS_SHAPE = (1797, 65)  # 64 pixels then the label
_DEFAULT_N = 2000  # points drawn by load_dataset for the generated sets
_FILE_SUFFIXES = (".npy", ".csv")


# --------------------------------------------------------------------------
# Handwritten digits
# --------------------------------------------------------------------------


def load_digits(dtype: Any = "float32") -> tuple[np.ndarray, np.ndarray]:
    """Load the 1,797 handwritten digits shipped with the package.

    Parameters
    ----------
    dtype : "float32" or "float64", the dtype of the pixels.

    Returns
    -------
    X : array [1797, 64] of ``dtype``: each row one 8x8 image, row-major,
        pixel counts 0..16 divided by 16, so values lie in [0, 1].
    labels : array [1797] of int64, the digit 0..9 drawn in each image.

    Notes
    -----
    Alpaydin & Kaynak (1998), UCI ML Repository, DOI 10.24432/C50P49, CC BY 4.0.
    """
    dt = check_dtype_name(dtype)
    with _DIGITS_FILE.open("rb") as raw, gzip.open(raw, "rt") as text:
        table = np.loadtxt(text, delimiter=",", dtype=np.int64)  # [1797, 65]
    if table.shape != _DIGITS_SHAPE:
        raise RuntimeError(
            f"the packaged digits file has shape {table.shape}, expected {_DIGITS_SHAPE}; reinstall ldm_np"
        )
    pixels = table[:, :64].astype(dt) / 16.0  # [1797, 64]; a Python float keeps dt
    labels = table[:, 64].copy()  # [1797]; a copy, so the whole table can be freed
    return pixels, labels


# --------------------------------------------------------------------------
# 2-D toy sets
#
# Each generator draws a clean shape in its natural units, then moves it so its
# centre is 0 and each coordinate's variance is about 1 (the centres and scales
# below are exact expectations, worked out by hand), and finally adds Gaussian
# noise of standard deviation ``noise`` in those unit-scale coordinates.
# --------------------------------------------------------------------------


def _start(n: Any, seed: Seed, noise: Any, dtype: Any) -> tuple[int, float, np.dtype, np.random.Generator]:
    """Validate the arguments every toy generator shares."""
    n = check_int(n, "n")
    noise = check_float(noise, "noise", low=0.0)
    dt = check_dtype_name(dtype)
    return n, noise, dt, np.random.default_rng(check_seed(seed))


def _finish(
    points: np.ndarray,
    center: tuple[float, float],
    scale: float,
    noise: float,
    rng: np.random.Generator,
    dt: np.dtype,
) -> np.ndarray:
    """Centre and scale float64 ``points`` [n, 2], add noise, cast to ``dt``."""
    points = (points - np.asarray(center)) / scale  # [n, 2], about unit scale
    # Draw the noise even when noise == 0, so the random stream (and hence what
    # a shared Generator gives next) does not depend on the noise level.
    points = points + noise * rng.standard_normal(points.shape)  # [n, 2]
    return points.astype(dt)


def moons(n: int, *, seed: Seed = 0, noise: float = 0.1, dtype: Any = "float32") -> np.ndarray:
    """Two interleaved half circles.

    Parameters
    ----------
    n : number of points; each picks one of the two moons at random.
    seed : int or numpy.random.Generator.
    noise : standard deviation of the Gaussian noise added to each coordinate.
    dtype : "float32" or "float64".

    Returns
    -------
    points : array [n, 2] of ``dtype``. The upper moon is the half circle
        (cos t, sin t), the lower one (1 - cos t, 1/2 - sin t), t in [0, pi],
        then centred and scaled.
    """
    n, noise, dt, rng = _start(n, seed, noise, dtype)
    lower = rng.integers(0, 2, size=n).astype(bool)  # [n]
    t = rng.uniform(0.0, np.pi, size=n)  # [n] angle along the half circle
    upper_xy = np.stack([np.cos(t), np.sin(t)], axis=1)  # [n, 2]
    lower_xy = np.stack([1.0 - np.cos(t), 0.5 - np.sin(t)], axis=1)  # [n, 2]
    points = np.where(lower[:, None], lower_xy, upper_xy)  # [n, 2]
    # Mean (1/2, 1/4); per-coordinate variance (3/4 + 9/16 - 1/pi) / 2 = 0.705^2.
    # One scale for both axes keeps the moons' shape: variance about 1.5 in x, 0.5 in y.
    return _finish(points, (0.5, 0.25), 0.705, noise, rng, dt)


def swiss_roll(n: int, *, seed: Seed = 0, noise: float = 0.1, dtype: Any = "float32") -> np.ndarray:
    """A 2-D spiral, (t cos t, t sin t) for t from 1.5 pi to 4.5 pi (1.5 turns).

    Parameters
    ----------
    n : number of points, uniform in t.
    seed : int or numpy.random.Generator.
    noise : standard deviation of the Gaussian noise added to each coordinate.
    dtype : "float32" or "float64".

    Returns
    -------
    points : array [n, 2] of ``dtype``.
    """
    n, noise, dt, rng = _start(n, seed, noise, dtype)
    t = 1.5 * np.pi * (1.0 + 2.0 * rng.uniform(size=n))  # [n]
    points = np.stack([t * np.cos(t), t * np.sin(t)], axis=1)  # [n, 2]
    # Mean (2, 2 / (3 pi)); E[t^2] = 9.75 pi^2, so the per-coordinate variance
    # is (9.75 pi^2 - |mean|^2) / 2 = 6.789^2.
    return _finish(points, (2.0, 2.0 / (3.0 * np.pi)), 6.789, noise, rng, dt)


def eight_gaussians(n: int, *, seed: Seed = 0, noise: float = 0.1, dtype: Any = "float32") -> np.ndarray:
    """Eight round Gaussian blobs evenly spaced on a circle.

    Parameters
    ----------
    n : number of points; each picks one of the eight blobs at random.
    seed : int or numpy.random.Generator.
    noise : standard deviation of each blob.
    dtype : "float32" or "float64".

    Returns
    -------
    points : array [n, 2] of ``dtype``. The blob centres lie on a circle of
        radius sqrt(2), which gives each coordinate variance 1 + noise^2.
    """
    n, noise, dt, rng = _start(n, seed, noise, dtype)
    angle = 2.0 * np.pi * rng.integers(0, 8, size=n) / 8.0  # [n]
    points = np.sqrt(2.0) * np.stack([np.cos(angle), np.sin(angle)], axis=1)  # [n, 2]
    return _finish(points, (0.0, 0.0), 1.0, noise, rng, dt)


def checkerboard(n: int, *, seed: Seed = 0, noise: float = 0.0, dtype: Any = "float32") -> np.ndarray:
    """Points spread evenly over the 8 dark squares of a 4x4 checkerboard.

    Parameters
    ----------
    n : number of points; each picks one of the dark squares at random.
    seed : int or numpy.random.Generator.
    noise : standard deviation of the Gaussian noise added to each coordinate
        (0 by default: the sharp edges are the point of this set).
    dtype : "float32" or "float64".

    Returns
    -------
    points : array [n, 2] of ``dtype``, inside the square [-sqrt(3), sqrt(3)]^2
        before noise.
    """
    n, noise, dt, rng = _start(n, seed, noise, dtype)
    dark = np.array([(i, j) for i in range(4) for j in range(4) if (i + j) % 2 == 0])  # [8, 2]
    corner = dark[rng.integers(0, len(dark), size=n)]  # [n, 2] lower-left corner of the square
    points = corner + rng.uniform(size=(n, 2))  # [n, 2] in [0, 4)^2
    # Each coordinate alone is uniform on [0, 4): mean 2, standard deviation 2 / sqrt(3).
    return _finish(points, (2.0, 2.0), 2.0 / np.sqrt(3.0), noise, rng, dt)


def rings(n: int, *, seed: Seed = 0, noise: float = 0.05, dtype: Any = "float32") -> np.ndarray:
    """Four concentric circles with radii in the ratio 1 : 2 : 3 : 4.

    Parameters
    ----------
    n : number of points; each picks a ring at random, then an angle.
    seed : int or numpy.random.Generator.
    noise : standard deviation of the Gaussian noise added to each coordinate.
    dtype : "float32" or "float64".

    Returns
    -------
    points : array [n, 2] of ``dtype``.
    """
    n, noise, dt, rng = _start(n, seed, noise, dtype)
    # Each coordinate's variance is E[r^2] / 2; radii k * a with k = 1..4 give
    # E[r^2] = 7.5 a^2, so a = sqrt(2 / 7.5) makes it 1.
    radius = rng.integers(1, 5, size=n) * np.sqrt(2.0 / 7.5)  # [n]
    angle = rng.uniform(0.0, 2.0 * np.pi, size=n)  # [n]
    points = radius[:, None] * np.stack([np.cos(angle), np.sin(angle)], axis=1)  # [n, 2]
    return _finish(points, (0.0, 0.0), 1.0, noise, rng, dt)


_TOYS: dict[str, Callable[..., np.ndarray]] = {
    "moons": moons,
    "swiss_roll": swiss_roll,
    "eight_gaussians": eight_gaussians,
    "checkerboard": checkerboard,
    "rings": rings,
}


# --------------------------------------------------------------------------
# A 2-D shape hidden in many dimensions
# --------------------------------------------------------------------------

_MAP_SEED = 287  # fixed on purpose: the map is part of the data set's definition
_MAP_WIDTH = 64  # hidden sin features; plenty to keep the map one-to-one
_MAP_REFERENCE = 4096  # points of the shape used to set each feature's centre and scale


def _map_parameters(dim: int, shape: str) -> tuple[np.ndarray, ...]:
    """The fixed map's weights, and each feature's centre and scale over ``shape``."""
    rng = np.random.default_rng(_MAP_SEED)
    # Unit frequencies bend the map gently over a unit-scale shape: about one
    # oscillation of each feature across it, so nearby points stay nearby.
    w1 = rng.standard_normal((2, _MAP_WIDTH))  # [2, 64]
    b1 = rng.uniform(-np.pi, np.pi, size=_MAP_WIDTH)  # [64] random phases
    w2 = rng.standard_normal((_MAP_WIDTH, dim)) / np.sqrt(_MAP_WIDTH)  # [64, dim]
    # Measured on one fixed cloud of the shape, never on the points passed in,
    # so the map is the same function whatever seed drew those points.
    reference = _TOYS[shape](_MAP_REFERENCE, seed=rng, dtype="float64")  # [4096, 2]
    lifted = np.sin(reference @ w1 + b1) @ w2  # [4096, dim]
    return w1, b1, w2, lifted.mean(axis=0), lifted.std(axis=0)


def manifold_map(
    coords: np.ndarray, *, dim: int = 287, shape: str = "swiss_roll", dtype: Any = "float32"
) -> np.ndarray:
    """The fixed smooth map that lifts 2-D points of ``shape`` into ``dim`` dimensions.

    ``X = (sin(coords @ W1 + b1) @ W2 - mu) / sigma``, with W1 [2, 64], b1 [64]
    and W2 [64, dim] drawn once from a fixed seed, and mu, sigma [dim] each
    feature's mean and standard deviation over a fixed sample of ``shape``.
    It is the "decoder" a model trained on ``manifold`` data has to discover.

    Parameters
    ----------
    coords : array [n, 2] of 2-D points, e.g. from ``swiss_roll``.
    dim : number of output features, >= 2.
    shape : one of ``TOY_SHAPES``; sets only mu and sigma, so that points of
        that shape give features with mean about 0 and variance about 1.
    dtype : "float32" or "float64"; the map itself is computed in float64.

    Returns
    -------
    X : array [n, dim] of ``dtype``.
    """
    dim = check_int(dim, "dim", minimum=2)
    dt = check_dtype_name(dtype)
    check_choice(shape, "shape", TOY_SHAPES)
    coords = check_array(coords, "coords", shape=(None, 2)).astype(np.float64)
    w1, b1, w2, mu, sigma = _map_parameters(dim, shape)
    hidden = np.sin(coords @ w1 + b1)  # [n, 64]
    x = (hidden @ w2 - mu) / sigma  # [n, dim]
    return x.astype(dt)


def manifold(
    n: int,
    *,
    dim: int = 287,
    shape: str = "swiss_roll",
    seed: Seed = 0,
    noise: float = 0.01,
    dtype: Any = "float32",
) -> tuple[np.ndarray, np.ndarray]:
    """A 2-D toy shape lifted into ``dim`` dimensions, plus a little noise.

    The data lie near a curved 2-D surface in ``dim``-dimensional space: a
    good test for an autoencoder with a 2-D latent space, whose latents can be
    plotted beside the true coordinates.

    Parameters
    ----------
    n : number of points.
    dim : number of features, >= 2.
    shape : which 2-D shape, one of ``TOY_SHAPES``, drawn with its own default
        noise.
    seed : int or numpy.random.Generator; chooses the points and the noise,
        never the map (see ``manifold_map``).
    noise : standard deviation of the Gaussian noise added to each feature,
        which is about 1% of a feature's spread at the default 0.01.
    dtype : "float32" or "float64".

    Returns
    -------
    X : array [n, dim] of ``dtype``, ``manifold_map(coords, shape=shape)``
        plus noise; each feature has mean about 0 and variance about 1.
    coords : array [n, 2] of ``dtype``, the true 2-D points, equal to
        ``TOY(n, seed=seed)`` for the chosen shape.
    """
    n = check_int(n, "n")
    dim = check_int(dim, "dim", minimum=2)
    noise = check_float(noise, "noise", low=0.0)
    dt = check_dtype_name(dtype)
    check_choice(shape, "shape", TOY_SHAPES)
    rng = np.random.default_rng(check_seed(seed))
    # The shape draws from the same Generator first, so coords equal what the
    # toy function gives for this seed; the feature noise comes after.
    coords = _TOYS[shape](n, seed=rng, dtype="float64")  # [n, 2]
    x = manifold_map(coords, dim=dim, shape=shape, dtype="float64")  # [n, dim]
    x = x + noise * rng.standard_normal(x.shape)  # [n, dim]
    return x.astype(dt), coords.astype(dt)


# --------------------------------------------------------------------------
# The user's own data
# --------------------------------------------------------------------------

_KIND_NAMES = {
    "b": "boolean",
    "c": "complex",
    "O": "object",
    "U": "text",
    "S": "bytes",
    "V": "structured",
    "M": "datetime",
    "m": "timedelta",
}


def _read_npy(path: Path) -> np.ndarray:
    """Read a .npy file without ever unpickling it."""
    try:
        # read_array parses only the .npy format (np.load would also try .npz
        # and pickle), and allow_pickle=False because unpickling can run code.
        with path.open("rb") as f:
            return np.lib.format.read_array(f, allow_pickle=False)
    except ValueError as err:
        if "Object arrays" in str(err):
            raise ValueError(
                f"{path}: holds an object array (pickled Python objects), which "
                "ldm_np refuses to unpickle because that can run arbitrary code; "
                "save a numeric array instead, e.g. np.save(path, x.astype('float32'))"
            ) from None
        raise ValueError(f"{path}: is not a valid NumPy .npy file ({err})") from None
    except (OSError, EOFError) as err:
        raise ValueError(f"{path}: could not be read as a .npy file ({err})") from None


def _read_csv(path: Path) -> np.ndarray:
    """Read a headerless CSV of numbers into a float64 array [rows, columns]."""
    with warnings.catch_warnings():
        # An empty file only warns; the row count check below reports it properly.
        warnings.simplefilter("ignore", UserWarning)
        try:
            return np.loadtxt(path, delimiter=",", dtype=np.float64, ndmin=2)
        except ValueError as err:  # includes UnicodeDecodeError for binary files
            raise ValueError(
                f"{path}: could not be parsed as comma-separated numbers ({err}); "
                "header rows and text columns are not supported: remove them"
            ) from None


def _check_loaded(x: np.ndarray, path: Path, dt: np.dtype) -> np.ndarray:
    """Refuse anything but a finite 2-D array of real numbers; cast to ``dt``."""
    if x.dtype.kind not in "iuf":
        kind = _KIND_NAMES.get(x.dtype.kind, "non-numeric")
        raise ValueError(f"{path}: has {kind} dtype {x.dtype}; expected integers or floats")
    if x.ndim != 2:
        raise ValueError(
            f"{path}: expected a 2-D array [n, features], got shape {list(x.shape)}; "
            "reshape it before saving, e.g. x.reshape(-1, 1) for a single feature "
            "or x.reshape(len(x), -1) to flatten images"
        )
    if x.shape[0] < 2:
        raise ValueError(f"{path}: needs at least 2 rows (samples), got {x.shape[0]}")
    if x.shape[1] < 1:
        raise ValueError(f"{path}: has no columns (features), shape {list(x.shape)}")
    bad = ~np.isfinite(x)  # [n, features]
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise ValueError(
            f"{path}: contains {int(bad.sum())} NaN or infinite values "
            f"(the first at row {row}, column {col}); remove or replace them"
        )
    largest = np.abs(x).max()
    if largest > np.finfo(dt).max:  # e.g. 1e300 does not fit in float32
        raise ValueError(
            f"{path}: values up to {largest:.3g} overflow {dt.name}; rescale the data or use dtype='float64'"
        )
    return x.astype(dt)


def load_array(path: str | os.PathLike[str], dtype: Any = "float32") -> np.ndarray:
    """Load your own data, one sample per row, from a .npy or .csv file.

    Parameters
    ----------
    path : a ``.npy`` file holding one 2-D numeric array (saved with
        ``np.save``), or a ``.csv`` file of numbers separated by commas, one
        sample per line. A CSV header row is NOT supported: remove it. Lines
        starting with ``#`` are skipped; a one-column CSV gives [n, 1].
    dtype : "float32" or "float64", the dtype of the result.

    Returns
    -------
    X : array [n, features] of ``dtype``, with n >= 2 and all values finite.

    Raises
    ------
    FileNotFoundError
        If ``path`` is not an existing file.
    ValueError
        Naming the path and the problem: an unknown extension, content that is
        not numeric, an array that is not 2-D (reshape it first), fewer than 2
        rows, NaN or infinity, or a complex, object or other non-real dtype.
        Pickled object arrays are refused: they are never unpickled.
    """
    dt = check_dtype_name(dtype)
    path = Path(check_path(path))
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        x = _read_npy(path)
    elif suffix == ".csv":
        x = _read_csv(path)
    else:
        raise ValueError(f"{path}: unknown file type {path.suffix!r}; expected .npy or .csv")
    return _check_loaded(x, path, dt)


# --------------------------------------------------------------------------
# Everything by name
# --------------------------------------------------------------------------


def _subset(n: int, total: int, seed: Seed) -> np.ndarray:
    """Sorted indices of ``n`` of ``total`` rows, chosen at random without repeats."""
    if n > total:
        raise ValueError(f"n must be <= {total}, the number of rows available, got {n}")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(total, size=n, replace=False))  # [n], keeps file order


def load_dataset(
    name: str | os.PathLike[str],
    n: int | None = None,
    *,
    seed: Seed = 0,
    dtype: Any = "float32",
) -> tuple[np.ndarray, np.ndarray | None]:
    """Load a data set by name: one of ``DATASETS`` or a path to a .npy/.csv file.

    Parameters
    ----------
    name : "digits", a toy shape ("moons", "swiss_roll", "eight_gaussians",
        "checkerboard", "rings"), "manifold", or a path ending in .npy or .csv.
    n : number of samples. For the generated sets it defaults to 2000; for
        the digits and files, None keeps every row and an int takes a random
        subset of that many rows (in their original order).
    seed : int or numpy.random.Generator, for the points or the subset.
    dtype : "float32" or "float64".

    Returns
    -------
    X : array [n, features] of ``dtype``.
    extra : the labels [n] (int64) for "digits", the true 2-D coordinates
        [n, 2] for "manifold", None otherwise.
    """
    check_dtype_name(dtype)  # fail before any work is done
    check_seed(seed)
    if n is not None:
        n = check_int(n, "n")
    if not isinstance(name, (str, os.PathLike)):
        raise TypeError(f"name must be one of {DATASETS} or a .npy/.csv path, got {type(name).__name__}")
    name = os.fspath(name)
    if name.lower().endswith(_FILE_SUFFIXES):
        x = load_array(name, dtype)
        return (x if n is None else x[_subset(n, len(x), seed)]), None
    if name == "digits":
        x, labels = load_digits(dtype)
        if n is None:
            return x, labels
        rows = _subset(n, len(x), seed)
        return x[rows], labels[rows]
    n = _DEFAULT_N if n is None else n
    if name == "manifold":
        return manifold(n, seed=seed, dtype=dtype)
    if name in _TOYS:
        return _TOYS[name](n, seed=seed, dtype=dtype), None
    raise ValueError(
        f"unknown dataset {name!r}; valid names are {', '.join(DATASETS)}, or a path to a .npy or .csv file"
    )
