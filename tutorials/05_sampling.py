# %% [markdown]
# # Tutorial 5: sampling, one step at a time (DDPM, DDIM, and an exact denoiser)
#
# A trained diffusion model is only half of a generator: the other half is
# the **sampler**, the loop that walks from pure noise `x_T` back to a sample
# `x_0`, asking the model for its estimate at every step. Samplers are short,
# but they are where most silent bugs live (which timesteps to visit, what
# alpha to use after the last step, where the noise comes from). This
# tutorial opens the loop and checks every step by hand.
#
# To keep the sampler the only thing under study, the "model" here needs no
# training: it is the **exact** optimal denoiser of a small 2-D data set,
# computed in closed form. Whatever goes wrong below is the sampler's fault.
#
# **Learning goals**
#
# - Read a sampler's trace (`StepTrace`), recompute one DDPM step and one
#   DDIM step by hand from their equations (to float32 rounding), and
#   reproduce them bit for bit with the library's one-step functions.
# - Know the three timestep spacings (`leading`, `trailing`, `linspace`) and
#   the alpha used after the last step (`final_alpha_cumprod`), and see what
#   each choice does to the samples.
# - See memorisation happen: with the exact denoiser of a finite data set,
#   every sample lands on a training point.
# - Tell deterministic DDIM (`eta = 0`) from stochastic sampling (`eta = 1`,
#   which *is* DDPM), and run DDIM backwards (inversion) and forwards again.
#
# **Prerequisites**: tutorial 4 (the forward process, `x_t = a_t x_0 + s_t eps`,
# and the three prediction types), or `docs/conventions.md` sections 1-8.
#
# **How to run**: `python tutorials/05_sampling.py` (under a minute), or
# cell by cell in VS Code / Jupyter (`jupytext --to notebook
# tutorials/05_sampling.py` makes a notebook). `LDM_NP_FAST=1` runs a smaller
# version in a few seconds. Figures go to `tutorials/figures/05_sampling/`.

# %%
import matplotlib.pyplot as plt
import numpy as np
from _tutorial import FAST, pick, show

from ldm_np.datasets import moons
from ldm_np.evaluation.metrics import nearest_distance
from ldm_np.oracle import OracleDenoiser
from ldm_np.samplers import (
    StepTrace,
    ddim_invert,
    ddim_step,
    ddpm_step,
    inference_timesteps,
    previous_timesteps,
    sample,
)
from ldm_np.schedules import make_schedule

TUTORIAL = "05_sampling"
np.set_printoptions(precision=4, suppress=True)
print("fast mode" if FAST else "normal mode")

# %% [markdown]
# ## 1. The schedule, the data, and a model that needs no training
#
# We use DDPM's linear schedule, `T = 1000` steps, betas from 1e-4 to 0.02
# (the library default, and diffusers' default). With `ab_t =
# alphas_cumprod[t]`, the forward process is
#
#     x_t = sqrt(ab_t) x_0 + sqrt(1 - ab_t) eps,     eps ~ N(0, I)
#
# Indices as in tutorial 3: `t` here is the code's timestep, so `ab_t =
# alphas_cumprod[t]` is the math's `alpha_bar_{t+1}`. The sampler starts
# from pure noise `x_T` at code timestep `T - 1 = 999`, and its last step,
# from code timestep 0, returns `x_0`, the sample (`t_prev = -1` in the
# traces below).
#
# The data: 64 points of the two moons in 2-D, `X: [64, 2]`, float32.
#
# For a *finite* data set the best possible denoiser has a closed form.
# Given `x_t`, the posterior over "which of the n points was noised" is a
# softmax of Gaussian log-likelihoods, and the optimal estimates are its
# averages (`ldm_np.oracle.OracleDenoiser`):
#
#     w_i(x_t, t) = softmax_i( -||x_t - sqrt(ab_t) x_i||^2 / (2 (1 - ab_t)) )
#     x0_hat      = sum_i w_i x_i                          = E[x_0 | x_t]
#     eps_hat     = (x_t - sqrt(ab_t) x0_hat) / sqrt(1 - ab_t)  = E[eps | x_t]
#
# A network trained to perfection on these 64 points would output exactly
# this. It is called like any model: `oracle(x_t [B, 2], t [B]) -> eps_hat [B, 2]`.

# %%
schedule = make_schedule(1000, 1e-4, 0.02, "linear", dtype="float32")
T = schedule["num_steps"]
ab = schedule["alphas_cumprod"]  # [T], float32
X = moons(64, seed=0)  # [64, 2], float32
oracle = OracleDenoiser(X, schedule, prediction_type="epsilon")
print(oracle)

