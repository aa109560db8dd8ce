"""How good are the samples? Distances to the data, against the real-data floor.

Two disjoint halves A and B of the real data set the scale: FD(B, A) is what
a perfect generator of the same size would score (the "floor"), since even
two samples of the true distribution differ. The model's samples are
compared with the same half A, at the same size as B (the Frechet estimator
is biased by the sample size). A ratio FD(samples, A) / FD(B, A) near 1
means the samples are as close to the data as more real data would be.

``evaluate_run`` is the evaluation that cannot flatter: the floor over several
random splits and the samples over several seeds, each with its spread; two
feature spaces that share nothing; k-NN precision and recall; the
memorisation rate against held-out digits; and the VAE's reconstructions
scored the same way, the ceiling for a model that draws new digits; and
the training rows themselves, the score of a copier. ``evaluate_samples``
is its one-split, one-seed sketch, for tutorials.

Feature space: for the digits, the penultimate layer of a small classifier
trained on them (``ldm_np.evaluation.classifier``), the role Inception features play in
FID; for other data, the standardised data themselves.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ..backend import to_numpy
from ..guidance import draw_classes
from ..validation import check_array, check_callable, check_int
from .metrics import (
    frechet_distance,
    memorisation_rate,
    memorisation_threshold_spread,
    mmd,
    nearest_distance,
    precision_recall,
)


def _check_dataset(dataset: Any) -> str | None:
    """Return ``dataset`` if it is a data set's name (a str) or None, else TypeError."""
    if dataset is not None and not isinstance(dataset, str):
        raise TypeError(f"dataset must be a data set's name (a str) or None, got {type(dataset).__name__}")
    return dataset


def _check_model(model: Any, *methods: str) -> Any:
    """Return ``model`` if it has each of ``methods`` (a trained LatentDiffusion has all), else TypeError."""
    missing = [m for m in methods if not callable(getattr(model, m, None))]
    if missing:
        raise TypeError(
            f"model must have the method(s) {', '.join(missing)} of a trained LatentDiffusion, "
            f"got {type(model).__name__}"
        )
    return model


def _check_labels(labels: Any, n: int, model: Any) -> np.ndarray:
    """Return ``labels`` if they are n classes and ``model`` is class-conditional, else an error."""
    labels = np.asarray(to_numpy(labels))
    if labels.shape != (n,):
        raise ValueError(f"labels must hold one class per row of X, shape [{n}], got {list(labels.shape)}")
    if getattr(getattr(model, "config", None), "num_classes", None) is None:
        raise ValueError("labels were given, but the model is unconditional (num_classes=None)")
    return labels


def _check_rows(rows: Any, name: str, n: int) -> np.ndarray:
    """Return ``rows`` if it is an integer index array [k] (k >= 0) into n rows, else an error naming it."""
    if not hasattr(rows, "dtype") or rows.dtype.kind not in "iu":
        what = f"dtype {rows.dtype}" if hasattr(rows, "dtype") else type(rows).__name__
        raise TypeError(f"{name} must be an integer array of row indices, got {what}")
    if rows.ndim != 1:
        raise ValueError(f"{name} must be 1-D [rows], got shape {list(rows.shape)}")
    if rows.size and (rows.min() < 0 or rows.max() >= n):
        raise ValueError(f"{name} must index the {n} rows of X (0..{n - 1}), got {rows.min()}..{rows.max()}")
    return rows


def feature_fn(dataset: str | None, model: Any) -> tuple[Any, str]:
    """The feature map used for a data set, and its name."""
    if _check_dataset(dataset) == "digits":
        from .classifier import digit_feature_model

        clf = digit_feature_model()
        return clf.features, "digit-classifier features"
    _check_model(model, "standardize")
    return (lambda x: to_numpy(model.standardize(model.xp.asarray(x)))), "standardised data"


