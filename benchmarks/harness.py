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

import ctypes
import inspect
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ldm_np.backend import default_rng, to_numpy
from ldm_np.losses import kl_divergence, kl_divergence_backward, mse_loss
from ldm_np.optim import Adam
from ldm_np.vae import reparameterize_backward, reparameterize_with_noise

SETTLE_S = 0.15
KL_WEIGHT = 1e-4


# --------------------------------------------------------------------------
# The machine: BLAS library and thread count
# --------------------------------------------------------------------------


def _openblas_from_process() -> dict[str, Any] | None:
    """Ask the OpenBLAS that NumPy loaded for its thread count and kernel (Linux, via ctypes)."""
    try:
        with open("/proc/self/maps") as f:
            paths = sorted({line.split()[-1] for line in f if "openblas" in line.lower() and ".so" in line})
    except OSError:
        return None
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        info: dict[str, Any] = {"library": os.path.basename(path)}
        for prefix in ("scipy_openblas_", "openblas_"):
            for suffix in ("64_", ""):
                threads = getattr(lib, f"{prefix}get_num_threads{suffix}", None)
                corename = getattr(lib, f"{prefix}get_corename{suffix}", None)
                if threads is not None:
                    info["threads"] = int(threads())
                    if corename is not None:
                        corename.restype = ctypes.c_char_p
                        info["kernel"] = corename().decode()
                    return info
    return None


def blas_info() -> dict[str, Any]:
    """BLAS name, version and thread count, from the best source available.

    threadpoolctl if it is installed (it is not a dependency), else NumPy's
    build configuration plus a ctypes query of the loaded OpenBLAS, else the
    environment variables and the CPU affinity mask.
    """
    np.ones((8, 8), dtype=np.float32) @ np.ones((8, 8), dtype=np.float32)  # make sure BLAS is loaded
    info: dict[str, Any] = {"source": "", "name": "unknown", "version": "", "threads": None, "kernel": ""}
    try:
        from threadpoolctl import threadpool_info

        for pool in threadpool_info():
            if pool.get("user_api") == "blas":
                info.update(
                    source="threadpoolctl",
                    name=pool.get("internal_api", "blas"),
                    version=pool.get("version") or "",
                    threads=pool.get("num_threads"),
                    kernel=pool.get("architecture") or "",
                )
                return info
    except Exception:  # threadpoolctl is optional
        pass
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        info.update(
            source="numpy.show_config", name=blas.get("name", "unknown"), version=blas.get("version", "")
        )
    except Exception:  # older NumPy or an unusual build
        pass
    ob = _openblas_from_process()
    if ob is not None:
        info["source"] += " + OpenBLAS via ctypes"
        info["threads"] = ob["threads"]
        info["kernel"] = ob.get("kernel", "")
    if info["threads"] is None:
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            if os.environ.get(var, "").isdigit():
                info["threads"] = int(os.environ[var])
                info["source"] += f" + ${var}"
                break
        else:
            info["threads"] = (
                len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
            )
            info["source"] += " + CPU count (a guess)"
    return info


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
# The NumPy (or CuPy) training steps
# --------------------------------------------------------------------------


def _find_q_sample() -> Callable[..., Any] | None:
    try:
        from ldm_np.diffusion import q_sample
    except Exception:  # the module may not exist yet
        return None
    return q_sample


def inline_q_sample(schedule: dict, z0: Any, t: Any, noise: Any) -> Any:
    """z_t = sqrt(alphas_cumprod[t]) z0 + sqrt(1 - alphas_cumprod[t]) noise, all in the model dtype."""
    a = schedule["sqrt_alphas_cumprod"][t][:, None]  # [batch, 1]
    s = schedule["sqrt_one_minus_alphas_cumprod"][t][:, None]  # [batch, 1]
    z_t = a * z0
    z_t += s * noise
    return z_t


_Q_SAMPLE_NAMES = {
    "schedule": ("schedule", "sched"),
    "x0": ("x0", "x_0", "z0", "z_0", "x_start", "x"),
    "t": ("t", "timesteps", "steps"),
    "noise": ("noise", "eps", "epsilon"),
}


