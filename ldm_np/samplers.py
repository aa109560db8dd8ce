"""Sampling: walk from noise x_T back to a sample x_0 with DDPM or DDIM steps.

Both samplers first turn the model's output into x0_hat (and eps_hat) at the
current step (see ``diffusion.py``), then move to the previous step:

    DDPM (Ho et al., 2020), every trained step t -> t - 1:
        mu = coef1 x0_hat + coef2 x_t,  x_{t-1} = mu + sigma_t z   (no z at t = 0)
    DDIM (Song et al., 2021), any decreasing list of steps t -> t_prev:
        x_prev = sqrt(ab_prev) x0_hat + sqrt(1 - ab_prev - sigma^2) eps_hat + sigma z

The conventions that trip everyone (spacing of the inference timesteps, which
step comes next, the alpha used after the last step, clipping) are spelled
out in docs/conventions.md, with the matching diffusers options.

Finite inputs give finite outputs at every legal (t, t_prev), final alpha,
eta, prediction type and dtype (tests/test_sampler_domain.py); a NaN in the
inputs or the model's output propagates to the sample without an error
(README, "NaN and infinity"). Only ``sample``'s ``x_T`` is checked for it.

Inside the sampling loop nothing is read back to the host: timesteps are
Python ints from a host list, coefficients are 0-d device arrays, and the
model's output is checked for shape and dtype only (a finiteness check would
wait for the GPU at every step).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from .backend import get_array_module, to_numpy
from .diffusion import PREDICTION_TYPES, _eps_from, _x0_from, gather
from .validation import (
    check_array,
    check_callable,
    check_choice,
    check_diffusion_arrays,
    check_float,
    check_int,
    check_rng,
    check_samples,
    check_schedule,
    check_t,
)

SAMPLERS = ("ddpm", "ddim")
SPACINGS = ("leading", "trailing", "linspace")
VARIANCE_TYPES = ("fixed_small", "fixed_large")

# The posterior variance is 0 at t = 0; its log (and so its square root, taken
# as exp(0.5 log var)) is floored here, as diffusers' DDPMScheduler does.
POSTERIOR_VARIANCE_FLOOR = 1e-20


# --------------------------------------------------------------------------
# Which timesteps to visit
# --------------------------------------------------------------------------


def inference_timesteps(
    num_train_steps: int, num_inference_steps: int, spacing: str = "leading", steps_offset: int = 0
) -> np.ndarray:
    """The N timesteps a sampler visits, in decreasing order, as an int64 NumPy array [N].

    With T = num_train_steps and N = num_inference_steps (Lin et al., 2023,
    "Common Diffusion Noise Schedules and Sample Steps are Flawed", Table 2,
    written 0-based as diffusers' DDIMScheduler computes them):

        leading:  arange(0, N) * (T // N) + steps_offset   (DDIM, Stable Diffusion)
        trailing: round(arange(T, 0, -T / N)) - 1          (always starts at T - 1)
        linspace: round(linspace(0, T - 1, N))             (iDDPM)

    For T = 1000, N = 10: leading 900, 800, ..., 0; trailing 999, 899, ..., 99;
    linspace 999, 888, ..., 0. Only "trailing" and "linspace" start at the
    last trained step; "leading" starts T - T // N + offset, where some signal
    is left.

    ``steps_offset`` applies to "leading" only (so in diffusers); ldm_np
    refuses a non-zero offset with the other spacings instead of ignoring it.
    NumPy's float ``arange`` in the trailing formula sometimes returns N + 1
    values (T = 1000: N = 61, 103, 121, ...), the extra one rounding to -1;
    only the first N are kept.

    The step after ``timesteps[i]`` is ``timesteps[i + 1]`` and after the
    last one comes -1 (``previous_timesteps``), never ``t - T // N``.
    """
    T = check_int(num_train_steps, "num_train_steps")
    N = check_int(num_inference_steps, "num_inference_steps")
    steps_offset = check_int(steps_offset, "steps_offset", minimum=0)
    if N > T:
        raise ValueError(
            f"num_inference_steps ({N}) must be <= num_train_steps ({T}): there are only {T} trained steps"
        )
    check_choice(spacing, "spacing", SPACINGS)
    if steps_offset and spacing != "leading":
        raise ValueError(
            f"steps_offset applies to spacing='leading' only (diffusers ignores it for {spacing!r}); got {steps_offset}"
        )
    if spacing == "leading":
        timesteps = np.arange(0, N, dtype=np.int64)[::-1] * (T // N) + steps_offset
        if timesteps[0] >= T:
            raise ValueError(
                f"steps_offset={steps_offset} pushes the first timestep to {timesteps[0]}, "
                f"past the last trained step {T - 1}; lower num_inference_steps or steps_offset"
            )
    elif spacing == "trailing":
        timesteps = np.round(np.arange(T, 0, -T / N))[:N].astype(np.int64) - 1
    else:
        timesteps = np.round(np.linspace(0, T - 1, N))[::-1].astype(np.int64)
    return np.ascontiguousarray(timesteps)


def previous_timesteps(timesteps: Any) -> np.ndarray:
    """The step each timestep moves to: the next entry of the list, then -1.

    [999, 899, ..., 99] -> [899, 799, ..., 99, -1]. (diffusers' DDIMScheduler
    uses t - T // N instead, which agrees only for "leading" spacing; see
    docs/conventions.md.)
    """
    if isinstance(timesteps, list | tuple):
        timesteps = np.asarray(timesteps)
    if not (isinstance(timesteps, np.ndarray) and timesteps.dtype.kind in "iu" and timesteps.ndim == 1):
        raise TypeError(
            f"timesteps must be a 1-D list or NumPy array of ints, got {type(timesteps).__name__}"
        )
    timesteps = timesteps.astype(np.int64)
    return np.append(timesteps[1:], np.int64(-1))


# --------------------------------------------------------------------------
# One step
# --------------------------------------------------------------------------


def _check_step(schedule, model_output, t, x_t, noise, prediction_type, clip_sample, *, noise_needed):
    """The checks ddpm_step and ddim_step share; returns (t, clip_sample). Shapes and dtypes only: no sync."""
    check_choice(prediction_type, "prediction_type", PREDICTION_TYPES)
    t = check_diffusion_arrays(schedule, t, x_t=x_t, model_output=model_output)
    if noise is not None or noise_needed:
        if noise is None:
            raise ValueError(f"noise is required here: pass noise of shape {list(x_t.shape)}")
        check_array(noise, "noise", shape=tuple(x_t.shape), dtype=x_t.dtype, finite=False)
    return t, None if clip_sample is None else check_float(clip_sample, "clip_sample", low=0.0, low_open=True)


def _x0_hat(schedule, model_output, t, x_t, prediction_type, clip_sample):
    """x0_hat from the model output, clipped to [-c, c] when clip_sample = c."""
    x0_hat = _x0_from(schedule, model_output, t, x_t, prediction_type)  # [batch, latent]
    if clip_sample is not None:
        xp = get_array_module(x0_hat)
        x0_hat = xp.clip(x0_hat, -clip_sample, clip_sample)  # Python floats: dtype kept
    return x0_hat


def ddpm_step(
    schedule: dict[str, Any],
    model_output: Any,
    t: Any,
    x_t: Any,
    noise: Any,
    variance_type: str = "fixed_small",
    prediction_type: str = "epsilon",
    clip_sample: float | None = None,
) -> tuple[Any, Any]:
    """One ancestral DDPM step x_t -> x_{t-1}; returns (x_prev, x0_hat).

    The mean of the posterior q(x_{t-1} | x_t, x_0) with x_0 = x0_hat
    (Ho et al., 2020, eq. 7):

        mu = coef1 x0_hat + coef2 x_t
        coef1 = sqrt(ab_{t-1}) beta_t / (1 - ab_t)
        coef2 = sqrt(alpha_t) (1 - ab_{t-1}) / (1 - ab_t)
        x_{t-1} = mu + sigma_t noise,  and x_{t-1} = mu at t = 0

    sigma_t^2 is the posterior variance beta_t (1 - ab_{t-1}) / (1 - ab_t)
    floored at 1e-20 ("fixed_small") or beta_t ("fixed_large").

    model_output, x_t, noise: [batch, latent]. t: a Python int (every row at
    the same step; ``noise`` may be None at t = 0) or an int array [batch]
    (rows at t = 0 get no noise through a 0/1 mask, not an ``if``).
    clip_sample: None (latents are not confined to [-1, 1]) or c > 0 to clip
    x0_hat to [-c, c].
    """
    check_choice(variance_type, "variance_type", VARIANCE_TYPES)
    needed = not (isinstance(t, numbers.Integral) and t == 0)  # only the last step adds no noise
    t, clip_sample = _check_step(
        schedule, model_output, t, x_t, noise, prediction_type, clip_sample, noise_needed=needed
    )
    x_prev, x0_hat, _ = _ddpm_update(
        schedule, model_output, t, x_t, noise, variance_type, prediction_type, clip_sample
    )
    return x_prev, x0_hat


def _ddpm_update(schedule, model_output, t, x_t, noise, variance_type, prediction_type, clip_sample):
    """Unchecked ``ddpm_step``; also returns sigma (0 where no noise was added).

    The posterior mean, with ``gather(schedule[name], t)`` giving each
    coefficient as [batch, 1] (array t) or 0-d (int t):

        mu = coef1 x0_hat + coef2 x_t                     [batch, latent]
        coef1 = sqrt(ab_{t-1}) beta_t / (1 - ab_t)        "alphas_cumprod_prev", "betas"
        coef2 = sqrt(alpha_t) (1 - ab_{t-1}) / (1 - ab_t) "alphas"

    Read 1 - ab_t as sqrt_one_minus_alphas_cumprod[t] ** 2, and (1 - ab_{t-1}) /
    (1 - ab_t) as posterior_variance[t] / beta_t: the schedule computed those in
    float64, while 1 - ab in float32 keeps about three digits near t = 0.
    """
    xp = get_array_module(x_t)
    x0_hat = _x0_hat(schedule, model_output, t, x_t, prediction_type, clip_sample)  # [batch, latent]
    beta = gather(schedule["betas"], t)  # [batch, 1] or 0-d
    ### BEGIN SOLUTION ddpm_posterior_mean
    s = gather(schedule["sqrt_one_minus_alphas_cumprod"], t)
    coef1 = xp.sqrt(gather(schedule["alphas_cumprod_prev"], t)) * beta / (s * s)
    # (1 - ab_{t-1}) / (1 - ab_t) = posterior_variance / beta_t: both were computed
    # in float64, while 1 - ab_{t-1} in float32 keeps ~3 digits near t = 0.
    coef2 = xp.sqrt(gather(schedule["alphas"], t)) * gather(schedule["posterior_variance"], t) / beta
    mu = coef1 * x0_hat + coef2 * x_t  # [batch, latent]
    ### END SOLUTION

    if variance_type == "fixed_small":
        # The floor in the model dtype: NumPy 1.x promotes a float32 scalar (int t)
        # next to a Python float to float64.
        floor = xp.asarray(POSTERIOR_VARIANCE_FLOOR, dtype=x_t.dtype)
        sigma = xp.sqrt(xp.maximum(gather(schedule["posterior_variance"], t), floor))
    else:
        sigma = xp.sqrt(beta)
    if isinstance(t, numbers.Integral):
        if t == 0:  # a host int: a plain if is free
            return mu, x0_hat, xp.zeros((), dtype=x_t.dtype)
        return mu + sigma * noise, x0_hat, sigma
    # Rows at t = 0 take no noise. The mask is cast to the model dtype: a bool
    # or int mask times float32 would otherwise promote to float64.
    sigma = (t > 0).astype(x_t.dtype)[:, None] * sigma  # [batch, 1]
    return mu + sigma * noise, x0_hat, sigma


def ddim_step(
    schedule: dict[str, Any],
    model_output: Any,
    t: Any,
    t_prev: Any,
    x_t: Any,
    eta: float = 0.0,
    noise: Any = None,
    prediction_type: str = "epsilon",
    final_alpha_cumprod: float = 1.0,
    clip_sample: float | None = None,
) -> tuple[Any, Any]:
    """One DDIM step x_t -> x_{t_prev}; returns (x_prev, x0_hat).

    Song et al. (2021), eq. 12 and 16:

        ab_prev = alphas_cumprod[t_prev] if t_prev >= 0 else final_alpha_cumprod
        sigma   = eta sqrt((1 - ab_prev) / (1 - ab_t)) sqrt(1 - ab_t / ab_prev)
        eps_hat = (x_t - sqrt(ab_t) x0_hat) / sqrt(1 - ab_t)
        x_prev  = sqrt(ab_prev) x0_hat + sqrt(1 - ab_prev - sigma^2) eps_hat + sigma noise

    eps_hat is always recomputed from x0_hat, for every prediction type, so
    the two stay consistent (also after clipping). eta = 0 is deterministic;
    eta = 1 on consecutive steps is exactly the DDPM step with "fixed_small".

    model_output, x_t, noise: [batch, latent]; t, t_prev: ints (t_prev = -1
    for the final step, t_prev < t) or int arrays [batch]. eta in [0, 1];
    eta > 0 needs ``noise``. final_alpha_cumprod: the alpha_bar "after" the
    last step, 1.0 (diffusers' set_alpha_to_one=True) or alphas_cumprod[0].
    """
    eta = check_float(eta, "eta", low=0.0, high=1.0)
    t, clip_sample = _check_step(
        schedule, model_output, t, x_t, noise, prediction_type, clip_sample, noise_needed=eta > 0
    )
    t_prev = check_t(t_prev, "t_prev", batch=x_t.shape[0], num_steps=schedule["num_steps"], low=-1)
    final_alpha_cumprod = check_float(
        final_alpha_cumprod, "final_alpha_cumprod", low=0.0, high=1.0, low_open=True
    )
    # Host values only (ints, NumPy arrays): comparing CuPy arrays would sync.
    if get_array_module(t, t_prev) is np and np.any(np.asarray(t_prev) >= np.asarray(t)):
        raise ValueError(f"t_prev must be < t (DDIM steps go towards t = 0), got t={t}, t_prev={t_prev}")
    x_prev, x0_hat, _, _ = _ddim_update(
        schedule, model_output, t, t_prev, x_t, eta, noise, prediction_type, final_alpha_cumprod, clip_sample
    )
    return x_prev, x0_hat


def _alpha_bar_at(
    schedule: dict[str, Any], t: Any, final_alpha_cumprod: float, dtype: Any
) -> tuple[Any, Any]:
    """(ab, 1 - ab) at t, where t = -1 means final_alpha_cumprod; ints or arrays [batch]."""
    xp = get_array_module(schedule["alphas_cumprod"])
    final = xp.asarray(final_alpha_cumprod, dtype=dtype)
    # 1 - final in Python (float64), then cast: in float32, 1 - 0.9999 keeps ~3 digits.
    # final = alphas_cumprod[0] (diffusers' set_alpha_to_one=False) is ab_0 rounded
    # to the dtype, and 1 - that rounded value is off by up to 0.15% (cosine,
    # float32): take the schedule's accurate 1 - ab_0 there, so the last step
    # with eta = 0 returns x_t. A device-side where: no host sync.
    s0 = schedule["sqrt_one_minus_alphas_cumprod"][0]
    final_one_minus = xp.where(
        final == schedule["alphas_cumprod"][0], s0 * s0, xp.asarray(1.0 - final_alpha_cumprod, dtype=dtype)
    )
    if isinstance(t, numbers.Integral):
        if t < 0:
            return final, final_one_minus
        s = schedule["sqrt_one_minus_alphas_cumprod"][t]
        return schedule["alphas_cumprod"][t], s * s
    valid = t >= 0  # [batch]
    idx = xp.maximum(t, 0)  # a safe index where t = -1; xp.where picks `final` there
    s = schedule["sqrt_one_minus_alphas_cumprod"][idx]  # [batch]
    ab = xp.where(valid, schedule["alphas_cumprod"][idx], final)[:, None]  # [batch, 1]
    one_minus = xp.where(valid, s * s, final_one_minus)[:, None]  # [batch, 1]
    return ab, one_minus


def _ddim_update(
    schedule, model_output, t, t_prev, x_t, eta, noise, prediction_type, final_alpha_cumprod, clip_sample
):
    """Unchecked ``ddim_step``; returns (x_prev, x0_hat, sigma, ab_prev), the last two for the trace.

    The update is the one in ``ddim_step``'s docstring, with eps_hat recomputed
    from x0_hat. ``_alpha_bar_at(schedule, t, final_alpha_cumprod, dtype)`` gives
    (ab, 1 - ab) at a step, t = -1 included, as [batch, 1] or 0-d. In the
    stable forms, with gap = ab_prev - ab_t (>= 0; computed as
    (1 - ab_t) - (1 - ab_prev) where the alpha_bars are near 1) and
    ratio = (1 - ab_prev) / (ab_prev (1 - ab_t)):

        sigma^2            = eta^2 ratio gap
        1 - ab_prev - sigma^2 = ratio (ab_t (1 - ab_prev) + (1 - eta^2) gap)

    Take no noise term when eta = 0 (sigma is then a 0-d zero, the direction
    sqrt(1 - ab_prev); ``noise`` may be None).
    """
    xp = get_array_module(x_t)
    x0_hat = _x0_hat(schedule, model_output, t, x_t, prediction_type, clip_sample)  # [batch, latent]
    # eta in the model dtype: NumPy 1.x promotes a Python float times a float32
    # scalar (int t) to float64.
    eta = x_t.dtype.type(eta)
    ### BEGIN SOLUTION ddim_step
    ab_t, one_minus_t = _alpha_bar_at(schedule, t, final_alpha_cumprod, x_t.dtype)
    ab_prev, one_minus_prev = _alpha_bar_at(schedule, t_prev, final_alpha_cumprod, x_t.dtype)
    eps_hat = (x_t - xp.sqrt(ab_t) * x0_hat) / xp.sqrt(one_minus_t)  # [batch, latent]
    if eta > 0:
        # gap = ab_prev - ab_t = (1 - ab_t) - (1 - ab_prev). Each form subtracts two
        # rounded numbers and inherits the rounding of the larger: take the ab form
        # late (ab small), the (1 - ab) form early (ab near 1). The gap is >= 0, but
        # where the two alpha_bars are equal (the last step with final_alpha_cumprod
        # = alphas_cumprod[0]) rounding can leave it a hair below 0: clamp.
        gap = xp.where(ab_prev < one_minus_t, ab_prev - ab_t, one_minus_t - one_minus_prev)
        gap = xp.maximum(gap, xp.zeros((), dtype=x_t.dtype))  # a zero of the model dtype: no promotion
        ratio = one_minus_prev / (ab_prev * one_minus_t)
        sigma = eta * xp.sqrt(ratio * gap)  # = eta sqrt((1 - ab_prev) / (1 - ab_t)) sqrt(1 - ab_t / ab_prev)
        # 1 - ab_prev - sigma^2 = ratio (ab_t (1 - ab_prev) + (1 - eta^2) gap): a sum of
        # non-negative terms. The difference itself cancels to rounding noise when
        # sigma^2 is close to 1 - ab_prev (eta = 1 and ab_t << ab_prev).
        direction = xp.sqrt(ratio * (ab_t * one_minus_prev + (1 - eta * eta) * gap))
    else:
        sigma = xp.zeros((), dtype=x_t.dtype)
        direction = xp.sqrt(one_minus_prev)
    x_prev = xp.sqrt(ab_prev) * x0_hat + direction * eps_hat  # [batch, latent]
    if eta > 0:
        x_prev = x_prev + sigma * noise
    return x_prev, x0_hat, sigma, ab_prev
    ### END SOLUTION


# --------------------------------------------------------------------------
# A step, for reading
# --------------------------------------------------------------------------


def _summary(x: Any) -> str:
    """A scalar as a number; an array as its shape, mean and std (reads the device)."""
    if x is None:
        return "None"
    if isinstance(x, numbers.Number):
        return f"{x:.4g}"
    arr = to_numpy(x)
    if arr.size == 1:
        return f"{float(arr.reshape(-1)[0]):.4g}"
    shape = "x".join(str(n) for n in arr.shape)
    return f"<{shape} mean={float(arr.mean()):+.3f} std={float(arr.std()):.3f}>"


@dataclass
class StepTrace:
    """What one sampling step saw and did, for teaching and debugging.

    t -> t_prev (-1 after the last step); alpha_cumprod_t and
    alpha_cumprod_prev are ab at both ends; sigma the std of the noise added;
    model_output, x0_hat, x_prev: [batch, latent]. Values stay on the device
    until printed.
    """

    t: int
    t_prev: int
    alpha_cumprod_t: Any
    alpha_cumprod_prev: Any
    sigma: Any
    model_output: Any
    x0_hat: Any
    x_prev: Any

    def __repr__(self) -> str:
        return (
            f"StepTrace(t={self.t}, t_prev={self.t_prev}, "
            f"alpha_cumprod_t={_summary(self.alpha_cumprod_t)}, "
            f"alpha_cumprod_prev={_summary(self.alpha_cumprod_prev)}, sigma={_summary(self.sigma)}, "
            f"model_output={_summary(self.model_output)}, x0_hat={_summary(self.x0_hat)}, "
            f"x_prev={_summary(self.x_prev)})"
        )


# --------------------------------------------------------------------------
# The loops
# --------------------------------------------------------------------------


def _call_model(model: Callable, x: Any, t: int, xp: Any) -> Any:
    """model(x, t as an int64 array [batch] on x's device), its output checked for shape and dtype."""
    t_batch = xp.full(x.shape[0], t, dtype=xp.int64)  # [batch]
    out = model(x, t_batch)
    # Shape and dtype only: free. A finiteness check would sync every step.
    check_array(out, "model output", shape=tuple(x.shape), dtype=x.dtype, finite=False)
    return out


def sample(
    model: Callable[[Any, Any], Any],
    schedule: dict[str, Any],
    num_samples: int,
    *,
    sampler: str = "ddim",
    num_inference_steps: int = 50,
    eta: float = 0.0,
    spacing: str = "leading",
    steps_offset: int = 0,
    prediction_type: str = "epsilon",
    variance_type: str = "fixed_small",
    clip_sample: float | None = None,
    final_alpha_cumprod: float = 1.0,
    rng: Any,
    x_T: Any = None,
    shape: int | None = None,
    callback: Callable[[StepTrace], None] | None = None,
    return_trajectory: bool = False,
    progress: bool = False,
) -> Any:
    """Generate ``num_samples`` samples [num_samples, latent] by running the reverse process.

    model: any callable ``(x_t [batch, latent], t int64 [batch]) -> model_output``
    of ``prediction_type``, on the schedule's device and dtype (for a
    ``Denoiser``, pass the module itself or its ``forward``).

    sampler="ddim": ``num_inference_steps`` steps on ``inference_timesteps(T,
    N, spacing, steps_offset)``, each moving to the next listed step and the
    last to -1 (where ab = ``final_alpha_cumprod``); ``eta`` in [0, 1].
    sampler="ddpm": every trained step T-1, ..., 0 with ``variance_type``;
    ``num_inference_steps``, ``spacing``, ``steps_offset``, ``eta`` and
    ``final_alpha_cumprod`` are ignored (the DDPM posterior used here is
    exact only between consecutive steps).

    x_T: the starting noise [num_samples, latent]; if None it is drawn as
    ``rng.standard_normal((num_samples, shape))`` in the schedule's dtype, so
    ``shape`` (the latent size) is then required. ``rng`` (a NumPy Generator,
    or CuPy's for a GPU schedule) also draws the noise of each step; it must
    be passed, and may be None only when nothing random is drawn (DDIM with
    eta = 0 and x_T given: then the result is deterministic).

    callback(trace) is called after each step with a ``StepTrace``;
    return_trajectory=True returns ``(x_0, [StepTrace, ...])`` (it keeps every
    step's arrays: memory grows with the number of steps). progress=True shows
    a tqdm bar. clip_sample: None (default, latents are not in [-1, 1]) or c
    to clip x0_hat to [-c, c] at every step.
    """
    check_callable(model, "model", "model(x_t, t)")
    xp = get_array_module(check_schedule(schedule)["alphas_cumprod"])
    dt = schedule["alphas_cumprod"].dtype
    T = schedule["num_steps"]
    check_choice(sampler, "sampler", SAMPLERS), check_choice(spacing, "spacing", SPACINGS)
    check_choice(prediction_type, "prediction_type", PREDICTION_TYPES)
    check_choice(variance_type, "variance_type", VARIANCE_TYPES)
    num_samples = check_int(num_samples, "num_samples")
    eta = check_float(eta, "eta", low=0.0, high=1.0)
    final_alpha_cumprod = check_float(
        final_alpha_cumprod, "final_alpha_cumprod", low=0.0, high=1.0, low_open=True
    )
    clip_sample = (
        None if clip_sample is None else check_float(clip_sample, "clip_sample", low=0.0, low_open=True)
    )
    if callback is not None:
        check_callable(callback, "callback", "callback(trace)")
    if rng is not None:
        check_rng(rng)  # refused even where nothing is drawn
    if sampler == "ddim":
        timesteps = inference_timesteps(T, num_inference_steps, spacing, steps_offset).tolist()
        prevs = previous_timesteps(timesteps).tolist()
        draws_noise = eta > 0
    else:
        timesteps = list(range(T - 1, -1, -1))
        prevs = [t - 1 for t in timesteps]
        draws_noise = True

    if x_T is None:
        if shape is None:
            raise ValueError("shape (the latent size) is required when x_T is None")
        shape = check_int(shape, "shape")
    else:
        check_samples(x_T, "x_T", dt)
        # Finite too: one read of x_T before the loop, not one per step.
        check_array(x_T, "x_T", shape=(num_samples, x_T.shape[1]), dtype=dt)
        if shape is not None and check_int(shape, "shape") != x_T.shape[1]:
            raise ValueError(f"shape ({shape}) does not match x_T's latent size {x_T.shape[1]}")
        if get_array_module(x_T) is not xp:
            raise TypeError("x_T must be on the schedule's device (use ldm_np.to_device)")
    if (draws_noise or x_T is None) and rng is None:
        raise ValueError("rng is required: this call draws random numbers (no x_T, or noise is added)")

    x = rng.standard_normal((num_samples, shape), dtype=dt) if x_T is None else x_T  # [batch, latent]
    trajectory: list[StepTrace] = []
    keep = callback is not None or return_trajectory
    steps = tqdm(zip(timesteps, prevs, strict=True), total=len(timesteps), disable=not progress, desc=sampler)
    for t, t_prev in steps:
        out = _call_model(model, x, t, xp)  # [batch, latent]
        if sampler == "ddpm":
            noise = rng.standard_normal(x.shape, dtype=dt) if t > 0 else None
            x_prev, x0_hat, sigma = _ddpm_update(
                schedule, out, t, x, noise, variance_type, prediction_type, clip_sample
            )
            ab_prev = schedule["alphas_cumprod_prev"][t]
        else:
            noise = rng.standard_normal(x.shape, dtype=dt) if draws_noise else None
            x_prev, x0_hat, sigma, ab_prev = _ddim_update(
                schedule, out, t, t_prev, x, eta, noise, prediction_type, final_alpha_cumprod, clip_sample
            )
        if keep:
            trace = StepTrace(t, t_prev, schedule["alphas_cumprod"][t], ab_prev, sigma, out, x0_hat, x_prev)
            if callback is not None:
                callback(trace)
            if return_trajectory:
                trajectory.append(trace)
        x = x_prev
    return (x, trajectory) if return_trajectory else x


def ddim_invert(
    model: Callable[[Any, Any], Any],
    schedule: dict[str, Any],
    x0: Any,
    num_inference_steps: int = 50,
    *,
    spacing: str = "leading",
    steps_offset: int = 0,
    prediction_type: str = "epsilon",
    final_alpha_cumprod: float = 1.0,
    fixed_point_iterations: int = 0,
    progress: bool = False,
) -> Any:
    """Run deterministic DDIM (eta = 0) backwards: a sample x0 -> the noise x_T that DDIM maps to it.

    Visits the same timesteps as ``sample`` in increasing order, starting from
    t = -1 (ab = final_alpha_cumprod) and ending at the first listed step.
    Each move t -> t_next is the DDIM update with its two ends swapped,

        x0_hat = (x_t - sqrt(1 - ab_t) eps_hat) / sqrt(ab_t)
        x_next = sqrt(ab_next) x0_hat + sqrt(1 - ab_next) eps_hat.

    The sampler's step back from t_next uses eps_hat = model(x_next, t_next),
    but x_next is what we are computing. The usual approximation (Song et al.,
    2021, sec. 4.3; Mokady et al., 2023) asks the model at the point we move
    from, eps_hat = model(x_t, t_next); its error shrinks like 1 / N, so the
    round trip ``sample(..., x_T=ddim_invert(...))`` recovers x0 only
    approximately. ``fixed_point_iterations`` = k > 0 then re-evaluates
    eps_hat at the new x_next k times (k + 1 model calls per step), which
    converges to the exact inverse of the discrete sampler wherever the model
    is smooth enough.

    x0: [batch, latent] in the schedule's dtype -> x_T: [batch, latent].
    """
    check_callable(model, "model", "model(x_t, t)")
    xp = get_array_module(check_schedule(schedule)["alphas_cumprod"])
    check_choice(prediction_type, "prediction_type", PREDICTION_TYPES)
    check_samples(x0, "x0", schedule["alphas_cumprod"].dtype)
    final_alpha_cumprod = check_float(
        final_alpha_cumprod, "final_alpha_cumprod", low=0.0, high=1.0, low_open=True
    )
    fixed_point_iterations = check_int(fixed_point_iterations, "fixed_point_iterations", minimum=0)
    timesteps = inference_timesteps(schedule["num_steps"], num_inference_steps, spacing, steps_offset)
    timesteps = timesteps[::-1].tolist()  # increasing: towards the noise

    x = x0  # [batch, latent]
    t_cur = -1
    for t_next in tqdm(timesteps, disable=not progress, desc="ddim inversion"):
        ab_cur, one_minus_cur = _alpha_bar_at(schedule, t_cur, final_alpha_cumprod, x.dtype)
        a_next = schedule["sqrt_alphas_cumprod"][t_next]
        s_next = schedule["sqrt_one_minus_alphas_cumprod"][t_next]
        x_next = x  # first guess: the point we move from
        for _ in range(fixed_point_iterations + 1):
            out = _call_model(model, x_next, t_next, xp)
            eps_hat = _eps_from(schedule, out, t_next, x_next, prediction_type)  # [batch, latent]
            x0_hat = (x - xp.sqrt(one_minus_cur) * eps_hat) / xp.sqrt(ab_cur)  # [batch, latent]
            x_next = a_next * x0_hat + s_next * eps_hat  # [batch, latent]
        x = x_next
        t_cur = t_next
    return x


__all__ = [
    "SAMPLERS",
    "SPACINGS",
    "VARIANCE_TYPES",
    "StepTrace",
    "ddim_invert",
    "ddim_step",
    "ddpm_step",
    "inference_timesteps",
    "previous_timesteps",
    "sample",
]
