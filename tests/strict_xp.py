"""A strict stand-in device for the CPU test suite: NumPy underneath, CuPy's rules on top.

CI has no GPU, yet the code that runs on one must never mix host and device
arrays and never wait for the device inside a training or sampling step.
This module makes both mistakes visible on the CPU. ``strict`` is an array
module and ``StrictArray`` its array type; importing this module registers
the device name ``"strict"`` with ``ldm_np.backend`` (a private testing hook),
so ``LatentDiffusion(device="strict")``, ``make_schedule(device="strict")``
and the models run their real code paths on it.

What the strict device refuses, as CuPy does:

- a NumPy array as an operand, ``out=`` or prototype of a device operation:
  ``TypeError: Unsupported type <class 'numpy.ndarray'>``. Python and NumPy
  scalars are fine (they are kernel arguments on a GPU);
- an implicit conversion to NumPy (``np.asarray(x)``, ``np.array(x)``):
  ``TypeError: Implicit conversion to a NumPy array is not allowed``;
- ``normal``, ``choice`` or ``permutation`` on its random generator, which
  CuPy's ``Generator`` does not have; a seed that is not one integer;
- ``ufunc.at`` other than add/maximum/minimum, ``ufunc.reduce`` other than
  add/multiply; ``__index__`` (a 0-d array is not a Python index).

What it counts (a *host transfer*, in three kinds):

- ``"implicit"``: a device value read back without saying so: ``float(x)``,
  ``int(x)``, ``bool(x)`` (a Python ``if`` on an array), ``x.item()``,
  ``x.tolist()``, ``f"{x:.3f}"``, boolean-mask indexing and ``nonzero``
  (their output size depends on the data, so CuPy must wait for it);
- ``"explicit"``: ``to_numpy(x)``, ``strict.asnumpy(x)``, ``x.get()``: the
  marked places where the library chose to read a value (logging, checks at
  an entrance, saving);
- ``"h2d"``: a host array moved in: ``strict.asarray(numpy_array)``, indexing
  or assigning with a NumPy array or a list.

``track()`` collects the transfers of a block in a ``TransferLog``;
``forbid()`` turns any transfer inside it into a ``HostSyncError``, which is
how the tests assert "zero host round trips per step". ``repr`` and ``str``
are not counted, so error messages and pytest's failure reports stay safe.

The random generator is deliberately a different stream from NumPy's for the
same seed (Philox instead of PCG64), as CuPy's is: a test that compares the
devices must draw its noise on the host and move it.

Results are computed by NumPy on the same data in the same order, so a
pipeline run on the strict device gives the same numbers as on the CPU, up
to the random streams.
"""

from __future__ import annotations

import contextlib
import numbers
import os
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.lib.mixins import NDArrayOperatorsMixin

from ldm_np import backend

DEVICE = "strict"

_HERE = os.path.abspath(__file__)
_NUMPY_DIR = os.path.dirname(os.path.abspath(np.__file__))
_BACKEND = os.path.abspath(backend.__file__)  # report who called to_numpy, not to_numpy itself


# --------------------------------------------------------------------------
# Counting host transfers
# --------------------------------------------------------------------------


class HostSyncError(RuntimeError):
    """A host transfer happened inside ``forbid()``."""


@dataclass(frozen=True)
class Transfer:
    """One host transfer: its kind, what caused it, and the line that asked."""

    kind: str  # "implicit", "explicit" or "h2d"
    what: str  # e.g. "float()", "to_numpy / .get()", "asarray(numpy.ndarray (4, 8))"
    where: str  # "path:line in function" of the first frame outside this module and NumPy


@dataclass
class TransferLog:
    """The host transfers seen inside one ``track()`` block."""

    events: list[Transfer] = field(default_factory=list)

    def count(self, kind: str | None = None) -> int:
        return sum(kind is None or e.kind == kind for e in self.events)

    @property
    def implicit(self) -> int:
        return self.count("implicit")

    @property
    def explicit(self) -> int:
        return self.count("explicit")

    @property
    def h2d(self) -> int:
        return self.count("h2d")

    def counts(self) -> dict[str, int]:
        return {k: self.count(k) for k in ("implicit", "explicit", "h2d")}

    def __str__(self) -> str:
        if not self.events:
            return "no host transfers"
        return "\n".join(f"{e.kind:>8}  {e.what:<40} {e.where}" for e in self.events)


