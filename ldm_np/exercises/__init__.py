"""Classroom exercises cut from the library's own source, and their grader.

A chosen function body sits between two comment lines, ``### BEGIN SOLUTION
<id>`` and ``### END SOLUTION``, placed after the function's docstring: the
docstring (task, shapes, formula) is what the student keeps, the region is
what the student writes. ``EXERCISES`` below is the table of exercises: id,
file:function, tutorial, the tests that grade it and, for gradients, a probe
that measures the largest relative error. From the project root:

    python -m ldm_np.exercises list                  # the exercises and their tutorials
    python -m ldm_np.exercises check                 # markers balanced, ids and places match the table
    python -m ldm_np.exercises build OUT             # a student copy of the whole project
    python -m ldm_np.exercises grade OUT [--exercise ID]

``build`` copies the project (package, tests, tutorials, docs, pyproject,
requirements; not .git, virtual environments, caches or run outputs) and
replaces each region by ``raise NotImplementedError("exercise <id>")`` at the
marker's indentation. ``grade`` runs, in one ``python -m pytest`` subprocess
started in OUT with OUT first on PYTHONPATH, the tests the table maps to each
exercise, plus the gradient probes, and prints one row per exercise: passed,
failed, or not attempted (its region still raises). It checks that every
ldm_np module the subprocess imported came from OUT, not from an installed
copy. The grader is the test suite itself: the same command serves a student
checking one exercise and an instructor grading a submission.

The subprocess loads a copy of this file as a pytest plugin (the ``pytest_*``
hooks at the bottom record each test's outcome and whether it stopped on an
exercise's stub), so the grading logic is the grader's own, never the
submission's. In normal use the hooks do nothing.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent

TUTORIALS = (
    "01_dense_and_backprop",
    "02_vae",
    "03_noise_schedules",
    "04_denoiser",
    "05_sampling",
    "06_latent_diffusion",
    "07_guidance",
    "08_gpu_and_speed",
)


# --------------------------------------------------------------------------
# Gradient probes: the largest relative error of an exercise's gradient
# --------------------------------------------------------------------------
# Each probe imports ldm_np inside the function, so in the grading subprocess
# it checks the copy's code. Fixed seeds, float64, non-trivial values (zero
# biases and unit gammas hide broken backward passes).


def _max_error(
    forward: Callable[[], Any], arrays: Sequence[Any], analytic: Sequence[Any], dout: Any
) -> float:
    """max over ``arrays`` of rel_error(analytic gradient, numerical gradient of sum(forward() * dout))."""
    from ldm_np.gradcheck import numerical_gradient, rel_error

    if len(analytic) != len(arrays):
        raise ValueError(f"expected {len(arrays)} gradients, got {len(analytic)}")
    return max(
        rel_error(g, numerical_gradient(forward, a, dout)) for a, g in zip(arrays, analytic, strict=True)
    )


def probe_dense_backward() -> float:
    from ldm_np.layers import dense_backward, dense_forward

    rng = np.random.default_rng(0)
    x, kernel, bias = rng.standard_normal((4, 5)), rng.standard_normal((5, 3)), rng.standard_normal(3)
    y, cache = dense_forward(x, kernel, bias)  # [4, 3]
    dy = rng.standard_normal(y.shape)
    grads = dense_backward(dy, cache)
    return _max_error(lambda: dense_forward(x, kernel, bias)[0], (x, kernel, bias), grads, dy)


def probe_silu_backward() -> float:
    from ldm_np.layers import silu_backward, silu_forward

    rng = np.random.default_rng(1)
    x = 2.0 * rng.standard_normal((4, 6))
    y, cache = silu_forward(x)
    dy = rng.standard_normal(y.shape)
    return _max_error(lambda: silu_forward(x)[0], (x,), (silu_backward(dy, cache),), dy)


def probe_layernorm_backward() -> float:
    from ldm_np.layers import layernorm_backward, layernorm_forward

    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 6))
    gamma, beta = 1.0 + 0.3 * rng.standard_normal(6), 0.3 * rng.standard_normal(6)
    y, cache = layernorm_forward(x, gamma, beta)
    dy = rng.standard_normal(y.shape)
    grads = layernorm_backward(dy, cache)
    return _max_error(lambda: layernorm_forward(x, gamma, beta)[0], (x, gamma, beta), grads, dy)


def probe_reparameterize_backward() -> float:
    from ldm_np.vae import reparameterize_backward, reparameterize_forward

    rng = np.random.default_rng(3)
    mu, log_var, eps = (rng.standard_normal((4, 3)) for _ in range(3))
    z, cache = reparameterize_forward(mu, log_var, eps)
    dz = rng.standard_normal(z.shape)
    grads = reparameterize_backward(dz, cache)
    return _max_error(lambda: reparameterize_forward(mu, log_var, eps)[0], (mu, log_var), grads, dz)


def probe_kl_divergence_backward() -> float:
    from ldm_np.losses import kl_divergence, kl_divergence_backward, kl_divergence_forward

    rng = np.random.default_rng(4)
    mu, log_var = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    dloss = 0.7
    grads = kl_divergence_backward(dloss, kl_divergence_forward(mu, log_var)[1])
    return _max_error(lambda: dloss * kl_divergence(mu, log_var), (mu, log_var), grads, None)


def probe_diffusion_loss() -> float:
    from ldm_np.diffusion import diffusion_loss
    from ldm_np.schedules import make_schedule

    rng = np.random.default_rng(5)
    schedule = make_schedule(1000, 1e-4, 0.02, "linear", dtype="float64")
    out, x0, noise = (rng.standard_normal((4, 3)) for _ in range(3))
    t = np.array([0, 100, 300, 999])
    errors = []
    for prediction_type, gamma in (("epsilon", None), ("v", 5.0)):
        _, dout = diffusion_loss(schedule, out, x0, noise, t, prediction_type, gamma)
        errors.append(
            _max_error(
                lambda p=prediction_type, g=gamma: diffusion_loss(schedule, out, x0, noise, t, p, g)[0],
                (out,),
                (dout,),
                None,
            )
        )
    return max(errors)


# --------------------------------------------------------------------------
# The exercises
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Exercise:
    """One exercise: where its region is, which tutorial it belongs to, what grades it.

    ``tests`` are pytest node ids relative to the project root (a test
    function stands for all its parametrizations). Each is chosen to reach no
    other exercise's region, so an exercise passes as soon as its own region
    is right, whatever the state of the others. ``probe`` (gradient exercises
    only) returns the largest relative error of the gradient it computes.
    """

    id: str
    location: str  # "path/to/file.py:function" or "path:Class.method"
    tutorial: str
    tests: tuple[str, ...]
    probe: Callable[[], float] | None = None

    @property
    def path(self) -> str:
        return self.location.split(":", 1)[0]

    @property
    def function(self) -> str:
        return self.location.split(":", 1)[1]

    @property
    def kind(self) -> str:
        return "gradient" if self.probe is not None else "property"

    def grades(self, nodeid: str) -> bool:
        """Whether the pytest item ``nodeid`` is one of this exercise's tests."""
        return any(nodeid == t or nodeid.startswith((t + "[", t + "::")) for t in self.tests)


