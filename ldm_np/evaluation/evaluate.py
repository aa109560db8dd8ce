"""How good are the samples? Distances to the data, against the real-data floor.

Two disjoint halves A and B of the real data set the scale: FD(B, A) is what
a perfect generator of the same size would score (the "floor"), since even
two samples of the true distribution differ. The model's samples are
compared with the same half A. A ratio FD(samples, A) / FD(B, A) near 1 means
the samples are as close to the data as more real data would be.

Feature space: for the digits, the penultimate layer of a small classifier
trained on them (``ldm_np.evaluation.classifier``), the role Inception features play in
FID; for other data, the standardised data themselves.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ..backend import to_numpy
from .metrics import frechet_distance, mmd, nearest_distance


def feature_fn(dataset: str | None, model: Any) -> tuple[Any, str]:
    """The feature map used for a data set, and its name."""
    if dataset == "digits":
        from .classifier import digit_feature_model

        clf = digit_feature_model()
        return clf.features, "digit-classifier features"
    return (lambda x: to_numpy(model.standardize(model.xp.asarray(x)))), "standardised data"


def split_halves(n: int, seed: int = 1234) -> tuple[np.ndarray, np.ndarray]:
    """Indices of two disjoint random halves of n rows."""
    perm = np.random.default_rng(seed).permutation(n)
    return perm[: n // 2], perm[n // 2 :]


def evaluate_samples(
    samples: np.ndarray, X: np.ndarray, features: Any, labels: np.ndarray | None = None, classify: Any = None
) -> dict[str, Any]:
    """Compare ``samples`` with the data ``X`` (both in data units) in a feature space."""
    a_idx, b_idx = split_halves(X.shape[0])
    fa, fb, fs = features(X[a_idx]), features(X[b_idx]), features(samples)
    report: dict[str, Any] = {
        "num_samples": int(samples.shape[0]),
        "fd": frechet_distance(fs, fa),
        "fd_floor": frechet_distance(fb, fa),
        "mmd": mmd(fs, fa),
        "mmd_floor": mmd(fb, fa),
        # Copies of training images would sit at distance ~0 from the data.
        "nn_distance": float(nearest_distance(samples, X).mean()),
        "nn_distance_floor": float(nearest_distance(X[b_idx], X[a_idx]).mean()),
    }
    report["fd_ratio"] = report["fd"] / report["fd_floor"]
    if classify is not None:
        pred = classify(samples)
        counts = np.bincount(pred, minlength=10)
        report["class_counts"] = counts.tolist()
    return report


def evaluate_model(
    model: Any,
    X: np.ndarray,
    labels: np.ndarray | None = None,
    *,
    dataset: str | None = None,
    num_samples: int = 1000,
    sampler: str = "ddim",
    num_inference_steps: int = 50,
    seed: int = 0,
) -> dict[str, Any]:
    """Sample ``num_samples`` from ``model`` and evaluate them against ``X``."""
    features, space = feature_fn(dataset, model)
    started = time.perf_counter()
    samples = to_numpy(
        model.sample(num_samples, sampler=sampler, num_inference_steps=num_inference_steps, seed=seed)
    )
    seconds = time.perf_counter() - started
    classify = None
    if dataset == "digits":
        from .classifier import digit_feature_model

        classify = digit_feature_model().predict
    report = evaluate_samples(samples, np.asarray(X), features, labels, classify)
    report.update(
        {
            "feature_space": space,
            "sampler": sampler,
            "steps": num_inference_steps,
            "sampling_seconds": seconds,
        }
    )
    return report


def format_report(r: dict[str, Any]) -> str:
    """A short table of an evaluation report."""
    how = ""
    if "sampler" in r:
        how = f" ({r['sampler']}, {r['steps']} steps, {r['sampling_seconds']:.1f} s)"
    lines = [
        f"evaluation: {r['num_samples']} samples{how}, feature space: {r.get('feature_space', 'as given')}",
        f"{'metric':<28}{'samples':>12}{'real floor':>12}{'ratio':>8}",
        f"{'Frechet distance':<28}{r['fd']:>12.4g}{r['fd_floor']:>12.4g}{r['fd_ratio']:>8.2f}",
        f"{'MMD^2 (RBF)':<28}{r['mmd']:>12.4g}{r['mmd_floor']:>12.4g}{'':>8}",
        f"{'distance to nearest datum':<28}{r['nn_distance']:>12.4g}{r['nn_distance_floor']:>12.4g}{r['nn_distance'] / r['nn_distance_floor']:>8.2f}",
    ]
    if "class_counts" in r:
        counts = r["class_counts"]
        lines.append(f"classes of samples (0-9): {counts}  (min {min(counts)}, max {max(counts)})")
    return "\n".join(lines)
