# %% [markdown]
# # Tutorial 8: one code path for CPU and GPU, and where the time goes
#
# `ldm_np` runs on a GPU without a second implementation: every function asks
# its inputs which array module owns them (NumPy or CuPy) and uses that
# module for everything it allocates. This tutorial shows that mechanism,
# then takes a stopwatch to one training step of the denoiser on the CPU to
# see what a NumPy model actually spends its time on, and tries to put the
# second CPU core to work with data parallelism.
#
# **Learning goals**
#
# - Explain array-module dispatch (`xp = get_array_module(x)`) and run the
#   same library functions on whichever device is present.
# - Keep float32 float32: spot the NumPy 2 promotion rules that silently turn
#   a step into float64.
# - Time the parts of a denoiser training step (matrix products, SiLU,
#   LayerNorm, Adam, the rest) and compute the share spent in BLAS.
# - Count a step's matrix-product FLOPs from the parameter shapes alone.
# - Split a training step across CPU cores (data parallelism) and say why it
#   gains less than the number of cores.
#
# **Prerequisites**: tutorial 1 (layers and their backward passes), tutorial 3
# (the forward process, `q_sample`) and tutorial 4 (the denoiser). No GPU
# needed: without one, everything runs on the CPU and the tutorial says so.
#
# **How to run**: `python tutorials/08_gpu_and_speed.py` (under a minute,
# mostly timing), or cell by cell in VS Code / Jupyter (`jupytext
# --to notebook tutorials/08_gpu_and_speed.py`). `LDM_NP_FAST=1` runs a
# smaller version in a few seconds. Figures go to
# `tutorials/figures/08_gpu_and_speed/`. Timings depend on the machine and on
# whatever else it is doing; the numbers quoted in the text were measured on
# 2 CPU cores.

# %%
import copy
import inspect
import os
import time
from concurrent.futures import ThreadPoolExecutor

import matplotlib.pyplot as plt
import numpy as np
from _tutorial import FAST, pick, show

import ldm_np
from ldm_np.backend import get_array_module, gpu_available, to_device, to_numpy, xp_for_device
from ldm_np.denoiser import Denoiser
from ldm_np.diffusion import q_sample
from ldm_np.layers import (
    dense_forward,
    layernorm_backward,
    layernorm_forward,
    sigmoid,
    silu_backward,
    silu_forward,
)
from ldm_np.losses import mse_backward, mse_forward
from ldm_np.optim import Adam, clip_grad_norm
from ldm_np.schedules import make_schedule
from ldm_np.training import EMA, denoiser_step

TUTORIAL = "08_gpu_and_speed"
print("fast mode" if FAST else "normal mode")

# %% [markdown]
# ## 1. Is there a GPU?
#
# CuPy is optional. `ldm_np.backend` is the only module that imports it,
# inside a `try` that catches *any* exception, so a missing or broken CUDA
# install still leaves a working CPU build. `gpu_available()` reports the
# result.

# %%
HAVE_GPU = gpu_available()
if HAVE_GPU:
    DEVICE = "gpu"
    print("CuPy found a CUDA GPU: the examples below run on it, and the timings on the CPU.")
else:
    DEVICE = "cpu"
    print(
        "No GPU here (CuPy is not installed, or sees no CUDA device).\n"
        "Everything below runs on the CPU with NumPy. The code is the same code a GPU would run:\n"
        "on a machine with CuPy (pip install cupy-cuda12x) set DEVICE = 'gpu' and nothing else changes."
    )
xp = xp_for_device(DEVICE)
print(f"DEVICE = {DEVICE!r} -> array module {xp.__name__}")

try:
    xp_for_device("gpu")
    gpu_error = None
except RuntimeError as exc:  # what a user sees when asking for a GPU that is not there
    gpu_error = str(exc)
    print(f"\nxp_for_device('gpu') without a GPU raises:\n  {gpu_error}")