def _tests(file: str, *names: str) -> tuple[str, ...]:
    return tuple(f"tests/{file}::{name}" for name in names)


# fmt: off
EXERCISES: tuple[Exercise, ...] = (
    Exercise("dense_backward", "ldm_np/layers.py:dense_backward", "01_dense_and_backprop",
             _tests("test_layers.py", "test_dense_gradients"), probe_dense_backward),
    Exercise("silu_backward", "ldm_np/layers.py:silu_backward", "01_dense_and_backprop",
             _tests("test_layers.py", "test_silu_values_and_gradient"), probe_silu_backward),
    Exercise("layernorm_backward", "ldm_np/layers.py:layernorm_backward", "01_dense_and_backprop",
             _tests("test_layers.py", "test_layernorm_gradients", "test_layernorm_near_constant_rows"),
             probe_layernorm_backward),
    Exercise("reparameterize_backward", "ldm_np/vae.py:reparameterize_backward", "02_vae",
             _tests("test_vae.py", "test_reparameterize_forward_gradients", "test_reparameterize_keeps_dtype"),
             probe_reparameterize_backward),
    Exercise("kl_divergence_backward", "ldm_np/losses.py:kl_divergence_backward", "02_vae",
             _tests("test_losses.py", "test_kl_divergence_backward", "test_kl_divergence_is_zero_for_the_prior",
                    "test_losses_keep_float32", "test_mse_and_kl_gradients_compose"),
             probe_kl_divergence_backward),
    Exercise("adam_step", "ldm_np/optim.py:Adam.step", "02_vae",
             _tests("test_optim.py", "test_adam_first_two_steps_by_hand",
                    "test_adam_and_adamw_match_the_reference_over_several_steps",
                    "test_l2_and_decoupled_weight_decay_differ_as_specified", "test_defaults",
                    "test_a_quadratic_is_minimised",
                    "test_state_round_trip_through_a_file_gives_identical_next_steps",
                    "test_float32_params_and_state_stay_float32")),
    Exercise("q_sample", "ldm_np/diffusion.py:q_sample", "03_noise_schedules",
             _tests("test_diffusion.py", "test_q_sample_on_hand_made_arrays", "test_q_sample_int_t_equals_array_t",
                    "test_q_sample_mean_and_variance_match_the_closed_form")),
    Exercise("diffusion_loss", "ldm_np/diffusion.py:diffusion_loss", "04_denoiser",
             _tests("test_diffusion.py", "test_loss_value_matches_the_definition",
                    "test_loss_gradient_against_finite_differences",
                    "test_min_snr_with_a_huge_gamma_is_plain_mse_for_epsilon", "test_loss_accepts_an_int_t"),
             probe_diffusion_loss),
    Exercise("ddpm_posterior_mean", "ldm_np/samplers.py:_ddpm_update", "05_sampling",
             _tests("test_samplers.py", "test_ddpm_step_on_hand_made_arrays",
                    "test_posterior_mean_from_x0_hat_equals_the_eps_form", "test_ddpm_adds_no_noise_at_t_zero",
                    "test_ddpm_clip_sample")),
    Exercise("ddim_step", "ldm_np/samplers.py:_ddim_update", "05_sampling",
             _tests("test_samplers.py", "test_ddim_step_on_hand_made_arrays", "test_ddim_eta_zero_is_deterministic",
                    "test_ddim_final_alpha", "test_ddim_per_row_timesteps_equal_per_row_calls",
                    "test_ddim_gives_the_same_step_for_every_prediction_type",
                    "test_ddim_clipping_recomputes_eps_from_the_clipped_x0")),
)
# fmt: on

