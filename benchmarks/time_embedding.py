"""Embed t or t / T? The denoiser's time input, measured on the digits.

The design ldm_np follows divides t by the number of steps before the
sinusoidal embedding ("fraction"); DDPM embeds the index t itself ("index",
ldm_np's default). With t / T in [0, 1) only the fastest few channels change
across the schedule. This script trains one VAE, then two denoisers on its
latents with the same seed and budget, one per time input, all on the demo's
1,597 training digits, and prints the final training loss and the demo's
evaluation (``evaluate_run``: matched sizes, two feature spaces, memorisation).

    python benchmarks/time_embedding.py            # about 9 minutes per seed with one BLAS thread
    python benchmarks/time_embedding.py --quick    # a smoke run
"""

from __future__ import annotations

import argparse

import numpy as np

from ldm_np.cli import DEMO_CONFIG, DEMO_HOLDOUT, held_out_rows
from ldm_np.datasets import load_dataset
from ldm_np.evaluation import evaluate_run, summarise
from ldm_np.pipeline import LatentDiffusion


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = parser.parse_args()
    X, _ = load_dataset("digits", seed=0)  # the data and split of the demo's seed 0
    kept, held = held_out_rows(X.shape[0], DEMO_HOLDOUT, 0)
    config = dict(DEMO_CONFIG)
    # The denoiser as README's table was measured: batch 256 for 3,500 steps (the demo's
    # batch 512 for 1,750 sees as many latents; README, "Quality on the digits").
    config.update(denoiser_batch_size=256, denoiser_steps=3500)
    num_samples, steps = None, 200  # None: as many as a real half holds, as the demo
    if args.quick:
        config.update(vae_steps=20, denoiser_steps=20, hidden_size=32, num_layers=1)
        num_samples, steps = 200, 10
    vae = LatentDiffusion(input_size=64, **config).fit_vae(X[kept], progress=False)
    print(
        f"digits, {config['denoiser_steps']} denoiser steps, hidden {config['hidden_size']}, one shared VAE; "
        f"DDIM {steps}, 3 sample seeds"
    )
    print("time input | seed | final loss (mean of last 10 logs) | FD ratio, classifier / PCA | memorisation")
    print("--- | --- | --- | --- | ---")
    for seed in args.seeds:
        for time_input in ("index", "fraction"):
            model = LatentDiffusion(input_size=64, **dict(config, time_input=time_input, seed=seed))
            model.encoder.load_params(vae.encoder.params)
            model.decoder.load_params(vae.decoder.params)
            model.fit_denoiser(X[kept], progress=False)
            loss = np.mean([v for _, v in model.denoiser_state.history[-10:]])
            report = evaluate_run(
                model, X, kept, held, dataset="digits", num_samples=num_samples, num_inference_steps=steps
            )
            summary = summarise(report)
            classifier, pca = (summary[space]["samples"]["ratio"][0] for space in report["spaces"])
            print(
                f"{time_input} | {seed} | {loss:.4f} | {classifier:.2f} / {pca:.2f} | "
                f"{100 * summary['memorisation'][0]:.1f}%"
            )


if __name__ == "__main__":
    main()
