"""Guidance: steering a trained sampler towards a class, or towards known pixels.

Classifier-free guidance (Ho & Salimans, 2022). One network, trained with its
labels dropped to a "null" label 10% of the time (``LDMConfig.p_uncond``),
predicts both the conditional output c = f(z_t, t, y) and the unconditional
one u = f(z_t, t, null). Sampling uses

    guided = u + w (c - u)                                   ``guide``

w = 0 is the unconditional model, w = 1 the conditional one, w > 1 pushes
past it, away from what the unconditional model expects: sharper, more
recognisable, less varied samples.

Guidance rescale (Lin et al., 2023, "Common Diffusion Noise Schedules and
Sample Steps are Flawed", sec. 3.4, Algorithm 2). Large w inflates the
guided prediction's spread; rescaling it to the conditional prediction's
per-sample standard deviation and blending by phi undoes that:

    rescaled = guided * std(c) / std(guided)                 ``rescale_guidance``
    out      = phi rescaled + (1 - phi) guided

Reconstruction guidance through the decoder (inpainting in latent space).
The known part of a data vector (``x_known`` where ``mask`` = 1) defines

    L(z) = 0.5 sum(mask * (decode(z / s) - x_known)^2)       ``reconstruction_loss``

on the scaled latent z (s = the pipeline's scale factor), in the VAE's
standardised data units. Its gradient g = dL/dz reaches z through the
decoder's hand-written backward. At every sampler step the prediction
x0_hat takes one step down L before the step is taken:

    x0_hat <- x0_hat - lambda_i g_i                          ``reconstruction_guidance_fn``

This is the reconstruction guidance of Ho et al. (2022, "Video Diffusion
Models", eq. 8), x~ = x^ - (w_r a_t / 2) grad_{z_t} ||x^a - x^a(z_t)||^2,
with the denoiser's Jacobian dx0_hat/dz_t taken as I / a_t (eps_hat held
fixed): then the a_t cancel and the weight acts on dL/dx0_hat directly.
Chung et al. (2023, "Diffusion Posterior Sampling") keep that Jacobian and
pay a backward pass through the denoiser at every step; here only the
decoder is differentiated.

The step length. A fixed weight is stable only below 2 / (the curvature of
L), which depends on the decoder, the scale factor and how many pixels are
known (on a small digits model a fixed weight of 1 worked and 10 diverged to
NaN). So the weight is set per sample from the Gauss-Newton curvature along
the gradient, c_i = ||mask J d_i||^2 with d_i = g_i / ||g_i|| and J the
decoder's Jacobian (J d by a central difference: two decoder forwards):

    x0_hat_i <- x0_hat_i - strength (||g_i|| / c_i) d_i

strength = 1 is the exact minimum of the linearised loss along -g_i (the
Cauchy step of Nocedal & Wright, "Numerical Optimization", 2nd ed., sec.
4.1, without a trust region), any strength in (0, 2) lowers the linearised
loss, and the same strength means the same thing for every model.

The step is long at high noise (x0_hat moves by tens of latent units at the
first DDIM step on the digits) but DDIM keeps only a sliver of it there:
x_prev moves by (sqrt(ab_prev) - sqrt(1 - ab_prev) a_t / s_t) times the
change of x0_hat, 0.0017 at the first step (t = 980 -> 960). A trust region
in x0_hat's units would therefore cut exactly the early steps that shape the
sample (measured: a cap of 3 latent units raised the error on the known half
by half), so there is none. The step trusts the decoder's linearisation; on the trained
digits models every strength from 0.1 to 4 stayed finite (a fixed weight
without the curvature diverged at 10).
"""

from __future__ import annotations

import numbers
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .backend import default_rng, get_array_module, to_device, to_numpy
from .diffusion import PREDICTION_TYPES, _target, _x0_from, gather
from .samplers import sample as run_sampler
from .validation import (
    check_array,
    check_callable,
    check_choice,
    check_float,
    check_int,
    check_labels,
    check_schedule,
)

# The multiple of the Gauss-Newton line step taken at each sampler step
# (1 = the minimum of the linearised loss along the gradient). Measured on the
# digits demo model (200 digits, top half known; rms error on the known half,
# data units, VAE reconstruction 0.066): 0.36 unguided, 0.13 at 1, 0.11 at
# 1.5 and 2, 0.18 at 4 (overshooting).
DEFAULT_INPAINT_STRENGTH = 1.5


