"""The same architecture in PyTorch eager, for the benchmark's reference column.

Imported only when torch is importable; PyTorch is never a dependency of
ldm_np. Layers are kept in ``nn.ModuleDict``s under ldm_np's layer names, so
the weights of an ldm_np model copy over one to one (a torch ``Linear``
stores ``kernel.T``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ldm_np.backend import to_numpy


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """[sin(t w), cos(t w)], w_i = 10000 ** (-i / (half - 1)): ldm_np's "index" embedding."""
    half = dim // 2
    i = torch.arange(half, dtype=torch.float64, device=t.device)
    freqs = torch.exp(-math.log(10000.0) * i / max(half - 1, 1)).to(torch.float32)
    angles = t.to(torch.float32)[:, None] * freqs[None, :]  # [batch, half]
    parts = [torch.sin(angles), torch.cos(angles)]
    if dim % 2:
        parts.append(torch.zeros(t.shape[0], 1, device=t.device))
    return torch.cat(parts, dim=1)


class TorchEncoder(nn.Module):
    def __init__(self, input_size: int, latent_size: int, hidden_size: int) -> None:
        super().__init__()
        h = hidden_size
        self.layers = nn.ModuleDict(
            {
                "enc_dense_0": nn.Linear(input_size, h),
                "enc_dense_1": nn.Linear(h, h),
                "enc_mu": nn.Linear(h, latent_size),
                "enc_log_var": nn.Linear(h, latent_size),
            }
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m = self.layers
        a = F.silu(m["enc_dense_1"](F.silu(m["enc_dense_0"](x))))
        return m["enc_mu"](a), m["enc_log_var"](a)


class TorchDecoder(nn.Module):
    def __init__(self, input_size: int, latent_size: int, hidden_size: int) -> None:
        super().__init__()
        h = hidden_size
        self.layers = nn.ModuleDict(
            {
                "dec_dense_0": nn.Linear(latent_size, h),
                "dec_dense_1": nn.Linear(h, h),
                "dec_output": nn.Linear(h, input_size),
            }
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        m = self.layers
        return m["dec_output"](F.silu(m["dec_dense_1"](F.silu(m["dec_dense_0"](z)))))


class TorchDenoiser(nn.Module):
    def __init__(self, latent_size: int, hidden_size: int, num_layers: int) -> None:
        super().__init__()
        h = hidden_size
        self.hidden_size = h
        self.num_layers = num_layers
        layers: dict[str, nn.Module] = {"time_mlp_1": nn.Linear(h, h), "z_proj": nn.Linear(latent_size, h)}
        for i in range(1, num_layers + 1):
            layers[f"denoiser_block_{i}_norm"] = nn.LayerNorm(h, eps=1e-5)
            layers[f"denoiser_block_{i}_up"] = nn.Linear(h, 4 * h)
            layers[f"denoiser_block_{i}_down"] = nn.Linear(4 * h, h)
        layers["noise_pred"] = nn.Linear(h, latent_size)
        self.layers = nn.ModuleDict(layers)

    def forward(self, z_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        m = self.layers
        temb = F.silu(m["time_mlp_1"](timestep_embedding(t, self.hidden_size)))
        h = m["z_proj"](z_t) + temb
        for i in range(1, self.num_layers + 1):
            u = m[f"denoiser_block_{i}_up"](m[f"denoiser_block_{i}_norm"](h))
            h = h + m[f"denoiser_block_{i}_down"](F.silu(u))
        return m["noise_pred"](h)


@torch.no_grad()
def copy_from_ldm(module: nn.Module, model: Any) -> nn.Module:
    """Copy an ldm_np model's parameters into the torch twin (kernel -> weight.T)."""
    for layer, group in model.params.items():
        target = module.layers[layer]
        if "kernel" in group:
            target.weight.copy_(torch.from_numpy(np.ascontiguousarray(to_numpy(group["kernel"]).T)))
            target.bias.copy_(torch.from_numpy(to_numpy(group["bias"])))
        else:
            target.weight.copy_(torch.from_numpy(to_numpy(group["gamma"])))
            target.bias.copy_(torch.from_numpy(to_numpy(group["beta"])))
    return module


def synchronizer(device: str) -> Any:
    if device == "cuda":
        return torch.cuda.synchronize
    return lambda: None


class TorchVAEStep:
    """The VAE step of harness.VAEStep in torch: same losses, torch.optim.Adam on both halves."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module, x: torch.Tensor, kl_weight: float) -> None:
        self.encoder, self.decoder, self.x, self.kl_weight = encoder, decoder, x, kl_weight
        self.opt = torch.optim.Adam([*encoder.parameters(), *decoder.parameters()], lr=1e-3)

    def __call__(self) -> torch.Tensor:
        x = self.x
        self.opt.zero_grad(set_to_none=True)
        mu, log_var = self.encoder(x)
        z = mu + torch.exp(0.5 * log_var) * torch.randn_like(mu)
        x_hat = self.decoder(z)
        rec = F.mse_loss(x_hat, x)
        kl = (-0.5 * (1.0 + log_var - mu * mu - torch.exp(log_var)).sum(dim=-1)).mean()
        loss = rec + self.kl_weight * kl
        loss.backward()
        self.opt.step()
        return loss.detach()


class TorchDenoiserStep:
    """The denoiser step of harness.DenoiserStep in torch."""

    def __init__(self, model: nn.Module, schedule: dict, z0: torch.Tensor) -> None:
        self.model, self.z0 = model, z0
        dev = z0.device
        self.num_steps = int(schedule["num_steps"])
        self.sqrt_ab = torch.as_tensor(to_numpy(schedule["sqrt_alphas_cumprod"]), device=dev)
        self.sqrt_1m_ab = torch.as_tensor(to_numpy(schedule["sqrt_one_minus_alphas_cumprod"]), device=dev)
        self.opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def __call__(self) -> torch.Tensor:
        z0 = self.z0
        self.opt.zero_grad(set_to_none=True)
        t = torch.randint(0, self.num_steps, (z0.shape[0],), device=z0.device)
        noise = torch.randn_like(z0)
        z_t = self.sqrt_ab[t][:, None] * z0 + self.sqrt_1m_ab[t][:, None] * noise
        loss = F.mse_loss(self.model(z_t, t), noise)
        loss.backward()
        self.opt.step()
        return loss.detach()


class TorchDenoiserForward:
    def __init__(self, model: nn.Module, z_t: torch.Tensor, t: torch.Tensor) -> None:
        self.model, self.z_t, self.t = model, z_t, t

    @torch.inference_mode()
    def __call__(self) -> torch.Tensor:
        return self.model(self.z_t, self.t)


def ddim_timesteps(num_steps: int, num_inference_steps: int) -> list[int]:
    stride = max(num_steps // num_inference_steps, 1)
    return list(range(0, num_steps, stride))[:num_inference_steps][::-1]


@torch.inference_mode()
def sample_loop(
    model: TorchDenoiser, schedule: dict, num_samples: int, sampler: str, steps: int, latent: int, device: str
) -> torch.Tensor:
    """DDPM (every step) or DDIM (eta = 0) with the same update as harness.plain_sample_loop."""
    betas = to_numpy(schedule["betas"]).astype(np.float64)
    alphas = to_numpy(schedule["alphas"]).astype(np.float64)
    ab_all = to_numpy(schedule["alphas_cumprod"]).astype(np.float64)
    post_var = to_numpy(schedule["posterior_variance"]).astype(np.float64)
    x = torch.randn(num_samples, latent, device=device)
    if sampler == "ddpm":
        for t in range(int(schedule["num_steps"]) - 1, -1, -1):
            tt = torch.full((num_samples,), t, dtype=torch.int64, device=device)
            eps = model(x, tt)
            x = (x - float(betas[t] / np.sqrt(1.0 - ab_all[t])) * eps) * float(1.0 / np.sqrt(alphas[t]))
            if t > 0:
                x = x + float(np.sqrt(post_var[t])) * torch.randn_like(x)
        return x
    ts = ddim_timesteps(int(schedule["num_steps"]), steps)
    for i, t in enumerate(ts):
        tt = torch.full((num_samples,), t, dtype=torch.int64, device=device)
        eps = model(x, tt)
        ab = ab_all[t]
        ab_prev = ab_all[ts[i + 1]] if i + 1 < len(ts) else 1.0
        x0 = (x - float(np.sqrt(1.0 - ab)) * eps) * float(1.0 / np.sqrt(ab))
        x = x0 * float(np.sqrt(ab_prev)) + float(np.sqrt(1.0 - ab_prev)) * eps
    return x
