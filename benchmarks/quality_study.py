"""The study behind README's "Quality on the digits": one setting, one training seed.

    python benchmarks/quality_study.py --list
    OPENBLAS_NUM_THREADS=1 python benchmarks/quality_study.py ema-warmup-4 --seed 1
    python benchmarks/quality_study.py temperature-1.05 --run runs/demo0   # settings that only sample
    python benchmarks/quality_study.py defaults --quick      # a smoke run, numbers meaningless

Each setting trains as `python -m ldm_np train --dataset digits --holdout 200
--seed S` does (the demo's model and data), then prints the table of `python -m
ldm_np evaluate` (DDIM 200 or ``--steps N``, sample seeds 0-2); the settings
that change only the sampling evaluate a trained run instead (``--run DIR``).
Every setting but ``defaults`` starts from the study's base, the demo with the
denoiser at batch 256 for 3,500 steps (``BASE``), and changes it in one of
three ways:

- command-line flags of `train` or `evaluate` (``--vae-steps 20000``);
- a field of ``LDMConfig`` the command line does not expose (``grad_clip``);
- one formula of the library, swapped for the run and put back afterwards
  (the EMA's warm-up, the loss's weight over t, the latent scale, ...). Each
  swap is a few lines below, next to the formula it replaces.

A run repeats to the last digit only on the same machine, BLAS kernel and
thread count (README, "Where the numbers come from"); the README's rows give
the thread count they were measured with.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import numpy as np

from ldm_np import cli, diffusion, pipeline, training
from ldm_np.denoiser import Denoiser
from ldm_np.optim import AdamW

# Small sizes for --quick: every setting runs end to end in a few seconds.
QUICK_TRAIN = ["--vae-steps", "20", "--denoiser-steps", "20", "--hidden-size", "32", "--num-layers", "1"]
QUICK_EVALUATE = ["--num-samples", "150", "--sample-seeds", "1", "--steps", "5"]


@contextlib.contextmanager
def replaced(owner: Any, name: str, value: Any) -> Iterator[None]:
    """``owner.name = value`` inside the block; the original is restored however it ends."""
    original = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, original)


# --------------------------------------------------------------------------
# The swapped formulas. Each returns a context manager for one run; ``seed``
# is the training seed, for the swaps that draw random numbers of their own.
# --------------------------------------------------------------------------


def ema_warmup(k: float) -> Callable[[int], Any]:
    """EMA decay d_n = min(decay, (1 + n) / (k + n)) instead of (1 + n) / (10 + n): a wider average."""

    def current_decay(self: training.EMA) -> float:
        n = self.num_updates
        return min(self.decay, (1.0 + n) / (k + n))

    return lambda seed: replaced(training.EMA, "current_decay", current_decay)


def denoiser_lr_floor(floor: float) -> Callable[[int], Any]:
    """The denoiser's cosine decays to ``floor`` times its peak instead of 0:
    lr = base (floor + (1 - floor) cos_part) after the warm-up; the VAE's schedule is unchanged."""
    original = pipeline.learning_rate

    def learning_rate(step: int, base_lr: float, warmup: int, total: int) -> float:
        if step < warmup:
            return original(step, base_lr, warmup, total)
        progress = min((step - warmup) / max(total - warmup, 1), 1.0)
        return base_lr * (floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress)))

    @contextlib.contextmanager
    def swap(seed: int) -> Iterator[None]:
        fit_denoiser = pipeline.LatentDiffusion.fit_denoiser

        def fit_denoiser_with_floor(self: Any, *args: Any, **kwargs: Any) -> Any:
            with replaced(pipeline, "learning_rate", learning_rate):
                return fit_denoiser(self, *args, **kwargs)

        with replaced(pipeline.LatentDiffusion, "fit_denoiser", fit_denoiser_with_floor):
            yield

    return swap


