"""The command line end to end on tiny configurations, in a temporary folder."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import warnings

import numpy as np
import pytest

import ldm_np.cli as cli
from ldm_np.checkpoint import load_checkpoint, save_checkpoint
from ldm_np.cli import main
from ldm_np.runs import RunFolder

TINY = [
    "--hidden-size",
    "16",
    "--num-layers",
    "1",
    "--num-steps",
    "50",
    "--schedule",
    "cosine",
    "--vae-steps",
    "20",
    "--denoiser-steps",
    "20",
    "--vae-batch-size",
    "16",
    "--denoiser-batch-size",
    "16",
    "--no-progress",
]


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "digits"
    assert (
        main(
            [
                "train",
                "--dataset",
                "digits",
                "--num-rows",
                "120",
                "--out",
                str(out),
                "--latent-size",
                "4",
                *TINY,
            ]
        )
        == 0
    )
    return out


def test_train_writes_checkpoint_and_figures(digits_run):
    names = {p.name for p in digits_run.iterdir()}
    expected = {
        "model.safetensors",
        "run.json",
        "samples.png",
        "reconstructions.png",
        "loss_curves.png",
        "forward_noising.png",
        "reverse_process.png",
        "reverse_process.gif",
        "latent_space.png",
        "schedule.png",
    }
    assert expected <= names
    for name in expected - {"run.json"}:
        assert (digits_run / name).stat().st_size > 1000, name


def test_sample_writes_samples_in_data_units(digits_run, tmp_path):
    out, grid = tmp_path / "s.npy", tmp_path / "s.png"
    assert (
        main(
            [
                "sample",
                "--run",
                str(digits_run),
                "--num-samples",
                "10",
                "--steps",
                "5",
                "--out",
                str(out),
                "--grid",
                str(grid),
                "--no-progress",
            ]
        )
        == 0
    )
    x = np.load(out)
    assert x.shape == (10, 64) and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert grid.stat().st_size > 1000


def test_evaluate_prints_the_floor(digits_run, capsys):
    assert main(["evaluate", "--run", str(digits_run), "--num-samples", "50", "--steps", "5"]) == 0
    text = capsys.readouterr().out
    assert "Frechet distance" in text and "real floor" in text


def test_train_on_a_2d_toy_set(tmp_path):
    out = tmp_path / "moons"
    assert (
        main(
            [
                "train",
                "--dataset",
                "moons",
                "--num-rows",
                "200",
                "--out",
                str(out),
                "--latent-size",
                "2",
                *TINY,
            ]
        )
        == 0
    )
    assert (out / "samples.png").exists() and (out / "model.safetensors").exists()


def test_train_on_user_data(tmp_path):
    data = tmp_path / "mine.npy"
    np.save(data, np.random.default_rng(0).random((50, 3)).astype(np.float32))
    out = tmp_path / "mine"
    assert (
        main(
            ["train", "--dataset", str(data), "--out", str(out), "--latent-size", "2", "--no-figures", *TINY]
        )
        == 0
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["sample", "--run", "/nonexistent/run"], "no trained model"),
        (["train", "--dataset", "nope", "--out", "{tmp}/x"], "nope"),
        (["train", "--dataset", "digits", "--out", "{tmp}/x", "--resume"], "no checkpoint"),
        (["train", "--resume", "{tmp}/x"], "no checkpoint"),
        (["train", "--dataset", "moons"], "--out DIR for a new run, or --resume DIR"),
        (["train", "--out", "{tmp}/x", "--checkpoint-every", "0"], "--checkpoint-every must be"),
        (["train", "--out", "{tmp}/f.txt"], "is a file, not a folder"),
        (["train", "--out", "{tmp}/f.txt/run"], "is a file, not a folder"),
        (["train", "--out", "{tmp}/x", "--num-steps", "1000000000"], "nothing was allocated"),
        (["sample", "--run", "{tmp}/f.txt"], "not a readable safetensors checkpoint"),
        (["sample", "--run", "{tmp}/x", "--out", "{tmp}/f.txt/s.npy"], "f.txt is a file, not a folder"),
        (["train", "--dataset", "digits", "--out", "{tmp}/x", "--latent-size", "0"], "latent_size"),
        (["train", "--dataset", "moons", "--out", "{tmp}/x", "--conditional"], "labels"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(argv, message, tmp_path, capsys):
    (tmp_path / "f.txt").write_text("a file")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and message in err
    assert "Traceback" not in err and len(err.splitlines()) == 1


def test_a_damaged_checkpoint_is_a_one_line_error(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.safetensors").write_bytes(b"not a checkpoint")
    assert main(["sample", "--run", str(run)]) == 2
    assert "not a readable safetensors checkpoint" in capsys.readouterr().err


def test_help_documents_every_command():
    out = subprocess.run(
        [sys.executable, "-m", "ldm_np", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for command in ("demo", "train", "sample", "evaluate"):
        assert command in out
    train_help = subprocess.run(
        [sys.executable, "-m", "ldm_np", "train", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for option in ("--dataset", "--latent-size", "--beta", "--prediction-type", "--seed", "--resume"):
        assert option in train_help
    may_change = " ".join(train_help.split()).split("Flags that may change on resume:")[1]
    for option in ("--vae-steps", "--denoiser-steps", "--checkpoint-every", "--device"):
        assert option in may_change


# ---------------------------------------------------------------- run folders

MOONS = ["--dataset", "moons", "--num-rows", "64", "--latent-size", "2", *TINY, "--no-figures"]


def tensors(run):
    return load_checkpoint(run / "model.safetensors")[0]


@pytest.fixture
def moons_run(tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), *MOONS]) == 0
    return run


def test_a_trained_run_is_never_overwritten_by_accident(moons_run, capsys):
    before = (moons_run / "model.safetensors").read_bytes()
    capsys.readouterr()
    assert main(["train", "--out", str(moons_run), *MOONS, "--seed", "1"]) == 2
    err = capsys.readouterr().err
    assert "already holds a trained run" in err and "--resume" in err and "--overwrite" in err
    assert (moons_run / "model.safetensors").read_bytes() == before
    assert main(["train", "--out", str(moons_run), *MOONS, "--seed", "1", "--overwrite"]) == 0
    assert (moons_run / "model.safetensors").read_bytes() != before
    assert json.loads((moons_run / "run.json").read_text())["seed"] == 1


def test_nothing_is_written_when_training_fails_before_its_first_save(tmp_path, capsys):
    run = tmp_path / "new"
    argv = ["train", "--out", str(run), *MOONS, "--vae-lr", "1e30", "--vae-steps", "50"]
    with np.errstate(all="ignore"):
        assert main(argv) == 2
    assert "loss became" in capsys.readouterr().err
    assert not run.exists()  # no run.json, no lock, no folder: as it was


def test_a_second_train_into_a_locked_folder_refuses_at_once(tmp_path, capsys):
    run = tmp_path / "run"
    with RunFolder(run).lock():  # another train holds the folder
        assert main(["train", "--out", str(run), *MOONS]) == 2
    assert "another `train` is writing into" in capsys.readouterr().err
    assert not (run / "model.safetensors").exists()


def test_resume_with_more_steps_continues_the_run(moons_run, tmp_path, capsys):
    """--resume DIR takes every setting from the run; the VAE it did not retrain stays bit-identical."""
    assert main(["train", "--resume", str(moons_run), "--denoiser-steps", "30", "--no-progress"]) == 0
    assert "changed on resume: --denoiser-steps 30" in capsys.readouterr().out
    straight = tmp_path / "straight"
    assert main(["train", "--out", str(straight), *MOONS, "--denoiser-steps", "30"]) == 0
    a, b = tensors(moons_run), tensors(straight)
    assert sorted(a) == sorted(b)
    for name in a:  # the cosine decay spans the new total, so only stage 1 matches bit for bit
        if name.startswith(("encoder.", "decoder.", "opt_vae.")):
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--latent-size", "4"], "--latent-size 4 contradicts the run in .*, which has --latent-size 2"),
        (["--seed", "3"], "--seed 3 contradicts .* --seed 0"),
        (["--dataset", "rings"], "--dataset rings contradicts .* --dataset moons"),
        (["--num-rows", "100"], "--num-rows 100 contradicts .* --num-rows 64"),
        (["--conditional"], "--conditional True contradicts .* --conditional False"),
        (["--beta", "0.5"], "--beta 0.5 contradicts .* --beta 1.0"),
        (["--vae-steps", "5"], "--vae-steps 5 is below the 20 steps"),
        (["--vae-steps", "40"], "--vae-steps cannot change once the denoiser has started"),
    ],
)
def test_resume_refuses_flags_that_contradict_the_run(moons_run, flags, message, capsys):
    before = (moons_run / "model.safetensors").read_bytes(), (moons_run / "run.json").read_text()
    assert main(["train", "--resume", str(moons_run), *flags]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert re.search(message, err), err
    assert ((moons_run / "model.safetensors").read_bytes(), (moons_run / "run.json").read_text()) == before


def test_resume_accepts_flags_that_agree_with_the_run(moons_run):
    assert main(["train", "--out", str(moons_run), "--resume", *MOONS]) == 0


def test_checkpoint_every_n_saves_every_n_steps(tmp_path, monkeypatch):
    saved = []
    real = RunFolder.save

    def record(self, model, **kw):
        saved.append((model.vae_state.step, model.denoiser_state.step))
        return real(self, model, **kw)

    monkeypatch.setattr(RunFolder, "save", record)
    assert main(["train", "--out", str(tmp_path / "r"), *MOONS, "--checkpoint-every", "7"]) == 0
    assert saved == [(7, 0), (14, 0), (20, 7), (20, 14), (20, 20)]


def test_stale_temporaries_are_removed_at_the_next_start(moons_run, capsys):
    stale = moons_run / "model.safetensors.a1b2c3.tmp"  # what SIGKILL during a save leaves
    stale.write_bytes(b"partial checkpoint")
    assert main(["train", "--resume", str(moons_run)]) == 0
    assert "removed model.safetensors.a1b2c3.tmp" in capsys.readouterr().out
    assert not list(moons_run.glob("*.tmp"))


def test_a_previous_format_run_resumes_from_its_run_json(moons_run, capsys):
    """A run written before the checkpoint held its options: run.json supplies them, --num-rows the rest."""
    path = moons_run / "model.safetensors"
    arrays, config, state = load_checkpoint(path)
    save_checkpoint(path, arrays, config, state)  # no "run" entry in the header
    (moons_run / "run.json").write_text(json.dumps({"dataset": "moons", "seed": 0, "holdout": 0}))
    assert main(["train", "--resume", str(moons_run), "--num-rows", "64"]) == 0
    assert json.loads((moons_run / "run.json").read_text())["num_rows"] == 64


def test_an_impossible_config_in_a_checkpoint_is_refused_before_allocating(moons_run, capsys):
    path = moons_run / "model.safetensors"
    arrays, config, state = load_checkpoint(path)
    save_checkpoint(path, arrays, dict(config, num_steps=10**12), state)
    assert main(["sample", "--run", str(moons_run)]) == 2
    err = capsys.readouterr().err
    assert "num_steps=1000000000000" in err and "nothing was allocated" in err


def test_a_damaged_run_json_is_one_line(moons_run, capsys):
    path = moons_run / "model.safetensors"
    arrays, config, state = load_checkpoint(path)
    save_checkpoint(path, arrays, config, state)  # an older run: options only in run.json
    (moons_run / "run.json").write_text("")
    assert main(["evaluate", "--run", str(moons_run)]) == 2
    assert "run.json is damaged" in capsys.readouterr().err


# ---------------------------------------------------------------- sample


def test_sample_streams_in_batches_and_writes_a_whole_npy(moons_run, tmp_path, monkeypatch):
    from ldm_np.pipeline import LatentDiffusion

    monkeypatch.setattr(cli, "SAMPLE_BATCH", 16)
    out = tmp_path / "s.npy"
    argv = ["sample", "--run", str(moons_run), "--num-samples", "40", "--steps", "3", "--out", str(out)]
    assert main(argv) == 0
    x = np.load(out)
    assert x.shape == (40, 2) and x.dtype == np.float32
    model = LatentDiffusion.load(moons_run / "model.safetensors")
    np.testing.assert_array_equal(x[:16], model.sample(16, num_inference_steps=3, seed=0))
    np.testing.assert_array_equal(x[32:], model.sample(8, num_inference_steps=3, seed=cli.batch_seed(0, 2)))
    assert not list(tmp_path.glob("*.tmp"))


def test_sample_memory_does_not_grow_with_the_count(moons_run, tmp_path, monkeypatch):
    import tracemalloc

    monkeypatch.setattr(cli, "SAMPLE_BATCH", 64)
    peaks = []
    for n in (64, 64, 2560):  # the first run warms caches (imports, BLAS buffers)
        argv = ["sample", "--run", str(moons_run), "--num-samples", str(n), "--steps", "2", "--no-progress"]
        tracemalloc.start()
        assert main([*argv, "--out", str(tmp_path / f"{n}.npy")]) == 0
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    # 40x the samples: drawn at once, the denoiser's [2560, 64] activations alone would add 650 KB.
    assert peaks[2] < 1.25 * peaks[1], peaks


@pytest.mark.parametrize("width", [2, 3])
def test_sample_grid_works_for_every_run(tmp_path, width):
    data = tmp_path / "data.npy"
    np.save(data, np.random.default_rng(0).standard_normal((64, width)).astype(np.float32))
    run = tmp_path / "run"
    argv = ["train", "--dataset", str(data), "--out", str(run), "--latent-size", "2", *TINY, "--no-figures"]
    assert main(argv) == 0
    grid = tmp_path / "grid.png"
    assert main(["sample", "--run", str(run), "--grid", str(grid), "--steps", "2"]) == 0
    assert grid.read_bytes().startswith(b"\x89PNG")


# ---------------------------------------------------------------- figures

TABLE_FIGURES = {"loss_curves.png", "schedule.png", "latent_space.png", "samples.png", "projection.png"}


@pytest.mark.parametrize(
    ("dataset", "expected"),
    [
        ("three.csv", TABLE_FIGURES),
        ("manifold", TABLE_FIGURES),
        ("moons", {"loss_curves.png", "schedule.png", "latent_space.png", "samples.png"}),
    ],
)
def test_figures_suit_the_shape_of_the_data(tmp_path, dataset, expected, capsys):
    if dataset == "three.csv":
        dataset = str(tmp_path / "three.csv")
        np.savetxt(dataset, np.random.default_rng(0).standard_normal((64, 3)), delimiter=",")
    run = tmp_path / "run"
    argv = ["train", "--dataset", dataset, "--num-rows", "64", "--out", str(run), "--latent-size", "2", *TINY]
    assert main(argv) == 0
    assert {p.name for p in run.glob("*.png")} == expected
    assert ("image figures skipped" in capsys.readouterr().out) == ("projection.png" in expected)


def test_a_failing_figure_is_a_warning_and_the_run_succeeds(tmp_path, monkeypatch):
    import ldm_np.figures.plots as plots

    def broken(*a, **kw):
        raise ValueError("no room on the canvas")

    monkeypatch.setattr(plots, "loss_curves", broken)
    run = tmp_path / "run"
    argv = ["train", "--dataset", "moons", "--num-rows", "64", "--out", str(run), "--latent-size", "2", *TINY]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(argv) == 0
    assert any("loss_curves.png not written" in str(w.message) for w in caught)
    assert (run / "samples.png").exists() and not (run / "loss_curves.png").exists()
