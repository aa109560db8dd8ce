"""The whole pipeline on the strict stand-in device: no host arrays mixed in, no hidden syncs.

``strict_xp`` (see its docstring) behaves like a GPU that CI can run: a NumPy
array meeting a device array is a TypeError, as in CuPy, and every read of a
device value on the host is counted. Each test here runs a piece of ldm_np on
it and checks two things:

- the numbers are the CPU's (the strict device computes with NumPy, in the
  same order, so the comparison is exact wherever the random draws are the
  same: noise is drawn on the host and moved, because the strict generator,
  like CuPy's, is a different stream from NumPy's);
- inside a training or sampling step nothing reaches the host: those parts
  run under ``forbid()``, which raises at the first host transfer, and the
  loops are counted with ``track()``: the syncs of a run must not grow with
  its number of steps.

The first section tests the stand-in itself, so that a pass below means
something.
"""

from __future__ import annotations

import numpy as np
import pytest
from strict_xp import DEVICE, HostSyncError, StrictArray, forbid, strict, to_strict, track

from ldm_np import backend
from ldm_np.backend import default_rng, to_numpy
from ldm_np.datasets import moons
from ldm_np.denoiser import Denoiser, label_embedding_backward, label_embedding_forward
from ldm_np.diffusion import (
    PREDICTION_TYPES,
    convert_prediction,
    diffusion_loss,
    log_snr,
    min_snr_weights,
    predict_eps,
    predict_v,
    predict_x0,
    q_sample,
    snr,
    target_for,
    velocity,
)
from ldm_np.layers import (
    dense_backward,
    dense_forward,
    layernorm_backward,
    layernorm_forward,
    residual_block_backward,
    residual_block_forward,
    silu_backward,
    silu_forward,
    timestep_embedding,
)
from ldm_np.losses import (
    kl_divergence,
    kl_divergence_backward,
    kl_divergence_forward,
    kl_per_dimension,
    mse_backward,
    mse_forward,
)
from ldm_np.models import build
from ldm_np.optim import Adam, AdamW, clip_grad_norm, global_grad_norm
from ldm_np.oracle import OracleDenoiser
from ldm_np.pipeline import LatentDiffusion
from ldm_np.samplers import ddim_invert, ddim_step, ddpm_step, sample
from ldm_np.schedules import KINDS, make_schedule
from ldm_np.training import EMA, LoopState, denoiser_step, run_loop, vae_step
from ldm_np.vae import (
    Decoder,
    Encoder,
    clamp_log_var_backward,
    clamp_log_var_forward,
    reparameterize,
    reparameterize_backward,
    reparameterize_forward,
)

F32 = np.float32
T = 100  # diffusion steps in these tests; the cosine schedule ends near pure noise at any T
SIZES = {"input_size": 12, "latent_size": 4, "hidden_size": 16, "num_layers": 2}


def host(seed: int, *shape: int, dtype=F32, scale: float = 1.0) -> np.ndarray:
    return (scale * np.random.default_rng(seed).standard_normal(shape)).astype(dtype)


def same(on_strict, on_cpu) -> None:
    """``on_strict`` lives on the strict device and equals ``on_cpu``: same dtype, same values.

    Same values up to a few units in the last place, not bit for bit: on the
    CPU a full reduction gives a NumPy scalar and on a device a 0-d array,
    and NumPy computes ``scalar ** 0.5`` with ``powf`` but ``array ** 0.5``
    with ``sqrt`` (one ulp apart now and then). Integers and booleans: exact.
    """
    if isinstance(on_cpu, dict):
        assert on_strict.keys() == on_cpu.keys()
        for k in on_cpu:
            same(on_strict[k], on_cpu[k])
        return
    if isinstance(on_cpu, (tuple, list)):
        assert len(on_strict) == len(on_cpu)
        for a, b in zip(on_strict, on_cpu):
            same(a, b)
        return
    assert isinstance(on_strict, StrictArray), type(on_strict)
    expected = np.asarray(on_cpu)
    got = to_numpy(on_strict)
    assert got.dtype == expected.dtype, (got.dtype, expected.dtype)
    if got.dtype.kind != "f":
        np.testing.assert_array_equal(got, expected)
        return
    ulp = 8 * np.finfo(got.dtype).eps  # a few units in the last place, relative to the array's scale
    np.testing.assert_allclose(
        got, expected, rtol=ulp, atol=ulp * float(np.max(np.abs(expected), initial=1.0))
    )