_logs: list[TransferLog] = []
_forbidden = 0


def _caller() -> str:
    frame = sys._getframe(1)
    while frame is not None:
        path = os.path.abspath(frame.f_code.co_filename)
        if path not in (_HERE, _BACKEND) and not path.startswith(_NUMPY_DIR) and "contextlib" not in path:
            break
        frame = frame.f_back
    if frame is None:  # pragma: no cover
        return "?"
    path = os.path.relpath(frame.f_code.co_filename)
    return f"{path}:{frame.f_lineno} in {frame.f_code.co_name}"


def _record(kind: str, what: str) -> None:
    if not (_logs or _forbidden):
        return
    event = Transfer(kind, what, _caller())
    if _forbidden:
        raise HostSyncError(
            f"{kind} host transfer inside a region that must not wait for the device: {what} at {event.where}"
        )
    for log in _logs:
        log.events.append(event)


@contextlib.contextmanager
def track() -> Iterator[TransferLog]:
    """Collect the host transfers of the block: ``with track() as log: ...; log.implicit``."""
    log = TransferLog()
    _logs.append(log)
    try:
        yield log
    finally:
        _logs.remove(log)


@contextlib.contextmanager
def forbid() -> Iterator[None]:
    """Raise ``HostSyncError`` at the first host transfer (of any kind) inside the block."""
    global _forbidden
    _forbidden += 1
    try:
        yield
    finally:
        _forbidden -= 1


# --------------------------------------------------------------------------
# Operands: device arrays in, device arrays out
# --------------------------------------------------------------------------

_SCALARS = (bool, numbers.Number, np.generic)


def _unsupported(x: Any) -> TypeError:
    return TypeError(
        f"Unsupported type {type(x)}: the strict device refuses host arrays as operands, as CuPy "
        "does; move them first (ldm_np.to_device(x, device) or xp.asarray(x))"
    )


def _operand(x: Any) -> Any:
    """The NumPy data behind a ufunc operand; host arrays and lists are refused."""
    if isinstance(x, StrictArray):
        return x._data
    if isinstance(x, _SCALARS):
        return x
    raise _unsupported(x)


def _unwrap(x: Any) -> Any:
    """Unwrap StrictArrays in a function argument (recursing into lists and tuples)."""
    if isinstance(x, StrictArray):
        return x._data
    if isinstance(x, np.ndarray):
        raise _unsupported(x)
    if isinstance(x, (list, tuple)):
        return type(x)(_unwrap(v) for v in x)
    return x


def _index(key: Any) -> Any:
    """An index for a StrictArray: device arrays as they are; host index arrays are counted."""
    if isinstance(key, tuple):
        return tuple(_index(k) for k in key)
    if isinstance(key, StrictArray):
        if key.dtype == np.bool_:
            _record("implicit", "boolean-mask indexing (data-dependent size)")
        return key._data
    if isinstance(key, np.ndarray):
        _record("h2d", f"index with a numpy.ndarray {key.shape}")
        return key
    if isinstance(key, list):
        _record("h2d", "index with a Python list")
        return key
    return key


def _wrap(x: Any) -> Any:
    """NumPy results back onto the device: arrays and NumPy scalars become StrictArrays."""
    if isinstance(x, np.ndarray):
        return StrictArray(x)
    if isinstance(x, np.generic):
        return StrictArray(np.asarray(x))
    if isinstance(x, tuple):
        return tuple(_wrap(v) for v in x)
    if isinstance(x, list):
        return [_wrap(v) for v in x]
    return x


# --------------------------------------------------------------------------
# The array
# --------------------------------------------------------------------------


