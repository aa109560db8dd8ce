"""Losses, each returning its value and the gradient a backward pass needs.

Values stay on the device as 0-d arrays; bring them to the host (``float``)
only when logging, since on a GPU that is a synchronisation point.
"""

from __future__ import annotations

from typing import Any

from .backend import get_array_module


def mse_loss(pred: Any, target: Any) -> tuple[Any, Any]:
    """Mean squared error over every element, and its gradient.

    loss = mean((pred - target)^2)       pred, target: [batch, features]
    dpred = 2 (pred - target) / numel     [batch, features]
    """
    diff = pred - target
    loss = (diff * diff).mean()
    dpred = diff * (2.0 / diff.size)
    return loss, dpred


def kl_divergence(mu: Any, log_var: Any) -> Any:
    """KL( N(mu, exp(log_var)) || N(0, I) ), summed over latent dims, mean over the batch.

    KL = mean_batch( -0.5 * sum_latent(1 + log_var - mu^2 - exp(log_var)) )

    mu, log_var: [batch, latent] -> 0-d array. This is the closed form for a
    diagonal Gaussian posterior against a standard normal prior (Kingma &
    Welling, 2014, appendix B).
    """
    xp = get_array_module(mu, log_var)
    per_sample = -0.5 * (1.0 + log_var - mu * mu - xp.exp(log_var)).sum(axis=-1)  # [batch]
    return per_sample.mean()


def kl_divergence_backward(mu: Any, log_var: Any, dloss: Any = 1.0) -> tuple[Any, Any]:
    """Gradients of ``kl_divergence`` with respect to its inputs.

    dmu = dloss * mu / batch                          [batch, latent]
    dlog_var = dloss * 0.5 * (exp(log_var) - 1) / batch   [batch, latent]
    """
    xp = get_array_module(mu, log_var)
    scale = dloss / mu.shape[0]
    dmu = mu * scale
    dlog_var = (xp.exp(log_var) - 1.0) * (0.5 * scale)
    return dmu, dlog_var


def kl_per_dimension(mu: Any, log_var: Any) -> Any:
    """KL of each latent dimension, averaged over the batch: [latent].

    A dimension whose KL stays near 0 carries no information about the input
    (it is "inactive": the posterior equals the prior there).
    """
    xp = get_array_module(mu, log_var)
    return (-0.5 * (1.0 + log_var - mu * mu - xp.exp(log_var))).mean(axis=0)