BY_ID = {ex.id: ex for ex in EXERCISES}


def stub_line(exercise_id: str, indent: str = "") -> str:
    """The line that replaces a region in the student copy."""
    return f'{indent}raise NotImplementedError("exercise {exercise_id}")'


# --------------------------------------------------------------------------
# Finding and checking the markers
# --------------------------------------------------------------------------

_BEGIN = re.compile(r"^(?P<indent>[ \t]*)### BEGIN SOLUTION(?:[ \t]+(?P<id>\S+))?\s*$")
_END = re.compile(r"^(?P<indent>[ \t]*)### END SOLUTION(?:[ \t]+(?P<id>\S+))?\s*$")
# A comment meant as a marker that is not exactly one (two hashes, lower case, ...).
_NEAR_MISS = re.compile(r"^[ \t]*#.*\b(begin|end)[ \t]+solutions?\b", re.IGNORECASE)

# Never copied into a student copy: version control, environments, caches,
# run outputs, and the instructor's own tests of this tool.
EXCLUDED_DIRS = frozenset(
    ".git .hg .venv venv __pycache__ .pytest_cache .ruff_cache .mypy_cache .hypothesis "
    ".ipynb_checkpoints runs build dist student".split()
)
# Figures the tutorials write (ldm_np/figures/ is code and is copied).
EXCLUDED_PATHS = frozenset({"tutorials/figures"})
EXCLUDED_SUFFIXES = (".pyc", ".pyo", ".egg-info")
INSTRUCTOR_ONLY = frozenset({"tests/test_exercises.py", "tests/exercises"})