def schedules(kind: str = "cosine", dtype: str = "float32") -> tuple[dict, dict]:
    return (
        make_schedule(T, kind=kind, dtype=dtype, device=DEVICE),
        make_schedule(T, kind=kind, dtype=dtype, device="cpu"),
    )


# --------------------------------------------------------------------------
# The stand-in itself
# --------------------------------------------------------------------------


def test_strict_is_a_device_of_its_own():
    x = to_strict(host(0, 3, 4))
    assert backend.get_array_module(x) is strict
    assert backend.device_of(x) == DEVICE
    assert backend.xp_for_device(DEVICE) is strict
    assert not isinstance(x, np.ndarray)  # like cupy.ndarray
    assert DEVICE not in backend.DEVICES  # a private hook, not a public device


@pytest.mark.parametrize(
    "mix",
    [
        lambda s, h: s + h,
        lambda s, h: h * s,
        lambda s, h: s @ h.T,
        lambda s, h: strict.exp(h),
        lambda s, h: strict.maximum(s, h),
        lambda s, h: strict.where(s > 0, h, s),
        lambda s, h: strict.concatenate([s, h]),
        lambda s, h: strict.zeros_like(h),
        lambda s, h: strict.add(s, s, out=h),
        lambda s, h: s.__iadd__(h),
        lambda s, h: h.__iadd__(s),
    ],
)
def test_a_host_array_meeting_a_device_array_is_refused(mix):
    s, h = to_strict(host(0, 2, 3)), host(1, 2, 3)
    with pytest.raises(TypeError, match="Unsupported type"):
        mix(s, h)


def test_implicit_conversion_to_numpy_is_refused():
    s = to_strict(host(0, 2, 3))
    with pytest.raises(TypeError, match="Implicit conversion"):
        np.asarray(s)
    with pytest.raises(TypeError, match="Implicit conversion"):
        np.ascontiguousarray(s)


def test_reads_are_counted_by_kind_and_repr_is_not():
    s = to_strict(host(0, 2, 3))
    with track() as log:
        float(s.sum())
        int(s.max() > 0)
        bool(s.sum() > 0)
        s[0, 0].item()
        s.tolist()
        f"{s.mean():.3f}"
        s[s > 0]  # boolean mask: the output size depends on the data
        repr(s), str(s), f"{s}"  # not counted
    assert log.counts() == {"implicit": 7, "explicit": 0, "h2d": 0}, str(log)
    with track() as log:
        to_numpy(s)
        strict.asnumpy(s)
        s.get()
        strict.asarray(host(1, 3))
        s[np.array([1, 0])]  # a host index array is copied in
        s[0] = host(2, 3)
        strict.asarray(2.0)  # scalars are kernel arguments: free
    assert log.counts() == {"implicit": 0, "explicit": 3, "h2d": 3}, str(log)
    assert "test_strict_device.py" in log.events[0].where  # the line that asked


def test_forbid_raises_at_the_first_transfer_and_names_the_line():
    s = to_strict(host(0, 4))
    with forbid():
        t = strict.exp(s) * 2.0 + s.sum()  # device work only
        t += 1.0
    with pytest.raises(HostSyncError, match="bool"), forbid():
        if s.sum() > 0:  # a Python if on a device value
            pass
    with pytest.raises(HostSyncError, match=r"test_strict_device\.py"), forbid():
        to_numpy(t)


def test_reductions_and_indexing_stay_on_the_device_as_0d_arrays():
    s = to_strict(host(0, 3, 4))
    for value in (s.sum(), s.mean(), s.max(), s.std(), s[1, 2], s[0][3], (s * s).sum() ** 0.5):
        assert isinstance(value, StrictArray) and value.shape == ()
    assert s[:, None].shape == (3, 1, 4) and s.T.shape == (4, 3)


def test_add_at_counts_repeated_indices_and_other_at_methods_are_refused_like_cupy():
    table = strict.zeros((3, 2), dtype=F32)
    labels = strict.asarray(np.array([0, 2, 0], dtype=np.int64))
    strict.add.at(table, labels, strict.ones((3, 2), dtype=F32))
    np.testing.assert_array_equal(to_numpy(table), [[2, 2], [0, 0], [1, 1]])
    with pytest.raises(NotImplementedError):
        strict.subtract.at(table, labels, strict.ones((3, 2), dtype=F32))


