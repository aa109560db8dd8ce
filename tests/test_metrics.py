"""Tests for ldm_np.evaluation.metrics: closed forms, known sampling behaviour, validation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ldm_np.evaluation import metrics
from ldm_np.evaluation.metrics import (
    frechet_distance,
    frechet_distance_gaussians,
    knn_radii,
    memorisation_rate,
    memorisation_threshold_spread,
    mmd,
    nearest_distance,
    nearest_neighbour,
    precision_recall,
)


def random_rotation(d: int, seed: int) -> np.ndarray:
    """A random orthogonal matrix [d, d] (QR of a Gaussian matrix, signs fixed)."""
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, d)))
    return q * np.sign(np.diag(r))


def fd_bias(d: int, n: int, m: int) -> float:
    """Expected FD of two samples of N(0, I_d), to first order in 1/n (see frechet_distance).

    d (1/n + 1/m) from the means, d (d + 1) / 4 (1/n + 1/m) from the covariances;
    checked by simulation to within a few percent for d = 4..32.
    """
    return (d + d * (d + 1) / 4) * (1 / n + 1 / m)


class FakeDeviceArray:
    """Looks like a CuPy array to backend.to_numpy: has shape, dtype and .get()."""

    def __init__(self, x: np.ndarray) -> None:
        self._x = x
        self.shape, self.dtype, self.ndim = x.shape, x.dtype, x.ndim

    def get(self) -> np.ndarray:
        return self._x.copy()


# --------------------------------------------------------------------------
# Frechet distance between given Gaussians
# --------------------------------------------------------------------------


def test_fd_gaussians_diagonal_closed_form():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.standard_normal(5), rng.standard_normal(5)
    a, b = rng.uniform(0.1, 3.0, 5), rng.uniform(0.1, 3.0, 5)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    got = frechet_distance_gaussians(mu1, np.diag(a), mu2, np.diag(b))
    assert got == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_fd_gaussians_rotated_commuting_covariances():
    # cov = R diag R^T with one R for both: they commute, so the diagonal formula
    # holds on their eigenvalues.
    a, b = np.array([0.5, 1.0, 2.0, 4.0]), np.array([1.0, 0.25, 3.0, 0.1])
    r = random_rotation(4, seed=1)
    mu1, mu2 = np.array([1.0, 0.0, -1.0, 2.0]), np.zeros(4)
    got = frechet_distance_gaussians(mu1, r @ np.diag(a) @ r.T, mu2, r @ np.diag(b) @ r.T)
    expected = 6.0 + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert got == pytest.approx(expected, rel=1e-10)


def test_fd_gaussians_non_commuting_2x2_closed_form():
    # For a 2x2 PSD M: tr(M^(1/2)) = sqrt(tr M + 2 sqrt(det M)). With
    # M = S1^(1/2) S2 S1^(1/2): tr M = tr(S1 S2), det M = det S1 det S2.
    s1 = np.array([[2.0, 0.8], [0.8, 1.0]])
    s2 = np.array([[0.5, -0.3], [-0.3, 1.5]])
    trace_sqrt = math.sqrt(np.trace(s1 @ s2) + 2 * math.sqrt(np.linalg.det(s1) * np.linalg.det(s2)))
    expected = np.trace(s1) + np.trace(s2) - 2 * trace_sqrt
    assert frechet_distance_gaussians(np.zeros(2), s1, np.zeros(2), s2) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    ("rank", "rel"),
    [
        (6, 1e-10),
        # A singular covariance leaves eigenvalues of M at 0 plus rounding
        # (~1e-15 ||M||), whose square roots are ~3e-8 ||M||^(1/2) each: an
        # error any matrix square root has, hence the looser tolerance.
        (3, 1e-6),
    ],
)
def test_fd_gaussians_is_rotation_invariant_and_symmetric(rank, rel):
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((6, 6)), rng.standard_normal((6, rank))
    s1, s2 = x @ x.T, y @ y.T
    mu1, mu2 = rng.standard_normal(6), rng.standard_normal(6)
    q = random_rotation(6, seed=3)
    base = frechet_distance_gaussians(mu1, s1, mu2, s2)
    assert frechet_distance_gaussians(q @ mu1, q @ s1 @ q.T, q @ mu2, q @ s2 @ q.T) == pytest.approx(
        base, rel=rel
    )
    assert frechet_distance_gaussians(mu2, s2, mu1, s1) == pytest.approx(base, rel=rel)


def test_fd_gaussians_of_one_gaussian_is_zero():
    x = np.random.default_rng(4).standard_normal((8, 8))
    s = x @ x.T
    assert frechet_distance_gaussians(np.ones(8), s, np.ones(8), s) == pytest.approx(0.0, abs=1e-10)


def test_fd_gaussians_validation():
    eye = np.eye(3)
    with pytest.raises(ValueError, match="mu1"):
        frechet_distance_gaussians(np.zeros((3, 1)), eye, np.zeros(3), eye)
    with pytest.raises(ValueError, match="mu1 and mu2"):
        frechet_distance_gaussians(np.zeros(3), eye, np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="cov2"):
        frechet_distance_gaussians(np.zeros(3), eye, np.zeros(3), np.eye(2))
    with pytest.raises(ValueError, match="cov1 must be symmetric"):
        frechet_distance_gaussians(np.zeros(3), np.triu(np.ones((3, 3))), np.zeros(3), eye)


# --------------------------------------------------------------------------
# Frechet distance between samples
# --------------------------------------------------------------------------


def test_fd_of_one_sample_with_itself_is_zero():
    a = np.random.default_rng(5).standard_normal((300, 10))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)


def test_fd_of_two_samples_of_one_gaussian_is_only_the_bias():
    d, n = 4, 5000
    rng = np.random.default_rng(6)
    fd = frechet_distance(rng.standard_normal((n, d)), rng.standard_normal((n, d)))
    # Expected 0.0041 with a standard deviation near 0.0014 (simulated): 3x leaves room.
    assert 0.0 < fd < 3 * fd_bias(d, n, n)


def test_fd_of_shifted_gaussians_is_the_squared_shift():
    d, n = 4, 20_000
    mu = np.array([1.0, -0.5, 0.25, 0.0])
    rng = np.random.default_rng(7)
    fd = frechet_distance(rng.standard_normal((n, d)), mu + rng.standard_normal((n, d)))
    # ||mu + delta||^2 with delta ~ N(0, 2/n I): the cross term 2 mu.delta has
    # standard deviation 2 ||mu|| sqrt(2/n) = 0.023; allow the bias plus 5 of those.
    tolerance = fd_bias(d, n, n) + 5 * 2 * np.linalg.norm(mu) * math.sqrt(2 / n)
    assert abs(fd - mu @ mu) < tolerance


def test_fd_is_symmetric_and_accepts_float32():
    rng = np.random.default_rng(8)
    a = rng.standard_normal((200, 5)).astype(np.float32)
    b = (rng.standard_normal((300, 5)) * 1.5 + 0.3).astype(np.float32)
    assert frechet_distance(a, b) == pytest.approx(frechet_distance(b, a), rel=1e-9)


def test_fd_matches_the_gaussian_form_on_sample_moments():
    rng = np.random.default_rng(9)
    a, b = rng.standard_normal((100, 3)), rng.standard_normal((80, 3)) @ rng.standard_normal((3, 3))
    expected = frechet_distance_gaussians(a.mean(0), np.cov(a.T), b.mean(0), np.cov(b.T))
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-12)


def test_fd_works_in_one_dimension():
    # Sample variances 1 and 4 (exactly, after standardising): FD = 1 + (1 - 2)^2 = 2 with the mean shift.
    rng = np.random.default_rng(10)
    a = rng.standard_normal((50, 1))
    a = (a - a.mean()) / a.std(ddof=1)
    assert frechet_distance(a, 2 * a + 1) == pytest.approx(1.0 + 1.0, rel=1e-12)


def test_fd_warns_when_covariance_is_singular():
    rng = np.random.default_rng(11)
    with pytest.warns(UserWarning, match="singular"):
        frechet_distance(rng.standard_normal((5, 8)), rng.standard_normal((50, 8)))


def test_metrics_accept_device_arrays_by_copying_to_host():
    rng = np.random.default_rng(12)
    a, b = rng.standard_normal((40, 3)), rng.standard_normal((30, 3))
    assert frechet_distance(FakeDeviceArray(a), FakeDeviceArray(b)) == frechet_distance(a, b)
    assert mmd(FakeDeviceArray(a), FakeDeviceArray(b)) == mmd(a, b)
    np.testing.assert_array_equal(
        nearest_distance(FakeDeviceArray(a), FakeDeviceArray(b)), nearest_distance(a, b)
    )


@pytest.mark.parametrize("fn", [frechet_distance, mmd, nearest_distance])
def test_bad_samples_raise_errors_that_name_the_argument(fn):
    good = np.zeros((10, 3))
    with pytest.raises(ValueError, match="a must be 2-D"):
        fn(np.zeros(10), good)
    with pytest.raises(ValueError, match="b must be 2-D"):
        fn(good, np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="same number of features"):
        fn(good, np.zeros((10, 4)))
    with pytest.raises(ValueError, match="b contains NaN"):
        fn(good, np.full((10, 3), np.nan))
    with pytest.raises(TypeError, match="a must be a floating-point array"):
        fn(np.zeros((10, 3), dtype=np.int64), good)
    with pytest.raises(TypeError, match="a must be an array"):
        fn([[0.0, 1.0]], good)
    if fn is not nearest_distance:  # one row is enough for a nearest neighbour
        with pytest.raises(ValueError, match="a needs at least 2 rows"):
            fn(np.zeros((1, 3)), good)


# --------------------------------------------------------------------------
# MMD
# --------------------------------------------------------------------------


def test_mmd_is_near_zero_for_one_distribution_and_positive_for_a_shift():
    rng = np.random.default_rng(13)
    a, b = rng.standard_normal((500, 2)), rng.standard_normal((500, 2))
    same = mmd(a, b)
    shifted = mmd(a, b + np.array([1.0, 0.0]))
    # Unbiased: the same-distribution value is sampling noise around 0 (about
    # +-0.002 at n = 500); a shift of one standard deviation scores ~0.1.
    assert abs(same) < 0.01
    assert shifted > 0.05
    assert shifted > 20 * abs(same)


def test_mmd_is_symmetric_and_bandwidth_matters():
    rng = np.random.default_rng(14)
    a, b = rng.standard_normal((200, 3)), rng.standard_normal((150, 3)) + 0.5
    assert mmd(a, b) == pytest.approx(mmd(b, a), rel=1e-12)
    assert mmd(a, b, bandwidth=1.0) == pytest.approx(mmd(b, a, bandwidth=1.0), rel=1e-12)
    assert mmd(a, b, bandwidth=1.0) != pytest.approx(mmd(a, b, bandwidth=10.0))


def test_mmd_matches_a_direct_double_loop():
    rng = np.random.default_rng(15)
    a, b = rng.standard_normal((7, 2)), rng.standard_normal((5, 2)) + 1.0
    sigma = 0.8

    def k(x, y):
        return math.exp(-np.sum((x - y) ** 2) / (2 * sigma**2))

    n, m = len(a), len(b)
    k_aa = sum(k(a[i], a[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    k_bb = sum(k(b[i], b[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    k_ab = sum(k(a[i], b[j]) for i in range(n) for j in range(m)) / (n * m)
    assert mmd(a, b, bandwidth=sigma) == pytest.approx(k_aa + k_bb - 2 * k_ab, rel=1e-10)


def test_mmd_median_heuristic_bandwidth():
    # With bandwidth=None the result equals that with sigma = the median pooled distance.
    rng = np.random.default_rng(16)
    a, b = rng.standard_normal((30, 2)), rng.standard_normal((20, 2))
    pooled = np.concatenate([a, b])
    dists = [np.linalg.norm(pooled[i] - pooled[j]) for i in range(50) for j in range(i + 1, 50)]
    assert mmd(a, b) == pytest.approx(mmd(a, b, bandwidth=float(np.median(dists))), rel=1e-10)


@pytest.mark.parametrize("bandwidth", [0.0, -1.0, float("nan")])
def test_mmd_rejects_bad_bandwidths(bandwidth):
    with pytest.raises(ValueError, match="bandwidth"):
        mmd(np.zeros((3, 2)), np.ones((3, 2)), bandwidth=bandwidth)


# --------------------------------------------------------------------------
# Nearest distance
# --------------------------------------------------------------------------


def test_nearest_distance_matches_a_brute_force_loop():
    rng = np.random.default_rng(17)
    a, b = rng.standard_normal((40, 6)), rng.standard_normal((55, 6))
    expected = np.array([min(np.linalg.norm(x - y) for y in b) for x in a])
    got = nearest_distance(a, b)
    assert got.shape == (40,) and got.dtype == np.float64
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_nearest_neighbour_gives_the_brute_force_index_and_its_distance():
    rng = np.random.default_rng(21)
    a, b = rng.standard_normal((30, 5)), rng.standard_normal((45, 5))
    index, distance = nearest_neighbour(a, b)
    expected = np.array([np.argmin([np.linalg.norm(x - y) for y in b]) for x in a])
    np.testing.assert_array_equal(index, expected)
    np.testing.assert_allclose(distance, np.linalg.norm(a - b[expected], axis=1), rtol=1e-12)
    np.testing.assert_array_equal(distance, nearest_distance(a, b))


def test_nearest_distance_of_exact_copies_is_exactly_zero():
    # Large offsets make the matrix-product expansion lose digits; the
    # recomputed difference does not.
    b = 1000.0 + np.random.default_rng(18).standard_normal((20, 4))
    np.testing.assert_array_equal(nearest_distance(b[::2], b), 0.0)


def test_chunked_paths_agree_with_a_single_chunk(monkeypatch):
    rng = np.random.default_rng(19)
    a, b = rng.standard_normal((37, 3)), rng.standard_normal((23, 3)) + 0.3
    whole = (nearest_distance(a, b), mmd(a, b))
    monkeypatch.setattr(metrics, "_CHUNK_ENTRIES", 50)  # 2 rows per chunk
    chunked = (nearest_distance(a, b), mmd(a, b))
    np.testing.assert_array_equal(whole[0], chunked[0])
    assert whole[1] == pytest.approx(chunked[1], rel=1e-12)


# --------------------------------------------------------------------------
# k-NN precision and recall
# --------------------------------------------------------------------------


def test_knn_radii_match_a_brute_force_loop():
    x = np.random.default_rng(0).standard_normal((30, 3))
    for k in (1, 3, 5):
        want = [sorted(np.linalg.norm(x[i] - x[j]) for j in range(30) if j != i)[k - 1] for i in range(30)]
        np.testing.assert_allclose(knn_radii(x, k), want, rtol=1e-10)


def test_precision_recall_match_the_definition_by_loops():
    rng = np.random.default_rng(1)
    real, fake = rng.standard_normal((25, 2)), rng.standard_normal((20, 2)) + 0.7
    k = 3
    r_real, r_fake = knn_radii(real, k), knn_radii(fake, k)
    want_p = np.mean([any(np.linalg.norm(g - r) <= rr for r, rr in zip(real, r_real)) for g in fake])
    want_r = np.mean([any(np.linalg.norm(r - g) <= rg for g, rg in zip(fake, r_fake)) for r in real])
    assert precision_recall(real, fake, k) == (pytest.approx(want_p), pytest.approx(want_r))


def test_precision_recall_of_a_set_against_itself_are_one():
    x = np.random.default_rng(2).standard_normal((50, 4))
    assert precision_recall(x, x, 3) == (1.0, 1.0)


def test_precision_recall_two_samples_of_one_gaussian_agree_and_a_shift_lowers_both():
    rng = np.random.default_rng(3)
    real, same = rng.standard_normal((600, 4)), rng.standard_normal((600, 4))
    p, r = precision_recall(real, same, 3)
    assert p > 0.85 and r > 0.85 and abs(p - r) < 0.06
    p_shift, r_shift = precision_recall(real, same + 1.5, 3)
    assert p_shift < p - 0.3 and r_shift < r - 0.3


def test_a_collapsed_generator_keeps_precision_and_loses_recall():
    rng = np.random.default_rng(4)
    real, narrow = rng.standard_normal((600, 2)), 0.3 * rng.standard_normal((600, 2))
    p, r = precision_recall(real, narrow, 3)
    assert p > 0.95 and r < 0.5


def test_precision_recall_validation():
    good = np.zeros((10, 3))
    with pytest.raises(ValueError, match="same number of features"):
        precision_recall(good, np.zeros((10, 2)))
    with pytest.raises(ValueError, match="k must be smaller"):
        precision_recall(good, good, k=10)
    with pytest.raises(TypeError, match="k must be an integer"):
        precision_recall(good, good, k=2.0)


# --------------------------------------------------------------------------
# Memorisation
# --------------------------------------------------------------------------


def test_copies_of_the_training_set_are_all_memorised():
    rng = np.random.default_rng(5)
    train, held = rng.standard_normal((300, 5)), rng.standard_normal((100, 5))
    assert memorisation_rate(train[:200], train, held) == 1.0


def test_held_out_data_score_the_quantile_and_fresh_samples_near_it():
    rng = np.random.default_rng(6)
    train, held = rng.standard_normal((500, 5)), rng.standard_normal((400, 5))
    # The held-out rows against their own threshold: 5% by construction (strictly below it: 20 of 400 rows at most).
    assert 0.04 <= memorisation_rate(held, train, held) <= 0.05
    fresh = rng.standard_normal((2000, 5))
    assert 0.025 < memorisation_rate(fresh, train, held) < 0.08
    # Samples that lie off the data are never nearer than real data are.
    assert memorisation_rate(fresh + 10.0, train, held) == 0.0


def test_the_threshold_spread_matches_the_spread_over_fresh_held_out_sets():
    # Samples drawn like the data: the rate moves only because tau is a quantile of H held-out
    # distances, about sqrt(q (1 - q) / H) = 1.5 points for q = 0.05 and H = 200.
    rng = np.random.default_rng(7)
    train, samples = rng.standard_normal((400, 3)), rng.standard_normal((5000, 3))
    held_sets = [rng.standard_normal((200, 3)) for _ in range(150)]
    true_sd = np.std([memorisation_rate(samples, train, h) for h in held_sets])
    assert 0.7 * np.sqrt(0.05 * 0.95 / 200) < true_sd < 1.4 * np.sqrt(0.05 * 0.95 / 200)
    bootstrap = np.mean(
        [memorisation_threshold_spread(samples, train, h, seed=i) for i, h in enumerate(held_sets[:10])]
    )
    assert 0.6 * true_sd < bootstrap < 1.5 * true_sd
    # Ten times the held-out rows: about a third of the spread.
    big = rng.standard_normal((2000, 3))
    assert memorisation_threshold_spread(samples, train, big) < 0.5 * bootstrap


def test_the_threshold_spread_is_zero_where_the_threshold_cannot_matter():
    rng = np.random.default_rng(8)
    train, held = rng.standard_normal((300, 4)), rng.standard_normal((100, 4))
    assert memorisation_threshold_spread(train[:50], train, held) == 0.0  # copies: always below tau
    assert memorisation_threshold_spread(held + 20.0, train, held) == 0.0  # far off: never below
    with pytest.raises(ValueError, match="num_resamples"):
        memorisation_threshold_spread(held, train, held, num_resamples=1)


def test_memorisation_rate_validation():
    good = np.zeros((10, 3))
    with pytest.raises(ValueError, match="quantile"):
        memorisation_rate(good, good, good, quantile=0.0)
    with pytest.raises(ValueError, match="same number of features"):
        memorisation_rate(good, good, np.zeros((10, 2)))
