"""Shared benchmark machinery: BLAS facts, training steps, matmul plans, interleaved timing.

Nothing here is part of the library. The steps below are the same work a
training loop does (forward, loss, backward, Adam), written against ldm_np's
public API so that the benchmark measures what a user runs.

Timing rules (see GUIDE.md, "Where the time goes"):

- warm-up calls first, then medians over repeats;
- rounds are interleaved (numpy, torch, numpy, torch, ...), so a slow
  stretch of the machine hits both libraries alike;
- whenever the harness switches library it lets the previous library's
  worker threads settle: OpenBLAS threads spin for ~0.1 s after a matmul and
  can slow the next PyTorch call up to 10x. Settling is a short sleep plus
  one untimed call of the next function;
- on a GPU each timed call ends with a device synchronisation.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ldm_np.backend import default_rng
from ldm_np.optim import Adam
from ldm_np.samplers import sample
from ldm_np.training import denoiser_step, vae_step
from ldm_np.versions import numpy_blas

SETTLE_S = 0.15
KL_WEIGHT = 1e-4


# --------------------------------------------------------------------------
# The machine: BLAS library and thread count
# --------------------------------------------------------------------------


# Environment variables that choose a BLAS kernel or its blocking instead of
# letting the library pick one for the CPU it finds. On some machines a forced
# kernel halves NumPy's matrix-product speed while PyTorch (MKL / oneDNN)
# ignores the OpenBLAS ones, so a NumPy / PyTorch ratio must say which held.
KERNEL_ENV_VARS: tuple[str, ...] = (
    "OPENBLAS_CORETYPE",
    "OPENBLAS_L2_SIZE",
    "MKL_CBWR",
    "MKL_ENABLE_INSTRUCTIONS",
    "MKL_DEBUG_CPU_TYPE",
    "BLIS_ARCH_TYPE",
)


def cores() -> int:
    """CPUs this process may run on (the affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def blas_info() -> dict[str, Any]:
    """BLAS name, version, kernel and thread count, from the best source available.

    threadpoolctl (optional, benchmarks/requirements.txt) reports the library
    actually loaded and, for OpenBLAS, the kernel it chose at run time. Without
    it: NumPy's build configuration (``numpy.show_config(mode="dicts")``), the
    thread variables and the CPU affinity mask; the kernel is then the one an
    environment variable forces, or unknown.
    """
    np.ones((8, 8), dtype=np.float32) @ np.ones((8, 8), dtype=np.float32)  # make sure BLAS is loaded
    info: dict[str, Any] = {"source": "", "name": "unknown", "version": "", "threads": None, "kernel": ""}
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        threadpool_info = None
    for pool in threadpool_info() if threadpool_info else ():
        if pool.get("user_api") == "blas":
            info.update(
                source="threadpoolctl",
                name=pool.get("internal_api", "blas"),
                version=pool.get("version") or "",
                threads=pool.get("num_threads"),
                kernel=pool.get("architecture") or "",
            )
            return info
    blas = numpy_blas()
    if blas:
        info.update(
            source="numpy.show_config", name=blas.get("name", "unknown"), version=blas.get("version", "")
        )
    else:  # an unusual build
        info["source"] = "numpy.show_config names no BLAS"
    build = blas.get("openblas configuration", "")  # DYNAMIC_ARCH: the kernel is picked at run time
    forced = forced_kernel_vars()
    chooser = next((var for var in ("OPENBLAS_CORETYPE", "BLIS_ARCH_TYPE") if var in forced), None)
    info["kernel"] = (
        f"{forced[chooser]} (forced by ${chooser})"
        if chooser
        else "unknown without threadpoolctl" + (f" (build: {' '.join(build.split())})" if build else "")
    )
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        if os.environ.get(var, "").isdigit():
            info["threads"] = int(os.environ[var])
            info["source"] += f" + ${var}"
            break
    else:
        info["threads"] = cores()
        info["source"] += " + CPU count (a guess)"
    return info


def forced_kernel_vars() -> dict[str, str]:
    """The set variables of ``KERNEL_ENV_VARS``, name -> value."""
    return {var: os.environ[var] for var in KERNEL_ENV_VARS if os.environ.get(var)}


def kernel_warning(measured: str = "Every time and every ratio below", note: str = "") -> str | None:
    """A warning naming every environment variable that forces a BLAS kernel, or None.

    ``measured`` names what the kernel applies to; ``note`` is added at the end.
    """
    forced = forced_kernel_vars()
    if not forced:
        return None
    names = ", ".join(f"{k}={v}" for k, v in forced.items())
    return (
        f"WARNING: {names} set in the environment, forcing the BLAS kernel (or its blocking) "
        f"instead of the one chosen for this CPU. {measured} is measured under that kernel; "
        "unset it to measure the kernel the library picks by itself." + (f" {note}" if note else "")
    )


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), or the platform string."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


