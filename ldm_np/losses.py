"""Losses, each a forward and its backward, in the layers' contract.

    loss, cache = op_forward(...)
    dinputs = op_backward(dloss, cache)

``dloss`` is dL/d(loss), 1.0 for a loss used alone. Values stay on the device
as 0-d arrays; bring them to the host (``float``) only when logging, since on
a GPU that is a synchronisation point.
"""

from __future__ import annotations

from typing import Any

from .backend import get_array_module
from .validation import check_array


def mse_forward(pred: Any, target: Any) -> tuple[Any, Any]:
    """Mean squared error over every element: loss = mean((pred - target)^2).

    pred, target: [batch, features] -> 0-d array.
    """
    diff = pred - target  # [batch, features]
    loss = (diff * diff).mean()
    return loss, diff


def mse_backward(dloss: Any, cache: Any) -> Any:
    """dpred = dloss * 2 (pred - target) / numel   [batch, features]."""
    diff = cache
    return dloss * 2.0 / diff.size * diff


def kl_divergence_forward(mu: Any, log_var: Any) -> tuple[Any, Any]:
    """KL( N(mu, exp(log_var)) || N(0, I) ), summed over latent dims, mean over the batch.

    KL = mean_batch( -0.5 * sum_latent(1 + log_var - mu^2 - exp(log_var)) )

    mu, log_var: [batch, latent] -> 0-d array. This is the closed form for a
    diagonal Gaussian posterior against a standard normal prior (Kingma &
    Welling, 2014, appendix B). The cache holds mu and exp(log_var).
    """
    xp = get_array_module(mu, log_var)
    var = xp.exp(log_var)  # [batch, latent]
    kl = (-0.5 * (1.0 + log_var - mu * mu - var).sum(axis=-1)).mean()
    return kl, (mu, var)


def kl_divergence_backward(dkl: Any, cache: Any) -> tuple[Any, Any]:
    """Gradients of ``kl_divergence_forward`` from dkl = dL/dKL (a scalar).

    KL = (1 / batch) sum_{rows, latent} 0.5 * (mu^2 + exp(log_var) - 1 - log_var);
    cache = (mu, exp(log_var)), both [batch, latent]. Returns (dmu, dlog_var),
    both [batch, latent].

    Formula:
        dmu = dkl * mu / batch
        dlog_var = dkl * 0.5 * (exp(log_var) - 1) / batch
    """
    ### BEGIN SOLUTION kl_divergence_backward
    mu, var = cache
    batch = mu.shape[0]
    dmu = dkl * mu / batch
    dlog_var = dkl * 0.5 * (var - 1.0) / batch
    return dmu, dlog_var
    ### END SOLUTION


def kl_divergence(mu: Any, log_var: Any) -> Any:
    """The KL term of the VAE loss (see ``kl_divergence_forward``): a 0-d array.

    mu, log_var: [batch, latent] float arrays of one shape and dtype.
    """
    check_array(mu, "mu", shape=(None, None), finite=False)
    check_array(log_var, "log_var", shape=tuple(mu.shape), dtype=mu.dtype, finite=False)
    kl, _ = kl_divergence_forward(mu, log_var)
    return kl


def kl_per_dimension(mu: Any, log_var: Any) -> Any:
    """KL of each latent dimension, averaged over the batch: [latent].

    A dimension whose KL stays near 0 carries no information about the input
    (it is "inactive": the posterior equals the prior there).
    """
    xp = get_array_module(mu, log_var)
    return (-0.5 * (1.0 + log_var - mu * mu - xp.exp(log_var))).mean(axis=0)
