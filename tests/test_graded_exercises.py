"""The graded tests of the exercises: they check an answer without containing it.

A student copy ships this file, so nothing here re-implements a solution.
Gradient exercises are graded against finite differences (the probes of
``ldm_np.exercises.probes``, which name each wrong gradient and hint at the
usual mistakes); the others against outputs stored on fixed inputs
(``tests/data/graded_exercises.npz``, written by the reference with
``python tests/test_graded_exercises.py --record``), case by case from the
smallest, and the message shows the smallest failing case in full: inputs,
expected and actual values. The instructor's tests prove the stored outputs
are the reference's own and that no graded test holds a solution expression.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from ldm_np.exercises import probes
from ldm_np.gradcheck import TOLERANCE
from ldm_np.optim import Adam, AdamW
from ldm_np.schedules import make_schedule

EXPECTED = Path(__file__).resolve().parent / "data" / "graded_exercises.npz"
S10 = make_schedule(10, 0.1, 0.9, "linear", dtype="float64")  # a short schedule: every step matters
S1000 = make_schedule(1000, 1e-4, 0.02, "linear", dtype="float64")


def fixed(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Fixed float64 inputs: the same on every machine (NumPy's PCG64 stream is stable)."""
    return np.random.default_rng(seed).standard_normal(shape)


# --------------------------------------------------------------------------
# Gradient exercises: finite differences, with an explanation per gradient
# --------------------------------------------------------------------------


def assert_gradients(report: probes.GradientReport) -> None:
    if not report.error < TOLERANCE:
        pytest.fail(
            f"{report.exercise}: gradients against finite differences (tolerance {TOLERANCE:.0e}):\n"
            + report.explain(),
            pytrace=False,
        )


def test_dense_backward_gradients():
    assert_gradients(probes.probe_dense_backward())


def test_silu_backward_gradients():
    assert_gradients(probes.probe_silu_backward())


def test_layernorm_backward_gradients():
    assert_gradients(probes.probe_layernorm_backward())


def test_reparameterize_backward_gradients():
    assert_gradients(probes.probe_reparameterize_backward())


def test_kl_divergence_backward_gradients():
    assert_gradients(probes.probe_kl_divergence_backward())


def test_diffusion_loss_gradient():
    assert_gradients(probes.probe_diffusion_loss())


# --------------------------------------------------------------------------
# Property exercises: stored outputs on fixed inputs, smallest case first
# --------------------------------------------------------------------------
# Each case: a name, its inputs (shown when it fails) and a function of them
# giving the output to compare. Cases run from the smallest up.

Case = tuple[str, dict[str, object], Callable[..., np.ndarray]]


def adam_run(cls: type, steps: int, size: int, seed: int, dtype: str = "float64", **options) -> np.ndarray:
    """The parameters after each of ``steps`` updates: [steps, size]."""
    params = {"layer": {"w": fixed((size,), seed).astype(dtype)}}
    opt = cls(**options)
    history = []
    for k in range(steps):
        grads = {"layer": {"w": fixed((size,), seed + 100 + k).astype(dtype)}}
        opt.step(params, grads)
        history.append(params["layer"]["w"].copy())
    return np.stack(history)


def adam_cases() -> list[Case]:
    return [
        ("Adam, 1 value, 1 step", {"lr": 0.1}, lambda: adam_run(Adam, 1, 1, 0, lr=0.1)),
        ("Adam, 2 values, 3 steps", {"lr": 0.1}, lambda: adam_run(Adam, 3, 2, 1, lr=0.1)),
        (
            "Adam, 4 values, 5 steps, betas (0.8, 0.99), eps 1e-6",
            {"lr": 0.05},
            lambda: adam_run(Adam, 5, 4, 2, lr=0.05, betas=(0.8, 0.99), eps=1e-6),
        ),
        (
            "Adam with L2 weight decay 0.3, 4 values, 5 steps",
            {"lr": 0.05, "weight_decay": 0.3},
            lambda: adam_run(Adam, 5, 4, 3, lr=0.05, weight_decay=0.3),
        ),
        (
            "AdamW, decoupled weight decay 0.3, 4 values, 5 steps",
            {"lr": 0.05, "weight_decay": 0.3},
            lambda: adam_run(AdamW, 5, 4, 3, lr=0.05, weight_decay=0.3),
        ),
    ]


