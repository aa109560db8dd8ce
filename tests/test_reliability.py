"""Reliability: finite numerics at the extremes, bounded memory, reproducibility, Ctrl-C."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import tracemalloc

import numpy as np
import pytest

import ldm_np
from ldm_np.checkpoint import load_checkpoint
from ldm_np.cli import main
from ldm_np.optim import Adam
from ldm_np.pipeline import LatentDiffusion
from ldm_np.training import vae_step

TINY = {
    "latent_size": 2,
    "hidden_size": 8,
    "num_layers": 1,
    "num_steps": 50,
    "schedule": "cosine",
    "vae_batch_size": 16,
    "denoiser_batch_size": 16,
}


@pytest.mark.parametrize("log_var_bias", [-1e4, -60.0, 60.0, 1e4])
def test_vae_step_stays_finite_for_extreme_log_var(log_var_bias):
    enc, dec = ldm_np.build_encoder(4, 2, 8), ldm_np.build_decoder(4, 2, 8)
    enc.params["enc_log_var"]["bias"][:] = log_var_bias
    x = np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32)
    losses = vae_step(enc, dec, Adam(), x, np.ones((8, 2), dtype=np.float32))
    assert all(np.isfinite(float(v)) for v in losses.values())
    for group in (*enc.params.values(), *dec.params.values()):
        assert all(np.isfinite(p).all() for p in group.values())


def test_cosine_schedule_ends_are_finite_and_in_range():
    s = ldm_np.make_schedule(1000, kind="cosine", dtype="float32")
    for key in ("betas", "alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped"):
        assert np.isfinite(s[key]).all(), key
    assert 0 < s["alphas_cumprod"][-1] < 1e-4 and s["betas"].max() <= np.float32(0.999)


def test_layernorm_of_constant_rows_is_finite():
    den = ldm_np.build_denoiser(2, 8, 1, 10)
    den.params["z_proj"]["kernel"][:] = 0.0  # every row of h becomes the same constant
    den.params["time_mlp_1"]["kernel"][:] = 0.0
    out = den(np.ones((3, 2), dtype=np.float32), np.zeros(3, dtype=np.int64))
    dz = den.backward(np.ones_like(out))
    assert np.isfinite(out).all() and np.isfinite(dz).all()


def test_peak_memory_does_not_grow_with_the_number_of_steps():
    X = np.random.default_rng(0).random((64, 6)).astype(np.float32)

    def peak(steps):
        model = LatentDiffusion(input_size=6, **TINY, vae_steps=steps, denoiser_steps=steps)
        model.fit(X, progress=False, log_every=10**9)  # warm-up, unmeasured: imports and BLAS buffers
        model = LatentDiffusion(input_size=6, **TINY, vae_steps=steps, denoiser_steps=steps)
        tracemalloc.start()
        model.fit(X, progress=False, log_every=10**9)
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    short, long = peak(20), peak(200)
    # Ten times the steps, the same peak: no cache or buffer grows per step.
    assert long < 1.2 * short + 64 * 1024, (short, long)


def checkpoint_digest(path):
    """A hash of a checkpoint's contents (arrays in name order, config, state).

    Not of the file's bytes: safetensors may order the metadata keys differently.
    """
    arrays, config, state = load_checkpoint(path)
    h = hashlib.sha256(json.dumps([config, state], sort_keys=True).encode())
    for name in sorted(arrays):
        h.update(name.encode())
        h.update(arrays[name].tobytes())
    return h.hexdigest()


def test_same_seed_gives_identical_files_across_processes(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "ldm_np",
        "train",
        "--dataset",
        "moons",
        "--num-rows",
        "100",
        "--latent-size",
        "2",
        "--hidden-size",
        "8",
        "--num-layers",
        "1",
        "--num-steps",
        "50",
        "--schedule",
        "cosine",
        "--vae-steps",
        "15",
        "--denoiser-steps",
        "15",
        "--no-progress",
        "--no-figures",
    ]
    digests = []
    for name in ("a", "b"):
        subprocess.run([*cmd, "--out", str(tmp_path / name)], check=True, capture_output=True)
        digests.append(checkpoint_digest(tmp_path / name / "model.safetensors"))
    assert digests[0] == digests[1]


# ---------------------------------------------------------------- signals and saves
#
# The training runs in a real child process. Its signal handlers start at their defaults whatever
# the test runner's are (a background job ignores SIGINT, and a child would inherit that), and it
# runs in a session of its own, so a signal meant for it never reaches the test runner.

SIGNAL_RUN = [
    "--dataset", "moons", "--num-rows", "200", "--latent-size", "2", "--hidden-size", "16",
    "--num-layers", "1", "--num-steps", "50", "--schedule", "cosine", "--vae-steps", "1500",
    "--denoiser-steps", "10", "--checkpoint-every", "25", "--no-figures", "--no-progress",
]  # fmt: skip


def default_signal_handlers() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def start(argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "ldm_np", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
        preexec_fn=default_signal_handlers,
        start_new_session=True,
    )


def wait_for(path, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    """Poll until ``path`` exists (the first periodic save): the run is then well inside stage 1."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the run never saved"
        time.sleep(0.01)


