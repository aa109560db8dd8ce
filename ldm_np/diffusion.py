"""The forward process, the three things a denoiser can predict, and its training loss.

With ab_t = alphas_cumprod[t], a_t = sqrt(ab_t) and s_t = sqrt(1 - ab_t)
(so a_t^2 + s_t^2 = 1), the forward process and the three prediction
targets are (Ho et al., 2020; Salimans & Ho, 2022):

    x_t = a_t x_0 + s_t eps            q_sample         eps ~ N(0, I)
    "epsilon":  eps                    the noise
    "sample":   x_0                    the clean sample
    "v":        v = a_t eps - s_t x_0  the velocity

Any one of (eps, x_0, v), together with x_t, gives the other two:

    x_0 = (x_t - s_t eps) / a_t        eps = (x_t - a_t x_0) / s_t
    x_0 = a_t x_t - s_t v              eps = s_t x_t + a_t v

Shapes: samples are ``[batch, latent]``; timesteps ``t`` are an integer array
``[batch]`` (each row at its own step) or a Python int (every row at the same
step). Per-row coefficients are gathered as ``[batch, 1]`` so they broadcast
over the latent dimension.

NaN and infinity propagate here (README, "NaN and infinity"): these
functions check shapes and dtypes, never values, so a NaN in gives a NaN out
without an error, as in NumPy; the entrances that take data refuse them.

Precision: 1 - ab_t is read as ``sqrt_one_minus_alphas_cumprod[t] ** 2``, which
the schedule computed in float64, instead of ``1 - alphas_cumprod[t]`` in the
model dtype: near t = 0, ab_t = 0.9999 and the float32 subtraction would keep
only about three significant digits.
"""

from __future__ import annotations

import numbers
from typing import Any

from .backend import get_array_module
from .validation import (
    check_choice,
    check_diffusion_arrays,
    check_float,
    check_samples,  # noqa: F401  (oracle.py imports it from here)
    check_schedule,
    check_t,
)

PREDICTION_TYPES = ("epsilon", "sample", "v")


# --------------------------------------------------------------------------
# Gathering (shared with samplers.py and oracle.py)
# --------------------------------------------------------------------------


def check_prediction_type(prediction_type: Any, name: str = "prediction_type") -> str:
    """Return ``prediction_type`` if it is one of ``PREDICTION_TYPES`` (diffusers' "v_prediction" is "v")."""
    return check_choice(prediction_type, name, PREDICTION_TYPES)


def gather(values: Any, t: Any) -> Any:
    """values[t], shaped to broadcast against [batch, latent].

    values: [num_steps]; t: int -> 0-d array; t: [batch] -> [batch, 1].
    Indexing with a Python int gives a 0-d array of the schedule's dtype (a
    NumPy scalar or a CuPy 0-d device array): no host round trip.
    """
    if isinstance(t, numbers.Integral):
        return values[t]
    return values[t][:, None]  # [batch, 1]


# --------------------------------------------------------------------------
# Forward process and signal-to-noise ratio
# --------------------------------------------------------------------------


def q_sample(schedule: dict[str, Any], x0: Any, t: Any, noise: Any) -> Any:
    """Draw x_t ~ q(x_t | x_0) with the noise given: x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) noise.

    x0, noise: [batch, latent]; t: [batch] ints (or one int) -> x_t: [batch, latent].
    """
    t = check_diffusion_arrays(schedule, t, x0=x0, noise=noise)
    ### BEGIN SOLUTION q_sample
    a = gather(schedule["sqrt_alphas_cumprod"], t)  # [batch, 1]
    s = gather(schedule["sqrt_one_minus_alphas_cumprod"], t)  # [batch, 1]
    return a * x0 + s * noise  # [batch, latent]
    ### END SOLUTION


def velocity(schedule: dict[str, Any], x0: Any, noise: Any, t: Any) -> Any:
    """The v-prediction target: v = sqrt(ab_t) noise - sqrt(1 - ab_t) x0.

    x0, noise: [batch, latent]; t: [batch] -> v: [batch, latent]. It is the
    rate of change of x_t along the circle x_t = cos(phi) x0 + sin(phi) noise,
    with ab_t = cos^2(phi) (Salimans & Ho, 2022).
    """
    t = check_diffusion_arrays(schedule, t, x0=x0, noise=noise)
    return _velocity(schedule, x0, noise, t)


def _velocity(schedule: dict[str, Any], x0: Any, noise: Any, t: Any) -> Any:
    a = gather(schedule["sqrt_alphas_cumprod"], t)
    s = gather(schedule["sqrt_one_minus_alphas_cumprod"], t)
    return a * noise - s * x0


