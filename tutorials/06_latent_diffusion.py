# %% [markdown]
# # Tutorial 6: latent diffusion, end to end
#
# A latent diffusion model (Rombach et al., 2022) is two models trained one
# after the other: a VAE that compresses the data into a small latent space,
# and a diffusion model that learns to generate in that space. Sampling runs
# the diffusion sampler on latents and decodes the result. This tutorial
# trains the whole thing on the 8x8 handwritten digits with
# `ldm_np.pipeline.LatentDiffusion`, and then asks the questions that matter:
# why the latents must be rescaled, what the latent space saves (and what it
# does not), and how good the samples are against a measured floor.
#
# **Learning goals**
#
# - Train a latent diffusion model in two stages and sample from it: noise
#   `z_T [n, 8]` -> DDIM -> `z_0` -> decoder -> digit `[n, 64]`.
# - Explain the scale factor `s = 1 / std(z)`: the schedule is variance
#   preserving only for unit-variance data.
# - Count the denoiser's parameters and FLOPs in latent and in pixel space,
#   and say honestly where latent diffusion's advantage lies for an MLP.
# - Score samples with a Frechet distance in classifier-feature space
#   against the floor set by real data, and against the VAE alone.
# - See a 2-D latent space recover a 2-D shape hidden in 287 dimensions.
#
# **Prerequisites**: tutorials 2 (the VAE), 3 (the forward process), 4
# (diffusion training) and 5 (samplers).
#
# **How to run**: `python tutorials/06_latent_diffusion.py` (a minute and a half
# on 2 CPU cores, most of it training), or cell by cell in VS Code /
# Jupyter (`jupytext --to notebook tutorials/06_latent_diffusion.py`).
# `LDM_NP_FAST=1` trains tiny models for a few dozen steps, so its samples are
# blobs; the lesson's structure and its checks still run. Figures go to
# `tutorials/figures/06_latent_diffusion/`.

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
from _tutorial import FAST, pick, show

from ldm_np import figures
from ldm_np.datasets import load_digits, manifold
from ldm_np.denoiser import Denoiser
from ldm_np.diffusion import q_sample
from ldm_np.evaluation import evaluate_run, feature_spaces, format_table, score_sets, summarise
from ldm_np.optim import Adam
from ldm_np.pipeline import LatentDiffusion
from ldm_np.training import denoiser_step

TUTORIAL = "06_latent_diffusion"
np.set_printoptions(precision=3, suppress=True)
print("fast mode" if FAST else "normal mode")

# %% [markdown]
# ## 1. The data and the model
#
# 1,797 digits, each 8x8 = 64 pixels in [0, 1]: `X [1797, 64]` (float32) and
# `labels [1797]`. We train on 1,597 of them, `X_train`, and keep 200 out:
# section 7 asks whether samples copy their training digits, and only digits
# the model never saw can say how near a new digit usually comes.
#
# The model: a VAE with an 8-dimensional latent space and a sigmoid on the
# decoder's output (the pixels live in [0, 1], and so do its outputs), and a
# denoiser MLP (hidden width 128, 4 residual blocks) that works on those 8
# numbers. Everything else is the library's default: linear schedule, `T =
# 1000`, epsilon prediction, Adam with warm-up and cosine decay, EMA of the
# denoiser's weights (decay 0.999).
#
# The tutorial trains in about a minute and a half; the command line's demo
# (`python -m ldm_np demo`) trains a wider denoiser (hidden width 256) on as
# many latents: the same 12,000 VAE steps, and 1,750 denoiser steps at batch
# 512 where this tutorial takes 3,500 at batch 256.

# %%
X, labels = load_digits()  # [1797, 64] float32 in [0, 1], [1797] int64
print(f"X {X.shape} {X.dtype}, pixel range [{X.min()}, {X.max()}]; labels {labels.shape}")
held_rows = np.random.default_rng(0).permutation(len(X))[:200]  # never trained on
train_rows = np.setdiff1d(np.arange(len(X)), held_rows)
X_train = X[train_rows]  # [1597, 64]

