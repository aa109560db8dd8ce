# %% [markdown]
# # Tutorial 7: guidance, steering a diffusion model after training
#
# A trained diffusion model samples from the whole data distribution. Often
# we want something narrower: a particular digit, or a digit that agrees
# with pixels we already know. *Guidance* changes the model's prediction at
# every sampler step to get there, without retraining. This tutorial trains a
# class-conditional latent diffusion model on the digits and uses it two ways:
#
# - **classifier-free guidance** (Ho & Salimans, 2022): one network predicts
#   with and without the class, and sampling extrapolates from the second
#   towards the first;
# - **reconstruction guidance through the decoder**: fill in the missing half
#   of a digit by nudging each step's estimate towards agreeing with the known
#   half, with a gradient that flows back through the VAE decoder.
#
# **Learning goals**
#
# - Train a class-conditional model with label dropout (`num_classes`,
#   `p_uncond`) and explain the null label.
# - Compute the guided prediction `eps_u + w (eps_c - eps_u)` by hand and
#   match the library's.
# - Measure the fidelity / diversity trade-off: how often samples are the
#   class asked for, and how far they are from the data, as `w` grows.
# - Inpaint in latent space with a loss defined in pixel space, and measure
#   how well the known pixels are kept.
#
# **Prerequisites**: tutorials 5 (samplers) and 6 (latent diffusion).
#
# **How to run**: `python tutorials/07_guidance.py` (two to three minutes on
# 2 CPU cores, most of it training), or cell by cell in VS Code / Jupyter
# (`jupytext --to notebook tutorials/07_guidance.py`). `LDM_NP_FAST=1` trains a
# tiny model for a few dozen steps (blurry samples, same lesson structure,
# same checks). Figures go to `tutorials/figures/07_guidance/`.

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
from _tutorial import FAST, pick, show

from ldm_np import figures
from ldm_np.datasets import load_digits
from ldm_np.diffusion import predict_x0, q_sample
from ldm_np.evaluation import split_halves
from ldm_np.evaluation.classifier import digit_feature_model
from ldm_np.evaluation.metrics import frechet_distance
from ldm_np.guidance import classifier_free_guidance_fn, guide, reconstruction_loss
from ldm_np.pipeline import LatentDiffusion

TUTORIAL = "07_guidance"
np.set_printoptions(precision=3, suppress=True)
print("fast mode" if FAST else "normal mode")

# %% [markdown]
# ## 1. A class-conditional model, trained with label dropout
#
# The denoiser gets the class as a learned embedding added to its timestep
# embedding: `eps_hat = f(z_t, t, y)`. Its label table has **11** rows: the
# 10 digits and one extra "null" label (index 10) meaning "no class". During
# training each label is replaced by the null label with probability
# `p_uncond = 0.1`, so the *same* network also learns the unconditional
# prediction `f(z_t, t, null)`. That is all classifier-free guidance needs.
#
# Stage 1 (the VAE) is exactly tutorial 6's; only stage 2 sees the labels.

# %%
X, labels = load_digits()  # [1797, 64] in [0, 1], [1797] int64
config = dict(
    latent_size=8,
    hidden_size=pick(128, 32),
    num_layers=pick(4, 1),
    vae_steps=pick(3000, 60),
    denoiser_steps=pick(2500, 60),
    warmup_steps=pick(200, 5),
    num_classes=10,
    p_uncond=0.1,
    seed=0,
)
model = LatentDiffusion(input_size=64, **config)
start = time.perf_counter()
model.fit(X, labels, progress=False)
train_seconds = time.perf_counter() - start
den = model.ema_denoiser  # the EMA weights, which sampling uses
print(model)
print(
    f"trained in {train_seconds:.1f} s; label table {den.params['label_embed']['table'].shape}, null label = {den.null_label}"
)

# %% [markdown]
# ## 2. The guided prediction, by hand
#
# With the conditional prediction `eps_c = f(z_t, t, y)` and the
# unconditional one `eps_u = f(z_t, t, null)`, classifier-free guidance uses
#
#     eps = eps_u + w (eps_c - eps_u)
#
# `w = 0` is the unconditional model, `w = 1` the conditional one, and
# `w > 1` extrapolates past the conditional prediction, away from what the
# model expects without the label. Mind the convention when reading papers:
# Ho & Salimans write `eps = (1 + w') eps_c - w' eps_u`, which is the same
# formula with `w = 1 + w'`; their `w' = 0` (plain conditional) is our
# `w = 1`, and their `w' = 1` our `w = 2`. ldm_np, the original LDM code and
# diffusers use `w` as here. (The same formula applied to `x0_hat` or
# `v` gives the same sample, because each conversion is affine in the output
# with the same coefficients for both halves.)
#
# We take a batch of noisy latents at one step, call the network twice,
# combine by hand, and compare with `classifier_free_guidance_fn`, the
# callable `model.sample(labels=..., guidance_scale=w)` hands to the sampler
# (it runs both halves as one batch of `2B` rows).

