# %% [markdown]
# # Tutorial 1: a dense layer, backprop by hand, and how to prove a gradient right
#
# Every model in `ldm_np` is trained with gradients written by hand. This
# tutorial shows how one such gradient is derived, how gradients compose
# through a network (the chain rule), and how we *prove* each one correct with
# finite differences, the way the test suite does.
#
# **Learning goals**
#
# - Derive and run the forward and backward pass of a dense layer
#   `y = x @ W + b` (`ldm_np.layers.dense_forward` / `dense_backward`).
# - Chain gradients through SiLU and LayerNorm, and see why LayerNorm's
#   backward needs its two extra sums.
# - Understand central differences, their error as a function of the step `h`,
#   and why gradient checks must run in float64.
# - Read `ldm_np.gradcheck.check_module`'s table for a whole encoder, and
#   recognise what a wrong gradient looks like in it.
#
# **Prerequisites**: NumPy, matrix products, the derivative of a function of
# one variable. No deep-learning framework.
#
# **How to run**: `python tutorials/01_dense_and_backprop.py` (about ten
# seconds), or open it cell by cell in VS Code / Jupyter (`jupytext --to
# notebook` turns it into a notebook). `LDM_NP_FAST=1` runs a smaller version.
# Figures are saved under `tutorials/figures/01_dense_and_backprop/`.

# %%
from unittest import mock

import matplotlib.pyplot as plt
import numpy as np
from _tutorial import pick, show

import ldm_np
from ldm_np import vae as vae_module
from ldm_np.gradcheck import check_module, directional_check, numerical_gradient, rel_error
from ldm_np.layers import (
    dense_backward,
    dense_forward,
    layernorm_backward,
    layernorm_forward,
    silu_backward,
    silu_forward,
)

TUTORIAL = "01_dense_and_backprop"
rng = np.random.default_rng(0)
np.set_printoptions(precision=4, suppress=True)

# %% [markdown]
# ## 1. The dense layer, forward
#
# A dense (fully connected) layer maps a batch of `B` input rows with `n_in`
# features to `B` rows with `n_out` features:
#
#     y = x @ W + b        x: [B, n_in]   W: [n_in, n_out]   b: [n_out]   y: [B, n_out]
#
# `dense_forward` returns the output and a **cache**: what the backward pass
# will need (here `x` and `W`). Every layer in `ldm_np` is such a pair of
# functions, `op_forward -> (out, cache)` and `op_backward(dout, cache)`.
#
# We work in float64 throughout this tutorial, and give the bias non-zero
# values on purpose: a zero bias (the usual initialisation) can hide a broken
# backward pass.

# %%
B, n_in, n_out = 4, 5, 3
x = rng.standard_normal((B, n_in))  # [B, n_in]
W = rng.standard_normal((n_in, n_out)) / np.sqrt(n_in)  # [n_in, n_out]
b = 0.5 * rng.standard_normal(n_out)  # [n_out], deliberately non-zero

y, cache = dense_forward(x, W, b)  # y: [B, n_out]
print(f"x {x.shape} @ W {W.shape} + b {b.shape} -> y {y.shape}")
print("y =\n", y)

# %% [markdown]
# ## 2. The dense layer, backward
#
# Training needs the gradient of a scalar loss `L` with respect to every
# parameter. Backprop receives `dy = dL/dy` (same shape as `y`) from the layer
# above and returns the gradients of the layer's inputs. Since
# `y[i, k] = sum_j x[i, j] W[j, k] + b[k]`:
#
#     dL/dW[j, k] = sum_i x[i, j] dy[i, k]     ->  dW = x.T @ dy        [n_in, n_out]
#     dL/db[k]    = sum_i dy[i, k]             ->  db = dy.sum(axis=0)  [n_out]
#     dL/dx[i, j] = sum_k dy[i, k] W[j, k]     ->  dx = dy @ W.T        [B, n_in]
#
# A good habit: each gradient has the shape of its variable, and there is only
# one way to multiply the available arrays to get that shape.
#
# To test it we need a loss. The checker's trick is a fixed random `dy`: the
# loss `L = sum(y * dy)` has exactly `dL/dy = dy`, so *any* upstream gradient
# can be tested.

