"""Array-module dispatch: the one place that knows about CuPy.

Every function in ldm_np takes its array module from its inputs,
``xp = get_array_module(x)``, and allocates with ``xp`` and an explicit dtype,
so the same code runs on NumPy arrays (CPU) and CuPy arrays (GPU).

CuPy is optional. It is imported inside a ``try`` that catches any exception,
so a missing or broken CUDA install still leaves a working CPU build.
(``array_api_compat.array_namespace`` generalises this idea to PyTorch and
JAX arrays; ldm_np keeps to NumPy and CuPy.)
"""

from __future__ import annotations

from typing import Any

import numpy as np

try:  # pragma: no cover - depends on the machine
    import cupy as _cupy

    _cupy.cuda.runtime.getDeviceCount()
except Exception:
    _cupy = None

DEVICES = ("cpu", "gpu")


def gpu_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device."""
    return _cupy is not None


def get_array_module(*arrays: Any) -> Any:
    """The array module (``numpy`` or ``cupy``) that owns ``arrays``.

    Arrays that are not CuPy arrays (NumPy arrays, Python numbers, None) count
    as NumPy. An array type may also name its own module with a class
    attribute ``_ldm_array_module``; the test suite's strict stand-in device
    uses this to act as a third backend.
    """
    for a in arrays:
        module = getattr(type(a), "_ldm_array_module", None)
        if module is not None:
            return module
        if _cupy is not None and isinstance(a, _cupy.ndarray):
            return _cupy
    return np


def xp_for_device(device: str) -> Any:
    """The array module for ``device`` ("cpu" or "gpu"), with a clear error."""
    if device == "cpu":
        return np
    if device == "gpu":
        if _cupy is None:
            raise RuntimeError(
                "device='gpu' needs CuPy and a CUDA GPU, and none was found. "
                "Install the CuPy wheel that matches your CUDA version "
                "(for example `pip install cupy-cuda12x`) or use device='cpu'."
            )
        return _cupy
    raise ValueError(f"device must be one of {DEVICES}, got {device!r}")


def device_of(x: Any) -> str:
    """'gpu' for CuPy arrays, 'cpu' otherwise."""
    return "cpu" if get_array_module(x) is np else "gpu"


def to_device(x: Any, device: str) -> Any:
    """Move ``x`` to ``device``; dicts and lists are moved item by item.

    Non-array leaves (ints, floats, strings) are returned unchanged.
    """
    if isinstance(x, dict):
        return {k: to_device(v, device) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(to_device(v, device) for v in x)
    if not hasattr(x, "shape"):
        return x
    xp = xp_for_device(device)
    if xp is np:
        return to_numpy(x)
    return xp.asarray(x)


def to_numpy(x: Any) -> Any:
    """A NumPy copy of ``x`` on the host (a no-op for NumPy arrays)."""
    if isinstance(x, dict):
        return {k: to_numpy(v) for k, v in x.items()}
    if hasattr(x, "get") and not isinstance(x, np.ndarray) and hasattr(x, "shape"):
        return x.get()  # cupy.ndarray -> numpy.ndarray: a device-to-host copy
    return np.asarray(x)


def default_rng(seed: Any = None, xp: Any = np) -> Any:
    """A random generator for the array module ``xp``.

    NumPy and CuPy draw different streams from the same seed, so results on
    the two devices agree statistically, not bit for bit.
    """
    if xp is np:
        return np.random.default_rng(seed)
    return xp.random.default_rng(seed)