pairwise = np.sqrt(((X[:, None, :] - X[None, :, :]) ** 2).sum(-1))  # [64, 64]
np.fill_diagonal(pairwise, np.inf)
data_spacing = float(np.median(pairwise.min(axis=1)))  # median nearest-neighbour distance
print(f"data: {X.shape}, {X.dtype}; median distance between neighbouring points: {data_spacing:.3f}")
print(f"signal left at the last step: sqrt(ab_999) = {np.sqrt(ab[T - 1]):.4f}")
print(f"noise left at the first step: sqrt(1 - ab_0) = {np.sqrt(1 - ab[0]):.4f}")

# %% [markdown]
# ## 2. DDPM, step by step
#
# DDPM (Ho et al., 2020) visits every trained step `t = 999, 998, ..., 0`.
# At each one the model's output becomes `x0_hat`, and the next point is drawn
# from the Gaussian posterior `q(x_{t-1} | x_t, x_0 = x0_hat)`:
#
#     x0_hat  = (x_t - sqrt(1 - ab_t) eps_hat) / sqrt(ab_t)
#     mu      = coef1 x0_hat + coef2 x_t
#     coef1   = sqrt(ab_{t-1}) beta_t / (1 - ab_t)
#     coef2   = sqrt(alpha_t) (1 - ab_{t-1}) / (1 - ab_t)
#     x_{t-1} = mu + sigma_t z,   sigma_t^2 = beta_t (1 - ab_{t-1}) / (1 - ab_t),   z ~ N(0, I)
#
# and no `z` at `t = 0`. `sample(..., return_trajectory=True)` returns the
# samples and one `StepTrace` per step: `t`, `t_prev`, `ab` at both ends,
# the `sigma` of the noise added, the model's output, `x0_hat` and `x_prev`
# (each `[B, 2]`). Its `repr` summarises each array as shape, mean and std.

# %%
B = pick(16, 8)
SEED = 0
x0_ddpm, ddpm_trace = sample(
    oracle, schedule, B, sampler="ddpm", rng=np.random.default_rng(SEED), shape=2, return_trajectory=True
)
print(f"{len(ddpm_trace)} steps, samples {x0_ddpm.shape} {x0_ddpm.dtype}")
for i in (0, 499, 998, 999):
    print(f"step {i:>3}:", ddpm_trace[i])

# %% [markdown]
# Read the records: at `t = 999` there is almost no signal (`ab = 4e-5`), so
# `x0_hat` is close to the mean of the data and the noise added each step is
# large; at `t = 0`, `sigma = 0` (no noise) and `x_prev` *is* `x0_hat`.
#
# ### Pause at t = 500 and redo the step by hand
#
# The trace gives us `x_t` (the previous step's `x_prev`), the model output
# and the result. The one thing it does not store is the noise `z`. We do not
# need it: all randomness comes from the `rng` we passed in, in a documented
# order (`docs/conventions.md`, section 11): first `x_T`, then one noise array
# per step for `t = 999, ..., 1`. Replaying the same generator gives `z`
# exactly.

# %%
t_pause = 500
i_pause = T - 1 - t_pause  # DDPM's step i is at t = 999 - i
rec: StepTrace = ddpm_trace[i_pause]
x_t = ddpm_trace[i_pause - 1].x_prev  # [B, 2], the input of this step
assert rec.t == t_pause and rec.t_prev == t_pause - 1

replay = np.random.default_rng(SEED)
x_T_replayed = replay.standard_normal((B, 2), dtype=np.float32)  # x_T is drawn first
for _ in range(T - 1, t_pause - 1, -1):  # then one z per step, t = 999 down to t_pause
    z = replay.standard_normal((B, 2), dtype=np.float32)  # the last one drawn is t_pause's

# The equations above, in float64, from the float32 schedule values.
beta_t = np.float64(schedule["betas"][t_pause])
alpha_t = np.float64(schedule["alphas"][t_pause])
ab_t, ab_prev = np.float64(ab[t_pause]), np.float64(ab[t_pause - 1])
eps_hat = oracle(x_t, np.full(B, t_pause)).astype(np.float64)  # [B, 2], the model's output
x0_hat = (x_t - np.sqrt(1 - ab_t) * eps_hat) / np.sqrt(ab_t)  # [B, 2]
coef1 = np.sqrt(ab_prev) * beta_t / (1 - ab_t)
coef2 = np.sqrt(alpha_t) * (1 - ab_prev) / (1 - ab_t)
sigma = np.sqrt(beta_t * (1 - ab_prev) / (1 - ab_t))
x_prev_by_hand = coef1 * x0_hat + coef2 * x_t + sigma * z  # [B, 2]

