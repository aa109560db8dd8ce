"""Array-module dispatch: the one place that knows about CuPy.

Every function in ldm_np takes its array module from its inputs,
``xp = get_array_module(x)``, and allocates with ``xp`` and an explicit dtype,
so the same code runs on NumPy arrays (CPU) and CuPy arrays (GPU).

A device is a name for an array module: ``"cpu"`` is NumPy, ``"gpu"`` is
CuPy. Models, schedules and ``LatentDiffusion`` take ``device=`` and resolve it
here (``xp_for_device``); data cross between devices only through
``to_device`` and ``to_numpy``, so every host/device copy in the library is
written out where it happens.

CuPy is optional. It is imported inside a ``try`` that catches any exception
(not installed, a wheel built for another CUDA, no driver, no device), so a
broken CUDA install still leaves a working CPU build; ``device="gpu"`` then
raises a ``RuntimeError`` that says why and how to install CuPy.
``array_api_compat.array_namespace`` generalises this idea to PyTorch and JAX
arrays; ldm_np keeps to NumPy and CuPy.

NumPy and CuPy draw different random streams from the same seed, so results
on the two devices agree statistically, not bit for bit. Tests that compare
the devices draw their noise on the host and move it.

Testing hook. The test suite runs the whole pipeline on a third, strict
stand-in device (``tests/strict_xp.py``): NumPy underneath, CuPy's rules on
top (mixing in a host array is a TypeError, and every read of a value back to
the host is counted). Two small things make that possible without a GPU:

- an array type may name its own module with a class attribute
  ``_ldm_array_module``, which ``get_array_module`` honours;
- ``_register_device(name, module)`` adds a device name, so that
  ``LatentDiffusion(device="strict")``, ``make_schedule(device="strict")`` and
  the models run their real code paths (``xp_for_device``, ``to_device``)
  unchanged.

Both are private: ``DEVICES``, the CLI's ``--device`` and the documentation
offer only "cpu" and "gpu". A registry was preferred to moving parameters by
hand in the tests, because ``LatentDiffusion`` allocates on its device in many
places (data statistics, schedules, the EMA copy, checkpoint loading), and a
test that re-implemented those moves would check the test, not the library.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

DEVICES = ("cpu", "gpu")

INSTALL_HINT = (
    "Install the CuPy wheel that matches your CUDA version, for example "
    "`pip install cupy-cuda12x` for CUDA 12 (or `pip install -e .[gpu]`), check it with "
    "`python -c 'import cupy; cupy.show_config()'`, or use device='cpu'"
)

try:  # pragma: no cover - depends on the machine
    import cupy as _cupy

    if _cupy.cuda.runtime.getDeviceCount() < 1:
        raise RuntimeError("CuPy found no CUDA device")
    _CUPY_PROBLEM: str | None = None
except Exception as exc:  # ImportError, CUDARuntimeError, OSError (missing libcudart), ...
    _cupy = None
    _CUPY_PROBLEM = f"{type(exc).__name__}: {exc}".splitlines()[0].rstrip(": ")

# Extra devices registered by the test suite: name -> array module.
_EXTRA_DEVICES: dict[str, Any] = {}


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
    """The array module for ``device`` ("cpu" or "gpu"), with a clear error.

    ``device="gpu"`` without CuPy or without a CUDA device raises a
    ``RuntimeError`` (one line) that says why and how to install CuPy.
    """
    if device == "cpu":
        return np
    if device == "gpu":
        if _cupy is None:
            raise RuntimeError(
                f"device='gpu' needs CuPy and a CUDA GPU, and none was found ({_CUPY_PROBLEM}). {INSTALL_HINT}."
            )
        return _cupy
    if isinstance(device, str) and device in _EXTRA_DEVICES:
        return _EXTRA_DEVICES[device]
    raise ValueError(f"device must be one of {DEVICES}, got {device!r}")


def device_of(x: Any) -> str:
    """The device name of ``x``'s array module: 'cpu' for NumPy, 'gpu' for CuPy."""
    xp = get_array_module(x)
    if xp is np:
        return "cpu"
    if xp is _cupy:
        return "gpu"
    for name, module in _EXTRA_DEVICES.items():
        if module is xp:
            return name
    return "gpu"


def to_device(x: Any, device: str) -> Any:
    """Move ``x`` to ``device``; dicts, lists and tuples are moved item by item.

    An array already on ``device`` is returned as it is (no copy). Anything
    else goes through the host: ``to_numpy`` then the device's ``asarray``.
    Non-array leaves (numbers, strings, None) are returned unchanged;
    any other object is a TypeError.
    """
    xp = xp_for_device(device)  # validates the name first, even for an empty dict
    if isinstance(x, dict):
        return {k: to_device(v, device) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(to_device(v, device) for v in x)
    if not hasattr(x, "shape"):
        if x is not None and not isinstance(x, (numbers.Number, str)):
            raise TypeError(
                f"x must be an array or a dict/list/tuple of arrays, got {type(x).__name__} {x!r}"
            )
        return x
    if get_array_module(x) is xp:
        return x
    host = to_numpy(x)
    return host if xp is np else xp.asarray(host)


def to_numpy(x: Any) -> Any:
    """A NumPy array on the host: a copy for a device array, ``np.asarray(x)`` otherwise.

    For a CuPy array this is ``x.get()``, a device-to-host copy that waits for
    the GPU: call it at logging intervals and after loops, never inside a step.
    Dicts are converted value by value.
    """
    if isinstance(x, dict):
        return {k: to_numpy(v) for k, v in x.items()}
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "shape") and callable(getattr(x, "get", None)):
        return x.get()  # cupy.ndarray (or the strict stand-in) -> numpy.ndarray
    return np.asarray(x)


def default_rng(seed: Any = None, xp: Any = np) -> Any:
    """A random generator for the array module ``xp``; its draws live on ``xp``'s device.

    NumPy and CuPy draw different streams from the same seed, so results on
    the two devices agree statistically, not bit for bit. CuPy's generator
    takes one integer seed and offers a subset of NumPy's methods (``random``,
    ``standard_normal``, ``integers``, ``uniform``, ...; no ``normal``,
    ``choice`` or ``permutation``).
    """
    # Spelled out rather than validation.check_seed: validation imports this module.
    if isinstance(seed, bool) or not isinstance(seed, (type(None), numbers.Integral, np.random.Generator)):
        raise TypeError(f"seed must be None, an int >= 0 or a numpy.random.Generator, got {seed!r}")
    if isinstance(seed, numbers.Integral) and seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if xp is np:
        return np.random.default_rng(seed)
    return xp.random.default_rng(seed)


def _register_device(name: str, module: Any) -> Any:
    """Testing hook: make ``name`` a device whose arrays belong to ``module``.

    Used by the test suite's strict stand-in device only (see the module
    docstring); "cpu" and "gpu" cannot be replaced. Returns ``module``.
    """
    if not isinstance(name, str) or not name or name in DEVICES:
        raise ValueError(f"cannot register a device named {name!r}")
    _EXTRA_DEVICES[name] = module
    return module