# %%
dy = rng.standard_normal((B, n_out))  # [B, n_out], the gradient arriving from above
dx, dW, db = dense_backward(dy, cache)
print("shapes: dx", dx.shape, " dW", dW.shape, " db", db.shape)


def dense_loss():
    """L = sum(y * dy), recomputed from the current x, W, b."""
    out, _ = dense_forward(x, W, b)
    return (out * dy).sum()


# numerical_gradient perturbs each entry of the array in place by +-h and restores it.
errors_dense = {
    "dx": rel_error(dx, numerical_gradient(dense_loss, x)),
    "dW": rel_error(dW, numerical_gradient(dense_loss, W)),
    "db": rel_error(db, numerical_gradient(dense_loss, b)),
}
for name, err in errors_dense.items():
    print(f"dense {name}: relative error vs finite differences = {err:.1e}  (float64: expect ~1e-10)")

# %% [markdown]
# `rel_error(a, b) = max|a - b| / (max|a| + max|b|)`: 0 for equal arrays, about
# 1 for unrelated ones. A correct float64 gradient lands near 1e-10; a wrong
# one near 1e-1 or worse. There is no grey zone in between, which is what
# makes these checks useful.
#
# ## 3. The chain rule through SiLU
#
# SiLU (also called swish) is the activation used throughout `ldm_np`:
#
#     silu(u) = u * sigma(u),     d silu / du = sigma(u) * (1 + u * (1 - sigma(u)))
#
# It is elementwise, so its backward multiplies elementwise:
# `du = ds * silu'(u)`. The figure shows the function, its derivative from the
# formula, and the derivative measured by central differences.

# %%
u_grid = np.linspace(-6, 6, 241)[None, :]  # [1, 241]: one "batch row" of inputs
s_grid, c_silu = silu_forward(u_grid)
deriv = silu_backward(np.ones_like(u_grid), c_silu)  # dy = 1 gives the derivative itself
h = 1e-5
numeric = (silu_forward(u_grid + h)[0] - silu_forward(u_grid - h)[0]) / (2 * h)

fig, ax = plt.subplots(figsize=(6.5, 3.8), layout="constrained")
ax.plot(u_grid[0], s_grid[0], lw=2, label="silu(u) = u sigma(u)")
ax.plot(u_grid[0], deriv[0], lw=2, label="silu'(u), from silu_backward")
ax.plot(u_grid[0, ::12], numeric[0, ::12], "o", ms=4, label="central difference, h = 1e-5")
ax.axhline(0, color="0.6", lw=0.8)
ax.set_xlabel("u")
ax.set_ylabel("value")
ax.set_title("SiLU and its derivative: formula vs finite differences")
ax.legend()
show(fig, TUTORIAL, "silu_derivative")
silu_deriv_error = rel_error(deriv, numeric)
print(f"SiLU derivative on [-6, 6]: relative error {silu_deriv_error:.1e}")

# %% [markdown]
# Now compose. A dense layer followed by SiLU, `s = silu(x @ W + b)`:
# backprop visits the layers in reverse, each turning the gradient of its
# output into the gradient of its input, using only its own cache.

# %%
u, c_dense = dense_forward(x, W, b)  # [B, n_out]
s, c_act = silu_forward(u)  # [B, n_out]
ds = rng.standard_normal(s.shape)  # upstream gradient

du = silu_backward(ds, c_act)  # [B, n_out]: through SiLU
dx2, dW2, db2 = dense_backward(du, c_dense)  # through the dense layer


def dense_silu_loss():
    return (silu_forward(dense_forward(x, W, b)[0])[0] * ds).sum()


