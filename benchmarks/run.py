"""Benchmark ldm_np's training and sampling steps, optionally against PyTorch eager.

    python benchmarks/run.py [--device cpu|gpu] [--quick] [--repeats N] [--threads N] [--no-torch]

Prints one table, measured in a single run: the VAE and denoiser training
steps at the seed's sizes (input 287, latent 32, hidden 256, 4 blocks, 1000
steps) for batch 256, 1,024 and 4,096; the full-space denoiser (latent_size =
287) beside the latent one; the denoiser forward at batch 1,024; sampling
1,000 samples with DDPM (1,000 steps) and DDIM (50 steps); for each row the
time of its matrix products alone, so the BLAS share of the step is visible;
and, when torch is importable, the same architecture in PyTorch eager with
the same thread count, interleaved with the NumPy runs, and the ratio.
Then the peak memory of a training run at batch 1,024.

``--quick`` shrinks everything (batch 256, 64 samples, few steps, 2 repeats)
so a smoke test can run it in seconds. ``--threads N`` sets the BLAS threads
of NumPy and PyTorch alike (default: what NumPy's BLAS chose, usually one per
core); ``--wait-quiet S`` waits up to S seconds before each row for other
processes to leave the CPUs (a shared machine makes every number noisy).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _threads_from_argv(argv: list[str]) -> int | None:
    """``--threads N`` read before NumPy is imported: OpenBLAS takes its thread count at load time."""
    for i, arg in enumerate(argv):
        value = arg.split("=", 1)[1] if arg.startswith("--threads=") else None
        if arg == "--threads" and i + 1 < len(argv):
            value = argv[i + 1]
        if value is not None and value.isdigit() and int(value) > 0:
            return int(value)
    return None


if (_THREADS := _threads_from_argv(sys.argv[1:])) is not None:
    for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_var] = str(_THREADS)

import numpy as np  # noqa: E402

from benchmarks import harness  # noqa: E402
from ldm_np.backend import default_rng, to_device, xp_for_device  # noqa: E402
from ldm_np.denoiser import Denoiser  # noqa: E402
from ldm_np.models import DEFAULTS  # noqa: E402
from ldm_np.schedules import make_schedule  # noqa: E402
from ldm_np.vae import Decoder, Encoder  # noqa: E402

SIZES = dict(DEFAULTS)  # input 287, latent 32, hidden 256, 4 layers, 1000 steps
ROW_GROUPS = ("vae", "denoiser", "full", "forward", "sampling", "memory")


# --------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------


@dataclass
class Config:
    device: str
    quick: bool
    repeats: int
    use_torch: bool
    batches: tuple[int, ...]
    forward_batch: int
    num_samples: int
    ddpm_steps: int
    ddim_steps: int
    sample_repeats: int
    memory_batch: int
    memory_steps: int
    wait_quiet: float
    settle_s: float
    torch_memory: bool

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Config:
        if args.quick:
            return cls(
                device=args.device,
                quick=True,
                repeats=args.repeats or 2,
                use_torch=not args.no_torch,
                batches=(256,),
                forward_batch=256,
                num_samples=64,
                ddpm_steps=20,
                ddim_steps=5,
                sample_repeats=1,
                memory_batch=256,
                memory_steps=1,
                wait_quiet=args.wait_quiet,
                settle_s=0.05,
                torch_memory=False,
            )
        return cls(
            device=args.device,
            quick=False,
            repeats=args.repeats or 7,
            use_torch=not args.no_torch,
            batches=(256, 1024, 4096),
            forward_batch=1024,
            num_samples=1000,
            ddpm_steps=SIZES["num_steps"],
            ddim_steps=50,
            sample_repeats=1,
            memory_batch=1024,
            memory_steps=3,
            wait_quiet=args.wait_quiet,
            settle_s=harness.SETTLE_S,
            torch_memory=True,
        )


@dataclass
class Row:
    what: str
    batch: int
    numpy: harness.Stats
    matmul: harness.Stats | None
    gflop: float | None
    torch: harness.Stats | None
    other_load: float | None = None
    note: str = ""


# --------------------------------------------------------------------------
# PyTorch, if it is there
# --------------------------------------------------------------------------


def load_torch(cfg: Config, threads: int) -> tuple[Any, Any, str]:
    """(torch, torch_ref, message); torch is None when it is absent or unusable for this device."""
    if not cfg.use_torch:
        return None, None, "PyTorch: not used (--no-torch)"
    try:
        import torch

        from benchmarks import torch_ref
    except Exception as exc:  # torch is optional
        return None, None, f"PyTorch: not importable ({type(exc).__name__}), NumPy only"
    if cfg.device == "gpu":
        if not torch.cuda.is_available():
            return None, None, f"PyTorch {torch.__version__}: no CUDA device, NumPy/CuPy only"
        return torch, torch_ref, f"PyTorch {torch.__version__} eager on {torch.cuda.get_device_name(0)}"
    torch.set_num_threads(threads)
    return (
        torch,
        torch_ref,
        f"PyTorch {torch.__version__} eager, CPU, torch.set_num_threads({threads}) "
        f"-> {torch.get_num_threads()} threads",
    )


# --------------------------------------------------------------------------
# Rows
# --------------------------------------------------------------------------


class Bench:
    def __init__(self, cfg: Config, xp: Any, torch: Any, torch_ref: Any) -> None:
        self.cfg, self.xp, self.torch, self.tr = cfg, xp, torch, torch_ref
        self.sync = harness.synchronizer(xp)
        self.tdev = "cuda" if cfg.device == "gpu" else "cpu"
        self.tsync = torch_ref.synchronizer(self.tdev) if torch is not None else None
        self.schedule = make_schedule(SIZES["num_steps"], device=cfg.device)

    # -- helpers ----------------------------------------------------------

    def data(self, shape: tuple[int, ...], seed: int, kind: str = "normal") -> Any:
        rng = np.random.default_rng(seed)
        host = rng.random(shape) if kind == "uniform" else rng.standard_normal(shape)
        return to_device(host.astype(np.float32), self.cfg.device)

    def tensor(self, array: Any) -> Any:
        from ldm_np.backend import to_numpy

        return self.torch.from_numpy(np.ascontiguousarray(to_numpy(array))).to(self.tdev)

    def time_row(
        self,
        what: str,
        batch: int,
        np_fn: Any,
        plan: harness.MatmulPlan | None,
        torch_fn: Any,
        *,
        repeats: int | None = None,
        warmup: int = 1,
        settle: Any = None,
        torch_settle: Any = None,
        plan_scale: int = 1,
        note: str = "",
    ) -> Row:
        items = [harness.Timed("numpy", "numpy", np_fn, self.sync, settle)]
        if plan is not None:
            items.append(harness.Timed("matmul", "numpy", plan, self.sync))
        if torch_fn is not None:
            items.append(harness.Timed("torch", "torch", torch_fn, self.tsync, torch_settle))
        if self.cfg.wait_quiet:
            harness.wait_for_quiet(self.cfg.wait_quiet)
        with harness.OtherLoad() as load:
            stats = harness.time_interleaved(
                items, repeats or self.cfg.repeats, warmup=warmup, settle_s=self.cfg.settle_s
            )
        matmul = stats.get("matmul")
        gflop = None
        if plan is not None:
            gflop = plan.flops * plan_scale / 1e9
            if plan_scale != 1:
                matmul = harness.Stats.of([t * plan_scale for t in matmul.times])
        row = Row(what, batch, stats["numpy"], matmul, gflop, stats.get("torch"), load.value, note)
        print(f"  {fmt_row_short(row)}", flush=True)
        return row

    # -- the rows ---------------------------------------------------------

    def vae_step(self, batch: int) -> Row:
        i, lat, h = SIZES["input_size"], SIZES["latent_size"], SIZES["hidden_size"]
        enc = Encoder(i, lat, h, seed=0, device=self.cfg.device)
        dec = Decoder(i, lat, h, seed=1, device=self.cfg.device)
        x = self.data((batch, i), seed=10, kind="uniform")
        step = harness.VAEStep(enc, dec, x, default_rng(0, self.xp))
        layers = harness.dense_layers(enc) + harness.dense_layers(dec)
        plan = harness.MatmulPlan.build(self.xp, np.float32, layers, batch)
        torch_fn = None
        if self.torch is not None:
            tenc = self.tr.copy_from_ldm(self.tr.TorchEncoder(i, lat, h), enc).to(self.tdev)
            tdec = self.tr.copy_from_ldm(self.tr.TorchDecoder(i, lat, h), dec).to(self.tdev)
            torch_fn = self.tr.TorchVAEStep(tenc, tdec, self.tensor(x), harness.KL_WEIGHT)
        return self.time_row("VAE train step", batch, step, plan, torch_fn)

    def denoiser_models(self, latent: int) -> tuple[Any, Any]:
        model = Denoiser(
            latent,
            SIZES["hidden_size"],
            SIZES["num_layers"],
            SIZES["num_steps"],
            seed=2,
            device=self.cfg.device,
        )
        tmodel = None
        if self.torch is not None:
            tmodel = self.tr.TorchDenoiser(latent, SIZES["hidden_size"], SIZES["num_layers"])
            tmodel = self.tr.copy_from_ldm(tmodel, model).to(self.tdev)
        return model, tmodel

    def denoiser_step(self, batch: int, latent: int, label: str) -> Row:
        model, tmodel = self.denoiser_models(latent)
        z0 = self.data((batch, latent), seed=11)
        step = harness.DenoiserStep(model, self.schedule, z0, default_rng(0, self.xp))
        plan = harness.MatmulPlan.build(self.xp, np.float32, harness.dense_layers(model), batch)
        torch_fn = None
        if tmodel is not None:
            torch_fn = self.tr.TorchDenoiserStep(tmodel, self.schedule, self.tensor(z0))
        return self.time_row(label, batch, step, plan, torch_fn)

    def denoiser_forward(self, batch: int) -> Row:
        model, tmodel = self.denoiser_models(SIZES["latent_size"])
        z_t = self.data((batch, SIZES["latent_size"]), seed=12)
        t = self.xp.asarray(np.random.default_rng(13).integers(0, SIZES["num_steps"], size=batch))
        fwd = harness.DenoiserForward(model, z_t, t)
        plan = harness.MatmulPlan.build(
            self.xp, np.float32, harness.dense_layers(model), batch, backward=False
        )
        torch_fn = None
        if tmodel is not None:
            torch_fn = self.tr.TorchDenoiserForward(tmodel, self.tensor(z_t), self.tensor(t))
        return self.time_row("denoiser forward (one sampling step)", batch, fwd, plan, torch_fn)

    def sampling(self, sampler: str, steps: int) -> Row:
        n = self.cfg.num_samples
        model, tmodel = self.denoiser_models(SIZES["latent_size"])
        schedule = self.schedule
        if sampler == "ddpm" and steps != schedule["num_steps"]:
            # --quick: DDPM visits every step of its schedule, so shrink the schedule.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the terminal-SNR warning of a short schedule
                schedule = make_schedule(steps, device=self.cfg.device)
        call = harness.make_sampling_call(model, schedule, n, sampler, steps, seed=3)
        # Settling before a sampling run is one forward pass, not a whole run.
        z = self.data((n, SIZES["latent_size"]), seed=14)
        t = self.xp.zeros(n, dtype=self.xp.int64)
        settle = harness.DenoiserForward(model, z, t)
        plan = harness.MatmulPlan.build(self.xp, np.float32, harness.dense_layers(model), n, backward=False)
        torch_fn = torch_settle = None
        if tmodel is not None:
            tr, tdev = self.tr, self.tdev

            def torch_fn() -> Any:
                return tr.sample_loop(tmodel, schedule, n, sampler, steps, SIZES["latent_size"], tdev)

            torch_settle = self.tr.TorchDenoiserForward(tmodel, self.tensor(z), self.tensor(t))
        num_steps = steps
        label = f"sample {n:,} latents, {sampler.upper()} {num_steps} steps"
        return self.time_row(
            label,
            n,
            call,
            plan,
            torch_fn,
            repeats=self.cfg.sample_repeats if sampler == "ddpm" else max(self.cfg.repeats // 2, 1),
            warmup=0,
            settle=settle,
            torch_settle=torch_settle,
            plan_scale=num_steps,
        )


# --------------------------------------------------------------------------
# Peak memory, measured in a fresh process
# --------------------------------------------------------------------------


def memory_probe(kind: str, batch: int, steps: int) -> dict[str, Any]:
    """Run ``steps`` training steps in this (fresh) process and report its peak memory.

    NumPy kinds: tracemalloc's peak over model build + steps (NumPy reports
    its array buffers to tracemalloc, so this is the arrays' own footprint),
    and the process's maxrss before and after. Torch kinds: maxrss only.
    """
    import tracemalloc

    def maxrss_mib() -> float:
        # VmHWM is this process image's own peak: getrusage's ru_maxrss would
        # also count the parent's pages, inherited across fork + exec on Linux.
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return float(line.split()[1]) / 1024.0
        except OSError:
            pass
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux

    i, lat, h = SIZES["input_size"], SIZES["latent_size"], SIZES["hidden_size"]
    rng = np.random.default_rng(0)
    if kind.startswith("torch"):
        import torch

        from benchmarks import torch_ref

        torch.set_num_threads(int(os.environ.get("LDM_BENCH_THREADS", "0")) or torch.get_num_threads())
        before = maxrss_mib()
        if kind == "torch-vae":
            x = torch.from_numpy(rng.random((batch, i)).astype(np.float32))
            step = torch_ref.TorchVAEStep(
                torch_ref.TorchEncoder(i, lat, h), torch_ref.TorchDecoder(i, lat, h), x, harness.KL_WEIGHT
            )
        else:
            sched = make_schedule(SIZES["num_steps"])
            z0 = torch.from_numpy(rng.standard_normal((batch, lat)).astype(np.float32))
            step = torch_ref.TorchDenoiserStep(
                torch_ref.TorchDenoiser(lat, h, SIZES["num_layers"]), sched, z0
            )
        for _ in range(steps):
            step()
        return {"maxrss_before_mib": before, "maxrss_mib": maxrss_mib()}
    before = maxrss_mib()
    tracemalloc.start()
    if kind == "vae":
        x = rng.random((batch, i)).astype(np.float32)
        enc, dec = Encoder(i, lat, h), Decoder(i, lat, h)
        step = harness.VAEStep(enc, dec, x, np.random.default_rng(1))
    else:
        z0 = rng.standard_normal((batch, lat)).astype(np.float32)
        model = Denoiser(lat, h, SIZES["num_layers"], SIZES["num_steps"])
        step = harness.DenoiserStep(model, make_schedule(SIZES["num_steps"]), z0, np.random.default_rng(1))
    for _ in range(steps):
        step()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"tracemalloc_peak_mib": peak / 2**20, "maxrss_before_mib": before, "maxrss_mib": maxrss_mib()}


def measure_memory(cfg: Config, threads: int, with_torch: bool) -> list[str]:
    kinds = ["vae", "denoiser"] + (["torch-vae", "torch-denoiser"] if with_torch else [])
    lines = []
    env = dict(os.environ, LDM_BENCH_THREADS=str(threads))
    for kind in kinds:
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--memory-probe",
            kind,
            "--memory-batch",
            str(cfg.memory_batch),
            "--memory-steps",
            str(cfg.memory_steps),
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if out.returncode != 0:
            lines.append(f"| {kind} | failed: {out.stderr.strip().splitlines()[-1:]} | | |")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        traced = f"{r['tracemalloc_peak_mib']:.1f}" if "tracemalloc_peak_mib" in r else "n/a"
        lines.append(
            f"| {kind} | {traced} | {r['maxrss_mib']:.0f} | {r['maxrss_mib'] - r['maxrss_before_mib']:.0f} |"
        )
    return lines


def measure_gpu_memory(cfg: Config, xp: Any) -> list[str]:
    """On the GPU: CuPy's memory pool after a few steps (the pool keeps what the peak needed)."""
    i, lat, h = SIZES["input_size"], SIZES["latent_size"], SIZES["hidden_size"]
    pool = xp.get_default_memory_pool()
    lines = []
    for kind in ("vae", "denoiser"):
        pool.free_all_blocks()
        rng = np.random.default_rng(0)
        if kind == "vae":
            x = to_device(rng.random((cfg.memory_batch, i)).astype(np.float32), "gpu")
            enc, dec = Encoder(i, lat, h, device="gpu"), Decoder(i, lat, h, device="gpu")
            step = harness.VAEStep(enc, dec, x, default_rng(1, xp))
        else:
            z0 = to_device(rng.standard_normal((cfg.memory_batch, lat)).astype(np.float32), "gpu")
            model = Denoiser(lat, h, SIZES["num_layers"], SIZES["num_steps"], device="gpu")
            step = harness.DenoiserStep(model, make_schedule(device="gpu"), z0, default_rng(1, xp))
        for _ in range(cfg.memory_steps):
            step()
        xp.cuda.Device().synchronize()
        lines.append(f"| {kind} (CuPy pool) | {pool.total_bytes() / 2**20:.1f} | n/a | n/a |")
        del step
    return lines


