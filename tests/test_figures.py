"""Tests for ldm_np.figures: every figure returns a Figure, writes a real file, and refuses bad shapes."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # no display in tests; must come before pyplot is imported

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image  # Pillow ships with matplotlib

from ldm_np import figures
from ldm_np.schedules import make_schedule

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
RNG = np.random.default_rng(0)
IMAGES = RNG.random((12, 64))  # [n, 8*8] in [0, 1], like the digits
POINTS = RNG.standard_normal((200, 2))


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def schedule():
    return make_schedule(100, beta_start=1e-3, beta_end=0.2)  # ends near pure noise: no warning


def assert_png(path):
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 1000, path
    with Image.open(path) as im:
        assert im.size[0] > 100 and im.size[1] > 100


def decode(z):
    """A stand-in decoder: latents [n, 4] -> images [n, 64] in [0, 1]."""
    w = np.linspace(-1.0, 1.0, 4 * 64).reshape(4, 64)
    return 1.0 / (1.0 + np.exp(-(z @ w)))


def all_figures(tmp_path, schedule):
    """(name, call) for every PNG figure, each writing to tmp_path / name."""
    frames = [IMAGES[:4] * k / 4 for k in range(5)]
    return [
        ("grid.png", lambda p: figures.image_grid(IMAGES, title="grid", path=p)),
        (
            "grid_3d.png",
            lambda p: figures.image_grid(
                IMAGES.reshape(-1, 8, 8), nrows=3, row_labels=["a", "b", "c"], path=p
            ),
        ),
        ("real_vs_generated.png", lambda p: figures.real_vs_generated(IMAGES, IMAGES[:7], (8, 8), path=p)),
        ("reconstructions.png", lambda p: figures.reconstructions(IMAGES, IMAGES[::-1], (8, 8), path=p)),
        ("nearest.png", lambda p: figures.nearest_neighbours(IMAGES[:4] + 0.1, IMAGES, (8, 8), path=p)),
        (
            "loss_curves.png",
            lambda p: figures.loss_curves(
                {"vae": [(i, 1.0 / (i + 1)) for i in range(300)], "denoiser": [(0, 0.5), (10, -0.1)]}, path=p
            ),
        ),
        (
            "forward_images.png",
            lambda p: figures.forward_noising(IMAGES[:3], schedule, [0, 50, 99], (8, 8), path=p),
        ),
        (
            "forward_latents.png",
            lambda p: figures.forward_noising(
                RNG.standard_normal((3, 4)), schedule, [0, 99], decode=decode, path=p
            ),
        ),
        ("forward_points.png", lambda p: figures.forward_noising(POINTS, schedule, [0, 20, 99], path=p)),
        ("reverse.png", lambda p: figures.reverse_process(frames, [80, 60, 40, 20, 0], (8, 8), path=p)),
        (
            "latent_pca.png",
            lambda p: figures.latent_scatter(RNG.standard_normal((50, 5)), RNG.integers(0, 3, 50), path=p),
        ),
        ("latent_2d.png", lambda p: figures.latent_scatter(POINTS, POINTS[:, 0], path=p)),
        ("latent_plain.png", lambda p: figures.latent_scatter(POINTS, path=p)),
        (
            "schedules.png",
            lambda p: figures.schedule_plot(
                {"linear": schedule, "cosine": make_schedule(100, kind="cosine")}, path=p
            ),
        ),
        ("scatter.png", lambda p: figures.scatter_2d(POINTS, POINTS[:50] + 0.5, path=p)),
        (
            "guidance.png",
            lambda p: figures.guidance_grid(
                {3.0: IMAGES[:4], 0.0: IMAGES[4:8]}, (8, 8), row_labels="0123", path=p
            ),
        ),
    ]


def test_every_figure_writes_a_png_and_returns_a_figure(tmp_path, schedule):
    for name, draw in all_figures(tmp_path, schedule):
        path = tmp_path / "out" / name  # a missing folder is created
        fig = draw(path)
        assert isinstance(fig, Figure), name
        assert_png(path)
        assert not plt.fignum_exists(fig.number), f"{name}: a saved figure should be closed"


def test_without_a_path_nothing_is_written_and_the_figure_stays_open(tmp_path):
    fig = figures.image_grid(IMAGES)
    assert isinstance(fig, Figure) and plt.fignum_exists(fig.number)
    assert list(tmp_path.iterdir()) == []


def test_figures_leave_the_users_rc_settings_alone():
    before = dict(plt.rcParams)
    figures.scatter_2d(POINTS, POINTS)
    assert dict(plt.rcParams) == before


def test_reverse_process_gif(tmp_path):
    frames = [IMAGES[:6] * k / 3 for k in range(4)]
    path = tmp_path / "reverse.gif"
    fig = figures.reverse_process_gif(frames, [300, 200, 100, 0], (8, 8), path, fps=4)
    assert isinstance(fig, Figure)
    assert path.read_bytes()[:4] == b"GIF8"
    with Image.open(path) as im:
        assert im.n_frames >= 4  # one per step (the held last frame may be merged)
    with pytest.raises(ValueError, match=r"\.gif"):
        figures.reverse_process_gif(frames, [3, 2, 1, 0], (8, 8), tmp_path / "reverse.png")


def test_forward_noising_uses_the_seed(tmp_path, schedule):
    # Same seed, same noise: byte-identical files.
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    figures.forward_noising(IMAGES[:2], schedule, [0, 50], (8, 8), path=a, seed=3)
    figures.forward_noising(IMAGES[:2], schedule, [0, 50], (8, 8), path=b, seed=3)
    assert a.read_bytes() == b.read_bytes()


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda s: figures.image_grid(np.zeros((4, 63))), "63 features per row"),
        (lambda s: figures.image_grid(np.zeros(64)), "images must be images"),
        (lambda s: figures.image_grid(IMAGES, nrows=2, row_labels=["a"]), "row_labels must have 2"),
        (lambda s: figures.image_grid(IMAGES, nrows=13), "nrows"),
        (lambda s: figures.real_vs_generated(IMAGES, np.zeros((4, 16)), (8, 8)), "generated has 16"),
        (lambda s: figures.reconstructions(IMAGES, IMAGES[:5], (8, 8)), "same shape"),
        (lambda s: figures.nearest_neighbours(IMAGES, np.zeros((4, 16)), (8, 8)), "train has 16"),
        (lambda s: figures.nearest_neighbours(IMAGES, IMAGES, (8, 8), columns=0), "columns"),
        (lambda s: figures.loss_curves({}), "non-empty"),
        (lambda s: figures.loss_curves({"vae": [1.0, 2.0]}), r"histories\['vae'\]"),
        (lambda s: figures.forward_noising(IMAGES, s, [0, 100], (8, 8)), "timesteps must lie in 0..99"),
        (lambda s: figures.forward_noising(IMAGES, {"betas": 1}, [0], (8, 8)), "alphas_cumprod"),
        (lambda s: figures.forward_noising(np.zeros((2, 10)), s, [0]), "shape must be given"),
        (lambda s: figures.reverse_process([IMAGES, IMAGES], [1], (8, 8)), "one entry per frame"),
        (lambda s: figures.reverse_process([IMAGES, IMAGES[:3]], [1, 0], (8, 8)), "same shape"),
        (lambda s: figures.reverse_process([], [], (8, 8)), "non-empty"),
        (lambda s: figures.latent_scatter(np.zeros((5, 1))), "at least 2 columns"),
        (
            lambda s: figures.latent_scatter(np.zeros((5, 3)), labels=np.zeros(4)),
            r"labels must have shape \[5\]",
        ),
        (lambda s: figures.schedule_plot({"x": {"num_steps": 3}}), "alphas_cumprod"),
        (lambda s: figures.scatter_2d(np.zeros((5, 3)), POINTS), "real must have 2 features"),
        (lambda s: figures.scatter_2d(POINTS, np.zeros((5,))), "generated must be a non-empty 2-D"),
        (lambda s: figures.guidance_grid({0.0: IMAGES, 1.0: IMAGES[:3]}, (8, 8)), "same shape"),
        (lambda s: figures.feature_histograms(np.zeros((5, 3)), POINTS), "real must have 2 features"),
        (lambda s: figures.feature_histograms(None, np.zeros(5)), "generated must be a non-empty 2-D"),
    ],
)
def test_wrong_shapes_are_refused(call, match, schedule):
    with pytest.raises(ValueError, match=match):
        call(schedule)


def test_scatter_2d_of_samples_alone_has_one_panel(tmp_path):
    fig = figures.scatter_2d(None, POINTS, path=tmp_path / "s.png")
    assert len(fig.axes) == 1
    assert_png(tmp_path / "s.png")


def test_feature_histograms_show_at_most_max_features(tmp_path):
    wide = RNG.standard_normal((50, 40))
    fig = figures.feature_histograms(wide, wide + 1.0, path=tmp_path / "h.png", max_features=6)
    assert sum(ax.get_visible() for ax in fig.axes) == 6
    assert "the first 6 of 40 features" in fig._suptitle.get_text()
    assert_png(tmp_path / "h.png")


def test_projection_uses_the_real_datas_principal_components(tmp_path, monkeypatch):
    """A sample equal to the data projects to the same points: one coordinate system for both."""
    from ldm_np.figures import report

    drawn = {}
    monkeypatch.setattr(report.figures, "scatter_2d", lambda r, g, path: drawn.update(r=r, g=g))
    X = RNG.standard_normal((30, 5)) * np.array([5.0, 3.0, 1.0, 0.1, 0.1])
    report.projection_figure(X, X.copy(), tmp_path / "p.png")
    np.testing.assert_allclose(drawn["r"], drawn["g"])
    # The first component carries the largest variance: the data's widest axis.
    assert drawn["r"][:, 0].var() >= drawn["r"][:, 1].var() >= X[:, 2].var() * 0.5


@pytest.mark.parametrize(
    ("width", "shape", "kind"),
    [(64, [8, 8], "image"), (2, None, "2d"), (3, None, "table"), (5000, None, "table")],
)
def test_data_kind_follows_the_shape(width, shape, kind):
    from ldm_np.figures.report import data_kind

    assert data_kind(width, shape) == kind


def test_nearest_neighbours_pairs_each_sample_with_its_nearest_training_image():
    train = IMAGES
    samples = train[[5, 2, 7]] + 0.01  # each a near copy of one training image
    fig = figures.nearest_neighbours(samples, train, (8, 8))
    ax = fig.axes[0]
    mosaic = ax.get_images()[0].get_array()
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0.08"] * 3  # sqrt(64) * 0.01
    # The mosaic pads each 8x8 tile with one blank pixel: row r, column c starts at 1 + 9 r, 1 + 9 c.
    for c, k in enumerate([5, 2, 7]):
        np.testing.assert_allclose(mosaic[1:9, 1 + 9 * c : 9 + 9 * c], samples[c].reshape(8, 8))
        np.testing.assert_allclose(mosaic[10:18, 1 + 9 * c : 9 + 9 * c], train[k].reshape(8, 8))
    plt.close(fig)
