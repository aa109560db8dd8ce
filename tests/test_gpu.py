"""NumPy/CuPy parity on a real GPU: every forward and backward, training, sampling, checkpoints.

Marked ``gpu`` and skipped cleanly without CuPy and a CUDA device (CI never
has one). On a GPU machine:

    python -m pytest -m gpu -q          # or: bash benchmarks/gpu_check.sh

Every comparison runs the same function on the host and on the device, from
the same inputs: data and noise are drawn on the host with NumPy and moved,
because NumPy's and CuPy's random streams differ for the same seed.

Tolerances, relative to the largest magnitude of the expected array (a
per-element relative test would fail on entries that are sums cancelling to
near zero):

- float64: 1e-10. The devices differ only in the order (and FMA use) of
  floating-point sums inside matrix products and reductions; with eps =
  2.2e-16 and sums of at most a few hundred terms here, that is below 1e-13.
  Any real bug (a wrong term, a transposed gradient) shows up at 1e-2 or more.
- float32: 1e-4. The same reordering at eps = 1.2e-7 gives about
  sqrt(K) eps ~ 1e-6 for one dot product of K = 64 terms; cancellations in
  LayerNorm's backward and a few layers of composition amplify that by up to
  ~10-100. (This assumes CuPy's default of no TF32 in matrix products; with
  CUPY_TF32=1 the matrix products carry 10-bit mantissas and 1e-2 would be
  needed.)

``LDM_NP_GPU_STANDIN=strict python -m pytest tests/test_gpu.py`` runs these
tests on the CPU with the strict stand-in device posing as the GPU: it checks
the tests' own logic (moves, comparisons, device checks) where no GPU exists.
It proves nothing about CuPy; the real run does.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from ldm_np import backend
from ldm_np.backend import default_rng, device_of, gpu_available, to_device, to_numpy
from ldm_np.datasets import moons
from ldm_np.denoiser import Denoiser, label_embedding_backward, label_embedding_forward
from ldm_np.diffusion import PREDICTION_TYPES, diffusion_loss, predict_x0, q_sample, target_for
from ldm_np.evaluation.metrics import nearest_distance
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
    mse_backward,
    mse_forward,
)
from ldm_np.optim import Adam, AdamW, clip_grad_norm
from ldm_np.oracle import OracleDenoiser
from ldm_np.pipeline import LatentDiffusion
from ldm_np.samplers import ddim_step, ddpm_step, sample
from ldm_np.schedules import KINDS, make_schedule
from ldm_np.training import EMA, denoiser_step, step_rng, vae_step
from ldm_np.vae import (
    Decoder,
    Encoder,
    clamp_log_var_backward,
    clamp_log_var_forward,
    reparameterize_backward,
    reparameterize_forward,
)

STANDIN = os.environ.get("LDM_NP_GPU_STANDIN") == "strict"

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not (gpu_available() or STANDIN), reason="needs CuPy and a CUDA GPU"),
]

DTYPES = ["float32", "float64"]
RTOL = {"float32": 1e-4, "float64": 1e-10}
T = 100


@pytest.fixture(scope="module", autouse=True)
def gpu_xp():
    """The GPU's array module (CuPy), or the strict stand-in posing as it in a dry run."""
    if not STANDIN:
        yield backend.xp_for_device("gpu")
        return
    from strict_xp import strict

    saved = backend._cupy
    backend._cupy = strict
    try:
        yield strict
    finally:
        backend._cupy = saved


def host(seed: int, *shape: int, dtype="float32", scale: float = 1.0) -> np.ndarray:
    return (scale * np.random.default_rng(seed).standard_normal(shape)).astype(dtype)


def gpu(x):
    return to_device(x, "gpu")


def close(on_gpu, on_cpu, rtol: float | None = None) -> None:
    """``on_gpu`` lives on the GPU, has ``on_cpu``'s dtype, and matches it within ``rtol`` (see above)."""
    if isinstance(on_cpu, dict):
        assert on_gpu.keys() == on_cpu.keys()
        for k in on_cpu:
            close(on_gpu[k], on_cpu[k], rtol)
        return
    if isinstance(on_cpu, (tuple, list)):
        assert len(on_gpu) == len(on_cpu)
        for a, b in zip(on_gpu, on_cpu):
            close(a, b, rtol)
        return
    assert device_of(on_gpu) == "gpu", type(on_gpu)
    expected, got = np.asarray(on_cpu), to_numpy(on_gpu)
    assert got.dtype == expected.dtype and got.shape == expected.shape, (got.dtype, got.shape, expected.dtype)
    if got.dtype.kind != "f":
        np.testing.assert_array_equal(got, expected)
        return
    rtol = RTOL[got.dtype.name] if rtol is None else rtol
    scale = float(np.max(np.abs(expected), initial=1e-30))
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=rtol * scale)