errors_chain = {
    "dx": rel_error(dx2, numerical_gradient(dense_silu_loss, x)),
    "dW": rel_error(dW2, numerical_gradient(dense_silu_loss, W)),
    "db": rel_error(db2, numerical_gradient(dense_silu_loss, b)),
}
print("dense -> SiLU, relative errors:", {k: f"{v:.1e}" for k, v in errors_chain.items()})

# %% [markdown]
# ## 4. LayerNorm: where a "local" gradient is not enough
#
# LayerNorm normalises each row over its `n` features, then scales and shifts:
#
#     mean = x.mean(-1),  var = ((x - mean)^2).mean(-1),  xhat = (x - mean) / sqrt(var + eps)
#     y = gamma * xhat + beta                     x, y: [B, n];  gamma, beta: [n]
#
# Every output of a row depends on every input of that row, through the mean
# and the variance. With `g = dy * gamma` the backward is
#
#     dx = (1 / (n sqrt(var + eps))) * (n g - sum(g) - xhat * sum(g * xhat))
#
# The two sums (over features) are the paths through the mean and through the
# variance. A tempting shortcut treats mean and variance as constants, giving
# `dx = g / sqrt(var + eps)`. Below, **deliberately wrong**, we write that
# shortcut and let finite differences judge it against the library's backward.

# %%
n = 6
xl = 2.0 + 3.0 * rng.standard_normal((B, n))  # [B, n], off-centre and wide on purpose
gamma = 1.0 + 0.3 * rng.standard_normal(n)  # non-trivial values, not the init's 1 and 0
beta = 0.3 * rng.standard_normal(n)
dyl = rng.standard_normal((B, n))

yl, c_ln = layernorm_forward(xl, gamma, beta)
dxl, dgamma, dbeta = layernorm_backward(dyl, c_ln)


def layernorm_loss():
    return (layernorm_forward(xl, gamma, beta)[0] * dyl).sum()


num_dxl = numerical_gradient(layernorm_loss, xl)
errors_ln = {
    "dx": rel_error(dxl, num_dxl),
    "dgamma": rel_error(dgamma, numerical_gradient(layernorm_loss, gamma)),
    "dbeta": rel_error(dbeta, numerical_gradient(layernorm_loss, beta)),
}
print("LayerNorm (library), relative errors:", {k: f"{v:.1e}" for k, v in errors_ln.items()})

# The WRONG shortcut, for contrast: ignores that mean and var depend on x.
xhat, rstd, _ = c_ln
dx_shortcut = dyl * gamma * rstd  # [B, n]
err_shortcut = rel_error(dx_shortcut, num_dxl)
print(f"LayerNorm dx with the mean/variance paths left out: relative error {err_shortcut:.2f}  <- wrong")

# %% [markdown]
# The shortcut's error is of order 1e-1: not a rounding problem, a missing
# term. Notice also what it means for a *row*: the true `dx` of each row sums
# to zero (shifting a whole row does not change its normalised output), the
# shortcut's does not.

# %%
print("row sums of the true dx:    ", dxl.sum(axis=1))
print("row sums of the shortcut dx:", dx_shortcut.sum(axis=1))

# %% [markdown]
# ## 5. Central differences, and why gradient checks run in float64
#
# The numerical gradient is the central difference
#
#     f'(x) ~ (f(x + h) - f(x - h)) / (2h)
#
# Two errors compete. **Truncation**: the Taylor series gives an error
# `h^2 f'''(x) / 6`, shrinking with `h`. **Rounding**: `f` is computed with a
# relative error about `eps_machine`, and dividing by `2h` amplifies it to
# about `eps_machine |f| / h`, growing as `h` shrinks. The total is smallest
# near `h ~ eps_machine^(1/3)`:
#
# | dtype   | eps_machine | best h  | best error ~ eps^(2/3) |
# |---------|-------------|---------|------------------------|
# | float64 | 2.2e-16     | ~6e-6   | ~1e-10                 |
# | float32 | 1.2e-7      | ~5e-3   | ~1e-5                  |
#
# A one-sided difference `(f(x + h) - f(x)) / h` has truncation error of order
# `h` instead of `h^2`; its best is near `h ~ sqrt(eps)`, with an error near
# `sqrt(eps) ~ 1e-8` in float64: a hundred times worse than central differences.
#
# We measure all of this on a small dense -> SiLU -> LayerNorm network, with
# `ldm_np.gradcheck.directional_check`: it moves *every* parameter at once
# along one random unit direction `v`, and compares the central difference of
# the loss with the exact directional derivative `sum(grad * v)` (two loss
# evaluations, whatever the size). The exact gradient comes from the float64
# backward pass; the finite differences are taken once in float64 and once in
# float32 arithmetic.


