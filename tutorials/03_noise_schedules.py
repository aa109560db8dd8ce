# %% [markdown]
# # Tutorial 3: the forward process and noise schedules
#
# Diffusion models learn to undo a fixed process that adds Gaussian noise to
# data, a little at a time, until nothing but noise is left. How much noise
# is added at each step is the **noise schedule**. This tutorial runs that
# process on a digit, compares the usual schedules, and checks the one
# formula everything else rests on.
#
# **Learning goals**
#
# - Run the forward process `q(x_t | x_0)` with `ldm_np.diffusion.q_sample`
#   and watch a digit dissolve into noise.
# - Compare the linear, scaled-linear and cosine schedules through
#   `alpha_bar_t` and the log signal-to-noise ratio.
# - Recognise the terminal-SNR trap: a schedule whose last step still holds
#   signal, and what that does to sampling.
# - Keep the schedule names of ldm_np, the original LDM code and diffusers
#   apart (the same word means different schedules).
# - Verify empirically that `x_t ~ N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I)`.
#
# **Prerequisites**: Tutorial 2 is helpful but not needed; the normal
# distribution; sums of independent Gaussians.
#
# **How to run**: `python tutorials/03_noise_schedules.py` (a few seconds),
# or cell by cell in VS Code / Jupyter (`jupytext --to notebook` converts it).
# `LDM_NP_FAST=1` runs a smaller version. Figures are saved under
# `tutorials/figures/03_noise_schedules/`.

# %%
import warnings

import matplotlib.pyplot as plt
import numpy as np
from _tutorial import pick, show

from ldm_np import figures
from ldm_np.datasets import load_digits
from ldm_np.diffusion import log_snr, q_sample
from ldm_np.schedules import TERMINAL_SIGNAL_WARNING, make_schedule

TUTORIAL = "03_noise_schedules"
rng = np.random.default_rng(0)

# %% [markdown]
# ## 1. The forward process on a digit
#
# One step of the forward process shrinks the sample a little and adds a
# little fresh noise, with a variance `beta_t` set by the schedule:
#
#     x_t = sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t) eps_t,     eps_t ~ N(0, I),   t = 1, ..., T
#
# with `x_0` the clean data and `x_T` (almost) pure noise, as in Ho et al.
# (2020); every tutorial keeps this notation. Gaussians compose, so any
# step can be reached in one jump. With `alpha_t = 1 - beta_t` and
# `alpha_bar_t = alpha_1 alpha_2 ... alpha_t` (`alphas_cumprod`):
#
#     x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps,      eps ~ N(0, I)
#
# **Indices in the code.** NumPy arrays count from 0, so the library's
# timestep argument `t = 0, ..., T-1` and the arrays `schedule["betas"][t]`,
# `schedule["alphas_cumprod"][t]` belong to the math's step `t + 1`: code
# timestep 0 is the first noisy state `x_1` (`beta_1 = 1e-4`), code timestep
# `T - 1 = 999` is `x_T`, where sampling starts. Printed tables and code use
# the array index (`ab[999]`); the formulas use the math's steps.
#
# This is `q_sample(schedule, x0, t, noise)`, for `x0` and `noise` of shape
# `[batch, features]` and `t` an int or `[batch]` ints. Section 6 checks that
# the one-jump form really equals the step-by-step chain.
#
# The schedule assumes data of roughly unit scale, so we map the digits'
# pixels from [0, 1] to [-1, 1], as pixel-space diffusion models do.

# %%
X, labels = load_digits(dtype="float64")
x0_all = 2.0 * X - 1.0  # [1797, 64], pixels in [-1, 1]
schedule = make_schedule(1000, 1e-4, 0.02, "linear", dtype="float64")  # DDPM's schedule
T = schedule["num_steps"]
print({k: v.shape for k, v in schedule.items() if hasattr(v, "shape")})

examples = x0_all[[0, 1, 2]]  # [3, 64]: a 0, a 1 and a 2
timesteps = [0, 25, 50, 100, 200, 300, 500, 700, 999]
noise = rng.standard_normal(examples.shape)  # [3, 64]: one noise pattern per example, for every t
print(f"{'t':>4} {'alpha_bar':>10} {'signal sqrt(ab)':>16} {'noise sqrt(1-ab)':>17} {'corr(x_t, x_0)':>15}")
for t in timesteps:
    xt = q_sample(schedule, examples, t, noise)  # [3, 64]
    corr = np.corrcoef(xt.ravel(), examples.ravel())[0, 1]
    ab = schedule["alphas_cumprod"][t]
    print(f"{t:>4} {ab:10.4f} {np.sqrt(ab):16.3f} {np.sqrt(1 - ab):17.3f} {corr:15.3f}")

