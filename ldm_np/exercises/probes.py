"""Gradient probes: how far an exercise's gradients are from finite differences, and why.

Each probe imports ldm_np inside the function, so in the grading subprocess
it checks the copy's code. Fixed seeds, float64, non-trivial values (zero
biases and unit gammas hide broken backward passes). The batch is 4 and no
other dimension is 4 or 2, so a gradient off by the batch size and one off by
a factor of 2 cannot be mistaken for each other.

A probe returns a ``GradientReport``: per gradient (named after the argument
it belongs to) the shapes expected and got and the relative error, with a
hint when the mistake has a typical pattern (``explain``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

BATCH = 4  # the batch size of every probe


@dataclass
class GradientReport:
    """The outcome of one probe: the largest relative error and one line per gradient."""

    exercise: str
    error: float
    lines: list[str] = field(default_factory=list)

    def explain(self) -> str:
        """Every gradient's row, the wrong ones with their hint."""
        return "\n".join(self.lines)


def explain(name: str, expected: Any, got: Any, batch: int = BATCH) -> tuple[float, str]:
    """(relative error, one line of explanation) for one gradient ``got`` against ``expected``.

    ``expected`` is the finite-difference gradient. The hints: the transpose of
    the expected shape (a transposed product); a ratio got/expected near 2 or
    1/2 (a factor of 2), near -1 (the sign), near the batch size or its inverse
    (a sum where a mean belongs, or the reverse), near another constant (a
    missing scale factor).
    """
    from ldm_np.gradcheck import TOLERANCE, rel_error

    expected = np.asarray(expected, dtype=np.float64)
    if got is None:
        return np.inf, f"{name}: got None, expected an array of shape {expected.shape}"
    got = np.asarray(got, dtype=np.float64)
    if got.shape != expected.shape:
        hint = ""
        if got.ndim == 2 and got.shape == expected.shape[::-1]:
            hint = " - hint: that is the transpose of the expected shape: a transposed matrix product?"
        elif got.size == expected.size * batch or got.shape == (batch, *expected.shape):
            hint = " - hint: one more batch dimension than expected: sum over the batch?"
        elif got.shape == ():
            hint = " - hint: a scalar where an array belongs: summed over too many axes?"
        return np.inf, f"{name}: shape expected {expected.shape}, got {got.shape}{hint}"
    error = rel_error(got, expected)
    line = f"{name}: shape {expected.shape} ok, relative error {error:.1e}"
    if error < TOLERANCE:
        return error, line + " ok"
    if not np.all(np.isfinite(got)):
        return error, line + " - hint: it contains NaN or inf"
    hint = _ratio_hint(expected, got, batch)
    if hint is None and got.ndim == 2 and got.shape[0] == got.shape[1] and rel_error(got.T, expected) < 1e-4:
        hint = "it is the transpose of the expected gradient: a transposed matrix product?"
    return error, line + (f" - hint: {hint}" if hint else "")


def _ratio_hint(expected: np.ndarray, got: np.ndarray, batch: int) -> str | None:
    """A hint when ``got`` is a constant multiple of ``expected``, else None."""
    norm = float((expected * expected).sum())
    if norm == 0.0:
        return None
    ratio = float((got * expected).sum()) / norm
    if np.abs(got - ratio * expected).max() > 1e-4 * (np.abs(got).max() + 1e-12):
        return None  # not a multiple: no pattern to name
    named = {
        2.0: "twice the expected gradient: a factor of 2 too many (a missing 0.5?)",
        0.5: "half the expected gradient: a factor of 2 missing",
        -1.0: "the expected gradient with the wrong sign",
        float(batch): f"the batch size ({batch}) times the expected gradient: a sum where a mean belongs",
        1.0 / batch: f"the expected gradient divided by the batch size ({batch}): a mean where a sum belongs",
    }
    for value, text in named.items():
        if abs(ratio / value - 1.0) < 0.02:
            return text
    return f"{ratio:.4g} times the expected gradient: the right direction, a missing or extra scale factor"


