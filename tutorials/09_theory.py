# %% [markdown]
# # Tutorial 9: the theory behind the losses and the samplers
#
# Tutorials 2-5 used four results without proving them: the VAE's loss is a
# bound on the log-likelihood; the diffusion model's plain epsilon-MSE loss
# is a (re)weighted form of the same kind of bound; the denoiser's output is
# the **score** of the noisy data distribution (Tweedie's formula); and DDIM
# with `eta = 0` solves an ordinary differential equation, the
# **probability-flow ODE**. This tutorial derives each one and checks every
# step numerically, on examples small enough that the exact answer is known.
#
# **Learning goals**
#
# - Derive the ELBO, `log p(x) = ELBO(q) + KL(q(z | x) || p(z | x))`, and
#   check it on a linear-Gaussian model whose posterior is known.
# - Write the diffusion ELBO as a sum of Gaussian KL terms and show that each
#   is `lambda_t ||eps - eps_hat||^2`: the epsilon-MSE loss is the ELBO with
#   the weights `lambda_t` replaced by 1. Print those weights.
# - Check Tweedie's formula `E[x_0 | x_t] = (x_t + (1 - ab_t) grad log p_t(x_t)) / sqrt(ab_t)`
#   and the score `grad log p_t(x_t) = -eps_hat / sqrt(1 - ab_t)` with the
#   exact (oracle) denoiser of a finite data set, and draw the score field.
# - See DDIM with `eta = 0` as Euler's method on the probability-flow ODE:
#   the same trajectory computed both ways.
#
# **Notation** (tutorial 3): `x_0` is the data, `x_t = sqrt(ab_t) x_0 +
# sqrt(1 - ab_t) eps` for the math's steps `t = 1..T`; in code, arrays are
# indexed from 0, so the library's timestep `k` is the math's step `k + 1`.
# We write `a_t = sqrt(ab_t)` and `s_t = sqrt(1 - ab_t)`.
#
# **Prerequisites**: tutorials 2 (the VAE), 3 (the forward process), 4 (the
# loss) and 5 (the samplers and the oracle denoiser).
#
# **How to run**: `python tutorials/09_theory.py` (a few seconds), or cell by
# cell in VS Code / Jupyter (`jupytext --to notebook tutorials/09_theory.py`).
# `LDM_NP_FAST=1` uses fewer Monte Carlo samples and a coarser grid. Figures
# go to `tutorials/figures/09_theory/`.

# %%
import math

import matplotlib.pyplot as plt
import numpy as np
from _tutorial import pick, show

from ldm_np.datasets import moons
from ldm_np.losses import kl_divergence
from ldm_np.oracle import OracleDenoiser
from ldm_np.samplers import ddpm_step, inference_timesteps, sample
from ldm_np.schedules import make_schedule
from ldm_np.vae import reparameterize_forward

TUTORIAL = "09_theory"
rng = np.random.default_rng(0)

# %% [markdown]
# ## 1. The VAE's evidence lower bound
#
# A latent-variable model `p(x, z) = p(z) p(x | z)` has a likelihood
# `p(x) = integral p(x | z) p(z) dz` that we cannot compute for a neural
# decoder. For *any* distribution `q(z)` (the encoder's `q(z | x)`), Bayes'
# rule `p(z | x) = p(x, z) / p(x)` gives, taking the expectation under `q`
# of `log p(x) = log p(x, z) - log p(z | x)` and adding and subtracting
# `log q(z)`:
#
#     log p(x) = E_q[log p(x, z) - log q(z)] + E_q[log q(z) - log p(z | x)]
#              = ELBO(q)                     + KL(q(z) || p(z | x))
#
#     ELBO(q)  = E_q[log p(x | z)] - KL(q(z) || p(z))
#
# The KL term is never negative, so the ELBO is a lower bound, tight exactly
# when `q` is the true posterior. The second line is the form tutorial 2
# trains: a reconstruction term and the KL to the prior, in closed form for
# Gaussians (`ldm_np.losses.kl_divergence`).
#
# A model whose posterior is known lets us check all of it: `z ~ N(0, 1)`,
# `x | z ~ N(w z, sigma^2)`. Then `p(x) = N(0, w^2 + sigma^2)` and
# `p(z | x) = N(w x / (w^2 + sigma^2), sigma^2 / (w^2 + sigma^2))`.

