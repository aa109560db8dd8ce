"""The MLP denoiser: (z_t, t) -> eps_hat, in the VAE's latent space.

    emb   = sinusoidal(t)                          [batch, hidden]
    temb  = SiLU(time_mlp_1(emb))                  [batch, hidden]
            (+ label_embed[y] when class-conditional)
    h     = z_proj(z_t) + temb                     [batch, hidden]
    h     = h + down(SiLU(up(LayerNorm(h))))       num_layers times
    out   = noise_pred(h)                          [batch, latent]

Layer names follow Edifice's ``LatentDiffusion``, the design ldm_np keeps: ``time_mlp_1``, ``z_proj``,
``denoiser_block_{i}_norm``, ``denoiser_block_{i}_up``,
``denoiser_block_{i}_down`` (i from 1), ``noise_pred``; a class-conditional
model adds ``label_embed``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import anomaly
from .backend import get_array_module
from .layers import (
    TIME_INPUTS,
    dense_backward,
    dense_forward,
    init_dense,
    init_layernorm,
    residual_block_backward,
    residual_block_forward,
    silu_backward,
    silu_forward,
    timestep_embedding,
)
from .module import Module
from .validation import check_array, check_choice, check_dtype_name, check_int, check_timesteps


def label_embedding_forward(labels: Any, table: Any) -> tuple[Any, Any]:
    """Look up one row per label: out[b] = table[labels[b]].

    labels: [batch] integers, table: [num_labels, hidden] -> [batch, hidden].
    """
    return table[labels], (labels, table.shape)


def label_embedding_backward(dout: Any, cache: Any) -> Any:
    """dtable[k] = sum of dout[b] over the b with labels[b] == k.

    Uses ``xp.add.at``: plain fancy-index ``+=`` would count a label that
    appears twice in the batch only once.
    """
    labels, shape = cache
    xp = get_array_module(dout)
    dtable = xp.zeros(shape, dtype=dout.dtype)
    xp.add.at(dtable, labels, dout)
    return dtable


class Denoiser(Module):
    """Predicts the noise in a noisy latent: eps_hat = denoiser(z_t, t [, labels])."""

    def __init__(
        self,
        latent_size: int,
        hidden_size: int,
        num_layers: int,
        num_steps: int,
        *,
        time_input: str = "index",
        num_classes: int | None = None,
        seed: int = 0,
        dtype: Any = "float32",
        device: str = "cpu",
    ) -> None:
        self.latent_size = check_int(latent_size, "latent_size")
        self.hidden_size = check_int(hidden_size, "hidden_size")
        self.num_layers = check_int(num_layers, "num_layers", minimum=0)
        self.num_steps = check_int(num_steps, "num_steps")
        self.time_input = check_choice(time_input, "time_input", TIME_INPUTS)
        self.num_classes = None if num_classes is None else check_int(num_classes, "num_classes")
        dt = check_dtype_name(dtype)
        rng = np.random.default_rng(check_int(seed, "seed", minimum=0))
        h = self.hidden_size
        params = {
            "time_mlp_1": init_dense(rng, h, h, dt),
            "z_proj": init_dense(rng, self.latent_size, h, dt),
        }
        for i in range(1, self.num_layers + 1):
            params[f"denoiser_block_{i}_norm"] = init_layernorm(h, dt)
            params[f"denoiser_block_{i}_up"] = init_dense(rng, h, 4 * h, dt)
            params[f"denoiser_block_{i}_down"] = init_dense(rng, 4 * h, h, dt)
        params["noise_pred"] = init_dense(rng, h, self.latent_size, dt)
        if self.num_classes is not None:
            # One extra row, index num_classes, is the "null" label used for
            # the unconditional prediction in classifier-free guidance.
            table = rng.normal(0.0, 1.0 / np.sqrt(h), size=(self.num_classes + 1, h))
            params["label_embed"] = {"table": table.astype(dt)}
        super().__init__(params, device)

    @property
    def null_label(self) -> int | None:
        """The label index that means "no class" (None for an unconditional model)."""
        return self.num_classes

    def _config_repr(self) -> str:
        extra = "" if self.num_classes is None else f", num_classes={self.num_classes}"
        return (
            f"latent_size={self.latent_size}, hidden_size={self.hidden_size}, "
            f"num_layers={self.num_layers}, num_steps={self.num_steps}, "
            f"time_input={self.time_input!r}{extra}"
        )

    def __call__(self, z_t: Any, t: Any, labels: Any = None) -> Any:
        check_array(z_t, "z_t", shape=(None, self.latent_size), dtype=self.dtype)
        check_timesteps(t, "t", batch=z_t.shape[0], num_steps=self.num_steps)
        if self.num_classes is None:
            if labels is not None:
                raise ValueError("labels were given, but this denoiser is unconditional (num_classes=None)")
        elif labels is not None:
            check_timesteps(labels, "labels", batch=z_t.shape[0], num_steps=self.num_classes + 1)
        return self.forward(z_t, t, labels)

    def forward(self, z_t: Any, t: Any, labels: Any = None) -> Any:
        """The unchecked forward pass. ``labels=None`` means the null label."""
        p = self.params
        xp = self.xp
        emb = timestep_embedding(t, self.hidden_size, self.num_steps, self.time_input, dtype=self.dtype)
        temb, c_t = dense_forward(emb, **p["time_mlp_1"])  # [batch, hidden]
        temb, s_t = silu_forward(temb)
        anomaly.check(temb, "Denoiser", "time_mlp_1", "forward")
        c_lab = None
        if self.num_classes is not None:
            if labels is None:
                labels = xp.full(z_t.shape[0], self.null_label, dtype=xp.int64)
            lab, c_lab = label_embedding_forward(labels, p["label_embed"]["table"])
            anomaly.check(lab, "Denoiser", "label_embed", "forward")
            temb = temb + lab  # not in place: temb is in SiLU's cache
        h, c_z = dense_forward(z_t, **p["z_proj"])  # [batch, hidden]
        h = anomaly.check(h + temb, "Denoiser", "z_proj", "forward")
        blocks = []
        for i in range(1, self.num_layers + 1):
            h, c = residual_block_forward(
                h,
                p[f"denoiser_block_{i}_norm"],
                p[f"denoiser_block_{i}_up"],
                p[f"denoiser_block_{i}_down"],
            )
            anomaly.check_residual_block(h, c, "Denoiser", f"denoiser_block_{i}")
            blocks.append(c)
        out, c_out = dense_forward(h, **p["noise_pred"])  # [batch, latent]
        anomaly.check(out, "Denoiser", "noise_pred", "forward")
        self._cache = (c_t, s_t, c_lab, c_z, blocks, c_out)
        return out

    def backward(self, dout: Any) -> Any:
        """Fill ``grads`` from dL/d(output); return dL/dz_t [batch, latent_size].

        There is no gradient to ``t`` (integers) or to the labels.
        """
        c_t, s_t, c_lab, c_z, blocks, c_out = self._take_cache()
        check_array(dout, "dout", shape=(c_z[0].shape[0], self.latent_size), dtype=self.dtype, finite=False)
        g = self.grads
        dh, g["noise_pred"]["kernel"], g["noise_pred"]["bias"] = dense_backward(dout, c_out)
        anomaly.check_layers("Denoiser", "backward", ("noise_pred", g["noise_pred"]), ("noise_pred", dh))
        for i in range(self.num_layers, 0, -1):
            dh, dnorm, dup, ddown = residual_block_backward(dh, blocks[i - 1])
            g[f"denoiser_block_{i}_norm"].update(dnorm)
            g[f"denoiser_block_{i}_up"].update(dup)
            g[f"denoiser_block_{i}_down"].update(ddown)
            b = f"denoiser_block_{i}"
            anomaly.check_layers(
                "Denoiser", "backward", (f"{b}_down", ddown), (f"{b}_up", dup), (f"{b}_norm", dnorm), (b, dh)
            )
        dz_t, g["z_proj"]["kernel"], g["z_proj"]["bias"] = dense_backward(dh, c_z)
        anomaly.check_layers("Denoiser", "backward", ("z_proj", g["z_proj"]), ("z_proj", dz_t))
        # h = z_proj(z_t) + temb, so temb receives dh unchanged.
        if c_lab is not None:
            g["label_embed"]["table"] = label_embedding_backward(dh, c_lab)
        dtemb = silu_backward(dh, s_t)
        # The time MLP's input is the fixed sinusoidal embedding: its gradient is not used.
        _, g["time_mlp_1"]["kernel"], g["time_mlp_1"]["bias"] = dense_backward(dtemb, c_t)
        anomaly.check_layers("Denoiser", "backward", ("time_mlp_1", g["time_mlp_1"]))
        return dz_t