def q_sample_cases() -> list[Case]:
    from ldm_np.diffusion import q_sample

    def run(x0, t, noise):
        return q_sample(S1000, x0, t, noise)

    x0, noise = fixed((1, 2), 10), fixed((1, 2), 11)
    x0_b, noise_b = fixed((3, 2), 12), fixed((3, 2), 13)
    return [
        ("one row, int t = 10", {"x0": x0, "t": 10, "noise": noise}, lambda: run(x0, 10, noise)),
        ("one row, t = 0", {"x0": x0, "t": 0, "noise": noise}, lambda: run(x0, 0, noise)),
        (
            "three rows, t = [0, 500, 999]",
            {"x0": x0_b, "t": np.array([0, 500, 999]), "noise": noise_b},
            lambda: run(x0_b, np.array([0, 500, 999]), noise_b),
        ),
    ]


def ddpm_cases() -> list[Case]:
    from ldm_np.samplers import ddpm_step

    def run(t, variance_type="fixed_small", prediction_type="epsilon", rows=1, seed=20):
        out, x_t, noise = fixed((rows, 2), seed), fixed((rows, 2), seed + 1), fixed((rows, 2), seed + 2)
        x_prev, x0_hat = ddpm_step(S10, out, t, x_t, noise, variance_type, prediction_type)
        return np.concatenate([x_prev, x0_hat], axis=1)

    def case(name, **kw):
        return (name, {"schedule": "10 steps, betas 0.1..0.9", **kw}, lambda: run(**kw))

    return [
        case("one row, t = 4", t=4),
        case("one row, t = 0 (no noise is added)", t=0),
        case("one row, t = 4, fixed_large variance", t=4, variance_type="fixed_large"),
        case("one row, t = 7, v-prediction", t=7, prediction_type="v"),
        case("three rows, t = [9, 5, 0]", t=np.array([9, 5, 0]), rows=3),
    ]


def ddim_cases() -> list[Case]:
    from ldm_np.samplers import ddim_step

    def run(
        t, t_prev, eta=0.0, prediction_type="epsilon", final_alpha_cumprod=1.0, clip=None, rows=1, seed=30
    ):
        out, x_t, noise = fixed((rows, 2), seed), fixed((rows, 2), seed + 1), fixed((rows, 2), seed + 2)
        x_prev, x0_hat = ddim_step(
            S10, out, t, t_prev, x_t, eta, noise, prediction_type, final_alpha_cumprod, clip
        )
        return np.concatenate([x_prev, x0_hat], axis=1)

    def case(name, **kw):
        return (name, {"schedule": "10 steps, betas 0.1..0.9", **kw}, lambda: run(**kw))

    return [
        case("one row, t = 7 -> 3, eta = 0", t=7, t_prev=3),
        case("one row, t = 7 -> 3, eta = 0.6", t=7, t_prev=3, eta=0.6),
        case("one row, t = 7 -> 6, eta = 1", t=7, t_prev=6, eta=1.0),
        case("one row, last step t = 2 -> -1, final alpha_bar 0.9", t=2, t_prev=-1, final_alpha_cumprod=0.9),
        case("one row, t = 5 -> 1, v-prediction, eta = 0.3", t=5, t_prev=1, eta=0.3, prediction_type="v"),
        case(
            "one row, t = 7 -> 3, eta = 0.6, x0_hat clipped to [-0.5, 0.5]", t=7, t_prev=3, eta=0.6, clip=0.5
        ),
        case(
            "three rows, t = [9, 6, 3] -> [6, 3, -1], eta = 0.5",
            t=np.array([9, 6, 3]),
            t_prev=np.array([6, 3, -1]),
            eta=0.5,
            rows=3,
        ),
    ]