# %%
w, sigma, x_obs = 1.5, 0.5, 1.2


def gauss_logpdf(x, mean, var):
    return -0.5 * math.log(2 * math.pi * var) - (x - mean) ** 2 / (2 * var)


def kl_gauss(m1, v1, m2, v2):
    """KL( N(m1, v1) || N(m2, v2) ) in one dimension."""
    return 0.5 * (math.log(v2 / v1) + (v1 + (m1 - m2) ** 2) / v2 - 1.0)


def elbo(m, v):
    """ELBO of q = N(m, v): E_q[log N(x; w z, sigma^2)] - KL(q || N(0, 1)), both in closed form."""
    expected_loglik = -0.5 * math.log(2 * math.pi * sigma**2) - ((x_obs - w * m) ** 2 + w**2 * v) / (
        2 * sigma**2
    )
    kl_prior = float(kl_divergence(np.array([[m]]), np.array([[math.log(v)]])))  # the library's KL
    return expected_loglik - kl_prior


log_px = gauss_logpdf(x_obs, 0.0, w**2 + sigma**2)
post_m, post_v = w * x_obs / (w**2 + sigma**2), sigma**2 / (w**2 + sigma**2)
print(f"log p(x) = {log_px:.6f};  posterior N({post_m:.4f}, {post_v:.4f})")
print(f"{'q = N(m, v)':>22} {'ELBO':>10} {'log p(x) - ELBO':>16} {'KL(q || posterior)':>19}")
gaps = []
for m, v in [(0.0, 1.0), (0.5, 0.3), (post_m, 0.5), (post_m, post_v)]:
    gap, kl_post = log_px - elbo(m, v), kl_gauss(m, v, post_m, post_v)
    gaps.append((gap, kl_post))
    print(f"{f'N({m:.3f}, {v:.3f})':>22} {elbo(m, v):10.6f} {gap:16.2e} {kl_post:19.2e}")

# %% [markdown]
# The gap between `log p(x)` and the ELBO is the KL to the true posterior, to
# rounding, and it vanishes when `q` is the posterior. In training, the
# expectation `E_q[log p(x | z)]` is a Monte Carlo estimate with the
# reparameterization `z = m + sqrt(v) eps` (tutorial 2), unbiased:

# %%
M = pick(200_000, 20_000)
m, v = 0.5, 0.3
z, _ = reparameterize_forward(np.full((M, 1), m), np.full((M, 1), math.log(v)), rng.standard_normal((M, 1)))
loglik = -0.5 * math.log(2 * math.pi * sigma**2) - (x_obs - w * z) ** 2 / (2 * sigma**2)  # [M, 1]
mc_elbo = loglik.mean() - float(kl_divergence(np.array([[m]]), np.array([[math.log(v)]])))
mc_se = loglik.std() / math.sqrt(M)
print(
    f"ELBO of N({m}, {v}): closed form {elbo(m, v):.5f}, Monte Carlo {mc_elbo:.5f} +- {mc_se:.5f} (one s.e.)"
)

