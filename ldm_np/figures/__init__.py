"""The pictures: plots of samples, losses, schedules and processes, and the figures a run writes.

- ``plots``: one function a figure, each returning a matplotlib ``Figure``.
- ``report``: the set of figures ``python -m ldm_np train`` and ``demo`` write to a run folder,
  chosen by the shape of the data.
"""

from .plots import (
    GENERATED_COLOR,
    REAL_COLOR,
    feature_histograms,
    forward_noising,
    guidance_grid,
    image_grid,
    latent_scatter,
    loss_curves,
    nearest_neighbours,
    real_vs_generated,
    reconstructions,
    reverse_process,
    reverse_process_gif,
    scatter_2d,
    schedule_plot,
)

__all__ = [
    "GENERATED_COLOR",
    "REAL_COLOR",
    "feature_histograms",
    "forward_noising",
    "guidance_grid",
    "image_grid",
    "latent_scatter",
    "loss_curves",
    "nearest_neighbours",
    "real_vs_generated",
    "reconstructions",
    "reverse_process",
    "reverse_process_gif",
    "scatter_2d",
    "schedule_plot",
]