# %%
def make_net(dtype):
    """x, W, b, gamma, beta and an upstream gradient, all from a fixed seed, in ``dtype``."""
    r = np.random.default_rng(1)
    arrays = (
        r.standard_normal((4, 5)),  # x     [B, n_in]
        r.standard_normal((5, 6)) / np.sqrt(5),  # W     [n_in, hidden]
        0.3 * r.standard_normal(6),  # b     [hidden]
        1.0 + 0.3 * r.standard_normal(6),  # gamma [hidden]
        0.3 * r.standard_normal(6),  # beta  [hidden]
        r.standard_normal((4, 6)),  # dy    [B, hidden]
    )
    return [a.astype(dtype) for a in arrays]


def net_forward(x, W, b, gamma, beta):
    u, c1 = dense_forward(x, W, b)  # [B, hidden]
    s, c2 = silu_forward(u)
    y, c3 = layernorm_forward(s, gamma, beta)
    return y, (c1, c2, c3)


def net_backward(dy, caches):
    c1, c2, c3 = caches
    ds, dgamma, dbeta = layernorm_backward(dy, c3)
    du = silu_backward(ds, c2)
    dx, dW, db = dense_backward(du, c1)
    return [dx, dW, db, dgamma, dbeta]


*params64, dy64 = make_net(np.float64)
_, caches = net_forward(*params64)
exact_grads = net_backward(dy64, caches)  # float64 backward: the reference

num_h = pick(49, 13)
hs = np.logspace(-13, 0, num_h)
directions = pick(5, 2)  # average over a few random directions for a smoother curve


def central_error(dtype, h):
    errs = []
    for seed in range(directions):
        *params, dy_ = make_net(dtype)  # fresh arrays each time: float32 updates do not undo exactly

        def loss(params=params, dy_=dy_):
            return float((net_forward(*params)[0] * dy_).sum())  # computed in `dtype`

        errs.append(directional_check(loss, params, exact_grads, h=h, seed=seed))
    return float(np.mean(errs))


def forward_difference_error(h):
    """One-sided difference in float64, for comparison (not part of the library)."""
    errs = []
    for seed in range(directions):
        r = np.random.default_rng(seed)
        dirs = [r.standard_normal(p.shape) for p in params64]
        norm = np.sqrt(sum((d * d).sum() for d in dirs))
        dirs = [d / norm for d in dirs]
        exact = sum((g * d).sum() for g, d in zip(exact_grads, dirs))
        f0 = (net_forward(*params64)[0] * dy64).sum()
        f1 = (net_forward(*[p + h * d for p, d in zip(params64, dirs)])[0] * dy64).sum()
        numeric = (f1 - f0) / h
        errs.append(abs(numeric - exact) / max(abs(numeric) + abs(exact), 1e-8))
    return float(np.mean(errs))


err64 = np.array([central_error(np.float64, h) for h in hs])
err32 = np.array([central_error(np.float32, h) for h in hs])
err64_fwd = np.array([forward_difference_error(h) for h in hs])

