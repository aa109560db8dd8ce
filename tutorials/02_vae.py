# %% [markdown]
# # Tutorial 2: the variational autoencoder
#
# A latent diffusion model does not diffuse images directly: it first learns
# a small latent space with a VAE, then runs diffusion there. This tutorial
# builds and trains that VAE on 8x8 handwritten digits and looks at every
# piece of its loss.
#
# **Learning goals**
#
# - Know the shapes and the job of the encoder (`x -> mu, log_var`) and the
#   decoder (`z -> x_hat`).
# - Sample the posterior with the reparameterization trick, and recognise the
#   classic bug of using the variance where the standard deviation belongs.
# - Compute the KL term in closed form and confirm it by Monte Carlo.
# - Read the VAE loss in its units (nats per sample), train a VAE, and judge
#   it by reconstructions and its latent space.
# - See how a large KL weight (beta) makes latent dimensions collapse.
#
# **Prerequisites**: Tutorial 1 (dense layers, backprop, gradient checks);
# the normal distribution and its density; what an expectation is.
#
# **How to run**: `python tutorials/02_vae.py` (about a minute on two cores),
# or cell by cell in VS Code / Jupyter (`jupytext --to notebook` converts it).
# `LDM_NP_FAST=1` runs a few-second version with shorter training.
# Figures are saved under `tutorials/figures/02_vae/`.

# %%
import math
import warnings

import matplotlib.pyplot as plt
import numpy as np
from _tutorial import pick, show

import ldm_np
from ldm_np import figures
from ldm_np.datasets import load_digits
from ldm_np.losses import kl_divergence, kl_per_dimension, mse_forward
from ldm_np.optim import Adam
from ldm_np.pipeline import ACTIVE_UNIT_THRESHOLD, LatentDiffusion
from ldm_np.training import vae_step
from ldm_np.vae import clamp_log_var_forward, reparameterize, reparameterize_forward

TUTORIAL = "02_vae"
rng = np.random.default_rng(0)

# %% [markdown]
# ## 1. The data
#
# 1,797 digits of 8x8 pixels, each a row of 64 values in [0, 1]:
# `X` is `[1797, 64]`, `labels` is `[1797]`.

# %%
X, labels = load_digits()
print(f"X: {X.shape} {X.dtype}, values in [{X.min():.1f}, {X.max():.1f}];  labels: {labels.shape}")
first = np.array([np.flatnonzero(labels == d)[0] for d in range(10)])  # one example of each digit
fig = figures.image_grid(X[first], nrows=1, title="One example of each digit (8x8 pixels)")
show(fig, TUTORIAL, "digits")

# %% [markdown]
# ## 2. Encoder and decoder
#
#     encoder:  x [B, 64] -> dense(64->h) SiLU dense(h->h) SiLU -> mu [B, L], log_var [B, L]
#     decoder:  z [B, L]  -> dense(L->h) SiLU dense(h->h) SiLU dense(h->64) -> x_hat [B, 64]
#
# The encoder does not output a code, it outputs a *distribution* over codes,
# the posterior `q(z | x) = N(mu, diag(exp(log_var)))`. It predicts the log of
# the variance so that any real number is a valid output. We use a latent of
# `L = 8` dimensions and a hidden width `h = 128`.

# %%
LATENT, HIDDEN = 8, 128
encoder = ldm_np.build_encoder(input_size=64, latent_size=LATENT, hidden_size=HIDDEN, seed=0)
decoder = ldm_np.build_decoder(input_size=64, latent_size=LATENT, hidden_size=HIDDEN, seed=1)
print(encoder)
print(decoder)
mu0, log_var0 = encoder(X[:5])  # [5, 8] each
x_hat0 = decoder(mu0)  # [5, 64]
print(f"x {X[:5].shape} -> mu {mu0.shape}, log_var {log_var0.shape};  z {mu0.shape} -> x_hat {x_hat0.shape}")

