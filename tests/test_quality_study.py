"""benchmarks/quality_study.py: every setting runs, every swap does what its row says and is undone.

The study's numbers are README's; these tests check the script that makes
them: each setting trains and evaluates end to end at tiny sizes, each
swapped formula gives the values its docstring states, and after a run the
library's functions are the originals again.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from benchmarks import quality_study as study
from ldm_np import cli, diffusion, pipeline, training
from ldm_np.denoiser import Denoiser
from ldm_np.optim import AdamW
from ldm_np.schedules import make_schedule

# Every attribute a swap may replace, by owner.
SWAPPABLE = [
    (training.EMA, "current_decay"),
    (training, "reparameterize_forward"),
    (pipeline, "learning_rate"),
    (pipeline, "latent_scale_factor"),
    (pipeline, "step_rng"),
    (pipeline, "run_sampler"),
    (pipeline.LatentDiffusion, "__init__"),
    (pipeline.LatentDiffusion, "fit_denoiser"),
    (pipeline.LatentDiffusion, "sample"),
    (diffusion, "_min_snr_weights"),
    (Denoiser, "__init__"),
    (cli, "config_from_args"),
]


def originals():
    return [getattr(owner, name) for owner, name in SWAPPABLE]


def tiny_model(**config):
    sizes = dict(latent_size=2, hidden_size=8, num_layers=1, num_steps=20, vae_steps=4, denoiser_steps=30)
    return pipeline.LatentDiffusion(input_size=4, schedule="cosine", **{**sizes, **config})


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """A run of the defaults at --quick sizes, for the settings that only sample."""
    out = str(tmp_path_factory.mktemp("study") / "defaults")
    assert study.main(["defaults", "--quick", "--out", out]) == 0
    return out


@pytest.mark.parametrize("name", sorted(study.SETTINGS))
def test_every_setting_runs_and_puts_the_library_back(name, tmp_path, capsys, quick_run):
    before = originals()
    where = (
        ["--seed", "1", "--out", str(tmp_path / name)]
        if study.SETTINGS[name].trains
        else ["--run", quick_run]
    )
    capsys.readouterr()
    assert study.main([name, "--quick", *where]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"setting {name}: ")
    assert ("training seed 1" in text and "training: " in text) == study.SETTINGS[name].trains, text[:300]
    assert "real floor (halves)" in text and "memorisation (data space)" in text, text
    assert all(a is b for a, b in zip(originals(), before, strict=True)), "a swap was not undone"


def test_list_names_every_setting_and_bad_calls_are_refused(capsys, quick_run):
    assert study.main(["--list"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert listed == sorted(study.SETTINGS)
    assert study.main([]) == 2
    for argv, message in (
        (["no-such-setting"], "invalid choice"),
        (["ema-warmup-4", "--run", quick_run], "--run is for the settings that only sample"),
        (["temperature-1.05"], "name the trained run with --run DIR"),
    ):
        with pytest.raises(SystemExit):
            study.main(argv)
        assert message in capsys.readouterr().err


def test_replaced_restores_the_attribute_when_the_block_raises():
    original = pipeline.latent_scale_factor
    with pytest.raises(RuntimeError), study.replaced(pipeline, "latent_scale_factor", None):
        raise RuntimeError("inside")
    assert pipeline.latent_scale_factor is original


def test_ema_warmup_gives_one_plus_n_over_k_plus_n():
    ema = training.EMA({"layer": {"w": np.zeros(3)}}, decay=0.999)
    with study.ema_warmup(4.0)(0):
        assert ema.current_decay() == pytest.approx(1 / 4)
        ema.num_updates = 10_000
        assert ema.current_decay() == 0.999  # the decay caps the warm-up
    ema.num_updates = 0
    assert ema.current_decay() == pytest.approx(1 / 10)


def test_lr_floor_holds_the_denoisers_rate_at_the_floor_and_leaves_the_vaes_alone():
    X = np.random.default_rng(0).standard_normal((32, 4)).astype(np.float32)
    model = tiny_model(warmup_steps=2)
    with study.denoiser_lr_floor(0.05)(0):
        model.fit(X, progress=False)
    last = (model.config.denoiser_steps - 1 - 2) / (model.config.denoiser_steps - 2)
    want = model.config.denoiser_lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * last)))
    assert model.denoiser_optimizer.lr == pytest.approx(want)
    assert model.denoiser_optimizer.lr > 0.05 * model.config.denoiser_lr
    plain = training.learning_rate(model.config.vae_steps - 1, model.config.vae_lr, 0, model.config.vae_steps)
    assert model.vae_optimizer.lr == pytest.approx(plain)


def test_sqrt_alpha_bar_weights_are_root_alpha_bar_over_its_mean():
    schedule = make_schedule(50, 1e-4, 0.02, "cosine")
    t = np.array([0, 10, 49])
    root = np.sqrt(schedule["alphas_cumprod"])
    with study.loss_weight_sqrt_alpha_bar(0):
        w = diffusion.min_snr_weights(schedule, t, "epsilon", 1.0)
    np.testing.assert_allclose(w, root[t] / root.mean(), rtol=1e-6)


def test_latent_scale_multiplies_the_unit_variance_factor():
    z = np.random.default_rng(1).standard_normal((100, 3)) * 2.5
    with study.latent_scale(1.25)(0):
        assert pipeline.latent_scale_factor(z) == pytest.approx(1.25 / z.std())


def test_adamw_replaces_only_the_denoisers_optimizer():
    with study.denoiser_adamw(0.1)(0):
        model = tiny_model()
    assert isinstance(model.denoiser_optimizer, AdamW) and model.denoiser_optimizer.weight_decay == 0.1
    assert model.denoiser_optimizer.lr == model.config.denoiser_lr
    assert not isinstance(model.vae_optimizer, AdamW)


def test_zero_init_starts_every_block_as_the_identity_and_predicts_zero():
    with study.zero_init(0):
        den = Denoiser(latent_size=3, hidden_size=8, num_layers=2, num_steps=10)
    z = np.random.default_rng(2).standard_normal((5, 3)).astype(np.float32)
    np.testing.assert_array_equal(den(z, np.arange(5)), np.zeros((5, 3), np.float32))
    assert np.any(den.params["denoiser_block_1_up"]["kernel"] != 0)  # only the named kernels


def test_stratified_t_puts_one_t_in_each_stratum_and_passes_other_draws_through():
    rng = study.StratifiedT(np.random.default_rng(3), 1000)
    t = rng.integers(0, 1000, size=250)
    np.testing.assert_array_equal(t // 4, np.arange(250))  # one t per 1000 / 250 = 4 steps
    rows = rng.integers(0, 1597, size=6)
    assert rows.max() < 1597 and len(set(rows.tolist())) > 1
    assert rng.standard_normal(2).shape == (2,)


def test_decoder_noise_adds_noise_of_the_stated_spread_to_z():
    mu, log_var = np.zeros((4000, 2), np.float32), np.full((4000, 2), -50.0, np.float32)
    eps = np.zeros((4000, 2), np.float32)
    with study.decoder_noise(0.24)(0):
        z, _ = training.reparameterize_forward(mu, log_var, eps)
    assert z.dtype == np.float32
    assert z.std() == pytest.approx(0.24, rel=0.05)


def test_sample_with_and_temperature_reach_the_sampler():
    X = np.random.default_rng(4).standard_normal((32, 4)).astype(np.float32)
    model = tiny_model().fit(X, progress=False)
    with study.sample_with(use_ema=False)(0):
        raw = model.sample(5, num_inference_steps=4, seed=7)
    np.testing.assert_array_equal(raw, model.sample(5, num_inference_steps=4, seed=7, use_ema=False))
    assert not np.array_equal(raw, model.sample(5, num_inference_steps=4, seed=7))
    x_T = 1.1 * np.random.default_rng(7).standard_normal((5, 2), dtype=np.float32)
    with study.temperature(1.1)(0):
        hot = model.sample(5, num_inference_steps=4, seed=7)
    np.testing.assert_array_equal(hot, model.sample(5, num_inference_steps=4, seed=7, x_T=x_T))


def test_config_fields_reach_the_config_train_builds():
    args = cli.build_parser().parse_args(["train", "--dataset", "moons"])
    with study.config_fields(grad_clip=1e9)(0):
        assert cli.config_from_args(args, 2, None).grad_clip == 1e9
    assert cli.config_from_args(args, 2, None).grad_clip == 1.0


def train_config_of(name, monkeypatch):
    """The LDMConfig the setting's `train` call builds (the call is caught, nothing trains)."""
    calls = []
    monkeypatch.setattr(study.cli, "main", lambda argv: calls.append(argv) or 1)
    study.run_setting(name, 0, "unused")
    args = cli.build_parser().parse_args(calls[0])
    return cli.config_from_args(args, 64, None)


