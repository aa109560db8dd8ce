"""Embed t or t / T? The denoiser's time input, measured on the digits.

The design ldm_np follows divides t by the number of steps before the
sinusoidal embedding ("fraction"); DDPM embeds the index t itself ("index",
ldm_np's default). With t / T in [0, 1) only the fastest few channels change
across the schedule. This script trains one VAE, then two denoisers on its
latents with the same seed and budget, one per time input, and prints the
final training loss and the Frechet distance of 1,000 samples to the data
against the real-data floor.

    python benchmarks/time_embedding.py            # about 2x the demo's stage 2 on 2 CPU cores
    python benchmarks/time_embedding.py --quick    # a smoke run
"""

from __future__ import annotations

import argparse

import numpy as np

from ldm_np.cli import DEMO_CONFIG
from ldm_np.datasets import load_digits
from ldm_np.evaluation import evaluate_model
from ldm_np.pipeline import LatentDiffusion


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = parser.parse_args()
    X, _ = load_digits()
    config = dict(DEMO_CONFIG)
    num_samples = 1000
    if args.quick:
        config.update(vae_steps=20, denoiser_steps=20, hidden_size=32, num_layers=1)
        num_samples = 100
    vae = LatentDiffusion(input_size=64, **config).fit_vae(X, progress=False)
    print(
        f"digits, {config['denoiser_steps']} denoiser steps, hidden {config['hidden_size']}, one shared VAE"
    )
    print("time input | seed | final loss (mean of last 10 logs) | FD | FD floor | FD / floor")
    print("--- | --- | --- | --- | --- | ---")
    for seed in args.seeds:
        for time_input in ("index", "fraction"):
            model = LatentDiffusion(input_size=64, **dict(config, time_input=time_input, seed=seed))
            model.encoder.load_params(vae.encoder.params)
            model.decoder.load_params(vae.decoder.params)
            model.fit_denoiser(X, progress=False)
            loss = np.mean([v for _, v in model.denoiser_state.history[-10:]])
            r = evaluate_model(model, X, dataset="digits", num_samples=num_samples, seed=seed)
            print(
                f"{time_input} | {seed} | {loss:.4f} | {r['fd']:.3g} | {r['fd_floor']:.3g} | {r['fd_ratio']:.2f}"
            )


if __name__ == "__main__":
    main()