def split_halves(n: int, seed: int = 1234) -> tuple[np.ndarray, np.ndarray]:
    """Indices of two disjoint random halves of n rows."""
    perm = np.random.default_rng(check_int(seed, "seed", minimum=0)).permutation(check_int(n, "n", minimum=2))
    return perm[: n // 2], perm[n // 2 :]


def evaluate_samples(
    samples: np.ndarray, X: np.ndarray, features: Any, labels: np.ndarray | None = None, classify: Any = None
) -> dict[str, Any]:
    """Compare ``samples`` with the data ``X`` (both in data units) in a feature space, one split.

    A quick look: one random half split, one set of samples. The Frechet
    distance and MMD use as many samples as a real half holds (their
    estimates depend on the sample size); ``evaluate_run`` is the full
    evaluation, with spreads over splits and sample seeds.

    ``samples`` [m, d] and ``X`` [n, d] are float arrays; ``features`` maps
    rows to features; ``labels`` (integer array [n] or None) is not used by
    the metrics; ``classify`` (or None) maps rows to predicted classes.
    """
    check_array(samples, "samples", shape=(None, None))
    check_array(X, "X", shape=(None, None))
    check_callable(features, "features", "features(rows) -> array [rows, features]")
    if labels is not None and (not hasattr(labels, "dtype") or labels.dtype.kind not in "iu"):
        raise TypeError(f"labels must be an integer array [n] or None, got {type(labels).__name__}")
    if classify is not None:
        check_callable(classify, "classify", "classify(rows) -> integer array [rows]")
    a_idx, b_idx = split_halves(X.shape[0])
    matched = samples[: len(b_idx)]
    fa, fb, fs = features(X[a_idx]), features(X[b_idx]), features(matched)
    report: dict[str, Any] = {
        "num_samples": int(matched.shape[0]),
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
    _check_model(model, "sample")
    check_array(X, "X", shape=(None, None))
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


# --------------------------------------------------------------------------
# The evaluation that cannot flatter: matched sizes, spreads, two spaces
# --------------------------------------------------------------------------

NUM_SPLITS = 5  # random half splits of the real data: the floor and its spread
SAMPLE_SEEDS = 3  # sample seeds: the samples' scores and their spread
PR_K = 3  # the neighbour of k-NN precision and recall (Kynkaanniemi et al. use 3)
PCA_COMPONENTS = 20  # the second feature space: pixels projected on their top principal axes
MIN_HELD_OUT = 20  # fewer held-out rows give no usable 5th percentile for memorisation


def pca_features(X_fit: np.ndarray, num_components: int = PCA_COMPONENTS) -> Any:
    """The map x -> (x - mean) V_k [n, k]: projection on the top-k principal axes of ``X_fit``.

    X_fit - mean = U S V^T (SVD), V_k = the first k columns of V: the
    directions of largest variance of the data it is fitted on. No scaling
    (whitening would blow up the near-constant directions), no training: a
    feature space that shares nothing with the digit classifier.
    """
    check_array(X_fit, "X_fit", shape=(None, None))
    num_components = check_int(num_components, "num_components")
    X_fit = np.asarray(to_numpy(X_fit), dtype=np.float64)
    mean = X_fit.mean(axis=0)  # [d]
    _, _, vt = np.linalg.svd(X_fit - mean, full_matrices=False)  # vt [d, d]
    v_k = vt[: min(num_components, vt.shape[0])].T  # [d, k]
    return lambda x: (np.asarray(to_numpy(x), dtype=np.float64) - mean) @ v_k


def feature_spaces(dataset: str | None, X_train: np.ndarray) -> dict[str, Any]:
    """The feature spaces to report side by side, by name.

    Digits: the digit classifier's penultimate layer, and the pixels through
    PCA fitted on the training rows. Other data: PCA alone.
    """
    _check_dataset(dataset)
    k = min(PCA_COMPONENTS, check_array(X_train, "X_train", shape=(None, None)).shape[1])
    spaces: dict[str, Any] = {}
    if dataset == "digits":
        from .classifier import digit_feature_model

        clf = digit_feature_model()
        spaces[f"digit-classifier features ({clf.hidden_size})"] = clf.features
    spaces[f"pixels through PCA ({k})" if dataset == "digits" else f"data through PCA ({k})"] = pca_features(
        X_train, k
    )
    return spaces


def random_halves(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint random sets of ``size`` row indices out of n (2 size <= n)."""
    n, size = check_int(n, "n", minimum=2), check_int(size, "size")
    if 2 * size > n:
        raise ValueError(f"size must be at most n // 2 = {n // 2} (two disjoint sets), got {size}")
    seed = check_int(seed, "seed", minimum=0)
    perm = np.random.default_rng(seed).permutation(n)
    return perm[:size], perm[size : 2 * size]


def _mean_sd(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; 0 for a single value)."""
    v = np.asarray(values, dtype=np.float64)
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def score_sets(
    sets: dict[str, list[np.ndarray]],
    X: np.ndarray,
    spaces: dict[str, Any],
    *,
    size: int,
    num_splits: int = NUM_SPLITS,
    k: int = PR_K,
) -> dict[str, Any]:
    """Frechet distance and k-NN precision/recall of each set against random halves of X.

    For split j = 0..num_splits-1, A_j and B_j are disjoint random halves of
    X with ``size`` rows each. The real floor is FD(B_j, A_j); a generated
    set G (``size`` rows) scores FD(G, A_j), averaged over the splits. Every
    distance is at the one size n = ``size``, so the bias of the estimator
    (about d(d+1)/(2n) for d features) is the same for the floor and for G.

    ``sets`` maps a name to a list of arrays [size, d] (one per sample seed)
    or to a callable (indices of B_j) -> array [size, d] (the VAE's
    reconstructions of B_j). Returns, per space and per name, the per-seed
    (or per-split) FDs and precision/recall, and the floor's per-split values.
    """
    if not isinstance(sets, dict):
        raise TypeError(
            f"sets must be a dict {{name: list of arrays or callable}}, got {type(sets).__name__}"
        )
    check_array(X, "X", shape=(None, None))
    if not isinstance(spaces, dict) or not all(callable(phi) for phi in spaces.values()):
        raise TypeError(
            f"spaces must be a dict {{name: feature map}} of callables, got {type(spaces).__name__}"
        )
    size, num_splits, k = check_int(size, "size"), check_int(num_splits, "num_splits"), check_int(k, "k")
    splits = [random_halves(X.shape[0], size, seed) for seed in range(num_splits)]
    out: dict[str, Any] = {}
    for space, phi in spaces.items():
        res: dict[str, Any] = {"real": {"fd": [], "precision": [], "recall": []}}
        feats_a = [phi(X[a]) for a, _ in splits]
        for (_, b), fa in zip(splits, feats_a, strict=True):
            fb = phi(X[b])
            res["real"]["fd"].append(frechet_distance(fb, fa))
            p, r = precision_recall(fa, fb, k)
            res["real"]["precision"].append(p)
            res["real"]["recall"].append(r)
        for name, group in sets.items():
            scores: dict[str, list[float]] = {"fd": [], "precision": [], "recall": []}
            if callable(group):  # one set per split, made from B_j
                for (_, b), fa in zip(splits, feats_a, strict=True):
                    fg = phi(group(b))
                    p, r = precision_recall(fa, fg, k)
                    for key, v in (("fd", frechet_distance(fg, fa)), ("precision", p), ("recall", r)):
                        scores[key].append(v)
            else:  # one set per sample seed, each against every split
                for g in group:
                    fg = phi(g)
                    per = [(frechet_distance(fg, fa), *precision_recall(fa, fg, k)) for fa in feats_a]
                    for key, v in zip(("fd", "precision", "recall"), np.mean(per, axis=0), strict=True):
                        scores[key].append(float(v))
            res[name] = scores
        out[space] = res
    return out


def evaluate_run(
    model: Any,
    X: np.ndarray,
    train_idx: np.ndarray,
    held_idx: np.ndarray,
    *,
    dataset: str | None = None,
    num_samples: int | None = None,
    sample_seeds: int = SAMPLE_SEEDS,
    num_splits: int = NUM_SPLITS,
    k: int = PR_K,
    sampler: str = "ddim",
    num_inference_steps: int = 50,
    seed: int = 0,
    labels: np.ndarray | None = None,
) -> dict[str, Any]:
    """The full evaluation of a trained model on the real data X (data units, [n, d]).

    - Sizes: n = min(num_samples, len(X) // 2) rows in every set compared
      (generated sets, each real half, the reconstructions).
    - Frechet distance and k-NN precision/recall in each of ``feature_spaces``,
      against ``num_splits`` random halves (``score_sets``): the real floor
      with its spread over splits, the samples with their spread over
      ``sample_seeds`` seeds (seed, seed + 1, ...), and the VAE's
      reconstructions (posterior mean, decoded) of the other half, the ceiling
      a model that draws new rows cannot beat;
    - ``sample_seeds`` sets of ``size`` training rows themselves (a copier's
      samples), scored the same way: the score that copying the training set
      would get. The real halves share most of their rows with the training
      set, so copies score below the floor; a ratio below 1 is then read with
      the memorisation rate beside it.
    - Memorisation in data space (``memorisation_rate``), against the
      training rows ``X[train_idx]``, with the threshold from the held-out
      rows ``X[held_idx]``, for each sample set, and the part of its spread
      that comes from the held-out rows (``memorisation_threshold_spread``);
      None with fewer than 20 held-out rows.
    - ``labels`` (X's classes, ints [n]; class-conditional models only): each
      sample's class is drawn from the frequencies of ``labels[train_idx]``
      (``guidance.draw_classes``, seed ``seed + i`` for sample seed i) and
      sampled at guidance w = 1, so the samples aim at p(x) = sum_k p(k)
      p(x | k). Without labels a class-conditional model samples its null label.
    """
    _check_model(model, "sample", "encode", "decode")
    check_array(X, "X", shape=(None, None))
    train_idx = _check_rows(train_idx, "train_idx", X.shape[0])
    held_idx = _check_rows(held_idx, "held_idx", X.shape[0])
    _check_dataset(dataset)
    num_samples = None if num_samples is None else check_int(num_samples, "num_samples")
    sample_seeds, num_splits = check_int(sample_seeds, "sample_seeds"), check_int(num_splits, "num_splits")
    k, seed = check_int(k, "k"), check_int(seed, "seed", minimum=0)
    X = to_numpy(X)
    if labels is not None:
        labels = _check_labels(labels, X.shape[0], model)
    size = X.shape[0] // 2 if num_samples is None else min(num_samples, X.shape[0] // 2)

    def classes(i: int) -> dict[str, Any]:
        return {} if labels is None else {"labels": draw_classes(labels[train_idx], size, seed + i)}

    started = time.perf_counter()
    samples = [
        to_numpy(
            model.sample(
                size, sampler=sampler, num_inference_steps=num_inference_steps, seed=seed + i, **classes(i)
            )
        )
        for i in range(sample_seeds)
    ]
    sampling_seconds = time.perf_counter() - started

    def reconstruct(rows: np.ndarray) -> np.ndarray:
        return to_numpy(model.decode(model.encode(X[rows])))

    copies = [
        X[np.random.default_rng(seed + i).choice(train_idx, size, replace=len(train_idx) < size)]
        for i in range(sample_seeds)
    ]

    spaces = feature_spaces(dataset, X[train_idx])
    report: dict[str, Any] = {
        "size": size,
        "num_real": int(X.shape[0]),
        "num_splits": num_splits,
        "sample_seeds": sample_seeds,
        "k": k,
        "seed": seed,
        "sampler": sampler,
        "steps": num_inference_steps,
        "sampling_seconds": sampling_seconds,
        "classes_drawn": labels is not None,
        "spaces": score_sets(
            {"VAE reconstructions": reconstruct, "training rows (copies)": copies, "samples": samples},
            X,
            spaces,
            size=size,
            num_splits=num_splits,
            k=k,
        ),
        "num_held_out": len(held_idx),
        "memorisation": None,
        "memorisation_threshold_sd": None,
    }
    if len(held_idx) >= MIN_HELD_OUT:
        report["memorisation"] = [memorisation_rate(s, X[train_idx], X[held_idx]) for s in samples]
        report["memorisation_threshold_sd"] = [
            memorisation_threshold_spread(s, X[train_idx], X[held_idx], seed=seed) for s in samples
        ]
    if dataset == "digits":
        from .classifier import digit_feature_model

        report["class_counts"] = np.bincount(digit_feature_model().predict(samples[0]), minlength=10).tolist()
    return report


def summarise(report: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers of ``evaluate_run``'s report, per feature space.

    With held-out rows, also ``"memorisation"``: (mean, sd over sample seeds)
    of the rate, and ``"memorisation_threshold_sd"``: the rate's bootstrap sd
    from the held-out rows that set its threshold, averaged over sample seeds.

    ratio = mean FD of the set / mean FD of the real floor; its spread is
    the sd over seeds (or splits) of each FD divided by the same mean floor.
    """
    out: dict[str, Any] = {}
    for space, res in report["spaces"].items():
        floor = float(np.mean(res["real"]["fd"]))
        out[space] = {
            name: {
                "fd": _mean_sd(s["fd"]),
                "ratio": _mean_sd([v / floor for v in s["fd"]]),
                "precision": _mean_sd(s["precision"]),
                "recall": _mean_sd(s["recall"]),
            }
            for name, s in res.items()
        }
    if report.get("memorisation") is not None:
        out["memorisation"] = _mean_sd(report["memorisation"])
        out["memorisation_threshold_sd"] = float(np.mean(report["memorisation_threshold_sd"]))
    return out


def format_table(report: dict[str, Any]) -> str:
    """The evaluation as a text table: each feature space, then memorisation."""
    r, summary = report, summarise(report)

    def pm(ms: tuple[float, float], fmt: str = "#.3g") -> str:
        return f"{ms[0]:{fmt}} ± {ms[1]:{fmt}}"

    lines = [
        f"evaluation: {r['size']} rows in every set compared: {r['sample_seeds']} sample seeds "
        f"({r['sampler']}, {r['steps']} steps, {r['sampling_seconds']:.1f} s), {r['num_splits']} random half "
        f"splits of the {r['num_real']} real rows; k-NN precision/recall with k = {r['k']}",
        "Frechet distance: mean ± sd over splits (real floor, VAE reconstructions) or sample seeds (copies, samples);"
        " ratio = FD / mean real floor",
    ]
    if r.get("classes_drawn"):
        lines.append(
            "samples: class-conditional, each sample's class drawn from the training rows' class frequencies, "
            "guidance w = 1"
        )
    for space in r["spaces"]:
        lines.append(f"-- {space}")
        lines.append(f"{'':<22}{'Frechet distance':>20}{'ratio':>14}{'precision':>11}{'recall':>8}")
        for name, s in summary[space].items():
            label = "real floor (halves)" if name == "real" else name
            lines.append(
                f"{label:<22}{pm(s['fd']):>20}{pm(s['ratio'], '.2f'):>14}"
                f"{s['precision'][0]:>11.2f}{s['recall'][0]:>8.2f}"
            )
    if "memorisation" in summary:
        m = summary["memorisation"]
        lines.append(
            f"memorisation (data space): {100 * m[0]:.1f}% ± {100 * m[1]:.1f}% of samples nearer a training row than "
            f"the 5th percentile of the {r['num_held_out']} held-out rows' distances (real held-out data: 5% by construction)"
        )
        lines.append(
            f"  ± is the sd over sample seeds; the choice of the {r['num_held_out']} held-out rows that set the "
            f"threshold adds ± {100 * summary['memorisation_threshold_sd']:.1f}% (bootstrap)"
        )
    else:
        lines.append(
            f"memorisation: not measured ({r['num_held_out']} held-out rows; train with --holdout {MIN_HELD_OUT} or more)"
        )
    if "class_counts" in r:
        counts = r["class_counts"]
        lines.append(
            f"classes of the seed-{r['seed']} samples (0-9): {counts}  (min {min(counts)}, max {max(counts)})"
        )
    return "\n".join(lines)