class MarkerError(Exception):
    """Bad solution markers or an exercise table that does not match them; one message per problem."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


@dataclass(frozen=True)
class Region:
    """One ``BEGIN SOLUTION <id>`` ... ``END SOLUTION`` region; lines are 1-based, markers included."""

    path: str  # relative to the project root, with "/"
    id: str
    begin: int
    end: int
    indent: str


def project_files(root: Path, *, skip: Path | None = None) -> list[Path]:
    """Every file of the project that a student copy gets, relative to ``root``, sorted."""
    root = Path(root).resolve()
    skip = Path(skip).resolve() if skip is not None else None
    files = []
    for folder, dirs, names in os.walk(root):
        here = Path(folder)
        rel_here = here.relative_to(root)
        dirs[:] = sorted(
            d
            for d in dirs
            if d not in EXCLUDED_DIRS
            and not d.endswith(EXCLUDED_SUFFIXES)
            and (rel_here / d).as_posix() not in INSTRUCTOR_ONLY | EXCLUDED_PATHS
            and (skip is None or (here / d).resolve() != skip)
        )
        for name in sorted(names):
            rel = rel_here / name
            if name.endswith(EXCLUDED_SUFFIXES) or rel.as_posix() in INSTRUCTOR_ONLY:
                continue
            files.append(rel)
    return files


def scan_markers(path: str, text: str) -> tuple[list[Region], list[str]]:
    """The regions of one file and the problems with its markers (unbalanced, nested, malformed)."""
    regions: list[Region] = []
    problems: list[str] = []
    lines = text.split("\n")  # lines as ast numbers them (str.splitlines also splits at form feeds)
    opened: tuple[int, str, str] | None = None  # (line, id, indent)
    for lineno, line in enumerate(lines, start=1):
        begin, end = _BEGIN.match(line), _END.match(line)
        if begin:
            ex_id = begin["id"]
            if opened is not None:  # report the open region, then start afresh
                problems.append(
                    f"{path}:{opened[0]}: BEGIN SOLUTION {opened[1]} has no END SOLUTION before the next "
                    f"BEGIN SOLUTION at line {lineno} (regions cannot nest)"
                )
                opened = None
            if not ex_id:
                problems.append(
                    f"{path}:{lineno}: BEGIN SOLUTION needs an exercise id: '### BEGIN SOLUTION <id>'"
                )
            else:
                opened = (lineno, ex_id, begin["indent"])
        elif end:
            if opened is None:
                problems.append(f"{path}:{lineno}: END SOLUTION without a BEGIN SOLUTION before it")
                continue
            start, ex_id, indent = opened
            opened = None
            if end["id"] and end["id"] != ex_id:
                problems.append(
                    f"{path}:{lineno}: END SOLUTION {end['id']} closes the region '{ex_id}' "
                    f"opened at line {start}"
                )
            elif end["indent"] != indent:
                problems.append(
                    f"{path}:{lineno}: END SOLUTION is indented differently from its BEGIN SOLUTION "
                    f"at line {start}"
                )
            else:
                problems.extend(_check_body(path, lines, start, lineno, indent))
                regions.append(Region(path, ex_id, start, lineno, indent))
        elif _NEAR_MISS.match(line):
            problems.append(
                f"{path}:{lineno}: looks like a solution marker but is not one; write exactly "
                "'### BEGIN SOLUTION <id>' or '### END SOLUTION'"
            )
    if opened is not None:
        problems.append(f"{path}:{opened[0]}: BEGIN SOLUTION {opened[1]} has no END SOLUTION")
    return regions, problems


def _check_body(path: str, lines: list[str], begin: int, end: int, indent: str) -> list[str]:
    """The region's first code line must sit at the marker's indentation (the stub takes its place)."""
    code = [line for line in lines[begin : end - 1] if line.strip() and not line.strip().startswith("#")]
    if not code:
        return [f"{path}:{begin}: the region is empty"]
    first_indent = code[0][: len(code[0]) - len(code[0].lstrip())]
    if first_indent != indent:
        return [
            f"{path}:{begin}: BEGIN SOLUTION is indented {len(indent)} columns but the code in its region "
            f"{len(first_indent)}: indent the markers like the code they enclose"
        ]
    return []


def _functions(tree: ast.AST) -> Iterable[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    """(qualified name, node) of every function and method, nested ones included."""

    def walk(node: ast.AST, prefix: str) -> Iterable[tuple[str, Any]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{prefix}{child.name}"
                yield name, child
                yield from walk(child, f"{name}.")
            elif isinstance(child, ast.ClassDef):
                yield from walk(child, f"{prefix}{child.name}.")
            else:
                yield from walk(child, prefix)

    return walk(tree, "")


_AST_LOCK = threading.Lock()


def parse_python(text: str, filename: str = "<unknown>") -> ast.Module:
    """``ast.parse``, one thread at a time.

    CPython 3.11 (up to 3.11.7) keeps the AST converter's recursion counter in
    interpreter-wide state, so two threads parsing at once can fail with
    "SystemError: AST constructor recursion depth mismatch" (gh-106905). The
    tests grade several student copies from threads, hence the lock.
    """
    with _AST_LOCK:
        return ast.parse(text, filename=filename)


def _check_against_table(root: Path, regions: list[Region], texts: dict[str, str]) -> list[str]:
    """Every region has a known, unique id, sits after the docstring of the function the table names."""
    problems = []
    seen: dict[str, Region] = {}
    trees: dict[str, ast.AST] = {}
    for r in regions:
        where = f"{r.path}:{r.begin}"
        ex = BY_ID.get(r.id)
        if ex is None:
            problems.append(f"{where}: unknown exercise id '{r.id}'; known ids: {', '.join(BY_ID)}")
            continue
        if r.id in seen:
            first = seen[r.id]
            problems.append(f"{where}: exercise '{r.id}' already has a region at {first.path}:{first.begin}")
            continue
        seen[r.id] = r
        if r.path != ex.path:
            problems.append(f"{where}: exercise '{r.id}' belongs in {ex.location} (see EXERCISES)")
            continue
        if r.path not in trees:
            try:
                trees[r.path] = parse_python(texts[r.path], r.path)
            except SyntaxError as e:
                problems.append(f"{r.path}:{e.lineno}: cannot parse the file: {e.msg}")
                trees[r.path] = ast.Module(body=[], type_ignores=[])
        # The END marker may follow the function's last statement: test the region's code lines.
        body = texts[r.path].split("\n")[r.begin : r.end - 1]
        last = r.begin + max(
            (i for i, line in enumerate(body, 1) if line.strip()[:1] not in ("", "#")), default=0
        )
        enclosing = [
            (name, fn)
            for name, fn in _functions(trees[r.path])
            if fn.lineno < r.begin and (fn.end_lineno or 0) >= last
        ]
        if not enclosing:
            problems.append(f"{where}: region '{r.id}' is not inside a function")
            continue
        name, fn = max(enclosing, key=lambda item: item[1].lineno)  # the innermost
        if name != ex.function:
            problems.append(f"{where}: region '{r.id}' is in {name}, the table says {ex.location}")
            continue
        doc = fn.body[0] if fn.body else None
        if not (
            isinstance(doc, ast.Expr)
            and isinstance(doc.value, ast.Constant)
            and isinstance(doc.value.value, str)
        ):
            problems.append(f"{where}: {name} has no docstring; the student copy keeps it as the task")
        elif (doc.end_lineno or doc.lineno) >= r.begin:
            problems.append(
                f"{where}: region '{r.id}' starts inside the docstring of {name}; "
                "put BEGIN SOLUTION after the docstring (the student copy keeps the docstring)"
            )
    for ex in EXERCISES:
        if ex.id not in seen:
            stub = stub_line(ex.id)
            hint = ""
            if stub in texts.get(ex.path, ""):
                hint = (
                    " (its stub is there: is this a student copy? check runs on the project with solutions)"
                )
            problems.append(f"{ex.path}: exercise '{ex.id}' has no 'BEGIN SOLUTION {ex.id}' region{hint}")
    problems.extend(_check_test_ids(root))
    return problems


def _check_test_ids(root: Path) -> list[str]:
    """Every node id in the table names a test function that exists (a renamed test would grade nothing)."""
    problems = []
    defined: dict[str, set[str]] = {}
    for ex in EXERCISES:
        for nodeid in ex.tests:
            file, _, name = nodeid.partition("::")
            if file not in defined:
                try:
                    tree = parse_python((root / file).read_text(encoding="utf-8"), file)
                except (OSError, SyntaxError) as e:
                    problems.append(f"{file}: cannot read the tests of exercise '{ex.id}': {e}")
                    defined[file] = set()
                    continue
                defined[file] = {n for n, _ in _functions(tree)} | {
                    node.name for node in ast.walk(tree) if isinstance(node, ast.ClassDef)
                }
            name = name.split("[", 1)[0].replace("::", ".")
            if name and name not in defined[file]:
                problems.append(f"{file}: exercise '{ex.id}' is graded by {nodeid}, which does not exist")
    return problems


def find_regions(root: Path = PROJECT_ROOT) -> list[Region]:
    """Every region of the project at ``root``, checked; raises ``MarkerError`` listing all problems."""
    root = Path(root).resolve()
    regions, problems, texts = _scan(root, project_files(root))
    problems += _check_against_table(root, regions, texts)
    if problems:
        raise MarkerError(problems)
    return regions


def _scan(root: Path, files: Iterable[Path]) -> tuple[list[Region], list[str], dict[str, str]]:
    regions, problems, texts = [], [], {}
    for rel in files:
        if rel.suffix != ".py":
            continue
        path = rel.as_posix()
        texts[path] = (root / rel).read_text(encoding="utf-8")
        found, bad = scan_markers(path, texts[path])
        regions += found
        problems += bad
    return regions, problems, texts


def stub_out(text: str, regions: Sequence[Region], solved: Sequence[Region] = ()) -> str:
    """``text`` with each of ``regions`` (markers included) replaced by its one-line stub.

    The ``solved`` regions keep their code and lose only their two marker lines.
    """
    lines = text.split("\n")
    edits = [(r, True) for r in regions] + [(r, False) for r in solved]
    for r, stub in sorted(edits, key=lambda edit: edit[0].begin, reverse=True):
        if stub:
            cr = "\r" if lines[r.begin - 1].endswith("\r") else ""
            lines[r.begin - 1 : r.end] = [stub_line(r.id, r.indent) + cr]
        else:
            del lines[r.end - 1], lines[r.begin - 1]
    return "\n".join(lines)


# --------------------------------------------------------------------------
# build
# --------------------------------------------------------------------------


def build(out: Path, root: Path = PROJECT_ROOT, exercise_ids: Iterable[str] | None = None) -> list[Region]:
    """Write a student copy of the project at ``root`` into ``out`` (new or empty).

    Every exercise is stubbed out, or only those in ``exercise_ids``: the
    others keep their solution (without the markers), for a class that does
    only some of the tutorials. Returns the stubbed regions. Nothing is
    written if a marker is wrong or a stubbed file would not compile.
    """
    root, out = Path(root).resolve(), Path(out).resolve()
    if out == root or root.is_relative_to(out):
        raise MarkerError([f"{out}: the student copy cannot be the project itself or a folder above it"])
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise MarkerError([f"{out}: already exists and is not an empty folder; choose a new one"])
    files = project_files(root, skip=out)
    regions, problems, texts = _scan(root, files)
    problems += _check_against_table(root, regions, texts)
    if problems:
        raise MarkerError(problems)
    chosen = set(BY_ID if exercise_ids is None else exercise_ids)
    stubbed: dict[str, str] = {}
    for path in sorted({r.path for r in regions}):
        here = [r for r in regions if r.path == path]
        stubbed[path] = stub_out(
            texts[path], [r for r in here if r.id in chosen], [r for r in here if r.id not in chosen]
        )
        try:
            compile(stubbed[path], path, "exec")
        except SyntaxError as e:
            raise MarkerError([f"{path}:{e.lineno}: the stubbed file does not compile: {e.msg}"]) from None
    for rel in files:
        dest = out / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if rel.as_posix() in stubbed:
            dest.write_text(stubbed[rel.as_posix()], encoding="utf-8")
            shutil.copymode(root / rel, dest)
        else:
            shutil.copy2(root / rel, dest)
    return [r for r in regions if r.id in chosen]


# --------------------------------------------------------------------------
# grade
# --------------------------------------------------------------------------

_PLUGIN = "_ldm_np_grade_plugin"
_REPORT_ENV = "LDM_NP_GRADE_REPORT"
_PROBES_ENV = "LDM_NP_GRADE_PROBES"
_NIE_MESSAGE = re.compile(r"^exercise ([A-Za-z0-9_]+)$")
# A stub's message seen as text: in a traceback, or as the CLI prints it ("error: exercise <id>").
_STUB_TEXT = re.compile(r"(?:NotImplementedError: |error: )exercise (" + "|".join(BY_ID) + r")\b")


@dataclass
class RunResult:
    """What one pytest subprocess reported: per test node id an outcome, plus the probes."""

    tests: dict[str, dict[str, Any]]
    probes: dict[str, dict[str, Any]]
    collect_errors: dict[str, str]
    modules: dict[str, str]  # ldm_np module name -> file it was imported from
    returncode: int
    output: str


def run_tests(
    root: Path,
    nodeids: Sequence[str] = (),
    *,
    probes: Sequence[str] = (),
    extra_args: Sequence[str] = (),
    timeout: float | None = None,
) -> RunResult:
    """Run ``python -m pytest`` on the project at ``root``, importing *its* ldm_np.

    cwd is ``root`` and ``root`` goes first on PYTHONPATH, ahead of any
    installed (editable) ldm_np. Hypothesis uses the project's "ci" profile
    unless HYPOTHESIS_PROFILE is set. Raises ``RuntimeError`` if the
    subprocess imported any ldm_np module from outside ``root``.
    """
    root = Path(root).resolve()
    with tempfile.TemporaryDirectory(prefix="ldm_np_grade_") as tmp:
        report_path = Path(tmp) / "report.json"
        # The plugin is this very file under another name, so the grading logic is the
        # grader's even when the copy's ldm_np/exercises/__init__.py was changed or is missing.
        shutil.copyfile(__file__, Path(tmp) / f"{_PLUGIN}.py")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(root), tmp, *filter(None, [env.get("PYTHONPATH")])])
        env[_REPORT_ENV] = str(report_path)
        env[_PROBES_ENV] = ",".join(probes)
        env.setdefault("HYPOTHESIS_PROFILE", "ci")
        env.setdefault("OPENBLAS_NUM_THREADS", "1")  # what tests/conftest.py sets, before NumPy loads
        env.setdefault("MPLBACKEND", "Agg")
        flags = ["-q", "-p", "no:cacheprovider", "--continue-on-collection-errors", f"--rootdir={root}"]
        flags.append("--tb=line")  # the report reads the exceptions themselves; long tracebacks cost seconds
        cmd = [sys.executable, "-m", "pytest", "-p", _PLUGIN, *flags, *extra_args, *nodeids]
        try:
            proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=timeout)
            output, returncode = proc.stdout + proc.stderr, proc.returncode
        except subprocess.TimeoutExpired as e:  # its stdout and stderr are bytes, even with text=True
            output = b"".join(filter(None, [e.stdout, e.stderr])).decode(errors="replace")
            output, returncode = f"{output}\n(pytest stopped after {timeout:.0f} s)", -1
        report = json.loads(report_path.read_text()) if report_path.exists() else {}
    modules = report.get("modules", {})
    outside = {name: file for name, file in modules.items() if not Path(file).resolve().is_relative_to(root)}
    if outside:
        name, file = next(iter(outside.items()))
        raise RuntimeError(f"grading {root} imported {name} from {file}, not from the copy being graded")
    return RunResult(
        tests=report.get("tests", {}),
        probes=report.get("probes", {}),
        collect_errors=report.get("collect_errors", {}),
        modules=modules,
        returncode=returncode,
        output=output,
    )


@dataclass
class Grade:
    """One row of the grade table."""

    exercise: Exercise
    status: str  # "passed", "failed" or "not attempted"
    passed: int
    total: int
    grad_error: float | None
    detail: str = ""
    test: str = ""  # the first failing test's node id, if any


def grade_exercise(ex: Exercise, run: RunResult) -> Grade:
    """Turn the test outcomes and probe of one exercise into its row."""
    from ..gradcheck import TOLERANCE

    rows = {nodeid: r for nodeid, r in run.tests.items() if ex.grades(nodeid)}
    passed = sum(r["outcome"] not in ("failed", "error") for r in rows.values())
    probe = run.probes.get(ex.id, {})
    error = probe.get("error")
    if not rows:
        files = {t.split("::", 1)[0] for t in ex.tests}
        why = next((msg for nodeid, msg in run.collect_errors.items() if nodeid in files), "")
        detail = f"no test ran: {why}" if why else "no test ran (renamed tests? see EXERCISES)"
        if not run.tests and not run.collect_errors:
            detail = "pytest did not run: " + _last_lines(run.output)
        return Grade(ex, "failed", 0, 0, error, detail)
    failures = {nodeid: r for nodeid, r in rows.items() if r["outcome"] in ("failed", "error")}
    own = [n for n, r in failures.items() if r.get("exercise") == ex.id]
    if failures and len(own) == len(failures):
        return Grade(ex, "not attempted", passed, len(rows), None)
    if failures:
        nodeid, r = next((n, r) for n, r in failures.items() if r.get("exercise") != ex.id)
        other = r.get("exercise")
        why = f"needs exercise '{other}' first" if other else r.get("message", "")
        return Grade(ex, "failed", passed, len(rows), error, f"{nodeid}: {why}", nodeid)
    if ex.probe is not None and probe.get("status") != "ok":
        return Grade(
            ex, "failed", passed, len(rows), None, f"gradient probe: {probe.get('message', 'did not run')}"
        )
    if error is not None and not error < TOLERANCE:
        return Grade(ex, "failed", passed, len(rows), error, f"gradient error {error:.1e} >= {TOLERANCE:.0e}")
    return Grade(ex, "passed", passed, len(rows), error)


def grade(
    root: Path, exercise_ids: Sequence[str] | None = None, *, timeout: float | None = 900
) -> list[Grade]:
    """Grade the exercises (all by default) of the project copy at ``root``; one pytest subprocess."""
    chosen = [BY_ID[i] for i in exercise_ids] if exercise_ids else list(EXERCISES)
    nodeids = list(dict.fromkeys(t for ex in chosen for t in ex.tests))
    probes = [ex.id for ex in chosen if ex.probe is not None]
    run = run_tests(root, nodeids, probes=probes, timeout=timeout)
    return [grade_exercise(ex, run) for ex in chosen]


def format_grades(grades: Sequence[Grade]) -> str:
    """The grade table, a summary line, and one line of detail per failure."""
    header = ("exercise", "tutorial", "status", "tests", "max grad error")
    rows = []
    for g in grades:
        if g.exercise.probe is None:
            err = "n/a"
        elif g.grad_error is None:
            err = "-"
        else:
            err = f"{g.grad_error:.1e}"
        rows.append((g.exercise.id, g.exercise.tutorial, g.status, f"{g.passed}/{g.total}", err))
    lines = _table(header, rows, rule=True)
    counts = {s: sum(g.status == s for g in grades) for s in ("passed", "failed", "not attempted")}
    lines.append("")
    lines.append(f"{len(grades)} exercises: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n))
    for g in grades:
        if g.detail:
            lines.append(f"  {g.exercise.id}: {g.detail}")
    return "\n".join(lines)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], rule: bool = False) -> list[str]:
    """Left-aligned columns, two spaces apart; a rule under the header if asked."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [header, *rows]]
    if rule:
        lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


