"""ldm_np: a latent diffusion model written from scratch in NumPy, every gradient by hand.

    import ldm_np
    encoder, decoder, denoiser = ldm_np.build(input_size=64, latent_size=8)

See README.md for the tour.
"""

from .anomaly import detect_anomaly
from .backend import default_rng, get_array_module, gpu_available, to_device, to_numpy
from .denoiser import Denoiser
from .gradcheck import check_module, numerical_gradient, rel_error
from .losses import kl_divergence, kl_divergence_backward, kl_divergence_forward
from .models import (
    build,
    build_decoder,
    build_denoiser,
    build_encoder,
    output_size,
    param_count,
    recommended_defaults,
)
from .optim import Adam, AdamW, clip_grad_norm
from .schedules import make_schedule
from .vae import Decoder, Encoder, reparameterize, reparameterize_backward, reparameterize_forward

__version__ = "0.1.0"

__all__ = [
    "Adam",
    "AdamW",
    "Decoder",
    "Denoiser",
    "Encoder",
    "build",
    "build_decoder",
    "build_denoiser",
    "build_encoder",
    "check_module",
    "clip_grad_norm",
    "default_rng",
    "detect_anomaly",
    "get_array_module",
    "gpu_available",
    "kl_divergence",
    "kl_divergence_backward",
    "kl_divergence_forward",
    "make_schedule",
    "numerical_gradient",
    "output_size",
    "param_count",
    "recommended_defaults",
    "rel_error",
    "reparameterize",
    "reparameterize_backward",
    "reparameterize_forward",
    "to_device",
    "to_numpy",
]