# %% [markdown]
# ## 2. Array-module dispatch: one function, two devices
#
# Every function in the library starts the same way: it asks its inputs
# which module owns them, and allocates with that module and an explicit
# dtype. Here is the library's own `sigmoid`:

# %%
print(inspect.getsource(sigmoid))

# %% [markdown]
# `get_array_module(x)` is `numpy` for NumPy arrays (and Python numbers) and
# `cupy` for CuPy arrays. Nothing else changes: `xp.tanh` is NumPy's tanh or
# CuPy's. Below, the *same* calls run on the arrays of `DEVICE`, and on a GPU
# their results are compared with the CPU's.

# %%
rng = np.random.default_rng(0)
x_host = rng.standard_normal((4, 8)).astype(np.float32)  # [4, 8], always built on the host
x_dev = to_device(x_host, DEVICE)  # [4, 8] on DEVICE (a no-op on the CPU)
print(f"get_array_module(x_host) = {get_array_module(x_host).__name__}")
print(f"get_array_module(x_dev)  = {get_array_module(x_dev).__name__}")

# The same library model, built on either device from the same seed (weights are drawn on the host).
den_cpu = Denoiser(latent_size=8, hidden_size=32, num_layers=2, num_steps=1000, seed=0, device="cpu")
den_dev = Denoiser(latent_size=8, hidden_size=32, num_layers=2, num_steps=1000, seed=0, device=DEVICE)
t_host = np.array([0, 10, 500, 999], dtype=np.int64)  # [4]
out_cpu = den_cpu.forward(x_host, t_host)  # [4, 8]
out_dev = den_dev.forward(x_dev, to_device(t_host, DEVICE))  # [4, 8] on DEVICE
print(
    f"denoiser output on {DEVICE}: {type(out_dev).__module__}.{type(out_dev).__name__} {out_dev.shape} {out_dev.dtype}"
)
device_vs_cpu = float(np.abs(to_numpy(out_dev) - out_cpu).max())
print(
    f"largest difference from the CPU result: {device_vs_cpu:.1e} (0 on the CPU; ~1e-6 on a GPU, other kernels)"
)

# %% [markdown]
# Three rules make this work, and each is a GPU rule that the CPU does not
# enforce, so the test suite checks them with a strict stand-in device:
#
# - **No mixing.** CuPy refuses a NumPy array as an operand ("Unsupported
#   type numpy.ndarray") instead of copying it silently. Move data once, with
#   `to_device`, and read results back once, with `to_numpy`.
# - **No host syncs inside a step.** `float(loss)`, `.item()` or a Python
#   `if` on an array make the CPU wait for the GPU. The training loop reads
#   the loss only every `log_every` steps (`ldm_np.training.run_loop`).
# - **Randomness is passed in.** NumPy's and CuPy's generators give
#   different streams from one seed, so results on the two devices agree in
#   distribution, not bit for bit.
#
# ## 3. float32 must stay float32
#
# Half the speed of a float32 model is lost the moment one array becomes
# float64, and NumPy 2's promotion rules make that easy: a *NumPy* float64
# scalar is not "weak" like a Python float. NumPy 1.x (still common on lab
# machines) had the opposite trap: a float32 *scalar*, such as
# `schedule[...][t]` for an int t, times a Python float gave float64.

# %%
a = np.ones(3, dtype=np.float32)
NUMPY2 = np.lib.NumpyVersion(np.__version__) >= "2.0.0"
schedule = make_schedule(1000, dtype="float32")
print(f"float32 array * Python float         -> {(a * 0.5).dtype}")
scalar_note = "silent upcast" if NUMPY2 else f"NumPy {np.__version__}: value-based, NumPy 2 upcasts"
print(f"float32 array * np.float64 scalar     -> {(a * np.float64(0.5)).dtype}   ({scalar_note})")
print(
    f"float32 array * schedule[...][t]      -> {(a * schedule['alphas_cumprod'][10]).dtype}   (schedule kept in float32)"
)
print(f"float32 array * int64 mask            -> {(a * np.array([1, 0, 1])).dtype}   (silent upcast)")
print(f"float32 scalar * Python float        -> {(np.float32(2) * 0.5).dtype}   (float64 under NumPy 1.x)")
print(f"float32 array * mask.astype(float32)  -> {(a * np.array([1, 0, 1]).astype(np.float32)).dtype}")