def test_generator_follows_cupy_not_numpy():
    rng = strict.random.default_rng(0)
    z = rng.standard_normal((2, 3), dtype="float32")
    i = rng.integers(0, 10, size=5)
    u = rng.random(4)
    assert isinstance(z, StrictArray) and z.dtype == F32
    assert i.dtype == np.int64 and u.dtype == np.float64
    # A different stream from NumPy's for the same seed, as CuPy's is.
    again = to_numpy(strict.random.default_rng(0).standard_normal((2, 3), dtype="float32"))
    np.testing.assert_array_equal(again, to_numpy(z))
    assert not np.allclose(again, np.random.default_rng(0).standard_normal((2, 3), dtype=F32))
    for missing in ("normal", "choice", "permutation"):  # not in cupy.random.Generator
        assert not hasattr(rng, missing)
    with pytest.raises(TypeError, match="one integer seed"):
        strict.random.default_rng([1, 2, 3])
    assert isinstance(default_rng(3, strict).standard_normal(2), StrictArray)


def test_strict_computes_what_numpy_computes():
    a, b = host(0, 5, 3), host(1, 3, 2)
    same(strict.tanh(to_strict(a)) @ to_strict(b), np.tanh(a) @ b)
    same(to_strict(a).std(axis=0), a.std(axis=0))
    same(strict.clip(to_strict(a), -0.5, 0.5), np.clip(a, -0.5, 0.5))


def test_the_guard_catches_a_python_if_on_a_device_value_in_a_step(monkeypatch):
    """A planted bug: gradient clipping that decides on the host whether to clip."""
    import ldm_np.training as training

    def clip_with_a_python_if(grads, max_norm, **_):
        norm = global_grad_norm(grads)
        if norm > max_norm:  # waits for the GPU at every step
            for group in grads.values():
                for g in group.values():
                    g *= max_norm / norm
        return norm

    monkeypatch.setattr(training, "clip_grad_norm", clip_with_a_python_if)
    s, _ = schedules()
    step = _denoiser_loop_fn(s)
    with pytest.raises(HostSyncError, match=r"bool\(\) / Python if"), forbid():
        step(0)


def test_the_guard_catches_a_numpy_allocation_in_a_backward(monkeypatch):
    """A planted bug: a backward that allocates its gradient with ``np`` instead of ``xp``."""
    import ldm_np.denoiser as denoiser_module

    def backward_on_the_host(dout, cache):
        labels, shape = cache
        dtable = np.zeros(shape, dtype=dout.dtype)
        np.add.at(dtable, labels, dout)
        return dtable

    monkeypatch.setattr(denoiser_module, "label_embedding_backward", backward_on_the_host)
    model = Denoiser(4, 16, 1, T, num_classes=3, device=DEVICE)
    z, t, labels = to_strict((host(0, 5, 4), np.arange(5), np.arange(5) % 3))
    model.forward(z, t, labels)
    with pytest.raises(TypeError, match="Unsupported type"):
        model.backward(z)


# --------------------------------------------------------------------------
# Layers, losses and the three models
# --------------------------------------------------------------------------


def test_layers_forward_and_backward():
    x, dy = host(0, 6, 8), host(1, 6, 8)
    kernel, bias = host(2, 8, 8, scale=0.3), host(3, 8, scale=0.1)
    gamma, beta = 1.0 + host(4, 8, scale=0.1), host(5, 8, scale=0.1)
    up = {"kernel": host(6, 8, 32, scale=0.2), "bias": host(7, 32, scale=0.1)}
    down = {"kernel": host(8, 32, 8, scale=0.2), "bias": host(9, 8, scale=0.1)}
    norm = {"gamma": gamma, "beta": beta}

    def run(x, dy, kernel, bias, gamma, beta, norm, up, down, t, labels, table):
        out = {}
        y, c = dense_forward(x, kernel, bias)
        out["dense"] = (y, *dense_backward(dy, c))
        y, c = silu_forward(x)
        out["silu"] = (y, silu_backward(dy, c))
        y, c = layernorm_forward(x, gamma, beta)
        out["layernorm"] = (y, *layernorm_backward(dy, c))
        y, c = residual_block_forward(x, norm, up, down)
        out["residual"] = (y, *residual_block_backward(dy, c))
        out["timestep"] = (timestep_embedding(t, 8, T), timestep_embedding(t, 7, T, "fraction"))
        y, c = label_embedding_forward(labels, table)
        out["labels"] = (y, label_embedding_backward(dy, c))
        return out

    t = np.array([0, 5, 99, 5, 17, 3], dtype=np.int64)
    labels = np.array([0, 2, 0, 1, 2, 2], dtype=np.int64)  # repeated labels: add.at territory
    args = (x, dy, kernel, bias, gamma, beta, norm, up, down, t, labels, host(10, 3, 8))
    on_cpu = run(*args)
    moved = to_strict(args)
    with forbid():
        on_strict = run(*moved)
    same(on_strict, on_cpu)