config = dict(
    latent_size=8,
    output_activation="sigmoid",
    recon_std=0.02,
    hidden_size=pick(128, 32),
    num_layers=pick(4, 1),
    vae_steps=pick(12000, 60),
    denoiser_steps=pick(3500, 60),
    warmup_steps=pick(200, 5),
    seed=0,
)
model = LatentDiffusion(input_size=64, **config)
print(model)
print(
    f"encoder {model.encoder.num_params:,} + decoder {model.decoder.num_params:,} + denoiser {model.denoiser.num_params:,} parameters"
)

# %% [markdown]
# ## 2. Stage 1: the VAE
#
# The VAE learns `encoder: x [n, 64] -> (mu, log_var) [n, 8]` and
# `decoder: z [n, 8] -> x_hat [n, 64]`, with the loss per sample
#
#     sum_pixels (x - x_hat)^2 / (2 recon_std^2) + kl_weight * KL(q(z | x) || N(0, I))
#
# with `x_hat = sigmoid(dec_output(...))` and `recon_std = 0.02`, `kl_weight =
# 1`: the negative ELBO of a Gaussian likelihood of standard deviation 0.02, a
# third of the step between two of the digits' 17 grey levels. A model with a
# sigmoid output scales its data to [0, 1] by their minimum and range (the
# digits are there already); one with a linear output standardises them
# instead. After training, the library counts the *active* latent dimensions
# (average KL above 0.01 nats): a dimension the encoder ignores carries no
# information.

# %%
start = time.perf_counter()
model.fit_vae(X_train, progress=False)
vae_seconds = time.perf_counter() - start
print(
    f"stage 1: {config['vae_steps']} steps in {vae_seconds:.1f} s; last loss {model.vae_state.history[-1][1]:.4g}"
)
print(
    f"active latent dimensions: {model.active_units} of {config['latent_size']}; KL per dimension (nats): {np.round(model.kl_per_dim, 2)}"
)

x_rec = model.decode(model.encode(X[:20]))  # [20, 64], the round trip through the latent space
show(figures.reconstructions(X[:20], x_rec), TUTORIAL, "reconstructions")

# %% [markdown]
# ## 3. The scale factor
#
# The denoiser will be trained on latents `z_0`, noised as
#
#     z_t = sqrt(ab_t) z_0 + sqrt(1 - ab_t) eps,     Var[z_t] = ab_t Var[z_0] + (1 - ab_t)
#
# This is *variance preserving* (`Var[z_t] = 1` at every `t`) only if
# `Var[z_0] = 1`. Sampling starts from `z_T ~ N(0, I)` and the whole schedule
# was designed around unit-variance data, but nothing makes a VAE's latents
# unit-variance. So the pipeline multiplies them by `s = 1 / std(z)` before
# diffusion and divides by `s` before decoding (Stable Diffusion's 0.18215 is
# the same number for its VAE).
#
# The scale factor is set when stage 2 starts; we compute it here the same
# way, from the raw posterior means: `encode` returns `s * mu`, so with `s`
# still 1 it returns `mu` itself.

# %%
assert model.scale_factor == 1.0  # not set before stage 2
mu_raw = model.encode(X_train)  # [1597, 8], raw posterior means
raw_std = float(mu_raw.std())
print(f"raw latents: std {raw_std:.3f} overall; per dimension {mu_raw.std(axis=0)}")
print(f"scale factor s = 1 / std = {1 / raw_std:.4f}")

# %% [markdown]
# What would the schedule do to unscaled latents? Noise them at every `t`
# (with the library's `q_sample`) and measure the spread, and the
# signal-to-noise ratio `SNR(t) = ab_t Var[z_0] / (1 - ab_t)` that the
# denoiser would actually see.

