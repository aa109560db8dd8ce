"""Data parallelism on the CPU: every core runs the whole model on its share of the batch.

Why. NumPy runs each elementwise operation (SiLU, LayerNorm, the bias adds,
Adam) on one core; only the matrix products use the BLAS library's threads.
About half of a training step is elementwise work, and during that half the
other cores do nothing useful (OpenBLAS's worker threads even spin on them,
waiting for the next matrix product).

How. The way multi-GPU training does it, with threads for devices:

1. split the batch into one contiguous shard per worker;
2. each worker runs the forward and backward pass of its shard on a
   *replica* of the model: the same parameter arrays, its own cache and
   gradients (``Module.replica``);
3. sum the replicas' gradients into the model's own (an "all-reduce");
4. take one optimizer step, its parameters shared out among the workers.

Every loss here is a mean over the batch, so each shard's gradient is weighted
by its share of the batch (``shard / batch``); the sum is then the gradient of
the whole batch, equal up to float rounding (``tests/test_parallel.py``).

The workers are Python threads. NumPy releases the GIL inside every matrix
product and every ufunc, so they run at the same time. While the shards
run, BLAS is held to one thread per call, so that the workers do not fight
over the cores with BLAS's own threads (OpenBLAS would also serialise
concurrent multi-threaded calls). The gain is bounded: without the split,
the matrix products (about 60% of a denoiser step at batch 1,024) already
used every core through BLAS's threads; the split adds the elementwise
work. On 2 cores that is 1.25x at best, and 1.1-1.3x measured
(``benchmarks/threads.py``).

On a GPU there is one device to keep busy and one stream of kernels:
sharding would only add kernel launches, so a GPU model always runs with one
worker.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any

import numpy as np
from threadpoolctl import ThreadpoolController

from .backend import get_array_module
from .module import Module, iter_params
from .validation import check_int

_POOLS: dict[int, ThreadPoolExecutor] = {}
_LOCK = threading.Lock()
_IN_WORKER = threading.local()
_BLAS: list[ThreadpoolController] = []
if hasattr(os, "register_at_fork"):
    # A forked child inherits the pools but not their threads: it starts new ones.
    os.register_at_fork(after_in_child=_POOLS.clear)


def available_cores() -> int:
    """The number of CPU cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def default_workers() -> int:
    """One worker per available core."""
    return available_cores()


def check_workers(workers: Any) -> int:
    """``workers`` as a positive int; ``None`` means ``default_workers()``."""
    return default_workers() if workers is None else check_int(workers, "workers")


def _pool(workers: int) -> ThreadPoolExecutor:
    with _LOCK:
        pool = _POOLS.get(workers)
        if pool is None:
            pool = _POOLS[workers] = ThreadPoolExecutor(workers, thread_name_prefix="ldm_np")
        return pool


def _run_marked(fn: Callable[[Any], Any], item: Any) -> Any:
    _IN_WORKER.active = True
    try:
        return fn(item)
    finally:
        _IN_WORKER.active = False


def parallel_map(fn: Callable[[Any], Any], items: Sequence[Any], workers: int) -> list[Any]:
    """``[fn(item) for item in items]``, on up to ``workers`` threads; results in order.

    Runs in the calling thread when one worker is asked for, when there is
    one item, or when called from inside a worker (no nested pools, so no
    deadlock). Each call sees the caller's context variables (``np.errstate``
    is one). If any call raises, every call already started is waited for
    before the error propagates: no thread is still writing into the
    model's arrays when the caller handles the error (a Ctrl-C included).
    """
    if workers <= 1 or len(items) <= 1 or getattr(_IN_WORKER, "active", False):
        return [fn(item) for item in items]
    # Each call runs in a copy of the caller's context, so settings such as
    # ``np.errstate`` (a context variable) hold in the workers too.
    pool = _pool(workers)
    futures = [pool.submit(contextvars.copy_context().run, _run_marked, fn, item) for item in items]
    try:
        return [f.result() for f in futures]
    except BaseException:
        for f in futures:
            f.cancel()
        wait(futures)
        raise


@contextlib.contextmanager
def blas_threads(limit: int) -> Iterator[None]:
    """Hold the BLAS library to ``limit`` threads inside the block, then restore it (threadpoolctl)."""
    with _LOCK:
        if not _BLAS:
            _BLAS.append(ThreadpoolController())
    with _BLAS[0].limit(limits=limit, user_api="blas"):
        yield


# Below this many rows per shard, handing work to threads costs more than it
# saves: on 2 cores the VAE and denoiser steps at batch 256 were 1.5-1.6x
# slower in two shards of 128 rows than in one piece.
MIN_SHARD_ROWS = 256


