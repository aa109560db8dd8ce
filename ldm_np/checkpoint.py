"""Checkpoints as safetensors files: weights as tensors, the rest as JSON metadata.

safetensors is the standard format for model weights: a JSON header and raw
arrays, so loading a file can never execute code (unlike pickle), and
PyTorch users can read it with ``safetensors.torch.load_file``.

A checkpoint holds ``format_version``, a JSON ``config`` and a JSON ``state``
(step counters, scale factor, histories, ...) in the header's metadata, and
every array under a dotted name (``encoder.enc_dense_0.kernel``,
``ema.noise_pred.bias``, ``opt_denoiser.m.z_proj.kernel``, ...). Callers may
add metadata of their own (the command line stores the run's data options
under ``run``).

Format 2 adds ``sha256``: a JSON map from each tensor's name to the SHA-256 of
its bytes. Loading recomputes them, so a flipped bit anywhere in the weights
is refused as a damaged file instead of sampling garbage. Format 1 files (no
checksums) still load. Non-finite values (NaN, inf) are refused both ways: a
diverged model is never written, and a file holding one is never loaded.

Writes are atomic: the file is written beside the target under a temporary
name (``<name>.<random>.tmp``), flushed to disk and renamed over it, so a
crash or a full disk mid-save leaves the previous file intact and nothing
half-written under the real name. A temporary left by a killed process is
found by ``stale_temporaries`` and removed by the next run.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import load_file
from safetensors.numpy import save as serialize

from .backend import to_numpy
from .validation import check_path

FORMAT_VERSION = 2
OLDEST_FORMAT = 1  # format 1: no checksums
FORMAT_NAME = "ldm_np"
RESERVED_KEYS = ("format", "format_version", "config", "state", "sha256")


class CheckpointError(ValueError):
    """A checkpoint file is missing, damaged, of another format or version, or does not fit."""


def tensor_sha256(a: np.ndarray) -> str:
    """The SHA-256 of an array's bytes (C order), as hex."""
    return hashlib.sha256(memoryview(np.ascontiguousarray(a)).cast("B")).hexdigest()


def first_non_finite(arrays: dict[str, np.ndarray]) -> str | None:
    """The name of the first floating-point array holding a NaN or an infinity (None if all are finite)."""
    for name, a in arrays.items():
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            return name
    return None


def temporary_name_pattern(path: str | os.PathLike) -> str:
    """The glob that matches ``save_checkpoint``'s temporaries for ``path``."""
    return f"{Path(check_path(path)).name}.*.tmp"


def stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Temporaries of ``path`` left behind by a killed save (none while no save runs)."""
    path = Path(check_path(path))
    return sorted(path.parent.glob(temporary_name_pattern(path))) if path.parent.is_dir() else []


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def open_atomically(path: str | os.PathLike) -> Iterator[Any]:
    """A binary file that appears at ``path`` whole or not at all.

    Writes go to a temporary beside ``path``; when the block ends it is
    flushed to disk and renamed over ``path``. On any failure (a full disk,
    a signal) the temporary is removed and the previous file, if any, is
    untouched. A full disk is reported as an ``OSError`` that says so.
    """
    path = Path(check_path(path))
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        # The permissions of a file opened the ordinary way, not mkstemp's 0600.
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())  # on disk before it takes the real name
        os.replace(tmp, path)  # atomic on POSIX and Windows
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise OSError(
                exc.errno,
                f"the disk is full: {path} was not written (nothing half-written was left; "
                "the previous file, if any, is intact)",
            ) from None
        raise


def write_atomically(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through ``open_atomically``."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    with open_atomically(path) as f:
        f.write(data)
    return Path(path)


def save_checkpoint(
    path: str | os.PathLike,
    arrays: dict[str, Any],
    config: dict,
    state: dict,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Write ``arrays`` (moved to the host) with ``config``, ``state`` and the tensors' SHA-256s, atomically.

    ``metadata`` adds string entries of the caller's own to the header. An
    array holding NaN or inf raises ``CheckpointError`` and writes nothing.
    """
    path = Path(check_path(path))
    for name, value in {
        "arrays": arrays,
        "config": config,
        "state": state,
        "metadata": metadata or {},
    }.items():
        if not isinstance(value, dict):
            raise TypeError(f"{name} must be a dict, got {type(value).__name__}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {name: np.ascontiguousarray(to_numpy(a)) for name, a in arrays.items()}
    bad = first_non_finite(tensors)
    if bad is not None:
        raise CheckpointError(
            f"not saved: {bad} holds NaN or infinite values (the training diverged); "
            f"{path} keeps the last good weights, if any were saved"
        )
    extra = dict(metadata or {})
    clash = sorted(set(extra) & set(RESERVED_KEYS))
    if clash:
        raise ValueError(f"metadata must not use the reserved keys {clash}")
    header = {
        **extra,
        "format": FORMAT_NAME,
        "format_version": str(FORMAT_VERSION),
        "config": json.dumps(config),
        "state": json.dumps(state),
        "sha256": json.dumps({name: tensor_sha256(a) for name, a in tensors.items()}),
    }
    return write_atomically(path, serialize(tensors, metadata=header))


def _unreadable(path: Path, exc: Exception) -> CheckpointError:
    return CheckpointError(
        f"{path} is not a readable safetensors checkpoint ({exc}); it may be truncated, "
        "corrupted, or a file of another format (ldm_np never reads pickle files)"
    )


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The header metadata of an ldm_np checkpoint (no tensor is read); ``CheckpointError`` if it is none."""
    path = Path(check_path(path))
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}")
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, not a checkpoint file")
    try:
        with safe_open(str(path), framework="np") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise _unreadable(path, exc) from None
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
    if version < OLDEST_FORMAT:
        raise CheckpointError(
            f"{path} uses checkpoint format {version}, older than any this ldm_np reads. "
            "Load it with the ldm_np version that wrote it, or retrain."
        )
    return metadata


def verify_tensors(path: Path, arrays: dict[str, np.ndarray], checksums: dict[str, str]) -> None:
    """Every tensor present, none extra, each matching its SHA-256, all finite; else ``CheckpointError``."""
    damaged = f"{path} is damaged and was not loaded"
    missing = sorted(set(checksums) - set(arrays))
    if missing:
        raise CheckpointError(f"{damaged}: tensor {missing[0]} is missing ({len(missing)} in all)")
    extra = sorted(set(arrays) - set(checksums))
    if extra:
        raise CheckpointError(f"{damaged}: tensor {extra[0]} has no checksum (the file was altered)")
    for name, a in arrays.items():
        if tensor_sha256(a) != checksums[name]:
            raise CheckpointError(
                f"{damaged}: tensor {name} does not match its SHA-256 checksum (bytes changed after "
                "it was written: a disk or copy error). Use another copy, or an earlier checkpoint."
            )


def load_checkpoint(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict, dict]:
    """Read a checkpoint: ``(arrays, config, state)``. Raises ``CheckpointError`` with advice.

    Format 2 files are verified against their checksums; every format is
    refused if a floating-point tensor holds NaN or inf.
    """
    path = Path(check_path(path))
    metadata = read_metadata(path)
    try:
        arrays = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise _unreadable(path, exc) from None
    try:
        config = json.loads(metadata["config"])
        state = json.loads(metadata["state"])
        checksums = json.loads(metadata["sha256"]) if int(metadata["format_version"]) >= 2 else None
    except (KeyError, json.JSONDecodeError):
        raise CheckpointError(
            f"{path} has damaged metadata (config, state or sha256 missing or not valid JSON)"
        ) from None
    if checksums is not None:
        verify_tensors(path, arrays, checksums)
    bad = first_non_finite(arrays)
    if bad is not None:
        raise CheckpointError(
            f"{path} holds NaN or infinite values in {bad}: the weights are unusable "
            "(a diverged run or an edited file); use an earlier checkpoint or retrain"
        )
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
