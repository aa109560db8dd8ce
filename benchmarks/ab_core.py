"""Two checkouts of ldm_np, the same training steps, alternating rounds: how much faster or slower is one?

    python benchmarks/ab_core.py OLD NEW [--rounds 15] [--steps 5] [--threads N]
    python benchmarks/ab_core.py /work/wt/base /work/main          # before and after a change
    python benchmarks/ab_core.py OLD NEW --demo 3                  # and the demo's training time, 3 runs each

OLD and NEW are checkouts (folders that hold ``ldm_np/``). Each runs in its
own worker process (``PYTHONPATH`` = that checkout alone, so the two
packages never meet in one interpreter), built once, warmed up, then driven
round by round from here: in each round every case runs on both sides, one
after the other, the order flipping from round to round; only one worker
works at a time, the other waits on its pipe. Before each timed call a short
pause and one untimed step let the other side's BLAS threads go quiet.

The cases (float32, fixed data, the library's public step functions):

- denoiser step, ``training.denoiser_step`` with Adam, clipping at 1.0 and
  EMA (as ``LatentDiffusion.fit`` runs it): latent 32, hidden 256, 4
  residual blocks, 1,000 diffusion steps; batch 256 and 1,024;
- VAE step, ``training.vae_step`` with Adam: the demo's VAE (input 64,
  latent 8, hidden 256, beta 1, recon_std 0.1) at batch 128 (the demo's).

A round's time for one side is the median of ``--steps`` consecutive steps.
``--demo N`` adds the demo's training time: ``python -m ldm_np demo
--no-progress`` run N times per side, alternating, each in a fresh process
and a temporary run folder, timed by the "trained in ... s" line the CLI
prints (both stages, without the evaluation that follows); about two minutes
a run on 2 quiet cores.

The table gives, per case and side, the median and [min, max] over rounds,
and the ratio NEW / OLD: the median and range of the per-round ratios (each
ratio pairs two runs a few hundred milliseconds apart). The header names the
BLAS library, its kernel and threads, warns when the environment forces a
kernel, and says how busy the machine was with other processes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SETTLE_S = 0.15

DENOISER = {"latent_size": 32, "hidden_size": 256, "num_layers": 4, "num_steps": 1000}
VAE = {"input_size": 64, "latent_size": 8, "hidden_size": 256}
CASES = (("denoiser", 256), ("denoiser", 1024), ("vae", 128))  # (kind, batch)
QUICK_CASES = (("denoiser", 32), ("vae", 32))  # --quick: a smoke run, numbers meaningless


def case_name(kind: str, batch: int) -> str:
    return f"{'denoiser' if kind == 'denoiser' else 'VAE'} step, batch {batch:,}"


# --------------------------------------------------------------------------
# The worker: one checkout's steps, timed on request
# --------------------------------------------------------------------------


def build_case(kind: str, batch: int, seed: int = 0) -> Any:
    """A no-argument callable that runs one training step of ``kind`` on a fixed batch."""
    import numpy as np

    from ldm_np.optim import Adam
    from ldm_np.training import EMA, denoiser_step, vae_step

    rng = np.random.default_rng(seed)
    if kind == "denoiser":
        from ldm_np.denoiser import Denoiser
        from ldm_np.schedules import make_schedule

        d = DENOISER
        model = Denoiser(d["latent_size"], d["hidden_size"], d["num_layers"], d["num_steps"], seed=seed)
        opt, ema = Adam(lr=1e-3), EMA(model.params, 0.999)
        schedule = make_schedule(d["num_steps"])
        z0 = rng.standard_normal((batch, d["latent_size"])).astype(np.float32)  # [batch, latent]
        t = rng.integers(0, d["num_steps"], size=batch)  # [batch]
        noise = rng.standard_normal((batch, d["latent_size"])).astype(np.float32)  # [batch, latent]
        return lambda: denoiser_step(model, opt, schedule, z0, t, noise, ema=ema, grad_clip=1.0)
    from ldm_np.vae import Decoder, Encoder

    v = VAE
    enc = Encoder(v["input_size"], v["latent_size"], v["hidden_size"], seed=seed)
    dec = Decoder(v["input_size"], v["latent_size"], v["hidden_size"], seed=seed + 1)
    opt = Adam(lr=1e-3)
    x = rng.random((batch, v["input_size"])).astype(np.float32)  # [batch, input]
    eps = rng.standard_normal((batch, v["latent_size"])).astype(np.float32)  # [batch, latent]
    return lambda: vae_step(enc, dec, opt, x, eps, beta=1.0, recon_std=0.1)


def worker(checkout: str, cases: tuple[tuple[str, int], ...]) -> int:
    """Serve timing requests on stdin/stdout for the ldm_np found in ``checkout``."""
    import ldm_np

    where = Path(ldm_np.__file__).resolve()
    if Path(checkout).resolve() not in where.parents:
        print(json.dumps({"error": f"imported ldm_np from {where}, not from {checkout}"}), flush=True)
        return 1
    steps = {case_name(kind, batch): build_case(kind, batch) for kind, batch in cases}
    for step in steps.values():
        step()  # first call: allocations, page faults
    print(json.dumps({"ready": str(where.parent)}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        step = steps[request["case"]]
        step()  # untimed: wakes this side's BLAS threads
        times = []
        for _ in range(request["steps"]):
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
        print(json.dumps({"median": statistics.median(times)}), flush=True)
    return 0


# --------------------------------------------------------------------------
# The driver
# --------------------------------------------------------------------------


class Side:
    """One checkout's worker process."""

    def __init__(self, label: str, checkout: Path, quick: bool) -> None:
        self.label, self.checkout = label, checkout
        env = dict(os.environ, PYTHONPATH=str(checkout))
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--worker", str(checkout)]
            + (["--quick"] if quick else []),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=checkout,
        )
        hello = self.read()
        if "ready" not in hello:
            raise RuntimeError(f"{label} ({checkout}): {hello.get('error', hello)}")
        self.package = hello["ready"]

    def read(self) -> dict[str, Any]:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.label} worker ({self.checkout}) exited with code {self.proc.wait()}")
        return json.loads(line)

    def time(self, case: str, steps: int) -> float:
        self.proc.stdin.write(json.dumps({"case": case, "steps": steps}) + "\n")
        self.proc.stdin.flush()
        return self.read()["median"]

    def close(self) -> None:
        if self.proc.stdin and not self.proc.stdin.closed:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)