# %% [markdown]
# ## 3. Sampling the posterior: the reparameterization trick
#
# To train through a random sample `z ~ N(mu, sigma^2)` we write it as a
# deterministic function of the parameters and an independent noise:
#
#     z = mu + sigma * eps,    sigma = exp(0.5 * log_var),    eps ~ N(0, 1)
#
# Now `dz/dmu = 1` and `dz/dlog_var = 0.5 * sigma * eps`, and the randomness
# sits in `eps`, which does not depend on any parameter (Kingma & Welling,
# 2014). `ldm_np.reparameterize(mu, log_var, rng)` does this.
#
# Note the **0.5**: `exp(0.5 * log_var)` is the standard deviation.
# `exp(log_var)` is the *variance*; using it as the standard deviation is a
# classic bug (it appears in published NumPy VAEs). It raises no error. Let us
# measure what it does, with two latent dimensions, one wide and one narrow:
#
# | dimension | mu   | variance exp(log_var) | std  |
# |-----------|------|-----------------------|------|
# | 0         | 1.5  | 4.0                   | 2.0  |
# | 1         | -1.0 | 0.25                  | 0.5  |

# %%
N_DRAWS = pick(200_000, 20_000)
mu = np.tile(np.array([[1.5, -1.0]]), (N_DRAWS, 1))  # [N, 2]: every row the same posterior
log_var = np.tile(np.log(np.array([[4.0, 0.25]])), (N_DRAWS, 1))  # [N, 2]

z_good, _ = reparameterize(
    mu, log_var, np.random.default_rng(1)
)  # the library: z = mu + exp(0.5 log_var) eps

# DELIBERATELY WRONG, for comparison: the variance used as if it were the std.
eps = np.random.default_rng(1).standard_normal(mu.shape)
z_bug = mu + np.exp(log_var) * eps

print(
    f"{'dim':>3} {'mu':>6} {'var':>6} | {'mean (lib)':>10} {'var (lib)':>10} | {'mean (bug)':>10} {'var (bug)':>10}"
)
for j in range(2):
    print(
        f"{j:>3} {mu[0, j]:6.2f} {np.exp(log_var[0, j]):6.2f} | {z_good[:, j].mean():10.3f} "
        f"{z_good[:, j].var():10.3f} | {z_bug[:, j].mean():10.3f} {z_bug[:, j].var():10.3f}"
    )

# %% [markdown]
# The library's samples have the requested mean and variance. The buggy ones
# have the right mean (so a test of the mean alone passes!) but variance
# `exp(log_var)^2`: 16 instead of 4 for the wide dimension, 0.0625 instead of
# 0.25 for the narrow one. Wide posteriors get wider and narrow ones narrower.

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
for j, ax in enumerate(axes):
    m, var = mu[0, j], math.exp(log_var[0, j])
    lo, hi = m - 5 * math.sqrt(var), m + 5 * math.sqrt(var)
    bins = np.linspace(lo, hi, 81)
    ax.hist(z_good[:, j], bins=bins, density=True, alpha=0.6, label="reparameterize (exp(0.5 log_var))")
    ax.hist(z_bug[:, j], bins=bins, density=True, alpha=0.5, label="bug: exp(log_var) as std")
    grid = np.linspace(lo, hi, 400)
    ax.plot(
        grid,
        np.exp(-((grid - m) ** 2) / (2 * var)) / math.sqrt(2 * math.pi * var),
        "k",
        lw=1.5,
        label=f"target N({m:g}, {var:g})",
    )
    ax.set_title(f"dimension {j}: mu = {m:g}, variance = {var:g}")
    ax.set_xlabel("z")
    ax.set_ylabel("density")
handles, legend_labels = axes[0].get_legend_handles_labels()
fig.legend(handles, legend_labels, loc="outside lower center", ncols=3, fontsize=8)  # below, off the data
fig.suptitle("Reparameterized samples vs the target posterior")
show(fig, TUTORIAL, "reparameterization_histograms")
good_var_rel = np.abs(z_good.var(axis=0) / np.exp(log_var[0]) - 1)
bug_var_rel = np.abs(z_bug.var(axis=0) / np.exp(log_var[0]) - 1)
print(
    "relative error of the sampled variance, library:", good_var_rel.round(4), " bug:", bug_var_rel.round(2)
)