def test_vae_functions_and_losses():
    mu, log_var, eps, dz = host(0, 5, 4), host(1, 5, 4, scale=20.0), host(2, 5, 4), host(3, 5, 4)

    def run(mu, log_var, eps, dz):
        lv, inside = clamp_log_var_forward(log_var)
        z, cache = reparameterize_forward(mu, lv, eps)
        dmu, dlv = reparameterize_backward(dz, cache)
        loss, c_mse = mse_forward(z, mu)
        dpred = mse_backward(1.0, c_mse)
        return {
            "clamp": (lv, clamp_log_var_backward(dlv, inside)),
            "z": (z, dmu, dlv),
            "mse": (loss, dpred),
            "kl": (
                kl_divergence(mu, lv),
                *kl_divergence_backward(0.5, kl_divergence_forward(mu, lv)[1]),
                kl_per_dimension(mu, lv),
            ),
        }

    on_cpu = run(mu, log_var, eps, dz)
    moved = to_strict((mu, log_var, eps, dz))
    with forbid():
        on_strict = run(*moved)
        z, _ = reparameterize(moved[0], moved[1], strict.random.default_rng(0))
    same(on_strict, on_cpu)
    assert isinstance(z, StrictArray) and z.dtype == F32


def _models(device: str, num_classes: int | None = None):
    kw = {"seed": 3, "device": device}
    return (
        Encoder(12, 4, 16, **kw),
        Decoder(12, 4, 16, **kw),
        Denoiser(4, 16, 2, T, num_classes=num_classes, **kw),
    )


@pytest.mark.parametrize("num_classes", [None, 3])
def test_the_three_models_forward_and_backward(num_classes):
    x, z, dz, dx = host(0, 6, 12), host(1, 6, 4), host(2, 6, 4), host(3, 6, 12)
    t = np.array([0, 1, 50, 99, 3, 3], dtype=np.int64)
    labels = None if num_classes is None else np.array([0, 2, 2, 1, 3, 0], dtype=np.int64)

    def run(models, x, z, dz, dx, t, labels):
        encoder, decoder, denoiser = models
        mu, log_var = encoder.forward(x)
        dx_enc = encoder.backward(dz, dz)
        x_hat = decoder.forward(z)
        dz_dec = decoder.backward(dx)
        eps_hat = denoiser.forward(z, t, labels)
        dz_den = denoiser.backward(dz)
        outputs = (mu, log_var, dx_enc, x_hat, dz_dec, eps_hat, dz_den)
        return outputs, [m.grads for m in models]

    cpu = _models("cpu", num_classes)
    on_strict_models = _models(DEVICE, num_classes)
    assert all(m.device == DEVICE and m.xp is strict for m in on_strict_models)
    assert "device='strict'" in repr(on_strict_models[2])
    on_cpu = run(cpu, x, z, dz, dx, t, labels)
    moved = to_strict((x, z, dz, dx, t, labels))
    with forbid():
        on_strict = run(on_strict_models, *moved)
    same(on_strict, on_cpu)


def test_checked_entrances_read_the_device_once_and_say_so():
    encoder = _models(DEVICE)[0]
    x = to_strict(host(0, 6, 12))
    with track() as log:
        encoder(x)  # __call__ checks that x is finite: one explicit read, at the entrance
    assert log.counts() == {"implicit": 0, "explicit": 1, "h2d": 0}, str(log)


def test_build_on_the_strict_device():
    models = build(**SIZES, num_steps=T, device=DEVICE)
    for model in models:
        assert all(isinstance(v, StrictArray) for group in model.params.values() for v in group.values())
        assert all(isinstance(v, StrictArray) for group in model.grads.values() for v in group.values())


# --------------------------------------------------------------------------
# Optimizers and gradient clipping
# --------------------------------------------------------------------------