# --------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------


def fmt_time(seconds: float) -> str:
    if seconds >= 10:
        return f"{seconds:.1f} s"
    if seconds >= 1:
        return f"{seconds:.2f} s"
    return f"{seconds * 1e3:.1f} ms"


def fmt_stats(s: harness.Stats | None) -> str:
    if s is None:
        return "n/a"
    if len(s.times) == 1:
        return fmt_time(s.median)
    return f"{fmt_time(s.median)} [{fmt_time(s.low)}, {fmt_time(s.high)}]"


def fmt_row_short(row: Row) -> str:
    ratio = f"{row.numpy.median / row.torch.median:.2f}x" if row.torch else "n/a"
    return f"{row.what}, batch {row.batch}: numpy {fmt_time(row.numpy.median)}, torch " + (
        f"{fmt_time(row.torch.median)}, ratio {ratio}" if row.torch else "n/a"
    )


def table(rows: list[Row]) -> list[str]:
    lines = [
        "| what | batch | NumPy: median [min, max] | matmuls alone | matmul share | matmul GFLOP | PyTorch: median [min, max] | NumPy / PyTorch | BLAS floor | other load |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        share = f"{r.matmul.median / r.numpy.median:.0%}" if r.matmul else "n/a"
        ratio = f"**{r.numpy.median / r.torch.median:.2f}x**" if r.torch else "n/a"
        gflop = f"{r.gflop:.2f}" if r.gflop is not None else "n/a"
        mm = fmt_time(r.matmul.median) if r.matmul else "n/a"
        load = f"{r.other_load:.0%}" if r.other_load is not None else "n/a"
        # The ratio NumPy would reach if everything but the matrix products were free.
        floor = f"{r.matmul.median / r.torch.median:.2f}x" if r.matmul and r.torch else "n/a"
        lines.append(
            f"| {r.what} | {r.batch:,} | {fmt_stats(r.numpy)} | {mm} | {share} | {gflop} | {fmt_stats(r.torch)} | {ratio} | {floor} | {load} |"
        )
    return lines


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    p.add_argument("--quick", action="store_true", help="small sizes and 2 repeats: a smoke test in seconds")
    p.add_argument("--repeats", type=int, default=0, help="timed rounds per row (default 7, --quick 2)")
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        metavar="N",
        help="BLAS threads for NumPy and PyTorch alike (read before NumPy loads; default: NumPy's choice)",
    )
    p.add_argument(
        "--no-torch", action="store_true", help="skip the PyTorch column even if torch is importable"
    )
    p.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="S",
        help="before each row, wait up to S seconds for other processes to leave the CPUs idle",
    )
    p.add_argument(
        "--rows",
        default="",
        metavar="LIST",
        help=f"only these groups of rows, comma-separated, from {','.join(ROW_GROUPS)} (default: all)",
    )
    p.add_argument("--memory-probe", help=argparse.SUPPRESS)
    p.add_argument("--memory-batch", type=int, default=1024, help=argparse.SUPPRESS)
    p.add_argument("--memory-steps", type=int, default=3, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def header(cfg: Config, xp: Any, torch_msg: str, blas: dict[str, Any]) -> list[str]:
    lines = [
        f"# ldm_np benchmark ({'quick' if cfg.quick else 'full'}, device={cfg.device}, float32)",
        "",
        f"- machine: {cpu_model()}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}",
        f"- Python {platform.python_version()}, NumPy {np.__version__}",
        f"- BLAS: {blas['name']} {blas['version']}, kernel {blas['kernel'] or 'n/a'}, "
        f"{blas['threads']} threads (from {blas['source'].strip(' +')})",
        f"- {torch_msg}",
    ]
    warning = harness.kernel_warning(
        "Every NumPy time and every NumPy / PyTorch ratio below",
        "PyTorch's MKL ignores the OPENBLAS_* variables, so the ratio moves with them.",
    )
    if xp is np and warning:
        lines.append(f"- {warning}")
    if xp is not np:
        props = xp.cuda.runtime.getDeviceProperties(xp.cuda.Device().id)
        name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        lines.append(f"- CuPy {xp.__version__} on {name}")
    lines.append(
        f"- sizes: input {SIZES['input_size']}, latent {SIZES['latent_size']}, hidden {SIZES['hidden_size']}, "
        f"{SIZES['num_layers']} blocks, {SIZES['num_steps']} diffusion steps; Adam lr 1e-3 on both sides"
    )
    lines.append(
        f"- timing: {cfg.repeats} interleaved rounds per row (NumPy step, its matmuls, PyTorch step), "
        f"1 warm-up call each, median [min, max]; {cfg.settle_s} s sleep + one untimed call whenever the library changes"
    )
    return lines


def cpu_model() -> str:
    return harness.cpu_model()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.memory_probe:
        print(json.dumps(memory_probe(args.memory_probe, args.memory_batch, args.memory_steps)))
        return 0
    cfg = Config.from_args(args)
    unknown = set(filter(None, args.rows.split(","))) - set(ROW_GROUPS)
    if unknown:
        print(
            f"benchmarks/run.py: unknown --rows {sorted(unknown)}; choose from {ROW_GROUPS}", file=sys.stderr
        )
        return 2
    try:
        xp = xp_for_device(cfg.device)
    except RuntimeError as exc:
        print(f"benchmarks/run.py: cannot run on --device {cfg.device}: {exc}", file=sys.stderr)
        return 2
    t_start = time.perf_counter()
    blas = (
        harness.blas_info()
        if xp is np
        else {"name": "cuBLAS (via CuPy)", "version": "", "kernel": "", "threads": "n/a", "source": "CuPy"}
    )
    threads = int(blas["threads"]) if isinstance(blas["threads"], int) else (os.cpu_count() or 1)
    torch, torch_ref, torch_msg = load_torch(cfg, threads)
    lines = header(cfg, xp, torch_msg, blas)
    print("\n".join(lines), flush=True)
    print("\nmeasuring:", flush=True)

    bench = Bench(cfg, xp, torch, torch_ref)
    want = set(args.rows.split(",")) if args.rows else set(ROW_GROUPS)
    rows: list[Row] = []
    for batch in cfg.batches:
        if "vae" in want:
            rows.append(bench.vae_step(batch))
        if "denoiser" in want:
            rows.append(bench.denoiser_step(batch, SIZES["latent_size"], "denoiser train step (latent 32)"))
        if "full" in want:
            label = f"full-space denoiser train step ({SIZES['input_size']})"
            rows.append(bench.denoiser_step(batch, SIZES["input_size"], label))
    if "forward" in want:
        rows.append(bench.denoiser_forward(cfg.forward_batch))
    if "sampling" in want:
        rows.append(bench.sampling("ddpm", cfg.ddpm_steps))
        rows.append(bench.sampling("ddim", cfg.ddim_steps))

    mem_head: list[str] = []
    mem: list[str] = []
    if "memory" in want and xp is np:
        mem = measure_memory(cfg, threads, torch is not None and cfg.torch_memory)
        mem_head = [
            "",
            f"Peak memory of a training run (batch {cfg.memory_batch:,}, {cfg.memory_steps} steps, each in a fresh process):",
            "tracemalloc = peak of NumPy's array allocations (model, grads, Adam state, activations, temporaries);",
            "peak RSS = the process's peak resident set (VmHWM in /proc/self/status; resource.getrusage's maxrss where",
            "that is missing), and how much the training run added to it after imports.",
            "",
            "| run | tracemalloc peak MiB | peak RSS MiB | peak RSS added by training MiB |",
            "|---|---:|---:|---:|",
        ]
    elif "memory" in want:
        mem = measure_gpu_memory(cfg, xp)
        mem_head = [
            "",
            f"GPU memory after a training run (batch {cfg.memory_batch:,}):",
            "",
            "| run | MiB | | |",
            "|---|---:|---:|---:|",
        ]

    out = ["", *table(rows), ""]
    out.append(
        "- matmuls alone: the same products (shapes, transposed views, every dx the backward computes), pre-allocated inputs "
        "and outputs; for sampling rows, one forward's products times the number of steps"
    )
    out.append(
        "- BLAS floor: matmuls alone / PyTorch, the ratio NumPy would reach if everything but the "
        "matrix products took no time"
    )
    out += mem_head + mem
    out.append("")
    out.append(f"total benchmark time {time.perf_counter() - t_start:.0f} s")
    print("\n".join(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
