"""``python -m ldm_np --version``: the versions a bug report needs."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

import ldm_np
from ldm_np.cli import main
from ldm_np.versions import blas_version, numpy_blas, version_line, versions

ROOT = Path(__file__).resolve().parents[1]


def test_version_prints_ldm_np_python_numpy_and_blas_and_exits_0(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    line = capsys.readouterr().out.strip()
    assert line == version_line()
    assert line.startswith(f"ldm_np {ldm_np.__version__} (")
    assert f"NumPy {np.__version__}" in line
    assert f"BLAS {blas_version()})" in line


def test_python_m_ldm_np_version_from_the_command_line():
    done = subprocess.run(
        [sys.executable, "-m", "ldm_np", "--version"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == version_line()


def test_blas_is_read_from_numpys_build_configuration():
    blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    assert blas_version() == f"{blas['name']} {blas['version']}"
    assert versions()["blas"] == blas_version()


@pytest.mark.parametrize(
    "config, expected",
    [
        (
            {"Build Dependencies": {"blas": {"name": "openblas64", "version": "0.3.23.dev"}}},
            "openblas64 0.3.23.dev",
        ),
        ({"Build Dependencies": {"blas": {"name": "accelerate", "version": "unknown"}}}, "accelerate"),
        ({"Build Dependencies": {"blas": {"name": "unknown", "version": "unknown"}}}, "unknown"),
        ({"Build Dependencies": {}}, "unknown"),
        ({}, "unknown"),
    ],
)
def test_blas_version_from_a_config(config, expected):
    assert blas_version(config) == expected


def release(version: str) -> tuple[int, ...]:
    """'1.26' -> (1, 26, 0): a floor names the first release of its series."""
    parts = tuple(int(p) for p in version.split("."))
    return parts + (0,) * (3 - len(parts))


def floors(lines: list[str]) -> dict[str, str]:
    """{'numpy': '1.26', ...} from requirement strings 'numpy>=1.26'."""
    found = (re.fullmatch(r"([A-Za-z0-9_.-]+)\s*>=\s*([0-9.]+)", line.strip()) for line in lines)
    return {m[1].lower(): m[2] for m in found if m}


def test_ci_pins_exactly_the_floors_that_requirements_and_pyproject_declare():
    required = floors((ROOT / "requirements.txt").read_text().splitlines())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = floors(project["dependencies"] + project["optional-dependencies"]["test"])
    pins = dict(
        line.strip().lower().split("==")
        for line in (ROOT / "constraints" / "floors.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    assert required == declared
    assert set(pins) == set(required)
    assert {name: release(pins[name]) for name in pins} == {n: release(v) for n, v in required.items()}


def test_numpy_blas_is_the_build_configurations_entry():
    assert numpy_blas() == np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    assert numpy_blas({"Build Dependencies": {"blas": {"name": "mkl"}}}) == {"name": "mkl"}
    assert numpy_blas({}) == {}
