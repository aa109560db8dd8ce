"""Checkpoint safety: no code execution, clear errors for bad files, atomic writes."""

from __future__ import annotations

import errno
import json
import pickle
import struct

import numpy as np
import pytest
from safetensors.numpy import save_file

import ldm_np.checkpoint as checkpoint_module
from ldm_np.checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
    stale_temporaries,
    tensor_sha256,
)
from ldm_np.pipeline import LatentDiffusion
from ldm_np.training import TrainingDiverged

TINY = {
    "latent_size": 2,
    "hidden_size": 8,
    "num_layers": 1,
    "num_steps": 50,
    "beta_end": 0.3,
    "vae_steps": 5,
    "denoiser_steps": 5,
    "vae_batch_size": 8,
    "denoiser_batch_size": 8,
}


@pytest.fixture
def saved(tmp_path):
    model = LatentDiffusion(input_size=5, **TINY)
    X = np.random.default_rng(0).random((20, 5)).astype(np.float32)
    model.fit(X, progress=False)
    return model, model.save(tmp_path / "model.safetensors")


def test_round_trip_of_arrays_config_and_state(tmp_path):
    arrays = {"a.b": np.arange(6, dtype=np.float32).reshape(2, 3), "c": np.ones(2)}
    path = save_checkpoint(tmp_path / "x.safetensors", arrays, {"k": 1}, {"step": 7})
    got, config, state = load_checkpoint(path)
    assert config == {"k": 1} and state == {"step": 7}
    for k, v in arrays.items():
        np.testing.assert_array_equal(got[k], v)
        assert got[k].dtype == v.dtype


class Payload:
    """Unpickling this object creates a file: proof that code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickle_is_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "model.safetensors"
    evil.write_bytes(pickle.dumps(Payload(str(marker))))
    with pytest.raises(CheckpointError, match="not a readable safetensors checkpoint"):
        LatentDiffusion.load(evil)
    assert not marker.exists()
    # The payload is live: unpickling it on purpose does create the file.
    pickle.loads(evil.read_bytes())
    assert marker.exists()


def test_truncated_file(saved, tmp_path):
    _, path = saved
    data = path.read_bytes()
    bad = tmp_path / "truncated.safetensors"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        LatentDiffusion.load(bad)


def test_corrupted_header(saved, tmp_path):
    _, path = saved
    data = bytearray(path.read_bytes())
    data[8:20] = b"\xff" * 12  # inside the JSON header
    bad = tmp_path / "corrupt.safetensors"
    bad.write_bytes(bytes(data))
    with pytest.raises(CheckpointError):
        LatentDiffusion.load(bad)


def test_random_bytes_and_missing_file(tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(struct.pack("<Q", 10**12) + b"xx")
    with pytest.raises(CheckpointError):
        load_checkpoint(junk)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.safetensors")


def test_a_foreign_safetensors_file(tmp_path):
    other = tmp_path / "other.safetensors"
    save_file({"weight": np.zeros(3, dtype=np.float32)}, str(other))
    with pytest.raises(CheckpointError, match="not an ldm_np checkpoint"):
        load_checkpoint(other)


def test_a_newer_format_says_to_upgrade(tmp_path):
    path = tmp_path / "new.safetensors"
    save_file(
        {"w": np.zeros(1, dtype=np.float32)},
        str(path),
        metadata={
            "format": "ldm_np",
            "format_version": str(FORMAT_VERSION + 1),
            "config": "{}",
            "state": "{}",
        },
    )
    with pytest.raises(CheckpointError, match=r"newer ldm_np.*Upgrade"):
        load_checkpoint(path)


def test_wrong_architecture(saved, tmp_path):
    _, path = saved
    arrays, config, state = load_checkpoint(path)
    config["hidden_size"] = 16  # the arrays are for hidden 8
    bad = save_checkpoint(tmp_path / "wrong.safetensors", arrays, config, state)
    with pytest.raises(CheckpointError, match="does not fit"):
        LatentDiffusion.load(bad)


def test_unknown_config_field(saved, tmp_path):
    _, path = saved
    arrays, config, state = load_checkpoint(path)
    config["from_the_future"] = 1
    bad = save_checkpoint(tmp_path / "future.safetensors", arrays, config, state)
    with pytest.raises(CheckpointError, match="from_the_future"):
        LatentDiffusion.load(bad)


def test_a_failed_write_leaves_the_previous_checkpoint_intact(saved, monkeypatch):
    model, path = saved
    before = path.read_bytes()

    def crash(fd):  # the bytes are in the temporary; flushing them to disk fails
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint_module.os, "fsync", crash)
    with pytest.raises(OSError, match="the disk is full"):
        model.save(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.safetensors"]  # no temp file left
    LatentDiffusion.load(path)


def test_divergence_never_writes_a_nan_checkpoint(tmp_path):
    X = np.random.default_rng(0).random((40, 5)).astype(np.float32)
    model = LatentDiffusion(input_size=5, **dict(TINY, vae_steps=400, vae_lr=1e6))
    path = tmp_path / "model.safetensors"
    with np.errstate(all="ignore"), pytest.raises(TrainingDiverged, match="step"):
        model.fit_vae(X, progress=False, checkpoint=path, checkpoint_every=5, log_every=5)
    if path.exists():  # whatever was saved before the divergence is finite
        arrays, _, _ = load_checkpoint(path)
        assert all(np.isfinite(a).all() for a in arrays.values())


def test_metadata_is_plain_json(saved):
    _, path = saved
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as f:
        meta = f.metadata()
    assert json.loads(meta["config"])["hidden_size"] == 8
    assert int(meta["format_version"]) == FORMAT_VERSION


# ---------------------------------------------------------------- checksums and non-finite weights


def rewrite(path, arrays, metadata):
    """Write a file with the given arrays and header, bypassing save_checkpoint's checks."""
    save_file(arrays, str(path), metadata=metadata)
    return path


