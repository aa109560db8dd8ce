"""Gradient probes: the largest relative error of an exercise's gradient.

Each probe imports ldm_np inside the function, so in the grading subprocess
it checks the copy's code. Fixed seeds, float64, non-trivial values (zero
biases and unit gammas hide broken backward passes).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


def _max_error(
    forward: Callable[[], Any], arrays: Sequence[Any], analytic: Sequence[Any], dout: Any
) -> float:
    """max over ``arrays`` of rel_error(analytic gradient, numerical gradient of sum(forward() * dout))."""
    from ldm_np.gradcheck import numerical_gradient, rel_error

    if len(analytic) != len(arrays):
        raise ValueError(f"expected {len(arrays)} gradients, got {len(analytic)}")
    return max(
        rel_error(g, numerical_gradient(forward, a, dout)) for a, g in zip(arrays, analytic, strict=True)
    )


def probe_dense_backward() -> float:
    from ldm_np.layers import dense_backward, dense_forward

    rng = np.random.default_rng(0)
    x, kernel, bias = rng.standard_normal((4, 5)), rng.standard_normal((5, 3)), rng.standard_normal(3)
    y, cache = dense_forward(x, kernel, bias)  # [4, 3]
    dy = rng.standard_normal(y.shape)
    grads = dense_backward(dy, cache)
    return _max_error(lambda: dense_forward(x, kernel, bias)[0], (x, kernel, bias), grads, dy)


def probe_silu_backward() -> float:
    from ldm_np.layers import silu_backward, silu_forward

    rng = np.random.default_rng(1)
    x = 2.0 * rng.standard_normal((4, 6))
    y, cache = silu_forward(x)
    dy = rng.standard_normal(y.shape)
    return _max_error(lambda: silu_forward(x)[0], (x,), (silu_backward(dy, cache),), dy)


def probe_layernorm_backward() -> float:
    from ldm_np.layers import layernorm_backward, layernorm_forward

    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 6))
    gamma, beta = 1.0 + 0.3 * rng.standard_normal(6), 0.3 * rng.standard_normal(6)
    y, cache = layernorm_forward(x, gamma, beta)
    dy = rng.standard_normal(y.shape)
    grads = layernorm_backward(dy, cache)
    return _max_error(lambda: layernorm_forward(x, gamma, beta)[0], (x, gamma, beta), grads, dy)


def probe_reparameterize_backward() -> float:
    from ldm_np.vae import reparameterize_backward, reparameterize_forward

    rng = np.random.default_rng(3)
    mu, log_var, eps = (rng.standard_normal((4, 3)) for _ in range(3))
    z, cache = reparameterize_forward(mu, log_var, eps)
    dz = rng.standard_normal(z.shape)
    grads = reparameterize_backward(dz, cache)
    return _max_error(lambda: reparameterize_forward(mu, log_var, eps)[0], (mu, log_var), grads, dz)


def probe_kl_divergence_backward() -> float:
    from ldm_np.losses import kl_divergence, kl_divergence_backward, kl_divergence_forward

    rng = np.random.default_rng(4)
    mu, log_var = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    dloss = 0.7
    grads = kl_divergence_backward(dloss, kl_divergence_forward(mu, log_var)[1])
    return _max_error(lambda: dloss * kl_divergence(mu, log_var), (mu, log_var), grads, None)


def probe_diffusion_loss() -> float:
    from ldm_np.diffusion import diffusion_loss
    from ldm_np.schedules import make_schedule

    rng = np.random.default_rng(5)
    schedule = make_schedule(1000, 1e-4, 0.02, "linear", dtype="float64")
    out, x0, noise = (rng.standard_normal((4, 3)) for _ in range(3))
    t = np.array([0, 100, 300, 999])
    errors = []
    for prediction_type, gamma in (("epsilon", None), ("v", 5.0)):
        _, dout = diffusion_loss(schedule, out, x0, noise, t, prediction_type, gamma)
        errors.append(
            _max_error(
                lambda p=prediction_type, g=gamma: diffusion_loss(schedule, out, x0, noise, t, p, g)[0],
                (out,),
                (dout,),
                None,
            )
        )
    return max(errors)