# --------------------------------------------------------------------------
# Classifier-free guidance
# --------------------------------------------------------------------------


# The stream of the classes ``draw_classes`` draws, apart from the sampler's noise of the same seed.
CLASS_STREAM = 1


def draw_classes(labels: Any, n: int, seed: int = 0) -> np.ndarray:
    """n classes drawn from the frequencies of ``labels``: y_i ~ Categorical(count_k / rows).

    A class-conditional model samples the data's own distribution,
    p(x) = sum_k p(k) p(x | k), when each sample's class k is drawn with the
    training rows' frequencies p(k) and the model samples it at guidance
    w = 1 (the conditional prediction itself).
    labels: the training rows' classes, ints [rows] >= 0 (NumPy). Returns int64 [n].
    """
    labels = check_labels(labels, "labels", high=np.iinfo(np.int64).max, xp=np)
    n, seed = check_int(n, "n"), check_int(seed, "seed", minimum=0)
    counts = np.bincount(labels)  # [classes]
    rng = np.random.default_rng([CLASS_STREAM, seed])
    return rng.choice(counts.shape[0], size=n, p=counts / counts.sum()).astype(np.int64)


def guide(cond: Any, uncond: Any, w: float) -> Any:
    """Classifier-free guidance: uncond + w (cond - uncond).

    cond, uncond: [batch, latent], any prediction type; w: a Python float
    (a NumPy float64 scalar would turn float32 arrays into float64).
    w = 0 returns ``uncond`` exactly.
    """
    ### BEGIN SOLUTION guide
    return uncond + float(w) * (cond - uncond)  # [batch, latent]
    ### END SOLUTION


def rescale_guidance(guided: Any, cond: Any, phi: float) -> Any:
    """Guidance rescale (Lin et al., 2023, Algorithm 2): blend towards std(cond).

        rescaled = guided * std(cond) / std(guided)      (std per sample, over the latent)
        out      = phi rescaled + (1 - phi) guided

    guided, cond: [batch, latent]; phi in [0, 1]. phi = 0 returns ``guided``
    itself; phi = 1 gives every row the standard deviation of its ``cond``
    row. A row of ``guided`` with zero spread is left as it is.
    """
    phi = check_float(phi, "phi", low=0.0, high=1.0)
    check_array(guided, "guided", shape=(None, None), finite=False)
    check_array(cond, "cond", shape=tuple(guided.shape), dtype=guided.dtype, finite=False)
    ### BEGIN SOLUTION rescale_guidance
    if phi == 0.0:
        return guided
    xp = get_array_module(guided, cond)
    std_cond = cond.std(axis=1, keepdims=True)  # [batch, 1]
    std_guided = guided.std(axis=1, keepdims=True)  # [batch, 1]
    spread = std_guided > 0
    factor = xp.where(spread, std_cond / xp.where(spread, std_guided, 1.0), 1.0)  # [batch, 1]
    factor = (phi * factor + (1.0 - phi)).astype(guided.dtype)
    return guided * factor  # [batch, latent]
    ### END SOLUTION


def _null_label(model: Any, schedule: dict[str, Any]) -> int:
    """The model's null label, after checking it is class-conditional and in the schedule's dtype."""
    null = getattr(model, "null_label", None)
    if not isinstance(null, numbers.Integral):
        raise ValueError(
            "model must be class-conditional for classifier-free guidance (num_classes set); "
            f"this {type(model).__name__} has no null label"
        )
    dtype = np.dtype(getattr(model, "dtype", schedule["alphas_cumprod"].dtype))
    if dtype != schedule["alphas_cumprod"].dtype:
        raise TypeError(f"the model is {dtype.name} but the schedule is {schedule['alphas_cumprod'].dtype}")
    return int(null)