def test_defaults_train_the_demo_and_every_other_setting_starts_from_the_base(monkeypatch):
    demo = train_config_of("defaults", monkeypatch)
    assert (demo.denoiser_batch_size, demo.denoiser_steps) == (
        cli.DEMO_CONFIG["denoiser_batch_size"],
        cli.DEMO_CONFIG["denoiser_steps"],
    )
    base = train_config_of("base", monkeypatch)
    assert (base.denoiser_batch_size, base.denoiser_steps) == (256, 3500)
    assert base == dataclasses.replace(demo, denoiser_batch_size=256, denoiser_steps=3500)
    assert train_config_of("denoiser-batch-512", monkeypatch) == demo  # the demo is that row
    shorter = train_config_of("defaults-denoiser-1400", monkeypatch)  # a change of the demo, not the base
    assert shorter == dataclasses.replace(demo, denoiser_steps=1400)
    vae_256 = train_config_of("defaults-vae-batch-256", monkeypatch)
    assert vae_256 == dataclasses.replace(demo, vae_batch_size=256, vae_steps=6000)
    # README: "the rows named `defaults-...` change them instead of the base"
    for name, setting in study.SETTINGS.items():
        assert setting.on_base == (not name.startswith("defaults")), name
    longer = train_config_of("denoiser-4500", monkeypatch)  # a setting's own flag wins over the base's
    assert (longer.denoiser_batch_size, longer.denoiser_steps) == (256, 4500)