# %%
schedule = model.schedule
ab = schedule["alphas_cumprod"]  # [1000]
t_grid = np.arange(0, 1000, 10)  # [100]
rng = np.random.default_rng(0)
per_t = 200
rows = mu_raw[rng.integers(0, len(mu_raw), size=len(t_grid) * per_t)]  # [20000, 8], 200 latents per t
t_rows = np.repeat(t_grid, per_t)  # [20000]
noise = rng.standard_normal(rows.shape).astype(np.float32)  # [20000, 8]
spread = {}
for name, scale in (("raw latents", 1.0), ("scaled latents (x s)", 1 / raw_std)):
    z_t = q_sample(schedule, (rows * scale).astype(np.float32), t_rows, noise)  # [2000, 8]
    spread[name] = z_t.reshape(len(t_grid), -1).std(axis=1)  # [100], std of z_t at each t
    print(
        f"{name:<22} std of z_t at t = 0: {spread[name][0]:.2f}, t = 500: {spread[name][50]:.2f}, t = 990: {spread[name][-1]:.2f}"
    )
snr_unit = ab / (1 - ab)  # [1000], what the schedule was designed for
snr_raw = raw_std**2 * snr_unit
t_half_unit = int(np.argmax(snr_unit < 1))
t_half_raw = int(np.argmax(snr_raw < 1))
print(
    f"signal and noise have equal power at t = {t_half_unit} for unit-variance latents, at t = {t_half_raw} for the raw ones"
)

fig, (ax_l, ax_r) = plt.subplots(1, 2, figsize=(11, 3.8), layout="constrained")
for name, values in spread.items():
    ax_l.plot(t_grid, values, label=name)
ax_l.axhline(1.0, color="0.5", ls="--", lw=1)
ax_l.set_xlabel("t")
ax_l.set_ylabel("std of z_t")
ax_l.set_title("Variance preserving only for unit-variance data")
ax_l.legend()
ax_r.semilogy(np.arange(1000), snr_unit, label="unit variance (what the schedule assumes)")
ax_r.semilogy(np.arange(1000), snr_raw, label=f"raw latents (std {raw_std:.2f})")
ax_r.axhline(1.0, color="0.5", ls="--", lw=1)
ax_r.set_xlabel("t")
ax_r.set_ylabel("SNR(t)")
ax_r.set_title("The SNR the denoiser sees")
ax_r.legend()
show(fig, TUTORIAL, "scale_factor")

# %% [markdown]
# With the raw latents the forward process starts at the wrong spread and
# drifts to 1, and every timestep has a different signal-to-noise ratio than
# the one the schedule was designed with: the equal-power point moves, and
# the share of training steps spent on "almost pure noise" or "almost clean"
# changes with the VAE's arbitrary scale. Multiplying by `s` restores the
# design. (Forgetting to divide by `s` before decoding is the mirror-image
# bug: see section 5.)
#
# ## 4. Stage 2: the denoiser on the scaled latents
#
# `fit_denoiser` freezes the VAE, encodes all of `X_train` once, sets
# `scale_factor`, and trains the denoiser to predict the noise in `z_t`
# (tutorial 4's loss) for `denoiser_steps` steps at batch 256, keeping an
# EMA of its weights for sampling.

# %%
start = time.perf_counter()
model.fit_denoiser(X_train, progress=False)
denoiser_seconds = time.perf_counter() - start
print(
    f"stage 2: {config['denoiser_steps']} steps in {denoiser_seconds:.1f} s; scale factor {model.scale_factor:.4f}"
)
z_scaled = model.encode(X_train)  # [1597, 8], now multiplied by s
print(f"std of the scaled latents: {z_scaled.std():.4f}")
show(
    figures.loss_curves(
        {"stage 1: VAE": model.vae_state.history, "stage 2: denoiser": model.denoiser_state.history}
    ),
    TUTORIAL,
    "losses",
)

# %% [markdown]
# ## 5. Sampling: noise -> latent -> digit
#
# `model.sample(n)` draws `z_T ~ N(0, I) [n, 8]`, runs DDIM with the EMA
# denoiser, divides by `s` and decodes. We ask for 200 steps, as the command
# line does (50, `sample`'s default, scores visibly further from the data:
# README, "Quality on the digits"). With `return_trajectory=True` we
# also get each step's `StepTrace` (tutorial 5); decoding each step's
# `x0_hat` shows the digit emerging.

