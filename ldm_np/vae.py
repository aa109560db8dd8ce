"""The VAE: encoder -> (mu, log_var), reparameterization, decoder.

Encoder: dense(in->h) SiLU dense(h->h) SiLU, then two heads dense(h->latent)
for ``mu`` and ``log_var``. Decoder: dense(latent->h) SiLU dense(h->h) SiLU
dense(h->in), then, with ``output_activation="sigmoid"``, a sigmoid (for data
scaled to [0, 1]). Layer names follow Edifice's ``LatentDiffusion``, the design ldm_np keeps:
``enc_dense_0``, ``enc_dense_1``, ``enc_mu``, ``enc_log_var``,
``dec_dense_0``, ``dec_dense_1``, ``dec_output``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import anomaly
from .backend import get_array_module
from .layers import (
    dense_backward,
    dense_forward,
    init_dense,
    sigmoid_backward,
    sigmoid_forward,
    silu_backward,
    silu_forward,
)
from .module import Module
from .validation import check_array, check_choice, check_dtype_name, check_int, check_rng

LOG_VAR_MIN, LOG_VAR_MAX = -30.0, 20.0
OUTPUT_ACTIVATIONS = ("linear", "sigmoid")


# --------------------------------------------------------------------------
# Reparameterization
# --------------------------------------------------------------------------


def reparameterize_forward(mu: Any, log_var: Any, eps: Any) -> tuple[Any, Any]:
    """z = mu + exp(0.5 * log_var) * eps, with the noise ``eps`` ~ N(0, I) given.

    mu, log_var, eps: [batch, latent] -> z: [batch, latent].
    exp(0.5 * log_var) is the standard deviation; using exp(log_var) (the
    variance) here is a classic mistake that the tests catch. The cache holds
    the standard deviation and the noise.
    """
    xp = get_array_module(mu, log_var, eps)
    std = xp.exp(0.5 * log_var)  # [batch, latent]
    z = mu + std * eps
    return z, (std, eps)


def reparameterize_backward(dz: Any, cache: Any) -> tuple[Any, Any]:
    """Gradients of z = mu + exp(0.5 * log_var) * eps, from dz = dL/dz [batch, latent].

    cache = (std = exp(0.5 * log_var), eps). Returns (dmu, dlog_var), both
    [batch, latent]. The noise is an input, not a function of the parameters:
    that is the whole trick (Kingma & Welling, 2014).

    Formula:
        dmu = dz
        dlog_var = dz * eps * 0.5 * exp(0.5 * log_var)
    """
    ### BEGIN SOLUTION reparameterize_backward
    std, eps = cache
    dmu = dz
    dlog_var = dz * eps * 0.5 * std
    return dmu, dlog_var
    ### END SOLUTION


def reparameterize(mu: Any, log_var: Any, rng: Any) -> tuple[Any, Any]:
    """Draw z ~ N(mu, exp(log_var)) as mu + std * eps; returns ``(z, rng)``.

    ``rng`` is a ``numpy.random.Generator`` (or CuPy's); it is returned so the
    call reads like the functional design of Edifice's ``LatentDiffusion``,
    which threads its random key through. Its state advances.
    """
    check_array(mu, "mu", shape=(None, None), finite=False)
    check_array(log_var, "log_var", shape=tuple(mu.shape), dtype=mu.dtype, finite=False)
    check_rng(rng)
    eps = rng.standard_normal(mu.shape, dtype=mu.dtype)  # [batch, latent]
    z, _ = reparameterize_forward(mu, log_var, eps)
    return z, rng


def clamp_log_var_forward(log_var: Any) -> tuple[Any, Any]:
    """Clamp log_var to [-30, 20] so exp(log_var) stays finite in float32.

    Returns the clamped array and, as the cache, the mask of where the clamp
    is *inactive*.
    """
    xp = get_array_module(log_var)
    inside = (log_var > LOG_VAR_MIN) & (log_var < LOG_VAR_MAX)
    return xp.clip(log_var, LOG_VAR_MIN, LOG_VAR_MAX), inside


def clamp_log_var_backward(dout: Any, cache: Any) -> Any:
    """The gradient passes where the clamp is inactive and is zero where it bites."""
    inside = cache
    return dout * inside


# --------------------------------------------------------------------------
# Encoder and decoder
# --------------------------------------------------------------------------


class Encoder(Module):
    """x [batch, input_size] -> (mu, log_var), each [batch, latent_size]."""

    def __init__(
        self,
        input_size: int,
        latent_size: int,
        hidden_size: int,
        *,
        seed: int = 0,
        dtype: Any = "float32",
        device: str = "cpu",
    ) -> None:
        self.input_size = check_int(input_size, "input_size")
        self.latent_size = check_int(latent_size, "latent_size")
        self.hidden_size = check_int(hidden_size, "hidden_size")
        dt = check_dtype_name(dtype)
        rng = np.random.default_rng(check_int(seed, "seed", minimum=0))
        h = self.hidden_size
        params = {
            "enc_dense_0": init_dense(rng, self.input_size, h, dt),
            "enc_dense_1": init_dense(rng, h, h, dt),
            "enc_mu": init_dense(rng, h, self.latent_size, dt),
            "enc_log_var": init_dense(rng, h, self.latent_size, dt),
        }
        super().__init__(params, device)

    def _config_repr(self) -> str:
        return f"input_size={self.input_size}, latent_size={self.latent_size}, hidden_size={self.hidden_size}"

    def __call__(self, x: Any) -> tuple[Any, Any]:
        check_array(x, "x", shape=(None, self.input_size), dtype=self.dtype)
        return self.forward(x)

    def forward(self, x: Any) -> tuple[Any, Any]:
        """The unchecked forward pass (training loops validate their data once)."""
        p = self.params
        a, c0 = dense_forward(x, **p["enc_dense_0"])  # [batch, hidden]
        a, s0 = silu_forward(a)
        anomaly.check(a, "Encoder", "enc_dense_0", "forward")
        a, c1 = dense_forward(a, **p["enc_dense_1"])  # [batch, hidden]
        a, s1 = silu_forward(a)
        anomaly.check(a, "Encoder", "enc_dense_1", "forward")
        mu, c_mu = dense_forward(a, **p["enc_mu"])  # [batch, latent]
        log_var, c_lv = dense_forward(a, **p["enc_log_var"])  # [batch, latent]
        anomaly.check_layers("Encoder", "forward", ("enc_mu", mu), ("enc_log_var", log_var))
        self._cache = (c0, s0, c1, s1, c_mu, c_lv)
        return mu, log_var

    def backward(self, dmu: Any, dlog_var: Any) -> Any:
        """Fill ``grads`` from dL/dmu and dL/dlog_var; return dL/dx [batch, input_size]."""
        c0, s0, c1, s1, c_mu, c_lv = self._take_cache()
        batch = c0[0].shape[0]
        check_array(dmu, "dmu", shape=(batch, self.latent_size), dtype=self.dtype, finite=False)
        check_array(dlog_var, "dlog_var", shape=(batch, self.latent_size), dtype=self.dtype, finite=False)
        g = self.grads
        da, g["enc_mu"]["kernel"], g["enc_mu"]["bias"] = dense_backward(dmu, c_mu)
        da_lv, g["enc_log_var"]["kernel"], g["enc_log_var"]["bias"] = dense_backward(dlog_var, c_lv)
        da = da + da_lv  # the trunk feeds both heads: their gradients add
        anomaly.check_layers(
            "Encoder",
            "backward",
            ("enc_mu", g["enc_mu"]),
            ("enc_log_var", g["enc_log_var"]),
            ("enc_log_var", da),
        )
        da = silu_backward(da, s1)
        da, g["enc_dense_1"]["kernel"], g["enc_dense_1"]["bias"] = dense_backward(da, c1)
        anomaly.check_layers("Encoder", "backward", ("enc_dense_1", g["enc_dense_1"]), ("enc_dense_1", da))
        da = silu_backward(da, s0)
        dx, g["enc_dense_0"]["kernel"], g["enc_dense_0"]["bias"] = dense_backward(da, c0)
        anomaly.check_layers("Encoder", "backward", ("enc_dense_0", g["enc_dense_0"]), ("enc_dense_0", dx))
        return dx


class Decoder(Module):
    """z [batch, latent_size] -> x_hat [batch, input_size].

    ``output_activation``: ``"linear"`` (default) leaves x_hat unbounded, for
    standardised data; ``"sigmoid"`` squashes it into (0, 1), for data scaled
    to [0, 1]. A sample from the denoiser misses every training latent a
    little; the sigmoid's flat ends keep such errors from reaching pixels that
    sit at 0 or 1. On the digits it brought the samples from 1.4-1.7 to
    1.0-1.4 times the real floor (README: "Quality on the digits").
    """

    def __init__(
        self,
        input_size: int,
        latent_size: int,
        hidden_size: int,
        *,
        output_activation: str = "linear",
        seed: int = 0,
        dtype: Any = "float32",
        device: str = "cpu",
    ) -> None:
        self.input_size = check_int(input_size, "input_size")
        self.latent_size = check_int(latent_size, "latent_size")
        self.hidden_size = check_int(hidden_size, "hidden_size")
        self.output_activation = check_choice(output_activation, "output_activation", OUTPUT_ACTIVATIONS)
        dt = check_dtype_name(dtype)
        rng = np.random.default_rng(check_int(seed, "seed", minimum=0))
        h = self.hidden_size
        params = {
            "dec_dense_0": init_dense(rng, self.latent_size, h, dt),
            "dec_dense_1": init_dense(rng, h, h, dt),
            "dec_output": init_dense(rng, h, self.input_size, dt),
        }
        super().__init__(params, device)

    def _config_repr(self) -> str:
        extra = (
            "" if self.output_activation == "linear" else f", output_activation={self.output_activation!r}"
        )
        return f"input_size={self.input_size}, latent_size={self.latent_size}, hidden_size={self.hidden_size}{extra}"

    def __call__(self, z: Any) -> Any:
        check_array(z, "z", shape=(None, self.latent_size), dtype=self.dtype)
        return self.forward(z)

    def forward(self, z: Any) -> Any:
        """The unchecked forward pass."""
        p = self.params
        a, c0 = dense_forward(z, **p["dec_dense_0"])  # [batch, hidden]
        a, s0 = silu_forward(a)
        anomaly.check(a, "Decoder", "dec_dense_0", "forward")
        a, c1 = dense_forward(a, **p["dec_dense_1"])  # [batch, hidden]
        a, s1 = silu_forward(a)
        anomaly.check(a, "Decoder", "dec_dense_1", "forward")
        x_hat, c2 = dense_forward(a, **p["dec_output"])  # [batch, input]
        c3 = None
        if self.output_activation == "sigmoid":
            x_hat, c3 = sigmoid_forward(x_hat)
        anomaly.check(x_hat, "Decoder", "dec_output", "forward")
        self._cache = (c0, s0, c1, s1, c2, c3)
        return x_hat

    def backward(self, dx_hat: Any) -> Any:
        """Fill ``grads`` from dL/dx_hat; return dL/dz [batch, latent_size]."""
        c0, s0, c1, s1, c2, c3 = self._take_cache()
        check_array(dx_hat, "dx_hat", shape=(c0[0].shape[0], self.input_size), dtype=self.dtype, finite=False)
        g = self.grads
        if c3 is not None:
            dx_hat = sigmoid_backward(dx_hat, c3)
        da, g["dec_output"]["kernel"], g["dec_output"]["bias"] = dense_backward(dx_hat, c2)
        anomaly.check_layers("Decoder", "backward", ("dec_output", g["dec_output"]), ("dec_output", da))
        da = silu_backward(da, s1)
        da, g["dec_dense_1"]["kernel"], g["dec_dense_1"]["bias"] = dense_backward(da, c1)
        anomaly.check_layers("Decoder", "backward", ("dec_dense_1", g["dec_dense_1"]), ("dec_dense_1", da))
        da = silu_backward(da, s0)
        dz, g["dec_dense_0"]["kernel"], g["dec_dense_0"]["bias"] = dense_backward(da, c0)
        anomaly.check_layers("Decoder", "backward", ("dec_dense_0", g["dec_dense_0"]), ("dec_dense_0", dz))
        return dz