print(f"t = {t_pause}: coef1 = {coef1:.5f}, coef2 = {coef2:.5f}, sigma = {sigma:.5f}")
print(f"the trace's sigma: {float(rec.sigma):.5f}")
print(f"by hand vs the sampler, largest difference: {np.abs(x_prev_by_hand - rec.x_prev).max():.2e}")
# The library's own one-step function, with the same inputs, reproduces the step bit for bit.
x_prev_lib, _ = ddpm_step(schedule, rec.model_output, t_pause, x_t, z)
print(f"ddpm_step with the replayed z equals the trace exactly: {np.array_equal(x_prev_lib, rec.x_prev)}")

# %% [markdown]
# The by-hand float64 value agrees with the float32 sampler to float32
# rounding (about 1e-7 relative); `ddpm_step` agrees bit for bit. Note that
# the sampler's x_T is the replayed one too: nothing random hides anywhere.
#
# ### When does the sampler decide?
#
# Each step's `x0_hat` is the model's current guess of the final sample.
# Plotting its distance to the sample the run finally returns shows *when*
# the sampler commits: at large `t` the guess is a blurred average of many
# training points, and it settles on one only once the noise is smaller than
# the gaps between them.

# %%
ts = np.array([r.t for r in ddpm_trace])  # [T], 999 .. 0
to_final = np.stack([np.linalg.norm(r.x0_hat - x0_ddpm, axis=1) for r in ddpm_trace])  # [T, B]
sigmas = np.array([float(r.sigma) for r in ddpm_trace])  # [T]

fig, (ax_l, ax_r) = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
ax_l.plot(X[:, 0], X[:, 1], ".", color="tab:blue", ms=5, label="training points")
for j in range(3):
    guess = np.stack([r.x0_hat[j] for r in ddpm_trace])  # [T, 2], x0_hat over time
    walk = np.stack([r.x_prev[j] for r in ddpm_trace])  # [T, 2], x_t over time
    first = j == 0  # label each kind of line once
    ax_l.plot(*walk.T, "-", lw=0.4, color="0.75", label="x_t (the noisy walk)" if first else None)
    ax_l.plot(*guess.T, "-", lw=1.2, color="tab:orange", label="x0_hat (the guess)" if first else None)
    ax_l.plot(*x0_ddpm[j], "*", color="tab:red", ms=12, label="final sample" if first else None)
ax_l.set_aspect("equal")
ax_l.legend(loc="lower left", fontsize=8)
ax_l.set_title("Three DDPM runs: x_t wanders, x0_hat homes in")
ax_r.plot(ts + 1, np.median(to_final, axis=1), label="median |x0_hat - final sample|")
ax_r.plot(ts + 1, sigmas, label="sigma_t, the noise added per step")
ax_r.axhline(data_spacing, color="0.5", ls="--", label="median spacing of the data")
ax_r.set_xscale("log")
ax_r.invert_xaxis()
ax_r.set_xlabel("t + 1 (log scale; the sampler runs left to right)")
ax_r.legend()
ax_r.set_title("When the guess settles on the final point")
show(fig, TUTORIAL, "ddpm_paths")
settled = np.median(to_final, axis=1) < 0.5 * data_spacing  # [T]
stays_settled = np.flip(np.logical_and.accumulate(np.flip(settled)))  # [T]: settled from here to the end
t_commit = int(ts[np.argmax(stays_settled)])
print(f"x0_hat stays within half the data spacing of the final sample from t = {t_commit} on")

# %% [markdown]
# With 64 points only 0.12 apart, the final choice between neighbours is made
# late (around `t = 20` here): only then is the remaining noise smaller than
# the gaps. The coarse choice (which moon, which end of it) is made much
# earlier, as the orange paths in the left panel show. A sampler that gets
# the last few steps wrong therefore blurs samples *between* points; sections
# 4 and 5 show two ways that happens.
#
# ## 3. DDIM, step by step
#
# DDIM (Song et al., 2021) can visit any decreasing list of timesteps, so it
# can take 10 steps instead of 1000. From `t` to the next listed step `t_prev`:
#
#     ab_prev = alphas_cumprod[t_prev]   (or final_alpha_cumprod after the last step: section 5)
#     sigma   = eta sqrt((1 - ab_prev) / (1 - ab_t)) sqrt(1 - ab_t / ab_prev)
#     eps_hat = (x_t - sqrt(ab_t) x0_hat) / sqrt(1 - ab_t)
#     x_prev  = sqrt(ab_prev) x0_hat + sqrt(1 - ab_prev - sigma^2) eps_hat + sigma z
#
# With `eta = 0` there is no `z`: the step rescales the two estimates to the
# noise level of `t_prev`. The whole sampler is then a deterministic function
# of `x_T`. This time we watch the steps live with a `callback`, which
# `sample` calls with each `StepTrace` as it happens.