# %% [markdown]
# That is why `make_schedule` computes in float64 but stores float32, and why
# masks in the samplers are cast to the model dtype first. The Checks cell
# asserts that a whole training step keeps every array float32.
#
# ## 4. Where the time goes: one training step of the denoiser, taken apart
#
# We use the library's default sizes (`ldm_np.models.DEFAULTS`): latent 32,
# hidden `h = 256`, 4 residual blocks, batch `B` of 256 and 1,024 (the
# denoiser is the part that trains longest). One step is
#
#     forward:  time_mlp_1, z_proj, 4 x [LayerNorm, up (h -> 4h), SiLU, down (4h -> h)], noise_pred
#     loss:     mean squared error against the noise
#     backward: the same layers in reverse
#     update:   gradient clipping, Adam, EMA of the weights
#
# First the whole step, as `LatentDiffusion.fit_denoiser` runs it
# (`ldm_np.training.denoiser_step`). Then each kind of work alone, with the
# library's own functions on arrays of the same shapes: the matrix products
# (three per dense layer: `x @ W`, `dy @ W.T`, `x.T @ dy`), SiLU forward and
# backward, LayerNorm forward and backward, Adam, clipping and EMA. What is
# left is the rest: bias and residual adds, bias gradients (column sums), the
# timestep embedding, the loss.

# %%
LATENT, HIDDEN, LAYERS = 32, 256, 4
BATCHES = pick((256, 1024), (64,))
REPEATS = pick(9, 3)
print(
    f"BLAS threads: OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}, {os.cpu_count()} CPUs"
)