# %% [markdown]
# ## 4. The KL term, in closed form and by Monte Carlo
#
# The VAE keeps its posteriors close to the prior `p(z) = N(0, I)` with the
# Kullback-Leibler divergence. For diagonal Gaussians it has a closed form,
# summed over the `L` latent dimensions (Kingma & Welling, 2014, app. B):
#
#     KL(q || p) = -1/2 sum_j (1 + log_var_j - mu_j^2 - exp(log_var_j))      [nats]
#
# `ldm_np.losses.kl_divergence` returns it averaged over the batch. By
# definition it is also an expectation under q,
#
#     KL(q || p) = E_{z ~ q}[ log q(z) - log p(z) ],
#
# which we can estimate by drawing many `z` and averaging. The log densities
# are written out here (the library needs only the closed form):
# `log N(z; m, v) = -1/2 (log(2 pi v) + (z - m)^2 / v)`, summed over dims.

# %%
post_mu = rng.normal(0.0, 1.0, size=(1, LATENT))  # one posterior, [1, L]
post_log_var = rng.uniform(-3.0, 0.5, size=(1, LATENT))  # [1, L]
kl_closed = float(kl_divergence(post_mu, post_log_var))

M = pick(100_000, 10_000)
zs, _ = reparameterize(
    np.repeat(post_mu, M, 0), np.repeat(post_log_var, M, 0), np.random.default_rng(2)
)  # [M, L]
log_q = -0.5 * (np.log(2 * np.pi) + post_log_var + (zs - post_mu) ** 2 / np.exp(post_log_var)).sum(
    axis=1
)  # [M]
log_p = -0.5 * (np.log(2 * np.pi) + zs**2).sum(axis=1)  # [M]
terms = log_q - log_p  # [M]: one single-sample KL estimate per draw
kl_mc = terms.mean()
kl_mc_se = terms.std() / math.sqrt(M)
print(
    f"KL closed form: {kl_closed:.4f} nats;  Monte Carlo ({M:,} draws): {kl_mc:.4f} +- {kl_mc_se:.4f} (1 s.e.)"
)

counts = np.unique(np.logspace(1, math.log10(M), 60).astype(int))
running = np.cumsum(terms)[counts - 1] / counts
running_se = np.array([terms[:c].std() for c in counts]) / np.sqrt(counts)
fig, ax = plt.subplots(figsize=(7, 4), layout="constrained")
ax.semilogx(counts, running, lw=1.8, label="Monte Carlo mean of log q(z) - log p(z)")
ax.fill_between(
    counts, running - 2 * running_se, running + 2 * running_se, alpha=0.25, label="+- 2 standard errors"
)
ax.axhline(kl_closed, color="k", ls="--", label=f"closed form = {kl_closed:.3f} nats")
ax.set_xlabel("number of samples z ~ q")
ax.set_ylabel("KL estimate (nats)")
ax.set_title("KL(q || p): the Monte Carlo estimate converges to the closed form")
ax.legend()
show(fig, TUTORIAL, "kl_monte_carlo")