def _last_lines(text: str, n: int = 5) -> str:
    return " | ".join(line for line in text.strip().splitlines()[-n:])


# --------------------------------------------------------------------------
# The command line
# --------------------------------------------------------------------------


def _cmd_list(args: argparse.Namespace) -> int:
    header = ("exercise", "tutorial", "kind", "tests", "location")
    rows = [(ex.id, ex.tutorial, ex.kind, str(len(ex.tests)), ex.location) for ex in EXERCISES]
    print("\n".join(_table(header, rows)))
    without = [t for t in TUTORIALS if all(ex.tutorial != t for ex in EXERCISES)]
    print(f"\ntutorials without exercises: {', '.join(without)}")
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    try:
        regions = find_regions(args.root)
    except MarkerError as e:
        for problem in e.problems:
            print(f"error: {problem}", file=sys.stderr)
        return 1
    files = sorted({r.path for r in regions})
    print(f"ok: {len(regions)} exercise regions in {len(files)} files ({', '.join(files)})")
    return 0


def _cmd_build(args: argparse.Namespace) -> int:
    unknown = [i for i in args.exercise or [] if i not in BY_ID] + [
        t for t in args.tutorial or [] if t not in TUTORIALS
    ]
    if unknown:
        print(f"error: unknown exercise or tutorial {unknown[0]!r}; see 'list'", file=sys.stderr)
        return 2
    chosen = None
    if args.exercise or args.tutorial:
        chosen = set(args.exercise or []) | {
            ex.id for ex in EXERCISES if ex.tutorial in (args.tutorial or [])
        }
    try:
        regions = build(args.out, args.root, chosen)
    except MarkerError as e:
        for problem in e.problems:
            print(f"error: {problem}", file=sys.stderr)
        return 1
    regions = sorted(regions, key=lambda r: list(BY_ID).index(r.id))  # in the order of the table
    print(f"wrote a student copy to {args.out} with {len(regions)} exercises stubbed out:")
    for r in regions:
        print(f"  {r.id:<24} {BY_ID[r.id].tutorial:<22} {r.path}")
    if regions:
        print(
            f"a student checks one exercise with: python -m ldm_np.exercises grade . --exercise {regions[0].id}"
        )
    return 0


