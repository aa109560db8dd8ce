"""The benchmark runs end to end: ``python benchmarks/run.py --quick`` in a subprocess.

Nothing here asserts a time: timings on a shared machine are noise. The test
checks that every row of the table is printed, with a number, and that the
GPU path refuses cleanly where there is no CuPy. One BLAS thread
(``--threads 1``) keeps the run short and steady on a busy machine; it takes
about 10-20 s, with PyTorch if it is installed and without it otherwise.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ldm_np.backend import gpu_available

REPO = Path(__file__).resolve().parent.parent
RUN = REPO / "benchmarks" / "run.py"

pytestmark = pytest.mark.skipif(not RUN.exists(), reason="benchmarks/run.py is not in this checkout")


def run_benchmark(*args: str, timeout: float = 180.0) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), MPLBACKEND="Agg")
    return subprocess.run(
        [sys.executable, str(RUN), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env=env,
        check=False,
    )


def test_quick_benchmark_prints_every_row():
    out = run_benchmark("--quick", "--threads", "1", "--repeats", "1")
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout
    assert "BLAS:" in text and "threads" in text
    for row in (
        "VAE train step",
        "denoiser train step (latent 32)",
        "full-space denoiser train step (287)",
        "denoiser forward (one sampling step)",
        "DDPM",
        "DDIM",
    ):
        lines = [line for line in text.splitlines() if line.startswith("| ") and row in line]
        assert lines, f"row {row!r} missing from:\n{text}"
        assert re.search(r"\d+(\.\d+)? (ms|s) ", lines[-1]), lines[-1]
    assert "tracemalloc peak MiB" in text


@pytest.mark.skipif(gpu_available(), reason="a GPU is present: the GPU path runs instead of refusing")
def test_gpu_benchmark_without_cupy_fails_with_a_clear_message():
    out = run_benchmark("--quick", "--device", "gpu", timeout=60.0)
    assert out.returncode == 2
    assert "CuPy" in out.stderr and "--device gpu" in out.stderr


def test_threads_benchmark_prints_every_line():
    env = dict(os.environ, PYTHONPATH=str(REPO), MPLBACKEND="Agg")
    out = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "threads.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=REPO,
        env=env,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    for work in ("ufunc, 256 KiB", "ufunc, 2 MiB", "ufunc, 32 MiB", "matmul [64, 256]"):
        line = next((x for x in out.stdout.splitlines() if x.startswith(work)), None)
        assert line is not None and re.search(r"\d+\.\d\dx$", line), out.stdout
    assert re.search(r"denoiser step, batch 128: 1 worker [\d.]+ ms, 2 workers [\d.]+ ms", out.stdout)
