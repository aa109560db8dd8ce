"""Noise schedules: how much noise the forward process adds at each step.

The forward process is q(x_t | x_0) = N(sqrt(alphas_cumprod[t]) x_0, (1 - alphas_cumprod[t]) I)
with alphas_cumprod[t] = prod_{s <= t} (1 - betas[s]). Index t runs 0..T-1.

Naming collisions across libraries (check before comparing numbers):

- ``"linear"`` here is DDPM's schedule: betas evenly spaced from beta_start
  to beta_end (Ho et al., 2020). diffusers calls it ``"linear"`` too.
- ``"scaled_linear"`` spaces sqrt(beta) evenly and squares: the schedule of
  the latent diffusion paper and Stable Diffusion. The original LDM code calls
  this one ``"linear"``, so an LDM config's "linear" is ldm_np's
  "scaled_linear".
- ``"cosine"`` is Nichol & Dhariwal (2021), s = 0.008, betas capped at 0.999;
  diffusers calls it ``"squaredcos_cap_v2"``. It ignores beta_start/beta_end.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from .backend import xp_for_device
from .validation import check_choice, check_dtype_name, check_float, check_int

KINDS = ("linear", "scaled_linear", "cosine")

# sqrt(alphas_cumprod[T-1]) is the share of the signal still present at the last
# step. Above this, sampling from pure noise starts from a distribution the model
# never saw in training (Lin et al., 2023, "Common Diffusion Noise Schedules and
# Sample Steps are Flawed").
TERMINAL_SIGNAL_WARNING = 0.05


def _betas(num_steps: int, beta_start: float, beta_end: float, kind: str) -> np.ndarray:
    """Betas in float64, [num_steps]."""
    if kind == "linear":
        return np.linspace(beta_start, beta_end, num_steps, dtype=np.float64)
    if kind == "scaled_linear":
        return np.linspace(beta_start**0.5, beta_end**0.5, num_steps, dtype=np.float64) ** 2
    # cosine: alpha_bar(u) = cos^2((u + s) / (1 + s) * pi / 2), u = t / T
    s = 0.008
    u = np.arange(num_steps + 1, dtype=np.float64) / num_steps
    alpha_bar = np.cos((u + s) / (1 + s) * math.pi / 2) ** 2
    return np.minimum(1.0 - alpha_bar[1:] / alpha_bar[:-1], 0.999)


def make_schedule(
    num_steps: int = 1000,
    beta_start: float = 1e-4,
    beta_end: float = 0.02,
    kind: str = "linear",
    *,
    dtype: Any = "float32",
    device: str = "cpu",
) -> dict[str, Any]:
    """Build a noise schedule as a dict of arrays of shape [num_steps].

    Keys: ``num_steps``, ``kind``, ``betas``, ``alphas``, ``alphas_cumprod``,
    ``alphas_cumprod_prev`` (1.0 at t = 0), ``sqrt_alphas_cumprod``,
    ``sqrt_one_minus_alphas_cumprod``, ``posterior_variance``
    (beta_t (1 - ab_{t-1}) / (1 - ab_t), the variance of q(x_{t-1} | x_t, x_0);
    0 at t = 0) and ``posterior_log_variance_clipped`` (its log, with the
    t = 0 entry replaced by the t = 1 entry so the log stays finite).

    Everything is computed in float64 and then cast to ``dtype`` on ``device``,
    so float32 models never see float64 arrays. A schedule whose
    ``alphas_cumprod`` falls below the dtype's smallest normal number is
    refused (ValueError): predicting x0 divides by its square root. Warns when the last
    ``alphas_cumprod`` leaves more than 5% of the signal's amplitude (the
    terminal-SNR trap).
    """
    num_steps = check_int(num_steps, "num_steps")
    check_choice(kind, "kind", KINDS)
    beta_start = check_float(beta_start, "beta_start", low=0.0, high=1.0, low_open=True)
    beta_end = check_float(beta_end, "beta_end", low=0.0, high=1.0, low_open=True)
    if beta_end < beta_start:
        raise ValueError(f"beta_end ({beta_end}) must be >= beta_start ({beta_start})")
    if beta_end >= 1.0:
        raise ValueError(
            f"beta_end must be < 1 (a beta of 1 destroys the signal in one step), got {beta_end}"
        )
    dt = check_dtype_name(dtype)
    xp = xp_for_device(device)

    betas = _betas(num_steps, beta_start, beta_end, kind)
    alphas = 1.0 - betas
    alphas_cumprod = np.cumprod(alphas)
    alphas_cumprod_prev = np.concatenate([[1.0], alphas_cumprod[:-1]])
    posterior_variance = betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod)
    # posterior_variance[0] is 0: log-clip with the next entry (as DDPM does).
    log_var_source = (
        np.concatenate([posterior_variance[1:2], posterior_variance[1:]])
        if num_steps > 1
        else np.array([1e-20])
    )
    posterior_log_variance_clipped = np.log(np.maximum(log_var_source, 1e-20))

    # ab_t is mathematically > 0, but a long schedule of large betas drives it
    # below the dtype's smallest normal number (linear, T = 1000, beta_end =
    # 0.9 is subnormal in float32 from t = 410 and 0 from t = 666): x0 =
    # (x_t - s_t eps) / sqrt(ab_t) would then divide by zero. Refused here rather than clamped, so a float32 and a
    # float64 schedule of the same options always describe the same process.
    tiny = np.finfo(dt).tiny
    if alphas_cumprod[-1] < tiny:
        first = int(np.argmax(alphas_cumprod < tiny))
        raise ValueError(
            f"alphas_cumprod underflows {dt.name} at step {first} (below {tiny:.3g}) with num_steps="
            f"{num_steps}, kind={kind!r}, beta_start={beta_start}, beta_end={beta_end}: predicting x0 "
            "would divide by zero. Use fewer steps or a smaller beta_end"
            + (", or float64" if dt.name == "float32" else "")
        )

    terminal_signal = math.sqrt(alphas_cumprod[-1])
    if terminal_signal > TERMINAL_SIGNAL_WARNING:
        warnings.warn(
            f"this {kind!r} schedule keeps sqrt(alphas_cumprod[-1]) = {terminal_signal:.3f} "
            "of the signal at the last step: sampling from pure noise will not match what "
            "the model saw in training. Use more steps, a larger beta_end or the cosine "
            "schedule (Lin et al., 2023).",
            stacklevel=2,
        )

    arrays = {
        "betas": betas,
        "alphas": alphas,
        "alphas_cumprod": alphas_cumprod,
        "alphas_cumprod_prev": alphas_cumprod_prev,
        "sqrt_alphas_cumprod": np.sqrt(alphas_cumprod),
        "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - alphas_cumprod),
        "posterior_variance": posterior_variance,
        "posterior_log_variance_clipped": posterior_log_variance_clipped,
    }
    schedule: dict[str, Any] = {
        "num_steps": num_steps,
        "kind": kind,
        "beta_start": beta_start,
        "beta_end": beta_end,
    }
    schedule.update({k: xp.asarray(v.astype(dt)) for k, v in arrays.items()})
    return schedule
