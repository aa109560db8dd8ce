"""Why data parallelism gains less than the number of cores: what two threads share.

Times the same work on one thread and on two threads at once (each thread
doing the work once), with BLAS held to one thread per call, and prints the
speed-up (2.0x would be perfect on 2 cores):

- a NumPy ufunc (``multiply``) on arrays of 256 KiB (L2-sized: the pieces
  SiLU and Adam work on), 2 MiB and 32 MiB (main memory);
- a matrix product of the denoiser's up layer on half a batch of 1,024;
- the library's denoiser training step at batch 1,024, one worker against
  two (``ldm_np.parallel.DataParallel``), in alternating rounds.

    python benchmarks/threads.py            # about 30 s on 2 cores
    python benchmarks/threads.py --quick    # a smoke run
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from collections.abc import Callable

import numpy as np

from ldm_np.denoiser import Denoiser
from ldm_np.optim import Adam
from ldm_np.parallel import DataParallel, available_cores, blas_threads
from ldm_np.schedules import make_schedule
from ldm_np.training import denoiser_step


def one_and_two(work: Callable[[int], None], repeats: int) -> tuple[float, float]:
    """Median seconds of work(0) alone, and of work(0) and work(1) on two threads at once."""
    alone, together = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        work(0)
        alone.append(time.perf_counter() - start)
        threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        together.append(time.perf_counter() - start)
    return statistics.median(alone), statistics.median(together)


def ufunc_work(nbytes: int, total_bytes: int) -> Callable[[int], None]:
    """Each thread multiplies its own float32 array of ``nbytes`` in place, ``total_bytes`` in all."""
    n = nbytes // 4
    arrays = [np.random.default_rng(i).random(n, dtype=np.float32) for i in range(2)]
    outs = [np.empty_like(a) for a in arrays]
    calls = max(total_bytes // nbytes, 1)

    def work(i: int) -> None:
        for _ in range(calls):
            np.multiply(arrays[i], 1.5, out=outs[i])

    return work


def matmul_work(rows: int, calls: int) -> Callable[[int], None]:
    """Each thread multiplies its own [rows, 256] by a shared [256, 1024] (the up layer)."""
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((rows, 256)).astype(np.float32) for _ in range(2)]
    w = rng.standard_normal((256, 1024)).astype(np.float32)

    def work(i: int) -> None:
        for _ in range(calls):
            xs[i] @ w

    return work


def step_times(batch: int, repeats: int) -> dict[int, float]:
    """Median seconds of one denoiser step with 1 and 2 workers, alternating rounds."""
    rng = np.random.default_rng(0)
    schedule = make_schedule(1000)
    z0 = rng.standard_normal((batch, 32)).astype(np.float32)  # [batch, latent]
    setups = {}
    for workers in (1, 2):
        model = Denoiser(32, 256, 4, 1000, seed=0)
        setups[workers] = (model, Adam(), DataParallel([model], workers, min_shard_rows=min(256, batch // 2)))
    times: dict[int, list[float]] = {1: [], 2: []}
    for _ in range(repeats):
        for workers, (model, opt, parallel) in setups.items():
            t = rng.integers(0, 1000, size=batch)
            noise = rng.standard_normal((batch, 32), dtype=np.float32)
            time.sleep(0.15)  # let OpenBLAS's spinning worker from the other setting go to sleep
            denoiser_step(model, opt, schedule, z0, t, noise, grad_clip=None, parallel=parallel)
            start = time.perf_counter()
            denoiser_step(model, opt, schedule, z0, t, noise, grad_clip=None, parallel=parallel)
            times[workers].append(time.perf_counter() - start)
    return {w: statistics.median(v) for w, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    repeats, total, batch = (3, 8 << 20, 128) if args.quick else (9, 256 << 20, 1024)
    print(f"{available_cores()} cores available; speed-up of two threads over one (2.00x = perfect)")
    print("work | one thread | two threads at once | speed-up")
    print("--- | --- | --- | ---")
    with blas_threads(1):
        for label, nbytes in (
            ("ufunc, 256 KiB arrays", 256 << 10),
            ("ufunc, 2 MiB", 2 << 20),
            ("ufunc, 32 MiB", 32 << 20),
        ):
            alone, together = one_and_two(ufunc_work(nbytes, total), repeats)
            print(f"{label} | {alone * 1e3:.1f} ms | {together * 1e3:.1f} ms | {2 * alone / together:.2f}x")
        alone, together = one_and_two(matmul_work(batch // 2, 20), repeats)
        print(
            f"matmul [{batch // 2}, 256] x [256, 1024] | {alone * 1e3:.1f} ms | {together * 1e3:.1f} ms | "
            f"{2 * alone / together:.2f}x"
        )
    times = step_times(batch, repeats)
    print(
        f"denoiser step, batch {batch}: 1 worker {times[1] * 1e3:.1f} ms, 2 workers {times[2] * 1e3:.1f} ms, "
        f"speed-up {times[1] / times[2]:.2f}x"
    )


if __name__ == "__main__":
    main()