def classifier_free_guidance_fn(
    model: Any,
    labels: Any,
    guidance_scale: float,
    *,
    prediction_type: str,
    schedule: dict[str, Any],
    guidance_rescale: float = 0.0,
) -> Callable[[Any, Any], Any]:
    """A sampler's model callable (z_t, t) -> guided output, for a batch of len(labels) rows.

    model: a class-conditional ``Denoiser`` (or any object with
    ``forward(z_t, t, labels)`` and an int ``null_label``). labels: int
    array [B] on the model's device, each a class or the null label.
    guidance_scale: w >= 0. guidance_rescale: phi in [0, 1] (0 = off).

    Each call runs one forward pass of 2B rows, the B conditional rows with
    ``labels`` and the same B latents again with the null label, and returns
    ``guide(cond, uncond, w)`` (then ``rescale_guidance`` when phi > 0). With
    w = 1 (and w = 0 without rescale) only the half that is needed runs, so
    the result is exactly the conditional (unconditional) prediction.

    Why guiding the raw output is right for every prediction type: for fixed
    z_t and t, each conversion between epsilon, sample and v (and to eps_hat
    or x0_hat) is affine in the output, out -> alpha out + beta z_t, with the
    same alpha, beta for both halves. An affine map with weights that sum to
    one commutes with u + w (c - u): g(u) + w (g(c) - g(u)) = g(u + w (c - u)).
    So guiding epsilon, v or x0 gives the same sample. (The rescale is not
    affine: like Lin et al. and diffusers, it acts on the model's own output,
    v in the paper.) ``prediction_type`` and ``schedule`` are checked against
    each other and the model, but the guidance itself needs neither.
    """
    check_choice(prediction_type, "prediction_type", PREDICTION_TYPES)
    w = check_float(guidance_scale, "guidance_scale", low=0.0)
    phi = check_float(guidance_rescale, "guidance_rescale", low=0.0, high=1.0)
    null = _null_label(model, check_schedule(schedule))
    xp = get_array_module(schedule["alphas_cumprod"])
    labels = check_labels(labels, "labels", high=null, xp=xp)  # null = the null label
    B = labels.shape[0]
    labels = labels.astype(xp.int64)
    nulls = xp.full(B, null, dtype=xp.int64)  # [B]
    both = xp.concatenate([labels, nulls])  # [2B]: conditional rows, then unconditional rows

    def guided(z_t: Any, t: Any) -> Any:
        if z_t.shape[0] != B:
            raise ValueError(f"this guidance function was built for {B} rows, got z_t of {z_t.shape[0]}")
        if w == 1.0:
            return model.forward(z_t, t, labels)  # exactly the conditional prediction
        if w == 0.0 and phi == 0.0:
            return model.forward(z_t, t, nulls)  # exactly the unconditional prediction
        t2 = t if isinstance(t, numbers.Integral) else xp.concatenate([t, t])  # [2B]
        out = model.forward(xp.concatenate([z_t, z_t]), t2, both)  # [2B, latent]
        cond, uncond = out[:B], out[B:]
        return rescale_guidance(guide(cond, uncond, w), cond, phi)  # [B, latent]

    return guided


# --------------------------------------------------------------------------
# Reconstruction guidance through the decoder
# --------------------------------------------------------------------------


def _check_decoder(decoder: Any) -> None:
    if not all(hasattr(decoder, a) for a in ("forward", "backward", "input_size", "latent_size")):
        raise TypeError(f"decoder must be an ldm_np Decoder, got {type(decoder).__name__}")


def reconstruction_loss(
    decoder: Any, z: Any, x_known_std: Any, mask: Any, scale_factor: float
) -> tuple[Any, Any]:
    """How far the decoded latents are from the known pixels, and its gradient.

        x_hat = decoder(z / s)                       [n, input]
        L     = 0.5 sum(mask (x_hat - x_known)^2)    a 0-d array (no host sync)
        dz    = decoder.backward(mask (x_hat - x_known)) / s    [n, latent]

    z: scaled latents [n, latent]; x_known_std: [n, input] in the VAE's
    standardised units (``LatentDiffusion.standardize``); mask: [n, input]
    of 0/1 (any non-negative weights work) in the model dtype; s: the
    pipeline's ``scale_factor``. The sum runs over every row, so dz[i]
    depends on row i alone. Overwrites ``decoder.grads`` (the decoder's
    weights are not changed).
    """
    _check_decoder(decoder)
    n = check_array(z, "z", shape=(None, decoder.latent_size), dtype=decoder.dtype, finite=False).shape[0]
    scale_factor = check_float(scale_factor, "scale_factor", low=0.0, low_open=True)
    check_array(x_known_std, "x_known_std", shape=(n, decoder.input_size), dtype=z.dtype, finite=False)
    check_array(mask, "mask", shape=(n, decoder.input_size), dtype=z.dtype, finite=False)
    inv_s = 1.0 / float(scale_factor)
    x_hat = decoder.forward(z * inv_s)  # [n, input]
    diff = x_hat - x_known_std  # [n, input]
    dx_hat = mask * diff  # [n, input]: dL/dx_hat
    loss = 0.5 * (dx_hat * diff).sum()
    dz = decoder.backward(dx_hat) * inv_s  # [n, latent]
    return loss, dz