def _cmd_grade(args: argparse.Namespace) -> int:
    unknown = [i for i in args.exercise or [] if i not in BY_ID]
    if unknown:
        print(f"error: unknown exercise {unknown[0]!r}; known: {', '.join(BY_ID)}", file=sys.stderr)
        return 2
    root = Path(args.out).resolve()
    if not (root / "ldm_np").is_dir():
        print(
            f"error: {root} has no ldm_np package: give the root of a copy built with 'build'",
            file=sys.stderr,
        )
        return 2
    try:
        grades = grade(root, args.exercise, timeout=args.timeout)
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"grading {root}\n")
    print(format_grades(grades))
    failing = [g.test for g in grades if g.test]
    if failing:
        print(f"\nto see a failure in full: cd {root} && python -m pytest {failing[0]}")
    return 0 if all(g.status == "passed" for g in grades) else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ldm_np.exercises",
        description="Exercises cut from ldm_np's own source: list them, check the markers, "
        "build a student copy, grade a copy.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the exercises, with their tutorial, kind and location").set_defaults(
        run=_cmd_list
    )
    p = sub.add_parser("check", help="check the solution markers against the exercise table")
    p.add_argument("--root", type=Path, default=PROJECT_ROOT, help="project root (default: this one)")
    p.set_defaults(run=_cmd_check)
    p = sub.add_parser("build", help="write a student copy of the project with every exercise stubbed out")
    p.add_argument("out", type=Path, help="a new or empty folder")
    p.add_argument("--root", type=Path, default=PROJECT_ROOT, help="project root (default: this one)")
    p.add_argument(
        "--exercise", action="append", metavar="ID", help="stub out only this exercise (repeatable)"
    )
    p.add_argument(
        "--tutorial",
        action="append",
        metavar="NAME",
        help="stub out only this tutorial's exercises (repeatable); the others keep their solutions",
    )
    p.set_defaults(run=_cmd_build)
    p = sub.add_parser("grade", help="run the grading tests against a copy; exit 1 unless all pass")
    p.add_argument("out", type=Path, help="root of the copy (a student's working folder or submission)")
    p.add_argument("--exercise", action="append", metavar="ID", help="grade only this exercise (repeatable)")
    p.add_argument(
        "--timeout", type=float, default=900, help="seconds before pytest is stopped (default 900)"
    )
    p.set_defaults(run=_cmd_grade)
    args = parser.parse_args(argv)
    return args.run(args)


