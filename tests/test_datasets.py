"""Tests for ldm_np.datasets: shapes, dtypes, scales, determinism and bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ldm_np import datasets
from ldm_np.datasets import (
    DATASETS,
    TOY_SHAPES,
    load_array,
    load_dataset,
    load_digits,
    manifold,
    manifold_map,
)

TOYS = {name: getattr(datasets, name) for name in TOY_SHAPES}


# --------------------------------------------------------------------------
# Digits
# --------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_digits_shapes_dtypes_and_range(dtype):
    X, labels = load_digits(dtype=dtype)
    assert X.shape == (1797, 64) and X.dtype == np.dtype(dtype)
    assert labels.shape == (1797,) and labels.dtype == np.int64
    assert X.min() == 0.0 and X.max() == 1.0  # exactly: 16 / 16
    np.testing.assert_array_equal(X * 16, np.round(X * 16))  # counts 0..16, divided by 16


def test_digits_has_ten_balanced_classes():
    _, labels = load_digits()
    np.testing.assert_array_equal(np.unique(labels), np.arange(10))
    counts = np.bincount(labels)
    assert counts.min() >= 170 and counts.max() <= 190, counts


def test_digits_first_row_is_the_known_zero():
    X, labels = load_digits()
    assert labels[0] == 0
    # First pixel row of the first image in the UCI file: 0,0,5,13,9,1,0,0.
    np.testing.assert_array_equal(X[0, :8] * 16, [0, 0, 5, 13, 9, 1, 0, 0])


# --------------------------------------------------------------------------
# 2-D toy sets
# --------------------------------------------------------------------------


@pytest.mark.parametrize("name", TOY_SHAPES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_toy_shape_and_dtype(name, dtype):
    points = TOYS[name](50, dtype=dtype)
    assert points.shape == (50, 2)
    assert points.dtype == np.dtype(dtype)  # no silent float64 upcast
    assert np.isfinite(points).all()


@pytest.mark.parametrize("name", TOY_SHAPES)
def test_toy_is_roughly_zero_mean_unit_scale(name):
    points = TOYS[name](20_000, seed=1, dtype="float64")
    assert np.abs(points.mean(axis=0)).max() < 0.1
    variance = points.var(axis=0)  # [2]
    assert 0.8 < variance.mean() < 1.2, variance
    assert (variance > 0.3).all() and (variance < 1.7).all(), variance


@pytest.mark.parametrize("name", TOY_SHAPES)
def test_toy_is_deterministic_for_a_seed(name):
    toy = TOYS[name]
    np.testing.assert_array_equal(toy(100, seed=7), toy(100, seed=7))
    assert not np.array_equal(toy(100, seed=7), toy(100, seed=8))
    # A Generator seeded the same way gives the same points.
    np.testing.assert_array_equal(toy(100, seed=np.random.default_rng(7)), toy(100, seed=7))


@pytest.mark.parametrize("name", TOY_SHAPES)
def test_toy_noise_changes_the_points(name):
    toy = TOYS[name]
    clean = toy(100, seed=0, noise=0.0, dtype="float64")
    noisy = toy(100, seed=0, noise=0.5, dtype="float64")
    unit = toy(100, seed=0, noise=1.0, dtype="float64")
    # The same draws z at every noise level (drawn even at 0): noisy = clean + noise * z exactly,
    # with z standard normal in the unit-scale coordinates (not scaled with the shape).
    np.testing.assert_allclose(noisy - clean, 0.5 * (unit - clean), rtol=0, atol=1e-12)
    assert 0.8 < np.std(unit - clean) < 1.2


def test_eight_gaussians_without_noise_are_eight_points_on_a_circle():
    points = datasets.eight_gaussians(1000, noise=0.0, dtype="float64")
    assert len(np.unique(points.round(9), axis=0)) == 8
    np.testing.assert_allclose(np.linalg.norm(points, axis=1), np.sqrt(2.0))


def test_rings_without_noise_have_four_radii():
    points = datasets.rings(1000, noise=0.0, dtype="float64")
    radii = np.unique(np.linalg.norm(points, axis=1).round(9))
    np.testing.assert_allclose(radii / radii[0], [1, 2, 3, 4])


def test_checkerboard_uses_only_the_dark_squares():
    points = datasets.checkerboard(2000, dtype="float64")
    cell = np.floor(points * (2.0 / np.sqrt(3.0)) + 2.0)  # [n, 2] undo the scaling: squares 0..3
    assert cell.min() >= 0 and cell.max() <= 3
    assert (cell.sum(axis=1) % 2 == 0).all()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"n": 0}, ValueError, "n must be >= 1"),
        ({"n": 2.5}, TypeError, "n must be an integer"),
        ({"n": True}, TypeError, "n must be an integer"),
        ({"n": 10, "dtype": "int32"}, TypeError, "dtype"),
        ({"n": 10, "dtype": "float16"}, TypeError, "dtype"),
        ({"n": 10, "noise": -0.1}, ValueError, "noise"),
    ],
)
def test_toy_rejects_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        datasets.moons(**kwargs)


def test_toy_accepts_one_point():
    assert datasets.swiss_roll(1).shape == (1, 2)


# --------------------------------------------------------------------------
# Manifold
# --------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_manifold_shapes_and_dtypes(dtype):
    X, coords = manifold(64, dtype=dtype)
    assert X.shape == (64, 287) and X.dtype == np.dtype(dtype)
    assert coords.shape == (64, 2) and coords.dtype == np.dtype(dtype)
    assert manifold(10, dim=5)[0].shape == (10, 5)


@pytest.mark.parametrize("shape", TOY_SHAPES)
def test_manifold_returns_the_true_coordinates(shape):
    _, coords = manifold(200, shape=shape, seed=3, dtype="float64")
    np.testing.assert_array_equal(coords, TOYS[shape](200, seed=3, dtype="float64"))


def test_manifold_map_is_fixed_across_seeds():
    # The seed only draws the points; the same map lifts them every time.
    for seed in (0, 1, 2):
        X, coords = manifold(100, seed=seed, noise=0.0, dtype="float64")
        np.testing.assert_allclose(X, manifold_map(coords, dtype="float64"), rtol=0, atol=1e-12)


def test_manifold_noise_is_small_and_seeded():
    X, coords = manifold(500, seed=4, noise=0.01, dtype="float64")
    residual = X - manifold_map(coords, dtype="float64")  # [500, 287]
    assert 0.008 < residual.std() < 0.012
    np.testing.assert_array_equal(X, manifold(500, seed=4, noise=0.01, dtype="float64")[0])
    assert not np.array_equal(X, manifold(500, seed=5, noise=0.01, dtype="float64")[0])


@pytest.mark.parametrize("shape", TOY_SHAPES)
def test_manifold_features_are_roughly_standardised(shape):
    X, _ = manifold(4000, shape=shape, seed=9, dtype="float64")
    assert np.abs(X.mean(axis=0)).max() < 0.15
    variance = X.var(axis=0)  # [287]
    assert 0.8 < variance.min() and variance.max() < 1.25, (variance.min(), variance.max())


def test_manifold_rejects_bad_arguments():
    with pytest.raises(ValueError, match="shape must be one of"):
        manifold(10, shape="torus")
    with pytest.raises(ValueError, match="dim must be >= 2"):
        manifold(10, dim=1)
    with pytest.raises(ValueError, match=r"coords must have shape \[batch, 2\]"):
        manifold_map(np.zeros((10, 3)))


# --------------------------------------------------------------------------
# load_array: the user's own files
# --------------------------------------------------------------------------


def test_load_array_npy_round_trip(tmp_path):
    data = np.random.default_rng(0).standard_normal((20, 3))  # [20, 3] float64
    np.save(tmp_path / "x.npy", data)
    loaded = load_array(tmp_path / "x.npy", dtype="float64")
    np.testing.assert_array_equal(loaded, data)
    assert load_array(str(tmp_path / "x.npy")).dtype == np.float32  # str paths work too


def test_load_array_npy_accepts_integers(tmp_path):
    np.save(tmp_path / "counts.npy", np.arange(6).reshape(3, 2))
    np.testing.assert_array_equal(load_array(tmp_path / "counts.npy"), [[0, 1], [2, 3], [4, 5]])


def test_load_array_csv_round_trip(tmp_path):
    data = np.random.default_rng(0).standard_normal((20, 3))
    np.savetxt(tmp_path / "x.csv", data, delimiter=",")  # 18 significant digits: exact
    np.testing.assert_array_equal(load_array(tmp_path / "x.csv", dtype="float64"), data)


def test_load_array_csv_one_column_and_comments(tmp_path):
    (tmp_path / "y.csv").write_text("# a comment line\n1.5\n2\n-3\n")
    np.testing.assert_array_equal(load_array(tmp_path / "y.csv"), [[1.5], [2.0], [-3.0]])


def _expect_error(path, error, match, **kwargs):
    """load_array(path) raises ``error`` matching ``match`` and naming the path."""
    with pytest.raises(error, match=match) as info:
        load_array(path, **kwargs)
    assert str(path) in str(info.value)


def _write_npy(tmp_path, array):
    path = tmp_path / "data.npy"
    np.save(path, array)
    return path


def _write_csv(tmp_path, text):
    path = tmp_path / "data.csv"
    path.write_text(text)
    return path


def test_load_array_missing_file(tmp_path):
    _expect_error(tmp_path / "absent.npy", FileNotFoundError, "no such file")


def test_load_array_unknown_extension(tmp_path):
    path = tmp_path / "data.txt"
    path.write_text("1,2\n3,4\n")
    _expect_error(path, ValueError, r"unknown file type '\.txt'.*\.npy or \.csv")


@pytest.mark.parametrize("shape", [(10,), (2, 3, 4)])
def test_load_array_refuses_non_2d_arrays(tmp_path, shape):
    path = _write_npy(tmp_path, np.ones(shape))
    _expect_error(path, ValueError, r"expected a 2-D array.*reshape")


def test_load_array_refuses_fewer_than_two_rows(tmp_path):
    _expect_error(_write_npy(tmp_path, np.ones((1, 4))), ValueError, "at least 2 rows")
    _expect_error(_write_csv(tmp_path, "1,2,3\n"), ValueError, "at least 2 rows")
    _expect_error(_write_csv(tmp_path, ""), ValueError, "at least 2 rows")


def test_load_array_refuses_zero_columns(tmp_path):
    _expect_error(_write_npy(tmp_path, np.ones((3, 0))), ValueError, "no columns")


@pytest.mark.parametrize(
    "text",
    [
        "x,y\n1,2\n3,4\n",  # a header row
        "1,2\n3,four\n",  # a word among the numbers
        "1,2\n3,4,5\n",  # rows of different lengths
        "1,2,\n3,4,\n",  # a trailing comma: an empty field
    ],
)
def test_load_array_refuses_unparseable_csv(tmp_path, text):
    _expect_error(_write_csv(tmp_path, text), ValueError, "could not be parsed as comma-separated numbers")


def test_load_array_refuses_a_file_that_is_not_npy(tmp_path):
    path = tmp_path / "data.npy"
    path.write_text("1,2\n3,4\n")
    _expect_error(path, ValueError, r"not a valid NumPy \.npy file")


def test_load_array_refuses_nan_and_inf(tmp_path):
    _expect_error(_write_npy(tmp_path, np.array([[1.0, np.nan], [2.0, 3.0]])), ValueError, "NaN or infinite")
    _expect_error(_write_csv(tmp_path, "1,2\n3,inf\n"), ValueError, r"NaN or infinite.*row 1, column 1")


def test_load_array_refuses_values_that_overflow_float32(tmp_path):
    path = _write_npy(tmp_path, np.array([[1.0, 1e300], [2.0, 3.0]]))
    _expect_error(path, ValueError, "overflow float32")
    assert load_array(path, dtype="float64")[0, 1] == 1e300


@pytest.mark.parametrize(
    ("array", "match"),
    [
        (np.ones((3, 2), dtype=complex), "complex dtype"),
        (np.ones((3, 2), dtype=bool), "boolean dtype"),
        (np.array([["a", "b"], ["c", "d"]]), "text dtype"),
        (np.zeros(3, dtype=[("a", "f4"), ("b", "f4")]), "structured dtype"),
    ],
)
def test_load_array_refuses_non_real_dtypes(tmp_path, array, match):
    _expect_error(_write_npy(tmp_path, array), ValueError, match)


class _Canary:
    """Unpickling this object creates a file: proof that the pickle was run."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def test_load_array_never_unpickles(tmp_path):
    canary = tmp_path / "unpickled"
    path = tmp_path / "objects.npy"
    np.save(path, np.array([[_Canary(canary), 1], [2, 3]], dtype=object), allow_pickle=True)
    _expect_error(path, ValueError, r"object array \(pickled Python objects\)")
    assert not canary.exists()
    # The canary is real: unpickling the file on purpose does run it.
    np.load(path, allow_pickle=True)
    assert canary.exists()


