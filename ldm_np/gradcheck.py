"""Gradient checking: compare hand-written backward passes with finite differences.

Central differences, (f(x + h) - f(x - h)) / 2h, have an error of order h^2
from truncation plus eps_machine / h from rounding. In float64 with h = 1e-6
the two balance near 1e-10, so a correct backward agrees to a relative error
around 1e-8 or better, while a wrong one is off by order 1. In float32 the
rounding term alone is ~1e-2: always check in float64.

    rel_error(a, b) = max|a - b| / max(max|a| + max|b|, 1e-8)

The error is taken relative to the size of the whole gradient, not entry by
entry, so a few entries that are almost zero do not dominate it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .backend import get_array_module, to_numpy
from .module import iter_params
from .validation import check_arrays, check_callable, check_float, check_seed

# A correct backward in float64 lands near 1e-9; 1e-6 leaves room for
# ill-conditioned points while still catching any real mistake (order 1e-1).
TOLERANCE = 1e-6


def rel_error(a: Any, b: Any) -> float:
    """max|a - b| / max(max|a| + max|b|, 1e-8): 0 for equal arrays, ~1 for unrelated ones."""
    a = np.asarray(to_numpy(a), dtype=np.float64)
    b = np.asarray(to_numpy(b), dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    if a.size == 0:
        return 0.0
    scale = max(np.abs(a).max() + np.abs(b).max(), 1e-8)
    return float(np.abs(a - b).max() / scale)


def numerical_gradient(f: Callable[[], Any], x: Any, dout: Any = None, h: float = 1e-6) -> Any:
    """Numerical gradient of sum(f() * dout) with respect to ``x``, by central differences.

    ``f`` takes no arguments and reads ``x``, which is perturbed in place one
    entry at a time and always restored. If ``dout`` is None, ``f`` must return
    a scalar. Each output is copied, because ``f`` may reuse its buffers.
    Returns an array shaped like ``x``. Cost: 2 * x.size calls of ``f``.
    """
    check_callable(f, "f", "f()"), check_float(h, "h", low=0.0, low_open=True)
    if getattr(x, "dtype", None) != np.float64:
        raise TypeError(f"x: gradient checks need float64 arrays, got {getattr(x, 'dtype', x)!r:.40}")
    if dout is not None and not hasattr(dout, "shape"):
        raise TypeError(f"dout must be None or an array shaped like f(), got {type(dout).__name__}")
    xp = get_array_module(x)
    grad = xp.zeros(x.shape, dtype=x.dtype)

    def value() -> float:
        out = f()
        if dout is None:
            return float(out)
        return float((xp.asarray(out, dtype=np.float64) * dout).sum())

    # Index x itself, entry by entry: x.reshape(-1) of a non-contiguous x (a
    # transposed kernel, say) is a copy, and perturbing a copy leaves f() unchanged
    # and returns a silent all-zero gradient.
    for idx in np.ndindex(*x.shape):
        old = float(x[idx])
        x[idx] = old + h
        plus = value()
        x[idx] = old - h
        minus = value()
        x[idx] = old
        grad[idx] = (plus - minus) / (2 * h)
    return grad


def directional_check(
    loss: Callable[[], float], arrays: Sequence[Any], grads: Sequence[Any], *, h: float = 1e-6, seed: int = 0
) -> float:
    """Check many gradients at once along one random direction (two loss calls).

    For a random unit direction v over all ``arrays``, compares
    (L(theta + h v) - L(theta - h v)) / 2h with sum(grad * v). Returns the
    relative error of the two numbers. Cheap at any model size.
    """
    check_callable(loss, "loss", "loss()"), check_arrays(arrays, "arrays"), check_arrays(grads, "grads")
    check_float(h, "h", low=0.0, low_open=True), check_seed(seed)
    rng = np.random.default_rng(seed)
    xp = get_array_module(arrays[0])
    dirs = [xp.asarray(rng.standard_normal(a.shape)) for a in arrays]
    norm = float(np.sqrt(sum(float((d * d).sum()) for d in dirs)))
    dirs = [d / norm for d in dirs]
    analytic = sum(float((g * d).sum()) for g, d in zip(grads, dirs, strict=True))
    for a, d in zip(arrays, dirs, strict=True):
        a += h * d
    plus = float(loss())
    for a, d in zip(arrays, dirs, strict=True):
        a -= 2 * h * d
    minus = float(loss())
    for a, d in zip(arrays, dirs, strict=True):
        a += h * d
    numeric = (plus - minus) / (2 * h)
    return abs(numeric - analytic) / max(abs(numeric) + abs(analytic), 1e-8)


@dataclass
class GradCheckRow:
    """One line of a gradient-check report."""

    name: str
    shape: tuple[int, ...]
    error: float

    @property
    def ok(self) -> bool:
        return self.error < TOLERANCE


class GradCheckReport(list):
    """A list of ``GradCheckRow`` that prints as a table."""

    @property
    def max_error(self) -> float:
        return max((row.error for row in self), default=0.0)

    @property
    def ok(self) -> bool:
        return all(row.ok for row in self)

    def __str__(self) -> str:
        width = max([len(r.name) for r in self] + [9])
        lines = [f"{'parameter':<{width}}  {'shape':<14}  rel. error  ok", "-" * (width + 32)]
        for r in self:
            shape = "x".join(str(s) for s in r.shape)
            lines.append(f"{r.name:<{width}}  {shape:<14}  {r.error:10.2e}  {'yes' if r.ok else 'NO'}")
        return "\n".join(lines)


def _as_tuple(x: Any) -> tuple:
    return x if isinstance(x, tuple) else (x,)


def check_module(
    module: Any, inputs: Sequence[Any], *, wrt_inputs: Sequence[int] = (0,), seed: int = 0, h: float = 1e-6
) -> GradCheckReport:
    """Check every parameter gradient of ``module`` and the gradients of chosen inputs.

    ``module(*inputs)`` must return an array or a tuple of arrays, and
    ``module.backward(*douts)`` the gradient of the first input (or a tuple of
    input gradients, in the order of ``wrt_inputs``). The loss checked is
    L = sum_k sum(output_k * dout_k) with fixed random ``dout_k``; every entry
    of every parameter is perturbed, so keep the module small. The module must
    be built with dtype float64.
    """
    if not all(hasattr(module, a) for a in ("params", "grads", "forward", "backward", "xp")):
        raise TypeError(
            f"module must be a model with params, grads, forward and backward, got {module!r:.60}"
        )
    check_arrays(inputs, "inputs"), check_float(h, "h", low=0.0, low_open=True), check_seed(seed)
    if not isinstance(wrt_inputs, (list, tuple)):
        raise TypeError(f"wrt_inputs must be a list or tuple of indices into inputs, got {wrt_inputs!r}")
    if not all(i in range(len(inputs)) for i in wrt_inputs):
        raise ValueError(f"wrt_inputs must index inputs (0..{len(inputs) - 1}), got {wrt_inputs!r}")
    rng = np.random.default_rng(seed)
    xp = module.xp
    outs = _as_tuple(module(*inputs))
    douts = tuple(xp.asarray(rng.standard_normal(o.shape)) for o in outs)
    in_grads = _as_tuple(module.backward(*douts))
    analytic = {
        f"{layer}.{name}": module.grads[layer][name].copy() for layer, name, _ in iter_params(module.params)
    }

    def f() -> Any:
        return sum(
            float((o * d).sum()) for o, d in zip(_as_tuple(module.forward(*inputs)), douts, strict=True)
        )

    report = GradCheckReport()
    for layer, name, p in iter_params(module.params):
        num = numerical_gradient(f, p, h=h)
        report.append(
            GradCheckRow(f"{layer}.{name}", tuple(p.shape), rel_error(analytic[f"{layer}.{name}"], num))
        )
    for k, idx in enumerate(wrt_inputs):
        x = inputs[idx]
        num = numerical_gradient(f, x, h=h)
        report.append(GradCheckRow(f"input {idx}", tuple(x.shape), rel_error(in_grads[k], num)))
    return report