@pytest.mark.parametrize("optimizer", [Adam, AdamW])
def test_optimizer_steps_and_clipping(optimizer):
    params = {"a": {"w": host(0, 4, 3), "b": host(1, 3)}, "c": {"w": host(2, 5)}}
    grads = [
        {"a": {"w": host(10 + i, 4, 3), "b": host(20 + i, 3)}, "c": {"w": host(30 + i, 5)}} for i in range(3)
    ]

    def run(params, grads):
        opt = optimizer(lr=1e-2, weight_decay=0.01)
        norms = []
        for g in grads:
            norms.append((global_grad_norm(g), clip_grad_norm(g, 1.5)))
            opt.step(params, g)
        return params, norms, opt.state_arrays()

    moved = to_strict((params, grads))  # copies: the CPU run below updates and clips in place
    on_cpu = run(params, grads)
    with forbid():
        on_strict = run(*moved)
    same(on_strict, on_cpu)


# --------------------------------------------------------------------------
# Schedules, the forward process and the loss
# --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_schedules_live_on_the_device_in_the_model_dtype(kind, dtype):
    on_strict = make_schedule(1000, kind=kind, dtype=dtype, device=DEVICE)
    on_cpu = make_schedule(1000, kind=kind, dtype=dtype, device="cpu")
    for key, value in on_cpu.items():
        if hasattr(value, "dtype"):
            assert value.dtype == np.dtype(dtype), key
            same(on_strict[key], value)
        else:
            assert on_strict[key] == value


@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
def test_forward_process_conversions_and_loss(prediction_type):
    s_strict, s_cpu = schedules()
    x0, noise, out = host(0, 6, 4), host(1, 6, 4), host(2, 6, 4)
    t = np.array([0, 1, 50, 99, 7, 7], dtype=np.int64)

    def run(s, x0, noise, out, t):
        x_t = q_sample(s, x0, t, noise)
        p = prediction_type
        return (
            x_t,
            q_sample(s, x0, 42, noise),  # one int t for the whole batch
            velocity(s, x0, noise, t),
            snr(s, t),
            log_snr(s, t),
            predict_x0(s, out, t, x_t, p),
            predict_eps(s, out, t, x_t, p),
            predict_v(s, out, t, x_t, p),
            convert_prediction(s, out, t, x_t, p, "v"),
            target_for(p, x0, noise, s, t),
            min_snr_weights(s, t, p, 5.0),
            diffusion_loss(s, out, x0, noise, t, p),
            diffusion_loss(s, out, x0, noise, t, p, min_snr_gamma=5.0),
            diffusion_loss(s, out, x0, noise, 10, p),
        )

    on_cpu = run(s_cpu, x0, noise, out, t)
    moved = to_strict((x0, noise, out, t))
    with forbid():
        on_strict = run(s_strict, *moved)
    same(on_strict, on_cpu)


# --------------------------------------------------------------------------
# Samplers and the oracle
# --------------------------------------------------------------------------


def test_sampler_steps():
    s_strict, s_cpu = schedules()
    x, out, noise = host(0, 5, 4), host(1, 5, 4), host(2, 5, 4)
    t = np.array([0, 1, 50, 99, 7], dtype=np.int64)
    t_prev = t - 1

    def run(s, x, out, noise, t, t_prev):
        return (
            ddpm_step(s, out, 50, x, noise),
            ddpm_step(s, out, 0, x, None),
            ddpm_step(s, out, t, x, noise, "fixed_large"),
            ddim_step(s, out, 60, 40, x),
            ddim_step(s, out, 5, -1, x, eta=1.0, noise=noise, prediction_type="v", clip_sample=2.0),
            ddim_step(s, out, t, t_prev, x, eta=0.5, noise=noise, prediction_type="sample"),
        )

    on_cpu = run(s_cpu, x, out, noise, t, t_prev)
    moved = to_strict((x, out, noise, t, t_prev))
    with forbid():
        on_strict = run(s_strict, *moved)
    same(on_strict, on_cpu)


