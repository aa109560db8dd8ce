"""Grading a copy: one pytest subprocess with the grader's plugin, then one row per exercise."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .plugin import PROBES_ENV, REPORT_ENV
from .table import BY_ID, EXERCISES, Exercise

_PLUGIN_PACKAGE = "_ldm_np_grader"  # the name this package has in the grading subprocess


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
        # The plugin is this very package under another name, so the grading logic is the
        # grader's even when the copy's ldm_np/exercises/ was changed or is missing.
        shutil.copytree(
            Path(__file__).parent, Path(tmp) / _PLUGIN_PACKAGE, ignore=shutil.ignore_patterns("__pycache__")
        )
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(root), tmp, *filter(None, [env.get("PYTHONPATH")])])
        env[REPORT_ENV] = str(report_path)
        env[PROBES_ENV] = ",".join(probes)
        env.setdefault("HYPOTHESIS_PROFILE", "ci")
        env.setdefault("OPENBLAS_NUM_THREADS", "1")  # what tests/conftest.py sets, before NumPy loads
        env.setdefault("MPLBACKEND", "Agg")
        flags = ["-q", "-p", "no:cacheprovider", "--continue-on-collection-errors", f"--rootdir={root}"]
        flags.append("--tb=line")  # the report reads the exceptions themselves; long tracebacks cost seconds
        cmd = [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            f"{_PLUGIN_PACKAGE}.plugin",
            *flags,
            *extra_args,
            *nodeids,
        ]
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
    from ldm_np.gradcheck import TOLERANCE

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
    gradients = ""  # the probe's row per gradient, when it ran and found an error
    if probe.get("status") == "ok" and error is not None and not error < TOLERANCE:
        gradients = (
            f"gradient check against finite differences (tolerance {TOLERANCE:.0e}):\n{probe['message']}"
        )
    if failures:
        nodeid, r = next((n, r) for n, r in failures.items() if r.get("exercise") != ex.id)
        other = r.get("exercise")
        why = f"needs exercise '{other}' first" if other else r.get("message", "")
        told = other or probe.get("message", "") in why  # the test printed the probe's rows itself
        detail = f"{nodeid}:\n{why}" + (f"\n{gradients}" if gradients and not told else "")
        return Grade(ex, "failed", passed, len(rows), error, detail, nodeid)
    if ex.probe is not None and probe.get("status") != "ok":
        return Grade(
            ex, "failed", passed, len(rows), None, f"gradient probe: {probe.get('message', 'did not run')}"
        )
    if gradients:
        return Grade(ex, "failed", passed, len(rows), error, gradients)
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
        if g.detail:  # the first line beside the id, the rest indented under it
            first, *rest = g.detail.split("\n")
            lines.append(f"  {g.exercise.id}: {first}")
            lines.extend(f"      {line}" for line in rest)
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