def median_seconds(fn, repeats: int = REPEATS) -> float:
    """Median wall time of fn() over ``repeats`` calls, after two warm-up calls."""
    fn()
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def denoiser_parts(batch: int) -> dict[str, float]:
    """Seconds per call of a full denoiser training step and of each kind of work in it."""
    rng = np.random.default_rng(0)
    den = Denoiser(LATENT, HIDDEN, LAYERS, 1000, seed=0)
    opt, ema = Adam(lr=1e-3), EMA(den.params, 0.999)
    z0 = rng.standard_normal((batch, LATENT)).astype(np.float32)  # [B, latent]
    t = rng.integers(0, 1000, size=batch)  # [B]
    noise = rng.standard_normal((batch, LATENT)).astype(np.float32)  # [B, latent]
    times = {"full step": median_seconds(lambda: denoiser_step(den, opt, schedule, z0, t, noise, ema=ema))}

    def rand(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    # The matrix products: three per dense layer, shapes read off the kernels.
    ops = [
        (rand(batch, k.shape[0]), k, rand(batch, k.shape[1]))
        for k in (g["kernel"] for g in den.params.values() if "kernel" in g)
    ]

    def matmuls():
        for x, w, dy in ops:
            x @ w  # forward       [B, in] x [in, out]
            dy @ w.T  # dx          [B, out] x [out, in]
            x.T @ dy  # dW          [in, B] x [B, out]

    times["matrix products"] = median_seconds(matmuls)

    u, dy_u = rand(batch, 4 * HIDDEN), rand(batch, 4 * HIDDEN)  # [B, 4h]: inside each block
    e, dy_e = rand(batch, HIDDEN), rand(batch, HIDDEN)  # [B, h]: the time MLP

    def silus():
        for _ in range(LAYERS):
            _, c = silu_forward(u)
            silu_backward(dy_u, c)
        _, c = silu_forward(e)
        silu_backward(dy_e, c)

    times["SiLU"] = median_seconds(silus)
    norm = den.params["denoiser_block_1_norm"]

    def layernorms():
        for _ in range(LAYERS):
            _, c = layernorm_forward(e, norm["gamma"], norm["beta"])
            layernorm_backward(dy_e, c)

    times["LayerNorm"] = median_seconds(layernorms)
    params, grads = copy.deepcopy(den.params), copy.deepcopy(den.grads)
    adam = Adam(lr=1e-3)
    times["Adam"] = median_seconds(lambda: adam.step(params, grads))
    ema2 = EMA(params, 0.999)
    times["clip + EMA"] = median_seconds(lambda: (clip_grad_norm(grads, 1.0), ema2.update(params)))
    measured = sum(v for k, v in times.items() if k != "full step")
    times["the rest"] = max(times["full step"] - measured, 0.0)
    # Shares are taken of the larger of the two totals, so they always add up to 1.
    times["total"] = max(times["full step"], measured)
    return times


results = {}
for B in BATCHES:
    results[B] = denoiser_parts(B)
    times = results[B]
    parts_sum = times["total"] - times["the rest"]
    print(
        f"\nbatch {B}: full step {1e3 * times['full step']:.1f} ms; the parts, timed alone, add up to "
        f"{parts_sum / times['full step']:.0%} of it"
    )
    for name, sec in times.items():
        if name not in ("full step", "total"):
            print(f"  {name:<16} {1e3 * sec:7.2f} ms  {sec / times['total']:6.1%}")

# %% [markdown]
# The parts are timed alone, so they need not add up exactly to the full
# step (caches are warmer or colder, and on a busy machine every timing
# wobbles): "the rest" is the difference when it is positive, and each share
# is taken of the larger of the two totals.
#
# ### How much is BLAS?
#
# For a dense layer with `in` inputs and `out` outputs the three products
# each cost `2 B in out` floating-point operations, so one step costs
#
#     FLOPs = 6 B sum_layers (in x out) = 6 B (number of kernel weights)
#
# We count it from the parameter shapes and compare with the time the matrix
# products took.

# %%
den = Denoiser(LATENT, HIDDEN, LAYERS, 1000, seed=0)
kernel_shapes = {name: g["kernel"].shape for name, g in den.params.items() if "kernel" in g}
kernel_weights = sum(i * o for i, o in kernel_shapes.values())
print(
    f"dense layers: {len(kernel_shapes)}; kernel weights: {kernel_weights:,} of {den.num_params:,} parameters"
)
for name, (i, o) in kernel_shapes.items():
    print(f"  {name:<22} [{i:>4}, {o:>4}]")
blas_share = {}
for B, times in results.items():
    flops = 6 * B * kernel_weights
    blas_share[B] = times["matrix products"] / times["total"]
    print(
        f"batch {B:>5}: {flops / 1e9:.2f} GFLOP of matrix products per step, "
        f"{flops / times['matrix products'] / 1e9:.0f} GFLOP/s in BLAS, "
        f"{blas_share[B]:.0%} of the step's time"
    )

fig, ax = plt.subplots(figsize=(9, 1.2 + 0.9 * len(results)), layout="constrained")
parts = ["matrix products", "SiLU", "LayerNorm", "Adam", "clip + EMA", "the rest"]
colours = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "0.7"]
for row, times in enumerate(results.values()):
    left = 0.0
    for part, colour in zip(parts, colours):
        share = times[part] / times["total"]
        ax.barh(row, share, left=left, color=colour, label=part if row == 0 else None)
        if share > 0.06:
            ax.text(
                left + share / 2, row, f"{share:.0%}", ha="center", va="center", color="white", fontsize=9
            )
        left += share
ax.set_yticks(range(len(results)), [f"batch {B}\n{1e3 * t['full step']:.0f} ms" for B, t in results.items()])
ax.set_xlabel("share of one denoiser training step (latent 32, hidden 256, 4 blocks, float32, CPU)")
ax.set_xlim(0, 1)
ax.legend(ncol=6, loc="lower center", bbox_to_anchor=(0.5, 1.0), fontsize=8)
ax.grid(False)
show(fig, TUTORIAL, "where_the_time_goes")

