"""Losses, each returning its value and the gradient a backward pass needs.

Values stay on the device as 0-d arrays; bring them to the host (``float``)
only when logging, since on a GPU that is a synchronisation point.
"""

from __future__ import annotations

from typing import Any

from .backend import get_array_module
from .validation import check_array


def mse_loss(pred: Any, target: Any) -> tuple[Any, Any]:
    """Mean squared error over every element, and its gradient.

    loss = mean((pred - target)^2)       pred, target: [batch, features]
    dpred = 2 (pred - target) / numel     [batch, features]

    ``pred`` and ``target`` must have the same shape and dtype: a [batch, 1]
    prediction against a [batch] target would otherwise broadcast silently to
    [batch, batch] and return a wrong loss.
    """
    check_array(pred, "pred", shape=(None,) * getattr(pred, "ndim", 0), finite=False)
    check_array(target, "target", shape=tuple(pred.shape), dtype=pred.dtype, finite=False)
    diff = pred - target
    loss = (diff * diff).mean()
    dpred = diff  # diff is not needed any more: scale it in place
    dpred *= 2.0 / diff.size
    return loss, dpred


def kl_divergence(mu: Any, log_var: Any) -> Any:
    """KL( N(mu, exp(log_var)) || N(0, I) ), summed over latent dims, mean over the batch.

    KL = mean_batch( -0.5 * sum_latent(1 + log_var - mu^2 - exp(log_var)) )

    mu, log_var: [batch, latent] -> 0-d array. This is the closed form for a
    diagonal Gaussian posterior against a standard normal prior (Kingma &
    Welling, 2014, appendix B).
    """
    _check_posterior(mu, log_var)
    xp = get_array_module(mu, log_var)
    per_sample = -0.5 * (1.0 + log_var - mu * mu - xp.exp(log_var)).sum(axis=-1)  # [batch]
    return per_sample.mean()


def kl_divergence_backward(mu: Any, log_var: Any, dloss: Any = 1.0) -> tuple[Any, Any]:
    """Gradients of ``kl_divergence`` with respect to its inputs.

    dmu = dloss * mu / batch                          [batch, latent]
    dlog_var = dloss * 0.5 * (exp(log_var) - 1) / batch   [batch, latent]

    A NumPy scalar or 0-d array ``dloss`` is not a "weak" Python scalar under
    NumPy 2's promotion rules, so the results are cast back to ``mu.dtype``.
    """
    _check_posterior(mu, log_var)
    ### BEGIN SOLUTION kl_divergence_backward
    xp = get_array_module(mu, log_var)
    scale = dloss / mu.shape[0]
    dmu = (mu * scale).astype(mu.dtype, copy=False)
    dlog_var = ((xp.exp(log_var) - 1.0) * (0.5 * scale)).astype(mu.dtype, copy=False)
    return dmu, dlog_var
    ### END SOLUTION


def kl_per_dimension(mu: Any, log_var: Any) -> Any:
    """KL of each latent dimension, averaged over the batch: [latent].

    A dimension whose KL stays near 0 carries no information about the input
    (it is "inactive": the posterior equals the prior there).
    """
    xp = get_array_module(mu, log_var)
    return (-0.5 * (1.0 + log_var - mu * mu - xp.exp(log_var))).mean(axis=0)


def _check_posterior(mu: Any, log_var: Any) -> None:
    """mu and log_var: [batch, latent] float arrays of one shape and dtype (no value check)."""
    check_array(mu, "mu", shape=(None, None), finite=False)
    check_array(log_var, "log_var", shape=tuple(mu.shape), dtype=mu.dtype, finite=False)