class StrictArray(NDArrayOperatorsMixin):
    """An array on the strict device: a NumPy array that refuses to meet the host.

    Arithmetic operators come from ``NDArrayOperatorsMixin`` and go through
    ``__array_ufunc__``; reductions return 0-d StrictArrays (as CuPy returns
    0-d device arrays), never Python or NumPy scalars. Build one with
    ``strict.asarray`` or ``to_device(x, "strict")``.
    """

    __slots__ = ("_data",)
    __hash__ = None  # type: ignore[assignment]
    _ldm_array_module: Any = None  # set to ``strict`` below

    def __init__(self, data: np.ndarray) -> None:
        self._data = data

    # ------------------------------------------------ metadata (free: no transfer)

    shape = property(lambda self: self._data.shape)
    dtype = property(lambda self: self._data.dtype)
    ndim = property(lambda self: self._data.ndim)
    size = property(lambda self: self._data.size)
    itemsize = property(lambda self: self._data.itemsize)
    nbytes = property(lambda self: self._data.nbytes)
    strides = property(lambda self: self._data.strides)
    flags = property(lambda self: self._data.flags)
    T = property(lambda self: StrictArray(self._data.T))

    def __len__(self) -> int:
        return len(self._data)

    def __iter__(self) -> Iterator[StrictArray]:
        for i in range(len(self._data)):
            yield self[i]

    def __repr__(self) -> str:  # not counted: error messages must stay safe
        return "strict." + repr(self._data)

    def __str__(self) -> str:
        return str(self._data)

    # ------------------------------------------------ the NumPy protocols

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        raise TypeError(
            "Implicit conversion to a NumPy array is not allowed. Please use `.get()` to construct "
            "a NumPy array explicitly (in ldm_np: to_numpy(x))."
        )

    def __array_ufunc__(self, ufunc: np.ufunc, method: str, *inputs: Any, **kwargs: Any) -> Any:
        if method == "at":
            a, indices, *rest = inputs
            if not isinstance(a, StrictArray):
                raise _unsupported(a)
            getattr(ufunc, method)(a._data, _index(indices), *(_operand(v) for v in rest), **kwargs)
            return None
        args = [_operand(x) for x in inputs]
        out = kwargs.pop("out", None)
        if out is not None:
            for o in out:
                if o is not None and not isinstance(o, StrictArray):
                    raise _unsupported(o)
            kwargs["out"] = tuple(None if o is None else o._data for o in out)
        if "where" in kwargs and not isinstance(kwargs["where"], bool):
            kwargs["where"] = _operand(kwargs["where"])
        result = getattr(ufunc, method)(*args, **kwargs)
        if out is not None:
            return out[0] if len(out) == 1 else out
        return _wrap(result)

    def __array_function__(self, func: Any, types: Any, args: Any, kwargs: Any) -> Any:
        return _call(func, args, kwargs)

    # ------------------------------------------------ indexing

    def __getitem__(self, key: Any) -> StrictArray:
        return _wrap(self._data[_index(key)])

    def __setitem__(self, key: Any, value: Any) -> None:
        if isinstance(value, StrictArray):
            value = value._data
        elif isinstance(value, np.ndarray):
            _record("h2d", f"assign a numpy.ndarray {value.shape}")
        elif isinstance(value, (list, tuple)):
            _record("h2d", "assign a Python sequence")
        self._data[_index(key)] = value

    # ------------------------------------------------ reading values back (host transfers)

    def get(self, stream: Any = None, order: str = "C", out: Any = None) -> np.ndarray:
        """The explicit device-to-host copy (CuPy's ``ndarray.get``)."""
        _record("explicit", "to_numpy / .get()")
        return np.array(self._data, order=order, copy=True)

    def _implicit(self, what: str) -> np.ndarray:
        _record("implicit", what)
        return self._data

    def __float__(self) -> float:
        return float(self._implicit("float()"))

    def __int__(self) -> int:
        return int(self._implicit("int()"))

    def __complex__(self) -> complex:
        return complex(self._implicit("complex()"))

    def __bool__(self) -> bool:
        return bool(self._implicit("bool() / Python if on an array"))

    def item(self, *args: Any) -> Any:
        return self._implicit(".item()").item(*args)

    def tolist(self) -> Any:
        return self._implicit(".tolist()").tolist()

    def __format__(self, spec: str) -> str:
        if not spec:
            return str(self)
        return format(self._implicit(f"format {spec!r}")[()], spec)

    # ------------------------------------------------ copies

    def __copy__(self) -> StrictArray:
        return StrictArray(self._data.copy())

    def __deepcopy__(self, memo: Any) -> StrictArray:
        return StrictArray(self._data.copy())

    def nonzero(self) -> tuple[StrictArray, ...]:
        _record("implicit", "nonzero (data-dependent size)")
        return _wrap(self._data.nonzero())


