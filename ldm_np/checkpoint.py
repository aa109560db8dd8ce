"""Checkpoints as safetensors files: weights as tensors, the rest as JSON metadata.

safetensors is the standard format for model weights: a JSON header and raw
arrays, so loading a file can never execute code (unlike pickle), and
PyTorch users can read it with ``safetensors.torch.load_file``.

A checkpoint holds ``format_version``, a JSON ``config`` and a JSON ``state``
(step counters, scale factor, histories, ...) in the header's metadata, and
every array under a dotted name (``encoder.enc_dense_0.kernel``,
``ema.noise_pred.bias``, ``opt_denoiser.m.z_proj.kernel``, ...).

Writes are atomic: the file is written beside the target under a temporary
name and renamed over it, so a crash mid-save leaves the previous file intact.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import load_file, save_file

from .backend import to_numpy

FORMAT_VERSION = 1
FORMAT_NAME = "ldm_np"


class CheckpointError(ValueError):
    """A checkpoint file is missing, damaged, of another format or version, or does not fit."""


def save_checkpoint(path: str | os.PathLike, arrays: dict[str, Any], config: dict, state: dict) -> Path:
    """Write ``arrays`` (moved to the host) with ``config`` and ``state`` to ``path``, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {name: np.ascontiguousarray(to_numpy(a)) for name, a in arrays.items()}
    metadata = {
        "format": FORMAT_NAME,
        "format_version": str(FORMAT_VERSION),
        "config": json.dumps(config),
        "state": json.dumps(state),
    }
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        os.replace(tmp, path)  # atomic on POSIX and Windows
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict, dict]:
    """Read a checkpoint: ``(arrays, config, state)``. Raises ``CheckpointError`` with advice."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        with safe_open(str(path), framework="np") as f:
            metadata = f.metadata() or {}
        arrays = load_file(str(path))
    except (SafetensorError, OSError, ValueError, json.JSONDecodeError) as exc:
        raise CheckpointError(
            f"{path} is not a readable safetensors checkpoint ({exc}); it may be truncated, "
            "corrupted, or a file of another format (ldm_np never reads pickle files)"
        ) from None
    if metadata.get("format") != FORMAT_NAME:
        raise CheckpointError(
            f"{path} is a safetensors file but not an ldm_np checkpoint (no ldm_np metadata)"
        )
    try:
        version = int(metadata["format_version"])
    except (KeyError, ValueError):
        raise CheckpointError(f"{path} has no valid format_version") from None
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} was written by a newer ldm_np (checkpoint format {version}; this version reads "
            f"up to {FORMAT_VERSION}). Upgrade ldm_np to load it."
        )
    if version < FORMAT_VERSION:  # pragma: no cover - no older format exists yet
        raise CheckpointError(
            f"{path} uses checkpoint format {version}, older than this ldm_np's {FORMAT_VERSION}. "
            "Load it with the ldm_np version that wrote it, or retrain."
        )
    try:
        config = json.loads(metadata["config"])
        state = json.loads(metadata["state"])
    except (KeyError, json.JSONDecodeError):
        raise CheckpointError(f"{path} has damaged metadata (config/state are not valid JSON)") from None
    return arrays, config, state


def subtree(arrays: dict[str, np.ndarray], prefix: str) -> dict[str, dict[str, np.ndarray]]:
    """``{"prefix.layer.param": a}`` -> ``{layer: {param: a}}``."""
    out: dict[str, dict[str, np.ndarray]] = {}
    start = prefix + "."
    for name, value in arrays.items():
        if name.startswith(start):
            layer, param = name[len(start) :].rsplit(".", 1)
            out.setdefault(layer, {})[param] = value
    return out


def with_prefix(tree: dict[str, dict[str, Any]], prefix: str) -> dict[str, Any]:
    """``{layer: {param: a}}`` -> ``{"prefix.layer.param": a}``."""
    return {f"{prefix}.{layer}.{name}": v for layer, group in tree.items() for name, v in group.items()}
