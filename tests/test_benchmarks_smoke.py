"""The benchmark runs end to end: ``python benchmarks/run.py --quick`` in a subprocess.

Nothing here asserts a time: timings on a shared machine are noise. The test
checks that every row of the table is printed, with a number, and that the
GPU path refuses cleanly where there is no CuPy; that the BLAS facts come
from NumPy when threadpoolctl is missing; and that a kernel forced through
the environment is named in a warning. One BLAS thread
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


def run_benchmark(
    *args: str, timeout: float = 180.0, env: dict[str, str] | None = None, script: Path = RUN
) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), MPLBACKEND="Agg", **(env or {}))
    return subprocess.run(
        [sys.executable, str(script), *args],
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
    assert re.search(r"- BLAS: .*, kernel .+, \d+ threads", text), text[:2000]
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


def test_blas_info_without_threadpoolctl_falls_back_to_numpy(monkeypatch):
    from benchmarks import harness

    monkeypatch.setitem(sys.modules, "threadpoolctl", None)  # import threadpoolctl -> ImportError
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    monkeypatch.delenv("OPENBLAS_CORETYPE", raising=False)
    monkeypatch.delenv("BLIS_ARCH_TYPE", raising=False)
    info = harness.blas_info()
    assert info["source"].startswith("numpy.show_config")
    assert info["threads"] == 1
    assert info["kernel"].startswith("unknown without threadpoolctl")


def test_kernel_warning_names_every_forcing_variable(monkeypatch):
    from benchmarks import harness

    for var in harness.KERNEL_ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    assert harness.kernel_warning() is None
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    monkeypatch.setenv("MKL_CBWR", "AVX2")
    warning = harness.kernel_warning()
    assert "OPENBLAS_CORETYPE=Haswell" in warning and "MKL_CBWR=AVX2" in warning
    assert "Every time and every ratio below is measured under that kernel" in warning


def test_quick_benchmark_warns_when_the_environment_forces_a_kernel():
    out = run_benchmark(
        "--quick",
        "--threads",
        "1",
        "--repeats",
        "1",
        "--no-torch",
        "--rows",
        "vae",
        env={"MKL_CBWR": "COMPATIBLE"},  # harmless everywhere, unlike forcing an OpenBLAS kernel
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert re.search(r"WARNING: .*MKL_CBWR=COMPATIBLE", out.stdout), out.stdout[:2000]


def test_ab_core_compares_two_checkouts():
    env = dict(os.environ, MPLBACKEND="Agg", OPENBLAS_NUM_THREADS="1")
    env.pop("PYTHONPATH", None)  # each side's worker sets its own
    out = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "ab_core.py"),
            str(REPO),
            str(REPO),
            "--quick",
            "--rounds",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=REPO,
        env=env,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert re.search(r"- BLAS: .*, kernel .+, \d+ threads", out.stdout), out.stdout
    for case in ("denoiser step, batch 32", "VAE step, batch 32"):
        line = next((x for x in out.stdout.splitlines() if x.startswith(f"| {case} |")), None)
        assert line is not None and re.search(r"\*\*\d+\.\d\dx\*\* \| \d+\.\d\d-\d+\.\d\dx \|$", line), (
            out.stdout
        )


def test_ab_core_refuses_a_folder_without_ldm_np(tmp_path):
    out = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "ab_core.py"), str(REPO), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        check=False,
    )
    assert out.returncode == 2 and "holds no ldm_np/ package" in out.stderr


def test_latent_against_full_space_prints_both_models_with_the_demo_evaluation():
    out = run_benchmark(
        "--quick", script=REPO / "benchmarks" / "latent_vs_full.py", env={"OPENBLAS_NUM_THREADS": "1"}
    )
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    header = next(line for line in lines if line.startswith("model | "))
    for column in ("FD ratio, classifier", "FD ratio, PCA", "precision / recall, classifier", "memorisation"):
        assert column in header, header
    for model in ("latent (z: 8)", "full space (x: 64)"):
        row = next((line for line in lines if line.startswith(model)), None)
        assert row is not None, out.stdout
        assert len(row.split(" | ")) == len(header.split(" | ")), row
        assert re.search(r"\d+(\.\d+)?%$", row), row  # the memorisation rate ends the row