# %% [markdown]
# The closed form is exact and costs nothing; the Monte Carlo estimate
# wanders by `~1/sqrt(M)`. That is why VAEs with Gaussian posteriors use the
# closed form, and why its per-dimension terms, `kl_per_dimension`, can be
# read as "how much information each latent dimension carries" (section 8).
#
# ## 5. The loss, and its units
#
# One step of `ldm_np.training.vae_step` computes, for each sample, the
# negative evidence lower bound (ELBO) of a Gaussian likelihood
# `p(x | z) = N(x; x_hat(z), recon_std^2 I)`, then averages over the batch:
#
#     recon = sum_{i=1..64} (x_i - x_hat_i)^2 / (2 recon_std^2)     [nats per sample]
#     KL    = KL(q(z | x) || N(0, I)), summed over the L dims        [nats per sample]
#     loss  = recon + beta * KL
#
# With `beta = 1` this is exactly `-ELBO` up to the constant
# `(64 / 2) log(2 pi recon_std^2)` that the Gaussian's normaliser adds. Both
# terms are *sums* over dimensions, so they are in the same units (nats) and
# `beta = 1` is the exact ELBO, whatever the sizes. The balance between them
# does depend on the sizes: the reconstruction term grows with the number of
# pixels (64 here) and the KL with the number of latents, so the same
# `recon_std` gives the KL relatively less weight on a larger image. That is
# why `recon_std` (or `beta`) is tuned per data set, and why a loss that
# *averages* over pixels, as `mse_forward` does, silently changes `beta`
# (`vae_step` rescales it back to a sum).
#
# The pipeline standardises the data first (subtract each pixel's mean,
# divide by one global standard deviation), so `recon_std = 0.1` means 0.1
# standard deviations of the data. We do the same here, and check one step's
# numbers by hand.

# %%
Xs = (X - X.mean(axis=0)) / X.std()  # [1797, 64]: what LatentDiffusion.standardize computes
x_batch = Xs[:128]  # [128, 64]
eps_batch = np.random.default_rng(3).standard_normal((128, LATENT)).astype(np.float32)  # [128, L]
RECON_STD, BETA = 0.1, 1.0

# By hand, with the weights before the step:
mu_b, log_var_b = encoder.forward(x_batch)  # [128, L] each
z_b, _ = reparameterize_forward(mu_b, clamp_log_var_forward(log_var_b)[0], eps_batch)
x_hat_b = decoder.forward(z_b)  # [128, 64]
recon_by_hand = float(((x_batch - x_hat_b) ** 2).sum(axis=1).mean() / (2 * RECON_STD**2))
kl_by_hand = float(kl_divergence(mu_b, log_var_b))
per_entry_mse = float(mse_forward(x_hat_b, x_batch)[0])

out = vae_step(encoder, decoder, Adam(lr=1e-3), x_batch, eps_batch, beta=BETA, recon_std=RECON_STD)
step_loss, step_recon, step_kl = float(out["loss"]), float(out["recon"]), float(out["kl"])
gauss_const = 64 / 2 * math.log(2 * math.pi * RECON_STD**2)
print(
    f"vae_step:  loss {step_loss:.2f} = recon {step_recon:.2f} + beta * KL {step_kl:.3f}   (nats per sample)"
)
print(
    f"by hand:   recon {recon_by_hand:.2f}, KL {kl_by_hand:.3f};  per-entry MSE {per_entry_mse:.4f} "
    f"x 64 / (2 * 0.1^2) = {per_entry_mse * 64 / (2 * RECON_STD**2):.2f}"
)
print(
    f"-ELBO = loss + 64/2 log(2 pi recon_std^2) = {step_loss:.2f} + ({gauss_const:.2f}) = {step_loss + gauss_const:.2f} nats"
)

# %% [markdown]
# Before training the decoder's output is nearly constant, so the
# reconstruction term dominates: about 64 / (2 * 0.01) = 3,200 nats per unit
# of per-pixel squared error. The KL starts near 0: the untrained encoder's
# posteriors are close to N(0, I).
#
# ## 6. Training
#
# `LatentDiffusion.fit_vae` runs `vae_step` in a loop: fresh batches of 128
# and fresh `eps` every step (seeded by the step number), Adam with a short
# warm-up and cosine decay. We train only stage 1 here.

# %%
VAE_STEPS = pick(3000, 120)
model = LatentDiffusion(
    input_size=64,
    latent_size=LATENT,
    hidden_size=HIDDEN,
    vae_steps=VAE_STEPS,
    kl_weight=1.0,
    recon_std=RECON_STD,
)
model.fit_vae(X, progress=False)
print(model)
print(f"stage 1 finished: last logged loss {model.vae_state.history[-1][1]:.1f} nats per sample")
fig = figures.loss_curves({"VAE, beta = 1 (recon + KL, nats per sample)": model.vae_state.history})
show(fig, TUTORIAL, "vae_loss")