def shard_slices(batch: int, workers: int, min_rows: int = MIN_SHARD_ROWS) -> list[slice]:
    """``workers`` contiguous, nearly equal slices of ``range(batch)``, each of at least ``min_rows``
    rows; or one slice, the whole batch, when the batch is too small for that.

    All or nothing: each worker runs its matrix products on one BLAS thread,
    so a split that left some workers without a shard would leave their cores
    idle, where unsplit BLAS would have used every core.
    """
    n = workers if batch >= workers * max(min_rows, 1) else 1
    bounds = [batch * i // n for i in range(n + 1)]
    return [slice(bounds[i], bounds[i + 1]) for i in range(n)]


class DataParallel:
    """One or more models (say encoder and decoder) with a replica set per extra worker.

    ``replicas[0]`` are the models themselves; ``replicas[k]`` for k >= 1 share
    their parameters and keep their own caches and gradients. A batch of at
    least ``workers * min_shard_rows`` rows is cut into ``workers`` shards;
    a smaller one runs whole, on the models themselves.
    """

    def __init__(
        self, models: Sequence[Module], workers: int | None = None, *, min_shard_rows: int = MIN_SHARD_ROWS
    ) -> None:
        if not models or not all(isinstance(m, Module) for m in models):
            raise TypeError("DataParallel needs a non-empty sequence of models (Encoder, Decoder, Denoiser)")
        self.models = list(models)
        workers = check_workers(workers)
        if self.models[0].xp is not np:
            workers = 1  # one device, one stream of kernels: see the module docstring
        self.workers = workers
        self.min_shard_rows = check_int(min_shard_rows, "min_shard_rows")
        self.replicas = [self.models] + [[m.replica() for m in self.models] for _ in range(workers - 1)]
        self.last_shards = 1  # how many replica sets the last ``run`` used

    def __repr__(self) -> str:
        names = ", ".join(type(m).__name__ for m in self.models)
        return f"DataParallel([{names}], workers={self.workers})"

    def run(self, fn: Callable[..., Any], *arrays: Any) -> list[Any]:
        """``fn(models, *shards, weight)`` for every shard of the batch, at the same time.

        ``arrays`` share their first (batch) axis; anything that is not an
        array with a batch axis (``None``, an int timestep) is passed to every
        shard as it is. ``models`` is one replica set, ``weight`` the shard's
        share of the batch. Returns the results, shard by shard.
        """
        batched = [getattr(a, "ndim", 0) >= 1 for a in arrays]
        if not any(batched):
            raise ValueError("DataParallel.run needs at least one array with a batch axis")
        batch = next(a for a, b in zip(arrays, batched, strict=True) if b).shape[0]
        slices = shard_slices(batch, self.workers, self.min_shard_rows)

        def one(k: int) -> Any:
            shard = [a[slices[k]] if b else a for a, b in zip(arrays, batched, strict=True)]
            weight = (slices[k].stop - slices[k].start) / batch
            return fn(self.replicas[k], *shard, weight)

        self.last_shards = len(slices)
        if len(slices) == 1:
            return [one(0)]
        with blas_threads(1):
            return parallel_map(one, range(len(slices)), len(slices))

    def reduce_grads(self) -> None:
        """Add the gradients of the replica sets the last ``run`` used into the models' own, in place.

        After a batch too small to split (it ran whole, on the models
        themselves) the replicas' gradients are stale: nothing is added. The
        layers are shared out among the workers.
        """
        used = self.replicas[1 : self.last_shards]
        if not used:
            return
        items = [
            (i, layer, name) for i, m in enumerate(self.models) for layer, name, _ in iter_params(m.grads)
        ]

        def add(item: tuple[int, str, str]) -> None:
            i, layer, name = item
            total = self.models[i].grads[layer][name]
            for replica in used:
                total += replica[i].grads[layer][name]

        parallel_map(add, items, self.workers)

    # Inference: a DataParallel of one model stands in for that model in a
    # sampler or in classifier-free guidance (forward, __call__, dtype, null_label).

    def forward(self, *arrays: Any) -> Any:
        """``models[0].forward(*arrays)`` with each worker taking a shard of the batch.

        The shards' outputs are joined along the batch axis; the replicas'
        caches are dropped (this is inference). Equal to the unsharded forward
        up to float rounding (the matrix products see other shapes).
        """
        return self._sharded(lambda model, *shard: model.forward(*shard), arrays)

    def __call__(self, *arrays: Any) -> Any:
        """``models[0](*arrays)`` (the checked call), each worker taking a shard of the batch."""
        return self._sharded(lambda model, *shard: model(*shard), arrays)

    def _sharded(self, call: Callable[..., Any], arrays: tuple[Any, ...]) -> Any:
        def one(models: list[Module], *shard: Any) -> Any:
            out = call(models[0], *shard[:-1])  # the last entry is the weight, unused here
            models[0]._cache = None
            return out

        outs = self.run(one, *arrays)
        if len(outs) == 1:
            return outs[0]
        return get_array_module(outs[0]).concatenate(outs, axis=0)

    @property
    def dtype(self) -> np.dtype:
        return self.models[0].dtype

    @property
    def null_label(self) -> int | None:
        """The first model's null label (a class-conditional denoiser), else None."""
        return getattr(self.models[0], "null_label", None)
