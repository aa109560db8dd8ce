"""Sample-quality metrics: how far a set of samples is from a set of data.

Each metric compares two point clouds, ``a`` [n, d] and ``b`` [m, d]:

- ``frechet_distance``: fit a Gaussian to each cloud and take the Frechet
  (2-Wasserstein) distance between the two Gaussians. Computed on classifier
  features this is FID (Heusel et al., 2017); here the features come from
  ``ldm_np.evaluation.classifier.digit_feature_model``.
- ``mmd``: the unbiased squared maximum mean discrepancy with a Gaussian
  kernel (Gretton et al., 2012). It sees every moment, not only the first two,
  and its estimate has no bias, so two samples of one distribution score
  about 0 (occasionally a little below).
- ``nearest_distance``: for each row of ``a``, the distance to its nearest
  row of ``b``. Samples against training data: very small distances mean the
  model copies its training set; large ones mean it draws off the data.
- ``precision_recall``: k-NN precision and recall (Kynkaanniemi et al.,
  2019): the share of samples inside the data's manifold (quality), and the
  share of the data inside the samples' manifold (coverage).
- ``memorisation_rate``: the share of samples nearer a training row than
  held-out real rows usually come (below their 5th percentile), and
  ``memorisation_threshold_spread``: how much that share moves with the
  choice of held-out rows that set the threshold.

The metrics are not in the training loop, so they run on the host in NumPy
and float64: CuPy inputs are copied to the host at the entrance.

Reading the numbers. Every estimate from finite samples carries sampling
noise, and FD also a positive bias that shrinks like 1/n. Compare models with
the same n, and measure the "floor" first: the score of two disjoint halves
of the real data. A model cannot be told apart from the data once it reaches
the floor.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from ..backend import to_numpy
from ..validation import check_float, check_int

__all__ = [
    "frechet_distance",
    "frechet_distance_gaussians",
    "knn_radii",
    "memorisation_rate",
    "memorisation_threshold_spread",
    "mmd",
    "nearest_distance",
    "nearest_neighbour",
    "precision_recall",
]

# Entries of a distance matrix held at once by the chunked loops (16 M float64
# = 128 MB). Bounds memory whatever the sizes of a and b.
_CHUNK_ENTRIES = 1 << 24

# The median heuristic looks at no more than this many pooled rows (~500 k
# pairs): the median of a few hundred thousand distances is already stable.
_MEDIAN_ROWS = 1000


# --------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------


def _as_samples(x: Any, name: str, *, min_rows: int = 2) -> np.ndarray:
    """``x`` as a float64 host array [rows, features], or an error naming ``name``."""
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise TypeError(f"{name} must be an array [samples, features], got {type(x).__name__}")
    x = np.asarray(to_numpy(x))
    if x.dtype.kind != "f":
        raise TypeError(
            f"{name} must be a floating-point array, got dtype {x.dtype}; convert with .astype('float64')"
        )
    if x.ndim != 2:
        raise ValueError(
            f"{name} must be 2-D [samples, features], got shape {list(x.shape)}; "
            "flatten images first, e.g. x.reshape(len(x), -1)"
        )
    if x.shape[0] < min_rows:
        raise ValueError(f"{name} needs at least {min_rows} rows (samples), got {x.shape[0]}")
    if x.shape[1] < 1:
        raise ValueError(f"{name} has no features (columns), shape {list(x.shape)}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinity")
    return x.astype(np.float64, copy=False)


def _host_float64(x: Any, name: str) -> np.ndarray:
    """``x`` as a float64 host array, or a TypeError naming ``name`` when it holds no numbers."""
    try:
        return np.asarray(to_numpy(x), dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be a real-valued array, got {type(x).__name__}") from exc


def _check_widths(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"a and b must have the same number of features, got a: {a.shape[1]} and b: {b.shape[1]}"
        )


# --------------------------------------------------------------------------
# Frechet distance
# --------------------------------------------------------------------------


def _sqrt_psd(s: np.ndarray) -> np.ndarray:
    """Square root of a symmetric PSD matrix: V diag(sqrt(w)) V^T from eigh.

    Eigenvalues a rounding error below 0 are clipped to 0 first.
    """
    w, v = np.linalg.eigh(s)  # w [d], v [d, d]
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T  # [d, d]


def frechet_distance_gaussians(mu1: Any, cov1: Any, mu2: Any, cov2: Any) -> float:
    """Frechet distance between N(mu1, cov1) and N(mu2, cov2).

        FD = ||mu1 - mu2||^2 + tr(cov1 + cov2 - 2 (cov1^(1/2) cov2 cov1^(1/2))^(1/2))

    This is the squared 2-Wasserstein distance between the two Gaussians
    (Dowson & Landau, 1982). For diagonal (or commuting) covariances it is
    ||mu1 - mu2||^2 + sum_i (sqrt(a_i) - sqrt(b_i))^2 over their eigenvalues.

    Why only ``eigh``: FID code usually calls ``scipy.linalg.sqrtm(cov1 @ cov2)``,
    a general square root of a non-symmetric matrix, which comes back complex
    from rounding and needs its imaginary part thrown away. The product
    M = cov1^(1/2) cov2 cov1^(1/2) has the same trace of square root (it is
    similar to cov1 cov2), but it is symmetric positive semi-definite, so its
    eigenvalues are real and >= 0 and tr(M^(1/2)) = sum_i sqrt(lambda_i(M)).
    Two symmetric eigendecompositions do the whole job in real arithmetic;
    eigenvalues a rounding error below 0 are clipped to 0.

    Parameters
    ----------
    mu1, mu2 : arrays [d], the means.
    cov1, cov2 : arrays [d, d], symmetric positive semi-definite covariances.

    Returns
    -------
    The distance as a Python float, >= 0 (computed in float64).

    Notes
    -----
    Precision: an eigenvalue of M that should be 0 comes out as rounding
    noise of size ~1e-16 ||M||, and its square root as ~1e-8 ||M||^(1/2).
    With singular covariances the result is therefore good to about 1e-8
    relative, not 1e-15; any matrix square root shares this limit.
    """
    mus, covs = [], []
    for name, mu in (("mu1", mu1), ("mu2", mu2)):
        mu = _host_float64(mu, name)
        if mu.ndim != 1 or mu.shape[0] < 1:
            raise ValueError(f"{name} must be a 1-D array [features], got shape {list(mu.shape)}")
        mus.append(mu)
    d = mus[0].shape[0]
    if mus[1].shape[0] != d:
        raise ValueError(f"mu1 and mu2 must have the same length, got {d} and {mus[1].shape[0]}")
    for name, cov in (("cov1", cov1), ("cov2", cov2)):
        cov = _host_float64(cov, name)
        if cov.shape != (d, d):
            raise ValueError(f"{name} must have shape [{d}, {d}] to match the means, got {list(cov.shape)}")
        if not np.isfinite(cov).all():
            raise ValueError(f"{name} contains NaN or infinity")
        scale = max(float(np.abs(cov).max()), 1e-300)
        if np.abs(cov - cov.T).max() > 1e-8 * scale:
            raise ValueError(f"{name} must be symmetric (a covariance matrix)")
        covs.append(0.5 * (cov + cov.T))  # exactly symmetric, so eigh sees what it assumes
    for name, mu in (("mu1", mus[0]), ("mu2", mus[1])):
        if not np.isfinite(mu).all():
            raise ValueError(f"{name} contains NaN or infinity")

    diff = mus[0] - mus[1]  # [d]
    root1 = _sqrt_psd(covs[0])  # [d, d]
    m = root1 @ covs[1] @ root1  # [d, d], symmetric PSD up to rounding
    m = 0.5 * (m + m.T)
    trace_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh(m), 0.0, None)).sum()
    fd = diff @ diff + np.trace(covs[0]) + np.trace(covs[1]) - 2.0 * trace_sqrt
    # FD >= 0 exactly; for two equal inputs rounding can leave about -1e-15.
    return max(float(fd), 0.0)


def frechet_distance(a: Any, b: Any) -> float:
    """Frechet distance between Gaussians fitted to the rows of ``a`` and ``b``.

        FD = ||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a^(1/2) S_b S_a^(1/2))^(1/2))

    with mu the sample mean and S the sample covariance (divided by n - 1).
    On classifier features this is FID's formula (Heusel et al., 2017); see
    ``frechet_distance_gaussians`` for how it is computed with ``eigh`` alone.

    Parameters
    ----------
    a : array [n, d], n >= 2.
    b : array [m, d], m >= 2.

    Returns
    -------
    The distance as a Python float, >= 0.

    Notes
    -----
    The estimate from samples is biased upwards, by about
    d / n + d / m + d (d + 1) / 4 (1 / n + 1 / m) for unit covariances
    (two samples of one distribution do not score 0), so compare only scores
    computed with the same sample sizes. With n <= d the sample covariance is
    singular (rank n - 1 < d): the distance is still defined, but dominated by
    that bias, and a warning says so.
    """
    a = _as_samples(a, "a")
    b = _as_samples(b, "b")
    _check_widths(a, b)
    d = a.shape[1]
    for name, x in (("a", a), ("b", b)):
        if x.shape[0] <= d:
            warnings.warn(
                f"{name} has {x.shape[0]} rows for {d} features: its sample covariance is "
                f"singular (rank <= {x.shape[0] - 1}), so the Frechet distance is dominated by "
                "sampling error; use more samples than features",
                UserWarning,
                stacklevel=2,
            )
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)  # [d]
    cov_a = np.cov(a, rowvar=False).reshape(d, d)  # [d, d]; reshape keeps d = 1 two-dimensional
    cov_b = np.cov(b, rowvar=False).reshape(d, d)
    return frechet_distance_gaussians(mu_a, cov_a, mu_b, cov_b)


# --------------------------------------------------------------------------
# Pairwise distances, in chunks
# --------------------------------------------------------------------------


def _sq_dists(x: np.ndarray, y: np.ndarray, y_sq: np.ndarray) -> np.ndarray:
    """||x_i - y_j||^2 = |x_i|^2 - 2 x_i . y_j + |y_j|^2, [rows of x, rows of y], >= 0.

    One matrix product does the work; rounding can make the expansion a
    little negative for near-equal rows, hence the clip.
    """
    x_sq = np.einsum("ij,ij->i", x, x)  # [rows]
    d2 = x @ y.T  # [rows, m]
    d2 *= -2.0
    d2 += x_sq[:, None]
    d2 += y_sq[None, :]
    return np.maximum(d2, 0.0, out=d2)


def _chunk_rows(m: int) -> int:
    """Rows of the left array per chunk so a chunk's distance block fits the budget."""
    return max(1, _CHUNK_ENTRIES // max(m, 1))


def _kernel_sum(x: np.ndarray, y: np.ndarray, gamma: float) -> float:
    """sum_{i, j} exp(-gamma ||x_i - y_j||^2), chunked over the rows of x."""
    y_sq = np.einsum("ij,ij->i", y, y)  # [m]
    step = _chunk_rows(y.shape[0])
    total = 0.0
    for start in range(0, x.shape[0], step):
        d2 = _sq_dists(x[start : start + step], y, y_sq)  # [chunk, m]
        d2 *= -gamma
        total += float(np.exp(d2, out=d2).sum())
    return total


def _median_distance(pooled: np.ndarray) -> float:
    """Median Euclidean distance between distinct rows of (a deterministic subset of) ``pooled``."""
    if pooled.shape[0] > _MEDIAN_ROWS:
        # Evenly spaced rows, not random ones: the bandwidth is then a fixed
        # function of the inputs and needs no seed.
        pooled = pooled[np.linspace(0, pooled.shape[0] - 1, _MEDIAN_ROWS).astype(np.int64)]
    sq = np.einsum("ij,ij->i", pooled, pooled)
    d2 = _sq_dists(pooled, pooled, sq)  # [p, p]
    upper = np.triu_indices(pooled.shape[0], k=1)
    return float(np.sqrt(np.median(d2[upper])))


# --------------------------------------------------------------------------
# MMD
# --------------------------------------------------------------------------


def mmd(a: Any, b: Any, bandwidth: float | None = None) -> float:
    """Unbiased squared maximum mean discrepancy with a Gaussian kernel.

        k(x, y) = exp(-||x - y||^2 / (2 sigma^2))
        MMD^2_u = 1/(n(n-1)) sum_{i != j} k(a_i, a_j)
                + 1/(m(m-1)) sum_{i != j} k(b_i, b_j)
                - 2/(n m)    sum_{i, j}  k(a_i, b_j)

    (Gretton et al., 2012, eq. 3). Leaving out the i = j terms removes the
    bias, so two samples of one distribution score about 0, sometimes a
    little below 0; the population value is 0 exactly when the distributions
    are equal, since the Gaussian kernel is characteristic.

    Parameters
    ----------
    a : array [n, d], n >= 2.
    b : array [m, d], m >= 2.
    bandwidth : sigma > 0. When None, the median heuristic: sigma = the median
        Euclidean distance between distinct rows of the pooled data
        [a; b] (of at most 1,000 evenly spaced pooled rows, to bound the cost).
        It puts the kernel's scale at the data's typical distance. Pass the
        same bandwidth to compare several models against one data set.

    Returns
    -------
    MMD^2 as a Python float (may be slightly negative).
    """
    a = _as_samples(a, "a")
    b = _as_samples(b, "b")
    _check_widths(a, b)
    if bandwidth is None:
        sigma = _median_distance(np.concatenate([a, b], axis=0))
        if sigma == 0.0:
            raise ValueError(
                "the median heuristic gave bandwidth 0 (most pooled rows are identical); pass bandwidth="
            )
    else:
        sigma = check_float(bandwidth, "bandwidth", low=0.0, low_open=True)
    gamma = 1.0 / (2.0 * sigma * sigma)
    n, m = a.shape[0], b.shape[0]
    # k(x, x) = 1, so the diagonal of each within-set sum is exactly n (or m).
    k_aa = (_kernel_sum(a, a, gamma) - n) / (n * (n - 1))
    k_bb = (_kernel_sum(b, b, gamma) - m) / (m * (m - 1))
    k_ab = _kernel_sum(a, b, gamma) / (n * m)
    return float(k_aa + k_bb - 2.0 * k_ab)


# --------------------------------------------------------------------------
# Nearest neighbours
# --------------------------------------------------------------------------


def nearest_neighbour(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
    """The nearest row of ``b`` to each row of ``a``, and the Euclidean distance to it.

        index_i = argmin_j ||a_i - b_j||,   distance_i = ||a_i - b_{index_i}||

    The search uses the matrix-product expansion of ||a_i - b_j||^2 in chunks
    of rows of ``a`` (memory stays near 128 MB whatever n and m); the distance
    to the neighbour found is then recomputed from the difference itself, so
    an exact copy scores 0, not the expansion's rounding error.

    Parameters
    ----------
    a : array [n, d], n >= 1.
    b : array [m, d], m >= 1.

    Returns
    -------
    index : array [n] of int64, rows of ``b``.
    distance : array [n] of float64.
    """
    a = _as_samples(a, "a", min_rows=1)
    b = _as_samples(b, "b", min_rows=1)
    _check_widths(a, b)
    b_sq = np.einsum("ij,ij->i", b, b)  # [m]
    nearest = np.empty(a.shape[0], dtype=np.int64)  # [n]
    step = _chunk_rows(b.shape[0])
    for start in range(0, a.shape[0], step):
        d2 = _sq_dists(a[start : start + step], b, b_sq)  # [chunk, m]
        nearest[start : start + step] = d2.argmin(axis=1)
    diff = a - b[nearest]  # [n, d]
    return nearest, np.sqrt(np.einsum("ij,ij->i", diff, diff))  # [n], [n]


def nearest_distance(a: Any, b: Any) -> np.ndarray:
    """Euclidean distance from each row of ``a`` [n, d] to its nearest row of ``b`` [m, d]: [n].

    out_i = min_j ||a_i - b_j||      (``nearest_neighbour``'s distances)
    """
    return nearest_neighbour(a, b)[1]


# --------------------------------------------------------------------------
# k-NN precision and recall
# --------------------------------------------------------------------------


def _distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The full matrix ||a_i - b_j||, [n, m]. Evaluation sizes (a few thousand rows) fit in memory."""
    return np.sqrt(_sq_dists(a, b, np.einsum("ij,ij->i", b, b)))


def knn_radii(x: Any, k: int = 3) -> np.ndarray:
    """Distance from each row of ``x`` to its k-th nearest other row.

        r_i = ||x_i - x_(k)||, the k-th smallest of ||x_i - x_j|| over j != i

    The ball of radius r_i around x_i is the local estimate of the support
    of x's distribution that k-NN precision and recall use.

    Parameters
    ----------
    x : array [n, d], n > k.
    k : the neighbour, >= 1.

    Returns
    -------
    array [n] of float64.
    """
    x = _as_samples(x, "x", min_rows=2)
    k = check_int(k, "k")
    if k >= x.shape[0]:
        raise ValueError(f"k must be smaller than the number of rows of x ({x.shape[0]}), got {k}")
    d = _distances(x, x)  # [n, n]
    np.fill_diagonal(d, np.inf)  # a row is not its own neighbour
    return np.partition(d, k - 1, axis=1)[:, k - 1]  # [n]


def _share_inside(points: np.ndarray, centres: np.ndarray, radii: np.ndarray) -> float:
    """(1/n) sum_j 1[exists i: ||points_j - centres_i|| <= radii_i]."""
    inside = _distances(points, centres) <= radii[None, :]  # [n, m]
    return float(inside.any(axis=1).mean())


def precision_recall(real: Any, fake: Any, k: int = 3) -> tuple[float, float]:
    """k-NN precision and recall of ``fake`` samples against ``real`` data (Kynkaanniemi et al., 2019).

        precision = (1/M) sum_j 1[exists i: ||g_j - r_i|| <= NND_k(r_i)]
        recall    = (1/N) sum_i 1[exists j: ||r_i - g_j|| <= NND_k(g_j)]

    with NND_k(r_i) the distance from r_i to its k-th nearest neighbour among
    the real rows (``knn_radii``), and likewise for the samples g. Precision
    is the share of samples that fall inside the real data's manifold (the
    union of the balls around the real rows): low precision means samples
    unlike any data. Recall is the share of real rows inside the samples'
    manifold: low recall means parts of the data the model never draws.
    Both depend on the sizes and on k: compare at matched N = M and one k.

    Parameters
    ----------
    real : array [N, d], N > k.
    fake : array [M, d], M > k.
    k : the neighbour that sets each ball's radius (the paper uses 3).

    Returns
    -------
    (precision, recall), floats in [0, 1].
    """
    real = _as_samples(real, "real")
    fake = _as_samples(fake, "fake")
    _check_widths(real, fake)
    precision = _share_inside(fake, real, knn_radii(real, k))
    recall = _share_inside(real, fake, knn_radii(fake, k))
    return precision, recall


# --------------------------------------------------------------------------
# Memorisation
# --------------------------------------------------------------------------


def _memorisation_inputs(samples: Any, train: Any, held_out: Any, quantile: float) -> tuple:
    """The checked inputs of the memorisation measures: three host float64 arrays [rows, d], the quantile."""
    samples = _as_samples(samples, "samples", min_rows=1)
    train = _as_samples(train, "train", min_rows=1)
    held_out = _as_samples(held_out, "held_out", min_rows=1)
    _check_widths(samples, train)
    _check_widths(held_out, train)
    return samples, train, held_out, check_float(quantile, "quantile", low=0.0, high=1.0, low_open=True)


def memorisation_rate(samples: Any, train: Any, held_out: Any, quantile: float = 0.05) -> float:
    """Share of samples nearer a training row than held-out real rows usually are.

        tau  = the ``quantile`` of { min_i ||h_j - x_i|| : h_j held out }
        rate = (1/M) sum_m 1[min_i ||s_m - x_i|| < tau]

    with x_i the training rows. Real data that the model never saw fall below
    tau a ``quantile`` of the time by construction (5% by default); a model
    that copies its training set scores near 1, one that draws new digits
    near ``quantile``.

    Parameters
    ----------
    samples : array [M, d], the generated rows.
    train : array [N, d], the rows the model trained on.
    held_out : array [H, d], real rows kept out of training.
    quantile : in (0, 1].

    Returns
    -------
    The rate, a float in [0, 1].
    """
    samples, train, held_out, quantile = _memorisation_inputs(samples, train, held_out, quantile)
    tau = np.quantile(nearest_distance(held_out, train), quantile)
    return float((nearest_distance(samples, train) < tau).mean())


def memorisation_threshold_spread(
    samples: Any, train: Any, held_out: Any, quantile: float = 0.05, num_resamples: int = 500, seed: int = 0
) -> float:
    """The sd of ``memorisation_rate`` that comes from the held-out rows alone (bootstrap).

    tau is a low quantile of only H held-out distances, so another draw of
    held-out rows gives another tau, and another rate. Resample the H
    held-out distances with replacement ``num_resamples`` times:

        tau_b  = the ``quantile`` of the b-th resample
        rate_b = (1/M) sum_m 1[min_i ||s_m - x_i|| < tau_b]
        spread = sd over b of rate_b

    For samples drawn like the data it is about sqrt(q (1 - q) / H): 1.5
    points for q = 0.05 and H = 200 held-out digits. A difference of rates
    smaller than this says nothing about memorisation.
    """
    samples, train, held_out, quantile = _memorisation_inputs(samples, train, held_out, quantile)
    num_resamples = check_int(num_resamples, "num_resamples", minimum=2)
    seed = check_int(seed, "seed", minimum=0)
    d_held = nearest_distance(held_out, train)  # [H]
    d_samples = np.sort(nearest_distance(samples, train))  # [M], sorted to count with searchsorted
    rng = np.random.default_rng(seed)
    resamples = rng.choice(d_held, size=(num_resamples, d_held.shape[0]))  # [B, H]
    taus = np.quantile(resamples, quantile, axis=1)  # [B]
    rates = np.searchsorted(d_samples, taus, side="left") / d_samples.shape[0]  # share strictly below tau_b
    return float(rates.std())