# %% [markdown]
# How to read it (on 2 CPU cores):
#
# - **Matrix products are the largest part, and grow with the batch**: their
#   cost grows like `B`, while Adam, clipping and EMA cost the same at any
#   batch (they touch every parameter once per step, 2.2 million of them
#   here). Measured on 2 busy cores: about half the step at batch 256,
#   about 70-90% at batch 1,024.
# - **Elementwise work is the rest of the bill.** SiLU, LayerNorm, bias and
#   residual adds run single-threaded in NumPy, one pass over memory per
#   operation, while PyTorch fuses each of them into one multi-threaded
#   kernel. This, and not the matrix products, is most of what separates a
#   careful NumPy step from PyTorch eager (the README's benchmark table has
#   the ratios, and how close the matrix products alone come).
# - **On a GPU the picture flips at small batches**: each elementwise op is
#   a kernel launch, so a step of many small kernels is launch-bound; fusing
#   the SiLU and LayerNorm chains (`cupy.fuse`, `ElementwiseKernel`) is the
#   fix. Column sums of tall arrays (`x.sum(axis=0)`) are slow in CuPy; a
#   matrix-vector product with a ones vector is the fast form.
#
# The full table, both training steps, sampling, the full-space denoiser and
# a side-by-side with PyTorch when it is installed, is one command:
#
#     python benchmarks/run.py              # --quick for a smoke test, --device gpu on a GPU
#
# (When NumPy and PyTorch run in one process, let OpenBLAS's spinning worker
# threads settle between them; the benchmark does.)
#
# ### Using the second core: data parallelism, in twenty lines
#
# While NumPy does elementwise work, the second core has little to do.
# Data parallelism puts it to work the way multi-GPU training uses several
# GPUs, with threads standing in for devices:
#
#     split the batch into one shard per worker
#     each worker: forward + backward of its shard, on its own copy of the model
#                  (same weights; its own activations and gradients)
#     sum the copies' gradients, each weighted by its shard's share of the batch
#     then one optimizer step, as usual
#
# The weights make the sum exact: the loss is a mean over the batch, so with
# shards of `n_k` rows out of `B`, `L = sum_k (n_k / B) L_k` and therefore
# `dL/dtheta = sum_k (n_k / B) dL_k/dtheta`. The library does not do this
# for you (it would put a thread pool inside every step); the whole
# mechanism is the two functions below, written with the library's own
# forward and backward passes.


# %%
# The schedule in each dtype: float64 for the exactness check, float32 for the timing.
schedule_of = {np.dtype(np.float32): schedule, np.dtype(np.float64): make_schedule(1000, dtype="float64")}


def shard_loss_and_grads(model, z0, t, noise):
    """Forward and backward of one shard: its mean loss L_k and dL_k/dtheta (the model's grads)."""
    z_t = q_sample(schedule_of[model.dtype], z0, t, noise)  # [n_k, latent]
    loss, cache = mse_forward(model.forward(z_t, t), noise)  # the denoiser predicts the noise
    model.backward(mse_backward(1.0, cache))
    return loss, model.grads


def data_parallel_grads(models, pool, z0, t, noise):
    """The whole batch's loss and gradients, from one shard per model, run in ``pool``'s threads."""
    batch = z0.shape[0]
    shards = np.array_split(np.arange(batch), len(models))  # row indices; sizes differ by at most 1
    jobs = [pool.submit(shard_loss_and_grads, m, z0[i], t[i], noise[i]) for m, i in zip(models, shards)]
    results = [job.result() for job in jobs]
    weights = [len(i) / batch for i in shards]  # n_k / B
    loss = sum(w * loss_k for w, (loss_k, _) in zip(weights, results))
    grads = {
        layer: {name: sum(w * g[layer][name] for w, (_, g) in zip(weights, results)) for name in group}
        for layer, group in results[0][1].items()
    }
    return loss, grads