def diffusion_loss_cases() -> list[Case]:
    from ldm_np.diffusion import diffusion_loss

    def run(prediction_type, gamma=None):
        out, x0, noise = fixed((4, 3), 40), fixed((4, 3), 41), fixed((4, 3), 42)
        t = np.array([0, 100, 300, 999])
        loss, _ = diffusion_loss(S1000, out, x0, noise, t, prediction_type, gamma)
        return np.asarray(loss)

    cases = []
    for prediction_type in ("epsilon", "sample", "v"):
        for gamma in (None, 5.0):
            name = f"4 rows, t = [0, 100, 300, 999], {prediction_type}" + (", min-SNR 5" if gamma else "")
            cases.append(
                (
                    name,
                    {"prediction_type": prediction_type, "gamma": gamma},
                    lambda p=prediction_type, g=gamma: run(p, g),
                )
            )
    return cases


def latent_scale_factor_cases() -> list[Case]:
    from ldm_np.pipeline import latent_scale_factor

    z1, z2 = 3.0 * fixed((5, 2), 50), 0.2 * fixed((40, 8), 51) + 1.0
    return [
        ("5 latents of size 2, spread about 3", {"z": z1}, lambda: np.asarray(latent_scale_factor(z1))),
        (
            "40 latents of size 8, spread about 0.2, mean 1",
            {"z": z2},
            lambda: np.asarray(latent_scale_factor(z2)),
        ),
    ]


def guide_cases() -> list[Case]:
    from ldm_np.guidance import guide

    cond, uncond = fixed((1, 2), 60), fixed((1, 2), 61)
    cond3, uncond3 = fixed((3, 4), 62), fixed((3, 4), 63)
    return [
        (f"one row, w = {w}", {"cond": cond, "uncond": uncond, "w": w}, lambda w=w: guide(cond, uncond, w))
        for w in (2.0, 0.5, 7.5)
    ] + [
        (
            "three rows, w = 3",
            {"cond": cond3, "uncond": uncond3, "w": 3.0},
            lambda: guide(cond3, uncond3, 3.0),
        )
    ]


def rescale_guidance_cases() -> list[Case]:
    from ldm_np.guidance import rescale_guidance

    guided, cond = 3.0 * fixed((1, 4), 70), fixed((1, 4), 71)
    guided3, cond3 = 2.0 * fixed((3, 5), 72), fixed((3, 5), 73)
    return [
        (
            f"one row, phi = {phi}",
            {"guided": guided, "cond": cond, "phi": phi},
            lambda phi=phi: rescale_guidance(guided, cond, phi),
        )
        for phi in (1.0, 0.7)
    ] + [
        (
            "three rows, phi = 0.5",
            {"guided": guided3, "cond": cond3, "phi": 0.5},
            lambda: rescale_guidance(guided3, cond3, 0.5),
        )
    ]


CASES: dict[str, Callable[[], list[Case]]] = {
    "latent_scale_factor": latent_scale_factor_cases,
    "guide": guide_cases,
    "rescale_guidance": rescale_guidance_cases,
    "adam_step": adam_cases,
    "q_sample": q_sample_cases,
    "ddpm_posterior_mean": ddpm_cases,
    "ddim_step": ddim_cases,
    "diffusion_loss": diffusion_loss_cases,
}


def show(value: object) -> str:
    if isinstance(value, np.ndarray):
        return np.array2string(value, precision=6, separator=", ", suppress_small=False)
    return repr(value)


def assert_cases(exercise: str, rtol: float = 1e-9, atol: float = 1e-12) -> None:
    """Every case's output equals the stored one; the message shows the smallest failing case."""
    with np.load(EXPECTED) as stored:
        for k, (name, inputs, compute) in enumerate(CASES[exercise]()):
            expected = stored[f"{exercise}.{k}"]
            got = np.asarray(compute())
            ok = got.shape == expected.shape and np.allclose(got, expected, rtol=rtol, atol=atol)
            if ok:
                continue
            lines = [f"{exercise}: the smallest failing case is '{name}'"]
            lines += [f"  input {key} = {show(value)}" for key, value in inputs.items()]
            lines.append(f"  expected {expected.shape}: {show(expected)}")
            lines.append(f"  got      {got.shape}: {show(got)}")
            if got.shape == expected.shape and np.all(np.isfinite(got)):
                err = np.abs(got - expected).max() / max(np.abs(expected).max(), 1e-12)
                lines.append(f"  largest difference relative to the largest expected value: {err:.2e}")
            pytest.fail("\n".join(lines), pytrace=False)