def parity(run, host_args, rtol=None):
    """``run`` on the host arguments and on copies moved to the GPU: the results agree."""
    on_gpu = run(*gpu(host_args))  # moved first: the host run may update its arguments in place
    on_cpu = run(*host_args)
    close(on_gpu, on_cpu, rtol)
    return on_gpu, on_cpu


def schedules(dtype: str, kind: str = "cosine"):
    return make_schedule(T, kind=kind, dtype=dtype, device="gpu"), make_schedule(T, kind=kind, dtype=dtype)


# --------------------------------------------------------------------------
# The device itself
# --------------------------------------------------------------------------


def test_arrays_and_generators_live_on_the_gpu(gpu_xp):
    x = gpu(np.arange(6, dtype=np.float32))
    assert backend.get_array_module(x) is gpu_xp and device_of(x) == "gpu"
    with pytest.raises(TypeError):  # CuPy refuses implicit conversion, as the strict stand-in does
        np.asarray(x)
    draw = default_rng(0, gpu_xp).standard_normal((3, 2), dtype=np.float32)
    assert device_of(draw) == "gpu" and draw.dtype == np.float32
    a, b = (to_numpy(step_rng(1, 2, 3, gpu_xp).integers(0, 100, size=8)) for _ in range(2))
    np.testing.assert_array_equal(a, b)  # the per-step generator is a pure function of (seed, stage, step)


# --------------------------------------------------------------------------
# Every forward and backward
# --------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_layers(dtype):
    def run(x, dy, kernel, bias, gamma, beta, up, down, t, labels, table):
        y, c = dense_forward(x, kernel, bias)
        dense = (y, *dense_backward(dy, c))
        y, c = silu_forward(x)
        silu = (y, silu_backward(dy, c))
        y, c = layernorm_forward(x, gamma, beta)
        norm = (y, *layernorm_backward(dy, c))
        y, c = residual_block_forward(x, {"gamma": gamma, "beta": beta}, up, down)
        block = (y, *residual_block_backward(dy, c))
        emb = (
            timestep_embedding(t, 16, T, dtype=dtype),
            timestep_embedding(t, 15, T, "fraction", dtype=dtype),
        )
        y, c = label_embedding_forward(labels, table)
        lab = (y, label_embedding_backward(dy, c))
        return dense, silu, norm, block, emb, lab

    up = {"kernel": host(6, 16, 64, dtype=dtype, scale=0.2), "bias": host(7, 64, dtype=dtype, scale=0.1)}
    down = {"kernel": host(8, 64, 16, dtype=dtype, scale=0.2), "bias": host(9, 16, dtype=dtype, scale=0.1)}
    args = (
        host(0, 32, 16, dtype=dtype),
        host(1, 32, 16, dtype=dtype),
        host(2, 16, 16, dtype=dtype, scale=0.3),
        host(3, 16, dtype=dtype, scale=0.1),
        1.0 + host(4, 16, dtype=dtype, scale=0.1),
        host(5, 16, dtype=dtype, scale=0.1),
        up,
        down,
        np.random.default_rng(10).integers(0, T, 32),
        np.random.default_rng(11).integers(0, 4, 32),  # repeated labels: add.at on the GPU
        host(12, 4, 16, dtype=dtype),
    )
    parity(run, args)


@pytest.mark.parametrize("dtype", DTYPES)
def test_vae_functions_and_losses(dtype):
    def run(mu, log_var, eps, dz):
        lv, inside = clamp_log_var_forward(log_var)
        z, cache = reparameterize_forward(mu, lv, eps)
        loss, c_mse = mse_forward(z, mu)
        dpred = mse_backward(1.0, c_mse)
        return (
            lv,
            clamp_log_var_backward(dz, inside),
            z,
            *reparameterize_backward(dz, cache),
            loss,
            dpred,
            kl_divergence(mu, lv),
            *kl_divergence_backward(1.0, kl_divergence_forward(mu, lv)[1]),
        )

    parity(
        run,
        (
            host(0, 32, 8, dtype=dtype),
            host(1, 32, 8, dtype=dtype, scale=20.0),
            host(2, 32, 8, dtype=dtype),
            host(3, 32, 8, dtype=dtype),
        ),
    )