# %% [markdown]
# ## 2. The diffusion ELBO, and the epsilon loss as a weighted form of it
#
# A diffusion model is a latent-variable model too: the latents are
# `x_1, ..., x_T`, the "encoder" is the fixed forward process `q`, and the
# decoder is the learned reverse chain `p(x_{t-1} | x_t) = N(mu_theta(x_t,
# t), sigma_t^2 I)`. The same argument, applied to the chain and grouped
# step by step (Ho et al., 2020, appendix A), gives
#
#     -log p(x_0) <= L_T + sum_{t=2..T} L_{t-1} + L_0
#     L_{t-1} = E_q[ KL( q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t) ) ]
#
# `L_T` (the last state against `N(0, I)`) has no parameters, and `L_0` is a
# decoder term. The posterior `q(x_{t-1} | x_t, x_0)` is the Gaussian of
# tutorial 5, with mean `mu~(x_t, x_0)` and variance `sigma_t^2 = beta_t (1 -
# ab_{t-1}) / (1 - ab_t)`. With the same variance in `p`, the KL of two
# Gaussians is `||mu~ - mu_theta||^2 / (2 sigma_t^2)`. Writing both means
# with `x_0 = (x_t - s_t eps) / a_t`, the true `eps` in `mu~` and the
# network's `eps_hat` in `mu_theta`, everything but the noise cancels:
#
#     mu~ - mu_theta = beta_t / (sqrt(alpha_t) s_t) (eps_hat - eps)
#     L_{t-1} = lambda_t ||eps - eps_hat||^2,   lambda_t = beta_t^2 / (2 sigma_t^2 alpha_t (1 - ab_t))
#
# and, substituting `sigma_t^2`, `lambda_t = (SNR_{t-1} / SNR_t - 1) / 2`
# with `SNR_t = ab_t / (1 - ab_t)`. The ELBO is a *weighted* sum of
# epsilon-MSEs; Ho et al.'s "simple" loss, `E_t ||eps - eps_hat||^2` with `t`
# uniform, sets every `lambda_t` to 1. We check the KL identity with the
# library's own DDPM step (its mean, with zero noise) for the true and the
# predicted noise, then print the weights.

# %%
schedule = make_schedule(1000, 1e-4, 0.02, "linear", dtype="float64")
T = schedule["num_steps"]
betas, alphas, ab = schedule["betas"], schedule["alphas"], schedule["alphas_cumprod"]
ab_prev = np.concatenate([[1.0], ab[:-1]])  # ab of the math's step t - 1, for each code timestep
snr = ab / (1 - ab)  # SNR_t at each code timestep
snr_prev = ab_prev[1:] / (1 - ab_prev[1:])  # SNR_{t-1}, from code timestep 1 on (ab_{t-1} = 1 before)
post_var = betas * (1 - ab_prev) / (1 - ab)  # sigma_t^2, 0 at code timestep 0 (the math's t = 1)
lam = np.full(T, np.nan)
lam[1:] = betas[1:] ** 2 / (2 * post_var[1:] * alphas[1:] * (1 - ab[1:]))
lam_snr = 0.5 * (snr_prev / snr[1:] - 1.0)

B, D = 6, 3
x0 = rng.standard_normal((B, D))
eps = rng.standard_normal((B, D))
eps_hat = eps + 0.3 * rng.standard_normal((B, D))  # an imperfect network
zeros = np.zeros((B, D))
kl_gaps = []
print(f"{'code t':>6} {'KL by the means':>16} {'lambda_t |eps - eps_hat|^2':>27} {'rel. diff':>10}")
for k in (1, 2, 10, 100, 500, 999):
    x_t = np.sqrt(ab[k]) * x0 + np.sqrt(1 - ab[k]) * eps
    mu_true, _ = ddpm_step(schedule, eps, k, x_t, zeros)  # the true eps recovers x0: the posterior mean
    mu_model, _ = ddpm_step(schedule, eps_hat, k, x_t, zeros)
    kl = ((mu_true - mu_model) ** 2).sum(axis=1) / (2 * post_var[k])  # [B]
    weighted = lam[k] * ((eps - eps_hat) ** 2).sum(axis=1)  # [B]
    kl_gaps.append(float(np.abs(kl / weighted - 1).max()))
    print(f"{k:>6} {kl.mean():16.6e} {weighted.mean():27.6e} {kl_gaps[-1]:10.1e}")
print(
    "lambda_t by the two formulas, largest relative difference:", f"{np.abs(lam[1:] / lam_snr - 1).max():.1e}"
)