# %%
rng = np.random.default_rng(0)
B, t_step, w_demo = 6, 500, 3.0
y = np.arange(B, dtype=np.int64)  # asking for digits 0..5
z0 = model.encode(X[:B])  # [B, 8], scaled latents
t_b = np.full(B, t_step, dtype=np.int64)  # [B]
z_t = q_sample(model.schedule, z0, t_b, rng.standard_normal(z0.shape).astype(np.float32))  # [B, 8]

eps_c = den.forward(z_t, t_b, y)  # [B, 8], conditional
eps_u = den.forward(z_t, t_b, np.full(B, den.null_label))  # [B, 8], unconditional
eps_by_hand = eps_u + w_demo * (eps_c - eps_u)  # [B, 8]
cfg = classifier_free_guidance_fn(den, y, w_demo, prediction_type="epsilon", schedule=model.schedule)
eps_library = cfg(z_t, t_b)  # [B, 8]
print(f"|eps_c - eps_u| per row at t = {t_step}: {np.linalg.norm(eps_c - eps_u, axis=1)}")
print(f"by hand vs library, largest difference: {np.abs(eps_by_hand - eps_library).max():.1e}")

# %% [markdown]
# How much does the label change the prediction, along the schedule? We
# measure the gap between the two predictions for real latents noised to
# each `t`, in two units: in `eps` (what the network outputs) and in `x0_hat`
# (what the sample will become), `x0_hat = (z_t - s_t eps_hat) / a_t` with
# `a_t = sqrt(ab_t)`, `s_t = sqrt(1 - ab_t)`, so the `x0` gap is `s_t / a_t`
# times the `eps` gap.

# %%
t_grid = np.linspace(0, 999, pick(25, 6)).astype(np.int64)
n_rows = pick(300, 40)
idx = rng.integers(0, len(X), size=n_rows)
z0_all = model.encode(X[idx])  # [n_rows, 8]
gap_eps, gap_x0 = [], []
for t in t_grid:
    tt = np.full(n_rows, t, dtype=np.int64)  # [n_rows]
    zt = q_sample(model.schedule, z0_all, tt, rng.standard_normal(z0_all.shape).astype(np.float32))
    c = den.forward(zt, tt, labels[idx])  # [n_rows, 8], with the true labels
    u = den.forward(zt, tt, np.full(n_rows, den.null_label))  # [n_rows, 8]
    gap_eps.append(float(np.linalg.norm(c - u, axis=1).mean()))
    x0_gap = predict_x0(model.schedule, c, tt, zt, "epsilon") - predict_x0(
        model.schedule, u, tt, zt, "epsilon"
    )
    gap_x0.append(float(np.linalg.norm(x0_gap, axis=1).mean()))