# %% [markdown]
# ## 7. Reconstructions
#
# `model.encode` maps images to their posterior means `mu(x)` (times a latent
# scale factor, still 1 before stage 2), and `model.decode` maps codes back
# to pixels, undoing the standardisation. Top rows: inputs; bottom rows:
# reconstructions, for digits the model has seen. The baseline to beat is the
# mean image, whose squared error is the data's variance.

# %%
recon = model.decode(model.encode(X))  # [1797, 64]
recon_mse = float(((recon - X) ** 2).mean())
baseline_mse = float(((X - X.mean(axis=0)) ** 2).mean())
print(
    f"reconstruction MSE per pixel: {recon_mse:.4f}   (mean-image baseline {baseline_mse:.4f}, "
    f"{recon_mse / baseline_mse:.0%} of it)"
)
show_idx = np.concatenate([first, first + 1])  # twenty digits: the first of each class and its successor
fig = figures.reconstructions(X[show_idx], recon[show_idx])
show(fig, TUTORIAL, "reconstructions")

# %% [markdown]
# The reconstructions keep each digit's identity and most of its shape, with
# some blur. Decoding codes drawn from the *prior*, `z ~ N(0, I)`, gives the
# "VAE alone" generator. Some samples are digits, many are blends: the
# encoded digits do not fill the prior evenly. Learning where they do lie is
# the diffusion model's job, in the tutorials that follow.

# %%
prior_samples = model.decode(np.random.default_rng(4).standard_normal((30, LATENT)).astype(np.float32))
fig = figures.image_grid(prior_samples, nrows=3, title="Decoded samples from the prior z ~ N(0, I)")
show(fig, TUTORIAL, "prior_samples")

# %% [markdown]
# ## 8. Beta, and posterior collapse
#
# The KL weight `beta` sets the price of information. Each latent dimension
# `j` costs `KL_j` nats per sample (`ldm_np.losses.kl_per_dimension`); it
# earns its keep only if it saves more than `beta * KL_j` nats of
# reconstruction. With a large beta, dimensions switch off: their posterior
# becomes the prior (`mu = 0`, `log_var = 0`, KL = 0) for every input and the
# decoder learns to ignore them. This is **posterior collapse**. The
# pipeline counts a dimension as *active* when its KL exceeds
# 0.01 nats and warns when fewer than half are.
#
# We train the same VAE with `beta = 300` (the only change) and compare.

# %%
BIG_BETA = 300.0
model_big = LatentDiffusion(
    input_size=64,
    latent_size=LATENT,
    hidden_size=HIDDEN,
    vae_steps=pick(2000, 120),
    kl_weight=BIG_BETA,
    recon_std=RECON_STD,
)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    model_big.fit_vae(X, progress=False)
collapse_warnings = [str(w.message) for w in caught if "posterior collapse" in str(w.message)]
for msg in collapse_warnings:
    print("warning:", msg)

# kl_per_dimension on the posteriors of the whole data set (standardised, as in training):
kl_dims = {}
for name, m in (("beta = 1", model), (f"beta = {BIG_BETA:g}", model_big)):
    mu_all, log_var_all = m.encoder.forward(m.standardize(X))  # [1797, L] each
    kl_dims[name] = np.asarray(kl_per_dimension(mu_all, log_var_all), dtype=np.float64)  # [L]
    active = int((kl_dims[name] > ACTIVE_UNIT_THRESHOLD).sum())
    print(
        f"{name:>12}: KL per dimension {np.round(kl_dims[name], 3)}  total {kl_dims[name].sum():.2f} nats, "
        f"active units {active} of {LATENT}"
    )
