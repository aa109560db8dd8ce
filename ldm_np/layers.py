"""The building blocks, each a forward and its hand-written backward.

Every layer is a pair of plain functions, in the style of CS231n:

    out, cache = op_forward(x, *params)
    dx, *dparams = op_backward(dout, cache)

``cache`` holds what the backward needs from the forward. Gradients are named
after their variables with a ``d`` prefix (``dx``, ``dkernel``). All shapes
are ``[batch, features]``; the array module comes from the inputs, so the same
code runs on NumPy and CuPy.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .backend import get_array_module

LAYERNORM_EPS = 1e-5


# --------------------------------------------------------------------------
# Initialisation
# --------------------------------------------------------------------------


def glorot_uniform(rng: np.random.Generator, fan_in: int, fan_out: int, dtype: Any) -> Any:
    """Glorot/Xavier-uniform kernel ``[fan_in, fan_out]``: U(-a, a), a = sqrt(6 / (in + out)).

    Keeps the variance of activations and of gradients roughly constant
    from layer to layer (Glorot & Bengio, 2010).
    """
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=(fan_in, fan_out)).astype(dtype)


def init_dense(rng: np.random.Generator, fan_in: int, fan_out: int, dtype: Any) -> dict[str, Any]:
    """Parameters of a dense layer: Glorot-uniform ``kernel``, zero ``bias``.

    Parameters are always drawn on the host with NumPy and then moved, so a
    model built with the same seed starts identical on every device.
    """
    kernel = glorot_uniform(rng, fan_in, fan_out, dtype)
    return {"kernel": kernel, "bias": np.zeros(fan_out, dtype=dtype)}


def init_layernorm(size: int, dtype: Any) -> dict[str, Any]:
    """Parameters of a LayerNorm: ``gamma`` = 1, ``beta`` = 0."""
    return {"gamma": np.ones(size, dtype=dtype), "beta": np.zeros(size, dtype=dtype)}


# --------------------------------------------------------------------------
# Dense
# --------------------------------------------------------------------------


def dense_forward(x: Any, kernel: Any, bias: Any) -> tuple[Any, Any]:
    """y = x @ kernel + bias.

    x: [batch, in], kernel: [in, out], bias: [out] -> y: [batch, out].
    """
    y = x @ kernel + bias  # [batch, out]
    return y, (x, kernel)


def dense_backward(dy: Any, cache: Any) -> tuple[Any, Any, Any]:
    """Gradients of y = x @ kernel + bias, from dy = dL/dy [batch, out].

    cache = (x [batch, in], kernel [in, out]). Returns (dx [batch, in],
    dkernel [in, out], dbias [out]), each dL/d of that input.

    Formula:
        dx = dy @ kernel.T
        dkernel = x.T @ dy
        dbias = sum_batch dy
    """
    ### BEGIN SOLUTION dense_backward
    x, kernel = cache
    dx = dy @ kernel.T  # [batch, in]
    dkernel = x.T @ dy  # [in, out]
    dbias = dy.sum(axis=0)  # [out]
    return dx, dkernel, dbias
    ### END SOLUTION


# --------------------------------------------------------------------------
# Sigmoid and SiLU
# --------------------------------------------------------------------------


def sigmoid(x: Any) -> Any:
    """sigma(x) = 1 / (1 + exp(-x)), computed as (1 + tanh(x / 2)) / 2.

    The two are equal; the tanh form never overflows (exp(-x) does in
    float32 for x < -88).
    """
    xp = get_array_module(x)
    return 0.5 * (1.0 + xp.tanh(0.5 * x))


def sigmoid_forward(x: Any) -> tuple[Any, Any]:
    """y = sigma(x), the decoder's optional output activation. Any shape.

    The cache holds y itself: the derivative is written in terms of it.
    """
    y = sigmoid(x)
    return y, y


def sigmoid_backward(dy: Any, cache: Any) -> Any:
    """dx = dL/dx of y = sigma(x), from dy = dL/dy; cache = y, shaped like x.

    Formula:
        dx = dy * y * (1 - y)
        (from d/dx sigma(x) = sigma(x) (1 - sigma(x)))
    """
    y = cache
    return dy * y * (1.0 - y)


def silu_forward(x: Any) -> tuple[Any, Any]:
    """SiLU (swish): y = x * sigma(x). Any shape.

    The cache holds x and sigma(x), the two things the backward formula names.
    """
    s = sigmoid(x)
    y = x * s
    return y, (x, s)


def silu_backward(dy: Any, cache: Any) -> Any:
    """dx = dL/dx of y = x sigma(x), from dy = dL/dy; cache = (x, sigma(x)), all shaped like x.

    Formula:
        dx = dy * sigma(x) * (1 + x * (1 - sigma(x)))
        (from d/dx [x sigma(x)] = sigma(x) + x sigma(x) (1 - sigma(x)))
    """
    ### BEGIN SOLUTION silu_backward
    x, s = cache
    dx = dy * s * (1.0 + x * (1.0 - s))
    return dx
    ### END SOLUTION


# --------------------------------------------------------------------------
# LayerNorm
# --------------------------------------------------------------------------


def layernorm_forward(x: Any, gamma: Any, beta: Any, eps: float = LAYERNORM_EPS) -> tuple[Any, Any]:
    """LayerNorm over the last axis: y = gamma * xhat + beta, xhat = (x - mean) * rstd.

    mean and var are taken over the features of each row, rstd = 1 / sqrt(var + eps).
    x: [batch, features], gamma, beta: [features] -> y: [batch, features].
    The variance is the biased one (divide by ``features``), as in the paper
    (Ba et al., 2016) and in PyTorch.
    """
    mean = x.mean(axis=-1, keepdims=True)  # [batch, 1]
    var = x.var(axis=-1, keepdims=True)  # [batch, 1]
    rstd = 1.0 / (var + eps) ** 0.5  # [batch, 1]
    xhat = (x - mean) * rstd  # [batch, features]
    y = gamma * xhat + beta
    return y, (xhat, rstd, gamma)


def layernorm_backward(dy: Any, cache: Any) -> tuple[Any, Any, Any]:
    """Gradients of LayerNorm y = gamma * xhat + beta, from dy = dL/dy [batch, features].

    xhat = (x - mean) * rstd and rstd = 1 / sqrt(var + eps), mean and var over
    the n features of each row; cache = (xhat, rstd [batch, 1], gamma).
    Returns (dx [batch, features], dgamma [features], dbeta [features]).
    The mean and the variance depend on every feature of the row, so dx has
    terms through both.

    Formula: with g = dy * gamma and sums over the features of each row,
        dx = rstd / n * (n * g - sum(g) - xhat * sum(g * xhat))
        dgamma = sum_batch dy * xhat
        dbeta = sum_batch dy
    """
    ### BEGIN SOLUTION layernorm_backward
    xhat, rstd, gamma = cache
    n = xhat.shape[-1]
    g = dy * gamma  # [batch, features]
    g_sum = g.sum(axis=-1, keepdims=True)  # [batch, 1]
    gx_sum = (g * xhat).sum(axis=-1, keepdims=True)  # [batch, 1]
    dx = rstd / n * (n * g - g_sum - xhat * gx_sum)
    dgamma = (dy * xhat).sum(axis=0)
    dbeta = dy.sum(axis=0)
    return dx, dgamma, dbeta
    ### END SOLUTION


# --------------------------------------------------------------------------
# Residual MLP block: h + down(SiLU(up(LayerNorm(h))))
# --------------------------------------------------------------------------


def residual_block_forward(h: Any, norm: dict, up: dict, down: dict) -> tuple[Any, Any]:
    """out = h + down(SiLU(up(LayerNorm(h)))).

    h: [batch, hidden]; up: hidden -> 4*hidden; down: 4*hidden -> hidden.
    The skip path lets the gradient reach early blocks undiminished.
    """
    a, c_norm = layernorm_forward(h, norm["gamma"], norm["beta"])
    u, c_up = dense_forward(a, up["kernel"], up["bias"])  # [batch, 4*hidden]
    s, c_act = silu_forward(u)
    d, c_down = dense_forward(s, down["kernel"], down["bias"])  # [batch, hidden]
    out = h + d
    return out, (c_norm, c_up, c_act, c_down)


def residual_block_backward(dout: Any, cache: Any) -> tuple[Any, dict, dict, dict]:
    """Backward of the residual block: dh = dout + (the branch's gradient).

    Returns ``dh, dnorm, dup, ddown``; the three dicts have the parameter names
    of their layers (``gamma``/``beta``, ``kernel``/``bias``).
    """
    c_norm, c_up, c_act, c_down = cache
    ds, dk_down, db_down = dense_backward(dout, c_down)
    du = silu_backward(ds, c_act)
    da, dk_up, db_up = dense_backward(du, c_up)
    dh_branch, dgamma, dbeta = layernorm_backward(da, c_norm)
    dh = dout + dh_branch  # the skip connection passes dout through unchanged
    return (
        dh,
        {"gamma": dgamma, "beta": dbeta},
        {"kernel": dk_up, "bias": db_up},
        {"kernel": dk_down, "bias": db_down},
    )


# --------------------------------------------------------------------------
# Sinusoidal timestep embedding (no parameters, no gradient to t)
# --------------------------------------------------------------------------

TIME_INPUTS = ("index", "fraction")


def timestep_frequencies(dim: int, xp: Any, dtype: Any) -> Any:
    """Frequencies w_i = 10000 ** (-i / (half - 1)), i = 0..half-1, half = dim // 2.

    The fastest channel turns once per radian of input, the slowest once per
    10000 radians (Vaswani et al., 2017; DDPM, Ho et al., 2020).
    """
    half = dim // 2
    i = xp.arange(half, dtype="float64")
    return xp.exp(-math.log(10000.0) * i / max(half - 1, 1)).astype(dtype)  # [half]


def timestep_embedding(
    t: Any, dim: int, num_steps: int, time_input: str = "index", *, dtype: Any = "float32"
) -> Any:
    """Sinusoidal embedding of integer timesteps: [sin(s * w), cos(s * w)].

    t: [batch] integers in 0..num_steps-1 -> [batch, dim].

    ``time_input`` chooses what s is:

    - ``"index"`` (default): s = t, as in DDPM. Neighbouring steps differ by
      up to one radian in the fastest channel, so every channel varies over
      the schedule.
    - ``"fraction"``: s = t / num_steps, the form of the design this library
      follows. s stays in [0, 1), so all but the few fastest channels are
      nearly constant across the whole schedule and carry little information
      about t. The first dense layer can rescale them, and on the digits the
      two forms trained equally well (README: "The time embedding").

    An odd ``dim`` gets a zero last column, so the width is always ``dim``.
    """
    xp = get_array_module(t)
    s = t.astype(dtype)  # [batch]
    if time_input == "fraction":
        s = s / num_steps
    freqs = timestep_frequencies(dim, xp, dtype)  # [half]
    angles = s[:, None] * freqs[None, :]  # [batch, half]
    columns = [xp.sin(angles), xp.cos(angles)]
    if dim % 2:
        columns.append(xp.zeros((t.shape[0], 1), dtype=dtype))
    return xp.concatenate(columns, axis=1)  # [batch, dim]: [sin | cos | 0 if dim is odd]