fig, ax = plt.subplots(figsize=(7, 4.5), layout="constrained")
ax.loglog(hs, err64, "o-", ms=3, lw=1.8, label="central difference, float64")
ax.loglog(hs, err32, "s-", ms=3, lw=1.8, label="central difference, float32")
ax.loglog(hs, err64_fwd, "--", lw=1.4, color="0.4", label="one-sided difference, float64")
ax.axhline(ldm_np.gradcheck.TOLERANCE, color="tab:red", lw=1, ls=":")
ax.text(
    2e-13, 0.6 * ldm_np.gradcheck.TOLERANCE, "ldm_np's pass/fail tolerance (1e-6)", color="tab:red", va="top"
)
ax.axvline(1e-6, color="0.7", lw=1, ls=":")
ax.text(1.2e-6, 0.3, "library default h = 1e-6", color="0.4", fontsize=9)
ax.set_xlabel("step h")
ax.set_ylabel("relative error of the directional derivative")
ax.set_ylim(1e-12, 3)
ax.set_title("Finite-difference error vs step size: rounding (left) vs truncation (right)")
ax.legend(loc="lower left")
show(fig, TUTORIAL, "error_vs_h")

best64, best32 = err64.min(), err32.min()
print(
    f"float64 central: best error {best64:.1e} at h = {hs[err64.argmin()]:.0e}; at h = 1e-6: "
    f"{central_error(np.float64, 1e-6):.1e}"
)
print(f"float32 central: best error {best32:.1e} at h = {hs[err32.argmin()]:.0e}")
print(f"float64 one-sided: best error {err64_fwd.min():.1e} at h = {hs[err64_fwd.argmin()]:.0e}")

# %% [markdown]
# Read the figure from right to left. For large `h` all curves fall as `h`
# shrinks, the central ones twice as steeply (slope 2, error `~h^2`) as the
# one-sided one (slope 1). Then rounding takes over and the curves turn back
# up. float32 bottoms out around 1e-5, *above* the 1e-6 tolerance, and at very
# small `h` the float32 perturbation is lost entirely (`x + h == x`), giving
# an error of 1: a float32 check cannot tell a correct gradient from a
# slightly wrong one. That is why the library refuses it outright:

# %%
x32 = x.astype(np.float32)
try:
    numerical_gradient(lambda: (x32**2).sum(), x32)
except TypeError as exc:
    print("numerical_gradient on float32 ->", type(exc).__name__, ":", exc)

# %% [markdown]
# ## 6. A whole module: `check_module`'s table
#
# `check_module(module, inputs)` runs the module's own forward and backward,
# then perturbs **every entry of every parameter** (and of the inputs named in
# `wrt_inputs`) and reports one relative error per array. It costs two forward
# passes per scalar, so we use a tiny VAE encoder in float64:
#
#     x [B, 6] -> dense(6->8) SiLU dense(8->8) SiLU -> mu [B, 3]  and  log_var [B, 3]
#
# The encoder has two outputs; the checker draws a random upstream gradient for
# each, and the encoder's `backward(dmu, dlog_var)` must add the two heads'
# gradients where they meet in the trunk.
#
# The builders initialise biases to 0. We first move every parameter to
# non-trivial values: a zero bias, a gamma of exactly 1, can hide a broken
# backward pass.


# %%
def small_encoder():
    enc = ldm_np.build_encoder(input_size=6, latent_size=3, hidden_size=8, seed=0, dtype="float64")
    r = np.random.default_rng(42)
    for group in enc.params.values():
        for p in group.values():
            p += 0.2 * r.standard_normal(p.shape)  # in place: the module keeps the same arrays
    return enc


encoder = small_encoder()
print(encoder)
x_enc = rng.standard_normal((5, 6))  # [B, input]
report = check_module(encoder, [x_enc])
print(report)
print(f"largest error: {report.max_error:.1e}   all below 1e-6: {report.ok}")