recon_big_mse = float(((model_big.decode(model_big.encode(X)) - X) ** 2).mean())
print(
    f"reconstruction MSE per pixel: beta = 1: {recon_mse:.4f};  beta = {BIG_BETA:g}: {recon_big_mse:.4f}  "
    f"(mean image: {baseline_mse:.4f})"
)

fig, ax = plt.subplots(figsize=(8, 4), layout="constrained")
width = 0.4
dims = np.arange(LATENT)
for k, (name, v) in enumerate(kl_dims.items()):
    ax.bar(dims + (k - 0.5) * width, np.maximum(v, 1e-5), width, label=name)
ax.axhline(ACTIVE_UNIT_THRESHOLD, color="tab:red", ls=":", lw=1.2)
ax.text(
    -0.6,
    ACTIVE_UNIT_THRESHOLD * 1.3,
    "active-unit threshold (0.01 nats)",
    color="tab:red",
    fontsize=9,
    bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8},
)
ax.set_yscale("log")
ax.set_xticks(dims)
ax.set_xlabel("latent dimension j")
ax.set_ylabel("KL_j, nats per sample (log scale)")
ax.set_ylim(top=100)  # room for the legend above the bars
ax.set_title("KL per latent dimension: a large beta switches dimensions off")
ax.legend(loc="upper center", ncols=2)
show(fig, TUTORIAL, "kl_per_dimension")

# %% [markdown]
# With `beta = 1` every dimension carries a few nats. With `beta = 300` most
# fall by two or more orders of magnitude, to (nearly) nothing, and only a
# few survive; reconstructions get much worse. A diffusion model trained on
# such latents can only ever produce what those few dimensions encode. The
# order of the dimensions means nothing (they are symmetric), only how many
# stay on.
#
# ## 9. The latent space
#
# `figures.latent_scatter` projects the 8-dimensional codes `mu(x)` on their
# first two principal components, coloured by the digit drawn. With
# `beta = 1` the classes form clusters even though the VAE never saw a label.

# %%
codes = model.encode(X)  # [1797, L]
fig = figures.latent_scatter(codes, labels, title="VAE latent means, beta = 1")
show(fig, TUTORIAL, "latent_scatter_beta1")

centres = np.stack([codes[labels == c].mean(axis=0) for c in range(10)])  # [10, L]
class_share = float(
    ((centres[labels] - codes.mean(axis=0)) ** 2).sum() / ((codes - codes.mean(axis=0)) ** 2).sum()
)
print(f"share of the latent means' variance explained by the digit class: {class_share:.2f}")

# %% [markdown]
# A plot of the means alone can mislead: what the decoder receives is a
# *sample* `z = mu + sigma * eps`. A dimension tells inputs apart only if its
# means are spread out compared with the posterior noise `sigma`. Compare, per
# model, the spread of `mu_j` across the data with the typical `sigma_j`:

# %%
spread_to_noise = {}
for name, m in (("beta = 1", model), (f"beta = {BIG_BETA:g}", model_big)):
    mu_all, log_var_all = m.encoder.forward(m.standardize(X))  # [1797, L] each
    spread = mu_all.std(axis=0)  # [L]: how far apart the inputs' codes are
    noise = np.exp(0.5 * log_var_all).mean(axis=0)  # [L]: the posterior std
    spread_to_noise[name] = float(np.median(spread / noise))
    print(
        f"{name:>12}: std of mu over the data {spread.mean():.3f}, posterior std {noise.mean():.3f}, "
        f"median ratio {spread_to_noise[name]:.2f}"
    )

# %% [markdown]
# With `beta = 1` the means are spread several times wider than the noise
# around each of them; with `beta = 300` the means are almost all the same
# and the noise, close to the prior's std of 1, drowns them. The
# information is gone, even though a PCA of the means alone (which rescales
# whatever small spread is left) could still show some structure.

# %% [markdown]
# ## Checks