def test_load_array_rejects_bad_dtype(tmp_path):
    path = _write_npy(tmp_path, np.ones((3, 2)))
    with pytest.raises(TypeError, match="dtype"):
        load_array(path, dtype="int64")


# --------------------------------------------------------------------------
# load_dataset: everything by name
# --------------------------------------------------------------------------


def test_dataset_names():
    assert DATASETS == ("digits", *TOY_SHAPES, "manifold")


def test_load_dataset_digits():
    X, labels = load_dataset("digits")
    assert X.shape == (1797, 64) and labels.shape == (1797,)
    X_sub, labels_sub = load_dataset("digits", 100, seed=1)
    assert X_sub.shape == (100, 64)
    # A subset of whole rows, labels kept with their images, in file order.
    rows = [np.flatnonzero((X == row).all(axis=1))[0] for row in X_sub[:10]]
    assert rows == sorted(rows)
    np.testing.assert_array_equal(labels[rows], labels_sub[:10])
    with pytest.raises(ValueError, match="n must be <= 1797"):
        load_dataset("digits", 2000)


@pytest.mark.parametrize("name", TOY_SHAPES)
def test_load_dataset_toys(name):
    X, extra = load_dataset(name, seed=2)
    assert extra is None and X.shape == (2000, 2)
    np.testing.assert_array_equal(X, TOYS[name](2000, seed=2))
    assert load_dataset(name, 30, dtype="float64")[0].shape == (30, 2)