# %% [markdown]
# First the claim: in float64, an odd batch (so the shards differ in size and
# the weights matter) gives the same loss and gradients through two threads
# as through one whole-batch pass, up to rounding (relative 1e-12).

# %%
B_CHECK = 9  # shards of 5 and 4 rows
rng_dp = np.random.default_rng(5)
z0_c = rng_dp.standard_normal((B_CHECK, LATENT))  # [B, latent] float64
t_c = rng_dp.integers(0, 1000, size=B_CHECK)  # [B]
noise_c = rng_dp.standard_normal((B_CHECK, LATENT))  # [B, latent]
den64 = Denoiser(LATENT, 64, 2, 1000, seed=0, dtype="float64")
whole_loss, whole_grads = shard_loss_and_grads(den64, z0_c, t_c, noise_c)
whole_grads = copy.deepcopy(whole_grads)  # the next backward of den64 refills its grads
with ThreadPoolExecutor(max_workers=2) as pool:
    dp_loss, dp_grads = data_parallel_grads([den64, copy.deepcopy(den64)], pool, z0_c, t_c, noise_c)
dp_error = max(
    float(np.abs(dp_grads[layer][name] - g).max() / (np.abs(g).max() + 1e-300))
    for layer, group in whole_grads.items()
    for name, g in group.items()
)
print(f"loss: whole batch {float(whole_loss):.12f}, two shards {float(dp_loss):.12f}")
print(f"largest gradient difference, relative to its array's largest entry: {dp_error:.1e}")

# %% [markdown]
# Now the stopwatch: the whole batch on one model in this thread, against
# two shards on two copies in two threads, in alternating rounds so that a
# slow moment of the machine hits both alike. Before each timed call, a short
# pause and one untimed call: after a multi-threaded matrix product
# OpenBLAS's idle threads spin for a moment and would slow whichever setting
# comes next.
#
# What to expect. Call `f_parallel` the share of the one-worker step that a
# second worker can take over and `f_serial = 1 - f_parallel` the rest. With
# two workers the best case is (Amdahl's law)
#
#     speed-up <= 1 / (f_serial + f_parallel / 2)
#
# If BLAS already runs each matrix product on every core, only the
# elementwise work moves, so `f_parallel` is the part of section 4's step
# that is *not* matrix products: 0.4 gives 1 / (0.6 + 0.2) = 1.25x, not 2x.
# With BLAS on one thread (`OPENBLAS_NUM_THREADS=1`) everything could move
# and the bound is 2x. In practice it is less: the threads take turns at
# Python's global interpreter lock between NumPy calls (many short calls at
# small batches), each shard's products are smaller and less efficient, and
# two threads that each call a multi-threaded BLAS compete for the same
# cores (a serious implementation holds BLAS to one thread per worker, for
# example with threadpoolctl's `threadpool_limits`). The cell measures which
# way it goes on this machine.

# %%
B_DP = pick(1024, 128)
z0_dp = rng_dp.standard_normal((B_DP, LATENT)).astype(np.float32)  # [B, latent]
t_dp = rng_dp.integers(0, 1000, size=B_DP)  # [B]
noise_dp = rng_dp.standard_normal((B_DP, LATENT)).astype(np.float32)  # [B, latent]
den_1 = Denoiser(LATENT, HIDDEN, LAYERS, 1000, seed=0)
copies = [Denoiser(LATENT, HIDDEN, LAYERS, 1000, seed=0) for _ in range(2)]  # same seed, same weights
dp_rounds = {"1 worker": [], "2 workers": []}
with ThreadPoolExecutor(max_workers=2) as pool:
    settings = {
        "1 worker": lambda: shard_loss_and_grads(den_1, z0_dp, t_dp, noise_dp),
        "2 workers": lambda: data_parallel_grads(copies, pool, z0_dp, t_dp, noise_dp),
    }
    for _ in range(REPEATS):
        for name, fn in settings.items():
            time.sleep(0.15)
            fn()
            start = time.perf_counter()
            fn()
            dp_rounds[name].append(time.perf_counter() - start)