# --------------------------------------------------------------------------
# pytest plugin: active only in the grading subprocess (see run_tests)
# --------------------------------------------------------------------------

_TESTS: dict[str, dict[str, Any]] = {}  # node id -> outcome, exercise whose stub stopped it, message
_COLLECT_ERRORS: dict[str, str] = {}
# Exceptions already classified, by id: a module-scoped fixture that failed is
# re-raised, the same object, for every test that uses it.
_SEEN: dict[int, tuple[BaseException, str | None]] = {}


def pytest_runtest_logreport(report: Any) -> None:
    entry = _TESTS.setdefault(report.nodeid, {"outcome": "passed", "exercise": None, "message": ""})
    if report.failed:
        entry["outcome"] = "failed" if report.when == "call" else "error"
        entry["message"] = _failure_line(report.longreprtext)
    elif report.skipped and entry["outcome"] == "passed":
        entry["outcome"] = "xfailed" if hasattr(report, "wasxfail") else "skipped"


def pytest_exception_interact(node: Any, call: Any, report: Any) -> None:
    entry = _TESTS.get(node.nodeid)
    if entry is None or call.excinfo is None:  # a collection error: see pytest_collectreport
        return
    exc = call.excinfo.value
    text = str(exc).strip()
    entry["message"] = f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"[:300]
    if id(exc) not in _SEEN:
        captured = "\n".join(content for _, content in getattr(report, "sections", []))
        _SEEN[id(exc)] = (exc, _stub_of(exc, captured))
    entry["exercise"] = _SEEN[id(exc)][1]