def test_load_dataset_manifold():
    X, coords = load_dataset("manifold", 50, seed=1)
    assert X.shape == (50, 287) and coords.shape == (50, 2)
    np.testing.assert_array_equal(X, manifold(50, seed=1)[0])


@pytest.mark.parametrize("suffix", [".npy", ".csv"])
def test_load_dataset_files(tmp_path, suffix):
    data = np.arange(20.0).reshape(10, 2)
    path = tmp_path / f"mine{suffix}"
    if suffix == ".npy":
        np.save(path, data)
    else:
        np.savetxt(path, data, delimiter=",")
    for name in (path, str(path)):
        X, extra = load_dataset(name, dtype="float64")
        assert extra is None
        np.testing.assert_array_equal(X, data)
    assert load_dataset(path, 4)[0].shape == (4, 2)


def test_load_dataset_unknown_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown dataset 'mnist'; valid names are digits, moons"):
        load_dataset("mnist")


@pytest.mark.parametrize(
    ("n", "error"), [(0, ValueError), (-5, ValueError), ("10", TypeError), (1.0, TypeError)]
)
def test_load_dataset_validates_n(n, error):
    with pytest.raises(error, match="n must be"):
        load_dataset("moons", n)


def test_load_dataset_validates_dtype():
    with pytest.raises(TypeError, match="dtype"):
        load_dataset("moons", dtype="int32")