def snr(schedule: dict[str, Any], t: Any) -> Any:
    """Signal-to-noise ratio of x_t: SNR(t) = ab_t / (1 - ab_t).

    t: [batch] ints -> [batch] (or an int -> a 0-d array), in the schedule's
    dtype. Decreases with t: about 1e4 at t = 0 for DDPM's linear schedule.
    """
    t = check_t(t, "t", batch=None, num_steps=check_schedule(schedule)["num_steps"])
    return schedule["alphas_cumprod"][t] / _flat_one_minus(schedule, t)


def log_snr(schedule: dict[str, Any], t: Any) -> Any:
    """log SNR(t) = log(ab_t) - log(1 - ab_t); t: [batch] -> [batch]."""
    t = check_t(t, "t", batch=None, num_steps=check_schedule(schedule)["num_steps"])
    xp = get_array_module(schedule["alphas_cumprod"])
    return xp.log(schedule["alphas_cumprod"][t]) - xp.log(_flat_one_minus(schedule, t))


def _flat_one_minus(schedule: dict[str, Any], t: Any) -> Any:
    """1 - ab_t as [batch] (not [batch, 1]), from the float64-computed sqrt(1 - ab_t)."""
    s = schedule["sqrt_one_minus_alphas_cumprod"][t]
    return s * s


# --------------------------------------------------------------------------
# Conversions between prediction types
# --------------------------------------------------------------------------


def _x0_from(schedule: dict[str, Any], model_output: Any, t: Any, x_t: Any, prediction_type: str) -> Any:
    """Unchecked ``predict_x0``."""
    a = gather(schedule["sqrt_alphas_cumprod"], t)
    s = gather(schedule["sqrt_one_minus_alphas_cumprod"], t)
    if prediction_type == "epsilon":
        return (x_t - s * model_output) / a
    if prediction_type == "sample":
        return model_output
    return a * x_t - s * model_output  # "v"


def _eps_from(schedule: dict[str, Any], model_output: Any, t: Any, x_t: Any, prediction_type: str) -> Any:
    """Unchecked ``predict_eps``."""
    a = gather(schedule["sqrt_alphas_cumprod"], t)
    s = gather(schedule["sqrt_one_minus_alphas_cumprod"], t)
    if prediction_type == "epsilon":
        return model_output
    if prediction_type == "sample":
        return (x_t - a * model_output) / s
    return s * x_t + a * model_output  # "v"


def _target(prediction_type: str, x0: Any, noise: Any, schedule: dict[str, Any], t: Any) -> Any:
    """Unchecked ``target_for``."""
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "sample":
        return x0
    return _velocity(schedule, x0, noise, t)


def predict_x0(schedule: dict[str, Any], model_output: Any, t: Any, x_t: Any, prediction_type: str) -> Any:
    """x0_hat from a model's output of the given type at (x_t, t).

    epsilon: x0_hat = (x_t - s_t eps_hat) / a_t
    sample:  x0_hat = model_output
    v:       x0_hat = a_t x_t - s_t v_hat

    model_output, x_t: [batch, latent]; t: [batch] ints or an int.
    Dividing by a_t makes the epsilon form amplify errors where little
    signal is left (large t); the v form never divides.
    """
    check_prediction_type(prediction_type)
    t = check_diffusion_arrays(schedule, t, x_t=x_t, model_output=model_output)
    return _x0_from(schedule, model_output, t, x_t, prediction_type)


def predict_eps(schedule: dict[str, Any], model_output: Any, t: Any, x_t: Any, prediction_type: str) -> Any:
    """eps_hat from a model's output of the given type at (x_t, t).

    epsilon: eps_hat = model_output
    sample:  eps_hat = (x_t - a_t x0_hat) / s_t
    v:       eps_hat = s_t x_t + a_t v_hat
    """
    check_prediction_type(prediction_type)
    t = check_diffusion_arrays(schedule, t, x_t=x_t, model_output=model_output)
    return _eps_from(schedule, model_output, t, x_t, prediction_type)


def predict_v(schedule: dict[str, Any], model_output: Any, t: Any, x_t: Any, prediction_type: str) -> Any:
    """v_hat = a_t eps_hat - s_t x0_hat from a model's output of the given type."""
    check_prediction_type(prediction_type)
    t = check_diffusion_arrays(schedule, t, x_t=x_t, model_output=model_output)
    x0_hat = _x0_from(schedule, model_output, t, x_t, prediction_type)
    eps_hat = _eps_from(schedule, model_output, t, x_t, prediction_type)
    return _velocity(schedule, x0_hat, eps_hat, t)