def curvature_along(
    decoder: Any, z: Any, direction: Any, mask: Any, scale_factor: float, h: float = 1e-2
) -> Any:
    """Gauss-Newton curvature of L along unit directions: c_i = ||mask_i (J d_i)||^2, [n, 1].

    J d_i, the change of decoder(z_i / s) along d_i, is a central difference
    with step h in the scaled latent space (unit variance, so 1e-2 is small
    there, and its rounding error in float32 is about 1e-5 relative).
    z, direction: [n, latent]; mask: [n, input]. Leaves no decoder cache.
    """
    inv_s = 1.0 / float(scale_factor)
    plus = decoder.forward((z + h * direction) * inv_s)  # [n, input]
    minus = decoder.forward((z - h * direction) * inv_s)  # [n, input]
    decoder.clear_cache()
    jd = (plus - minus) * (1.0 / (2.0 * h)) * mask  # [n, input]
    return (jd * jd).sum(axis=1, keepdims=True)  # [n, 1]


def reconstruction_guidance_fn(
    model_fn: Callable[[Any, Any], Any],
    decoder: Any,
    x_known_std: Any,
    mask: Any,
    scale_factor: float,
    strength: float,
    *,
    prediction_type: str,
    schedule: dict[str, Any],
) -> Callable[[Any, Any], Any]:
    """Wrap a sampler's model callable so that every x0_hat takes a step down L.

        out     = model_fn(z_t, t)
        x0_hat  = x0 from out (diffusion._x0_from)
        g       = dL/dx0_hat, d = g / ||g||              (``reconstruction_loss``)
        c       = ||mask J d||^2                         (``curvature_along``)
        x0_hat <- x0_hat - strength (||g|| / c) d
        return the output of ``prediction_type`` that encodes this x0_hat at
        (z_t, t), i.e. with eps_hat = (z_t - a_t x0_hat) / s_t

    DDIM and DDPM both turn the returned output back into exactly this x0_hat
    (and the matching eps_hat), so the correction works for any sampler and
    prediction type. In the epsilon form the same move reads
    eps_hat <- eps_hat + (a_t / s_t) (x0_hat's step). A row whose gradient
    is 0 (nothing known, or already matched) is left as it is.
    """
    check_choice(prediction_type, "prediction_type", PREDICTION_TYPES), check_schedule(schedule)
    strength = check_float(strength, "strength", low=0.0)
    scale_factor = check_float(scale_factor, "scale_factor", low=0.0, low_open=True)
    check_callable(model_fn, "model_fn", "model_fn(z_t, t)")
    _check_decoder(decoder)
    check_array(
        x_known_std, "x_known_std", shape=(None, decoder.input_size), dtype=decoder.dtype, finite=False
    )
    check_array(mask, "mask", shape=tuple(x_known_std.shape), dtype=decoder.dtype, finite=False)

    def corrected(z_t: Any, t: Any) -> Any:
        xp = get_array_module(z_t)
        out = model_fn(z_t, t)  # [n, latent]
        x0_hat = _x0_from(schedule, out, t, z_t, prediction_type)  # [n, latent]
        _, g = reconstruction_loss(decoder, x0_hat, x_known_std, mask, scale_factor)  # [n, latent]
        g_norm = xp.sqrt((g * g).sum(axis=1, keepdims=True))  # [n, 1]
        moving = g_norm > 0
        d = g / xp.where(moving, g_norm, 1.0)  # [n, latent], unit rows (or 0)
        c = curvature_along(decoder, x0_hat, d, mask, scale_factor)  # [n, 1]
        # Length of the step along -d: the minimum of the linearised loss. It is 0
        # where g = 0; c = 0 with g != 0 cannot happen (||g|| = (mask J d) . residual)
        # except by rounding, and such a row is left alone too.
        length = xp.where(moving & (c > 0), g_norm / xp.where(c > 0, c, 1.0), 0.0)  # [n, 1]
        x0_hat = x0_hat - (strength * length).astype(x0_hat.dtype) * d  # [n, latent]
        a = gather(schedule["sqrt_alphas_cumprod"], t)
        s = gather(schedule["sqrt_one_minus_alphas_cumprod"], t)
        eps_hat = (z_t - a * x0_hat) / s  # [n, latent]
        return _target(prediction_type, x0_hat, eps_hat, schedule, t)

    return corrected