# %%
N = 10
x_T = np.random.default_rng(1).standard_normal((B, 2), dtype=np.float32)  # [B, 2]
print(f"{'t':>4} {'t_prev':>6} {'ab_t':>9} {'ab_prev':>9} {'sigma':>6}  median |x0_hat - nearest point|")


def print_step(r: StepTrace) -> None:
    """Called by the sampler after each step: one line per step."""
    ab_now, ab_next, sig = float(r.alpha_cumprod_t), float(r.alpha_cumprod_prev), float(r.sigma)
    d = np.median(nearest_distance(r.x0_hat, X))
    print(f"{r.t:>4} {r.t_prev:>6} {ab_now:>9.2e} {ab_next:>9.2e} {sig:>6.2f}  {d:.2e}")


x0_ddim, ddim_trace = sample(
    oracle, schedule, B, sampler="ddim", num_inference_steps=N, eta=0.0, rng=None, x_T=x_T,
    callback=print_step, return_trajectory=True,
)  # fmt: skip

# %% [markdown]
# `rng=None` is allowed here because nothing random is drawn: `x_T` is given
# and `eta = 0`. Now the same pause: step 3 goes from `t = 600` to `t_prev = 500`.

# %%
r3 = ddim_trace[3]
x_t3 = ddim_trace[2].x_prev  # [B, 2]
ab3, ab3_prev = np.float64(r3.alpha_cumprod_t), np.float64(r3.alpha_cumprod_prev)
x0_hat3 = (x_t3 - np.sqrt(1 - ab3) * r3.model_output.astype(np.float64)) / np.sqrt(ab3)  # [B, 2]
eps_hat3 = (x_t3 - np.sqrt(ab3) * x0_hat3) / np.sqrt(1 - ab3)  # [B, 2]
x_prev3_by_hand = np.sqrt(ab3_prev) * x0_hat3 + np.sqrt(1 - ab3_prev) * eps_hat3  # eta = 0: no sigma
print(f"step 3: t = {r3.t} -> t_prev = {r3.t_prev}")
print(f"by hand vs the sampler, largest difference: {np.abs(x_prev3_by_hand - r3.x_prev).max():.2e}")
x_prev3_lib, _ = ddim_step(schedule, r3.model_output, r3.t, r3.t_prev, x_t3)
print(f"ddim_step equals the trace exactly: {np.array_equal(x_prev3_lib, r3.x_prev)}")

# %% [markdown]
# ## 4. Which timesteps? `leading`, `trailing`, `linspace`
#
# With `N < T` steps the sampler visits `N` of the `T` trained steps. Three
# recipes are in use (Lin et al., 2023, Table 2), written 0-based exactly as
# diffusers computes them (`docs/conventions.md`, section 2):
#
#     leading:  arange(0, N) * (T // N)         (DDIM paper, Stable Diffusion)
#     trailing: round(arange(T, 0, -T / N)) - 1  (always starts at T - 1)
#     linspace: round(linspace(0, T - 1, N))     (iDDPM)
#
# After the last listed step comes `t_prev = -1`, "the end"
# (`previous_timesteps`), never `t - T // N`.

# %%
spacings = {s: inference_timesteps(T, 10, s) for s in ("leading", "trailing", "linspace")}
for name, steps in spacings.items():
    print(f"{name:>9}: {steps.tolist()}")
print(f"previous_timesteps(linspace) = {previous_timesteps(spacings['linspace']).tolist()}")
print(f"diffusers' t - T // N would be  {(spacings['linspace'] - T // 10).tolist()}  (wrong for linspace)")
for name, steps in spacings.items():
    first, last = int(steps[0]), int(steps[-1])
    print(
        f"{name:>9}: first step t = {first:>3} keeps signal sqrt(ab) = {np.sqrt(ab[first]):.4f}; "
        f"last step jumps from t = {last:>2}, noise sqrt(1 - ab) = {np.sqrt(1 - ab[last]):.3f}"
    )

