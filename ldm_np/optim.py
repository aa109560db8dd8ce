"""Optimizers: Adam and AdamW, written from the published algorithms.

Both update parameters in place and keep their state (first and second
moments, step count) per parameter. For the same gradients they give the
same numbers as ``torch.optim.Adam`` / ``torch.optim.AdamW``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .backend import get_array_module
from .module import ParamTree, iter_params
from .parallel import parallel_map
from .validation import check_float

# The update makes 12 passes over each parameter's arrays (p, g, m, v and a
# work array). Done in chunks of this many entries (256 KiB in float32), the
# five chunks stay in the L2 cache between passes: about 20% faster on the CPU
# than whole-array passes for the denoiser's 1 MiB kernels.
UPDATE_CHUNK = 64 * 1024


def _chunks(*arrays: Any) -> list[tuple[Any, ...]]:
    """Matching pieces of same-shaped arrays of at most ``UPDATE_CHUNK`` entries, as views.

    The pieces are flat slices of C-contiguous NumPy arrays; anything else
    (CuPy arrays, where one kernel per pass is best, or non-contiguous views,
    which could not be sliced flat without a copy) comes back whole.
    """
    first = arrays[0]
    contiguous = all(getattr(a, "flags", None) is not None and a.flags.c_contiguous for a in arrays)
    if get_array_module(first) is not np or not contiguous or first.size <= UPDATE_CHUNK:
        return [arrays]
    flat = [a.reshape(-1) for a in arrays]  # views: the arrays are contiguous
    return [tuple(f[i : i + UPDATE_CHUNK] for f in flat) for i in range(0, first.size, UPDATE_CHUNK)]


class Adam:
    """Adam (Kingma & Ba, 2015), with optional L2 weight decay.

    For each parameter p with gradient g, at step t = 1, 2, ...:

        g = g + weight_decay * p                (L2 penalty, Adam only)
        m = beta1 m + (1 - beta1) g
        v = beta2 v + (1 - beta2) g^2
        m_hat = m / (1 - beta1^t),  v_hat = v / (1 - beta2^t)
        p = p - lr * m_hat / (sqrt(v_hat) + eps)

    ``lr`` may be changed between steps (for warm-up and decay).
    """

    decoupled = False

    def __init__(
        self,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        self.lr = check_float(lr, "lr", low=0.0)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        b1 = check_float(betas[0], "betas[0]", low=0.0, high=1.0)
        b2 = check_float(betas[1], "betas[1]", low=0.0, high=1.0)
        if b1 >= 1.0 or b2 >= 1.0:
            raise ValueError(f"betas must each be < 1, got {betas!r}")
        self.betas = (b1, b2)
        self.eps = check_float(eps, "eps", low=0.0, low_open=True)
        self.weight_decay = check_float(weight_decay, "weight_decay", low=0.0)
        self.t = 0
        self.state: dict[str, dict[str, Any]] = {}  # "layer.param" -> {"m", "v"}
        # One work array per parameter, reused at every step so that an update
        # allocates nothing. Not part of the state: it never carries information.
        self._scratch: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(lr={self.lr}, betas={self.betas}, eps={self.eps}, weight_decay={self.weight_decay}, t={self.t})"

    def step(self, params: ParamTree, grads: ParamTree, *, workers: int = 1) -> None:
        """Update every array of ``params`` in place from ``grads`` (same structure).

        One step of the update in the class docstring, for every parameter
        (``iter_params`` walks the tree): count the step first (``self.t``, so
        t = 1 at the first call); keep each parameter's moments in
        ``self.state["layer.param"] = {"m": ..., "v": ...}``, zeros like the
        parameter on first use (``state_arrays`` reads them there); for AdamW
        (``self.decoupled``) shrink p by (1 - lr * weight_decay) before the
        update and leave g alone, for Adam add weight_decay * p to g. Change p
        in place: the arrays in ``params`` are the model's own.

        Each parameter's update is independent of the others', so with
        ``workers`` > 1 the parameters are shared out among that many threads
        (``ldm_np.parallel``); the numbers are the same.
        """
        ### BEGIN SOLUTION adam_step
        self.t += 1
        b1, b2 = self.betas
        bias1 = 1.0 - b1**self.t
        bias2 = 1.0 - b2**self.t
        sqrt_bias2 = math.sqrt(bias2)
        step_scaled = self.lr / bias1 * sqrt_bias2
        eps_scaled = self.eps * sqrt_bias2

        def update_one(item: tuple[str, str, Any]) -> None:
            layer, name, p = item
            g = grads[layer][name]
            key = f"{layer}.{name}"
            xp = get_array_module(p)
            state = self.state.get(key)
            if state is None:
                state = self.state[key] = {"m": xp.zeros_like(p), "v": xp.zeros_like(p)}
            m, v = state["m"], state["v"]
            if self.decoupled and self.weight_decay:
                p *= 1.0 - self.lr * self.weight_decay
            pieces = _chunks(p, g, m, v)
            work = self._scratch.get(key)
            if work is None or work.size < pieces[0][0].size or work.dtype != p.dtype:
                work = self._scratch[key] = xp.empty(pieces[0][0].size, dtype=p.dtype)
            for p_, g_, m_, v_ in pieces:
                w = work[: p_.size].reshape(p_.shape)
                if self.weight_decay and not self.decoupled:
                    g_ = g_ + self.weight_decay * p_
                # The update above, every operation in place; ``w`` holds each
                # intermediate in turn, so nothing is allocated.
                m_ *= b1
                m_ += xp.multiply(g_, 1.0 - b1, out=w)  # m = b1 m + (1 - b1) g
                v_ *= b2
                w = xp.multiply(g_, g_, out=w)
                w *= 1.0 - b2
                v_ += w  # v = b2 v + (1 - b2) g^2
                # lr m_hat / (sqrt(v_hat) + eps), with sqrt(1 - b2^t) moved from the
                # denominator into the step size: one pass fewer, the same number.
                denom = xp.sqrt(v_, out=w)
                denom += eps_scaled  # sqrt(v) + eps sqrt(1 - b2^t)
                update = xp.divide(m_, denom, out=w)
                update *= step_scaled
                p_ -= update  # p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)

        parallel_map(update_one, list(iter_params(params)), workers)
        ### END SOLUTION

    def state_arrays(self) -> dict[str, Any]:
        """The moments as a flat dict ``{"m.layer.param": array, "v.layer.param": array}``."""
        out = {}
        for key, s in self.state.items():
            out[f"m.{key}"] = s["m"]
            out[f"v.{key}"] = s["v"]
        return out

    def load_state_arrays(self, arrays: dict[str, Any], t: int) -> None:
        """Restore the moments written by ``state_arrays`` and the step count.

        The arrays are copied: the optimizer updates its moments in place, and
        must not change the caller's arrays (or another optimizer's state).
        """
        self.state = {}
        for name, value in arrays.items():
            kind, key = name.split(".", 1)
            self.state.setdefault(key, {})[kind] = value.copy()
        self.t = int(t)


class AdamW(Adam):
    """AdamW (Loshchilov & Hutter, 2019): weight decay decoupled from the gradient.

        p = p - lr * weight_decay * p           (before the Adam update)

    then the Adam update above with the raw gradient. Default weight_decay 0.01,
    as in PyTorch.
    """

    decoupled = True

    def __init__(
        self,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.01,
    ) -> None:
        super().__init__(lr, betas, eps, weight_decay)


def global_grad_norm(grads: ParamTree, *, workers: int = 1) -> Any:
    """sqrt(sum of squares of every gradient entry), as a 0-d array (no host sync)."""

    parts = parallel_map(lambda g: (g * g).sum(), [g for _, _, g in iter_params(grads)], workers)
    total = parts[0]
    for part in parts[1:]:
        total = total + part
    return total**0.5


def clip_grad_norm(grads: ParamTree, max_norm: float, *, workers: int = 1) -> Any:
    """Scale all gradients in place so their global norm is at most ``max_norm``.

    scale = min(1, max_norm / (norm + 1e-6)), as in ``torch.nn.utils.clip_grad_norm_``.
    Returns the norm before clipping (a 0-d array). The scale is computed on the
    device, so this never waits for the GPU. ``workers`` threads share the
    arrays out (``ldm_np.parallel``).
    """
    max_norm = check_float(max_norm, "max_norm", low=0.0, low_open=True)
    norm = global_grad_norm(grads, workers=workers)
    xp = get_array_module(norm)
    scale = xp.minimum(max_norm / (norm + 1e-6), 1.0).astype(norm.dtype)

    def rescale(g: Any) -> None:
        g *= scale

    parallel_map(rescale, [g for _, _, g in iter_params(grads)], workers)
    return norm
