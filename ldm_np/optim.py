"""Optimizers: Adam and AdamW, written from the published algorithms.

Both update parameters in place and keep their state (first and second
moments, step count) per parameter. For the same gradients they give the
same numbers as ``torch.optim.Adam`` / ``torch.optim.AdamW``.
"""

from __future__ import annotations

from typing import Any

from .backend import get_array_module
from .module import ParamTree, iter_params
from .validation import check_float, check_int, check_param_trees


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

    def __repr__(self) -> str:
        return f"{type(self).__name__}(lr={self.lr}, betas={self.betas}, eps={self.eps}, weight_decay={self.weight_decay}, t={self.t})"

    def step(self, params: ParamTree, grads: ParamTree) -> None:
        """One step of the update above for every array of ``params``, in place, from ``grads``."""
        check_param_trees(params=params, grads=grads)
        ### BEGIN SOLUTION adam_step
        self.t += 1
        b1, b2 = self.betas
        for layer, name, p in iter_params(params):
            g = grads[layer][name]
            m, v = self.moments(f"{layer}.{name}", p)
            if self.decoupled:
                p -= self.lr * self.weight_decay * p  # AdamW: decay the weights themselves
            elif self.weight_decay:
                g = g + self.weight_decay * p  # Adam: an L2 penalty in the gradient
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * g * g
            m_hat = m / (1 - b1**self.t)
            v_hat = v / (1 - b2**self.t)
            p -= self.lr * m_hat / (get_array_module(p).sqrt(v_hat) + self.eps)
        ### END SOLUTION

    def moments(self, key: str, p: Any) -> tuple[Any, Any]:
        """The first and second moments (m, v) of parameter ``key``: zeros like ``p`` at first use."""
        if key not in self.state:
            xp = get_array_module(p)
            self.state[key] = {"m": xp.zeros_like(p), "v": xp.zeros_like(p)}
        return self.state[key]["m"], self.state[key]["v"]

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
        if not isinstance(arrays, dict) or not all(str(k).startswith(("m.", "v.")) for k in arrays):
            raise TypeError(
                f"arrays must be the dict of state_arrays(), {{'m.layer.param': array}}, got {arrays!r:.60}"
            )
        t = check_int(t, "t", minimum=0)
        self.state = {}
        for name, value in arrays.items():
            kind, key = name.split(".", 1)
            self.state.setdefault(key, {})[kind] = value.copy()
        self.t = t


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


def global_grad_norm(grads: ParamTree) -> Any:
    """sqrt(sum of squares of every gradient entry), as a 0-d array (no host sync)."""
    squares = [(g * g).sum() for _, _, g in iter_params(grads)]  # one 0-d per tensor
    # Summed from the first square and rooted by sqrt: NumPy 1.x turns a float32
    # scalar plus a Python 0, or to the power of a Python 0.5, into float64.
    return get_array_module(squares[0]).sqrt(sum(squares[1:], squares[0]))


def clip_grad_norm(grads: ParamTree, max_norm: float) -> Any:
    """Scale all gradients in place so their global norm is at most ``max_norm``.

    scale = min(1, max_norm / (norm + 1e-6)), as in ``torch.nn.utils.clip_grad_norm_``.
    Returns the norm before clipping (a 0-d array). The scale stays on the
    device, so this never waits for the GPU.
    """
    check_param_trees(grads=grads)
    max_norm = check_float(max_norm, "max_norm", low=0.0, low_open=True)
    norm = global_grad_norm(grads)
    scale = get_array_module(norm).minimum(max_norm / (norm + 1e-6), 1.0)
    for _, _, g in iter_params(grads):
        g *= scale
    return norm
