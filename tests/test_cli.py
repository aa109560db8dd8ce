"""The command line end to end on tiny configurations, in a temporary folder."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from ldm_np.cli import main

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
        (["train", "--dataset", "digits", "--out", "{tmp}/x", "--latent-size", "0"], "latent_size"),
        (["train", "--dataset", "moons", "--out", "{tmp}/x", "--conditional"], "labels"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(argv, message, tmp_path, capsys):
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
