"""Checks at the public entrances: bad input gets an error that says what to fix.

Each check names the argument, what was expected and what was given, so a
mistake surfaces here instead of as a broadcasting error deep inside NumPy.
Shape and dtype checks cost nothing; the finiteness check reads every value
(and on a GPU waits for the device), so training loops validate their data
once and then call the unchecked ``forward`` methods.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from .backend import get_array_module, to_numpy

FLOAT_DTYPES = ("float32", "float64")


def check_dtype_name(dtype: Any, name: str = "dtype") -> np.dtype:
    """Return ``np.dtype(dtype)`` if it is float32 or float64, else TypeError."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"{name} must be one of {FLOAT_DTYPES}, got {dtype!r}") from None
    if dt.name not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be one of {FLOAT_DTYPES}, got {dt.name!r}")
    return dt


def check_int(value: Any, name: str, *, minimum: int = 1) -> int:
    """Return ``value`` as an int if it is an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_float(
    value: Any,
    name: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
) -> float:
    """Return ``value`` as a finite float inside [low, high] (or (low, high])."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if low is not None and (value < low or (low_open and value == low)):
        if high is None:
            raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {value}")
        bracket = "(" if low_open else "["
        raise ValueError(f"{name} must be in {bracket}{low}, {high}], got {value}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be <= {high}, got {value}")
    return value


def _is_array(x: Any) -> bool:
    return hasattr(x, "shape") and hasattr(x, "dtype") and hasattr(x, "ndim")


def check_array(
    x: Any,
    name: str,
    *,
    shape: tuple[int | None, ...],
    dtype: Any = None,
    finite: bool = True,
) -> Any:
    """Check a floating-point array's shape, dtype and values.

    Parameters
    ----------
    x : the array to check (NumPy or CuPy).
    name : the argument's name, used in the message.
    shape : expected shape; ``None`` entries match any size >= 1.
    dtype : the required float dtype, or None for any float dtype.
    finite : also refuse NaN and infinity.
    """
    expected = "[" + ", ".join("batch" if s is None else str(s) for s in shape) + "]"
    if not _is_array(x):
        raise TypeError(f"{name} must be an array of shape {expected}, got {type(x).__name__}")
    if x.dtype.kind != "f":
        raise TypeError(
            f"{name} must be a floating-point array ({dtype or 'float32/float64'}), "
            f"got dtype {x.dtype}; convert with .astype('float32')"
        )
    if dtype is not None and x.dtype != np.dtype(dtype):
        raise TypeError(
            f"{name} must have dtype {np.dtype(dtype).name} (the model's dtype), "
            f"got {x.dtype}; convert with .astype('{np.dtype(dtype).name}')"
        )
    if x.ndim != len(shape) or any(s is not None and s != n for s, n in zip(shape, x.shape, strict=True)):
        raise ValueError(f"{name} must have shape {expected}, got {list(x.shape)}")
    if any(n == 0 for n in x.shape):
        raise ValueError(f"{name} must not be empty, got shape {list(x.shape)}")
    if finite:
        xp = get_array_module(x)
        if not to_numpy(xp.isfinite(x).all()):  # reads the device: a host sync
            raise ValueError(f"{name} contains NaN or infinity")
    return x


def check_timesteps(t: Any, name: str, *, batch: int | None, num_steps: int) -> Any:
    """Check integer timesteps ``t`` of shape [batch] with values in 0..num_steps-1."""
    expected = f"[{batch if batch is not None else 'batch'}]"
    if not _is_array(t):
        raise TypeError(f"{name} must be an integer array of shape {expected}, got {type(t).__name__}")
    if t.dtype.kind not in "iu":
        raise TypeError(f"{name} must be an integer array (timestep indices), got dtype {t.dtype}")
    if t.ndim != 1 or (batch is not None and t.shape[0] != batch):
        raise ValueError(f"{name} must have shape {expected}, got {list(t.shape)}")
    if t.shape[0] == 0:
        raise ValueError(f"{name} must not be empty")
    xp = get_array_module(t)
    lo, hi = to_numpy(xp.stack([t.min(), t.max()])).tolist()  # reads the device: one host sync
    if lo < 0 or hi >= num_steps:
        raise ValueError(
            f"{name} must lie in 0..{num_steps - 1} (num_steps={num_steps}), got values from {lo} to {hi}"
        )
    return t


def check_choice(value: Any, name: str, choices: tuple[str, ...]) -> str:
    """Return ``value`` if it is one of ``choices`` (strings), else ValueError (TypeError if not a str)."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be one of {choices}, got {type(value).__name__} {value!r}")
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def check_rng(rng: Any, name: str = "rng") -> Any:
    """Return ``rng`` if it is a random generator (NumPy's or CuPy's), else TypeError.

    Checked even where the call would not draw from it, so a seed passed
    where a generator belongs fails at once rather than on a later call.
    """
    if not (hasattr(rng, "standard_normal") and hasattr(rng, "integers")):
        raise TypeError(
            f"{name} must be a random generator (numpy.random.default_rng(seed) or "
            f"ldm_np.default_rng(seed, device)), got {type(rng).__name__} {rng!r}"
        )
    return rng