def test_adam_step_on_stored_cases():
    assert_cases("adam_step")


def test_adam_first_step_moves_each_parameter_by_about_lr():
    """A property of the bias-corrected update: at t = 1, |p_1 - p_0| = lr * |g| / (|g| + eps) ~ lr."""
    steps = adam_run(Adam, 1, 5, 7, lr=0.01)
    p0 = fixed((5,), 7)
    np.testing.assert_allclose(np.abs(steps[0] - p0), 0.01, rtol=1e-6)


def test_q_sample_on_stored_cases():
    assert_cases("q_sample")


def test_ddpm_posterior_mean_on_stored_cases():
    assert_cases("ddpm_posterior_mean")


def test_ddim_step_on_stored_cases():
    assert_cases("ddim_step")


def test_diffusion_loss_on_stored_cases():
    assert_cases("diffusion_loss")


def test_latent_scale_factor_on_stored_cases():
    assert_cases("latent_scale_factor")


def test_latent_scale_factor_gives_unit_variance():
    from ldm_np.pipeline import latent_scale_factor

    z = 0.3 * fixed((200, 4), 80) - 2.0
    s = latent_scale_factor(z)
    assert isinstance(s, float), f"latent_scale_factor must return a Python float, got {type(s).__name__}"
    assert abs((s * z).std() - 1.0) < 1e-12, f"std of s * z is {(s * z).std()}, expected 1 (s = {s})"
    assert latent_scale_factor(np.ones((3, 2))) == 1.0, "latents with no spread: s must be 1"


def test_guide_on_stored_cases():
    assert_cases("guide")


def test_guide_at_w_0_and_1_is_each_prediction():
    from ldm_np.guidance import guide

    cond, uncond = fixed((3, 4), 90), fixed((3, 4), 91)
    np.testing.assert_array_equal(
        guide(cond, uncond, 0.0), uncond, err_msg="w = 0: the unconditional prediction"
    )
    np.testing.assert_allclose(
        guide(cond, uncond, 1.0), cond, rtol=1e-12, err_msg="w = 1: the conditional prediction"
    )


def test_guide_keeps_float32():
    from ldm_np.guidance import guide

    cond, uncond = fixed((3, 4), 92).astype(np.float32), fixed((3, 4), 93).astype(np.float32)
    assert guide(cond, uncond, np.float64(3.0)).dtype == np.float32


def test_rescale_guidance_on_stored_cases():
    assert_cases("rescale_guidance")


def test_rescale_guidance_limits():
    from ldm_np.guidance import rescale_guidance

    guided, cond = 3.0 * fixed((3, 5), 94), fixed((3, 5), 95)
    assert rescale_guidance(guided, cond, 0.0) is guided, "phi = 0 returns guided itself"
    full = rescale_guidance(guided, cond, 1.0)
    np.testing.assert_allclose(
        full.std(axis=1), cond.std(axis=1), rtol=1e-12, err_msg="phi = 1: each row gets its cond row's std"
    )
    flat = np.ones((1, 5))
    np.testing.assert_array_equal(rescale_guidance(flat, cond[:1], 1.0), flat, err_msg="a row with no spread")


def record() -> None:
    """Write the stored outputs from this project's (the reference's) code."""
    arrays = {
        f"{exercise}.{k}": np.asarray(compute())
        for exercise, cases in CASES.items()
        for k, (_, _, compute) in enumerate(cases())
    }
    EXPECTED.parent.mkdir(exist_ok=True)
    np.savez(EXPECTED, **arrays)
    print(f"wrote {len(arrays)} stored outputs to {EXPECTED}")


if __name__ == "__main__" and "--record" in sys.argv:
    record()
