"""Data parallelism (ldm_np.parallel): the sharded step equals the whole-batch step.

The models run in float64 here, so "equal" can be tight: the shards only
change the order of the sums over the batch.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from threadpoolctl import threadpool_info

from ldm_np.denoiser import Denoiser
from ldm_np.optim import Adam, clip_grad_norm
from ldm_np.parallel import DataParallel, blas_threads, parallel_map, shard_slices
from ldm_np.schedules import make_schedule
from ldm_np.training import EMA, denoiser_step, vae_step
from ldm_np.vae import Decoder, Encoder

F64 = "float64"


def denoiser(**kw) -> Denoiser:
    return Denoiser(4, 16, 2, 50, dtype=F64, seed=3, **kw)


def batch(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 4)), rng.integers(0, 50, n), rng.standard_normal((n, 4))


@given(batch_size=st.integers(1, 300), workers=st.integers(1, 9), min_rows=st.integers(1, 64))
@settings(deadline=None)
def test_shards_cover_the_batch_in_order(batch_size, workers, min_rows):
    slices = shard_slices(batch_size, workers, min_rows)
    assert len(slices) == (workers if batch_size >= workers * min_rows else 1)  # all workers, or none
    assert slices[0].start == 0 and slices[-1].stop == batch_size
    assert all(a.stop == b.start for a, b in itertools.pairwise(slices))
    sizes = [s.stop - s.start for s in slices]
    assert max(sizes) - min(sizes) <= 1  # nearly equal
    if len(slices) > 1:
        assert min(sizes) >= min_rows


@pytest.mark.parametrize("workers", [2, 3, 4])
@pytest.mark.parametrize("conditional", [False, True])
def test_sharded_denoiser_step_equals_the_whole_batch_step(workers, conditional):
    kw = {"num_classes": 3} if conditional else {}
    whole, sharded = denoiser(**kw), denoiser(**kw)
    schedule = make_schedule(50, kind="cosine", dtype=F64)
    z0, t, noise = batch(37)
    labels = np.arange(37) % 4 if conditional else None  # 3 = the null label
    opts = [Adam(lr=1e-2), Adam(lr=1e-2)]
    emas = [EMA(whole.params, 0.9), EMA(sharded.params, 0.9)]
    parallel = DataParallel([sharded], workers, min_shard_rows=1)
    for _ in range(3):
        a = denoiser_step(whole, opts[0], schedule, z0, t, noise, labels=labels, ema=emas[0], grad_clip=0.5)
        b = denoiser_step(
            sharded,
            opts[1],
            schedule,
            z0,
            t,
            noise,
            labels=labels,
            ema=emas[1],
            grad_clip=0.5,
            parallel=parallel,
        )
        np.testing.assert_allclose(b["loss"], a["loss"], rtol=1e-13)
    for layer, group in whole.params.items():
        for name, value in group.items():
            np.testing.assert_allclose(sharded.params[layer][name], value, rtol=1e-11, atol=1e-13)
            np.testing.assert_allclose(
                emas[1].shadow[layer][name], emas[0].shadow[layer][name], rtol=1e-11, atol=1e-13
            )


def test_sharded_vae_step_equals_the_whole_batch_step():
    models = [
        (Encoder(6, 3, 10, dtype=F64, seed=s), Decoder(6, 3, 10, dtype=F64, seed=s + 1)) for s in (0, 0)
    ]
    rng = np.random.default_rng(1)
    x, eps = rng.random((29, 6)), rng.standard_normal((29, 3))
    opts = [Adam(lr=1e-2), Adam(lr=1e-2)]
    parallel = DataParallel(list(models[1]), 3, min_shard_rows=1)
    for _ in range(3):
        a = vae_step(*models[0], opts[0], x, eps, beta=0.5, grad_clip=1.0)
        b = vae_step(*models[1], opts[1], x, eps, beta=0.5, grad_clip=1.0, parallel=parallel)
        for key in ("loss", "recon", "kl"):
            np.testing.assert_allclose(b[key], a[key], rtol=1e-12)
    for m0, m1 in zip(models[0], models[1], strict=True):
        for layer, group in m0.params.items():
            for name, value in group.items():
                np.testing.assert_allclose(m1.params[layer][name], value, rtol=1e-11, atol=1e-13)


def test_sharded_forward_equals_the_model_and_keeps_no_cache():
    model = denoiser(num_classes=3)
    z, t, _ = batch(21)
    labels = np.arange(21) % 4
    parallel = DataParallel([model], 4, min_shard_rows=1)
    want = model.forward(z, t, labels)
    model._cache = None
    np.testing.assert_allclose(parallel.forward(z, t, labels), want, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(parallel(z, t, labels), want, rtol=1e-13, atol=1e-15)  # the checked call
    assert all(r[0]._cache is None for r in parallel.replicas)
    assert parallel.null_label == 3 and parallel.dtype == np.float64
    with pytest.raises(ValueError, match="z_t"):
        parallel(z[:, :3], t)  # the checked call still checks


def test_a_small_batch_leaves_stale_replica_gradients_out():
    model = denoiser()
    schedule = make_schedule(50, kind="cosine", dtype=F64)
    parallel = DataParallel([model], 2, min_shard_rows=1)
    z0, t, noise = batch(8)
    denoiser_step(model, Adam(), schedule, z0, t, noise, grad_clip=None, parallel=parallel)
    # A batch of one row runs in one shard: replica 1 still holds the gradients of the step above.
    reference = denoiser()
    reference.load_params(model.params)
    denoiser_step(reference, Adam(), schedule, z0[:1], t[:1], noise[:1], grad_clip=None)
    denoiser_step(model, Adam(), schedule, z0[:1], t[:1], noise[:1], grad_clip=None, parallel=parallel)
    assert parallel.last_shards == 1
    for layer, group in reference.grads.items():
        for name, value in group.items():
            np.testing.assert_allclose(model.grads[layer][name], value, rtol=1e-13, atol=1e-15)


def test_replicas_share_parameters_and_own_their_gradients():
    model = denoiser()
    twin = model.replica()
    for layer, group in model.params.items():
        for name, value in group.items():
            assert twin.params[layer][name] is value
            assert twin.grads[layer][name] is not model.grads[layer][name]
    model.params["z_proj"]["bias"][0] = 7.0
    assert twin.params["z_proj"]["bias"][0] == 7.0


def test_adam_and_clipping_give_the_same_numbers_with_workers():
    rng = np.random.default_rng(2)
    shapes = [(5, 3), (7,), (2, 2), (11, 4)]
    params = [{f"l{i}": {"w": rng.standard_normal(s)} for i, s in enumerate(shapes)} for _ in range(2)]
    params[1] = {k: {n: v.copy() for n, v in g.items()} for k, g in params[0].items()}
    opts = [Adam(lr=1e-2, weight_decay=0.1), Adam(lr=1e-2, weight_decay=0.1)]
    for _ in range(4):
        grads = {f"l{i}": {"w": rng.standard_normal(s)} for i, s in enumerate(shapes)}
        grads_copy = {k: {n: v.copy() for n, v in g.items()} for k, g in grads.items()}
        n0 = clip_grad_norm(grads, 1.0)
        n1 = clip_grad_norm(grads_copy, 1.0, workers=3)
        np.testing.assert_allclose(n1, n0, rtol=1e-14)
        opts[0].step(params[0], grads)
        opts[1].step(params[1], grads_copy, workers=3)
    for layer, group in params[0].items():
        np.testing.assert_array_equal(params[1][layer]["w"], group["w"])  # elementwise: bit for bit


def test_parallel_map_keeps_order_and_the_callers_errstate():
    assert parallel_map(lambda i: i * i, list(range(10)), 3) == [i * i for i in range(10)]

    def divide(i):
        return np.float64(1.0) / np.float64(0.0)  # warns unless errstate says ignore

    with np.errstate(divide="ignore"):
        assert parallel_map(divide, [0, 1, 2], 2) == [np.inf] * 3
    with np.errstate(divide="raise"), pytest.raises(FloatingPointError):
        parallel_map(divide, [0, 1, 2], 2)


def test_an_error_in_one_worker_waits_for_the_others_then_propagates():
    started, finished = set(), set()

    def work(i):
        started.add(i)
        if i == 0:
            raise ValueError("shard 0 failed")
        threading.Event().wait(0.05)  # still busy when shard 0 fails
        finished.add(i)
        return i

    with pytest.raises(ValueError, match="shard 0 failed"):
        parallel_map(work, [0, 1, 2, 3], 4)
    # Every call that had started has finished by the time the error reaches the caller:
    # no thread is still writing when the caller handles the error.
    assert len(started) >= 2
    assert started - {0} == finished


def test_nested_calls_run_in_the_worker_without_deadlock():
    def outer(i):
        return sum(parallel_map(lambda j: i * j, [1, 2, 3], 2))

    assert parallel_map(outer, [1, 2, 3, 4], 2) == [6, 12, 18, 24]


def test_blas_threads_is_restored_after_a_sharded_step():
    before = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
    with blas_threads(1):
        inside = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
    after = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
    assert after == before
    assert all(n == 1 for n in inside)


def test_bad_arguments_are_refused():
    model = denoiser()
    with pytest.raises(ValueError, match="workers"):
        DataParallel([model], 0)
    with pytest.raises(TypeError, match="workers"):
        DataParallel([model], 1.5)
    with pytest.raises(ValueError, match="min_shard_rows"):
        DataParallel([model], 2, min_shard_rows=0)
    with pytest.raises(TypeError, match="non-empty sequence of models"):
        DataParallel([])
    with pytest.raises(TypeError, match="non-empty sequence of models"):
        DataParallel([object()])
    parallel = DataParallel([model], 2)
    with pytest.raises(ValueError, match="batch axis"):
        parallel.run(lambda models, w: None, None)
    other = denoiser()
    z0, t, noise = batch(4)
    with pytest.raises(ValueError, match="must wrap the models being trained"):
        denoiser_step(
            other, Adam(), make_schedule(50, kind="cosine", dtype=F64), z0, t, noise, parallel=parallel
        )
    with pytest.raises(TypeError, match="parallel must be a DataParallel"):
        denoiser_step(
            model, Adam(), make_schedule(50, kind="cosine", dtype=F64), z0, t, noise, parallel=[model]
        )


def _square_in_workers(n):
    return parallel_map(lambda i: i * i, list(range(n)), 2)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_gets_working_threads():
    parallel_map(lambda i: i, [0, 1, 2], 2)  # the parent's pool exists now
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(1) as pool:
        result = pool.apply_async(_square_in_workers, (5,))
        assert result.get(timeout=30) == [0, 1, 4, 9, 16]