def saved_tensors(path) -> dict:
    return load_checkpoint(path)[0]


needs_posix_signals = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


@needs_posix_signals
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_finishes_the_step_saves_and_prints_the_exact_resume_command(tmp_path, signum):
    out = tmp_path / "run"
    proc = start(["train", "--out", str(out), *SIGNAL_RUN])
    wait_for(out / "model.safetensors", proc)
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    saved = LatentDiffusion.load(out / "model.safetensors")
    assert 25 <= saved.vae_state.step < 1500
    assert f"saved {out / 'model.safetensors'} (VAE step {saved.vae_state.step}/1500" in stdout
    command = stdout.split("resume with: ")[1].strip()
    assert command == f"python -m ldm_np train --resume {out}"
    assert sorted(p.name for p in out.iterdir()) == [".lock", "model.safetensors", "run.json"]
    if signum == signal.SIGTERM:
        return
    # Run the printed command as printed: it finishes the very run that was interrupted.
    resumed = subprocess.run(
        [sys.executable, *command.split()[1:]], capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr
    straight = tmp_path / "straight"
    assert main(["train", "--out", str(straight), *SIGNAL_RUN]) == 0
    a, b = saved_tensors(out / "model.safetensors"), saved_tensors(straight / "model.safetensors")
    assert sorted(a) == sorted(b)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


@needs_posix_signals
def test_a_second_signal_waits_for_the_save(tmp_path):
    """Two Ctrl-C in quick succession: the run still says truthfully what it saved."""
    out = tmp_path / "run"
    proc = start(["train", "--out", str(out), *SIGNAL_RUN, "--hidden-size", "256"])  # slower saves
    wait_for(out / "model.safetensors", proc)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.002)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    step = LatentDiffusion.load(out / "model.safetensors").vae_state.step
    assert f"(VAE step {step}/1500" in stdout
    assert not list(out.glob("*.tmp"))


def test_a_signal_during_a_save_is_held_until_the_file_is_whole(tmp_path, capsys):
    """Deterministic: the signal arrives in the middle of ``RunFolder.save``."""
    from ldm_np.runs import RunFolder

    model = LatentDiffusion(input_size=2, **TINY, vae_steps=2, denoiser_steps=2)
    real_save = model.save

    def save_with_a_signal(path, **kw):
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C mid-save
        time.sleep(0.01)  # the handler runs here, between bytecodes
        return real_save(path, **kw)

    model.save = save_with_a_signal
    run = RunFolder(tmp_path / "run")
    run.path.mkdir()
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a foreground program
    try:
        with pytest.raises(KeyboardInterrupt):  # handed on once the save is done
            run.save(model)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert run.is_saved(model)
    LatentDiffusion.load(run.checkpoint)
    assert "the run stops once it is written" in capsys.readouterr().err


# ---------------------------------------------------------------- a full disk


@pytest.fixture
def tiny_disk(tmp_path):
    """A 48 KiB tmpfs: smaller than one checkpoint. Needs root and mount(8); skipped otherwise."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if sys.platform != "linux" or os.geteuid() != 0:
        pytest.skip("mounting a size-limited tmpfs needs root on Linux")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=48k", "tmpfs", str(mnt)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=False)


def test_a_full_disk_is_one_line_and_leaves_nothing_half_written(tiny_disk, tmp_path, capsys):
    run = tiny_disk / "run"
    argv = ["train", "--out", str(run), *SIGNAL_RUN[:-6], "--vae-steps", "30", "--denoiser-steps", "5"]
    argv += ["--no-figures", "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: the disk is full") and len(err.splitlines()) == 1, err
    assert list(tiny_disk.iterdir()) == []  # no checkpoint, no 0-byte run.json, no temporary

    trained = tmp_path / "trained"
    assert main(["train", "--out", str(trained), *argv[3:]]) == 0
    capsys.readouterr()
    samples = tiny_disk / "samples.npy"
    assert main(["sample", "--run", str(trained), "--num-samples", "20000", "--out", str(samples)]) == 2
    assert "nothing was written" in capsys.readouterr().err
    assert list(tiny_disk.iterdir()) == []