def choose_q_sample(schedule: dict, z0: Any, xp: Any) -> tuple[Callable[..., Any], str]:
    """Use ``ldm_np.diffusion.q_sample`` if it exists and agrees with the formula, else the inline form.

    The library function is called by keyword, its parameter names matched
    against the usual spellings (``x0``/``x_start``, ``t``, ``noise``,
    ``schedule``); its result must equal the inline formula.
    """
    q_sample = _find_q_sample()
    if q_sample is None:
        return inline_q_sample, "inline (ldm_np.diffusion.q_sample not found)"
    try:
        params = list(inspect.signature(q_sample).parameters)
        keyword = {}
        for role, spellings in _Q_SAMPLE_NAMES.items():
            keyword[role] = next(p for p in params if p in spellings)

        def library(schedule: dict, z0: Any, t: Any, noise: Any) -> Any:
            out = q_sample(
                **{keyword["schedule"]: schedule, keyword["x0"]: z0, keyword["t"]: t, keyword["noise"]: noise}
            )
            return out[0] if isinstance(out, tuple) else out

        rng = default_rng(0, xp)
        t = xp.asarray(np.arange(z0.shape[0]) % schedule["num_steps"])
        noise = rng.standard_normal(z0.shape, dtype=z0.dtype)
        got = library(schedule, z0, t, noise)
        want = inline_q_sample(schedule, z0, t, noise)
        if got.dtype == z0.dtype and np.allclose(to_numpy(got), to_numpy(want), rtol=1e-5, atol=1e-6):
            return library, "ldm_np.diffusion.q_sample"
        reason = "its result differs from the formula"
    except Exception as exc:  # an unknown signature: fall back, and say why
        reason = f"{type(exc).__name__}: {exc}"
    return inline_q_sample, f"inline (ldm_np.diffusion.q_sample not used: {reason})"


# Gradients the steps never compute: the time MLP's input is the fixed
# sinusoidal embedding, so the denoiser skips that dx; the VAE step asks the
# encoder not to compute dL/dx of the data (PyTorch skips both as well).
DENOISER_SKIP_DX: tuple[str, ...] = ("time_mlp_1",)
VAE_SKIP_DX: tuple[str, ...] = ("enc_dense_0",)  # Encoder.backward(..., input_grad=False)


@dataclass
class VAEStep:
    """One VAE training step: encode, reparameterize, decode, MSE + KL, backward, Adam on both."""

    encoder: Any
    decoder: Any
    x: Any  # [batch, input] fixed data, already on the device
    rng: Any
    kl_weight: float = KL_WEIGHT
    opt_enc: Adam = field(default_factory=Adam)
    opt_dec: Adam = field(default_factory=Adam)

    def __post_init__(self) -> None:
        self._input_grad_flag = "input_grad" in inspect.signature(self.encoder.backward).parameters

    def __call__(self) -> Any:
        x = self.x
        mu, log_var = self.encoder.forward(x)  # [batch, latent] each
        eps = self.rng.standard_normal(mu.shape, dtype=mu.dtype)
        z, c_rep = reparameterize_with_noise(mu, log_var, eps)
        x_hat = self.decoder.forward(z)  # [batch, input]
        rec, dx_hat = mse_loss(x_hat, x)
        kl = kl_divergence(mu, log_var)
        loss = rec + self.kl_weight * kl
        dz = self.decoder.backward(dx_hat)
        dmu, dlog_var = reparameterize_backward(dz, c_rep)
        dmu_kl, dlog_var_kl = kl_divergence_backward(mu, log_var, self.kl_weight)
        dmu += dmu_kl
        dlog_var += dlog_var_kl
        if self._input_grad_flag:
            self.encoder.backward(dmu, dlog_var, input_grad=False)  # the data needs no gradient
        else:  # an ldm_np from before Encoder.backward(..., input_grad=...)
            self.encoder.backward(dmu, dlog_var)
        self.opt_enc.step(self.encoder.params, self.encoder.grads)
        self.opt_dec.step(self.decoder.params, self.decoder.grads)
        return loss


@dataclass
class DenoiserStep:
    """One denoiser training step: draw t and noise, q_sample, forward, MSE on the noise, backward, Adam."""

    model: Any
    schedule: dict
    z0: Any  # [batch, latent] fixed clean latents on the device
    rng: Any
    q_sample: Callable[..., Any] = inline_q_sample
    opt: Adam = field(default_factory=Adam)

    def __call__(self) -> Any:
        z0 = self.z0
        batch = z0.shape[0]
        t = self.rng.integers(0, self.schedule["num_steps"], size=batch)  # [batch]
        noise = self.rng.standard_normal(z0.shape, dtype=z0.dtype)  # [batch, latent]
        z_t = self.q_sample(self.schedule, z0, t, noise)
        pred = self.model.forward(z_t, t)
        loss, dpred = mse_loss(pred, noise)
        self.model.backward(dpred)
        self.opt.step(self.model.params, self.model.grads)
        return loss


@dataclass
class DenoiserForward:
    """One sampling step's network cost: the denoiser's forward pass on a fixed batch."""

    model: Any
    z_t: Any
    t: Any

    def __call__(self) -> Any:
        return self.model.forward(self.z_t, self.t)


# --------------------------------------------------------------------------
# Sampling: ldm_np.samplers.sample if it exists, else a plain loop
# --------------------------------------------------------------------------


