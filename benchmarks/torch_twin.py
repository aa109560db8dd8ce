"""A PyTorch twin of the demo's model, scored by ldm_np's own evaluation.

The same architecture (``benchmarks/torch_ref.py``: ldm_np's layer names and
shapes), trained by a common PyTorch recipe: pixels in [0, 1], per-pixel mean
squared error plus 1e-4 times the KL averaged over the latent dimensions,
Adam 1e-3; the VAE 10,000 steps at batch 128 (about 800 epochs of the 1,597
training digits), the denoiser 3,500 steps at batch 256 with warm-up and
cosine decay to 5% of the rate, an EMA of its weights, time embedded as t / T,
DDIM sampling. The twin then goes through ``ldm_np.evaluation.evaluate_run``
on the demo's split (200 digits held out), so its table reads like the demo's.

Two switches reproduce the experiment that explained the gap between ldm_np
and this recipe (README, "Quality on the digits"):

    python benchmarks/torch_twin.py --seed 0                   # sigmoid output, EMA 0.999 from step 0
    python benchmarks/torch_twin.py --seed 0 --ema-warmup      # ldm_np's EMA warm-up
    python benchmarks/torch_twin.py --seed 0 --ema-warmup --output linear
        # ldm_np's former decoder: standardised pixels, linear output, clipped on the way out

About 4-5 minutes a run on one CPU core. Needs PyTorch (``benchmarks/requirements.txt``).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent  # `python benchmarks/torch_twin.py` from any folder
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.torch_ref import TorchDecoder, TorchDenoiser, TorchEncoder, ddim_timesteps  # noqa: E402
from ldm_np.cli import DEMO_HOLDOUT, held_out_rows  # noqa: E402
from ldm_np.datasets import load_dataset  # noqa: E402
from ldm_np.evaluation import evaluate_run, format_table  # noqa: E402
from ldm_np.schedules import make_schedule  # noqa: E402

LATENT, HIDDEN, LAYERS, T = 8, 256, 4, 1000


class FractionDenoiser(TorchDenoiser):
    """torch_ref's denoiser with the time embedded as t / T (ldm_np's ``time_input="fraction"``)."""

    def forward(self, z_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        m, half = self.layers, self.hidden_size // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half) / (half - 1))
        angles = (t.float() / T)[:, None] * freqs[None, :]
        temb = F.silu(m["time_mlp_1"](torch.cat([angles.sin(), angles.cos()], dim=1)))
        h = m["z_proj"](z_t) + temb
        for i in range(1, self.num_layers + 1):
            u = m[f"denoiser_block_{i}_up"](m[f"denoiser_block_{i}_norm"](h))
            h = h + m[f"denoiser_block_{i}_down"](F.silu(u))
        return m["noise_pred"](h)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", choices=["sigmoid", "linear"], default="sigmoid")
    p.add_argument(
        "--ema-warmup", action="store_true", help="decay min(0.999, (1 + n) / (10 + n)), as ldm_np"
    )
    p.add_argument("--vae-steps", type=int, default=10_000)
    p.add_argument("--denoiser-steps", type=int, default=3_500)
    p.add_argument("--sample-steps", type=int, default=200, help="DDIM steps of the evaluation")
    args = p.parse_args()
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)

    X_all, _ = load_dataset("digits", seed=args.seed)  # [1797, 64] in [0, 1]
    train_rows, held_rows = held_out_rows(len(X_all), DEMO_HOLDOUT, args.seed)
    X_train = X_all[train_rows]
    if args.output == "linear":  # ldm_np's linear decoder: per-pixel mean, one global std
        mean, std, low, high = X_train.mean(0), float(X_train.std()), X_train.min(0), X_train.max(0)
        to_model = lambda x: (x - mean) / std  # noqa: E731
        to_data = lambda x: np.clip(x * std + mean, low, high)  # noqa: E731
        activation, weight = (lambda h: h), std**2  # the same loss in pixel units
    else:
        to_model = to_data = lambda x: x
        activation, weight = torch.sigmoid, 1.0
    X = torch.tensor(to_model(X_train), dtype=torch.float32)

    encoder, decoder = TorchEncoder(64, LATENT, HIDDEN), TorchDecoder(64, LATENT, HIDDEN)
    opt = torch.optim.Adam([*encoder.parameters(), *decoder.parameters()], lr=1e-3)
    start = time.perf_counter()
    for _ in range(args.vae_steps):
        x = X[torch.randint(0, len(X), (128,), generator=gen)]
        mu, log_var = encoder(x)
        x_hat = activation(decoder(mu + torch.exp(0.5 * log_var) * torch.randn_like(mu)))
        kl = (-0.5 * (1 + log_var - mu**2 - log_var.exp())).mean()
        loss = weight * F.mse_loss(x_hat, x) + 1e-4 * kl
        opt.zero_grad()
        loss.backward()
        opt.step()
    vae_seconds = time.perf_counter() - start

    with torch.no_grad():
        mu = encoder(X)[0]
    scale = float(1.0 / mu.std())
    z0_all = mu * scale
    ab_all = torch.tensor(
        np.asarray(make_schedule(T, dtype="float64")["alphas_cumprod"]), dtype=torch.float32
    )
    model, ema = FractionDenoiser(LATENT, HIDDEN, LAYERS), FractionDenoiser(LATENT, HIDDEN, LAYERS)
    ema.load_state_dict(model.state_dict())
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    warmup, total = 200, args.denoiser_steps
    start = time.perf_counter()
    for n in range(total):
        progress = max(n - warmup, 0) / (total - warmup)
        lr = (n + 1) / warmup if n < warmup else 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))
        for group in opt.param_groups:
            group["lr"] = 1e-3 * lr
        z0 = z0_all[torch.randint(0, len(z0_all), (256,), generator=gen)]
        t = torch.randint(0, T, (256,), generator=gen)
        noise = torch.randn_like(z0)
        ab = ab_all[t][:, None]
        loss = F.mse_loss(model(ab.sqrt() * z0 + (1 - ab).sqrt() * noise, t), noise)
        opt.zero_grad()
        loss.backward()
        opt.step()
        decay = min(0.999, (1 + n) / (10 + n)) if args.ema_warmup else 0.999
        with torch.no_grad():
            for shadow, param in zip(ema.parameters(), model.parameters(), strict=True):
                shadow.mul_(decay).add_(param, alpha=1 - decay)
    denoiser_seconds = time.perf_counter() - start

    class Twin:
        """The three methods evaluate_run calls, in data units."""

        @torch.no_grad()
        def sample(
            self, n: int, sampler: str = "ddim", num_inference_steps: int = 50, seed: int = 0
        ) -> np.ndarray:
            torch.manual_seed(10_000 + seed)
            z = torch.randn(n, LATENT)
            ts = ddim_timesteps(T, num_inference_steps)
            for i, t in enumerate(ts):
                eps = ema(z, torch.full((n,), t))
                ab, ab_prev = float(ab_all[t]), float(ab_all[ts[i + 1]]) if i + 1 < len(ts) else 1.0
                z0 = (z - math.sqrt(1 - ab) * eps) / math.sqrt(ab)
                z = z0 * math.sqrt(ab_prev) + math.sqrt(1 - ab_prev) * eps
            return self.decode(z.numpy())

        @torch.no_grad()
        def encode(self, x: np.ndarray) -> np.ndarray:
            return (encoder(torch.tensor(to_model(x), dtype=torch.float32))[0] * scale).numpy()

        @torch.no_grad()
        def decode(self, z: np.ndarray) -> np.ndarray:
            return to_data(activation(decoder(torch.tensor(z) / scale)).numpy().astype(np.float64))

    report = evaluate_run(
        Twin(), X_all, train_rows, held_rows, dataset="digits", num_inference_steps=args.sample_steps
    )
    print(f"PyTorch {torch.__version__}, {torch.get_num_threads()} threads; seed {args.seed}, {vars(args)}")
    print(f"trained in {vae_seconds + denoiser_seconds:.1f} s (VAE {vae_seconds:.1f} s)")
    print(format_table(report))


if __name__ == "__main__":
    main()