def _oracles(prediction_type: str = "epsilon"):
    s_strict, s_cpu = schedules()
    data = moons(16, seed=1, noise=0.05)
    return (OracleDenoiser(data, s_strict, prediction_type), s_strict), (
        OracleDenoiser(data, s_cpu, prediction_type),
        s_cpu,
    )


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_sample_runs_every_step_on_the_device(sampler):
    (oracle, s), _ = _oracles()
    rng = strict.random.default_rng(0)
    with forbid():  # x_T drawn on the device and noise at every step: not one host transfer
        x0, traces = sample(
            oracle,
            s,
            8,
            sampler=sampler,
            num_inference_steps=10,
            eta=0.5,
            rng=rng,
            shape=2,
            return_trajectory=True,
        )
    assert isinstance(x0, StrictArray) and x0.shape == (8, 2) and x0.dtype == F32
    assert len(traces) == (10 if sampler == "ddim" else T)
    assert "StepTrace(t=" in repr(traces[-1])  # printing a trace reads the device, explicitly


@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
def test_oracle_sampling_matches_the_cpu_and_syncs_once_whatever_the_steps(prediction_type):
    (oracle_s, s_strict), (oracle_c, s_cpu) = _oracles(prediction_type)
    x_T = host(5, 8, 2)  # drawn on the host and moved: the two devices' streams differ
    kw = {"prediction_type": prediction_type, "rng": None}
    counts = []
    x_T_strict = to_strict(x_T)
    for steps in (5, 20):
        with track() as log:
            on_strict = sample(oracle_s, s_strict, 8, num_inference_steps=steps, x_T=x_T_strict, **kw)
        counts.append(log.counts())
        same(on_strict, sample(oracle_c, s_cpu, 8, num_inference_steps=steps, x_T=x_T, **kw))
    # One explicit read, x_T's finiteness check before the loop; none per step.
    assert counts == [{"implicit": 0, "explicit": 1, "h2d": 0}] * 2, counts
    with forbid():
        inverted = ddim_invert(oracle_s, s_strict, on_strict, 10, prediction_type=prediction_type)
    same(inverted, ddim_invert(oracle_c, s_cpu, to_numpy(on_strict), 10, prediction_type=prediction_type))


# --------------------------------------------------------------------------
# Training steps and the loop
# --------------------------------------------------------------------------


def test_training_steps_match_the_cpu_without_a_host_transfer():
    s_strict, s_cpu = schedules()
    batches = [(host(i, 8, 12), host(100 + i, 8, 4), host(200 + i, 8, 4)) for i in range(3)]
    ts = [np.random.default_rng(300 + i).integers(0, T, 8) for i in range(3)]
    labels = np.array([0, 1, 2, 3, 0, 1, 2, 3], dtype=np.int64)

    def run(models, s, batches, ts, labels):
        encoder, decoder, denoiser = models
        vae_opt, den_opt = Adam(1e-3), Adam(1e-3)
        ema = EMA(denoiser.params, 0.9)
        losses = []
        for (x, eps, noise), t in zip(batches, ts):
            losses.append(vae_step(encoder, decoder, vae_opt, x, eps, beta=0.5, grad_clip=1.0))
            losses.append(
                denoiser_step(
                    denoiser,
                    den_opt,
                    s,
                    eps,
                    t,
                    noise,
                    labels=labels,
                    ema=ema,
                    prediction_type="v",
                    min_snr_gamma=5.0,
                )
            )
        return losses, [m.params for m in models], ema.shadow

    on_cpu = run(_models("cpu", 3), s_cpu, batches, ts, labels)
    models = _models(DEVICE, 3)
    moved = to_strict((batches, ts, labels))
    with forbid():
        on_strict = run(models, s_strict, *moved)
    same(on_strict, on_cpu)


def _denoiser_loop_fn(s):
    denoiser = Denoiser(4, 16, 2, T, seed=0, device=DEVICE)
    optimizer = Adam(1e-3)

    def step(n: int) -> dict:
        rng = strict.random.default_rng(n)
        z0 = rng.standard_normal((8, 4), dtype=F32)
        t = rng.integers(0, T, size=8)
        return denoiser_step(denoiser, optimizer, s, z0, t, rng.standard_normal((8, 4), dtype=F32))

    return step


@pytest.mark.parametrize(("num_steps", "log_every", "logs"), [(3, 100, 1), (9, 100, 1), (9, 3, 3), (9, 2, 5)])
def test_the_loop_reads_the_loss_only_at_logging_intervals(num_steps, log_every, logs):
    """Host syncs per step: 0. Per log: 1 (explicit, every loss of the step in one copy)."""
    s, _ = schedules()
    step = _denoiser_loop_fn(s)
    state = LoopState()
    with track() as log:
        run_loop(step, state, num_steps, name="strict", log_every=log_every, progress=False)
    assert log.counts() == {"implicit": 0, "explicit": logs, "h2d": 0}, str(log)
    assert len(state.history) == logs and all(isinstance(v, float) for _, v in state.history)