# %%
steps = pick(200, 10)
n_samples = pick(1000, 200)
start = time.perf_counter()
samples, z0, traces = model.sample(
    n_samples, num_inference_steps=steps, seed=0, return_latents=True, return_trajectory=True
)
sample_seconds = time.perf_counter() - start
print(
    f"{n_samples} samples in {sample_seconds:.1f} s: latents {z0.shape}, digits {samples.shape} {samples.dtype}"
)

show(figures.real_vs_generated(X[:64], samples[:64]), TUTORIAL, "real_vs_generated")
picked = np.linspace(0, len(traces) - 1, 8).astype(int)
frames = [traces[i].x0_hat[:6] for i in picked]  # 8 x [6, 8] latents
show(
    figures.reverse_process(frames, [traces[i].t for i in picked], decode=model.decode),
    TUTORIAL,
    "reverse_process",
)

# %% [markdown]
# And the mirror-image bug of section 3: decode the same latents without
# dividing by `s`. The decoder then gets latents `s` times too large or too
# small. With `s < 1` (raw latents wider than unit variance) every latent is
# pulled towards 0, the centre of the latent space, and the decoder draws
# greyer, vaguer digits; with `s > 1` it overshoots into saturated ones. The
# line printed below says which case this run is in. No error message, just
# wrong digits.

# %%
wrong = model.unstandardize(model.decoder.forward(z0[:16]))  # skipped the division by s
contrast_right = float(samples[:16].std(axis=1).mean())  # mean pixel std within an image
contrast_wrong = float(wrong.std(axis=1).mean())
print(
    f"pixel contrast (std within an image): decoded from z / s {contrast_right:.3f}, from z {contrast_wrong:.3f}"
)
direction = "< 1: latents pulled towards 0" if model.scale_factor < 1 else "> 1: latents pushed outwards"
print(f"this run: s = {model.scale_factor:.3f} {direction}")
show(
    figures.image_grid(
        np.concatenate([samples[:8], wrong[:8]]), nrows=2, row_labels=["z / s (right)", "z (wrong)"]
    ),
    TUTORIAL,
    "forgot_the_scale",
)

# %% [markdown]
# ## 6. What does the latent space save? Parameters and FLOPs per step
#
# A common claim is that latent diffusion is cheaper because the denoiser
# works on 8 numbers instead of 64: cost O(latent size) instead of
# O(input size). For *this* denoiser that is not true. Its dense layers are
#
#     time_mlp_1 [h, h], z_proj [d, h], L x (up [h, 4h], down [4h, h]), noise_pred [h, d]
#
# with `d` the size it denoises. Only `z_proj` and `noise_pred` depend on
# `d`; the `L` blocks cost `8 h^2` each whatever `d` is. A training step does
# three matrix products per layer, `6 B (kernel weights)` FLOPs in all.


# %%
def denoiser_cost(d: int, hidden: int, layers: int, batch: int = 256) -> tuple[int, float]:
    """(parameters, matrix-product FLOPs of one training step) of the denoiser on d numbers."""
    den = Denoiser(d, hidden, layers, 1000)
    kernel_weights = sum(g["kernel"].size for g in den.params.values() if "kernel" in g)
    return den.num_params, 6.0 * batch * kernel_weights


h, L = config["hidden_size"], config["num_layers"]
cost_rows = [
    (f"this tutorial, latent (d = 8, h = {h})", 8, h, L),
    (f"this tutorial, pixels (d = 64, h = {h})", 64, h, L),
    ("Edifice, latent (d = 32, h = 256)", 32, 256, 4),
    ("Edifice, full (d = 287, h = 256)", 287, 256, 4),
]
costs = {}
print(f"{'denoiser':<44}{'parameters':>12}{'GFLOP/step (B=256)':>20}")
for name, d, hh, LL in cost_rows:
    costs[name] = denoiser_cost(d, hh, LL)
    print(f"{name:<44}{costs[name][0]:>12,}{costs[name][1] / 1e9:>20.3f}")
ratio_ours = costs[cost_rows[1][0]][1] / costs[cost_rows[0][0]][1]
ratio_seed = costs[cost_rows[3][0]][1] / costs[cost_rows[2][0]][1]
print(
    f"pixels / latent FLOPs: {ratio_ours:.2f}x here, {ratio_seed:.2f}x for Edifice's LatentDiffusion, 287 vs 32"
)

