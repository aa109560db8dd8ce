"""The exact optimal denoiser for a finite data set, to test samplers without training.

If the data are n points x_1..x_n (each equally likely), then given
x_t = sqrt(ab) x_0 + sqrt(1 - ab) eps the posterior over which point was
noised is a softmax of Gaussian log-likelihoods, and the best (minimum
squared error) predictions are its averages:

    w_i(x_t, t) = softmax_i( -||x_t - sqrt(ab) x_i||^2 / (2 (1 - ab)) )
    x0_hat = sum_i w_i x_i          = E[x_0 | x_t]
    eps_hat = (x_t - sqrt(ab) x0_hat) / sqrt(1 - ab)   = E[eps | x_t]

A network trained to convergence on these n points would output exactly
this. So a correct sampler driven by the oracle must land on (or very near)
the data points: the diffusion model "memorises" a finite training set
(Karras et al., 2022; Kadkhodaie et al., 2024). Any systematic miss is a
sampler bug, not a training problem.

Run ``python -m ldm_np.oracle`` for the table of DDPM and DDIM samples.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from .backend import get_array_module
from .diffusion import _target, check_prediction_type, check_samples, check_t, gather
from .validation import check_array, check_schedule


class OracleDenoiser:
    """E[model target | x_t, t] for a finite data set, in closed form: callable ``(x_t, t) -> output``.

    data: [n, d] (moved to the schedule's device and dtype once, here);
    prediction_type: what the call returns ("epsilon", "sample" or "v").
    Cost per call: one [batch, d] x [d, n] product for the distances and one
    [batch, n] x [n, d] product for the average; fine for n of a few thousand.
    """

    def __init__(self, data: Any, schedule: dict[str, Any], prediction_type: str = "epsilon") -> None:
        self.prediction_type = check_prediction_type(prediction_type)
        self.schedule = check_schedule(schedule)
        xp = get_array_module(schedule["alphas_cumprod"])
        dt = schedule["alphas_cumprod"].dtype
        check_array(data, "data", shape=(None, data.shape[-1] if hasattr(data, "shape") else None))
        self.data = xp.asarray(data, dtype=dt)  # [n, d]
        self.data_sq = (self.data * self.data).sum(axis=1)  # [n]

    def __repr__(self) -> str:
        n, d = self.data.shape
        return (
            f"OracleDenoiser(n={n}, d={d}, prediction_type={self.prediction_type!r}, "
            f"num_steps={self.schedule['num_steps']}, dtype={self.data.dtype})"
        )

    def weights(self, x_t: Any, t: Any) -> Any:
        """The posterior weights w_i(x_t, t): [batch, n], each row summing to 1.

        The squared distance is expanded as
        ||x_t||^2 - 2 sqrt(ab) x_t . x_i + ab ||x_i||^2, so the only large
        operation is one matrix product. Subtracting each row's maximum before
        the exponential keeps the softmax finite: near t = 0, 1 - ab is 1e-4
        and the logits reach -1e4.
        """
        x_t, t = self._check(x_t, t)
        return self._weights(x_t, t)

    def _check(self, x_t: Any, t: Any) -> tuple[Any, Any]:
        check_samples(x_t, "x_t", self.data.dtype)
        if x_t.shape[1] != self.data.shape[1]:
            raise ValueError(f"x_t must have shape [batch, {self.data.shape[1]}], got {list(x_t.shape)}")
        t = check_t(t, "t", batch=x_t.shape[0], num_steps=self.schedule["num_steps"])
        return x_t, t

    def _weights(self, x_t: Any, t: Any) -> Any:
        xp = get_array_module(x_t)
        a = gather(self.schedule["sqrt_alphas_cumprod"], t)  # [batch, 1]
        s = gather(self.schedule["sqrt_one_minus_alphas_cumprod"], t)  # [batch, 1]
        cross = x_t @ self.data.T  # [batch, n]
        x_sq = (x_t * x_t).sum(axis=1, keepdims=True)  # [batch, 1]
        sq_dist = x_sq - 2.0 * a * cross + (a * a) * self.data_sq  # [batch, n]
        logits = sq_dist * (-0.5 / (s * s))  # [batch, n]
        logits -= logits.max(axis=1, keepdims=True)
        w = xp.exp(logits)  # [batch, n], the largest entry of each row is 1
        w /= w.sum(axis=1, keepdims=True)
        return w

    def __call__(self, x_t: Any, t: Any) -> Any:
        """The optimal model output of ``prediction_type`` at (x_t [batch, d], t [batch] or int)."""
        x_t, t = self._check(x_t, t)
        a = gather(self.schedule["sqrt_alphas_cumprod"], t)  # [batch, 1]
        s = gather(self.schedule["sqrt_one_minus_alphas_cumprod"], t)  # [batch, 1]
        x0_hat = self._weights(x_t, t) @ self.data  # [batch, d]
        eps_hat = (x_t - a * x0_hat) / s  # [batch, d]
        return _target(self.prediction_type, x0_hat, eps_hat, self.schedule, t)


def pairwise_scale(data: np.ndarray) -> dict[str, float]:
    """Distances within ``data`` [n, d]: the smallest, the median nearest-neighbour one, the mean."""
    check_array(data, "data", shape=(None, None))
    d = np.sqrt(((data[:, None, :] - data[None, :, :]) ** 2).sum(axis=-1))  # [n, n]
    n = data.shape[0]
    mean_pair = float(d.sum() / (n * (n - 1)))
    np.fill_diagonal(d, np.inf)
    nn = d.min(axis=1)  # [n]
    return {"min": float(nn.min()), "median_nn": float(np.median(nn)), "mean": mean_pair}


def main(num_points: int = 64, num_samples: int = 512, seed: int = 0) -> list[dict[str, Any]]:
    """Sample with the oracle (DDPM 1000 steps, DDIM 50) for each prediction type; print a table."""
    from .datasets import moons
    from .evaluation.metrics import nearest_distance
    from .samplers import sample
    from .schedules import make_schedule

    schedule = make_schedule(1000, 1e-4, 0.02, "linear", dtype="float32")
    data = moons(num_points, seed=seed, noise=0.05, dtype="float32")  # [n, 2]
    scale = pairwise_scale(data.astype(np.float64))
    print(
        f"data: {num_points} points of the 2-D moons (d = 2, about unit scale), float32; "
        f"linear schedule, T = 1000, beta 1e-4..0.02"
    )
    print(
        f"scale: between data points, median nearest-neighbour distance {scale['median_nn']:.3e}, "
        f"mean distance {scale['mean']:.3e}, smallest distance {scale['min']:.3e}"
    )
    print(
        f"The last step still sees noise of std sqrt(1 - ab_0) = {float(schedule['sqrt_one_minus_alphas_cumprod'][0]):.2f}: "
        "a sample that ends between two points closer than a few times that is their blend."
    )
    print(f"{num_samples} samples from x_T ~ N(0, I), seed {seed}; distances to the nearest data point:\n")
    header = f"{'sampler':<10}{'steps':>6}  {'prediction':<10}{'median':>10}{'mean':>10}{'max':>10}{'points hit':>12}{'time':>8}"
    print(header)
    print("-" * len(header))
    rows = []
    for sampler, steps in (("ddpm", 1000), ("ddim", 50)):
        for prediction_type in ("epsilon", "sample", "v"):
            oracle = OracleDenoiser(data, schedule, prediction_type)
            rng = np.random.default_rng(seed)
            start = time.perf_counter()
            x0 = sample(
                oracle,
                schedule,
                num_samples,
                sampler=sampler,
                num_inference_steps=steps,
                prediction_type=prediction_type,
                rng=rng,
                shape=data.shape[1],
            )
            seconds = time.perf_counter() - start
            dist = nearest_distance(x0, data)  # [num_samples]
            hit = len(np.unique(np.argmin(((x0[:, None, :] - data[None]) ** 2).sum(-1), axis=1)))
            row = {
                "sampler": sampler,
                "steps": steps,
                "prediction_type": prediction_type,
                "median": float(np.median(dist)),
                "mean": float(dist.mean()),
                "max": float(dist.max()),
                "hit": hit,
                "seconds": seconds,
            }
            rows.append(row)
            print(
                f"{sampler:<10}{steps:>6}  {prediction_type:<10}"
                f"{row['median']:>10.2e}{row['mean']:>10.2e}{row['max']:>10.2e}"
                f"{f'{hit}/{num_points}':>12}{seconds:>7.2f}s"
            )
    return rows


if __name__ == "__main__":
    main()