fig, ax = plt.subplots(figsize=(6.5, 3.5), layout="constrained")
ax.semilogy(t_grid, gap_eps, "o-", label="in eps units: mean |eps_c - eps_u|")
ax.semilogy(t_grid, gap_x0, "s-", label="in x0 units: mean |x0_c - x0_u|")
ax.set_xlabel("t")
ax.set_title("What the (true) label changes in the prediction")
ax.legend()
show(fig, TUTORIAL, "label_effect")
for t, ge, gx in list(zip(t_grid, gap_eps, gap_x0))[:: max(1, len(t_grid) // 5)]:
    print(f"t = {t:>3}: |eps_c - eps_u| = {ge:.3f}, |x0_c - x0_u| = {gx:.3f}")

# %% [markdown]
# In `x0` units the label matters most at large `t`: there the latent is
# almost pure noise and the label decides what to draw. It fades towards
# `t = 0`, where the latent already shows which digit it is. In `eps` units
# the gap is small at both ends: near `t = 0` for the same reason, and at
# large `t` because `eps_hat` is almost `z_t` itself whatever the class
# (`a_t -> 0`). Guidance acts through the whole schedule, but it *decides*
# early.

# %% [markdown]
# ## 3. Same seeds, growing w
#
# One row per requested digit, one column per guidance scale; the seed (so
# `z_T`) is the same in every column. Watch each row (after a full run; fast
# mode's model is barely trained): at `w = 0` the sample ignores the request;
# at `w = 1` it mostly follows it; at larger `w` the digits get bolder and
# more prototypical.

# %%
SCALES_GRID = (0.0, 1.0, 3.0, 7.0)
asked = np.arange(10, dtype=np.int64)
by_scale = {
    w: model.sample(10, labels=asked, guidance_scale=w, seed=0, num_inference_steps=pick(50, 10))
    for w in SCALES_GRID
}
show(figures.guidance_grid(by_scale, row_labels=[f"asked {k}" for k in asked]), TUTORIAL, "guidance_grid")

# %% [markdown]
# ## 4. Fidelity versus diversity
#
# Now with numbers. For each `w` we draw `n` samples of every class from the
# same seeds and measure, with the digit classifier of tutorial 6:
#
# - **as requested**: the share the classifier reads as the class asked for
#   (`digit_feature_model().predict`);
# - **Frechet distance** to half A of the real digits in classifier features,
#   against the floor FD(half B, half A);
# - **within-class spread**: the mean feature-space distance between two
#   samples the classifier puts in the same class, divided by the same for
#   real digits (1 = as varied as the data).
#
# (`ldm_np.guidance.guidance_report` computes the first two in one call; the
# loop below spells them out.)

# %%
clf = digit_feature_model()
a_idx, b_idx = split_halves(len(X))
feats_a = clf.features(X[a_idx])
fd_floor = frechet_distance(clf.features(X[b_idx]), feats_a)


def within_class_spread(feats: np.ndarray, classes: np.ndarray) -> float:
    """Mean distance between two rows of the same class, averaged over classes: diversity."""
    out = []
    for k in np.unique(classes):
        f = feats[classes == k]  # [n_k, hidden]
        if len(f) < 2:
            continue
        d = np.sqrt(((f[:, None, :] - f[None, :, :]) ** 2).sum(-1))  # [n_k, n_k], 0 on the diagonal
        out.append(d.sum() / (len(f) * (len(f) - 1)))
    return float(np.mean(out))


real_spread = within_class_spread(clf.features(X), labels)
SCALES = pick((0.0, 1.0, 2.0, 3.0, 5.0, 7.0), (0.0, 1.0, 3.0, 7.0))
n_per_class = pick(100, 15)  # 10 n rows: more than the 128 features, for a usable FD
asked_all = np.repeat(np.arange(10, dtype=np.int64), n_per_class)  # [10 n]
rows = []
print(f"{'w':>5}{'as requested':>14}{'FD':>9}{'FD / floor':>12}{'spread':>9}{'time':>8}")
for w in SCALES:
    start = time.perf_counter()
    x = model.sample(
        len(asked_all), labels=asked_all, guidance_scale=w, seed=1, num_inference_steps=pick(50, 10)
    )
    seconds = time.perf_counter() - start
    feats, predicted = clf.features(x), clf.predict(x)  # [10 n, 128], [10 n]
    row = {
        "w": w,
        "accuracy": float((predicted == asked_all).mean()),
        "fd": frechet_distance(feats, feats_a),
        "spread": within_class_spread(feats, predicted) / real_spread,
    }
    rows.append(row)
    fd_ratio = row["fd"] / fd_floor
    print(
        f"{w:>5g}{row['accuracy']:>14.1%}{row['fd']:>9.3g}{fd_ratio:>12.2f}{row['spread']:>9.2f}{seconds:>7.1f}s"
    )
print(f"(FD floor: {fd_floor:.3g}; a classifier guess at random would score 10% as requested)")

ws = [r["w"] for r in rows]
fig, (ax_l, ax_r) = plt.subplots(1, 2, figsize=(11, 3.8), layout="constrained")
ax_l.plot(ws, [r["accuracy"] for r in rows], "o-", color="tab:green", label="as requested")
ax_l.plot(ws, [r["spread"] for r in rows], "s-", color="tab:purple", label="within-class spread (real = 1)")
ax_l.axhline(1.0, color="0.6", ls=":", lw=1)
ax_l.set_xlabel("guidance scale w")
acc_rises = rows[-1]["accuracy"] > rows[0]["accuracy"] + 0.1
spread_falls = rows[-1]["spread"] < rows[0]["spread"]
ax_l.set_title(  # the title states what this run measured, trained long enough or not
    f"As requested {'up' if acc_rises else 'flat'}, within-class spread {'down' if spread_falls else 'not down'}"
)
ax_l.legend()
ax_r.plot(ws, [r["fd"] / fd_floor for r in rows], "o-", color="tab:orange")
ax_r.axhline(1.0, color="0.6", ls=":", lw=1, label="floor (real vs real)")
ax_r.set_xlabel("guidance scale w")
ax_r.set_ylabel("Frechet distance / floor")
ax_r.set_title("Distance to the data distribution")
ax_r.legend()
show(fig, TUTORIAL, "tradeoff")

# %% [markdown]
# In a full run the pattern is the classic one (in fast mode the model has
# trained for a few dozen steps and the numbers above may show none of it;
# the figure's title says what this run measured). Guidance makes samples recognisable: the
# "as requested" share climbs from about 10% at `w = 0` (the label is
# ignored, so only chance matches) to nearly all by `w = 1` or 2. The
# distribution as a whole is closest to the data at `w = 1`, the plain
# conditional model. Past it, each class collapses towards its most typical
# look: the within-class spread falls below the data's and the Frechet
# distance climbs steeply. Which `w` is "best" depends on whether you score
# single samples (recognisable: larger `w`) or the whole distribution
# (faithful: `w` near 1).
#
# Why is `w = 0` worse than `w = 1` here, when both are "the model"? The
# unconditional prediction was trained on only `p_uncond = 10%` of the
# training steps, the conditional one on 90%: with this small training
# budget the unconditional branch is less well trained. (That is the likely
# reason, not one this tutorial measures: comparing with an unconditional
# model trained on 100% of the steps, as in tutorial 6, at the same budget
# and on the same classifier would test it.)
#
# ## 5. Guidance through the decoder: inpainting
#
# Suppose we know the top half of a digit (the first 32 pixels) and want the
# model to complete the rest. The known pixels live in *pixel* space, the
# sampler in *latent* space; the decoder connects them. Define, on a scaled
# latent `z`,
#
#     L(z) = 0.5 sum( mask * (decode(z / s) - x_known)^2 )        mask: 1 = known
#
# Its gradient `dL/dz` comes from the decoder's hand-written backward
# (`ldm_np.guidance.reconstruction_loss`). At every DDIM step the model's
# estimate `x0_hat` takes one step down `L` before the step is taken,
#
#     x0_hat <- x0_hat - lambda dL/dx0_hat
#
# with the step length chosen per sample from the curvature of `L` along the
# gradient (`guidance_strength = 1` is the minimum of the linearised loss).
# This is the reconstruction guidance of Ho et al. (2022, "Video Diffusion
# Models", eq. 8) with one approximation: their gradient is taken with
# respect to `z_t` and passes through the denoiser, and ldm_np approximates
# the denoiser's Jacobian `d x0_hat / d z_t` by `I / a_t` (eps_hat held
# fixed), so the `a_t` cancel and only the decoder is differentiated, never
# the denoiser. Chung et al. (2023, "Diffusion Posterior Sampling") keep that
# Jacobian, at the cost of a backward pass through the denoiser at every step.
#
# First the loss itself, on the VAE's own latents of some digits: it is
# small for the right latents and large for random ones.

# %%
n_inp = pick(100, 20)
targets = X[-n_inp:]  # [n, 64], digits to complete
target_labels = labels[-n_inp:]
mask = np.zeros_like(targets)  # [n, 64]
mask[:, :32] = 1.0  # top four rows of pixels known
known_std = model.standardize(targets) * mask  # the loss works in the VAE's standardised units
loss_true, dz = reconstruction_loss(model.decoder, model.encode(targets), known_std, mask, model.scale_factor)
z_rand = rng.standard_normal((n_inp, 8)).astype(np.float32)
loss_rand, _ = reconstruction_loss(model.decoder, z_rand, known_std, mask, model.scale_factor)
print(
    f"L at the encoder's latents: {float(loss_true) / n_inp:.2f} per digit; at random latents: {float(loss_rand) / n_inp:.2f}"
)
print(f"dL/dz: {dz.shape} {dz.dtype} (one gradient per row, through decoder.backward)")

# %% [markdown]
# Now inpaint: plain sampling (`guidance_strength = 0`, which ignores the
# known half) against guided sampling, from the same seed. We score the
# error on the known pixels, the error on the pixels that were filled in
# (against the real digit, which the model never saw), and whether the
# classifier reads the completion as the digit it came from.

# %%
results = {}
for strength in (0.0, 1.0):
    start = time.perf_counter()
    x_filled = model.inpaint(
        targets, mask, guidance_strength=strength, seed=0, num_inference_steps=pick(50, 10)
    )
    err = (x_filled - targets) ** 2  # [n, 64]
    results[strength] = {
        "x": x_filled,
        "known_rmse": float(np.sqrt(err[:, :32].mean())),
        "filled_rmse": float(np.sqrt(err[:, 32:].mean())),
        "same_digit": float((clf.predict(x_filled) == target_labels).mean()),
    }
    r = results[strength]
    print(
        f"guidance_strength {strength:g}: RMSE on the known half {r['known_rmse']:.3f}, "
        f"on the filled half {r['filled_rmse']:.3f}; read as the original digit {r['same_digit']:.0%} "
        f"({time.perf_counter() - start:.1f} s)"
    )

shown = 10
masked_view = targets[:shown] * mask[:shown]  # the unknown bottom half drawn blank
grid = np.concatenate([targets[:shown], masked_view, results[0.0]["x"][:shown], results[1.0]["x"][:shown]])
show(
    figures.image_grid(grid, nrows=4, row_labels=["original", "known half", "unguided", "guided"]),
    TUTORIAL,
    "inpainting",
)

# %% [markdown]
# In a full run, guided completions keep the known half (the first RMSE
# printed above drops several-fold) and, because the top half of a digit says
# a lot about the bottom half, usually complete the right digit (the share
# printed as "read as the original digit"; fast mode's barely trained model
# may show little of this). Unguided samples are just samples: any
# digit, unrelated to the known pixels.
#
# Under the hood, `model.inpaint` wraps the sampler's model callable with
# `reconstruction_guidance_fn` and runs ordinary DDIM; `labels=` and
# `guidance_scale=` combine it with classifier-free guidance. The same
# pattern (turn the model's output into `x0_hat`, move `x0_hat`, turn it back)
# works for any differentiable constraint on the decoded sample.
#
# ## Checks

# %%
# Section 2: the guided prediction is eps_u + w (eps_c - eps_u); w = 0 and w = 1 are exact.
assert np.allclose(eps_library, eps_by_hand, atol=1e-5)
assert np.array_equal(guide(eps_c, eps_u, 0.0), eps_u)
assert np.allclose(guide(eps_c, eps_u, 1.0), eps_c, atol=1e-6)
one = classifier_free_guidance_fn(den, y, 1.0, prediction_type="epsilon", schedule=model.schedule)
assert np.array_equal(one(z_t, t_b), eps_c)
# Guiding eps or x0_hat is the same (affine conversions with shared coefficients).
x0_c, x0_u = (predict_x0(model.schedule, e, t_b, z_t, "epsilon") for e in (eps_c, eps_u))
x0_guided = predict_x0(model.schedule, eps_library, t_b, z_t, "epsilon")
assert np.allclose(guide(x0_c, x0_u, w_demo), x0_guided, atol=1e-4)
# Section 3: the grid used the same seeds; shapes and dtype.
assert all(v.shape == (10, 64) and v.dtype == np.float32 for v in by_scale.values())
# Section 4: guidance raises the share of samples of the requested class and lowers diversity.
acc = {r["w"]: r["accuracy"] for r in rows}
spread = {r["w"]: r["spread"] for r in rows}
assert all(0.0 <= a <= 1.0 for a in acc.values()) and all(s > 0 for s in spread.values())
if not FAST:  # these need a trained model; fast mode trains for a few dozen steps
    assert acc[0.0] < 0.35 and acc[3.0] > 0.8 and acc[3.0] > acc[1.0] > acc[0.0]
    assert spread[7.0] < spread[1.0]
    assert results[1.0]["same_digit"] > results[0.0]["same_digit"]
# Section 5: the reconstruction loss is smaller at the true latents, and guidance keeps the known half.
assert float(loss_true) < float(loss_rand)
assert results[1.0]["known_rmse"] < 0.5 * results[0.0]["known_rmse"]
print("all checks passed")