def _method(name: str) -> Any:
    def method(self: StrictArray, *args: Any, **kwargs: Any) -> Any:
        out = kwargs.get("out")
        result = getattr(self._data, name)(*_unwrap(args), **{k: _unwrap(v) for k, v in kwargs.items()})
        return out if out is not None else _wrap(result)

    method.__name__ = name
    method.__doc__ = f"``numpy.ndarray.{name}`` on the device."
    return method


for _name in (
    "all any argmax argmin argsort astype clip copy cumprod cumsum diagonal dot fill flatten max mean "
    "min prod ravel repeat reshape round sort squeeze std sum swapaxes take trace transpose var view"
).split():
    setattr(StrictArray, _name, _method(_name))


# --------------------------------------------------------------------------
# The module
# --------------------------------------------------------------------------

# Functions whose output size depends on the values: CuPy must wait for the device.
_DATA_DEPENDENT = {np.nonzero, np.flatnonzero, np.argwhere, np.unique, np.extract, np.compress}
# Functions that return metadata, not values.
_METADATA = {np.ndim, np.shape, np.size, np.result_type, np.iscomplexobj, np.isrealobj}


def _call(func: Any, args: Any, kwargs: Any) -> Any:
    if func in _DATA_DEPENDENT or (func is np.where and len(args) + len(kwargs) == 1):
        _record("implicit", f"{func.__name__} (data-dependent size)")
    result = func(*_unwrap(tuple(args)), **{k: _unwrap(v) for k, v in kwargs.items()})
    if func in _METADATA:
        return result
    if isinstance(result, (bool, int, float, complex)):  # e.g. allclose: CuPy returns a 0-d array
        return StrictArray(np.asarray(result))
    return _wrap(result)


def _function(func: Any) -> Any:
    def f(*args: Any, **kwargs: Any) -> Any:
        return _call(func, args, kwargs)

    f.__name__ = getattr(func, "__name__", "function")
    f.__doc__ = f"``numpy.{f.__name__}`` on the strict device."
    return f