# %%
# Reparameterization: the library's samples have the requested mean and variance ...
se = np.sqrt(np.exp(log_var[0]) / N_DRAWS)
assert np.all(np.abs(z_good.mean(axis=0) - mu[0]) < 5 * se), z_good.mean(axis=0)
assert np.all(good_var_rel < 0.03), good_var_rel
# ... and the variance-as-std bug gets the mean right but the variance wrong by a factor exp(log_var).
assert np.all(np.abs(z_bug.mean(axis=0) - mu[0]) < 5 * np.exp(log_var[0]) / np.sqrt(N_DRAWS))
assert np.all(bug_var_rel > 0.5), bug_var_rel
# The Monte Carlo KL agrees with the closed form within 4 standard errors.
assert abs(kl_mc - kl_closed) < 4 * kl_mc_se, (kl_mc, kl_closed, kl_mc_se)
# vae_step's numbers are what section 5 says: per-sample sums / (2 recon_std^2), plus beta * KL.
assert math.isclose(step_recon, recon_by_hand, rel_tol=1e-4), (step_recon, recon_by_hand)
assert math.isclose(step_kl, kl_by_hand, rel_tol=1e-4, abs_tol=1e-6), (step_kl, kl_by_hand)
assert math.isclose(step_loss, step_recon + BETA * step_kl, rel_tol=1e-6)
assert math.isclose(step_recon, per_entry_mse * 64 / (2 * RECON_STD**2), rel_tol=1e-4)
# The standardisation written out in section 5 is the pipeline's own.
assert np.allclose(model.standardize(X), Xs, atol=1e-5)
# Training worked: reconstructions far better than the mean image, every dimension in use.
assert recon_mse < pick(0.25, 0.6) * baseline_mse, (recon_mse, baseline_mse)
assert model.active_units == LATENT, model.kl_per_dim
# A large beta collapses the posterior: far less information, fewer active units, worse reconstructions.
assert kl_dims[f"beta = {BIG_BETA:g}"].sum() < 0.1 * kl_dims["beta = 1"].sum()
assert model_big.active_units < model.active_units
assert recon_big_mse > 2 * recon_mse
# The beta = 1 latent space is organised by digit class, and its means stand out of the posterior
# noise; after collapse the noise drowns them.
assert class_share > 0.3, class_share
assert spread_to_noise["beta = 1"] > 3, spread_to_noise
assert spread_to_noise[f"beta = {BIG_BETA:g}"] < 0.5, spread_to_noise
print("All checks passed.")

# %% [markdown]
# ## Where did the NaN come from?
#
# A learning rate far too large makes the weights overflow within a few
# steps; the loss turns NaN and training stops with `TrainingDiverged`, which
# names the step but not the layer. `with ldm_np.detect_anomaly():` checks
# every layer's output, forward and backward, and stops at the first
# non-finite one, naming the module, the layer, the pass and the step (off
# by default and free when off; on, it reads every array, so it is slow).

# %%
from ldm_np.anomaly import AnomalyError
from ldm_np.training import TrainingDiverged

tiny = {"input_size": 64, "latent_size": 8, "hidden_size": 64, "vae_steps": 40, "warmup_steps": 0}
with np.errstate(over="ignore", invalid="ignore"):  # the overflow is the point here
    try:
        LatentDiffusion(vae_lr=1e3, **tiny).fit_vae(X, progress=False, log_every=5)
    except TrainingDiverged as exc:
        print("without the detector:", exc)
    with ldm_np.detect_anomaly():
        try:
            LatentDiffusion(vae_lr=1e3, **tiny).fit_vae(X, progress=False, log_every=5)
        except AnomalyError as exc:
            anomaly_message = str(exc)
            print("with the detector:   ", anomaly_message)
# The fix: a learning rate the data can take. The same run with 1e-3 stays finite.
fixed = LatentDiffusion(vae_lr=1e-3, **tiny)
with ldm_np.detect_anomaly():
    fixed.fit_vae(X, progress=False, log_every=5)
print(f"vae_lr = 1e-3: finite all the way, last logged loss {fixed.vae_state.history[-1][1]:.4g}")
assert "dec_output" in anomaly_message and "training step" in anomaly_message
