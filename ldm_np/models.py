"""The public builders, with the names and defaults of Edifice's ``LatentDiffusion``.

    encoder, decoder, denoiser = build(input_size=287)

Defaults: latent 32, hidden 256, 4 residual blocks, 1000 diffusion steps. They
live in ``DEFAULTS`` alone: the builders, ``param_count`` and ``LDMConfig``
read them from there, and the model classes take every size explicitly.
"""

from __future__ import annotations

from typing import Any

from .denoiser import Denoiser
from .vae import Decoder, Encoder
from .validation import check_int

DEFAULTS = {
    "input_size": 287,
    "latent_size": 32,
    "hidden_size": 256,
    "num_layers": 4,
    "num_steps": 1000,
}


def build_encoder(
    input_size: int,
    latent_size: int = DEFAULTS["latent_size"],
    hidden_size: int = DEFAULTS["hidden_size"],
    *,
    seed: int = 0,
    dtype: Any = "float32",
    device: str = "cpu",
) -> Encoder:
    """The VAE encoder: x [batch, input_size] -> (mu, log_var) [batch, latent_size]."""
    return Encoder(input_size, latent_size, hidden_size, seed=seed, dtype=dtype, device=device)


def build_decoder(
    input_size: int,
    latent_size: int = DEFAULTS["latent_size"],
    hidden_size: int = DEFAULTS["hidden_size"],
    *,
    output_activation: str = "linear",
    seed: int = 0,
    dtype: Any = "float32",
    device: str = "cpu",
) -> Decoder:
    """The VAE decoder: z [batch, latent_size] -> x_hat [batch, input_size].

    ``output_activation="sigmoid"`` bounds x_hat to (0, 1), for data scaled to [0, 1].
    """
    return Decoder(
        input_size,
        latent_size,
        hidden_size,
        output_activation=output_activation,
        seed=seed,
        dtype=dtype,
        device=device,
    )


def build_denoiser(
    latent_size: int = DEFAULTS["latent_size"],
    hidden_size: int = DEFAULTS["hidden_size"],
    num_layers: int = DEFAULTS["num_layers"],
    num_steps: int = DEFAULTS["num_steps"],
    *,
    time_input: str = "index",
    num_classes: int | None = None,
    seed: int = 0,
    dtype: Any = "float32",
    device: str = "cpu",
) -> Denoiser:
    """The latent denoiser: (z_t [batch, latent_size], t [batch]) -> eps_hat [batch, latent_size].

    ``time_input="fraction"`` reproduces Edifice's embedding of
    t / num_steps; the default ``"index"`` embeds t itself, as DDPM does, so
    every channel of the embedding varies over the schedule. On the digits the
    two trained equally well (README: "The time embedding").
    """
    return Denoiser(
        latent_size,
        hidden_size,
        num_layers,
        num_steps,
        time_input=time_input,
        num_classes=num_classes,
        seed=seed,
        dtype=dtype,
        device=device,
    )


def build(
    input_size: int,
    latent_size: int = DEFAULTS["latent_size"],
    hidden_size: int = DEFAULTS["hidden_size"],
    num_layers: int = DEFAULTS["num_layers"],
    num_steps: int = DEFAULTS["num_steps"],
    *,
    time_input: str = "index",
    seed: int = 0,
    dtype: Any = "float32",
    device: str = "cpu",
) -> tuple[Encoder, Decoder, Denoiser]:
    """Build the three models of a latent diffusion model: ``(encoder, decoder, denoiser)``.

    Each model draws its initial parameters from its own generator, seeded
    from ``seed`` (seed, seed + 1, seed + 2), so the three are independent and
    the whole build is reproducible.
    """
    encoder = build_encoder(input_size, latent_size, hidden_size, seed=seed, dtype=dtype, device=device)
    decoder = build_decoder(input_size, latent_size, hidden_size, seed=seed + 1, dtype=dtype, device=device)
    denoiser = build_denoiser(
        latent_size,
        hidden_size,
        num_layers,
        num_steps,
        time_input=time_input,
        seed=seed + 2,
        dtype=dtype,
        device=device,
    )
    return encoder, decoder, denoiser


def output_size(latent_size: int = DEFAULTS["latent_size"], **_: Any) -> int:
    """The denoiser's output width: the latent size."""
    return check_int(latent_size, "latent_size")


def recommended_defaults() -> dict[str, int]:
    """Edifice's ``LatentDiffusion`` defaults: input 287, latent 32, hidden 256, 4 layers, 1000 steps."""
    return dict(DEFAULTS)


def param_count(
    input_size: int = DEFAULTS["input_size"],
    latent_size: int = DEFAULTS["latent_size"],
    hidden_size: int = DEFAULTS["hidden_size"],
    num_layers: int = DEFAULTS["num_layers"],
    **_: Any,
) -> int:
    """The exact number of scalars in the three models ``build`` returns.

    With i = input, l = latent, h = hidden, L = num_layers, counting every
    kernel, bias, gamma and beta:

    encoder  = (i h + h) + (h h + h) + 2 (h l + l)
    decoder  = (l h + h) + (h h + h) + (h i + i)
    denoiser = (h h + h) + (l h + h) + L (2h + (4h h + 4h) + (4h h + h)) + (h l + l)
    """
    i = check_int(input_size, "input_size")
    l_ = check_int(latent_size, "latent_size")
    h = check_int(hidden_size, "hidden_size")
    n_layers = check_int(num_layers, "num_layers", minimum=0)
    encoder = (i * h + h) + (h * h + h) + 2 * (h * l_ + l_)
    decoder = (l_ * h + h) + (h * h + h) + (h * i + i)
    block = 2 * h + (4 * h * h + 4 * h) + (4 * h * h + h)
    denoiser = (h * h + h) + (l_ * h + h) + n_layers * block + (h * l_ + l_)
    return encoder + decoder + denoiser
