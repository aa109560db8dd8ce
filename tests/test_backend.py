"""``ldm_np.backend``: the one module that knows about CuPy.

What is checked here, on a machine without a GPU:

- the array module comes from the arrays, and an array type can name its own
  (the hook the strict stand-in device uses);
- ``device="gpu"`` without CuPy fails at once with one line that says how to
  install CuPy, through every public entrance (``build``, the models,
  ``make_schedule``, ``LatentDiffusion``, ``to_device``, the CLI: exit 2);
- importing ldm_np survives any CuPy failure: not installed, a broken CUDA
  install (the import itself raises), no driver (the device query raises),
  no device; and a working CuPy is picked up (with a fake one);
- ``to_device`` / ``to_numpy`` / ``default_rng`` move arrays and make
  generators for each device, and no module but ``backend`` imports CuPy.
"""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from strict_xp import DEVICE, StrictArray, strict, to_strict, track

import ldm_np
from ldm_np import backend
from ldm_np.backend import (
    default_rng,
    device_of,
    get_array_module,
    gpu_available,
    to_device,
    to_numpy,
    xp_for_device,
)
from ldm_np.cli import build_parser, main
from ldm_np.models import build, build_denoiser, build_encoder
from ldm_np.pipeline import LatentDiffusion
from ldm_np.schedules import make_schedule

PACKAGE = Path(ldm_np.__file__).parent
no_gpu = pytest.mark.skipif(gpu_available(), reason="checks the error raised when CuPy or a GPU is missing")


# --------------------------------------------------------------------------
# get_array_module and devices
# --------------------------------------------------------------------------


def test_anything_that_is_not_a_device_array_is_numpy():
    assert get_array_module() is np
    assert get_array_module(np.zeros(3), 1.0, None, [1, 2], np.float32(2)) is np


def test_an_array_type_can_name_its_module():
    sentinel = types.SimpleNamespace(name="fake")

    class Fake:
        _ldm_array_module = sentinel

    assert get_array_module(np.zeros(2), Fake()) is sentinel
    assert get_array_module(to_strict(np.zeros(2))) is strict


def test_devices_and_their_modules():
    assert backend.DEVICES == ("cpu", "gpu")
    assert xp_for_device("cpu") is np
    assert device_of(np.zeros(2)) == "cpu" and device_of(1.0) == "cpu"
    assert device_of(to_strict(np.zeros(2))) == DEVICE
    for bad in ("cuda", "CPU", "", None, 0):
        with pytest.raises(ValueError, match=r"device must be one of \('cpu', 'gpu'\)"):
            xp_for_device(bad)


def test_the_testing_hook_cannot_replace_cpu_or_gpu_and_stays_private():
    for name in ("cpu", "gpu", "", None):
        with pytest.raises(ValueError):
            backend._register_device(name, np)
    assert not hasattr(ldm_np, "_register_device") and "_register_device" not in ldm_np.__all__
    with pytest.raises(SystemExit):  # the CLI offers cpu and gpu only
        build_parser().parse_args(["train", "--out", "x", "--device", DEVICE])


# --------------------------------------------------------------------------
# device="gpu" without CuPy: a clear error everywhere
# --------------------------------------------------------------------------


@no_gpu
@pytest.mark.parametrize(
    "entrance",
    [
        lambda: xp_for_device("gpu"),
        lambda: to_device(np.zeros(3), "gpu"),
        lambda: build(16, 4, 8, 1, 50, device="gpu"),
        lambda: build_encoder(16, 4, 8, device="gpu"),
        lambda: build_denoiser(4, 8, 1, 50, device="gpu"),
        lambda: make_schedule(1000, device="gpu"),
        lambda: LatentDiffusion(input_size=16, device="gpu"),
    ],
)
def test_gpu_without_cupy_says_how_to_install_it(entrance):
    with pytest.raises(RuntimeError) as info:
        entrance()
    message = str(info.value)
    assert "needs CuPy and a CUDA GPU" in message and "pip install cupy-cuda12x" in message
    assert "device='cpu'" in message and "\n" not in message