print("\nThe ELBO's weights lambda_t for the linear schedule (the simple loss uses 1 everywhere):")
for k in (1, 2, 5, 10, 50, 100, 250, 500, 750, 999):
    print(f"  code t = {k:>3} (math t = {k + 1:>4}): lambda_t = {lam[k]:.3e}")
print(f"largest / smallest weight over the schedule: {np.nanmax(lam) / np.nanmin(lam):.0f}")

fig, ax = plt.subplots(figsize=(6.5, 3.5), layout="constrained")
ax.semilogy(np.arange(1, T), lam[1:], label=r"ELBO weight $\lambda_t$")
ax.axhline(1.0, color="k", ls=":", lw=1, label="the simple loss: 1")
ax.set_xlabel("code timestep t")
ax.set_ylabel("weight of |eps - eps_hat|^2")
ax.set_title("The epsilon loss is the ELBO with its weights set to 1")
ax.legend()
show(fig, TUTORIAL, "elbo_weights")

# %% [markdown]
# Substituting `sigma_t^2` gives `lambda_t = beta_t / (2 alpha_t (1 - ab_{t-1}))`.
# For the linear schedule it is largest at the first steps (the table: about
# 0.6 at the math's `t = 2`), falls by about a hundredfold towards the
# middle of the schedule, and rises a little again at the end, where
# `beta_t` is largest. The true ELBO puts most of its weight on the first,
# nearly clean steps; the simple loss spreads the effort evenly over `t`,
# which Ho et al. found gives better samples (and
# tutorial 4's min-SNR weights are yet another choice). Every such loss has
# the same minimiser, `eps_hat = E[eps | x_t]`, as long as each weight is
# positive: the weights decide which errors a finite network trades off, not
# what it should converge to. That minimiser is the subject of the next
# section.
#
# ## 3. Tweedie's formula and the score
#
# For `x_t = a_t x_0 + s_t eps`, the noisy distribution `p_t` is the data
# distribution, shrunk by `a_t` and blurred by a Gaussian of variance
# `s_t^2`. Tweedie's formula (Robbins, 1956; Efron, 2011) says that the best
# guess of the clean point is one gradient step up the log-density:
#
#     E[x_0 | x_t] = (x_t + s_t^2 grad log p_t(x_t)) / a_t
#
# (differentiate `p_t(x) = integral N(x; a_t x_0, s_t^2 I) p(x_0) dx_0` under
# the integral: `grad p_t(x) = E[(a_t x_0 - x) / s_t^2 | x] p_t(x)`). Since
# `x_t = a_t E[x_0 | x_t] + s_t E[eps | x_t]`, the same formula reads
#
#     grad log p_t(x_t) = -E[eps | x_t] / s_t = -eps_hat / s_t
#
# so a trained epsilon network *is* a score model, up to the factor
# `-1 / s_t`. For a finite data set, `p_t` is a mixture of `n` Gaussians we
# can evaluate exactly, and `OracleDenoiser` (tutorial 5) computes
# `E[eps | x_t]` exactly: we compare its `-eps_hat / s_t` with the gradient of
# `log p_t` by central differences, and its `x0_hat` with Tweedie's formula.

# %%
data = moons(pick(64, 32), seed=0, dtype="float64")  # [n, 2], a small toy set
oracle_eps = OracleDenoiser(data, schedule, prediction_type="epsilon")
oracle_x0 = OracleDenoiser(data, schedule, prediction_type="sample")


def log_p_t(x, k):
    """log p_t(x) for the mixture (1/n) sum_i N(x; a x_i, s^2 I): x [m, 2] -> [m]."""
    a, s2 = np.sqrt(ab[k]), 1 - ab[k]
    d2 = ((x[:, None, :] - a * data[None, :, :]) ** 2).sum(-1)  # [m, n]
    logits = -d2 / (2 * s2)
    top = logits.max(axis=1, keepdims=True)
    return (top[:, 0] + np.log(np.exp(logits - top).mean(axis=1))) - np.log(2 * np.pi * s2)