# %% [markdown]
# Two different weaknesses. `leading` starts at `t = 900`, where 1.6% of the
# signal is left, while `x_T` is pure noise (harmless here, serious with a
# schedule whose `ab` stays large: Stable Diffusion's). `trailing` starts at
# 999 but its last step jumps from `t = 99`, where the noise still has std
# 0.32, straight to the end. What does each cost on our data? Ten DDIM steps
# per spacing, from the same `x_T`:

# %%
M = pick(512, 128)
x_T_many = np.random.default_rng(2).standard_normal((M, 2), dtype=np.float32)  # [M, 2]
spacing_dist = {}
for name in spacings:
    xs = sample(oracle, schedule, M, num_inference_steps=10, spacing=name, rng=None, x_T=x_T_many)
    spacing_dist[name] = nearest_distance(xs, X)  # [M]
    print(
        f"DDIM-10, {name:>9}: median distance to the nearest training point {np.median(spacing_dist[name]):.2e}"
    )

fig, ax = plt.subplots(figsize=(9, 3.6), layout="constrained")
tt = np.arange(T)
ax.plot(tt, np.sqrt(ab), color="0.3", label="signal left, sqrt(ab_t)")
ax.plot(tt, np.sqrt(1 - ab), color="0.7", label="noise, sqrt(1 - ab_t)")
for k, (name, steps) in enumerate(spacings.items()):
    ax.plot(steps, np.full(len(steps), -0.12 - 0.1 * k), "|", ms=12, mew=2, label=f"{name}")
    ax.text(1010, -0.12 - 0.1 * k, name, va="center", fontsize=9)
ax.set_xlim(-20, 1120)
ax.set_xlabel("t")
ax.set_title("Where 10 DDIM steps land among 1000 trained steps")
ax.legend(loc="center right", bbox_to_anchor=(0.88, 0.6))
show(fig, TUTORIAL, "spacings")

# %% [markdown]
# `trailing` pays for its big last jump: from `t = 99` one step cannot undo
# noise of std 0.32, and its samples end up between training points (median
# distance about 0.1, as large as the data spacing itself). `leading` and
# `linspace` both end with a step from `t = 0`, where the noise is only 0.01.
# More steps shrink the gap (with `N = 50`, trailing's last step starts at
# `t = 19` and its median distance falls to about 0.03) without closing it.
# Whichever spacing a model was tuned with, use the same one when comparing
# numbers across libraries.
#
# ## 5. The alpha after the last step: `final_alpha_cumprod`
#
# The last DDIM step goes from the smallest listed `t` to `t_prev = -1`,
# where `alphas_cumprod` has no entry. Two conventions (diffusers'
# `set_alpha_to_one`):
#
# - `1.0` (ldm_np's default, `set_alpha_to_one=True`): the last step returns
#   `x0_hat` itself.
# - `alphas_cumprod[0] = 0.9999` (Stable Diffusion's configuration): the last
#   step lands on the noise level of `t = 0`, still `sqrt(1 - 0.9999) = 0.01`
#   of `eps_hat` away from `x0_hat`.

# %%
final_dist = {}
final_runs = {}
for label, final in (("1.0", 1.0), ("ab[0]", float(ab[0]))):
    xs, tr = sample(
        oracle, schedule, M, num_inference_steps=pick(50, 20), rng=None, x_T=x_T_many,
        final_alpha_cumprod=final, return_trajectory=True,
    )  # fmt: skip
    last = tr[-1]
    final_runs[label] = (xs, last)
    final_dist[label] = nearest_distance(xs, X)
    print(
        f"final_alpha_cumprod = {label:>5}: last step t = {last.t} -> {last.t_prev}, "
        f"ab_prev = {float(last.alpha_cumprod_prev):.4f}; "
        f"max |x_0 - x0_hat| = {np.abs(xs - last.x0_hat).max():.2e}; "
        f"median distance to data {np.median(final_dist[label]):.2e}"
    )

# %% [markdown]
# With 1.0 the sample is exactly the final `x0_hat`, on a training point;
# with `ab[0]` every sample keeps `0.01 eps_hat` of noise, a few hundredths
# here because `eps_hat` at `t = 0` is large wherever the previous step's
# guess was a little off. Small, but it is a systematic offset, and it is the
# difference between matching another library's numbers and not.
#
# ## 6. The exact denoiser memorises
#
# Because the oracle is the *optimal* denoiser of 64 points, the distribution
# it samples is those 64 points and nothing else: every sample should land on
# (numerically: within float32 rounding of) a training point. This is what a
# diffusion model trained to convergence on a finite set does (Karras et al.,
# 2022; Kadkhodaie et al., 2024); real networks generalise because they do
# *not* reach this optimum. It is also the sharpest sampler test there is: a
# systematic miss would be a sampler bug.