def ddim_timesteps(num_steps: int, num_inference_steps: int) -> list[int]:
    """Evenly spaced timesteps, high to low: T-1-k*(T//n) style "leading" spacing (DDIM, Song et al., 2021)."""
    stride = max(num_steps // num_inference_steps, 1)
    return list(range(0, num_steps, stride))[:num_inference_steps][::-1]


def plain_sample_loop(
    model: Any, schedule: dict, num_samples: int, sampler: str, steps: int, rng: Any
) -> Any:
    """The sampling loop without the library's sampler: ``steps`` denoiser forwards plus the update.

    DDPM (Ho et al., 2020), every step from T-1 to 0:
        x = (x - beta_t / sqrt(1 - ab_t) * eps) / sqrt(alpha_t) + sqrt(posterior_var_t) * noise
    DDIM, eta = 0 (Song et al., 2021):
        x0 = (x - sqrt(1 - ab_t) eps) / sqrt(ab_t);  x = sqrt(ab_prev) x0 + sqrt(1 - ab_prev) eps
    """
    xp = model.xp
    dtype = model.dtype
    host = {k: to_numpy(schedule[k]).astype(np.float64) for k in ("betas", "alphas", "alphas_cumprod")}
    post_var = to_numpy(schedule["posterior_variance"]).astype(np.float64)
    x = rng.standard_normal((num_samples, model.latent_size), dtype=dtype)
    if sampler == "ddpm":
        for t in range(schedule["num_steps"] - 1, -1, -1):
            tt = xp.full(num_samples, t, dtype=xp.int64)
            eps = model.forward(x, tt)
            ab = host["alphas_cumprod"][t]
            x -= float(host["betas"][t] / np.sqrt(1.0 - ab)) * eps
            x *= float(1.0 / np.sqrt(host["alphas"][t]))
            if t > 0:
                x += float(np.sqrt(post_var[t])) * rng.standard_normal(x.shape, dtype=dtype)
        return x
    ts = ddim_timesteps(schedule["num_steps"], steps)
    for i, t in enumerate(ts):
        tt = xp.full(num_samples, t, dtype=xp.int64)
        eps = model.forward(x, tt)
        ab = host["alphas_cumprod"][t]
        ab_prev = host["alphas_cumprod"][ts[i + 1]] if i + 1 < len(ts) else 1.0
        x0 = x - float(np.sqrt(1.0 - ab)) * eps
        x0 *= float(1.0 / np.sqrt(ab))
        x = x0 * float(np.sqrt(ab_prev))
        x += float(np.sqrt(1.0 - ab_prev)) * eps
    return x


def find_sampler() -> Callable[..., Any] | None:
    try:
        from ldm_np.samplers import sample
    except Exception:  # written by someone else, may not exist yet
        return None
    return sample


def make_sampling_call(
    model: Any, schedule: dict, num_samples: int, sampler: str, steps: int, seed: int
) -> tuple[Callable[[], Any], str]:
    """A no-argument callable that draws ``num_samples`` samples, and a note saying which code it runs."""
    xp = model.xp
    sample = find_sampler()
    if sample is not None:

        def library(n: int = num_samples, steps: int = steps) -> Any:
            rng = default_rng(seed, xp)
            return sample(
                model,
                schedule,
                n,
                sampler=sampler,
                num_inference_steps=steps,
                rng=rng,
                shape=model.latent_size,
            )

        try:
            out = library(2, min(steps, 2)) if sampler == "ddim" else None
            if sampler == "ddpm" or out is not None:
                return library, "ldm_np.samplers.sample"
        except Exception as exc:  # fall back, and say why
            reason = f"ldm_np.samplers.sample failed ({type(exc).__name__}: {exc})"
        else:
            reason = "ldm_np.samplers.sample returned None"
    else:
        reason = "ldm_np.samplers not found"

    def plain() -> Any:
        return plain_sample_loop(model, schedule, num_samples, sampler, steps, default_rng(seed, xp))

    return plain, f"plain loop of denoiser forwards ({reason})"


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
    and skips ``dy @ W.T`` where the step never uses that gradient.
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
        skip_dx: tuple[str, ...] = (),
    ) -> MatmulPlan:
        rng = np.random.default_rng(0)

        def rand(*shape: int) -> Any:
            return xp.asarray(rng.standard_normal(shape).astype(dtype))

        ops = []
        flops = 0.0
        for name, fan_in, fan_out in layers:
            x, w, dy = rand(batch, fan_in), rand(fan_in, fan_out), rand(batch, fan_out)
            ops.append((x, w, xp.empty((batch, fan_out), dtype=dtype)))
            flops += 2.0 * batch * fan_in * fan_out
            if backward:
                ops.append((x.T, dy, xp.empty((fan_in, fan_out), dtype=dtype)))
                flops += 2.0 * batch * fan_in * fan_out
                if name not in skip_dx:
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
