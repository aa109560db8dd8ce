"""The seed's claim, measured: latent diffusion against the same denoiser on the raw pixels.

The design ldm_np follows claims latent diffusion costs O(latent_dim) per step
against O(input_dim) for diffusion in the full space, with similar quality.
For this MLP denoiser the cost of a step is set by the hidden width: the input
size only enters the first and last dense layers. This script prints, on the
digits, for both models trained like the demo (the same 200 digits held out,
the same denoiser budget): parameters, FLOPs per training step, training time,
sampling time per sample, and the demo's evaluation (``evaluate_run``: matched
sizes, two feature spaces, precision and recall, memorisation).

    python benchmarks/latent_vs_full.py            # about 8 minutes on 2 CPU cores
    python benchmarks/latent_vs_full.py --quick    # a smoke run: tiny budgets, numbers meaningless
"""

from __future__ import annotations

import argparse
import time

from ldm_np.cli import DEMO_CONFIG, DEMO_HOLDOUT, held_out_rows
from ldm_np.datasets import load_dataset
from ldm_np.evaluation import evaluate_run, summarise
from ldm_np.module import iter_params
from ldm_np.pipeline import LatentDiffusion


class PixelSpaceDiffusion(LatentDiffusion):
    """The same denoiser run directly on the standardised pixels: no VAE.

    Encoding is the identity (the "latent" is the data), so stage 1 only
    measures the data's mean and scale; everything else (scale factor,
    schedule, EMA, sampler) is shared with ``LatentDiffusion``.
    """

    def __init__(self, **config):
        # The pixels standardised, as the diffusion literature does; no decoder to squash them.
        super().__init__(**dict(config, latent_size=config["input_size"], output_activation="linear"))

    def fit_vae(self, X, **_):
        self._fit_data_stats(self._prepare(X))
        return self

    def _encode_standardized(self, Xs, chunk=4096):
        return Xs, self.xp.zeros_like(Xs)

    def decode(self, z):
        return self.unstandardize(z * (1.0 / self.scale_factor))


def dense_flops(model) -> int:
    """Multiply-adds x 2 of every dense kernel for one sample's forward pass."""
    return sum(2 * p.size for layer, name, p in iter_params(model.params) if name == "kernel")


def run(model, X, rows, name, num_samples, steps):
    """Train ``model`` on X[kept] like the demo, evaluate it like the demo; one row of the table."""
    kept, held = rows
    started = time.perf_counter()
    model.fit_vae(X[kept], progress=False)
    vae_seconds = time.perf_counter() - started
    started = time.perf_counter()
    model.fit_denoiser(X[kept], progress=False)
    denoiser_seconds = time.perf_counter() - started
    report = evaluate_run(
        model, X, kept, held, dataset="digits", num_samples=num_samples, num_inference_steps=steps
    )  # sample seeds 0, 1, 2 whatever the training seed, as the demo
    summary = summarise(report)
    classifier, pca = (summary[space]["samples"] for space in report["spaces"])
    batch = model.config.denoiser_batch_size
    return {
        "model": name,
        "denoiser params": model.denoiser.num_params,
        "GFLOP / train step": 3 * dense_flops(model.denoiser) * batch / 1e9,  # forward + 2x for backward
        "stage-1 s": vae_seconds,
        "stage-2 s": denoiser_seconds,
        f"ms / sample (DDIM {steps})": 1000
        * report["sampling_seconds"]
        / (report["size"] * report["sample_seeds"]),
        "FD ratio, classifier": classifier["ratio"][0],
        "FD ratio, PCA": pca["ratio"][0],
        "precision / recall, classifier": f"{classifier['precision'][0]:.2f} / {classifier['recall'][0]:.2f}",
        "memorisation": f"{100 * summary['memorisation'][0]:.1f}%",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny budgets (a smoke run)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    X, _ = load_dataset("digits", seed=args.seed)  # the demo's data and split
    rows = held_out_rows(X.shape[0], DEMO_HOLDOUT, args.seed)
    config = {k: v for k, v in DEMO_CONFIG.items()}
    # The denoiser as README's table was measured: batch 256 for 3,500 steps (the demo's
    # batch 512 for 1,750 sees as many latents; README, "Quality on the digits").
    config.update(denoiser_batch_size=256, denoiser_steps=3500)
    num_samples, steps = None, 200  # None: as many as a real half holds, as the demo
    if args.quick:
        config.update(vae_steps=20, denoiser_steps=20, hidden_size=32, num_layers=1)
        num_samples, steps = 200, 10
    config["seed"] = args.seed
    results = [
        run(
            LatentDiffusion(input_size=64, **config),
            X,
            rows,
            f"latent (z: {config['latent_size']})",
            num_samples,
            steps,
        ),
        run(
            PixelSpaceDiffusion(input_size=64, **config),
            X,
            rows,
            "full space (x: 64)",
            num_samples,
            steps,
        ),
    ]
    keys = list(results[0])
    print(
        f"digits, {config['denoiser_steps']} denoiser steps at batch {config['denoiser_batch_size']}, hidden {config['hidden_size']}"
    )
    print(" | ".join(keys))
    print(" | ".join("---" for _ in keys))
    for row in results:
        print(" | ".join(f"{v:.3g}" if isinstance(v, float) else str(v) for v in row.values()))


if __name__ == "__main__":
    main()