def _report(
    exercise: str,
    forward: Callable[[], Any],
    arrays: dict[str, Any],
    analytic: Any,
    dout: Any,
) -> GradientReport:
    """Compare each returned gradient with the numerical gradient of sum(forward() * dout)."""
    from ldm_np.gradcheck import numerical_gradient

    names = list(arrays)
    grads = analytic if isinstance(analytic, tuple) else (analytic,)
    if len(grads) != len(names):
        text = f"expected {len(names)} gradients ({', '.join(names)}), got {len(grads)}"
        return GradientReport(exercise, np.inf, [text])
    rows = [
        explain(n, numerical_gradient(forward, arrays[n], dout), g) for n, g in zip(names, grads, strict=True)
    ]
    return GradientReport(exercise, max(e for e, _ in rows), [line for _, line in rows])


def probe_dense_backward() -> GradientReport:
    from ldm_np.layers import dense_backward, dense_forward

    rng = np.random.default_rng(0)
    x, kernel, bias = rng.standard_normal((4, 5)), rng.standard_normal((5, 3)), rng.standard_normal(3)
    y, cache = dense_forward(x, kernel, bias)  # [4, 3]
    dy = rng.standard_normal(y.shape)
    grads = dense_backward(dy, cache)
    arrays = {"dx": x, "dkernel": kernel, "dbias": bias}
    return _report("dense_backward", lambda: dense_forward(x, kernel, bias)[0], arrays, grads, dy)


def probe_silu_backward() -> GradientReport:
    from ldm_np.layers import silu_backward, silu_forward

    rng = np.random.default_rng(1)
    x = 2.0 * rng.standard_normal((4, 6))
    y, cache = silu_forward(x)
    dy = rng.standard_normal(y.shape)
    return _report("silu_backward", lambda: silu_forward(x)[0], {"dx": x}, silu_backward(dy, cache), dy)


def probe_layernorm_backward() -> GradientReport:
    from ldm_np.layers import layernorm_backward, layernorm_forward

    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 6))
    gamma, beta = 1.0 + 0.3 * rng.standard_normal(6), 0.3 * rng.standard_normal(6)
    y, cache = layernorm_forward(x, gamma, beta)
    dy = rng.standard_normal(y.shape)
    grads = layernorm_backward(dy, cache)
    arrays = {"dx": x, "dgamma": gamma, "dbeta": beta}
    return _report("layernorm_backward", lambda: layernorm_forward(x, gamma, beta)[0], arrays, grads, dy)


def probe_reparameterize_backward() -> GradientReport:
    from ldm_np.vae import reparameterize_backward, reparameterize_forward

    rng = np.random.default_rng(3)
    mu, log_var, eps = (rng.standard_normal((4, 3)) for _ in range(3))
    z, cache = reparameterize_forward(mu, log_var, eps)
    dz = rng.standard_normal(z.shape)
    grads = reparameterize_backward(dz, cache)
    arrays = {"dmu": mu, "dlog_var": log_var}
    return _report(
        "reparameterize_backward", lambda: reparameterize_forward(mu, log_var, eps)[0], arrays, grads, dz
    )


def probe_kl_divergence_backward() -> GradientReport:
    from ldm_np.losses import kl_divergence, kl_divergence_backward, kl_divergence_forward

    rng = np.random.default_rng(4)
    mu, log_var = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    dloss = 0.7
    grads = kl_divergence_backward(dloss, kl_divergence_forward(mu, log_var)[1])
    arrays = {"dmu": mu, "dlog_var": log_var}
    return _report("kl_divergence_backward", lambda: dloss * kl_divergence(mu, log_var), arrays, grads, None)


def probe_diffusion_loss() -> GradientReport:
    from ldm_np.diffusion import diffusion_loss
    from ldm_np.schedules import make_schedule

    rng = np.random.default_rng(5)
    schedule = make_schedule(1000, 1e-4, 0.02, "linear", dtype="float64")
    out, x0, noise = (rng.standard_normal((4, 3)) for _ in range(3))
    t = np.array([0, 100, 300, 999])
    reports = []
    for prediction_type, gamma in (("epsilon", None), ("v", 5.0)):
        _, dout = diffusion_loss(schedule, out, x0, noise, t, prediction_type, gamma)
        loss = lambda p=prediction_type, g=gamma: diffusion_loss(schedule, out, x0, noise, t, p, g)[0]  # noqa: E731
        name = f"dmodel_output ({prediction_type}{', min-SNR gamma 5' if gamma else ''})"
        reports.append(_report("diffusion_loss", loss, {name: out}, dout, None))
    return GradientReport(
        "diffusion_loss", max(r.error for r in reports), [line for r in reports for line in r.lines]
    )
