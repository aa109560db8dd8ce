"""Tests for the evaluation protocol of ldm_np.evaluation.evaluate on models with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from ldm_np.evaluation.evaluate import (
    evaluate_run,
    format_table,
    pca_features,
    random_halves,
    score_sets,
    summarise,
)


class ReplayModel:
    """A stand-in "model" whose samples are rows of a fixed pool and whose VAE is the identity.

    sample(n, seed) draws n rows of ``pool`` without replacement, so a pool of
    training rows is a generator that copies its training set, and a pool of
    fresh draws from the data's distribution is a perfect generator.
    """

    def __init__(self, pool: np.ndarray, shift: float = 0.0) -> None:
        self.pool, self.shift = pool, shift

    def sample(self, n: int, *, seed: int = 0, **_: object) -> np.ndarray:
        rows = np.random.default_rng(seed).choice(len(self.pool), n, replace=False)
        return self.pool[rows] + self.shift

    def encode(self, x: np.ndarray) -> np.ndarray:
        return x

    def decode(self, z: np.ndarray) -> np.ndarray:
        return z


def gaussian_data(n: int, seed: int) -> np.ndarray:
    """Rows of one fixed correlated Gaussian in 6 dimensions."""
    mix = np.random.default_rng(99).standard_normal((6, 6)) / 2 + np.eye(6)
    return np.random.default_rng(seed).standard_normal((n, 6)) @ mix


def split(n: int, held: int) -> tuple[np.ndarray, np.ndarray]:
    return np.arange(held, n), np.arange(held)


def test_pca_features_project_on_the_axes_of_largest_variance():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((500, 3)) * np.array([5.0, 1.0, 0.1])
    phi = pca_features(x, 1)
    f = phi(x)
    assert f.shape == (500, 1)
    # The first principal axis is the first coordinate (up to sign).
    np.testing.assert_allclose(np.abs(f[:, 0]), np.abs(x[:, 0] - x[:, 0].mean()), atol=0.1)


def test_random_halves_are_disjoint_and_of_the_given_size():
    a, b = random_halves(101, 50, seed=3)
    assert len(a) == len(b) == 50 and not set(a) & set(b)


def test_reconstructions_that_are_exact_copies_score_the_floor_exactly():
    X = gaussian_data(400, 1)
    spaces = {"identity": lambda x: np.asarray(x, dtype=np.float64)}
    res = score_sets({"recon": lambda rows: X[rows]}, X, spaces, size=200, num_splits=3)["identity"]
    assert res["recon"] == res["real"]


def test_a_perfect_generator_scores_near_the_floor_and_a_copier_is_caught():
    X = gaussian_data(1200, 1)
    train, held = split(len(X), 200)
    fresh = ReplayModel(gaussian_data(3000, 2))
    report = evaluate_run(fresh, X, train, held, num_samples=None, sample_seeds=3, num_splits=4)
    assert report["size"] == 600
    s = summarise(report)
    for space in report["spaces"]:
        ratio, spread = s[space]["samples"]["ratio"]
        assert 0.7 < ratio < 1.4 and spread > 0.0
        real_recall = s[space]["real"]["recall"][0]
        assert abs(s[space]["samples"]["recall"][0] - real_recall) < 0.05
        assert s[space]["VAE reconstructions"]["ratio"][0] == pytest.approx(1.0)
    assert 0.02 < s["memorisation"][0] < 0.09
    # 200 held-out rows set the threshold: about sqrt(0.05 * 0.95 / 200) = 1.5 points of spread from them.
    assert 0.007 < s["memorisation_threshold_sd"] < 0.03
    assert "held-out rows that set the threshold adds" in format_table(report)

    # The real halves share most rows with the training set, so copies of it score below the floor:
    # a ratio below 1 is a claim to check against the memorisation rate.
    for space in report["spaces"]:
        assert s[space]["training rows (copies)"]["ratio"][0] < 0.8 * s[space]["samples"]["ratio"][0]

    copier = ReplayModel(X[train])
    assert (
        summarise(evaluate_run(copier, X, train, held, sample_seeds=2, num_splits=2))["memorisation"][0]
        == 1.0
    )


def test_a_shifted_generator_loses_precision_recall_and_its_ratio_grows():
    X = gaussian_data(1000, 1)
    train, held = split(len(X), 100)
    report = evaluate_run(ReplayModel(gaussian_data(2000, 2), shift=2.0), X, train, held, sample_seeds=2)
    s = summarise(report)
    for space in report["spaces"]:
        real, samples = s[space]["real"], s[space]["samples"]
        assert samples["ratio"][0] > 5.0
        assert samples["precision"][0] < real["precision"][0] - 0.2
        assert samples["recall"][0] < real["recall"][0] - 0.2


def test_the_table_names_every_row_and_space_and_skips_memorisation_without_held_out_rows():
    X = gaussian_data(300, 1)
    train, held = split(len(X), 5)
    report = evaluate_run(ReplayModel(gaussian_data(600, 2)), X, train, held, sample_seeds=2, num_splits=2)
    assert report["memorisation"] is None
    text = format_table(report)
    for words in (
        "Frechet distance",
        "real floor",
        "VAE reconstructions",
        "copies",
        "samples",
        "precision",
        "recall",
    ):
        assert words in text
    assert "memorisation: not measured" in text and "data through PCA (6)" in text


class ClassReplayModel(ReplayModel):
    """A class-conditional stand-in: sample(n, labels=y) returns, for each y_i, a pool row of class y_i.

    With labels=None it returns rows of class 0 only (its "null label"), a
    generator that has lost every other class.
    """

    def __init__(self, pool: np.ndarray, pool_labels: np.ndarray) -> None:
        super().__init__(pool)
        self.pool_labels = pool_labels
        self.config = type("Config", (), {"num_classes": int(pool_labels.max()) + 1})()
        self.asked: list[np.ndarray] = []

    def sample(self, n: int, *, seed: int = 0, labels: np.ndarray | None = None, **_: object) -> np.ndarray:
        labels = np.zeros(n, dtype=np.int64) if labels is None else labels
        self.asked.append(labels)
        rng = np.random.default_rng(seed)
        return np.stack([self.pool[rng.choice(np.flatnonzero(self.pool_labels == k))] for k in labels])


def two_class_data(n: int, seed: int, share: float) -> tuple[np.ndarray, np.ndarray]:
    """Class 1 (a share of the rows) sits 4 units from class 0 in every coordinate."""
    y = (np.random.default_rng(seed + 100).random(n) < share).astype(np.int64)
    return gaussian_data(n, seed) + 4.0 * y[:, None], y


def test_labels_draw_each_samples_class_from_the_training_frequencies():
    X, y = two_class_data(1000, 1, share=0.3)
    train, held = split(len(X), 100)
    pool, pool_y = two_class_data(4000, 2, share=0.5)
    model = ClassReplayModel(pool, pool_y)
    with_classes = summarise(evaluate_run(model, X, train, held, sample_seeds=2, labels=y))
    assert len(model.asked) == 2 and not np.array_equal(model.asked[0], model.asked[1])
    for asked in model.asked:  # 450 draws of a 30% class: 135 +- 10
        assert abs(asked.mean() - y[train].mean()) < 0.07
    null_only = summarise(evaluate_run(model, X, train, held, sample_seeds=2))  # class 0 only
    for space in with_classes:
        if "memorisation" in space:
            continue
        assert with_classes[space]["samples"]["ratio"][0] < 2.0
        assert null_only[space]["samples"]["ratio"][0] > 5.0
    assert "class frequencies" in format_table(evaluate_run(model, X, train, held, sample_seeds=1, labels=y))


def test_labels_are_refused_for_an_unconditional_model_or_the_wrong_length():
    X, y = two_class_data(300, 1, share=0.5)
    train, held = split(len(X), 50)
    with pytest.raises(ValueError, match="unconditional"):
        evaluate_run(ReplayModel(X), X, train, held, labels=y)
    with pytest.raises(ValueError, match="one class per row"):
        evaluate_run(ClassReplayModel(X, y), X, train, held, labels=y[:-1])
    with pytest.raises(TypeError, match="integer"):
        evaluate_run(ClassReplayModel(X, y), X, train, held, labels=y.astype(float))