class _Ufunc:
    """A NumPy ufunc that runs on the strict device and refuses host arrays.

    ``.at`` exists only for add, maximum and minimum and ``.reduce`` only for
    add and multiply, as in CuPy 13.
    """

    _AT = ("add", "maximum", "minimum")
    _REDUCE = ("add", "multiply")

    def __init__(self, ufunc: np.ufunc) -> None:
        self._ufunc = ufunc
        self.__name__ = ufunc.__name__

    def __repr__(self) -> str:
        return f"<strict ufunc {self.__name__!r}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        out = kwargs.get("out")
        operands = [*args, *(out if isinstance(out, tuple) else (out,))]
        for x in operands:
            if x is not None and not isinstance(x, (StrictArray, *_SCALARS)):
                raise _unsupported(x)
        if any(isinstance(x, StrictArray) for x in operands):
            return self._ufunc(*args, **kwargs)  # NumPy hands it to StrictArray.__array_ufunc__
        return _wrap(self._ufunc(*args, **kwargs))  # scalars only: the result still lives on the device

    def at(self, a: Any, indices: Any, b: Any = None) -> None:
        if self.__name__ not in self._AT:
            raise NotImplementedError(f"CuPy supports ufunc.at only for {self._AT}, not {self.__name__}")
        if not isinstance(a, StrictArray):
            raise _unsupported(a)
        self._ufunc.at(a, indices, *(() if b is None else (b,)))

    def reduce(self, a: Any, *args: Any, **kwargs: Any) -> Any:
        if self.__name__ not in self._REDUCE:
            raise NotImplementedError(f"CuPy supports ufunc.reduce only for {self._REDUCE}")
        if not isinstance(a, StrictArray):
            raise _unsupported(a)
        return self._ufunc.reduce(a, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:  # nin, nout, identity, ...
        return getattr(self._ufunc, name)


class Generator:
    """The strict device's random generator: the subset of ``cupy.random.Generator`` ldm_np may use.

    Draws are StrictArrays. The stream (Philox) differs from NumPy's PCG64 for
    the same seed, as CuPy's does. ``normal``, ``choice`` and ``permutation``
    are missing on purpose: CuPy's Generator has none of them.
    """

    def __init__(self, seed: int | None = None) -> None:
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
            raise TypeError(f"CuPy's default_rng takes one integer seed (or None), got {type(seed).__name__}")
        self._rng = np.random.Generator(np.random.Philox(None if seed is None else int(seed)))

    def __repr__(self) -> str:
        return "strict.random.Generator(Philox)"

    @staticmethod
    def _finish(values: Any, dtype: Any, out: Any) -> StrictArray:
        values = np.asarray(values).astype(dtype, copy=False)
        if out is not None:
            out[...] = StrictArray(values)
            return out
        return StrictArray(values)

    def random(self, size: Any = None, dtype: Any = np.float64, out: Any = None) -> StrictArray:
        return self._finish(self._rng.random(size, dtype=np.dtype(dtype)), dtype, out)

    def standard_normal(self, size: Any = None, dtype: Any = np.float64, out: Any = None) -> StrictArray:
        return self._finish(self._rng.standard_normal(size, dtype=np.dtype(dtype)), dtype, out)

    def standard_exponential(self, size: Any = None, dtype: Any = np.float64, out: Any = None) -> StrictArray:
        return self._finish(self._rng.standard_exponential(size, dtype=np.dtype(dtype)), dtype, out)

    def exponential(self, scale: float = 1.0, size: Any = None) -> StrictArray:
        return self.standard_exponential(size) * scale

    def uniform(
        self, low: float = 0.0, high: float = 1.0, size: Any = None, dtype: Any = np.float64
    ) -> StrictArray:
        return self._finish(self._rng.uniform(_unwrap(low), _unwrap(high), size), dtype, None)

    def integers(
        self,
        low: int,
        high: int | None = None,
        size: Any = None,
        dtype: Any = np.int64,
        endpoint: bool = False,
    ) -> StrictArray:
        # CuPy reads the bounds with int(): a device bound is a host sync there too.
        low, high = int(low), (None if high is None else int(high))
        return self._finish(
            self._rng.integers(low, high, size, dtype=np.int64, endpoint=endpoint), dtype, None
        )


def _asarray(a: Any, dtype: Any = None, order: Any = None, *, copy: bool | None = None) -> StrictArray:
    """Like ``cupy.asarray``: device arrays stay; host arrays and lists are copied in (counted)."""
    if isinstance(a, StrictArray):
        if copy:
            return StrictArray(np.array(a._data, dtype=dtype, order=order or "K", copy=True))
        return a if dtype is None or np.dtype(dtype) == a.dtype else a.astype(dtype)
    if isinstance(a, np.ndarray):
        _record("h2d", f"asarray(numpy.ndarray {a.shape})")
    elif isinstance(a, (list, tuple)):
        if any(isinstance(v, StrictArray) for v in a):
            return _wrap(np.stack([_operand(v) for v in a]).astype(dtype or np.result_type(*_unwrap(a))))
        _record("h2d", "asarray(Python sequence)")
    elif not isinstance(a, _SCALARS):
        raise _unsupported(a)
    return StrictArray(np.array(a, dtype=dtype, order=order or "K", copy=True))


def _array(a: Any, dtype: Any = None, copy: bool = True, order: Any = None) -> StrictArray:
    return _asarray(a, dtype, order, copy=copy)


def _asnumpy(a: Any, *args: Any, **kwargs: Any) -> np.ndarray:
    """The explicit device-to-host copy (``cupy.asnumpy``)."""
    if isinstance(a, StrictArray):
        return a.get()
    return np.asarray(a)


def _creator(func: Any) -> Any:
    """zeros, ones, full, arange, ...: Python arguments in, a device array out."""

    def f(*args: Any, **kwargs: Any) -> StrictArray:
        return _wrap(np.asarray(func(*_unwrap(args), **{k: _unwrap(v) for k, v in kwargs.items()})))

    f.__name__ = func.__name__
    return f


strict = types.ModuleType("strict", "NumPy underneath, CuPy's rules on top (see tests/strict_xp.py).")
strict.__version__ = f"strict-{np.__version__}"
strict.ndarray = StrictArray
strict.HostSyncError = HostSyncError
strict.track = track
strict.forbid = forbid
strict.asarray = _asarray
strict.array = _array
strict.asnumpy = _asnumpy
strict.get_array_module = backend.get_array_module

for _name in "zeros ones empty full arange linspace eye identity".split():
    setattr(strict, _name, _creator(getattr(np, _name)))

for _name in (
    "zeros_like ones_like empty_like full_like ascontiguousarray concatenate stack hstack vstack where "
    "clip sum mean max amax min amin std var prod argmin argmax cumsum cumprod dot vdot inner outer "
    "einsum tensordot transpose reshape ravel squeeze expand_dims broadcast_to broadcast_arrays tile "
    "repeat take take_along_axis sort argsort all any allclose isclose array_equal round diag triu "
    "tril flip roll meshgrid nonzero flatnonzero argwhere unique searchsorted bincount copy ndim shape "
    "size result_type average median percentile quantile cov corrcoef trace diagonal split"
).split():
    setattr(strict, _name, _function(getattr(np, _name)))

for _name in (
    "exp exp2 expm1 log log2 log10 log1p sqrt square cbrt reciprocal tanh sinh cosh arctanh sin cos tan "
    "arcsin arccos arctan arctan2 hypot abs absolute fabs negative positive sign floor ceil rint trunc "
    "add subtract multiply divide true_divide floor_divide mod remainder power float_power maximum minimum "
    "fmax fmin equal not_equal less less_equal greater greater_equal logical_and logical_or logical_xor "
    "logical_not isfinite isnan isinf signbit copysign matmul bitwise_and bitwise_or bitwise_xor invert"
).split():
    setattr(strict, _name, _Ufunc(getattr(np, _name)))

strict.linalg = types.SimpleNamespace(norm=_function(np.linalg.norm))
strict.random = types.SimpleNamespace(default_rng=Generator, Generator=Generator)

for _name in (
    "float16 float32 float64 complex64 complex128 int8 int16 int32 int64 uint8 uint16 uint32 uint64 "
    "intp bool_ dtype finfo iinfo can_cast promote_types newaxis pi e inf nan"
).split():
    setattr(strict, _name, getattr(np, _name))

StrictArray._ldm_array_module = strict
backend._register_device(DEVICE, strict)


# --------------------------------------------------------------------------
# Helpers for tests
# --------------------------------------------------------------------------


def to_strict(x: Any) -> Any:
    """Move ``x`` (an array, or a dict/list/tuple of them) to the strict device."""
    return backend.to_device(x, DEVICE)


def is_strict(x: Any) -> bool:
    return isinstance(x, StrictArray)


__all__ = [
    "DEVICE",
    "Generator",
    "HostSyncError",
    "StrictArray",
    "Transfer",
    "TransferLog",
    "forbid",
    "is_strict",
    "strict",
    "to_strict",
    "track",
]