# --------------------------------------------------------------------------
# LatentDiffusion end to end
# --------------------------------------------------------------------------


def _ldm(steps: int, device: str = DEVICE, **kw) -> LatentDiffusion:
    return LatentDiffusion(
        **SIZES,
        num_steps=T,
        schedule="cosine",
        vae_steps=steps,
        denoiser_steps=steps,
        vae_batch_size=8,
        denoiser_batch_size=8,
        warmup_steps=1,
        device=device,
        **kw,
    )


DATA = np.random.default_rng(7).random((40, 12)).astype(F32)
LABELS = np.arange(40) % 3


@pytest.mark.parametrize("conditional", [False, True])
def test_fit_has_no_host_sync_per_step(conditional):
    """Both stages with 2 and with 5 steps: the same transfers, so none belongs to a step."""
    kw = {"num_classes": 3} if conditional else {}
    labels = LABELS if conditional else None
    runs = []
    for steps in (2, 5):
        model = _ldm(steps, **kw)
        with track() as vae_log:
            model.fit_vae(DATA, progress=False, log_every=100)
        with track() as den_log:
            model.fit_denoiser(DATA, labels, progress=False, log_every=100)
        runs.append((vae_log.counts(), den_log.counts()))
        assert vae_log.implicit == den_log.implicit == 0, f"{vae_log}\n{den_log}"
    assert runs[0] == runs[1], runs
    # Before training, explicit: data std (stage 1), latent std (stage 2); at the
    # end: the last loss (both), active units (stage 1); h2d: the data, the labels.
    vae, den = runs[0]
    assert vae == {"implicit": 0, "explicit": 3, "h2d": 1}, vae
    assert den == {"implicit": 0, "explicit": 2, "h2d": 2 if conditional else 1}, den
    assert isinstance(model.ema.shadow["z_proj"]["kernel"], StrictArray)
    assert all(np.isfinite(v) for _, v in model.denoiser_state.history)


def test_sample_save_and_load_across_devices(tmp_path):
    model = _ldm(3)
    model.fit(DATA, progress=False)
    for sampler, steps in (("ddim", 10), ("ddpm", T)):
        with track() as log:
            x = model.sample(6, sampler=sampler, num_inference_steps=steps, seed=1)
        assert isinstance(x, StrictArray) and x.shape == (6, 12) and x.dtype == F32
        assert log.counts() == {"implicit": 0, "explicit": 1, "h2d": 0}, str(log)  # decode's finite check
    path = tmp_path / "strict.safetensors"
    with track() as log:
        model.save(path)  # moved to the host only for writing
    assert log.implicit == 0 and log.h2d == 0 and log.explicit > 0

    on_cpu = LatentDiffusion.load(path, device="cpu")
    back = LatentDiffusion.load(path, device=DEVICE)
    z_T = host(9, 6, 4)  # the same start on both devices
    expected = on_cpu.sample(6, num_inference_steps=10, x_T=z_T, return_latents=True)
    same(model.sample(6, num_inference_steps=10, x_T=to_strict(z_T), return_latents=True), expected)
    same(back.sample(6, num_inference_steps=10, x_T=to_strict(z_T), return_latents=True), expected)
    same(back.encode(to_strict(DATA)), on_cpu.encode(DATA))
    assert back.scale_factor == on_cpu.scale_factor == model.scale_factor


def test_guided_sampling_and_inpainting_have_no_host_sync_per_step():
    from ldm_np.guidance import inpaint

    model = _ldm(3, num_classes=3)
    model.fit(DATA, LABELS, progress=False)
    mask = np.zeros((4, 12))
    mask[:, :6] = 1.0
    counts = []
    for steps in (5, 15):
        with track() as log:
            x = model.sample(4, labels=np.array([0, 1, 2, 0]), guidance_scale=2.0, num_inference_steps=steps)
            filled = inpaint(model, DATA[:4], mask, num_inference_steps=steps)
        assert log.implicit == 0, str(log)
        counts.append(log.counts())
    assert counts[0] == counts[1], counts  # what is read or moved does not grow with the steps
    assert isinstance(x, StrictArray) and isinstance(filled, StrictArray) and filled.shape == (4, 12)
