"""Shared test setup: Hypothesis profiles, array strategies, seeded generators.

Profiles (pick one with HYPOTHESIS_PROFILE=dev|ci|default):

- ``dev``: the local default, 25 examples per property.
- ``ci``: Hypothesis loads its built-in "ci" profile when the CI variable is
  set; it is re-registered here trimmed (15 examples, derandomized, no
  database) so CI stays fast and reproducible, and prints the blob needed to
  replay a failure.
- ``default``: Hypothesis's own defaults (100 examples), without the deadline:
  a first call into BLAS can take longer than 200 ms on a loaded machine.

Strategies and helpers are imported by the test modules with
``from conftest import ...``.
"""

from __future__ import annotations

import os

# One BLAS thread per test process: the tests use small matrices, and on a
# shared 2-core machine two OpenBLAS threads fighting other work made some
# tests 3-5x slower. Set before NumPy is imported; subprocesses inherit it.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

settings.register_profile("default", deadline=None)
settings.register_profile("dev", max_examples=25, deadline=None)
settings.register_profile(
    "ci",
    max_examples=15,
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev"))


# --------------------------------------------------------------------------
# Strategies
# --------------------------------------------------------------------------

batches = st.integers(min_value=1, max_value=8)
widths = st.integers(min_value=1, max_value=16)


def bounded_floats(bound: float = 3.0) -> st.SearchStrategy[float]:
    """float64 values in [-bound, bound]: no NaN, no infinity, no subnormals."""
    return st.floats(-bound, bound, allow_nan=False, allow_infinity=False, allow_subnormal=False, width=64)


def float_arrays(shape: Any, bound: float = 3.0) -> st.SearchStrategy[np.ndarray]:
    """float64 arrays of ``shape`` (a tuple or a strategy of tuples) with bounded elements."""
    return hnp.arrays(np.float64, shape, elements=bounded_floats(bound))


def checkable_floats(
    bound: float = 2.0, smallest: float = 0.1, zero: bool = True
) -> st.SearchStrategy[float]:
    """float64 values that are 0 (if ``zero``) or have magnitude in [smallest, bound].

    Central differences carry an absolute rounding error of about
    eps * |f| / h ~ 1e-10 |f|, whatever the gradient's size. An array whose
    entries are all tiny but not zero (say 1e-6) has a gradient too small to
    check to a relative 1e-6 against that noise, which would be a false alarm.
    Zero itself is exact and stays in.
    """
    magnitude = st.floats(smallest, bound, allow_nan=False, allow_infinity=False, width=64)
    signed = st.one_of(magnitude, magnitude.map(lambda v: -v))
    return st.one_of(st.just(0.0), signed) if zero else signed


def checkable_arrays(
    shape: Any, bound: float = 2.0, smallest: float = 0.1, zero: bool = True
) -> st.SearchStrategy[np.ndarray]:
    """float64 arrays for gradient checks (see ``checkable_floats``)."""
    return hnp.arrays(np.float64, shape, elements=checkable_floats(bound, smallest, zero))


@st.composite
def matrices(draw: Any, bound: float = 3.0, batch: Any = batches, width: Any = widths) -> np.ndarray:
    """float64 [batch, width] arrays, batch in 1..8 and width in 1..16 by default."""
    return draw(float_arrays((draw(batch), draw(width)), bound))


# --------------------------------------------------------------------------
# Fixtures and helpers
# --------------------------------------------------------------------------


@pytest.fixture
def rng() -> np.random.Generator:
    """A fresh, fixed-seed generator for each test."""
    return np.random.default_rng(20240601)


def make_rng(seed: int) -> np.random.Generator:
    """A seeded generator, for use inside Hypothesis tests (fixtures are not reset per example)."""
    return np.random.default_rng(seed)


def perturb_params(model: Any, rng: np.random.Generator, scale: float = 0.3) -> Any:
    """Move every parameter of ``model`` away from its initial value, in place.

    Zero biases, unit gammas and zero betas hide broken backward passes (a
    dropped bias term or a gamma that is never multiplied in looks correct at
    the initial point), so gradient checks run from a perturbed point.
    Returns ``model``.
    """
    for group in model.params.values():
        for value in group.values():
            value += (scale * rng.standard_normal(value.shape)).astype(value.dtype)
    return model


def all_params(model: Any) -> list[tuple[str, str, Any]]:
    """``[(layer, name, array)]`` for every parameter, in the model's order."""
    return [(layer, name, value) for layer, group in model.params.items() for name, value in group.items()]


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print how many generated bad inputs were tried and refused correctly."""
    import sys

    module = sys.modules.get("test_bad_input")
    cases = getattr(module, "BAD_INPUT_CASES", None)
    if cases and cases["tried"]:
        terminalreporter.write_line(
            f"bad-input cases: {cases['tried']} tried, {cases['refused correctly']} refused with the right error"
        )