# %%
M_big = pick(1000, 200)
x_ddpm_big = sample(oracle, schedule, M_big, sampler="ddpm", rng=np.random.default_rng(3), shape=2)
x_ddim_big = sample(oracle, schedule, M_big, num_inference_steps=50, rng=np.random.default_rng(3), shape=2)
memo = {
    "DDPM, 1000 steps": nearest_distance(x_ddpm_big, X),
    "DDIM, 50 steps": nearest_distance(x_ddim_big, X),
    "DDIM, final ab[0]": final_dist["ab[0]"],
    "DDIM-10, trailing": spacing_dist["trailing"],
}
for name, d in memo.items():
    print(
        f"{name:<18} median {np.median(d):.2e}   share within 1e-3 of a training point: {np.mean(d < 1e-3):.1%}"
    )
hit = np.unique(((x_ddpm_big[:, None, :] - X[None]) ** 2).sum(-1).argmin(axis=1))
print(f"DDPM samples landed on {hit.size} of the {len(X)} training points")

fig, (ax_l, ax_r) = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
ax_l.plot(X[:, 0], X[:, 1], "o", color="tab:blue", ms=7, mfc="none", label="training points")
jitter = np.random.default_rng(0).normal(0, 0.03, x_ddpm_big.shape)  # only so stacked samples show
ax_l.plot(
    *(x_ddpm_big + jitter).T, ".", color="tab:orange", ms=2, alpha=0.5, label="DDPM samples (+ 0.03 jitter)"
)
ax_l.set_aspect("equal")
ax_l.legend(loc="lower left")
ax_l.set_title("Samples of the exact denoiser sit on the training points")
bins = np.logspace(-8, 0.5, 40)
for name, d in memo.items():
    ax_r.hist(np.maximum(d, 1e-8), bins=bins, histtype="step", lw=1.5, label=name)
ax_r.axvline(data_spacing, color="0.5", ls="--", label="median data spacing")
ax_r.set_xscale("log")
ax_r.set_xlabel("distance to the nearest training point (0 drawn at 1e-8)")
ax_r.set_ylabel("samples")
ax_r.legend(fontsize=8)
ax_r.set_title("nearest_distance(samples, X)")
show(fig, TUTORIAL, "memorisation")

# %% [markdown]
# Read the histogram from the left: DDPM-1000 and DDIM-50 pile up at 0 (many
# samples are *exactly* a training point in float32); the `ab[0]` variant sits
# at a few 1e-2 (the leftover noise of section 5); trailing-10 spreads out to
# about 0.1 (the big last jump of section 4). All three choices were
# invisible in the code: only a test like this one shows them.
#
# ## 7. DDIM with `eta = 0` and `eta = 1`
#
# `eta` scales the fresh noise of each DDIM step. With `eta = 0` the sampler
# is a deterministic map from noise to data; with `eta = 1` on consecutive
# steps it is exactly DDPM (`docs/conventions.md`, section 7). A picture of the
# deterministic map: colour each starting point `x_T` of a grid by the
# training point it ends on (colours as in the left panel, a qualitative
# palette so that neighbouring basins differ). With `eta = 0`
# noise space splits into clean *basins*, one per training point: wedges,
# because mostly the direction of `x_T` decides. With `eta = 1` the fresh
# noise of every step scrambles them.

# %%
g = pick(60, 24)
u = np.linspace(-3, 3, g, dtype=np.float32)
grid = np.stack(np.meshgrid(u, u), axis=-1).reshape(-1, 2)  # [g*g, 2], starting points x_T
steps_eta = pick(50, 20)


def landing_point(xs: np.ndarray) -> np.ndarray:
    """Index of the training point nearest to each sample: [n]."""
    return ((xs[:, None, :] - X[None]) ** 2).sum(-1).argmin(axis=1)


end = {}
for label, eta, seed in (
    ("eta=0", 0.0, None),
    ("eta=0 again", 0.0, None),
    ("eta=1", 1.0, 4),
    ("eta=1, other seed", 1.0, 5),
):
    rng = None if seed is None else np.random.default_rng(seed)
    end[label] = sample(
        oracle, schedule, len(grid), num_inference_steps=steps_eta, eta=eta, rng=rng, x_T=grid
    )