# --------------------------------------------------------------------------
# Synchronisation
# --------------------------------------------------------------------------


def synchronizer(xp: Any) -> Callable[[], None]:
    """A function that waits for the device of array module ``xp`` (a no-op for NumPy)."""
    if xp is np:
        return lambda: None
    return lambda: xp.cuda.Device().synchronize()


# --------------------------------------------------------------------------
# The NumPy (or CuPy) training steps: the library's own
# --------------------------------------------------------------------------


@dataclass
class VAEStep:
    """One VAE training step, ``ldm_np.training.vae_step``: encode, reparameterize, decode, loss, backward, Adam.

    The loss is MSE + ``kl_weight`` * KL, as in the PyTorch reference: the
    library's per-sample reconstruction term sum (x - x_hat)^2 / (2 recon_std^2)
    is the batch MSE (a mean over features too) when recon_std^2 = input / 2.
    """

    encoder: Any
    decoder: Any
    x: Any  # [batch, input] fixed data, already on the device
    rng: Any
    kl_weight: float = KL_WEIGHT
    opt: Adam = field(default_factory=Adam)

    def __call__(self) -> Any:
        eps = self.rng.standard_normal((self.x.shape[0], self.encoder.latent_size), dtype=self.x.dtype)
        recon_std = (self.x.shape[1] / 2.0) ** 0.5
        losses = vae_step(
            self.encoder,
            self.decoder,
            self.opt,
            self.x,
            eps,
            beta=self.kl_weight,
            recon_std=recon_std,
        )
        return losses["loss"]


@dataclass
class DenoiserStep:
    """One denoiser training step, ``ldm_np.training.denoiser_step``: draw t and noise, q_sample,
    forward, MSE on the noise, backward, Adam (no clipping, no EMA, like the PyTorch reference)."""

    model: Any
    schedule: dict
    z0: Any  # [batch, latent] fixed clean latents on the device
    rng: Any
    opt: Adam = field(default_factory=Adam)

    def __call__(self) -> Any:
        z0 = self.z0
        t = self.rng.integers(0, self.schedule["num_steps"], size=z0.shape[0])  # [batch]
        noise = self.rng.standard_normal(z0.shape, dtype=z0.dtype)  # [batch, latent]
        losses = denoiser_step(self.model, self.opt, self.schedule, z0, t, noise, grad_clip=None)
        return losses["loss"]


@dataclass
class DenoiserForward:
    """One sampling step's network cost: the denoiser's forward pass on a fixed batch."""

    model: Any
    z_t: Any
    t: Any

    def __call__(self) -> Any:
        return self.model(self.z_t, self.t)


def make_sampling_call(
    model: Any, schedule: dict, num_samples: int, sampler: str, steps: int, seed: int
) -> Callable[[], Any]:
    """A no-argument callable that draws ``num_samples`` latents with ``ldm_np.samplers.sample``."""
    xp = model.xp

    def draw() -> Any:
        return sample(
            model,
            schedule,
            num_samples,
            sampler=sampler,
            num_inference_steps=steps,
            rng=default_rng(seed, xp),
            shape=model.latent_size,
        )

    return draw


# --------------------------------------------------------------------------
# The matrix products alone
# --------------------------------------------------------------------------


def dense_layers(model: Any) -> list[tuple[str, int, int]]:
    """``(layer_name, fan_in, fan_out)`` of every dense layer of a model, from its kernels."""
    return [
        (layer, int(group["kernel"].shape[0]), int(group["kernel"].shape[1]))
        for layer, group in model.params.items()
        if "kernel" in group
    ]