# A measurement, to match the count (medians of a few steps; noisy on a busy machine).
step_ms = {}
for d in (8, 64):
    den = Denoiser(d, h, L, 1000, seed=0)
    opt = Adam(lr=1e-3)
    r = np.random.default_rng(0)
    z = r.standard_normal((256, d)).astype(np.float32)
    t = r.integers(0, 1000, size=256)
    e = r.standard_normal((256, d)).astype(np.float32)
    denoiser_step(den, opt, schedule, z, t, e)  # warm-up
    times = []
    for _ in range(pick(7, 2)):
        t0 = time.perf_counter()
        denoiser_step(den, opt, schedule, z, t, e)
        times.append(time.perf_counter() - t0)
    step_ms[d] = 1e3 * float(np.median(times))
print(f"measured training step at batch 256: d = 8 {step_ms[8]:.1f} ms, d = 64 {step_ms[64]:.1f} ms")

# %% [markdown]
# At the full size (`h = 256`) the pixel-space denoiser costs only a few
# percent more per step; with fast mode's narrow `h = 32` the two layers that
# depend on `d` weigh more (the ratios printed above). The claim
# of Edifice's LatentDiffusion, the design ldm_np started from, that the cost
# is O(latent) instead of O(input), holds for networks whose width
# grows with the input (convolutional U-Nets on large images, where the
# latent space is 48x smaller); for an MLP the hidden width sets the bill.
#
# So where is the gain? In **quality per training budget**: the VAE has
# already done the hard part (which pixels move together), and the denoiser
# only has to model an 8-dimensional distribution. This tutorial does not
# measure that: it would mean training the same denoiser on the 64 pixels
# with the same budget and scoring it as in section 7 (a good exercise:
# `build_denoiser(latent_size=64, ...)` on the standardised pixels). When
# ldm_np was designed, a PyTorch model of the same architecture trained that
# way on 2 CPU cores gave samples about twice as far from the data as latent
# diffusion; read it as a claim to check, not as a result shown here.
#
# ## 7. How good are the samples? Against the floor
#
# A number means little alone. `ldm_np.evaluation.evaluate_run` is the
# evaluation the command line's `evaluate` prints, built so that it cannot
# flatter the samples:
#
# - the **floor**: the Frechet distance between two disjoint random halves of
#   the real digits, what a perfect generator of the same size would score,
#   over 5 random splits (its spread is the table's first line);
# - **matched sizes**: every set compared holds as many rows as a real half
#   (898), because the Frechet distance of finite samples is biased upwards
#   by about d(d + 1) / (2n);
# - **3 sample seeds**, each scored against every split: the mean and spread;
# - **two feature spaces that share nothing**: a small digit classifier's
#   features (the role Inception plays in FID) and the pixels through PCA;
# - **k-NN precision and recall** (Kynkaanniemi et al., 2019): the share of
#   samples inside the real digits' manifold, and of real digits inside the
#   samples';
# - **memorisation**: the share of samples nearer a training digit than the
#   5th percentile of the held-out digits' distances (5% for real data). That
#   threshold is a quantile of only 200 distances, so the rate carries a
#   spread of its own, about 1.5 points (the table's bootstrap line);
# - the **ceiling**: the VAE's reconstructions of real digits, scored the same
#   way. Samples pass through the same decoder, so they cannot beat it.
#
# A baseline makes the numbers mean more: the VAE alone, decoding
# `z ~ N(0, I)` in the raw latent space (no diffusion), scored on the same
# splits with `score_sets`.

# %%
report = evaluate_run(model, X, train_rows, held_rows, dataset="digits", num_inference_steps=steps)
print(format_table(report))
summary = summarise(report)

size = report["size"]  # 898: rows in every set compared
vae_only = [  # decode() divides by s: the decoder sees z ~ N(0, I) itself
    model.decode(
        np.random.default_rng(seed).standard_normal((size, 8)).astype(np.float32) * model.scale_factor
    )
    for seed in range(3)
]
prior = score_sets({"VAE alone": vae_only}, X, feature_spaces("digits", X_train), size=size)