dp_times = {name: float(np.median(times)) for name, times in dp_rounds.items()}
speedup = dp_times["1 worker"] / dp_times["2 workers"]
for name, sec in dp_times.items():
    print(f"{name}, forward + backward at batch {B_DP}: {1e3 * sec:.1f} ms (median of {REPEATS})")

blas_env = os.environ.get("OPENBLAS_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS")
blas_threads = int(blas_env) if blas_env and blas_env.isdigit() else (os.cpu_count() or 1)
B_parts = max(blas_share)  # the largest batch taken apart in section 4
f_parallel = 1.0 - blas_share[B_parts] if blas_threads > 1 else 1.0
bound = 1.0 / ((1.0 - f_parallel) + f_parallel / 2)
why = (
    f"the elementwise share at batch {B_parts}" if blas_threads > 1 else "everything: BLAS runs on one thread"
)
print(
    f"BLAS threads (from the environment): {blas_threads}; f_parallel = {f_parallel:.2f} ({why}), "
    f"so the bound is 1 / ({1 - f_parallel:.2f} + {f_parallel:.2f} / 2) = {bound:.2f}x"
)
if speedup > 1.05:
    print(f"measured: {speedup:.2f}x faster with two workers, {speedup / bound:.0%} of the bound")
elif speedup >= 0.95:
    print(f"measured: {speedup:.2f}x, no clear gain: the overheads ate what the second core offered")
else:
    print(f"measured: {speedup:.2f}x, two workers were slower here: the overheads outweighed the second core")

fig, ax = plt.subplots(figsize=(6, 1.8), layout="constrained")
ax.barh([1, 0], [1e3 * dp_times["1 worker"], 1e3 * dp_times["2 workers"]], color=["0.6", "tab:blue"])
ax.set_yticks([1, 0], ["1 worker\n(BLAS threads only)", "2 workers\n(two shards, two threads)"])
ax.set_xlabel(f"ms per forward + backward, batch {B_DP}")
ax.grid(False)
show(fig, TUTORIAL, "data_parallel")

# %% [markdown]
# Whichever way the printout went, the bound says why the answer is never
# 2x on a machine whose BLAS already uses every core, and the measurement
# says whether the bookkeeping (threads, copies, the weighted sum) pays on
# this machine at this batch. Small shards (fast mode's 64 rows each) rarely
# pay: each NumPy call is short, so the GIL and the thread hand-offs weigh
# more than the work. This is why the library trains with one plain step
# and leaves data parallelism to whoever wants it, as above.
#
# ## 5. The same step on the GPU
#
# On a machine with CuPy the cell below times the identical `denoiser_step`
# on the GPU, with a device synchronisation before the clock stops (GPU calls
# return before the work is done). Here it only runs when a GPU is present.

# %%
if HAVE_GPU:
    B = 1024
    den_g = Denoiser(LATENT, HIDDEN, LAYERS, 1000, seed=0, device="gpu")
    sched_g = make_schedule(1000, dtype="float32", device="gpu")
    opt_g, ema_g = Adam(lr=1e-3), EMA(den_g.params, 0.999)
    rng_g = ldm_np.default_rng(0, xp)
    z0_g = rng_g.standard_normal((B, LATENT), dtype=np.float32)  # [B, latent] on the GPU
    t_g = rng_g.integers(0, 1000, size=B)  # [B]
    noise_g = rng_g.standard_normal((B, LATENT), dtype=np.float32)

    def gpu_step():
        denoiser_step(den_g, opt_g, sched_g, z0_g, t_g, noise_g, ema=ema_g)
        xp.cuda.Device().synchronize()  # wait for the GPU before reading the clock

    gpu_time = median_seconds(gpu_step)
    print(f"GPU: denoiser training step at batch {B}: {1e3 * gpu_time:.2f} ms")
    if B in results:
        print(f"CPU: {1e3 * results[B]['full step']:.1f} ms  ->  {results[B]['full step'] / gpu_time:.0f}x")