def demo_training_seconds(checkout: Path, out: Path) -> float:
    """Run ``python -m ldm_np demo`` from ``checkout``; the training time it reports."""
    env = dict(os.environ, PYTHONPATH=str(checkout), MPLBACKEND="Agg")
    cmd = [sys.executable, "-m", "ldm_np", "demo", "--out", str(out), "--no-progress"]
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=checkout, check=False)
    found = re.search(r"trained in ([\d.]+) s", run.stdout)
    if run.returncode != 0 or not found:
        raise RuntimeError(f"demo in {checkout} failed (exit {run.returncode}): {run.stderr.strip()[-500:]}")
    return float(found.group(1))


def fmt_ms(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds >= 10 else f"{seconds * 1e3:.1f} ms"


def summary(times: list[float]) -> str:
    return f"{fmt_ms(statistics.median(times))} [{fmt_ms(min(times))}, {fmt_ms(max(times))}]"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("old", nargs="?", type=Path, help="the checkout before the change")
    p.add_argument("new", nargs="?", type=Path, help="the checkout after the change")
    p.add_argument("--rounds", type=int, default=15, help="alternating rounds per case (default 15)")
    p.add_argument("--steps", type=int, default=5, help="timed steps per side and round (default 5)")
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        metavar="N",
        help="BLAS threads for both sides (OPENBLAS/OMP/MKL_NUM_THREADS; default: the environment's)",
    )
    p.add_argument(
        "--demo", type=int, default=0, metavar="N", help="also time the demo's training, N runs per side"
    )
    p.add_argument(
        "--quick", action="store_true", help="small batches, for a smoke test (numbers meaningless)"
    )
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker is None and (args.old is None or args.new is None):
        p.error("give two checkouts: OLD NEW")
    if args.rounds < 1 or args.steps < 1:
        p.error("--rounds and --steps must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cases = QUICK_CASES if args.quick else CASES
    if args.worker is not None:
        return worker(args.worker, cases)
    if args.threads:
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(args.threads)  # before NumPy loads, here and in both workers
    args.old, args.new = args.old.resolve(), args.new.resolve()
    for checkout in (args.old, args.new):
        if not (checkout / "ldm_np" / "__init__.py").is_file():
            print(f"benchmarks/ab_core.py: {checkout} holds no ldm_np/ package", file=sys.stderr)
            return 2
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import platform

    import numpy as np

    from benchmarks import harness

    blas = harness.blas_info()
    print(f"# ldm_np A/B: {args.old} (old) against {args.new} (new)\n")
    print(f"- machine: {harness.cpu_model()}, {harness.cores()} usable CPUs, {platform.system()}")
    print(f"- Python {platform.python_version()}, NumPy {np.__version__}")
    print(
        f"- BLAS: {blas['name']} {blas['version']}, kernel {blas['kernel'] or 'n/a'}, "
        f"{blas['threads']} threads (from {blas['source'].strip(' +')}); the same for both sides"
    )
    if warning := harness.kernel_warning("Every time on both sides and every new / old ratio below"):
        print(f"- {warning}")
    print(
        f"- denoiser: latent {DENOISER['latent_size']}, hidden {DENOISER['hidden_size']}, "
        f"{DENOISER['num_layers']} blocks, Adam + clip 1.0 + EMA; VAE: input {VAE['input_size']}, "
        f"latent {VAE['latent_size']}, hidden {VAE['hidden_size']}, Adam; float32"
    )
    print(
        f"- {args.rounds} alternating rounds per case (order flips every round), a round = median of "
        f"{args.steps} steps after one untimed step; {SETTLE_S} s pause before each side\n"
    )
    names = [case_name(kind, batch) for kind, batch in cases]
    times: dict[str, dict[str, list[float]]] = {name: {"old": [], "new": []} for name in names}
    # The load of *other* processes: the workers count as this process's children once closed.
    with harness.OtherLoad() as load:
        sides: list[Side] = []
        try:
            for label, checkout in (("old", args.old), ("new", args.new)):
                sides.append(Side(label, checkout, args.quick))
                print(f"- {label}: ldm_np from {sides[-1].package}", flush=True)
            for r in range(args.rounds):
                for case in names:
                    for side in sides if r % 2 == 0 else sides[::-1]:
                        time.sleep(SETTLE_S)
                        times[case][side.label].append(side.time(case, args.steps))
                print(f"  round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
            for side in sides:
                side.close()
            if args.demo:
                name = "demo training (python -m ldm_np demo)"
                times[name] = {"old": [], "new": []}
                with tempfile.TemporaryDirectory() as tmp:
                    for r in range(args.demo):
                        for side in sides if r % 2 == 0 else sides[::-1]:
                            out = Path(tmp) / f"{side.label}{r}"
                            times[name][side.label].append(demo_training_seconds(side.checkout, out))
                        print(f"  demo run {r + 1}/{args.demo} done", file=sys.stderr, flush=True)
        except RuntimeError as exc:
            print(f"benchmarks/ab_core.py: {exc}", file=sys.stderr)
            return 1
        finally:
            for side in sides:
                side.close()
    other = f"{load.value:.0%}" if load.value is not None else "n/a"
    print(f"- other processes used {other} of the machine while this ran\n")
    print("| case | old: median [min, max] | new: median [min, max] | new / old: median | range |")
    print("|---|---:|---:|---:|---:|")
    for case, t in times.items():
        ratios = [n / o for n, o in zip(t["new"], t["old"])]
        print(
            f"| {case} | {summary(t['old'])} | {summary(t['new'])} | "
            f"**{statistics.median(ratios):.2f}x** | {min(ratios):.2f}-{max(ratios):.2f}x |"
        )
    print("\nnew / old < 1: the new checkout is faster; each ratio pairs the two sides of one round.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