def _stub_of(exc: BaseException, captured: str) -> str | None:
    """The exercise whose stub made the test fail, or None for any other failure.

    Either the exception is the stub's NotImplementedError (also as the cause of
    another exception, or as every member of an exception group), or, when the
    stub ran where the test cannot catch it (a tutorial or the CLI in a
    subprocess, the CLI's own error handler), its message appears in the
    exception's text, a subprocess's output, or the test's captured output.
    """
    found = []
    for leaf in _leaves(exc):
        link: BaseException | None = leaf
        ex_id = None
        while link is not None and ex_id is None:
            if isinstance(link, NotImplementedError) and (m := _NIE_MESSAGE.match(str(link))):
                ex_id = m[1]
            link = link.__cause__ or link.__context__
        found.append(ex_id)
    if any(found):
        return found[0] if None not in found else None  # a group mixing stubs and real failures
    texts = [str(exc), captured]
    for name in ("stdout", "stderr", "output"):
        value = getattr(exc, name, None)
        texts.append(value.decode(errors="replace") if isinstance(value, bytes) else str(value or ""))
    for text in texts:
        if m := _STUB_TEXT.search(text):
            return m[1]
    return None


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for e in exc.exceptions for leaf in _leaves(e)]
    return [exc]


def pytest_plugin_registered(plugin: Any, manager: Any) -> None:
    # Grading needs pass or fail, not the smallest failing example: without the shrink
    # and explain phases a Hypothesis test that stops on a stub fails in milliseconds
    # instead of shrinking for seconds. Applied each time a conftest.py registers (it may
    # load a profile), before the test modules are imported (@given reads the default then).
    if not str(getattr(plugin, "__file__", "")).endswith("conftest.py"):
        return
    try:
        from hypothesis import Phase, settings
    except ImportError:
        return
    phases = [p for p in settings.default.phases if p not in (Phase.shrink, Phase.explain)]
    settings.register_profile("ldm_np_grade", settings.default, phases=phases)
    settings.load_profile("ldm_np_grade")


def pytest_collectreport(report: Any) -> None:
    if report.failed:
        _COLLECT_ERRORS[report.nodeid] = _failure_line(report.longreprtext)


def pytest_sessionfinish(session: Any, exitstatus: int) -> None:
    path = os.environ.get(_REPORT_ENV)
    if not path:
        return
    probes = {ex_id: _run_probe(BY_ID[ex_id]) for ex_id in filter(None, os.environ[_PROBES_ENV].split(","))}
    modules = {
        name: str(mod.__file__)
        for name, mod in list(sys.modules.items())
        if (name == "ldm_np" or name.startswith("ldm_np.")) and getattr(mod, "__file__", None)
    }
    report = {"tests": _TESTS, "collect_errors": _COLLECT_ERRORS, "probes": probes, "modules": modules}
    Path(path).write_text(json.dumps(report, indent=1))


def _run_probe(ex: Exercise) -> dict[str, Any]:
    try:
        with np.errstate(all="ignore"):
            error = float(ex.probe())  # type: ignore[misc]
    except NotImplementedError as e:
        if _NIE_MESSAGE.match(str(e)):
            return {"status": "not attempted", "error": None, "message": str(e)}
        return {"status": "error", "error": None, "message": f"NotImplementedError: {e}"}
    except Exception as e:
        return {"status": "error", "error": None, "message": f"{type(e).__name__}: {e}"[:300]}
    return {"status": "ok", "error": error, "message": ""}


def _failure_line(text: str) -> str:
    """The exception line of a pytest failure text ("E   ValueError: ..."), else its last line."""
    lines = [line for line in text.splitlines() if line.strip()]
    errors = [line[1:].strip() for line in lines if line.startswith("E ")]
    return (errors[0] if errors else (lines[-1].strip() if lines else ""))[:300]


if __name__ == "__main__":
    sys.exit(main())
