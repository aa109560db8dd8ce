"""Small helpers shared by the tutorials: fast mode and saving/showing figures.

``LDM_NP_FAST=1`` shrinks every tutorial's sizes so the whole set runs in the
test suite in seconds; the lessons and the checks at the end stay the same.
Figures are saved under ``tutorials/figures/<tutorial>/`` and also shown
when a display is available (in Jupyter or VS Code cells).
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

FAST = os.environ.get("LDM_NP_FAST", "") not in ("", "0")
INTERACTIVE = matplotlib.get_backend().lower() not in ("agg", "pdf", "svg", "ps", "cairo", "template")
FIGURES = Path(__file__).resolve().parent / "figures"


def pick(normal, fast):
    """``fast`` in fast mode, else ``normal``: sizes, step counts, sample counts."""
    return fast if FAST else normal


def show(fig, tutorial: str, name: str) -> Path:
    """Save ``fig`` as tutorials/figures/<tutorial>/<name>.png; display it when interactive."""
    import matplotlib.pyplot as plt

    folder = FIGURES / tutorial
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    fig.savefig(path, dpi=120, bbox_inches="tight")
    if INTERACTIVE:
        plt.show()
    plt.close(fig)
    print(f"[figure] {path.relative_to(FIGURES.parent.parent)}")
    return path