def _models(dtype, device, num_classes=None):
    kw = {"seed": 4, "dtype": dtype, "device": device}
    return (
        Encoder(20, 8, 32, **kw),
        Decoder(20, 8, 32, **kw),
        Denoiser(8, 32, 2, T, num_classes=num_classes, **kw),
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("num_classes", [None, 3])
def test_the_three_models_forward_and_backward(dtype, num_classes):
    def run(models, x, z, dz, dx, t, labels):
        encoder, decoder, denoiser = models
        outputs = (*encoder.forward(x), encoder.backward(dz, dz), decoder.forward(z), decoder.backward(dx))
        outputs += (denoiser.forward(z, t, labels), denoiser.backward(dz))
        return outputs, [m.grads for m in models]

    labels = None if num_classes is None else np.random.default_rng(9).integers(0, num_classes + 1, 32)
    data = (host(0, 32, 20, dtype=dtype), host(1, 32, 8, dtype=dtype), host(2, 32, 8, dtype=dtype))
    data += (host(3, 32, 20, dtype=dtype), np.random.default_rng(8).integers(0, T, 32), labels)
    on_gpu = run(_models(dtype, "gpu", num_classes), *gpu(data))
    close(on_gpu, run(_models(dtype, "cpu", num_classes), *data))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("optimizer", [Adam, AdamW])
def test_optimizer_steps_and_clipping(dtype, optimizer):
    def run(params, grads):
        opt, norms = optimizer(lr=1e-2), []
        for g in grads:
            norms.append(clip_grad_norm(g, 1.0))
            opt.step(params, g)
        return params, norms, opt.state_arrays()

    params = {"a": {"w": host(0, 16, 8, dtype=dtype)}, "b": {"w": host(1, 8, dtype=dtype)}}
    grads = [
        {"a": {"w": host(10 + i, 16, 8, dtype=dtype)}, "b": {"w": host(20 + i, 8, dtype=dtype)}}
        for i in range(3)
    ]
    parity(run, (params, grads))


# --------------------------------------------------------------------------
# Schedules, diffusion, samplers
# --------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", KINDS)
def test_schedules_live_on_the_gpu_in_the_model_dtype(dtype, kind):
    on_gpu, on_cpu = (
        make_schedule(1000, kind=kind, dtype=dtype, device="gpu"),
        make_schedule(1000, kind=kind, dtype=dtype),
    )
    for key, value in on_cpu.items():
        if hasattr(value, "dtype"):
            close(on_gpu[key], value)
        else:
            assert on_gpu[key] == value


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
def test_forward_process_loss_and_sampler_steps(dtype, prediction_type):
    s_gpu, s_cpu = schedules(dtype)

    def run(s, x0, noise, out, t):
        x_t = q_sample(s, x0, t, noise)
        p = prediction_type
        return (
            x_t,
            predict_x0(s, out, t, x_t, p),
            target_for(p, x0, noise, s, t),
            diffusion_loss(s, out, x0, noise, t, p),
            diffusion_loss(s, out, x0, noise, t, p, min_snr_gamma=5.0),
            ddpm_step(s, out, 40, x_t, noise, prediction_type=p),
            ddpm_step(s, out, t, x_t, noise, "fixed_large", p),
            ddim_step(s, out, 40, 20, x_t, prediction_type=p),
            ddim_step(s, out, 5, -1, x_t, eta=1.0, noise=noise, prediction_type=p, clip_sample=3.0),
        )

    x0, noise, out = (host(i, 32, 8, dtype=dtype) for i in range(3))
    t = np.random.default_rng(3).integers(0, T, 32)
    close(run(s_gpu, *gpu((x0, noise, out, t))), run(s_cpu, x0, noise, out, t))


@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
def test_oracle_sampling(prediction_type):
    s_gpu, s_cpu = schedules("float64")
    data = moons(32, seed=1, noise=0.05, dtype="float64")
    x_T = host(5, 64, 2, dtype="float64")
    kw = {"num_inference_steps": 20, "prediction_type": prediction_type, "rng": None}
    on_gpu = sample(OracleDenoiser(data, s_gpu, prediction_type), s_gpu, 64, x_T=gpu(x_T), **kw)
    close(on_gpu, sample(OracleDenoiser(data, s_cpu, prediction_type), s_cpu, 64, x_T=x_T, **kw), rtol=1e-8)
    # DDPM with the GPU's own noise: a different stream, so compare where the samples land instead.
    rng = default_rng(0, backend.get_array_module(on_gpu))
    x0 = sample(
        OracleDenoiser(data, s_gpu, prediction_type),
        s_gpu,
        64,
        sampler="ddpm",
        rng=rng,
        shape=2,
        prediction_type=prediction_type,
    )
    assert device_of(x0) == "gpu"
    assert np.median(nearest_distance(to_numpy(x0), data)) < 1e-2


# --------------------------------------------------------------------------
# Training, sampling and checkpoints
# --------------------------------------------------------------------------


def test_training_steps_match_the_cpu_in_float64():
    def run(models, s, batches):
        encoder, decoder, denoiser = models
        vae_opt, den_opt, ema = Adam(1e-3), Adam(1e-3), EMA(denoiser.params, 0.9)
        losses = []
        for x, eps, noise, t in batches:
            losses.append(vae_step(encoder, decoder, vae_opt, x, eps, beta=0.5, grad_clip=1.0))
            losses.append(denoiser_step(denoiser, den_opt, s, eps, t, noise, ema=ema, prediction_type="v"))
        return losses, [m.params for m in models], ema.shadow

    batches = [
        (
            host(i, 32, 20, dtype="float64"),
            host(10 + i, 32, 8, dtype="float64"),
            host(20 + i, 32, 8, dtype="float64"),
            np.random.default_rng(i).integers(0, T, 32),
        )
        for i in range(4)
    ]
    s_gpu, s_cpu = schedules("float64")
    on_gpu = run(_models("float64", "gpu"), s_gpu, gpu(batches))
    close(on_gpu, run(_models("float64", "cpu"), s_cpu, batches), rtol=1e-8)


TINY = {
    "input_size": 20,
    "latent_size": 4,
    "hidden_size": 32,
    "num_layers": 2,
    "num_steps": T,
    "schedule": "cosine",
}
DATA = np.random.default_rng(7).random((200, 20)).astype(np.float32)


@pytest.fixture(scope="module")
def trained_on_gpu():
    model = LatentDiffusion(
        **TINY,
        vae_steps=150,
        denoiser_steps=150,
        vae_batch_size=32,
        denoiser_batch_size=32,
        warmup_steps=10,
        device="gpu",
    )
    return model.fit(DATA, progress=False, log_every=25)


def test_a_short_training_run(trained_on_gpu):
    model = trained_on_gpu
    assert model.device == "gpu" and device_of(model.denoiser.params["z_proj"]["kernel"]) == "gpu"
    assert device_of(model.ema.shadow["noise_pred"]["bias"]) == "gpu"
    vae, den = [v for _, v in model.vae_state.history], [v for _, v in model.denoiser_state.history]
    assert len(vae) == len(den) == 6 and all(isinstance(v, float) and np.isfinite(v) for v in vae + den)
    assert vae[-1] < vae[0]  # the VAE learns within 150 steps


@pytest.mark.parametrize(("sampler", "steps"), [("ddim", 20), ("ddpm", T)])
def test_sampling_on_the_gpu(trained_on_gpu, sampler, steps):
    x, z = trained_on_gpu.sample(16, sampler=sampler, num_inference_steps=steps, eta=0.5, return_latents=True)
    assert device_of(x) == device_of(z) == "gpu"
    assert x.shape == (16, 20) and x.dtype == np.float32 and np.isfinite(to_numpy(x)).all()


def test_checkpoint_from_the_gpu_loads_on_the_cpu(trained_on_gpu, tmp_path):
    """Train on the GPU, save, load on the CPU: the same outputs within float32 tolerance."""
    path = trained_on_gpu.save(tmp_path / "gpu.safetensors")
    on_cpu = LatentDiffusion.load(path, device="cpu")
    back = LatentDiffusion.load(path, device="gpu")
    for name in ("encoder", "decoder", "denoiser", "ema_denoiser"):
        close(
            getattr(back, name).params, to_numpy_tree(getattr(trained_on_gpu, name).params), rtol=0.0
        )  # bit-exact
        close(getattr(trained_on_gpu, name).params, getattr(on_cpu, name).params, rtol=0.0)
    assert on_cpu.scale_factor == trained_on_gpu.scale_factor and on_cpu.data_std == trained_on_gpu.data_std
    close(trained_on_gpu.encode(DATA[:32]), on_cpu.encode(DATA[:32]))
    z_T = host(3, 16, 4)
    kw = {"num_inference_steps": 20, "return_latents": True}
    close(trained_on_gpu.sample(16, x_T=gpu(z_T), **kw), on_cpu.sample(16, x_T=z_T, **kw))


def to_numpy_tree(tree):
    return {layer: {k: to_numpy(v) for k, v in group.items()} for layer, group in tree.items()}