def score_by_differences(x, k, h=1e-5):
    grad = np.zeros_like(x)
    for j in range(x.shape[1]):
        step = np.zeros_like(x)
        step[:, j] = h
        grad[:, j] = (log_p_t(x + step, k) - log_p_t(x - step, k)) / (2 * h)
    return grad


probe_points = 1.5 * rng.standard_normal((pick(200, 50), 2))  # [m, 2]
score_errors, tweedie_errors = {}, {}
for k in (50, 200, 500):
    t_k = np.full(len(probe_points), k)
    s_k = np.sqrt(1 - ab[k])
    score_oracle = -oracle_eps(probe_points, t_k) / s_k  # [m, 2]
    score_fd = score_by_differences(probe_points, k)
    tweedie = (probe_points + (1 - ab[k]) * score_fd) / np.sqrt(ab[k])
    score_errors[k] = float(np.abs(score_oracle - score_fd).max() / np.abs(score_fd).max())
    tweedie_errors[k] = float(np.abs(tweedie - oracle_x0(probe_points, t_k)).max())
    print(
        f"code t = {k:>3}: |-eps_hat/s - grad log p_t| / max|grad log p_t| = {score_errors[k]:.1e};  "
        f"max |Tweedie - E[x0 | x_t]| = {tweedie_errors[k]:.1e}"
    )

# %% [markdown]
# Both agree to the accuracy of the finite differences. The figure draws the
# score field `-eps_hat / s_t` as arrows over the density `p_t` at three
# noise levels: at small `t` the arrows point to the nearest data point; at
# large `t` the density is one broad blob and the arrows point to its
# centre. Sampling follows these arrows from large `t` to small.

# %%
n_grid = pick(40, 16)
lin = np.linspace(-2.5, 2.5, n_grid)
gx, gy = np.meshgrid(lin, lin)
grid = np.stack([gx.ravel(), gy.ravel()], axis=1)  # [n_grid^2, 2]
fig, axes = plt.subplots(1, 3, figsize=(13, 4.3), layout="constrained")
for ax, k in zip(axes, (20, 150, 500), strict=True):
    density = np.exp(log_p_t(grid, k)).reshape(n_grid, n_grid)
    ax.contourf(gx, gy, density, levels=20, cmap="Greys")
    field = -oracle_eps(grid, np.full(len(grid), k)) / np.sqrt(1 - ab[k])  # [n_grid^2, 2]
    length = np.linalg.norm(field, axis=1, keepdims=True)
    unit = field / np.maximum(length, 1e-12)  # direction only: lengths differ by orders of magnitude
    ax.quiver(
        grid[:, 0], grid[:, 1], unit[:, 0], unit[:, 1], color="tab:blue", scale=n_grid * 1.3, width=0.003
    )
    ax.scatter(*(np.sqrt(ab[k]) * data).T, s=6, color="tab:red", label=r"$\sqrt{\bar\alpha_t}\, x_i$")
    ax.set_title(f"code t = {k}: score direction over p_t")
    ax.set_aspect("equal")
axes[0].legend(loc="lower left", fontsize=8)
show(fig, TUTORIAL, "score_field")

# %% [markdown]
# ## 4. DDIM with eta = 0 is Euler's method on the probability-flow ODE
#
# Song et al. (2021) showed that the marginals `p_t` of the diffusion are
# also the marginals of a deterministic flow, the probability-flow ODE. In
# the variables `y = x / a_t` and `sigma = s_t / a_t` (the noise-to-signal
# ratio, `1 / sqrt(SNR)`), `y = x_0 + sigma eps`, and the ODE is simply
# (Karras et al., 2022, in their notation with the scaling `s(t) = 1`)
#
#     dy / dsigma = eps_hat(x, t) = -sigma grad_y log p(y; sigma)
#
# Divide tutorial 5's DDIM update with `eta = 0`,
# `x_prev = a_prev x0_hat + s_prev eps_hat` and `x0_hat = (x_t - s_t eps_hat) / a_t`,
# by `a_prev`:
#
#     y_prev = y_t + (sigma_prev - sigma_t) eps_hat
#
# which is exactly one Euler step of the ODE from `sigma_t` to `sigma_prev`.
# Below, the library's DDIM sampler and a hand-written Euler loop in
# `(sigma, y)` start from the same `x_T` with the same oracle denoiser and
# the same timesteps; then DDIM with more and more steps converges to the
# ODE's solution, as Euler's method does.

