"""The versions a bug report needs: ldm_np's, Python's, NumPy's and its BLAS library's.

``python -m ldm_np --version`` prints ``version_line()``. The BLAS entry is the
library NumPy was built against, read from NumPy's own build configuration
(``numpy.show_config(mode="dicts")``); the wheels from
PyPI bundle that library, so it is also the one that runs.
"""

from __future__ import annotations

import platform
from typing import Any

import numpy as np

from . import __version__


def numpy_blas(config: dict[str, Any] | None = None) -> dict[str, Any]:
    """The BLAS entry of NumPy's build configuration ('name', 'version', ...), or {} if it has none.

    config: the dict ``numpy.show_config(mode="dicts")`` returns; read from NumPy when None.
    """
    if config is None:
        config = np.show_config(mode="dicts")
    return config.get("Build Dependencies", {}).get("blas", {})


def blas_version(config: dict[str, Any] | None = None) -> str:
    """'name version' of the BLAS library in NumPy's build configuration, or 'unknown'.

    config: the dict ``numpy.show_config(mode="dicts")`` returns; read from NumPy when None.
    """
    blas = numpy_blas(config)
    name, version = blas.get("name"), blas.get("version")
    if not name or name == "unknown":
        return "unknown"
    return f"{name} {version}" if version and version != "unknown" else name


def versions() -> dict[str, str]:
    """{'ldm_np', 'python', 'numpy', 'blas'} -> version strings."""
    return {
        "ldm_np": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "blas": blas_version(),
    }


def version_line() -> str:
    """One line for a bug report, e.g. 'ldm_np 0.1.0 (Python 3.11.7, NumPy 2.4.6, BLAS scipy-openblas 0.3.31)'."""
    v = versions()
    return f"ldm_np {v['ldm_np']} (Python {v['python']}, NumPy {v['numpy']}, BLAS {v['blas']})"
