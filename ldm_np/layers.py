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
    y = x @ kernel  # [batch, out]
    y += bias
    return y, (x, kernel)


def dense_backward(dy: Any, cache: Any) -> tuple[Any, Any, Any]:
    """Gradients of y = x @ kernel + bias.

    dx = dy @ kernel.T          [batch, in]
    dkernel = x.T @ dy          [in, out]
    dbias = sum_batch dy        [out]

    ``kernel.T`` and ``x.T`` are views: BLAS reads them transposed, no copy.
    """
    ### BEGIN SOLUTION dense_backward
    x, kernel = cache
    dx = dy @ kernel.T  # [batch, in]
    dkernel = x.T @ dy  # [in, out]
    dbias = batch_sum(dy)  # [out]
    return dx, dkernel, dbias
    ### END SOLUTION


def dense_param_grads(dy: Any, cache: Any) -> tuple[Any, Any]:
    """``dense_backward`` without dx: (dkernel, dbias), for a layer whose input needs no gradient.

    The first layer of a network fed with data (or with a fixed embedding)
    never uses dx; skipping it saves a [batch, out] x [out, in] product.
    """
    x, _ = cache
    return x.T @ dy, batch_sum(dy)  # [in, out], [out]


def batch_sum(a: Any) -> Any:
    """Sum over the batch axis: [batch, features] -> [features], i.e. ``a.sum(axis=0)``.

    On a GPU the same sum is computed as ``ones @ a``: CuPy's reduction over
    the first axis of a tall array is slow (several times a whole training
    step at large batches), while a matrix-vector product is one fast cuBLAS
    call. On the CPU the two take about the same time on one thread, but the
    matrix-vector product goes through OpenBLAS's threads, which stalled it
    up to a hundredfold on a busy 2-core machine; ``a.sum(axis=0)`` is kept.
    """
    xp = get_array_module(a)
    if xp is np:
        return a.sum(axis=0)
    return xp.ones(a.shape[0], dtype=a.dtype) @ a


# --------------------------------------------------------------------------
# SiLU
# --------------------------------------------------------------------------


# Elementwise chains (SiLU and its gradient: four or five ufuncs each) are
# limited by memory traffic, not arithmetic: at batch 1,024 a [batch, 4*hidden]
# float32 array is 4 MiB, larger than a core's L2 cache, so every ufunc of the
# chain would stream it from main memory again. Running the chain on blocks of
# rows that fit in L2 reads the inputs once and writes the outputs once.
ROW_BLOCK_BYTES = 256 * 1024