else:
    print("No GPU here: skipped. (On a GPU the matrix products of this step take a fraction of a")
    print("millisecond, so the many small elementwise kernels and their launches dominate: see above.)")

# %% [markdown]
# ## Checks
#
# Timings are noisy, so nothing below asserts a time. The asserts restate
# the structural facts the lesson relied on.

# %%
# Dispatch: NumPy arrays dispatch to NumPy; the device's arrays to the device's module.
assert get_array_module(x_host) is np and get_array_module(x_dev) is xp
assert get_array_module(1.0, None, x_host) is np
assert device_vs_cpu < 1e-4  # the same function gives the same numbers on either device
if not HAVE_GPU:
    assert gpu_error is not None and "CuPy" in gpu_error  # a clear message, not an ImportError

# float32 stays float32: the promotion traps are real, the library's arrays avoid them.
if np.lib.NumpyVersion(np.__version__) >= "2.0.0":
    assert (a * np.float64(0.5)).dtype == np.float64 and (a * 0.5).dtype == np.float32
else:  # NumPy 1.x casts by value next to an array, by type between scalars
    assert (a * np.float64(0.5)).dtype == np.float32 and (np.float32(2) * 0.5).dtype == np.float64
assert (a * np.array([1, 0, 1])).dtype == np.float64  # an int64 array upcasts under NumPy 1 and 2
assert all(v.dtype == np.float32 for k, v in schedule.items() if hasattr(v, "dtype"))
den32 = Denoiser(LATENT, 64, 2, 1000, seed=0)
opt32, ema32 = Adam(lr=1e-3), EMA(den32.params, 0.999)
z32 = np.random.default_rng(1).standard_normal((16, LATENT)).astype(np.float32)
loss32 = denoiser_step(den32, opt32, schedule, z32, np.arange(16) * 60, z32[::-1].copy(), ema=ema32)["loss"]
assert loss32.dtype == np.float32
for tree in (den32.params, den32.grads, ema32.shadow):
    assert all(v.dtype == np.float32 for g in tree.values() for v in g.values())
assert all(s[k].dtype == np.float32 for s in opt32.state.values() for k in ("m", "v"))

# FLOP counting from shapes: the kernels are what the parameter count says they are.
h, L, lat = HIDDEN, LAYERS, LATENT
assert kernel_weights == h * h + lat * h + L * (2 * 4 * h * h) + h * lat
biases_and_norms = den.num_params - kernel_weights
assert biases_and_norms == h + h + L * (2 * h + 4 * h + h) + lat  # time_mlp_1, z_proj, blocks, noise_pred
# Each of the three products per layer has the shape the lesson said, so 2 B in out FLOPs each.
Bc = 4
flops_counted = 0
for i, o in kernel_shapes.values():
    xc, wc, dyc = np.ones((Bc, i), np.float32), np.ones((i, o), np.float32), np.ones((Bc, o), np.float32)
    y, _ = dense_forward(xc, wc, np.zeros(o, np.float32))
    assert y.shape == (Bc, o) and (dyc @ wc.T).shape == xc.shape and (xc.T @ dyc).shape == wc.shape
    assert y.dtype == np.float32
    flops_counted += 3 * 2 * Bc * i * o
assert flops_counted == 6 * Bc * kernel_weights
# Data parallelism changes the order of the sums over the batch, nothing else: in float64 the
# weighted shard gradients are the whole-batch gradients up to rounding.
assert abs(float(dp_loss) - float(whole_loss)) <= 1e-12 * abs(float(whole_loss))
assert dp_error < 1e-12
assert set(dp_times) == {"1 worker", "2 workers"} and 1.0 <= bound <= 2.0
# The bar chart's shares are a partition of the step (no timing claim: timings are noisy).
for B, times in results.items():
    assert np.isclose(sum(times[p] for p in parts), times["total"]) and 0.0 < blas_share[B] <= 1.0
print("all checks passed")