def loss_weight_sqrt_alpha_bar(seed: int) -> Any:
    """The epsilon loss weighted by w_b = sqrt(ab_t) / mean over t of sqrt(ab_t) (with --min-snr-gamma 1,
    which routes the loss through the weight function this replaces)."""

    def weights(schedule: dict, t: Any, prediction_type: str, gamma: float) -> Any:
        root = schedule["alphas_cumprod"] ** 0.5
        return root[t] / float(root.mean())

    return replaced(diffusion, "_min_snr_weights", weights)


def latent_scale(factor: float) -> Callable[[int], Any]:
    """The latents scaled to standard deviation ``factor`` instead of 1: s = factor / std(z)."""
    original = pipeline.latent_scale_factor
    return lambda seed: replaced(pipeline, "latent_scale_factor", lambda z: factor * original(z))


def denoiser_adamw(weight_decay: float) -> Callable[[int], Any]:
    """The denoiser's Adam replaced by AdamW (decoupled weight decay); the VAE keeps Adam."""

    @contextlib.contextmanager
    def swap(seed: int) -> Iterator[None]:
        init = pipeline.LatentDiffusion.__init__

        def init_with_adamw(self: Any, *args: Any, **kwargs: Any) -> None:
            init(self, *args, **kwargs)
            self.denoiser_optimizer = AdamW(self.config.denoiser_lr, weight_decay=weight_decay)

        with replaced(pipeline.LatentDiffusion, "__init__", init_with_adamw):
            yield

    return swap