@no_gpu
@pytest.mark.parametrize("command", ["train", "demo", "sample", "evaluate"])
def test_cli_with_gpu_prints_one_line_and_exits_2(tmp_path, capsys, command):
    run = tmp_path / "run"
    if command in ("sample", "evaluate"):  # they load a trained run: give them one
        run.mkdir()
        LatentDiffusion(input_size=2, latent_size=2, hidden_size=4, num_layers=0).save(
            run / "model.safetensors"
        )
        args = [command, "--run", str(run)]
    elif command == "train":
        args = ["train", "--dataset", "moons", "--num-rows", "20", "--out", str(run), "--no-figures"]
    else:
        args = ["demo", "--out", str(run)]
    assert main([*args, "--device", "gpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: device='gpu' needs CuPy"), err
    assert "pip install cupy" in err


@no_gpu
def test_cli_exit_status_from_a_real_process(tmp_path):
    """``python -m ldm_np ... --device gpu``: status 2, one line on stderr, no traceback."""
    cmd = [sys.executable, "-m", "ldm_np", "train", "--dataset", "moons", "--num-rows", "20"]
    cmd += ["--out", str(tmp_path / "run"), "--device", "gpu", "--no-progress", "--no-figures"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=PACKAGE.parent)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "pip install cupy" in done.stderr
    assert "Traceback" not in done.stderr


# --------------------------------------------------------------------------
# Importing with every kind of CuPy failure
# --------------------------------------------------------------------------


def _fresh_backend(monkeypatch, cupy_module):
    """Execute backend.py anew, as its own module, with ``cupy_module`` as what ``import cupy`` finds.

    ``...`` leaves ``sys.modules`` alone (the import then searches ``sys.path``).
    """
    if cupy_module is not ...:
        monkeypatch.setitem(sys.modules, "cupy", cupy_module)
    spec = importlib.util.spec_from_file_location("_backend_probe", PACKAGE / "backend.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fake_cupy(device_count):
    """A module that looks enough like CuPy for backend's import check."""

    def get_device_count():
        if isinstance(device_count, Exception):
            raise device_count
        return device_count

    runtime = types.SimpleNamespace(getDeviceCount=get_device_count)
    fake = types.ModuleType("cupy")
    fake.cuda = types.SimpleNamespace(runtime=runtime)
    fake.ndarray = type("ndarray", (), {})
    fake.random = types.SimpleNamespace(default_rng=lambda seed=None: ("cupy rng", seed))
    fake.asarray = lambda a: ("on gpu", a)
    return fake


BROKEN_CUPY = "raise OSError('libcudart.so.12: cannot open shared object file: No such file or directory')\n"


@pytest.mark.parametrize(
    ("failure", "reason"),
    [
        ("missing", "ModuleNotFoundError"),
        ("broken import", "OSError: libcudart.so.12"),  # a wheel built for another CUDA
        ("no driver", "cudaErrorInsufficientDriver"),
        ("no device", "no CUDA device"),
    ],
)
def test_importing_survives_any_cupy_failure(monkeypatch, tmp_path, failure, reason):
    if failure == "missing":
        cupy_module = None  # sys.modules["cupy"] = None makes `import cupy` raise ImportError
    elif failure == "broken import":
        (tmp_path / "cupy").mkdir()
        (tmp_path / "cupy" / "__init__.py").write_text(BROKEN_CUPY)
        monkeypatch.syspath_prepend(str(tmp_path))
        monkeypatch.delitem(sys.modules, "cupy", raising=False)
        cupy_module = ...
    elif failure == "no driver":
        cupy_module = _fake_cupy(
            RuntimeError("cudaErrorInsufficientDriver: CUDA driver version is insufficient")
        )
    else:
        cupy_module = _fake_cupy(0)
    probe = _fresh_backend(monkeypatch, cupy_module)
    assert not probe.gpu_available()
    assert probe.xp_for_device("cpu") is np
    with pytest.raises(RuntimeError, match="pip install cupy-cuda12x") as info:
        probe.xp_for_device("gpu")
    assert reason in str(info.value) and "\n" not in str(info.value)


def test_a_working_cupy_is_picked_up(monkeypatch):
    fake = _fake_cupy(1)
    probe = _fresh_backend(monkeypatch, fake)
    assert probe.gpu_available() and probe.xp_for_device("gpu") is fake
    on_gpu = fake.ndarray()
    assert probe.get_array_module(np.zeros(1), on_gpu) is fake and probe.device_of(on_gpu) == "gpu"
    assert probe.to_device(np.ones(2), "gpu")[0] == "on gpu"
    assert probe.default_rng(5, fake) == ("cupy rng", 5)


def test_only_backend_imports_cupy():
    importers = []
    for path in sorted(PACKAGE.glob("*.py")):
        source = path.read_text()
        if "cupy" not in source:
            continue
        for node in ast.walk(ast.parse(source)):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(n == "cupy" or n.startswith(("cupy.", "cupyx")) for n in names):
                importers.append(path.name)
    assert importers == ["backend.py"]


# --------------------------------------------------------------------------
# Moving arrays and making generators
# --------------------------------------------------------------------------


def test_to_device_on_the_same_device_does_not_copy():
    x = np.arange(6.0).reshape(2, 3)
    assert to_device(x, "cpu") is x and to_numpy(x) is x
    s = to_strict(x)
    assert to_device(s, DEVICE) is s


def test_to_device_moves_trees_and_leaves_other_values_alone():
    tree = {"a": {"w": np.ones((2, 2), np.float32), "n": 3, "name": "dense"}, "b": [np.zeros(2), None]}
    moved = to_device(tree, DEVICE)
    assert isinstance(moved["a"]["w"], StrictArray) and moved["a"]["w"].dtype == np.float32
    assert moved["a"]["n"] == 3 and moved["a"]["name"] == "dense" and moved["b"][1] is None
    assert isinstance(moved["b"], list) and isinstance(to_device((np.ones(1),), DEVICE), tuple)
    back = to_device(moved, "cpu")
    np.testing.assert_array_equal(back["a"]["w"], tree["a"]["w"])
    assert type(back["a"]["w"]) is np.ndarray
    with pytest.raises(ValueError, match="device must be"):
        to_device({}, "tpu")


def test_to_numpy_is_the_explicit_transfer():
    s = to_strict(np.arange(4.0))
    with track() as log:
        host = to_numpy(s)
        host_tree = to_numpy({"s": s, "h": np.ones(2)})
    assert type(host) is np.ndarray and type(host_tree["s"]) is np.ndarray
    assert log.counts() == {"implicit": 0, "explicit": 2, "h2d": 0}
    assert to_numpy(2.5).shape == () and to_numpy([1, 2]).tolist() == [1, 2]


def test_default_rng_draws_on_the_module_of_the_device():
    assert isinstance(default_rng(0), np.random.Generator)
    assert isinstance(default_rng(0, np), np.random.Generator)
    draw = default_rng(0, strict).standard_normal((2, 3), dtype=np.float32)
    assert isinstance(draw, StrictArray) and draw.dtype == np.float32
    # The same seed gives different streams on different devices (as NumPy and CuPy do).
    assert not np.allclose(to_numpy(draw), default_rng(0).standard_normal((2, 3), dtype=np.float32))


def test_public_api():
    for name in ("get_array_module", "to_device", "to_numpy", "default_rng", "gpu_available"):
        assert name in ldm_np.__all__ and getattr(ldm_np, name) is getattr(backend, name)
