"""Find where a NaN is born: check every layer's output while the detector is on.

    with ldm_np.detect_anomaly():
        loss = train_step(...)   # raises at the first layer that outputs NaN or infinity

The low-level math propagates NaN and infinity without a word (README, "NaN
and infinity"), so a NaN born in one layer reaches the loss many layers
later and says nothing about where it came from. Inside ``detect_anomaly``
the Encoder, Decoder and Denoiser pass each layer's output, forward and
backward, to ``check``, which raises ``AnomalyError`` at the first
non-finite value, naming the module, the layer (``denoiser_block_2_up``),
the pass and the training step, as ``torch.autograd.detect_anomaly`` does.

Off by default, and free when off: ``check`` then returns at its first line.
When on, every check reads the whole array (on a GPU, a device sync per
layer): a debugging tool, slow on purpose.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from .backend import get_array_module, to_numpy
from .validation import check_choice, check_int

PASSES = ("forward", "backward")


class AnomalyError(FloatingPointError):
    """A layer produced NaN or infinity while ``detect_anomaly`` was on."""


class _State:
    enabled = False
    step: int | None = None  # the training step, set by the training loops


def is_enabled() -> bool:
    """Whether ``detect_anomaly`` is on."""
    return _State.enabled


@contextmanager
def detect_anomaly() -> Iterator[None]:
    """Check every layer output inside the block; raise ``AnomalyError`` at the first non-finite one.

    Nested blocks are allowed; the detector is off again when the outermost
    block ends (also on an exception).
    """
    before = (_State.enabled, _State.step)
    _State.enabled = True  # the step stays as it is: a nested block inside a training step keeps it
    try:
        yield
    finally:
        _State.enabled, _State.step = before


def set_step(step: int | None) -> None:
    """Record the training step that the next checks belong to (None: not in a training loop).

    The training loops call it every step; while the detector is off it does
    nothing, so no step outlives the ``detect_anomaly`` block it belongs to.
    """
    if not _State.enabled:
        return  # off: free
    _State.step = None if step is None else check_int(step, "step", minimum=0)


def check(array: Any, module: str, layer: str, pass_: str, step: int | None = None) -> Any:
    """Return ``array``; if the detector is on and it holds NaN or infinity, raise ``AnomalyError``.

    array: a layer's output (forward) or the gradient it hands back (backward).
    module: the model ("Denoiser"); layer: its name in ``params``
    ("denoiser_block_2_up"); pass_: "forward" or "backward"; step: the
    training step (default: the one given to ``set_step``).
    """
    if not _State.enabled:
        return array  # off: free
    check_choice(pass_, "pass_", PASSES)
    if not isinstance(module, str) or not isinstance(layer, str):
        raise TypeError(f"module and layer must be names (str), got {module!r} and {layer!r}")
    step = _State.step if step is None else check_int(step, "step", minimum=0)
    if not hasattr(array, "dtype"):
        raise TypeError(f"array must be a NumPy or CuPy array, got {type(array).__name__}")
    xp = get_array_module(array)
    if bool(to_numpy(xp.isfinite(array).all())):  # reads the device: the detector's cost
        return array
    values = to_numpy(array)
    nans, infs = int(np.isnan(values).sum()), int(np.isinf(values).sum())
    at_step = "" if step is None else f" at training step {step}"
    where = "its input and parameters" if pass_ == "forward" else "the gradient it received and its input"
    raise AnomalyError(
        f"detect_anomaly: the {pass_} pass of {module} produced a non-finite value in layer "
        f"{layer}{at_step} ({nans} NaN, {infs} infinite of {values.size} values, shape "
        f"{list(values.shape)}); every layer checked before it in this pass was finite: look at {where}"
    )


def check_layers(module: str, pass_: str, *named: tuple[str, Any]) -> None:
    """``check`` each (layer, value) in the order given; a value is an array or a dict of arrays (grads).

    For the backward pass, where a layer's gradients are a dict: the first
    layer (in backward order) whose gradient holds NaN or infinity is named.
    """
    if not _State.enabled:
        return  # off: free
    check_choice(pass_, "pass_", PASSES)
    if not isinstance(module, str):
        raise TypeError(f"module must be a name (str), got {module!r}")
    for layer, value in named:
        for array in value.values() if isinstance(value, dict) else (value,):
            check(array, module, layer, pass_)


def check_residual_block(out: Any, cache: Any, module: str, prefix: str) -> None:
    """Forward checks inside ``layers.residual_block_forward``: norm, up, its SiLU, then down (+ skip).

    Reads the block's cache (c_norm, c_up, c_act, c_down): the up layer's
    input is the norm's output, the SiLU's input the up layer's output, the
    down layer's input the SiLU's output; ``out`` = h + down(...).
    """
    if not _State.enabled:
        return  # off: free
    _, (normed, _), (up, _), (act, _) = cache
    check_layers(
        module,
        "forward",
        (f"{prefix}_norm", normed),
        (f"{prefix}_up", up),
        (f"{prefix}_up", act),  # the SiLU after the up layer
        (f"{prefix}_down", out),
    )


__all__ = [
    "PASSES",
    "AnomalyError",
    "check",
    "check_layers",
    "check_residual_block",
    "detect_anomaly",
    "is_enabled",
    "set_step",
]