def target_for(prediction_type: str, x0: Any, noise: Any, schedule: dict[str, Any], t: Any) -> Any:
    """What a model of ``prediction_type`` should output for x_t = q_sample(x0, t, noise).

    epsilon -> noise; sample -> x0; v -> a_t noise - s_t x0.
    Given (x0_hat, eps_hat) instead of (x0, noise) it is the inverse of
    ``predict_x0`` / ``predict_eps``: it turns the two estimates back into a
    model output of that type.
    """
    check_prediction_type(prediction_type)
    t = check_diffusion_arrays(schedule, t, x0=x0, noise=noise)
    return _target(prediction_type, x0, noise, schedule, t)


def convert_prediction(
    schedule: dict[str, Any], model_output: Any, t: Any, x_t: Any, from_type: str, to_type: str
) -> Any:
    """Re-express a model output of ``from_type`` as one of ``to_type`` (same x_t, t)."""
    check_prediction_type(from_type, "from_type"), check_prediction_type(to_type, "to_type")
    t = check_diffusion_arrays(schedule, t, x_t=x_t, model_output=model_output)
    x0_hat = _x0_from(schedule, model_output, t, x_t, from_type)
    eps_hat = _eps_from(schedule, model_output, t, x_t, from_type)
    return _target(to_type, x0_hat, eps_hat, schedule, t)


# --------------------------------------------------------------------------
# Training loss
# --------------------------------------------------------------------------


def min_snr_weights(schedule: dict[str, Any], t: Any, prediction_type: str, gamma: float) -> Any:
    """Per-sample min-SNR-gamma loss weights w_b (Hang et al., 2023), [batch].

    epsilon: w = min(SNR, gamma) / SNR
    sample:  w = min(SNR, gamma)
    v:       w = min(SNR, gamma) / (SNR + 1)

    All three give the same loss as a function of x0_hat: the x0 error times
    sqrt(SNR) is the eps error and times sqrt(SNR + 1) is the v error, so each
    weight turns its own squared error into min(SNR, gamma) |x0_hat - x0|^2.
    """
    check_prediction_type(prediction_type)
    gamma = check_float(gamma, "min_snr_gamma", low=0.0, low_open=True)
    t = check_t(t, "t", batch=None, num_steps=check_schedule(schedule)["num_steps"])
    return _min_snr_weights(schedule, t, prediction_type, gamma)


def _min_snr_weights(schedule: dict[str, Any], t: Any, prediction_type: str, gamma: float) -> Any:
    xp = get_array_module(schedule["alphas_cumprod"])
    ratio = schedule["alphas_cumprod"][t] / _flat_one_minus(schedule, t)  # SNR, [batch]
    clipped = xp.minimum(ratio, gamma)  # gamma is a Python float: the dtype stays
    if prediction_type == "epsilon":
        return clipped / ratio
    if prediction_type == "sample":
        return clipped
    return clipped / (ratio + 1.0)


def diffusion_loss(
    schedule: dict[str, Any],
    model_output: Any,
    x0: Any,
    noise: Any,
    t: Any,
    prediction_type: str = "epsilon",
    min_snr_gamma: float | None = None,
) -> tuple[Any, Any]:
    """The denoiser's loss and its gradient with respect to the model output.

    With target = target_for(prediction_type, x0, noise, schedule, t),
    B = batch and D = latent size:

        loss = (1 / (B D)) sum_b sum_j w_b (out_bj - target_bj)^2

    Formula:
        dout_bj = 2 w_b (out_bj - target_bj) / (B D)

    w_b = 1 without weighting (plain MSE, Ho et al., 2020), else the
    min-SNR-gamma weight of ``min_snr_weights`` (gamma = 5 in the paper).

    model_output, x0, noise: [batch, latent]; t: [batch] ints.
    Returns (loss: 0-d array on the device, dout: [batch, latent]); no host
    sync, so it can run inside a training step.
    """
    check_prediction_type(prediction_type)
    t = check_diffusion_arrays(schedule, t, x0=x0, model_output=model_output, noise=noise)
    if min_snr_gamma is not None:
        min_snr_gamma = check_float(min_snr_gamma, "min_snr_gamma", low=0.0, low_open=True)

    ### BEGIN SOLUTION diffusion_loss
    target = _target(prediction_type, x0, noise, schedule, t)  # [batch, latent]
    diff = model_output - target  # [batch, latent]
    scale = 2.0 / diff.size
    if min_snr_gamma is None:
        loss = (diff * diff).mean()
        dout = diff * scale
        return loss, dout
    w = _min_snr_weights(schedule, t, prediction_type, min_snr_gamma).reshape(-1, 1)  # [batch, 1] or [1, 1]
    wdiff = w * diff  # [batch, latent]
    loss = (wdiff * diff).mean()
    dout = wdiff * scale
    return loss, dout
    ### END SOLUTION
