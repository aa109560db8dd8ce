"""Checkpoint safety: no code execution, clear errors for bad files, atomic writes."""

from __future__ import annotations

import json
import pickle
import struct

import numpy as np
import pytest
from safetensors.numpy import save_file

import ldm_np.checkpoint as checkpoint_module
from ldm_np.checkpoint import FORMAT_VERSION, CheckpointError, load_checkpoint, save_checkpoint
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

    def crash(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"partial")  # half-written, then the process dies
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_module, "save_file", crash)
    with pytest.raises(OSError, match="disk full"):
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