def row_blocks(a: Any) -> list[Any]:
    """Indices that cut ``a`` into blocks of rows of about ``ROW_BLOCK_BYTES`` each.

    One block (``...``, the whole array) for small arrays and on a GPU, where
    one kernel over the whole array is what is wanted.
    """
    if get_array_module(a) is not np or a.ndim < 2 or a.nbytes <= 2 * ROW_BLOCK_BYTES:
        return [...]
    rows = max(ROW_BLOCK_BYTES // (a.nbytes // a.shape[0]), 1)
    return [slice(i, i + rows) for i in range(0, a.shape[0], rows)]


def sigmoid(x: Any, out: Any = None) -> Any:
    """sigma(x) = 1 / (1 + exp(-x)), written as (1 + tanh(x / 2)) / 2.

    The tanh form never overflows, for any float32 x. All four steps write
    into one array: ``out`` if given, else a new one.
    """
    xp = get_array_module(x)
    s = xp.multiply(x, 0.5, out=out)  # x / 2
    xp.tanh(s, out=s)
    s += 1.0
    s *= 0.5
    return s


def silu_forward(x: Any) -> tuple[Any, Any]:
    """SiLU (swish): y = x * sigma(x). Shape-preserving.

    The cache is (y, sigma(x)): the backward needs nothing else (see
    ``silu_backward``), and y is kept anyway as the next layer's input.
    So y must not be changed in place before the backward pass.
    Computed block by block of rows (see ``row_blocks``); the numbers are
    those of ``s = sigmoid(x); y = x * s``.
    """
    xp = get_array_module(x)
    s = xp.empty_like(x)  # sigma(x)
    y = xp.empty_like(x)
    for rows in row_blocks(x):
        sigmoid(x[rows], out=s[rows])
        xp.multiply(x[rows], s[rows], out=y[rows])
    return y, (y, s)


def silu_backward(dy: Any, cache: Any) -> Any:
    """dx = dy * sigma(x) * (1 + x * (1 - sigma(x))).

    From d/dx [x sigma(x)] = sigma(x) + x sigma(x)(1 - sigma(x)).

    The cache holds y = x * sigma(x) and s = sigma(x), so x s = y and

        dx = dy * (s + y * (1 - s))

    the same number with one multiplication fewer. It is evaluated inside
    out, each step in place in the output (one allocation, no temporaries),
    block by block of rows (see ``row_blocks``).
    """
    ### BEGIN SOLUTION silu_backward
    y, s = cache
    xp = get_array_module(dy)
    dx = xp.empty_like(dy)
    for rows in row_blocks(dy):
        d = xp.subtract(1.0, s[rows], out=dx[rows])  # 1 - s
        d *= y[rows]  # y (1 - s)
        d += s[rows]  # s + y (1 - s) = s (1 + x (1 - s))
        d *= dy[rows]
    return dx
    ### END SOLUTION


# --------------------------------------------------------------------------
# LayerNorm
# --------------------------------------------------------------------------


def layernorm_forward(x: Any, gamma: Any, beta: Any, eps: float = LAYERNORM_EPS) -> tuple[Any, Any]:
    """LayerNorm over the last axis: y = gamma * (x - mean) / sqrt(var + eps) + beta.

    x: [batch, features], gamma, beta: [features] -> y: [batch, features].
    The variance is the biased one (divide by ``features``), as in the paper
    (Ba et al., 2016) and in PyTorch.
    """
    xp = get_array_module(x)
    n = x.shape[-1]
    mean = x.mean(axis=-1, keepdims=True)  # [batch, 1]
    xhat = x - mean  # [batch, features], centred; normalised in place below
    # var = mean(xc * xc), as a row-wise dot product: no [batch, features] temporary.
    var = xp.einsum("...i,...i->...", xhat, xhat)[..., None] / n  # [batch, 1]
    rstd = 1.0 / (var + eps) ** 0.5  # [batch, 1]
    xhat *= rstd  # [batch, features]
    y = xhat * gamma
    y += beta
    return y, (xhat, rstd, gamma)


def layernorm_backward(dy: Any, cache: Any) -> tuple[Any, Any, Any]:
    """Gradients of LayerNorm, with n = features and g = dy * gamma:

    dx = rstd / n * (n * g - sum(g) - xhat * sum(g * xhat))   [batch, features]
    dgamma = sum_batch dy * xhat                               [features]
    dbeta = sum_batch dy                                       [features]

    The two sums run over the feature axis: they carry the gradient through
    the mean and the variance, which depend on every feature of the row.
    """
    ### BEGIN SOLUTION layernorm_backward
    xhat, rstd, gamma = cache
    xp = get_array_module(dy)
    n = xhat.shape[-1]
    dy_xhat = dy * xhat  # [batch, features]
    dgamma = batch_sum(dy_xhat)
    dbeta = batch_sum(dy)
    g = dy * gamma  # [batch, features]
    g_mean = g.mean(axis=-1, keepdims=True)  # [batch, 1]
    gx_mean = xp.einsum("...i,...i->...", g, xhat)[..., None] / n  # [batch, 1]: mean(g * xhat), no temporary
    # The formula above with 1/n moved inside: dx = rstd * (g - mean(g) - xhat * mean(g * xhat)),
    # computed in g's buffer; dy_xhat's buffer (no longer needed) holds xhat * mean(g * xhat).
    dx = g
    dx -= g_mean
    dx -= xp.multiply(xhat, gx_mean, out=dy_xhat)
    dx *= rstd
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
    d += h
    return d, (c_norm, c_up, c_act, c_down)


def residual_block_backward(dout: Any, cache: Any) -> tuple[Any, dict, dict, dict]:
    """Backward of the residual block: dh = dout + (the branch's gradient).

    Returns ``dh, dnorm, dup, ddown``; the three dicts have the parameter names
    of their layers (``gamma``/``beta``, ``kernel``/``bias``).
    """
    c_norm, c_up, c_act, c_down = cache
    ds, dk_down, db_down = dense_backward(dout, c_down)
    du = silu_backward(ds, c_act)
    da, dk_up, db_up = dense_backward(du, c_up)
    dh, dgamma, dbeta = layernorm_backward(da, c_norm)
    dh += dout  # the skip connection
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
    if time_input not in TIME_INPUTS:
        raise ValueError(f"time_input must be one of {TIME_INPUTS}, got {time_input!r}")
    s = t.astype(dtype)
    if time_input == "fraction":
        s = s / num_steps
    freqs = timestep_frequencies(dim, xp, dtype)  # [half]
    half = freqs.shape[0]
    angles = s[:, None] * freqs[None, :]  # [batch, half]
    emb = xp.empty((t.shape[0], dim), dtype=dtype)  # [batch, dim]: [sin | cos | 0 if dim is odd]
    xp.sin(angles, out=emb[:, :half])
    xp.cos(angles, out=emb[:, half : 2 * half])
    if dim % 2:
        emb[:, -1] = 0
    return emb