same_det = np.array_equal(end["eta=0"], end["eta=0 again"])
same_land = np.mean(landing_point(end["eta=1"]) == landing_point(end["eta=1, other seed"]))
same_land_det = np.mean(landing_point(end["eta=1"]) == landing_point(end["eta=0"]))
print(f"eta = 0, run twice from the same x_T: identical = {same_det}")
print(f"eta = 1, two seeds, same x_T: same training point for {same_land:.1%} of the starts")
print(f"eta = 1 vs eta = 0, same x_T: same training point for {same_land_det:.1%} of the starts")

fig, axes = plt.subplots(1, 3, figsize=(13, 4.2), layout="constrained")
# A qualitative palette: neighbouring training points (in order along the moons) get different
# colours, so neighbouring basins differ; the 20 colours repeat only far apart.
rank = np.empty(len(X), dtype=np.int64)
rank[np.argsort(X[:, 0] + 0.6 * X[:, 1])] = np.arange(len(X))
colour = rank % 20  # [n] a category per training point
palette = {"cmap": "tab20", "vmin": -0.5, "vmax": 19.5}
axes[0].scatter(X[:, 0], X[:, 1], c=colour, s=25, **palette)
axes[0].set_title("training points, coloured")
for ax, label in zip(axes[1:], ("eta=0", "eta=1")):
    ax.imshow(
        colour[landing_point(end[label])].reshape(g, g), origin="lower", extent=(-3, 3, -3, 3),
        interpolation="nearest", **palette,
    )  # fmt: skip
    ax.set_title(f"{label}: x_T coloured by where it lands")
    ax.set_xlabel("x_T[0]")
for ax in axes:
    ax.set_aspect("equal")
axes[1].set_ylabel("x_T[1]")
show(fig, TUTORIAL, "eta_basins")

# %% [markdown]
# And the claim that DDIM with `eta = 1` on all 1000 consecutive steps is
# DDPM: both draw `x_T` and then one noise array per step from the same
# generator (DDIM draws one more at the very last step, where its `sigma` is
# 0), so with the same seed they should agree up to float32 rounding. (The
# two formulas round differently, and the exact denoiser is steep near its
# basin walls, so a few rows differ by up to ~1e-3; most agree to ~1e-6.)

# %%
x_a = sample(oracle, schedule, pick(256, 64), sampler="ddpm", rng=np.random.default_rng(6), shape=2)
x_b = sample(
    oracle, schedule, pick(256, 64), sampler="ddim", num_inference_steps=T, eta=1.0,
    rng=np.random.default_rng(6), shape=2,
)  # fmt: skip
ddpm_vs_ddim1 = np.abs(x_a - x_b)  # [n, 2]
print(
    f"DDPM vs DDIM(eta = 1, 1000 steps), same seed: median difference {np.median(ddpm_vs_ddim1):.1e}, "
    f"largest {ddpm_vs_ddim1.max():.1e}"
)

# %% [markdown]
# ## 8. DDIM inversion: from a data point back to its noise
#
# Because `eta = 0` DDIM is deterministic, it can be run backwards:
# `ddim_invert` walks the same timesteps upwards, `x_0 -> x_T`, each move the
# DDIM update with its two ends swapped:
#
#     x0_hat = (x_t - sqrt(1 - ab_t) eps_hat) / sqrt(ab_t)
#     x_next = sqrt(ab_next) x0_hat + sqrt(1 - ab_next) eps_hat
#
# The catch: the sampler's step back from `t_next` uses `eps_hat =
# model(x_next, t_next)`, and `x_next` is what we are computing. The usual
# shortcut asks the model at the point we move *from*; its error shrinks like
# `1 / N`. `fixed_point_iterations = k` re-evaluates `eps_hat` at the new
# point `k` times, converging to the exact inverse. We invert the 64 training
# points, sample from the result, and measure how far each comes back.

# %%
inv_steps = pick((10, 20, 50, 100, 200), (10, 50))
roundtrip = {0: [], 3: []}
for n_inv in inv_steps:
    for k in roundtrip:
        z_T = ddim_invert(oracle, schedule, X, n_inv, fixed_point_iterations=k)  # [64, 2]
        back = sample(oracle, schedule, len(X), num_inference_steps=n_inv, rng=None, x_T=z_T)
        err = np.sqrt(((back - X) ** 2).sum(axis=1))  # [64]
        on_neighbour = (err >= 1e-3) & (nearest_distance(back, X) < 1e-3)  # [64]
        roundtrip[k].append((float(err.mean()), float(np.mean(err < 1e-3))))
        print(
            f"N = {n_inv:>3}, iterations {k}: mean error {err.mean():.1e}; back on the same point "
            f"{np.mean(err < 1e-3):>4.0%}, on another training point {np.mean(on_neighbour):>4.0%}; "
            f"std of x_T {z_T.std():.2f}"
        )

fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
for k, rows in roundtrip.items():
    ax.loglog(inv_steps, [r[0] for r in rows], "o-", label=f"fixed_point_iterations = {k}")
ax.set_xlabel("N, DDIM steps each way")
ax.set_ylabel("mean |sample(invert(x)) - x|")
ax.set_title("DDIM inversion round trip on the training points")
ax.legend()
show(fig, TUTORIAL, "inversion")

# %% [markdown]
# The inverted `x_T` has about unit standard deviation, as noise should, and
# the round-trip error falls with `N` and with the fixed-point iterations.
# The points that miss mostly come back on a *neighbouring* training point:
# the exact denoiser's map has sharp basin walls (section 7), and an `x_T`
# that lands a little on the wrong side of one switches points. A smooth,
# trained network inverts more gracefully; the oracle is the hardest case.
#
# ## Checks
#
# Each assert below restates a claim of this tutorial; if a sampler
# convention changed, one of them would fail.

# %%
# Section 2: one DDPM step by hand equals the sampler's, and ddpm_step is bit-exact.
# The replayed x_T is the sampler's: the model saw exactly it at t = 999.
assert np.array_equal(oracle(x_T_replayed, np.full(B, T - 1)), ddpm_trace[0].model_output)
assert np.array_equal(eps_hat, rec.model_output)
assert np.allclose(x_prev_by_hand, rec.x_prev, rtol=1e-5, atol=1e-6)
assert np.array_equal(x_prev_lib, rec.x_prev)
assert np.isclose(sigma, float(rec.sigma), rtol=1e-5)
assert float(ddpm_trace[-1].sigma) == 0.0 and np.array_equal(ddpm_trace[-1].x_prev, ddpm_trace[-1].x0_hat)
# Section 3: one DDIM step by hand, and ddim_step bit-exact.
assert (r3.t, r3.t_prev) == (600, 500)
assert np.allclose(x_prev3_by_hand, r3.x_prev, rtol=1e-5, atol=1e-6)
assert np.array_equal(x_prev3_lib, r3.x_prev)
# Section 4: the three spacings for T = 1000, N = 10, exactly as documented.
assert spacings["leading"].tolist() == list(range(900, -1, -100))
assert spacings["trailing"].tolist() == list(range(999, 98, -100))
assert spacings["linspace"].tolist() == [999, 888, 777, 666, 555, 444, 333, 222, 111, 0]
assert (
    previous_timesteps(spacings["linspace"])[0] == 888 and previous_timesteps(spacings["linspace"])[-1] == -1
)
assert np.median(spacing_dist["trailing"]) > 10 * np.median(spacing_dist["leading"]) + 1e-3
# Section 5: final alpha 1.0 returns x0_hat itself; ab[0] leaves ~0.01 of noise.
xs1, last1 = final_runs["1.0"]
xs0, last0 = final_runs["ab[0]"]
assert np.array_equal(xs1, last1.x0_hat) and float(last1.alpha_cumprod_prev) == 1.0
assert np.isclose(float(last0.alpha_cumprod_prev), float(ab[0]))
assert np.median(final_dist["ab[0]"]) > 1e-3 and np.median(final_dist["1.0"]) == 0.0
# ... and that offset is exactly sqrt(1 - ab[0]) eps_hat (eps_hat = the model's output, eta = 0).
a0 = np.float64(ab[0])
s0 = np.float64(schedule["sqrt_one_minus_alphas_cumprod"][0])  # sqrt(1 - ab[0]), accurate (not 1 - a float32)
assert np.allclose(xs0, np.sqrt(a0) * last0.x0_hat + s0 * last0.model_output, atol=1e-5)
# Section 6: the exact denoiser's samples land on training points.
assert np.median(memo["DDPM, 1000 steps"]) < 1e-3 and np.mean(memo["DDPM, 1000 steps"] < 1e-3) > 0.8
assert np.median(memo["DDIM, 50 steps"]) < 1e-3
# Section 7: eta = 0 is deterministic, eta = 1 is not, and eta = 1 on every step is DDPM.
assert same_det and same_land < 0.9
assert np.median(ddpm_vs_ddim1) < 1e-5 and ddpm_vs_ddim1.max() < 1e-2
# Section 8: the inversion round trip improves with fixed-point iterations and with N.
assert roundtrip[3][-1][0] < roundtrip[0][-1][0]
assert roundtrip[0][-1][0] < roundtrip[0][0][0]
assert roundtrip[3][-1][1] > 0.9
print("all checks passed")
