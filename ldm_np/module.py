"""A small base class for models: parameters, gradients, one cache.

A model holds ``params`` as ``{layer_name: {param_name: array}}`` and
``grads`` with exactly the same structure. A forward call keeps one cache
(the previous one is dropped, so memory never grows); ``backward`` uses it and
overwrites ``grads``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from .backend import device_of, get_array_module, to_device

ParamTree = dict[str, dict[str, Any]]


def iter_params(tree: ParamTree) -> Iterator[tuple[str, str, Any]]:
    """Yield ``(layer_name, param_name, array)`` in a fixed order."""
    for layer, group in tree.items():
        for name, value in group.items():
            yield layer, name, value


def flatten(tree: ParamTree) -> dict[str, Any]:
    """``{"layer.param": array}``: the flat form used in checkpoint files."""
    return {f"{layer}.{name}": value for layer, name, value in iter_params(tree)}


def count(tree: ParamTree) -> int:
    """Number of scalars in a parameter tree."""
    return sum(int(v.size) for _, _, v in iter_params(tree))


class Module:
    """Base of Encoder, Decoder and Denoiser: ``params``, ``grads``, one cache."""

    def __init__(self, params: ParamTree, device: str = "cpu") -> None:
        self.params: ParamTree = to_device(params, device)
        self.grads: ParamTree = {
            layer: {name: self.xp.zeros_like(v) for name, v in group.items()}
            for layer, group in self.params.items()
        }
        self._cache: Any = None

    @property
    def xp(self) -> Any:
        """The array module the parameters live in (numpy or cupy)."""
        return get_array_module(next(iter(next(iter(self.params.values())).values())))

    @property
    def dtype(self) -> np.dtype:
        return next(iter(next(iter(self.params.values())).values())).dtype

    @property
    def device(self) -> str:
        return device_of(next(iter(next(iter(self.params.values())).values())))

    @property
    def num_params(self) -> int:
        return count(self.params)

    def _take_cache(self) -> Any:
        if self._cache is None:
            raise RuntimeError(
                f"{type(self).__name__}.backward was called before a forward pass; "
                "call the model on a batch first"
            )
        cache, self._cache = self._cache, None
        return cache

    def clear_cache(self) -> None:
        """Drop the activations kept for the backward pass (after an inference-only forward)."""
        self._cache = None

    def load_params(self, tree: ParamTree) -> None:
        """Copy values from ``tree`` (same layers, names, shapes) into ``params``."""
        for layer, name, value in iter_params(self.params):
            try:
                new = tree[layer][name]
            except KeyError:
                raise ValueError(f"missing parameter {layer}.{name}") from None
            if tuple(new.shape) != tuple(value.shape):
                raise ValueError(
                    f"parameter {layer}.{name} has shape {list(new.shape)}, "
                    f"the model expects {list(value.shape)}"
                )
            value[...] = self.xp.asarray(new, dtype=value.dtype)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._config_repr()}, params={self.num_params:,}, dtype={self.dtype.name}, device={self.device!r})"

    def _config_repr(self) -> str:  # pragma: no cover - overridden
        return ""