# %%
x_T = rng.standard_normal((pick(256, 64), 2))  # [N, 2]
N = 20
timesteps = inference_timesteps(T, N, "leading")  # code timesteps, decreasing
ddim_x, trace = sample(
    oracle_eps, schedule, len(x_T), sampler="ddim", num_inference_steps=N, eta=0.0, rng=None, x_T=x_T,
    return_trajectory=True,
)  # fmt: skip
sig = np.sqrt((1 - ab) / ab)  # sigma at each code timestep
y = x_T / np.sqrt(ab[timesteps[0]])  # y at the first visited step
euler_path = []
for i, k in enumerate(timesteps):
    sigma_next = sig[timesteps[i + 1]] if i + 1 < N else 0.0  # after the last step: ab = 1, sigma = 0
    a_k = np.sqrt(ab[k])
    y = y + (sigma_next - sig[k]) * oracle_eps(a_k * y, np.full(len(y), k))  # the ODE's Euler step
    a_next = np.sqrt(ab[timesteps[i + 1]]) if i + 1 < N else 1.0
    euler_path.append(a_next * y)  # back to x
path_gap = max(float(np.abs(e - tr.x_prev).max()) for e, tr in zip(euler_path, trace, strict=True))
print(
    f"DDIM ({N} steps) vs Euler on the probability-flow ODE: largest difference along the path {path_gap:.1e}"
)

reference_x = sample(oracle_eps, schedule, len(x_T), num_inference_steps=1000, eta=0.0, rng=None, x_T=x_T)
conv = {}
for n_steps in (10, 20, 50, 100, 200):
    x_n = sample(oracle_eps, schedule, len(x_T), num_inference_steps=n_steps, eta=0.0, rng=None, x_T=x_T)
    conv[n_steps] = float(np.sqrt(((x_n - reference_x) ** 2).sum(axis=1)).mean())
    print(f"DDIM with {n_steps:>3} steps: mean distance to the 1,000-step solution {conv[n_steps]:.4f}")

# %% [markdown]
# The two loops are the same computation written twice, so they agree to
# rounding. The distances to the 1,000-step solution shrink as the steps get
# smaller (printed above), as a discretised ODE's should. This view explains tutorial 5's
# observations: DDIM with `eta = 0` is deterministic (an ODE has one solution
# per start), it can be run backwards (`ddim_invert` integrates the same ODE
# from `sigma = 0` up), and with few steps it trades accuracy for speed the
# way any ODE solver does; higher-order solvers (Heun in Karras et al., DPM-
# Solver) take larger steps for the same error.
#
# ## Checks

# %%
# 1. log p(x) = ELBO + KL(q || posterior) for every q, and the bound is tight at the posterior.
assert all(abs(gap - kl_post) < 1e-10 for gap, kl_post in gaps)
assert abs(gaps[-1][0]) < 1e-12
assert abs(mc_elbo - elbo(m, v)) < 5 * mc_se
# 2. Each KL term of the diffusion ELBO is lambda_t |eps - eps_hat|^2, and the two formulas for lambda agree.
assert max(kl_gaps) < 1e-6
assert np.allclose(lam[1:], lam_snr, rtol=1e-8)
assert lam[1] > 50 * lam[500]  # the ELBO weights the nearly clean steps far more
# 3. The oracle's -eps_hat / s is the score of p_t, and Tweedie's formula gives its x0_hat.
assert max(score_errors.values()) < 1e-5
assert max(tweedie_errors.values()) < 1e-5
# 4. DDIM (eta = 0) is Euler's method on the probability-flow ODE, and it converges with more steps.
assert path_gap < 1e-10
assert conv[200] < conv[50] < conv[10]
print("all checks passed")