def _check_latent_diffusion(model: Any) -> None:
    from .pipeline import LatentDiffusion  # the pipeline imports this module

    if not isinstance(model, LatentDiffusion):
        raise TypeError(f"model must be a LatentDiffusion, got {type(model).__name__}")


def inpaint(
    model: Any,
    x_known: Any,
    mask: Any,
    *,
    guidance_strength: float = DEFAULT_INPAINT_STRENGTH,
    num_inference_steps: int = 50,
    seed: int = 0,
    labels: Any = None,
    guidance_scale: float = 1.0,
    use_ema: bool = True,
    return_latents: bool = False,
) -> Any:
    """Complete data vectors from a known part: samples [n, input] that agree where mask = 1.

    model: a trained ``LatentDiffusion``. x_known: [n, input] in data units
    (entries where mask = 0 are ignored and may be NaN). mask: [n, input],
    1 = known, 0 = to fill in (bool, int or float). Runs deterministic DDIM
    (eta = 0) from z_T ~ N(0, I) drawn with ``seed``, with the reconstruction
    guidance of ``reconstruction_guidance_fn`` of ``guidance_strength``
    (0 = plain sampling) at every step, then decodes. ``labels`` and
    ``guidance_scale`` add classifier-free guidance (conditional models).
    """
    _check_latent_diffusion(model)
    check_float(guidance_strength, "guidance_strength", low=0.0)
    check_float(guidance_scale, "guidance_scale")
    if not (hasattr(x_known, "shape") or isinstance(x_known, (list, tuple))):
        raise TypeError(f"x_known must be an array [n, input_size], got {type(x_known).__name__}")
    c = model.config
    xp = model.xp
    x_known = np.asarray(to_numpy(x_known), dtype=c.dtype)
    check_array(x_known, "x_known", shape=(None, c.input_size), finite=False)
    n = x_known.shape[0]
    mask = np.asarray(to_numpy(mask))
    if mask.shape != x_known.shape or not np.isin(mask, (0, 1)).all():
        raise ValueError(
            f"mask must be 0 (unknown) or 1 (known) in the shape of x_known {list(x_known.shape)}"
        )
    mask = mask.astype(c.dtype)  # an int or bool mask would promote float32 to float64
    known = np.where(mask > 0, x_known, 0.0).astype(c.dtype)
    check_array(known, "x_known (where mask = 1)", shape=(n, c.input_size))
    num_inference_steps = check_int(num_inference_steps, "num_inference_steps")
    known_std = model.standardize(to_device(known, model.device)) * to_device(mask, model.device)
    mask_d = to_device(mask, model.device)

    base = model._model_fn(use_ema, labels, guidance_scale, n)
    fn = reconstruction_guidance_fn(
        base,
        model.decoder,
        known_std,
        mask_d,
        model.scale_factor,
        guidance_strength,
        prediction_type=c.prediction_type,
        schedule=model.schedule,
    )
    z0 = run_sampler(
        fn,
        model.schedule,
        n,
        sampler="ddim",
        num_inference_steps=num_inference_steps,
        prediction_type=c.prediction_type,
        rng=default_rng(seed, xp),
        shape=c.latent_size,
    )
    x = model.decode(z0)
    return (x, z0) if return_latents else x


# --------------------------------------------------------------------------
# How well does guidance work? (digits)
# --------------------------------------------------------------------------