fig, axes = plt.subplots(1, 2, figsize=(10, 3.4), layout="constrained")
for ax, space in zip(axes, report["spaces"]):
    floor = float(np.mean(prior[space]["real"]["fd"]))  # the same splits as the report's
    names = [
        "real half\n(the floor)",
        "VAE recon-\nstructions",
        "latent\ndiffusion",
        "VAE alone\nz ~ N(0, I)",
    ]
    rows = [summary[space][k]["ratio"] for k in ("real", "VAE reconstructions", "samples")]
    rows.append(
        (
            np.mean(prior[space]["VAE alone"]["fd"]) / floor,
            np.std(prior[space]["VAE alone"]["fd"], ddof=1) / floor,
        )
    )
    ax.bar(names, [m for m, _ in rows], yerr=[sd for _, sd in rows], capsize=4,
           color=["tab:blue", "tab:green", "tab:orange", "0.6"])  # fmt: skip
    ax.axhline(1.0, color="k", lw=0.8, ls="--")
    ax.set_yscale("log")
    ax.set_title(space)
axes[0].set_ylabel("Frechet distance / real floor")
show(fig, TUTORIAL, "quality")

# %% [markdown]
# Are the samples new digits, or copies? Each sample above its nearest
# training digit, with the pixel distance between them:

# %%
show(figures.nearest_neighbours(samples, X_train), TUTORIAL, "nearest_training")

# %% [markdown]
# The VAE's prior `N(0, I)` is not where its encoder put the digits (the
# aggregate posterior is lumpy, with holes, and not even unit-scale: section
# 3), so decoding prior samples gives many non-digits, far above the floor in
# both feature spaces. The diffusion model learns the actual distribution of
# the latents, holes included: that is the whole point of the second stage.
# The ceiling says how much of the remaining gap is the VAE's: samples can
# come no nearer the floor than the reconstructions do. And the pairs above
# show relatives of training digits, not copies (the memorisation line of the
# table puts a number on it).
#
# ## 8. A 2-D shape hidden in 287 dimensions
#
# `ldm_np.datasets.manifold` draws points of a 2-D shape (a swiss roll) and
# lifts them into 287 dimensions with a fixed smooth map: `X_m [n, 287]`,
# every feature with mean about 0 and variance about 1, and the true 2-D
# coordinates `coords [n, 2]` returned alongside. A VAE with a **2-D** latent
# space, trained on `X_m` alone, has to discover the shape. We compare its
# latents with the truth: visually, and by how many of each point's 10
# nearest neighbours in the true coordinates are also among its 10 nearest
# neighbours in latent space (chance: 10 / n).

# %%
n_m = pick(2000, 300)
X_m, coords = manifold(n_m, dim=287, shape="swiss_roll", seed=0)  # [n, 287], [n, 2]
print(
    f"X_m {X_m.shape}: feature means within {np.abs(X_m.mean(0)).max():.2f} of 0, stds {X_m.std(0).min():.2f}..{X_m.std(0).max():.2f}"
)
vae_2d = LatentDiffusion(
    input_size=287,
    latent_size=2,
    hidden_size=pick(128, 32),
    vae_steps=pick(1500, 60),
    warmup_steps=pick(100, 5),
    seed=0,
)
start = time.perf_counter()
vae_2d.fit_vae(X_m, progress=False)
print(
    f"2-D VAE: {vae_2d.config.vae_steps} steps in {time.perf_counter() - start:.1f} s; active dimensions {vae_2d.active_units} of 2"
)
z_m = vae_2d.encode(X_m)  # [n, 2]
rel_err = float(np.sqrt(((vae_2d.decode(z_m) - X_m) ** 2).mean()) / X_m.std())
print(f"reconstruction error through 2 numbers: {rel_err:.1%} of the data's spread")


def neighbours(points: np.ndarray, k: int = 10) -> np.ndarray:
    """Indices of each row's k nearest other rows: [n, k]."""
    d2 = ((points[:, None, :] - points[None, :, :]) ** 2).sum(-1)  # [n, n]
    np.fill_diagonal(d2, np.inf)
    return np.argsort(d2, axis=1)[:, :k]