# The figure draws the same formula (with its own eps, fixed by `seed`).
fig = figures.forward_noising(examples, schedule, timesteps, shape=(8, 8), seed=0)
show(fig, TUTORIAL, "forward_process_digits")

# %% [markdown]
# By `t = 300` a person can barely find the digit; by `t = 999` the images
# are indistinguishable from pure noise: the correlation with the clean image
# is near 0. The reverse process will start there.
#
# ## 2. Three schedules: alpha_bar and log-SNR
#
# `make_schedule(num_steps, beta_start, beta_end, kind)` offers three shapes:
#
# - `"linear"` (DDPM, Ho et al., 2020): betas evenly spaced from `beta_start`
#   to `beta_end`; 1e-4 to 0.02 by default.
# - `"scaled_linear"` (latent diffusion, Stable Diffusion): `sqrt(beta)`
#   evenly spaced, then squared; Stable Diffusion uses 0.00085 to 0.012.
# - `"cosine"` (Nichol & Dhariwal, 2021): `alpha_bar` follows a squared
#   cosine of `t / T`; it ignores `beta_start` and `beta_end`.
#
# Two views help compare them: `alpha_bar_t`, the share of the signal's
# variance left at step `t`, and the **log signal-to-noise ratio**
#
#     log-SNR(t) = log( alpha_bar_t / (1 - alpha_bar_t) )
#
# which `ldm_np.diffusion.log_snr` computes, and `figures.schedule_plot`
# draws. Making a schedule warns when it ends with too much signal left: we
# record the warnings here and discuss them in the next section.


