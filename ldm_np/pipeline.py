"""``LatentDiffusion``: the whole model, trained in two stages and sampled.

    model = LatentDiffusion(input_size=64, latent_size=8)
    model.fit(X)                      # stage 1: VAE; stage 2: denoiser on its latents
    x = model.sample(16)              # z_T ~ N(0, I) -> denoise -> decode
    model.save("runs/digits/model.safetensors")

Data are standardised on the way in (a per-feature mean and one global
standard deviation, so constant features such as blank border pixels are not
blown up; or, for a decoder with a sigmoid output, the global minimum and
range, so the data fill [0, 1] as the sigmoid does) and mapped back, clipped
to the range seen in training, on the way out. Latents are multiplied by the
scale factor s = 1 / std(z) before diffusion, so the denoiser sees
unit-variance data as the noise schedule assumes (Rombach et al., 2022,
section 4.3.2), and divided by it before decoding.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .backend import default_rng, to_device, to_numpy, xp_for_device
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint, subtree, with_prefix
from .denoiser import Denoiser
from .diffusion import PREDICTION_TYPES
from .layers import TIME_INPUTS
from .losses import kl_per_dimension
from .models import DEFAULTS, build_decoder, build_denoiser, build_encoder
from .optim import Adam
from .samplers import sample as run_sampler
from .schedules import KINDS, make_schedule
from .training import (
    DENOISER_STAGE,
    EMA,
    VAE_STAGE,
    LoopState,
    batch_indices,
    denoiser_step,
    learning_rate,
    run_loop,
    step_rng,
    vae_step,
)
from .vae import OUTPUT_ACTIVATIONS
from .validation import check_array, check_choice, check_dtype_name, check_float, check_int

# A latent dimension whose KL stays below this (nats) carries no information.
ACTIVE_UNIT_THRESHOLD = 0.01


def latent_scale_factor(z: Any) -> float:
    """The factor s that gives the latents unit variance: s = 1 / std(z).

    z: [rows, latent], the encoder's posterior means of the training set. The
    forward process is variance preserving only for data of unit variance:
    q(z_t | z_0) keeps Var[z_t] = ab_t Var[z_0] + (1 - ab_t), which is 1 at
    every t only if Var[z_0] = 1. So stage 2 trains on s z and the decoder
    gets z / s. One standard deviation over every entry, as in Rombach et al.
    (2022); s = 1 for latents with no spread.
    Returns a Python float (a host sync, once per training run).
    """
    ### BEGIN SOLUTION latent_scale_factor
    std = float(to_numpy(z.std()))
    return 1.0 / std if std > 0 else 1.0
    ### END SOLUTION


def _check_checkpointing(checkpoint: Any, checkpoint_every: Any, log_every: Any) -> None:
    """The options ``fit_vae`` and ``fit_denoiser`` share: where to save, and how often."""
    if not (checkpoint is None or callable(checkpoint) or isinstance(checkpoint, (str, Path))):
        raise TypeError(f"checkpoint must be None, a path or a function that saves, got {checkpoint!r:.60}")
    check_int(checkpoint_every, "checkpoint_every"), check_int(log_every, "log_every")


@dataclass
class LDMConfig:
    """Everything that defines a model and how it trains. Stored in every checkpoint."""

    input_size: int
    latent_size: int = DEFAULTS["latent_size"]
    hidden_size: int = DEFAULTS["hidden_size"]
    num_layers: int = DEFAULTS["num_layers"]
    num_steps: int = DEFAULTS["num_steps"]
    schedule: str = "linear"
    beta_start: float = 1e-4
    beta_end: float = 0.02
    prediction_type: str = "epsilon"
    time_input: str = "index"
    num_classes: int | None = None
    dtype: str = "float32"
    seed: int = 0
    # Stage 1: the VAE. Loss per sample = sum (x - x_hat)^2 / (2 recon_std^2) + kl_weight * KL.
    vae_steps: int = 6000
    vae_batch_size: int = 128
    vae_lr: float = 1e-3
    kl_weight: float = 1.0
    recon_std: float = 0.1  # in the units of the standardised data
    output_activation: str = "linear"  # the decoder's: "sigmoid" for data scaled to [0, 1]
    # Stage 2: the denoiser.
    denoiser_steps: int = 3500
    denoiser_batch_size: int = 256
    denoiser_lr: float = 1e-3
    warmup_steps: int = 200
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    min_snr_gamma: float | None = None
    p_uncond: float = 0.1  # label dropout for classifier-free guidance
    # Stage 2 trains on z0 + latent_noise * eps', eps' ~ N(0, I), a fresh eps' every step: the
    # denoiser learns a Gaussian kernel density estimate of the scaled latents (bandwidth in
    # units of their standard deviation), not the finite set of training latents itself.
    latent_noise: float = 0.0

    def __post_init__(self) -> None:
        self.validate()  # a bad field fails here, naming itself, not later in a builder

    def validate(self) -> LDMConfig:
        """Check every field; raise ValueError/TypeError naming the bad one."""
        for name in ("input_size", "latent_size", "hidden_size", "num_steps", "vae_steps", "denoiser_steps"):
            check_int(getattr(self, name), name, minimum=1)
        for name in ("vae_batch_size", "denoiser_batch_size"):
            check_int(getattr(self, name), name, minimum=1)
        check_int(self.num_layers, "num_layers", minimum=0)
        check_int(self.warmup_steps, "warmup_steps", minimum=0)
        check_int(self.seed, "seed", minimum=0)
        if self.num_classes is not None:
            check_int(self.num_classes, "num_classes", minimum=1)
        check_choice(self.schedule, "schedule", KINDS)
        check_choice(self.prediction_type, "prediction_type", PREDICTION_TYPES)
        check_choice(self.time_input, "time_input", TIME_INPUTS)
        check_choice(self.output_activation, "output_activation", OUTPUT_ACTIVATIONS)
        check_dtype_name(self.dtype)
        for name in ("vae_lr", "denoiser_lr", "recon_std"):
            check_float(getattr(self, name), name, low=0.0, low_open=True)
        check_float(self.kl_weight, "kl_weight", low=0.0)
        for name in ("beta_start", "beta_end"):  # their ranges are make_schedule's to check
            check_float(getattr(self, name), name)
        check_float(self.ema_decay, "ema_decay", low=0.0, high=1.0)
        check_float(self.grad_clip, "grad_clip", low=0.0, low_open=True)
        check_float(self.p_uncond, "p_uncond", low=0.0, high=1.0)
        check_float(self.latent_noise, "latent_noise", low=0.0)
        if self.min_snr_gamma is not None:
            check_float(self.min_snr_gamma, "min_snr_gamma", low=0.0, low_open=True)
        return self


class LatentDiffusion:
    """A VAE and a latent denoiser, trained in two stages; see the module docstring."""

    def __init__(self, config: LDMConfig | None = None, *, device: str = "cpu", **overrides: Any) -> None:
        if config is not None and not isinstance(config, LDMConfig):
            raise TypeError(f"config must be an LDMConfig (or None with input_size=...), got {config!r:.60}")
        if config is None:
            if "input_size" not in overrides:
                raise TypeError("LatentDiffusion needs input_size (or a config)")
            config = LDMConfig(**overrides)
        elif overrides:
            config = dataclasses.replace(config, **overrides)
        self.config = config.validate()
        self.device = device
        self.xp = xp_for_device(device)
        c = self.config
        common = {"dtype": c.dtype, "device": device}
        self.encoder = build_encoder(c.input_size, c.latent_size, c.hidden_size, seed=c.seed, **common)
        self.decoder = build_decoder(
            c.input_size,
            c.latent_size,
            c.hidden_size,
            output_activation=c.output_activation,
            seed=c.seed + 1,
            **common,
        )
        self.denoiser = self._new_denoiser(seed=c.seed + 2)
        self.schedule = make_schedule(c.num_steps, c.beta_start, c.beta_end, c.schedule, **common)
        self.vae_optimizer = Adam(lr=c.vae_lr)
        self.denoiser_optimizer = Adam(lr=c.denoiser_lr)
        self.ema = EMA(self.denoiser.params, c.ema_decay)
        # The EMA weights wear a Denoiser of their own, sharing the shadow arrays.
        self.ema_denoiser = self._new_denoiser(seed=c.seed + 2)
        self.ema_denoiser.params = self.ema.shadow
        self.vae_state = LoopState()
        self.denoiser_state = LoopState()
        self.scale_factor = 1.0
        self.data_mean = self.xp.zeros(c.input_size, dtype=c.dtype)
        self.data_std = 1.0
        self.data_min: Any = None
        self.data_max: Any = None
        self.kl_per_dim: list[float] | None = None

    def _new_denoiser(self, seed: int) -> Denoiser:
        c = self.config
        return build_denoiser(
            c.latent_size,
            c.hidden_size,
            c.num_layers,
            c.num_steps,
            time_input=c.time_input,
            num_classes=c.num_classes,
            seed=seed,
            dtype=c.dtype,
            device=self.device,
        )

    def __repr__(self) -> str:
        c = self.config
        return (
            f"LatentDiffusion(input_size={c.input_size}, latent_size={c.latent_size}, "
            f"hidden_size={c.hidden_size}, num_layers={c.num_layers}, num_steps={c.num_steps}, "
            f"vae_step={self.vae_state.step}/{c.vae_steps}, "
            f"denoiser_step={self.denoiser_state.step}/{c.denoiser_steps}, device={self.device!r})"
        )

    # ------------------------------------------------------------------ data

    def _prepare(self, X: Any, name: str = "X", width: int | None = None, *, min_rows: int = 1) -> Any:
        """Validate user data [n, width] (default: input_size), cast it to the model dtype, move it to the device."""
        width = self.config.input_size if width is None else width
        if not hasattr(X, "dtype"):
            X = np.asarray(X)
        if X.dtype.kind in "iub":
            raise TypeError(
                f"{name} must be floating-point data, got dtype {X.dtype}; convert it first, "
                f"e.g. X.astype('float32') (and scale images to [0, 1])"
            )
        if X.dtype.kind == "f" and X.dtype != np.dtype(self.config.dtype):
            X = X.astype(self.config.dtype)
        check_array(X, name, shape=(None, width))
        if X.shape[0] < min_rows:
            raise ValueError(f"{name} must have at least {min_rows} rows to train on, got {X.shape[0]}")
        return to_device(X, self.device)

    def _prepare_labels(self, labels: Any, n: int) -> Any:
        c = self.config
        if c.num_classes is None:
            if labels is not None:
                raise ValueError("labels were given, but the model is unconditional (num_classes=None)")
            return None
        if labels is None:
            raise ValueError(f"this model is class-conditional (num_classes={c.num_classes}): pass labels")
        labels = np.asarray(to_numpy(labels))
        if labels.dtype.kind not in "iu" or labels.shape != (n,):
            raise ValueError(
                f"labels must be integers of shape [{n}], got {labels.dtype} {list(labels.shape)}"
            )
        if labels.min() < 0 or labels.max() >= c.num_classes:
            raise ValueError(f"labels must lie in 0..{c.num_classes - 1}, got {labels.min()}..{labels.max()}")
        return to_device(labels.astype(np.int64), self.device)

    def _fit_data_stats(self, X: Any) -> None:
        if self.config.output_activation == "sigmoid":
            # Shift by the minimum, divide by the range: the data fill [0, 1], the sigmoid's range.
            low = float(to_numpy(X.min()))  # host syncs, once, before training
            self.data_mean = self.xp.full(X.shape[1], low, dtype=X.dtype)
            self.data_std = float(to_numpy(X.max())) - low or 1.0
        else:
            self.data_mean = X.mean(axis=0)
            self.data_std = float(to_numpy(X.std())) or 1.0  # a host sync, once, before training
        self.data_min = X.min(axis=0)
        self.data_max = X.max(axis=0)

    def standardize(self, X: Any) -> Any:
        """(X - mean) / std with the training data's statistics: X [n, input_size] -> [n, input_size].

        mean and std are a per-feature mean and the global standard deviation
        (a linear decoder), or the global minimum and range (a sigmoid one).
        """
        check_array(X, "X", shape=(None, self.config.input_size), finite=False)  # fit/encode checked values
        return (X - self.data_mean) * (1.0 / self.data_std)

    def unstandardize(self, X: Any) -> Any:
        """X * std + mean, clipped to the training data's range: X [n, input_size] -> [n, input_size]."""
        check_array(X, "X", shape=(None, self.config.input_size), finite=False)
        out = X * self.data_std + self.data_mean
        if self.data_min is not None:
            out = self.xp.clip(out, self.data_min, self.data_max)
        return out

    # ------------------------------------------------------------------ stage 1

    def fit_vae(
        self,
        X: Any,
        *,
        progress: bool = True,
        checkpoint: str | Path | Callable[[], Any] | None = None,
        checkpoint_every: int = 1000,
        log_every: int = 25,
    ) -> LatentDiffusion:
        """Stage 1: train encoder and decoder on ``X`` [n, input_size]."""
        _check_checkpointing(checkpoint, checkpoint_every, log_every)
        c = self.config
        X = self._prepare(X, min_rows=2)
        if self.vae_state.step == 0:
            self._fit_data_stats(X)
        Xs = self.standardize(X)
        xp, n_rows, bs = self.xp, Xs.shape[0], c.vae_batch_size
        warmup = min(c.warmup_steps, c.vae_steps // 10)

        def step(n: int) -> dict[str, Any]:
            rng = step_rng(c.seed, VAE_STAGE, n, xp)
            x = Xs[batch_indices(rng, n_rows, bs)]
            eps = rng.standard_normal((bs, c.latent_size), dtype=c.dtype)
            self.vae_optimizer.lr = learning_rate(n, c.vae_lr, warmup, c.vae_steps)
            return vae_step(
                self.encoder,
                self.decoder,
                self.vae_optimizer,
                x,
                eps,
                beta=c.kl_weight,
                recon_std=c.recon_std,
            )

        self._run(
            step,
            self.vae_state,
            c.vae_steps,
            "stage 1: VAE",
            progress,
            checkpoint,
            checkpoint_every,
            log_every,
        )
        self._report_active_units(Xs)
        return self

    def _report_active_units(self, Xs: Any) -> None:
        mu, log_var = self._encode_standardized(Xs)
        self.kl_per_dim = [float(v) for v in to_numpy(kl_per_dimension(mu, log_var))]
        active = self.active_units
        if active < max(1, self.config.latent_size // 2):
            warnings.warn(
                f"posterior collapse: only {active} of {self.config.latent_size} latent dimensions carry "
                f"information (KL > {ACTIVE_UNIT_THRESHOLD} nats). Lower kl_weight or recon_std.",
                stacklevel=3,
            )

    @property
    def active_units(self) -> int:
        """Latent dimensions whose average KL exceeds 0.01 nats (None before stage 1)."""
        if self.kl_per_dim is None:
            return 0
        return sum(v > ACTIVE_UNIT_THRESHOLD for v in self.kl_per_dim)

    def _encode_standardized(self, Xs: Any, chunk: int = 4096) -> tuple[Any, Any]:
        mus, log_vars = [], []
        for i in range(0, Xs.shape[0], chunk):
            mu, lv = self.encoder.forward(Xs[i : i + chunk])
            mus.append(mu)
            log_vars.append(lv)
        self.encoder.clear_cache()  # inference only: drop the activations
        return self.xp.concatenate(mus), self.xp.concatenate(log_vars)

    # ------------------------------------------------------------------ stage 2

    def fit_denoiser(
        self,
        X: Any,
        labels: Any = None,
        *,
        progress: bool = True,
        checkpoint: str | Path | Callable[[], Any] | None = None,
        checkpoint_every: int = 1000,
        log_every: int = 25,
    ) -> LatentDiffusion:
        """Stage 2: freeze the VAE, encode ``X`` once, train the denoiser on the scaled latents."""
        _check_checkpointing(checkpoint, checkpoint_every, log_every)
        c = self.config
        X = self._prepare(X, min_rows=2)
        y = self._prepare_labels(labels, X.shape[0])
        if self.data_min is None:
            self._fit_data_stats(X)
        mu, _ = self._encode_standardized(self.standardize(X))  # posterior means [n, latent]
        if self.denoiser_state.step == 0:
            self.scale_factor = latent_scale_factor(mu)
        z0_all = mu * self.scale_factor
        xp, n_rows, bs, T = self.xp, z0_all.shape[0], c.denoiser_batch_size, c.num_steps
        null = self.denoiser.null_label

        def step(n: int) -> dict[str, Any]:
            rng = step_rng(c.seed, DENOISER_STAGE, n, xp)
            idx = batch_indices(rng, n_rows, bs)
            t = rng.integers(0, T, size=bs)
            noise = rng.standard_normal((bs, c.latent_size), dtype=c.dtype)
            labels_b = None
            if y is not None:
                # Label dropout: the same network learns the unconditional prediction.
                drop = rng.random(bs) < c.p_uncond
                labels_b = xp.where(drop, null, y[idx])
            z0 = z0_all[idx]
            if c.latent_noise > 0:  # drawn last, so runs without it keep their random numbers
                z0 = z0 + c.latent_noise * rng.standard_normal((bs, c.latent_size), dtype=c.dtype)
            self.denoiser_optimizer.lr = learning_rate(n, c.denoiser_lr, c.warmup_steps, c.denoiser_steps)
            return denoiser_step(
                self.denoiser,
                self.denoiser_optimizer,
                self.schedule,
                z0,
                t,
                noise,
                labels=labels_b,
                ema=self.ema,
                prediction_type=c.prediction_type,
                min_snr_gamma=c.min_snr_gamma,
                grad_clip=c.grad_clip,
            )

        self._run(
            step,
            self.denoiser_state,
            c.denoiser_steps,
            "stage 2: denoiser",
            progress,
            checkpoint,
            checkpoint_every,
            log_every,
        )
        return self

    def fit(self, X: Any, labels: Any = None, **kwargs: Any) -> LatentDiffusion:
        """Both stages: ``fit_vae(X)`` then ``fit_denoiser(X, labels)``."""
        self.fit_vae(X, **kwargs)
        return self.fit_denoiser(X, labels, **kwargs)

    def _run(self, step, state, total, name, progress, checkpoint, checkpoint_every, log_every) -> None:
        # ``checkpoint``: a path, or a function that saves (the command line's run folder).
        save = checkpoint if callable(checkpoint) or checkpoint is None else (lambda: self.save(checkpoint))
        try:
            run_loop(
                step,
                state,
                total,
                name=name,
                log_every=log_every,
                progress=progress,
                on_checkpoint=save,
                checkpoint_every=checkpoint_every,
            )
        except KeyboardInterrupt:
            # Every completed step is kept: save, and let the caller say how to resume.
            if save is not None:
                save()
            raise

    # ------------------------------------------------------------------ use

    def encode(self, X: Any) -> Any:
        """Scaled posterior means s * mu(x): the latents the denoiser works on, [n, latent]."""
        X = self._prepare(X)
        mu, _ = self._encode_standardized(self.standardize(X))
        return mu * self.scale_factor

    def decode(self, z: Any) -> Any:
        """Latents [n, latent] (scaled, as from ``encode`` or ``sample``) -> data [n, input]."""
        z = self._prepare(z, "z", self.config.latent_size)
        x = self.decoder.forward(z * (1.0 / self.scale_factor))
        self.decoder.clear_cache()
        return self.unstandardize(x)

    def sample(
        self,
        num_samples: int,
        *,
        sampler: str = "ddim",
        num_inference_steps: int = 50,
        eta: float = 0.0,
        seed: int = 0,
        labels: Any = None,
        guidance_scale: float = 1.0,
        guidance_rescale: float = 0.0,
        use_ema: bool = True,
        return_latents: bool = False,
        return_trajectory: bool = False,
        progress: bool = False,
        **sampler_kwargs: Any,
    ) -> Any:
        """Draw z_T ~ N(0, I), denoise it, decode it: samples [num_samples, input_size].

        ``labels`` (class-conditional models: an int or ints [num_samples])
        with ``guidance_scale`` w apply classifier-free guidance,
        out = out_uncond + w (out_cond - out_uncond), optionally rescaled by
        ``guidance_rescale`` phi (see ``ldm_np.guidance``). Without labels a
        conditional model samples with its null label (unconditionally); for
        samples of the data's distribution, draw the labels with the training
        class frequencies (``guidance.draw_classes``) and keep w = 1.
        """
        num_samples = check_int(num_samples, "num_samples")
        seed = check_int(seed, "seed", minimum=0)
        model = self.ema_denoiser if use_ema else self.denoiser
        fn = self._model_fn(use_ema, labels, guidance_scale, num_samples, guidance_rescale)
        rng = default_rng(seed, self.xp)
        out = run_sampler(
            fn,
            self.schedule,
            num_samples,
            sampler=sampler,
            num_inference_steps=num_inference_steps,
            eta=eta,
            prediction_type=self.config.prediction_type,
            rng=rng,
            shape=self.config.latent_size,
            return_trajectory=return_trajectory,
            progress=progress,
            **sampler_kwargs,
        )
        z0, traces = out if return_trajectory else (out, None)
        model.clear_cache()
        x = self.decode(z0)
        result = (x, z0) if return_latents else x
        if return_trajectory:
            return (*result, traces) if isinstance(result, tuple) else (result, traces)
        return result

    def _model_fn(
        self, use_ema: bool, labels: Any, guidance_scale: float, n: int, guidance_rescale: float = 0.0
    ) -> Any:
        """The sampler's model callable (z_t, t) -> output: the (EMA) denoiser, with the null
        label or guidance where asked."""
        c = self.config
        model = self.ema_denoiser if use_ema else self.denoiser
        if labels is None and (guidance_scale != 1.0 or guidance_rescale != 0.0):
            raise ValueError(
                f"guidance_scale={guidance_scale} / guidance_rescale={guidance_rescale} need labels "
                "(classifier-free guidance steers towards a class)"
            )
        if c.num_classes is None:
            if labels is not None:
                raise ValueError("labels were given, but the model is unconditional (num_classes=None)")
            return model.forward
        if labels is None:
            null = self.xp.full(n, model.null_label, dtype=self.xp.int64)
            return lambda z_t, t: model.forward(z_t, t, null)
        from .guidance import classifier_free_guidance_fn

        y = self._prepare_labels(labels if np.ndim(to_numpy(labels)) else np.full(n, int(labels)), n)
        return classifier_free_guidance_fn(
            model,
            y,
            guidance_scale,
            prediction_type=c.prediction_type,
            schedule=self.schedule,
            guidance_rescale=guidance_rescale,
        )

    def inpaint(
        self,
        x_known: Any,
        mask: Any,
        *,
        guidance_strength: float | None = None,
        num_inference_steps: int = 50,
        seed: int = 0,
        labels: Any = None,
        guidance_scale: float = 1.0,
    ) -> Any:
        """Fill in the unknown part (mask = 0) of ``x_known`` [n, input]: samples [n, input].

        Reconstruction guidance through the decoder at every DDIM step; see
        ``ldm_np.guidance.inpaint`` (``guidance_strength`` None = its default).
        """
        from .guidance import DEFAULT_INPAINT_STRENGTH, inpaint

        strength = DEFAULT_INPAINT_STRENGTH if guidance_strength is None else guidance_strength
        return inpaint(
            self,
            x_known,
            mask,
            guidance_strength=strength,
            num_inference_steps=num_inference_steps,
            seed=seed,
            labels=labels,
            guidance_scale=guidance_scale,
        )

    # ------------------------------------------------------------------ checkpoints

    def save(self, path: str | Path, *, metadata: dict[str, str] | None = None) -> Path:
        """Write everything needed to sample or to resume training, atomically.

        ``metadata``: extra header entries (the command line stores the run's data options).
        """
        arrays: dict[str, Any] = {}
        arrays.update(with_prefix(self.encoder.params, "encoder"))
        arrays.update(with_prefix(self.decoder.params, "decoder"))
        arrays.update(with_prefix(self.denoiser.params, "denoiser"))
        arrays.update(with_prefix(self.ema.shadow, "ema"))
        for prefix, opt in (("opt_vae", self.vae_optimizer), ("opt_denoiser", self.denoiser_optimizer)):
            arrays.update({f"{prefix}.{k}": v for k, v in opt.state_arrays().items()})
        arrays["data.mean"] = self.data_mean
        if self.data_min is not None:
            arrays["data.min"] = self.data_min
            arrays["data.max"] = self.data_max
        state = {
            "vae_step": self.vae_state.step,
            "denoiser_step": self.denoiser_state.step,
            "vae_history": self.vae_state.history,
            "denoiser_history": self.denoiser_state.history,
            "vae_optimizer_t": self.vae_optimizer.t,
            "denoiser_optimizer_t": self.denoiser_optimizer.t,
            "ema_num_updates": self.ema.num_updates,
            "scale_factor": self.scale_factor,
            "data_std": self.data_std,
            "kl_per_dim": self.kl_per_dim,
        }
        return save_checkpoint(path, arrays, dataclasses.asdict(self.config), state, metadata)

    @classmethod
    def load(cls, path: str | Path, *, device: str = "cpu") -> LatentDiffusion:
        """Rebuild a model from ``save``'s file, ready to sample or to resume training."""
        arrays, config, state = load_checkpoint(path)
        known = {f.name for f in dataclasses.fields(LDMConfig)}
        # Checkpoints of ldm_np 0.1.0 store the retired CPU data-parallelism setting; it
        # never changed the model, so it is dropped.
        config.pop("workers", None)
        unknown = sorted(set(config) - known)
        if unknown:
            raise CheckpointError(
                f"{path} has config fields this ldm_np does not know: {unknown}; upgrade ldm_np"
            )
        try:
            model = cls(LDMConfig(**config), device=device)
            model.encoder.load_params(subtree(arrays, "encoder"))
            model.decoder.load_params(subtree(arrays, "decoder"))
            model.denoiser.load_params(subtree(arrays, "denoiser"))
            model.ema_denoiser.load_params(subtree(arrays, "ema"))
        except (ValueError, TypeError) as exc:
            raise CheckpointError(f"{path} does not fit its own configuration: {exc}") from None
        xp = model.xp
        for prefix, opt, t in (
            ("opt_vae", model.vae_optimizer, state["vae_optimizer_t"]),
            ("opt_denoiser", model.denoiser_optimizer, state["denoiser_optimizer_t"]),
        ):
            start = prefix + "."
            opt.load_state_arrays(
                {k[len(start) :]: xp.asarray(v) for k, v in arrays.items() if k.startswith(start)}, t
            )
        model.data_mean = xp.asarray(arrays["data.mean"])
        if "data.min" in arrays:
            model.data_min = xp.asarray(arrays["data.min"])
            model.data_max = xp.asarray(arrays["data.max"])
        model.vae_state = LoopState(state["vae_step"], [tuple(h) for h in state["vae_history"]])
        model.denoiser_state = LoopState(
            state["denoiser_step"], [tuple(h) for h in state["denoiser_history"]]
        )
        model.ema.num_updates = state["ema_num_updates"]
        model.scale_factor = float(state["scale_factor"])
        model.data_std = float(state["data_std"])
        model.kl_per_dim = state["kl_per_dim"]
        return model
