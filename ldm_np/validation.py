"""Checks at the public entrances: bad input gets an error that says what to fix.

Each check names the argument, what was expected and what was given, so a
mistake surfaces here instead of as a broadcasting error deep inside NumPy.
Shape and dtype checks cost nothing; the finiteness check reads every value
(and on a GPU waits for the device), so training loops validate their data
once and then call the unchecked ``forward`` methods.

The NaN policy (README, "NaN and infinity"): data entering through a model
call, the pipeline, the command line or a data loader is checked for NaN and
infinity here (``finite=True``); the math behind the entrances propagates
them, unchecked.
"""

from __future__ import annotations

import numbers
import os
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


def check_seed(seed: Any, name: str = "seed") -> Any:
    """Return ``seed`` if it is an int >= 0 or a ``numpy.random.Generator`` to draw from."""
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(
            f"{name} must be an int >= 0 or a numpy.random.Generator, got {type(seed).__name__} {seed!r}"
        )
    return check_int(seed, name, minimum=0)


def check_callable(f: Any, name: str, how: str) -> Any:
    """Return ``f`` if it can be called (as ``how`` says), else TypeError."""
    if not callable(f):
        raise TypeError(f"{name} must be callable as {how}, got {type(f).__name__}")
    return f


def check_arrays(arrays: Any, name: str) -> Any:
    """Return ``arrays`` if it is a non-empty list or tuple of arrays, else TypeError."""
    if not isinstance(arrays, (list, tuple)) or not arrays or not all(_is_array(a) for a in arrays):
        raise TypeError(f"{name} must be a non-empty list or tuple of arrays, got {arrays!r:.60}")
    return arrays


def check_path(path: Any, name: str = "path") -> str | os.PathLike[str]:
    """Return ``path`` if it is a file path (a str or an ``os.PathLike``), else TypeError."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(
            f"{name} must be a file path (str or pathlib.Path), got {type(path).__name__} {path!r}"
        )
    return path


def check_param_trees(**trees: Any) -> None:
    """Check that each keyword is a parameter tree ``{layer: {param: array}}`` holding every
    parameter of the first one (``params=..., grads=...``: a gradient for each parameter)."""
    (first_name, first), *_ = trees.items()
    for name, tree in trees.items():
        if not isinstance(tree, dict) or not all(
            isinstance(group, dict) and all(_is_array(v) for v in group.values()) for group in tree.values()
        ):
            raise TypeError(
                f"{name} must be a parameter tree {{layer: {{param: array}}}} such as model.grads, "
                f"got {type(tree).__name__}"
            )
        missing = [
            f"{layer}.{p}" for layer, group in first.items() for p in group if p not in tree.get(layer, {})
        ]
        if missing:
            raise ValueError(f"{name} has no entry for {missing[0]} of {first_name}")


# --------------------------------------------------------------------------
# Diffusion arrays and timesteps (diffusion.py, samplers.py, oracle.py)
# --------------------------------------------------------------------------


def check_t(t: Any, name: str, *, batch: int | None, num_steps: int, low: int = 0) -> Any:
    """Check a timestep: a Python int in low..num_steps-1, or an int array [batch].

    ``low`` is 0 for t and -1 for a DDIM ``t_prev`` (-1 means "the end").
    A NumPy array also has its range checked (host work, no sync). A CuPy
    array gets only its dtype and shape checked: reading its min and max would
    make the host wait for the GPU, and these checks run inside training steps
    and sampling loops.
    """
    if isinstance(t, numbers.Integral) and not isinstance(t, bool):
        if not low <= t < num_steps:
            raise ValueError(f"{name} must lie in {low}..{num_steps - 1} (num_steps={num_steps}), got {t}")
        return int(t)
    on_host = get_array_module(t) is np if _is_array(t) else True
    if on_host and low == 0:
        return check_timesteps(t, name, batch=batch, num_steps=num_steps)
    if not _is_array(t) or t.dtype.kind not in "iu":
        raise TypeError(f"{name} must be an int or an integer array of shape [batch], got {type(t).__name__}")
    if t.ndim != 1 or t.shape[0] == 0 or (batch is not None and t.shape[0] != batch):
        raise ValueError(f"{name} must have shape [{batch or 'batch'}], got {list(t.shape)}")
    if on_host:
        lo, hi = int(t.min()), int(t.max())
        if lo < low or hi >= num_steps:
            raise ValueError(f"{name} must lie in {low}..{num_steps - 1}, got values from {lo} to {hi}")
    return t


def check_samples(x: Any, name: str, dtype: Any) -> Any:
    """Check a [batch, latent] float array of ``dtype`` (the schedule's).

    ``finite=False``: a finiteness check reads every value (a GPU sync), and
    these functions run inside training steps and sampling loops.
    """
    if _is_array(x) and x.ndim != 2:
        raise ValueError(f"{name} must have shape [batch, latent], got {list(x.shape)}")
    latent = x.shape[1] if _is_array(x) else None
    return check_array(x, name, shape=(None, latent), dtype=dtype, finite=False)


def check_schedule(schedule: Any, name: str = "schedule") -> dict[str, Any]:
    """Return ``schedule`` if it is a noise schedule (a dict from ``make_schedule``), else TypeError."""
    if not isinstance(schedule, dict) or "alphas_cumprod" not in schedule or "num_steps" not in schedule:
        raise TypeError(
            f"{name} must be a noise schedule from ldm_np.make_schedule(...), got {type(schedule).__name__}"
        )
    return schedule


def check_diffusion_arrays(schedule: dict[str, Any], t: Any, t_name: str = "t", **arrays: Any) -> Any:
    """Check same-shaped [batch, latent] arrays in the schedule's dtype and their timesteps; return t.

    The first keyword array sets batch and latent; the others must match it
    (shape and dtype only: no finiteness check, no sync). ``t`` is an int or
    an int array [batch] in 0..num_steps-1.
    """
    (ref_name, ref), *others = arrays.items()
    check_schedule(schedule)
    check_samples(ref, ref_name, schedule["alphas_cumprod"].dtype)
    for name, x in others:
        check_array(x, name, shape=tuple(ref.shape), dtype=ref.dtype, finite=False)
    return check_t(t, t_name, batch=ref.shape[0], num_steps=schedule["num_steps"])


def check_labels(labels: Any, name: str, *, high: int, xp: Any) -> Any:
    """Check class labels: a non-empty integer array [batch] on ``xp``'s device, values in 0..high.

    The range is checked for NumPy arrays only (reading a CuPy array's min and
    max would wait for the GPU).
    """
    if not _is_array(labels) or labels.dtype.kind not in "iu":
        raise TypeError(
            f"{name} must be an integer array [batch], got {type(labels).__name__} {labels!r:.60}"
        )
    if labels.ndim != 1 or labels.size == 0:
        raise ValueError(f"{name} must be a non-empty integer array [batch], got shape {list(labels.shape)}")
    if get_array_module(labels) is not xp:
        raise TypeError(f"{name} must be on the schedule's device (use ldm_np.to_device)")
    if xp is np and (labels.min() < 0 or labels.max() > high):
        raise ValueError(f"{name} must lie in 0..{high}, got {labels.min()}..{labels.max()}")
    return labels