# %%
def build(num_steps, beta_start, beta_end, kind):
    """make_schedule in float64, returning the schedule and any warning it raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        s = make_schedule(num_steps, beta_start, beta_end, kind, dtype="float64")
    return s, [str(w.message) for w in caught]


schedules, warned = {}, {}
for name, args in {
    "linear (DDPM)": (1000, 1e-4, 0.02, "linear"),
    "scaled_linear (Stable Diffusion)": (1000, 0.00085, 0.012, "scaled_linear"),
    "cosine": (1000, 1e-4, 0.02, "cosine"),
}.items():
    schedules[name], warned[name] = build(*args)

fig = figures.schedule_plot(schedules)
show(fig, TUTORIAL, "schedules")

t_all = np.arange(T)
print(f"{'schedule':<34} {'ab[0]':>8} {'ab[T/2]':>8} {'ab[T-1]':>9} {'log-SNR[0]':>11} {'log-SNR[T-1]':>13}")
for name, s in schedules.items():
    ab = s["alphas_cumprod"]
    lsnr = log_snr(s, t_all)  # [T]
    print(f"{name:<34} {ab[0]:8.5f} {ab[T // 2]:8.4f} {ab[-1]:9.2e} {lsnr[0]:11.2f} {lsnr[-1]:13.2f}")

# %% [markdown]
# The linear schedule destroys the signal fastest: `alpha_bar` is already
# near 0 by `t ~ 600`, so the last 40% of its steps are spent on almost pure
# noise. The cosine schedule spreads the decay evenly, and its log-SNR falls
# almost linearly over most of the range. The scaled-linear schedule is
# gentler throughout, and it is the only one that does **not** reach a low
# SNR at the end: its last log-SNR is about -5.4, against -10 for the
# linear schedule and far lower for the cosine one.
#
# ## 3. The terminal-SNR trap
#
# Sampling starts from pure noise, `x_T ~ N(0, I)`. But during training,
# the model only ever saw `x_T = sqrt(alpha_bar_T) x_0 + ...`. If
# `sqrt(alpha_bar_T)`, the amplitude of signal left at the last step, is
# not close to 0, the first sampling step feeds the model an input unlike any
# it trained on, and it learns to rely on low-frequency information that
# pure noise does not contain (Lin et al., 2023, "Common Diffusion Noise
# Schedules and Sample Steps are Flawed"). `make_schedule` warns when this
# amplitude exceeds 0.05.
#
# A schedule that is too **short** falls into the trap easily: 100 steps of
# the default betas add up to much less noise than 1,000. The usual fix
# scales the betas by `1000 / T` (improved DDPM does this).

# %%
schedules["linear, T = 100 (same betas)"], warned["linear, T = 100 (same betas)"] = build(
    100, 1e-4, 0.02, "linear"
)
schedules["linear, T = 100, betas x 10"], warned["linear, T = 100, betas x 10"] = build(
    100, 1e-3, 0.2, "linear"
)

print(f"{'schedule':<34} {'T':>5} {'sqrt(ab[T-1])':>14} {'SNR[T-1]':>10}  warns?")
terminal = {}
for name, s in schedules.items():
    ab_last = s["alphas_cumprod"][-1]
    terminal[name] = float(np.sqrt(ab_last))
    print(
        f"{name:<34} {s['num_steps']:>5} {terminal[name]:14.4f} {ab_last / (1 - ab_last):10.2e}  "
        f"{'yes' if warned[name] else 'no'}"
    )
for name, msgs in warned.items():
    for msg in msgs:
        print(f"\nwarning for {name}:\n  {msg}")

# %% [markdown]
# What does a signal amplitude of 0.068 look like (Stable Diffusion's
# schedule: 6.8% of the signal's amplitude, `alpha_bar_T = 0.0047` of its
# variance)? Below, the clean digits,
# then the last training input `x_T` of each schedule for the same five
# digits and the same noise, and in the last row the noise alone, which is
# what sampling starts from. (Look for the 0 in the short schedule's row.)
# Then a blunt test: can a classifier still tell which digit is hidden in
# `x_T`? We use the simplest one, the nearest class mean
# (`sqrt(alpha_bar) * mean image of each class`), on all 1,797 digits.
# Chance is 10%.

# %%
five = x0_all[[0, 1, 2, 3, 4]]  # [5, 64]
eps_five = np.random.default_rng(1).standard_normal(five.shape)
rows, row_labels = [five], ["clean digits x_0\n(for reference)"]
for name in ("linear (DDPM)", "scaled_linear (Stable Diffusion)", "cosine", "linear, T = 100 (same betas)"):
    s = schedules[name]
    rows.append(q_sample(s, five, s["num_steps"] - 1, eps_five))  # [5, 64]: x_T (code timestep T - 1)
    row_labels.append(
        f"{name.split(' (')[0].split(',')[0]}{', T = 100' if 'T = 100' in name else ''}\n"
        f"sqrt(ab) = {terminal[name]:.3f}"
    )
rows.append(eps_five)
row_labels.append("pure noise N(0, I)\n(sampling starts here)")
fig = figures.image_grid(
    np.concatenate(rows),
    nrows=len(rows),
    row_labels=row_labels,
    value_range=(-1.5, 1.5),
    title=r"The last training input $x_T$, per schedule (same digits, same noise)",
)
show(fig, TUTORIAL, "terminal_inputs")

centroids = np.stack([x0_all[labels == k].mean(axis=0) for k in range(10)])  # [10, 64]
eps_all = np.random.default_rng(2).standard_normal(x0_all.shape)  # [1797, 64]
accuracy = {}
for name, s in schedules.items():
    last = s["num_steps"] - 1
    x_last = q_sample(s, x0_all, last, eps_all)  # [1797, 64]
    scaled = np.sqrt(s["alphas_cumprod"][last]) * centroids  # [10, 64]: the class means at that step
    d2 = ((x_last[:, None, :] - scaled[None, :, :]) ** 2).sum(axis=2)  # [1797, 10]
    accuracy[name] = float((d2.argmin(axis=1) == labels).mean())
    print(f"{name:<34} digit recognised from x_T: {accuracy[name]:6.1%}")

# %% [markdown]
# With the DDPM and cosine schedules, `x_T` is noise as far as this
# classifier can tell. With 100 steps of the same betas, 60% of the digit's
# amplitude is left and the classifier names it about two times in three: a
# model trained on such inputs never learns to start from nothing, and
# sampling from `N(0, I)` goes wrong. Stable Diffusion's schedule sits in
# between, measurably above chance; it is a known flaw of that schedule
# (its 6.8% of the signal's amplitude carries the image's mean brightness, which is why such
# models struggle to make very dark or very bright images). diffusers offers
# `rescale_betas_zero_snr=True` to fix it; ldm_np has no such option (see
# `docs/conventions.md`).
#
# ## 4. Schedule names across libraries
#
# The same word names different schedules in different codebases. The
# original latent-diffusion code (CompVis, `make_beta_schedule` in
# `ldm/modules/diffusionmodules/util.py`) calls the sqrt-spaced schedule
# `"linear"`, and the truly linear one `"sqrt_linear"`. Reading an LDM config
# into another library without translating the name silently changes the
# schedule.

# %%
table = [
    ("betas evenly spaced (DDPM)", "linear", "sqrt_linear", "linear"),
    ("sqrt(beta) evenly spaced, squared", "scaled_linear", "linear", "scaled_linear"),
    ("squared cosine of t/T (iDDPM)", "cosine", "cosine", "squaredcos_cap_v2"),
    ("sqrt of evenly spaced betas", "(none)", "sqrt", "(none)"),
]
header = ("what the schedule is", "ldm_np kind", "LDM config", "diffusers beta_schedule")
widths = [max(len(r[i]) for r in [*table, header]) for i in range(4)]
for row in [header, tuple("-" * w for w in widths), *table]:
    print("  ".join(f"{c:<{w}}" for c, w in zip(row, widths)))

# %% [markdown]
# What happens if an LDM config's `linear_start: 0.00085, linear_end: 0.012,
# beta_schedule: linear` is read as ldm_np's `"linear"`?

# %%
meant = schedules["scaled_linear (Stable Diffusion)"]  # what the LDM config means
misread, _ = build(1000, 0.00085, 0.012, "linear")  # what a literal reading gives
gap = np.abs(meant["alphas_cumprod"] - misread["alphas_cumprod"])
print(f"alpha_bar[T-1]: meant {meant['alphas_cumprod'][-1]:.4f}, misread {misread['alphas_cumprod'][-1]:.4f}")
print(f"largest difference in alpha_bar: {gap.max():.3f} at t = {gap.argmax()}")
sqrt_beta_steps = np.diff(np.sqrt(meant["betas"]))
beta_steps = np.diff(misread["betas"])
print(
    f"scaled_linear: sqrt(beta) steps all equal: {np.allclose(sqrt_beta_steps, sqrt_beta_steps[0])};  "
    f"linear: beta steps all equal: {np.allclose(beta_steps, beta_steps[0])}"
)

# %% [markdown]
# The misread schedule reaches the same `beta_end` but adds noise faster in
# the middle: at its worst, `alpha_bar` differs by about 0.14, so a model
# trained with one and sampled with the other denoises at the wrong noise
# levels. The prediction types have a collision of their own (ldm_np's `"v"`
# is diffusers' `"v_prediction"`); Tutorial 4 covers them.
#
# ## 5. Checking the closed form empirically
#
# The one-jump formula is the foundation of training (every training step
# draws `x_t` with it). Let us check it against its definition: run the
# step-by-step chain
#
#     x_t = sqrt(alpha_t) x_{t-1} + sqrt(beta_t) eps_t
#
# for many independent copies (chains) of one digit, and measure at every
# step the mean and the variance across chains. The closed form says
#
#     E[x_t] = sqrt(alpha_bar_t) x_0,      Var[x_t] = (1 - alpha_bar_t)   (every pixel)
#
# We summarise the mean by its coefficient along `x_0`,
# `c_t = <mean_t, x_0> / <x_0, x_0>`, which should equal `sqrt(alpha_bar_t)`.
# For comparison we also draw the same number of samples with `q_sample` at
# a few steps.

# %%
CHAINS = pick(2000, 200)
x0 = x0_all[0]  # [64]: one digit
chain_rng = np.random.default_rng(3)
x = np.tile(x0, (CHAINS, 1))  # [C, 64]: x_0, the clean digit in every chain
coef, var = np.empty(T), np.empty(T)
sqrt_alphas, sqrt_betas = np.sqrt(schedule["alphas"]), np.sqrt(schedule["betas"])
for t in range(T):
    x = sqrt_alphas[t] * x + sqrt_betas[t] * chain_rng.standard_normal(x.shape)  # [C, 64]
    coef[t] = x.mean(axis=0) @ x0 / (x0 @ x0)
    var[t] = x.var(axis=0, ddof=1).mean()

check_t = np.array([0, 50, 100, 200, 300, 400, 500, 600, 700, 800, 900, 999])
qs_coef, qs_var = [], []
x0_tiled = np.tile(x0, (CHAINS, 1))  # [C, 64]
for t in check_t:
    xt = q_sample(schedule, x0_tiled, int(t), chain_rng.standard_normal(x0_tiled.shape))  # [C, 64]
    qs_coef.append(xt.mean(axis=0) @ x0 / (x0 @ x0))
    qs_var.append(xt.var(axis=0, ddof=1).mean())

ab = schedule["alphas_cumprod"]
fig, (ax_m, ax_v) = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
ax_m.plot(t_all, np.sqrt(ab), "k", lw=2, label=r"closed form $\sqrt{\bar\alpha_t}$")
ax_m.plot(t_all[::20], coef[::20], "o", ms=4, label=f"step-by-step chain ({CHAINS} chains)")
ax_m.plot(check_t, qs_coef, "x", ms=8, mew=2, label="q_sample (one jump)")
ax_m.set_title(r"Mean: coefficient of $x_0$ in $E[x_t]$")
ax_m.set_ylabel("coefficient")
ax_v.plot(t_all, 1 - ab, "k", lw=2, label=r"closed form $1 - \bar\alpha_t$")
ax_v.plot(t_all[::20], var[::20], "o", ms=4, label="step-by-step chain")
ax_v.plot(check_t, qs_var, "x", ms=8, mew=2, label="q_sample (one jump)")
ax_v.set_title(r"Variance of each pixel of $x_t$")
ax_v.set_ylabel("variance")
for ax in (ax_m, ax_v):
    ax.set_xlabel("timestep t")
    ax.legend()
fig.suptitle(r"The forward chain matches the closed form $q(x_t \mid x_0)$")
show(fig, TUTORIAL, "closed_form_check")

# Expected sampling error: se(coef) = sqrt((1 - ab) / C) / |x0|, se(var) / var ~ sqrt(2 / (C * 64)).
se_coef = np.sqrt((1 - ab) / CHAINS) / np.linalg.norm(x0)
coef_z = np.abs(coef - np.sqrt(ab)) / se_coef  # [T], in standard errors
var_rel = np.abs(var / (1 - ab) - 1)  # [T]
var_se = np.sqrt(2 / (CHAINS * 64))
print(f"largest deviation of the mean coefficient: {coef_z.max():.1f} standard errors")
print(f"largest relative deviation of the variance: {var_rel.max():.2%} (one standard error is {var_se:.2%})")

# %% [markdown]
# Both statistics of the chain follow the closed form to within their
# sampling error over all 1,000 steps, and `q_sample`'s one-jump samples
# land on the same curves. Note the right panel's start: after one step the
# variance is `beta_0 = 1e-4`, not 0, because ldm_np's `t = 0` is already one
# noising step.
#
# ## Checks

# %%
for name, s in schedules.items():
    a = s["alphas_cumprod"]
    assert np.all(np.diff(a) < 0) and 0 < a[-1] < a[0] < 1, name  # signal only ever decreases
# The terminal-SNR warning fires exactly for the schedules that keep more than 5% of the signal.
for name in schedules:
    assert bool(warned[name]) == (terminal[name] > TERMINAL_SIGNAL_WARNING), name
assert warned["scaled_linear (Stable Diffusion)"] and warned["linear, T = 100 (same betas)"]
assert not warned["linear (DDPM)"] and not warned["cosine"] and not warned["linear, T = 100, betas x 10"]
assert 0.06 < terminal["scaled_linear (Stable Diffusion)"] < 0.075  # Stable Diffusion keeps ~6.8%
assert terminal["linear, T = 100 (same betas)"] > 0.5
# The digit is still recognisable at the last step of the short schedule, not of the DDPM one.
assert accuracy["linear, T = 100 (same betas)"] > 0.5, accuracy
assert accuracy["scaled_linear (Stable Diffusion)"] > 0.12, accuracy  # chance is 0.10 (+- 0.007)
assert accuracy["linear (DDPM)"] < 0.2 and accuracy["cosine"] < 0.2, accuracy
# The cosine schedule keeps more signal than the linear one in the middle of the range.
assert schedules["cosine"]["alphas_cumprod"][T // 2] > schedules["linear (DDPM)"]["alphas_cumprod"][T // 2]
# An LDM config's "linear" is ldm_np's "scaled_linear": reading it as "linear" changes alpha_bar a lot.
assert np.allclose(sqrt_beta_steps, sqrt_beta_steps[0]) and np.allclose(beta_steps, beta_steps[0])
assert gap.max() > 0.1, gap.max()
# The forward chain and the closed form agree within sampling error at every step.
assert coef_z.max() < 5, coef_z.max()
assert var_rel.max() < 5 * var_se, var_rel.max()
print("All checks passed.")
