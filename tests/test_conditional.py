"""Class-conditional models: the label embedding, label dropout, guided samples, checkpoints, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import perturb_params

import ldm_np.pipeline as pipeline_module
from ldm_np.checkpoint import load_checkpoint, save_checkpoint
from ldm_np.cli import main
from ldm_np.datasets import load_dataset
from ldm_np.denoiser import Denoiser
from ldm_np.gradcheck import check_module
from ldm_np.models import build_denoiser
from ldm_np.pipeline import LatentDiffusion

# A conditional digits model that trains in a few seconds on 2 cores (single-threaded BLAS).
SMALL = {
    "latent_size": 8,
    "hidden_size": 64,
    "num_layers": 1,
    "vae_steps": 300,
    "vae_batch_size": 64,
    "denoiser_steps": 300,
    "denoiser_batch_size": 128,
    "warmup_steps": 20,
    "ema_decay": 0.99,
    "num_classes": 10,
}
TINY = {
    "latent_size": 4,
    "hidden_size": 16,
    "num_layers": 1,
    "num_steps": 100,
    "schedule": "cosine",  # a 100-step linear schedule keeps signal at the end, and warns
    "vae_steps": 10,
    "denoiser_steps": 10,
    "vae_batch_size": 16,
    "denoiser_batch_size": 16,
    "warmup_steps": 2,
}


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", 600, seed=0)


@pytest.fixture(scope="module")
def trained(digits):
    X, y = digits
    return LatentDiffusion(input_size=64, **SMALL).fit(X, y, progress=False)


# --------------------------------------------------------------------------
# The denoiser
# --------------------------------------------------------------------------

SEED_NAMES = [
    "time_mlp_1",
    "z_proj",
    *[f"denoiser_block_{i}_{part}" for i in range(1, 5) for part in ("norm", "up", "down")],
    "noise_pred",
]


def test_unconditional_denoiser_keeps_the_seed_parameter_names():
    model = build_denoiser()
    assert list(model.params) == SEED_NAMES
    assert model.null_label is None
    with pytest.raises(ValueError, match="unconditional"):
        model(np.zeros((2, 32), np.float32), np.array([0, 1]), np.array([0, 1]))


def test_conditional_denoiser_adds_only_the_label_table():
    model = build_denoiser(num_classes=10)
    assert list(model.params) == [*SEED_NAMES, "label_embed"]
    assert model.params["label_embed"]["table"].shape == (11, 256)  # 10 classes + the null label
    assert model.null_label == 10


def test_label_embedding_gradient_check():
    gen = np.random.default_rng(0)
    model = perturb_params(
        Denoiser(latent_size=3, hidden_size=8, num_layers=1, num_steps=20, num_classes=3, dtype="float64"),
        gen,
    )
    z = gen.standard_normal((6, 3))
    t = gen.integers(0, 20, size=6)
    labels = np.array([0, 2, 2, 3, 0, 2])  # repeats (add.at) and the null label 3; class 1 unused
    report = check_module(model, [z, t, labels])
    print(report)
    assert report.ok, report  # each error around 1e-9 or less
    assert not model.grads["label_embed"]["table"][1].any()  # an unused label gets no gradient


def test_label_dropout_replaces_the_share_p_uncond_with_the_null_label(digits, monkeypatch):
    X, y = digits
    seen = []
    real_step = pipeline_module.denoiser_step

    def spy(denoiser, optimizer, schedule, z0, t, noise, *, labels=None, **kwargs):
        seen.append(labels.copy())
        return real_step(denoiser, optimizer, schedule, z0, t, noise, labels=labels, **kwargs)

    monkeypatch.setattr(pipeline_module, "denoiser_step", spy)
    model = LatentDiffusion(
        input_size=64, **dict(TINY, num_classes=10, denoiser_batch_size=256, p_uncond=0.3)
    )
    model.fit(X, y, progress=False)
    labels = np.concatenate(seen)  # [10 * 256]
    share = (labels == 10).mean()
    assert abs(share - 0.3) < 0.04, share  # 2,560 draws: the std of the share is 0.009
    assert set(np.unique(labels[labels != 10])) <= set(range(10))


# --------------------------------------------------------------------------
# A trained conditional model
# --------------------------------------------------------------------------


def test_samples_are_the_class_asked_for(trained, digits):
    X, y = digits
    means = np.stack([X[y == k].mean(axis=0) for k in range(10)])  # [10, 64]

    def nearest_mean(x):
        return ((x[:, None, :] - means[None]) ** 2).sum(-1).argmin(axis=1)

    assert (nearest_mean(X) == y).mean() > 0.85  # the classifier itself: about 0.90
    labels = np.repeat(np.arange(10), 20)  # [200]
    share = {}
    for w in (0.0, 1.0, 2.0):
        x = trained.sample(200, labels=labels, guidance_scale=w, num_inference_steps=20)
        share[w] = (nearest_mean(x) == labels).mean()
    # Measured over 4 training seeds: w = 0: 0.06-0.10, w = 1: 0.63-0.65, w = 2: 0.70-0.76.
    assert share[0.0] < 0.3, share
    assert share[1.0] >= 0.4, share
    assert share[2.0] >= 0.5, share


def test_a_conditional_checkpoint_round_trips(trained, tmp_path):
    path = trained.save(tmp_path / "cond.safetensors")
    loaded = LatentDiffusion.load(path)
    assert loaded.config.num_classes == 10
    assert json.loads(json.dumps(loaded.config.__dict__)) == trained.config.__dict__
    np.testing.assert_array_equal(
        loaded.ema_denoiser.params["label_embed"]["table"],
        trained.ema_denoiser.params["label_embed"]["table"],
    )
    kw = {"labels": np.arange(8) % 10, "guidance_scale": 2.5, "num_inference_steps": 10, "seed": 3}
    np.testing.assert_array_equal(loaded.sample(8, **kw), trained.sample(8, **kw))


def test_an_unconditional_checkpoint_still_loads(digits, tmp_path):
    X, _ = digits
    model = LatentDiffusion(input_size=64, **TINY).fit(X, progress=False)
    loaded = LatentDiffusion.load(model.save(tmp_path / "uncond.safetensors"))
    assert loaded.config.num_classes is None
    assert list(loaded.denoiser.params) == list(model.denoiser.params)
    np.testing.assert_array_equal(
        loaded.sample(4, num_inference_steps=5), model.sample(4, num_inference_steps=5)
    )
    with pytest.raises(ValueError, match="unconditional"):
        loaded.sample(4, labels=np.zeros(4, np.int64), num_inference_steps=5)
    # A checkpoint written before the conditioning fields existed loads as unconditional.
    arrays, config, state = load_checkpoint(tmp_path / "uncond.safetensors")
    del config["num_classes"], config["p_uncond"]
    old = LatentDiffusion.load(save_checkpoint(tmp_path / "old.safetensors", arrays, config, state))
    assert old.config.num_classes is None
    np.testing.assert_array_equal(
        old.sample(4, num_inference_steps=5), model.sample(4, num_inference_steps=5)
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"labels": np.full(4, 10)}, r"0\.\.9"),
        ({"labels": np.array([0, 1])}, "shape"),
        ({"labels": np.zeros(4)}, "integers"),
        ({"guidance_scale": 3.0}, "need labels"),
    ],
)
def test_bad_labels_are_refused(trained, kwargs, message):
    with pytest.raises(ValueError, match=message):
        trained.sample(4, num_inference_steps=5, **kwargs)


def test_inpainting_fills_in_agreeing_with_the_known_half(trained, digits):
    X, _ = digits
    x = X[:40]
    mask = np.zeros_like(x)
    mask[:, :32] = 1  # the top 4 rows of pixels are known
    x_nan = np.where(mask > 0, x, np.nan)  # unknown entries are ignored, NaN included

    def known_rms(out):
        return float(np.sqrt((((out - x) ** 2) * mask).sum() / mask.sum()))

    plain = trained.inpaint(x_nan, mask, guidance_strength=0.0)
    guided = trained.inpaint(x_nan, mask)
    assert np.isfinite(guided).all() and guided.shape == x.shape
    # Measured: 0.38 unguided, 0.13 guided; the VAE's own reconstruction error is 0.16.
    assert known_rms(guided) < 0.6 * known_rms(plain)
    with pytest.raises(ValueError, match="mask"):
        trained.inpaint(x, mask * 0.5)


@pytest.mark.filterwarnings("ignore:.*singular")  # 30 samples for 128 features
def test_guidance_report_rows(trained):
    from ldm_np.guidance import format_guidance_report, guidance_report

    rows = guidance_report(trained, scales=(0, 2), n_per_class=3, num_inference_steps=10)
    assert [r["scale"] for r in rows] == [0.0, 2.0]
    assert rows[1]["accuracy"] > rows[0]["accuracy"]
    assert all(sum(r["class_counts"]) == 30 and r["fd"] > 0 and r["fd_floor"] > 0 for r in rows)
    assert "as requested" in format_guidance_report(rows)


# --------------------------------------------------------------------------
# The command line
# --------------------------------------------------------------------------

CLI_TINY = [
    "--hidden-size", "16", "--num-layers", "1", "--num-steps", "50", "--vae-steps", "20",
    "--denoiser-steps", "20", "--vae-batch-size", "16", "--denoiser-batch-size", "16",
    "--latent-size", "4", "--schedule", "cosine", "--no-progress",
]  # fmt: skip


@pytest.fixture(scope="module")
def cond_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "cond"
    argv = ["train", "--dataset", "digits", "--num-rows", "120", "--out", str(out), "--conditional"]
    assert main([*argv, "--holdout", "8", "--no-figures", *CLI_TINY]) == 0
    return out


def test_train_conditional_keeps_the_holdout_out(cond_run):
    assert LatentDiffusion.load(cond_run / "model.safetensors").config.num_classes == 10
    assert json.loads((cond_run / "run.json").read_text())["holdout"] == 8


def test_train_hands_the_held_out_rows_to_the_figures(tmp_path, monkeypatch):
    import ldm_np.figures.report

    calls = {}
    monkeypatch.setattr(
        ldm_np.figures.report, "write_figures", lambda *a, **kw: calls.update(args=a, kw=kw) or []
    )
    argv = ["train", "--dataset", "digits", "--num-rows", "120", "--out", str(tmp_path), "--conditional"]
    assert main([*argv, "--holdout", "8", *CLI_TINY, "--vae-steps", "2", "--denoiser-steps", "2"]) == 0
    X, labels = calls["args"][1:3]
    held = calls["kw"]["holdout"]
    assert X.shape == (112, 64) and labels.shape == (112,) and held.shape == (8, 64)
    assert not (X[:, None, :] == held[None]).all(axis=-1).any()  # no held-out digit was trained on


def test_conditional_figures(trained, digits, tmp_path):
    from ldm_np.figures.report import write_conditional_figures, write_inpainting_figure

    paths = write_conditional_figures(trained, tmp_path, (8, 8))
    paths.append(write_inpainting_figure(trained, digits[0][-4:], (8, 8), tmp_path / "inpainting.png"))
    assert [p.name for p in paths] == ["class_grid.png", "guidance.png", "inpainting.png"]
    assert all(p.stat().st_size > 1000 for p in paths)


def test_sample_a_label_with_guidance(cond_run, tmp_path):
    out, grid = tmp_path / "s.npy", tmp_path / "s.png"
    argv = ["sample", "--run", str(cond_run), "--label", "3", "--guidance", "2", "--num-samples", "6"]
    assert main([*argv, "--steps", "5", "--out", str(out), "--grid", str(grid), "--no-progress"]) == 0
    assert np.load(out).shape == (6, 64) and grid.stat().st_size > 1000


@pytest.mark.filterwarnings("ignore:.*singular")
def test_evaluate_with_guidance_scales(cond_run, capsys):
    argv = ["evaluate", "--run", str(cond_run), "--num-samples", "40", "--steps", "5"]
    assert main([*argv, "--guidance-scales", "0,2", "--n-per-class", "3"]) == 0
    text = capsys.readouterr().out
    assert "class frequencies" in text and "as requested" in text


def test_train_passes_latent_noise_to_the_config():
    from ldm_np.cli import build_parser, config_from_args

    assert config_from_args(build_parser().parse_args(["train", "--out", "x"]), 64, 10).latent_noise == 0.0
    args = build_parser().parse_args(["train", "--out", "x", "--latent-noise", "0.05"])
    assert (
        config_from_args(args, 64, None).latent_noise == config_from_args(args, 64, 10).latent_noise == 0.05
    )


def test_sample_without_a_label_draws_the_training_class_frequencies(cond_run, tmp_path, monkeypatch):
    asked = []
    original = LatentDiffusion.sample

    def record(self, n, **kw):
        asked.append(kw.get("labels"))
        return original(self, n, **kw)

    monkeypatch.setattr(LatentDiffusion, "sample", record)
    argv = ["sample", "--run", str(cond_run), "--num-samples", "500", "--steps", "2", "--no-progress"]
    assert main([*argv, "--out", str(tmp_path / "s.npy")]) == 0
    from ldm_np.cli import load_training_data

    info = json.loads((cond_run / "run.json").read_text())
    _, train_labels, _, _ = load_training_data(info)
    expected = np.bincount(train_labels, minlength=10) / train_labels.size
    drawn = np.bincount(asked[0], minlength=10) / asked[0].size
    assert asked[0].shape == (500,) and np.abs(drawn - expected).max() < 0.07


@pytest.fixture(scope="module")
def uncond_run(tmp_path_factory, digits):
    out = tmp_path_factory.mktemp("runs") / "uncond"
    LatentDiffusion(input_size=64, **TINY).fit(digits[0], progress=False).save(out / "model.safetensors")
    (out / "run.json").write_text(json.dumps({"dataset": "digits", "image_shape": [8, 8], "seed": 0}))
    return out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["sample", "--run", "{cond}", "--label", "10"], "--label must be in 0..9"),
        (["sample", "--run", "{cond}", "--label", "-1"], "--label must be in 0..9"),
        (["sample", "--run", "{cond}", "--guidance", "3"], "give --label"),
        (["sample", "--run", "{uncond}", "--label", "3"], "class-conditional"),
        (["evaluate", "--run", "{uncond}", "--guidance-scales", "0,3"], "class-conditional"),
        (["evaluate", "--run", "{cond}", "--guidance-scales", "a,b"], "numbers separated by commas"),
        (["train", "--dataset", "moons", "--out", "{tmp}/m", "--conditional"], "labelled data set"),
        (["train", "--dataset", "digits", "--out", "{tmp}/d", "--holdout", "5000"], "--holdout"),
    ],
)
def test_user_errors_are_one_line(argv, message, cond_run, uncond_run, tmp_path, capsys):
    argv = [a.format(cond=cond_run, uncond=uncond_run, tmp=tmp_path) for a in argv]
    assert main([*argv, "--no-progress"] if argv[0] != "evaluate" else argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and message in err, err