@dataclass
class MatmulPlan:
    """The matrix products of a step, with pre-allocated operands, run back to back.

    For a dense layer x [B, in] @ W [in, out] a training step does
        forward     x @ W          [B, in] x [in, out]
        backward    dy @ W.T       [B, out] x [out, in]   (W.T a transposed view)
                    x.T @ dy       [in, B] x [B, out]     (x.T a transposed view)
    The library's backward computes all three for every layer, also the dx of
    the first layers that no step uses (the denoiser's time MLP and the
    encoder's input); PyTorch's autograd skips those two.
    """

    xp: Any
    ops: list[tuple[Any, Any, Any]]
    flops: float

    @classmethod
    def build(
        cls,
        xp: Any,
        dtype: Any,
        layers: list[tuple[str, int, int]],
        batch: int,
        *,
        backward: bool = True,
    ) -> MatmulPlan:
        rng = np.random.default_rng(0)

        def rand(*shape: int) -> Any:
            return xp.asarray(rng.standard_normal(shape).astype(dtype))

        ops = []
        flops = 0.0
        for _name, fan_in, fan_out in layers:
            x, w, dy = rand(batch, fan_in), rand(fan_in, fan_out), rand(batch, fan_out)
            ops.append((x, w, xp.empty((batch, fan_out), dtype=dtype)))
            flops += 2.0 * batch * fan_in * fan_out
            if backward:
                ops.append((x.T, dy, xp.empty((fan_in, fan_out), dtype=dtype)))
                flops += 2.0 * batch * fan_in * fan_out
                ops.append((dy, w.T, xp.empty((batch, fan_in), dtype=dtype)))
                flops += 2.0 * batch * fan_in * fan_out
        return cls(xp, ops, flops)

    def __call__(self) -> None:
        matmul = self.xp.matmul
        for a, b, out in self.ops:
            matmul(a, b, out=out)


# --------------------------------------------------------------------------
# Interleaved timing
# --------------------------------------------------------------------------


@dataclass
class Timed:
    """A function to time, the library it belongs to, and how to wait for its device."""

    name: str
    lib: str
    fn: Callable[[], Any]
    sync: Callable[[], None] = lambda: None
    settle: Callable[[], Any] | None = None  # the untimed call after a switch; default ``fn``


@dataclass
class Stats:
    median: float
    low: float
    high: float
    times: list[float]

    @classmethod
    def of(cls, times: list[float]) -> Stats:
        return cls(statistics.median(times), min(times), max(times), times)


class OtherLoad:
    """CPU time used by *other* processes while a block runs, as a share of the machine (Linux).

    The benchmark shares the machine with whatever else runs; a row measured
    while other processes took half the cores is not comparable to a quiet
    one, so every row reports this.
    """

    def __enter__(self) -> OtherLoad:
        self.start = self._read()
        self.value: float | None = None
        return self

    def __exit__(self, *exc: object) -> None:
        end = self._read()
        if self.start is None or end is None:
            return
        busy, total, mine = (e - s for e, s in zip(end, self.start))
        # busy and total are in clock ticks over all CPUs; mine in seconds of this process.
        ticks = os.sysconf("SC_CLK_TCK")
        others = busy / ticks - mine
        self.value = max(others, 0.0) / max(total / ticks, 1e-9)

    @staticmethod
    def _read() -> tuple[float, float, float] | None:
        try:
            with open("/proc/stat") as f:
                fields = [float(v) for v in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
        total = sum(fields[:8])
        t = os.times()
        return total - idle, total, t.user + t.system + t.children_user + t.children_system


def wait_for_quiet(max_wait_s: float, threshold: float = 0.15, probe_s: float = 0.5) -> float:
    """Wait (up to ``max_wait_s``) until other processes use under ``threshold`` of the machine.

    Returns the seconds waited. Does nothing where /proc/stat is missing.
    """
    start = time.perf_counter()
    while True:
        with OtherLoad() as load:
            time.sleep(probe_s)
        if load.value is None or load.value < threshold or time.perf_counter() - start >= max_wait_s:
            return time.perf_counter() - start


def _settle(item: Timed, settle_s: float) -> None:
    time.sleep(settle_s)
    (item.settle or item.fn)()
    item.sync()


def time_interleaved(
    items: list[Timed], repeats: int, warmup: int = 1, settle_s: float = SETTLE_S
) -> dict[str, Stats]:
    """Median wall time of each item over ``repeats`` interleaved rounds.

    Round r runs every item once, in order. Before an item whose library
    differs from the previous item's, the harness sleeps ``settle_s`` and
    makes one untimed call, so spinning worker threads of the other library
    are quiet again. ``warmup`` untimed calls of each item come first.
    """
    for item in items:
        for _ in range(warmup):
            item.fn()
            item.sync()
    times: dict[str, list[float]] = {item.name: [] for item in items}
    last_lib = None
    for _ in range(repeats):
        for item in items:
            if last_lib is not None and item.lib != last_lib:
                _settle(item, settle_s)
            last_lib = item.lib
            item.sync()
            start = time.perf_counter()
            item.fn()
            item.sync()
            times[item.name].append(time.perf_counter() - start)
    return {name: Stats.of(ts) for name, ts in times.items()}