nb_true, nb_latent = neighbours(coords), neighbours(z_m)
overlap = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(nb_true, nb_latent)]))
print(f"10-nearest-neighbour overlap, latent vs true coordinates: {overlap:.0%} (chance {10 / n_m:.1%})")

roll = np.linalg.norm(coords, axis=1)  # position along the roll, for the colours
fig, (ax_l, ax_r) = plt.subplots(1, 2, figsize=(10, 4.3), layout="constrained")
ax_l.scatter(coords[:, 0], coords[:, 1], c=roll, s=4, cmap="viridis")
ax_l.set_title("True 2-D coordinates (never shown to the VAE)")
ax_r.scatter(z_m[:, 0], z_m[:, 1], c=roll, s=4, cmap="viridis")
ax_r.set_title(f"VAE latents from the 287-D data ({overlap:.0%} neighbours kept)")
for ax in (ax_l, ax_r):
    ax.set_aspect("equal", adjustable="datalim")
show(fig, TUTORIAL, "manifold_latents")

# %% [markdown]
# Same colour, same place along the roll: the colours run in the same order
# through the latent space, so the VAE found the roll's one long direction
# and its width. It may tear or bend the roll (a VAE preserves neighbourhoods,
# not distances or global shape), which is why we score neighbourhoods. Note
# also the latents' spread: the reconstruction term on 287 features
# outweighs the KL term, so these raw latents are far from unit variance,
# which is exactly what section 3's scale factor is for.

# %%
print(f"raw 2-D latents: std {z_m.std():.2f} (the scale factor stage 2 would use: {1 / z_m.std():.3f})")

# %% [markdown]
# ## Checks

# %%
# The scale factor is 1 / std of the raw latents, and makes the latents unit-variance.
assert np.isclose(model.scale_factor, 1.0 / raw_std, rtol=1e-5)
assert np.isclose(float(z_scaled.std()), 1.0, atol=1e-3)
# q_sample is variance preserving for the scaled latents, not for the raw ones (unless std is 1).
assert np.all(np.abs(spread["scaled latents (x s)"] - 1.0) < 0.1)
assert abs(spread["raw latents"][0] - raw_std) < 0.15 * raw_std
# Samples: the right shapes, dtype and range (unstandardize clips to the pixel range seen in training).
assert samples.shape == (n_samples, 64) and z0.shape == (n_samples, 8) and samples.dtype == np.float32
assert samples.min() >= 0.0 and samples.max() <= 1.0
assert len(traces) == steps and traces[-1].t_prev == -1
# The decoder must get z / s: skipping the division changes the digits.
assert not np.allclose(wrong, samples[:16], atol=1e-2)
if model.scale_factor < 1:  # latents pulled towards the centre: greyer digits
    assert contrast_wrong < contrast_right
# Cost: only z_proj and noise_pred depend on d, so pixel space costs a few percent more per step.
p8, f8 = costs[cost_rows[0][0]]
p64, f64 = costs[cost_rows[1][0]]
assert p64 - p8 == (64 - 8) * (2 * h + 1)  # z_proj kernel, noise_pred kernel and bias
assert 1.0 < ratio_seed < 1.1
if h >= 128:
    assert 1.0 < ratio_ours < 1.1
# Quality: every set was scored at the matched size, in both spaces; diffusion beats the VAE's
# prior and copies few digits (normal mode only: fast mode trains for a few dozen steps).
assert size == len(X) // 2 and len(report["memorisation"]) == 3  # one rate per sample seed
for space, res in prior.items():
    samples_ratio = summary[space]["samples"]["ratio"][0]
    prior_ratio = np.mean(res["VAE alone"]["fd"]) / np.mean(res["real"]["fd"])
    assert np.isfinite(samples_ratio) and samples_ratio > 0
    if not FAST:
        assert samples_ratio < prior_ratio and samples_ratio < 3
if not FAST:
    assert summary["memorisation"][0] < 0.2  # real held-out digits: 0.05
    assert overlap > 0.4
assert overlap > 5 * 10 / n_m  # far above chance even in fast mode
print("all checks passed")