@contextlib.contextmanager
def zero_init(seed: int) -> Iterator[None]:
    """The kernels of ``noise_pred`` and of every block's ``down`` set to 0 after initialisation:
    each block starts as the identity and the prediction at 0."""
    init = Denoiser.__init__

    def init_zeroed(self: Denoiser, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        for name, layer in self.params.items():
            if name == "noise_pred" or name.endswith("_down"):
                layer["kernel"][...] = 0

    with replaced(Denoiser, "__init__", init_zeroed):
        yield


class StratifiedT:
    """A step's generator whose t are stratified: t_b = floor((b + u) T / B), one u ~ U(0, 1) per batch.

    Every other draw (rows, noise) passes through to the generator unchanged.
    """

    def __init__(self, rng: Any, num_steps: int) -> None:
        self.rng, self.num_steps = rng, num_steps

    def __getattr__(self, name: str) -> Any:
        return getattr(self.rng, name)

    def integers(self, low: int, high: int, size: int) -> Any:
        if high != self.num_steps:
            return self.rng.integers(low, high, size=size)
        u = self.rng.random()
        return ((np.arange(size) + u) * (high / size)).astype(np.int64)


@contextlib.contextmanager
def stratified_t(seed: int) -> Iterator[None]:
    """One t per 1/B of the schedule in every batch of B."""
    original, num_steps = pipeline.step_rng, cli.DEMO_CONFIG["num_steps"]
    with replaced(
        pipeline, "step_rng", lambda *args, **kwargs: StratifiedT(original(*args, **kwargs), num_steps)
    ):
        yield


def decoder_noise(c: float) -> Callable[[int], Any]:
    """The VAE's decoder trained on z + c eps' beside the posterior's own noise, eps' ~ N(0, I)
    from a generator of its own (seed 777 + the training seed); the encoder's KL is unchanged."""

    @contextlib.contextmanager
    def swap(seed: int) -> Iterator[None]:
        original = training.reparameterize_forward
        rng = np.random.default_rng(777 + seed)

        def noisier(mu: Any, log_var: Any, eps: Any) -> tuple[Any, Any]:
            z, cache = original(mu, log_var, eps)
            return z + (c * rng.standard_normal(z.shape)).astype(z.dtype), cache

        with replaced(training, "reparameterize_forward", noisier):
            yield

    return swap


def sample_with(**options: Any) -> Callable[[int], Any]:
    """``LatentDiffusion.sample`` with ``options`` (use_ema=False, clip_sample=c) for every sample drawn."""

    @contextlib.contextmanager
    def swap(seed: int) -> Iterator[None]:
        sample = pipeline.LatentDiffusion.sample

        def sample_with_options(self: Any, num_samples: int, **kwargs: Any) -> Any:
            return sample(self, num_samples, **kwargs, **options)

        with replaced(pipeline.LatentDiffusion, "sample", sample_with_options):
            yield

    return swap


def temperature(tau: float) -> Callable[[int], Any]:
    """x_T drawn at temperature tau: x_T = tau z, z ~ N(0, I) from the sampler's own generator."""
    original = pipeline.run_sampler

    def run_sampler(fn: Any, schedule: dict, n: int, *, rng: Any, shape: int, **kwargs: Any) -> Any:
        x_T = tau * rng.standard_normal((n, shape), dtype=schedule["betas"].dtype)
        return original(fn, schedule, n, rng=rng, shape=shape, x_T=x_T, **kwargs)

    return lambda seed: replaced(pipeline, "run_sampler", run_sampler)


def config_fields(**fields: Any) -> Callable[[int], Any]:
    """``LDMConfig`` fields the command line has no flag for, set on the config `train` builds."""
    original = cli.config_from_args

    def config_from_args(*args: Any, **kwargs: Any) -> Any:
        return dataclasses.replace(original(*args, **kwargs), **fields)

    return lambda seed: replaced(cli, "config_from_args", config_from_args)


# --------------------------------------------------------------------------
# The settings
# --------------------------------------------------------------------------


class Setting(NamedTuple):
    doc: str
    train: tuple[str, ...] = ()
    evaluate: tuple[str, ...] = ()
    swap: Callable[[int], Any] | None = None
    trains: bool = True  # False: the setting changes only the sampling of a trained run
    on_base: bool = True  # True: the setting's flags apply to BASE, not to the demo's defaults


# The study's base: the demo's model with the denoiser at batch 256 for 3,500 steps. Every
# setting but `defaults` changes one thing of it (README's rows say "base, ..."); the demo's
# batch 512 for 1,750 steps is itself the row `denoiser-batch-512`.
BASE = ("--denoiser-batch-size", "256", "--denoiser-steps", "3500")
FORMER = ("--output-activation", "linear", "--recon-std", "0.053", "--vae-steps", "8000")
VAE_BATCH_256 = ("--vae-batch-size", "256", "--vae-steps", "6000")  # the demo's 128 x 12,000 digits

SETTINGS: dict[str, Setting] = {
    "defaults": Setting("the demo's defaults (the denoiser at batch 512 for 1,750 steps)", on_base=False),
    "base": Setting("the study's base: the demo's defaults with the denoiser at batch 256 for 3,500 steps"),
    "former": Setting("the former defaults: linear decoder output, recon_std 0.053, VAE 8,000 steps", FORMER),
    "vae-8000": Setting("VAE 8,000 steps", ("--vae-steps", "8000")),
    "vae-20000": Setting("VAE 20,000 steps", ("--vae-steps", "20000")),
    "recon-std-0.03": Setting("recon_std 0.03", ("--recon-std", "0.03")),
    "latent-6": Setting("latent size 6", ("--latent-size", "6")),
    "latent-12": Setting("latent size 12", ("--latent-size", "12")),
    "min-snr-5": Setting("min-SNR loss weighting, gamma 5", ("--min-snr-gamma", "5")),
    "loss-weight-sqrt-alpha-bar": Setting(
        "the epsilon loss weighted by sqrt(ab_t) over its mean over t",
        ("--min-snr-gamma", "1"),
        swap=loss_weight_sqrt_alpha_bar,
    ),
    "v-prediction": Setting("v-prediction", ("--prediction-type", "v")),
    "time-index": Setting("time embedded as t instead of t / T", ("--time-input", "index")),
    "schedule-cosine": Setting("the cosine schedule", ("--schedule", "cosine")),
    "schedule-scaled-linear": Setting("the scaled-linear schedule", ("--schedule", "scaled_linear")),
    "denoiser-lr-2e-3": Setting("denoiser learning rate 2e-3", ("--denoiser-lr", "2e-3")),
    "denoiser-4500": Setting("denoiser 4,500 steps", ("--denoiser-steps", "4500")),
    "denoiser-batch-512": Setting(
        "denoiser batch 512 for 1,750 steps (the same samples seen)",
        ("--denoiser-batch-size", "512", "--denoiser-steps", "1750"),
    ),
    "defaults-denoiser-1400": Setting(
        "the demo's defaults with 1,400 denoiser steps at batch 512 (0.8 of the latents seen)",
        ("--denoiser-steps", "1400"),
        on_base=False,
    ),
    "defaults-vae-batch-256": Setting(
        "the demo's defaults with the VAE at batch 256 for 6,000 steps (the same digits seen)",
        VAE_BATCH_256,
        on_base=False,
    ),
    "defaults-vae-batch-256-lr-1.4e-3": Setting(
        "the demo's defaults with the VAE at batch 256 for 6,000 steps, learning rate 1.4e-3",
        (*VAE_BATCH_256, "--vae-lr", "1.4e-3"),
        on_base=False,
    ),
    "denoiser-batch-1024": Setting(
        "denoiser batch 1,024 for 875 steps (the same samples seen)",
        ("--denoiser-batch-size", "1024", "--denoiser-steps", "875"),
    ),
    "two-blocks": Setting(
        "2 residual blocks for 6,000 steps", ("--num-layers", "2", "--denoiser-steps", "6000")
    ),
    "hidden-192": Setting("hidden width 192 instead of 256 (VAE and denoiser)", ("--hidden-size", "192")),
    "three-blocks": Setting("3 residual blocks instead of 4", ("--num-layers", "3")),
    "ema-0.9995": Setting("EMA decay 0.9995", ("--ema-decay", "0.9995")),
    "ema-warmup-4": Setting(
        "EMA warm-up (1 + n) / (4 + n) instead of (1 + n) / (10 + n)", swap=ema_warmup(4.0)
    ),
    "ema-warmup-4-0.9999": Setting(
        "the same with EMA decay 0.9999", ("--ema-decay", "0.9999"), swap=ema_warmup(4.0)
    ),
    "lr-floor-0.05": Setting(
        "the denoiser's learning rate decays to 5% of its peak, not 0", swap=denoiser_lr_floor(0.05)
    ),
    "no-grad-clip": Setting("no gradient clipping (grad_clip = 1e9)", swap=config_fields(grad_clip=1e9)),
    "adamw-0.1": Setting("the denoiser's optimizer AdamW, weight decay 0.1", swap=denoiser_adamw(0.1)),
    "zero-init": Setting("the last layer's and every block's down kernel initialised to 0", swap=zero_init),
    "stratified-t": Setting("stratified t: one t per 1/256 of the schedule in each batch", swap=stratified_t),
    "latent-scale-1.25": Setting("latents of standard deviation 1.25 instead of 1", swap=latent_scale(1.25)),
    "latent-scale-0.8": Setting("latents of standard deviation 0.8 instead of 1", swap=latent_scale(0.8)),
    "latent-noise-0.1": Setting("the denoiser trained on z0 + 0.1 eps'", ("--latent-noise", "0.1")),
    "latent-noise-0.2": Setting("the denoiser trained on z0 + 0.2 eps'", ("--latent-noise", "0.2")),
    "decoder-noise-0.24": Setting("the VAE's decoder trained on z + 0.24 eps'", swap=decoder_noise(0.24)),
    "conditional": Setting(
        "class-conditional; evaluate draws each sample's class from the training frequencies",
        ("--conditional",),
    ),
    "conditional-latent-noise-0.1": Setting(
        "class-conditional, latent noise 0.1", ("--conditional", "--latent-noise", "0.1")
    ),
    "conditional-latent-noise-0.2": Setting(
        "class-conditional, latent noise 0.2", ("--conditional", "--latent-noise", "0.2")
    ),
}
# Settings that change only the sampling: they evaluate a run trained before (--run DIR).
# Other samplers and step counts need no swap: `python -m ldm_np evaluate --run DIR --steps 500`,
# or `--sampler ddpm --steps 1000`.
SETTINGS["raw-weights"] = Setting(
    "sampled with the raw weights instead of the EMA", swap=sample_with(use_ema=False), trains=False
)
for _c in (4.0, 3.0, 2.5):
    SETTINGS[f"clip-sample-{_c:g}"] = Setting(
        f"x0_hat clipped to [-{_c:g}, {_c:g}] in sampling", swap=sample_with(clip_sample=_c), trains=False
    )
for _tau in (0.9, 0.95, 1.05, 1.1):
    SETTINGS[f"temperature-{_tau:g}"] = Setting(
        f"x_T drawn at temperature {_tau:g}", swap=temperature(_tau), trains=False
    )


def run_setting(name: str, seed: int, out: str, *, steps: int = cli.SAMPLE_STEPS, quick: bool = False) -> int:
    """Train the setting with training seed ``seed`` into ``out`` (unless it only samples: then
    ``out`` is a trained run), and print its evaluation with DDIM ``steps``."""
    setting = SETTINGS[name]
    train = ["train", "--dataset", "digits", "--holdout", str(cli.DEMO_HOLDOUT), "--seed", str(seed)]
    train += ["--out", out, "--no-progress", "--no-figures", "--overwrite"]
    train += [*(BASE if setting.on_base else ()), *setting.train]  # the later of two flags wins
    evaluate = ["evaluate", "--run", out, "--steps", str(steps)]
    if quick:  # last, so they win over the setting's own sizes
        train, evaluate = train + QUICK_TRAIN, evaluate + QUICK_EVALUATE
    of = f"training seed {seed}" if setting.trains else f"the run {out}"
    print(f"setting {name}: {setting.doc}; {of}", flush=True)
    with setting.swap(seed) if setting.swap else contextlib.nullcontext():
        if setting.trains:
            started = time.perf_counter()
            status = cli.main(train)
            if status != 0:
                return status
            print(f"training: {time.perf_counter() - started:.1f} s", flush=True)
        return cli.main(evaluate)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("setting", nargs="?", choices=sorted(SETTINGS), metavar="SETTING")
    parser.add_argument("--seed", type=int, default=0, help="the training seed (default: %(default)s)")
    parser.add_argument("--out", default=None, help="the run folder (default: runs/study/SETTING-SEED)")
    parser.add_argument("--run", default=None, help="the trained run a sampling-only setting evaluates")
    parser.add_argument(
        "--steps",
        type=int,
        default=cli.SAMPLE_STEPS,
        help="DDIM steps of the evaluation (default: %(default)s)",
    )
    parser.add_argument("--list", action="store_true", help="print the settings and exit")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run, numbers meaningless")
    args = parser.parse_args(argv)
    if args.list or args.setting is None:
        width = max(map(len, SETTINGS))
        for name in sorted(SETTINGS):
            print(f"{name:<{width}}  {SETTINGS[name].doc}")
        return 0 if args.list else 2
    if SETTINGS[args.setting].trains and args.run is not None:
        parser.error(f"{args.setting} trains a model: --run is for the settings that only sample")
    if not SETTINGS[args.setting].trains and args.run is None:
        parser.error(f"{args.setting} changes only the sampling: name the trained run with --run DIR")
    out = args.run or args.out or f"runs/study/{args.setting}-{args.seed}"
    return run_setting(args.setting, args.seed, out, steps=args.steps, quick=args.quick)


if __name__ == "__main__":
    sys.exit(main())