# %% [markdown]
# ## 7. What a wrong gradient looks like
#
# Now we plant two classic bugs, in a copy of the code that lives only in this
# tutorial, and read the table.
#
# **Bug 1: a transposed `dW`.** For a square kernel `x.T @ dy` and its
# transpose have the same shape, so nothing crashes; training even runs,
# badly. We wrap the real backward and transpose one gradient afterwards.


# %%
class TransposedGradEncoder(ldm_np.Encoder):
    """DELIBERATELY WRONG: the real encoder, with enc_dense_1's dW transposed."""

    def backward(self, dmu, dlog_var):
        dx = super().backward(dmu, dlog_var)
        g = self.grads["enc_dense_1"]
        g["kernel"] = g["kernel"].T.copy()  # [8, 8]: same shape, wrong values
        return dx


buggy = TransposedGradEncoder(input_size=6, latent_size=3, hidden_size=8, dtype="float64")
buggy.load_params(small_encoder().params)  # the same weights as above
report_transposed = check_module(buggy, [x_enc])
print(report_transposed)
flagged_transposed = [row.name for row in report_transposed if not row.ok]
print("flagged:", flagged_transposed)

# %% [markdown]
# Exactly one row fails: the wrong `dW` affects no other gradient, because
# `dW` is an *output* of backprop, not passed further down.
#
# **Bug 2: a wrong SiLU derivative.** Suppose `silu_backward` forgot the second
# term of the product rule and returned `ds * sigma(u)`. We swap it in for the
# encoder's module with `unittest.mock.patch` (restored on leaving the
# `with`). Which rows fail now?


# %%
def wrong_silu_backward(dy, cache):
    """DELIBERATELY WRONG: d/du [u sigma(u)] taken as sigma(u) (the product rule half-done)."""
    _, sig = cache
    return dy * sig


with mock.patch.object(vae_module, "silu_backward", wrong_silu_backward):
    report_silu = check_module(small_encoder(), [x_enc])
print(report_silu)
flagged_silu = [row.name for row in report_silu if not row.ok]
print("flagged:", flagged_silu)

# %% [markdown]
# This time the two heads (`enc_mu`, `enc_log_var`) pass, because their
# gradients are computed *before* the first SiLU backward, and everything
# below the first wrong step fails: the error flows down through `dx`. The
# pattern of failing rows points at the layer where the bug lives: the
# highest failing layer sits right below it.
#
# ## Checks
#
# Assertions on what this tutorial showed. Each fails if the lesson were wrong.

# %%
# Hand-written gradients agree with finite differences to ~1e-8 or better (float64).
for name, err in {**errors_dense, **errors_chain, **errors_ln}.items():
    assert err < 1e-8, (name, err)
assert silu_deriv_error < 1e-8, silu_deriv_error
# Leaving LayerNorm's mean/variance paths out gives an error of order 0.1, not rounding noise.
assert err_shortcut > 1e-2, err_shortcut
assert np.abs(dxl.sum(axis=1)).max() < 1e-10  # true dx rows sum to 0
# float64 central differences reach ~1e-10; float32 never gets below the 1e-6 tolerance.
assert best64 < 1e-8, best64
assert best32 > ldm_np.gradcheck.TOLERANCE, best32
assert hs[err32.argmin()] > hs[err64.argmin()]  # float32 needs a larger step
assert err64_fwd.min() > 10 * best64  # one-sided differences are worse
# The whole-encoder check passes ...
assert report.ok and report.max_error < 1e-6, report.max_error
assert len(report) == 2 * 4 + 1  # kernel and bias of four layers, plus the input
# ... and each planted bug is flagged, and only where it belongs.
assert flagged_transposed == ["enc_dense_1.kernel"], flagged_transposed
assert set(flagged_silu) == {
    "enc_dense_0.kernel",
    "enc_dense_0.bias",
    "enc_dense_1.kernel",
    "enc_dense_1.bias",
    "input 0",
}, flagged_silu
assert min(row.error for row in report_transposed if not row.ok) > 1e-2
print("All checks passed.")