def header_of(path):
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as f:
        return f.metadata()


def test_every_tensor_has_its_sha256_in_the_header(saved):
    _, path = saved
    sums = json.loads(header_of(path)["sha256"])
    arrays, _, _ = load_checkpoint(path)
    assert sorted(sums) == sorted(arrays)
    name = "encoder.enc_dense_0.kernel"
    assert sums[name] == tensor_sha256(arrays[name])


def test_a_flipped_byte_inside_a_weight_is_refused(saved, tmp_path):
    _, path = saved
    data = bytearray(path.read_bytes())
    header_len = struct.unpack("<Q", data[:8])[0]
    data[8 + header_len + 100] ^= 0x01  # inside the tensor data; the header is intact
    bad = tmp_path / "flipped.safetensors"
    bad.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"damaged.*SHA-256"):
        LatentDiffusion.load(bad)


def test_a_missing_tensor_is_refused(saved, tmp_path):
    _, path = saved
    arrays, _, _ = load_checkpoint(path)
    del arrays["data.mean"]
    bad = rewrite(tmp_path / "missing.safetensors", arrays, header_of(path))
    with pytest.raises(CheckpointError, match=r"damaged.*data\.mean is missing"):
        load_checkpoint(bad)


def test_nan_weights_are_refused_at_load(saved, tmp_path):
    _, path = saved
    arrays, _, _ = load_checkpoint(path)
    arrays["decoder.dec_output.bias"] = arrays["decoder.dec_output.bias"].copy()
    arrays["decoder.dec_output.bias"][0] = np.nan
    meta = header_of(path)
    meta["sha256"] = json.dumps({k: tensor_sha256(v) for k, v in arrays.items()})  # checksums agree
    bad = rewrite(tmp_path / "nan.safetensors", arrays, meta)
    with pytest.raises(CheckpointError, match=r"NaN or infinite values in decoder\.dec_output\.bias"):
        LatentDiffusion.load(bad)


def test_nan_weights_are_never_written(tmp_path):
    path = tmp_path / "x.safetensors"
    with pytest.raises(CheckpointError, match=r"not saved.*w holds NaN"):
        save_checkpoint(path, {"w": np.array([1.0, np.inf], dtype=np.float32)}, {}, {})
    assert list(tmp_path.iterdir()) == []


def test_a_format_1_checkpoint_still_loads(saved, tmp_path):
    model, path = saved
    arrays, _, _ = load_checkpoint(path)
    meta = {k: v for k, v in header_of(path).items() if k != "sha256"}
    meta["format_version"] = "1"
    old = rewrite(tmp_path / "v1.safetensors", arrays, meta)
    loaded = LatentDiffusion.load(old)
    np.testing.assert_array_equal(
        loaded.denoiser.params["noise_pred"]["kernel"], model.denoiser.params["noise_pred"]["kernel"]
    )


def test_extra_metadata_is_stored_and_reserved_keys_refused(tmp_path):
    path = save_checkpoint(tmp_path / "x.safetensors", {"w": np.ones(2)}, {}, {}, {"run": "{}"})
    assert header_of(path)["run"] == "{}"
    with pytest.raises(ValueError, match="reserved"):
        save_checkpoint(tmp_path / "y.safetensors", {"w": np.ones(2)}, {}, {}, {"config": "x"})


def test_stale_temporaries_are_the_ones_a_killed_save_leaves(tmp_path):
    path = tmp_path / "model.safetensors"
    left = tmp_path / "model.safetensors.k3j2_x.tmp"
    left.write_bytes(b"partial")
    (tmp_path / "other.tmp").write_bytes(b"")
    assert stale_temporaries(path) == [left]