def guidance_report(
    model: Any,
    scales: Sequence[float] = (0, 1, 3, 7),
    n_per_class: int = 100,
    seed: int = 0,
    *,
    X: np.ndarray | None = None,
    num_inference_steps: int = 50,
) -> list[dict[str, Any]]:
    """Per guidance scale: how often the samples are the class asked for, and how far from the data.

    For each w in ``scales``, draws ``n_per_class`` samples of every class
    (same seed, so the same z_T, at every w), classifies them with
    ``digit_feature_model().predict`` and measures the Frechet distance to
    half A of the digits in the classifier's feature space, against the
    floor FD(half B, half A) of ``evaluation.evaluate_samples``.

    Returns one dict per scale: scale, accuracy (share classified as the
    requested class), per_class (that share per class), fd, fd_floor,
    fd_ratio, class_counts (predicted classes of all samples), seconds.
    """
    _check_latent_diffusion(model)
    if not isinstance(scales, (list, tuple)) or not all(isinstance(w, numbers.Real) for w in scales):
        raise TypeError(f"scales must be a list of guidance scales (numbers), got {scales!r:.60}")
    check_int(seed, "seed", minimum=0), check_int(num_inference_steps, "num_inference_steps")
    if X is not None:
        check_array(X, "X", shape=(None, 64))
    from .datasets import load_digits
    from .evaluation import feature_fn, split_halves
    from .evaluation.classifier import digit_feature_model
    from .evaluation.metrics import frechet_distance

    K = model.config.num_classes
    if K is None:
        raise ValueError("guidance_report needs a class-conditional model (train with --conditional)")
    n_per_class = check_int(n_per_class, "n_per_class", minimum=2)
    if X is None:
        X, _ = load_digits(model.config.dtype)
    if X.shape[1] != 64 or K != 10:
        raise ValueError("guidance_report measures with the digit classifier: it needs a digits model")
    features, _ = feature_fn("digits", model)
    predict = digit_feature_model().predict
    a_idx, b_idx = split_halves(X.shape[0])
    fa = features(X[a_idx])
    fd_floor = frechet_distance(features(X[b_idx]), fa)
    labels = np.repeat(np.arange(K, dtype=np.int64), n_per_class)  # [K * n]
    rows = []
    for w in scales:
        started = time.perf_counter()
        x = to_numpy(
            model.sample(
                labels.shape[0],
                labels=labels,
                guidance_scale=float(w),
                seed=seed,
                num_inference_steps=num_inference_steps,
            )
        )
        seconds = time.perf_counter() - started
        pred = predict(x)  # [K * n]
        hit = pred == labels
        fd = frechet_distance(features(x), fa)
        rows.append(
            {
                "scale": float(w),
                "accuracy": float(hit.mean()),
                "per_class": [float(hit[labels == k].mean()) for k in range(K)],
                "fd": fd,
                "fd_floor": fd_floor,
                "fd_ratio": fd / fd_floor,
                "class_counts": np.bincount(pred, minlength=K).tolist(),
                "seconds": seconds,
            }
        )
    return rows


def format_guidance_report(rows: list[dict[str, Any]]) -> str:
    """A table of ``guidance_report``: one line per guidance scale."""
    if not rows:
        return "classifier-free guidance: no scales"
    n = sum(rows[0]["class_counts"])
    lines = [
        f"classifier-free guidance: {n} samples per scale ({n // len(rows[0]['per_class'])} per class), "
        "classified by the digit classifier",
        f"{'w':>6}{'as requested':>14}{'worst class':>13}{'Frechet dist.':>15}{'floor':>9}{'ratio':>8}{'time':>8}",
    ]
    for r in rows:
        worst = int(np.argmin(r["per_class"]))
        worst_text = f"{worst}: {r['per_class'][worst]:.0%}"
        lines.append(
            f"{r['scale']:>6g}{r['accuracy']:>14.1%}{worst_text:>13}"
            f"{r['fd']:>15.4g}{r['fd_floor']:>9.4g}{r['fd_ratio']:>8.2f}{r['seconds']:>7.1f}s"
        )
    return "\n".join(lines)


__all__ = [
    "DEFAULT_INPAINT_STRENGTH",
    "classifier_free_guidance_fn",
    "curvature_along",
    "draw_classes",
    "format_guidance_report",
    "guidance_report",
    "guide",
    "inpaint",
    "reconstruction_guidance_fn",
    "reconstruction_loss",
    "rescale_guidance",
]
