"""The command line: ``python -m ldm_np.exercises list | check | build | grade``."""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from .grading import _table, format_grades, grade
from .handout import build
from .markers import PROJECT_ROOT, MarkerError, find_regions, formula_paragraph
from .table import BY_ID, EXERCISES, TUTORIALS


def _cmd_list(args: argparse.Namespace) -> int:
    header = ("exercise", "tutorial", "kind", "levels", "tests", "location")
    derivable = _derivable(PROJECT_ROOT)
    rows = [
        (ex.id, ex.tutorial, ex.kind, "implement, derive" if ex.id in derivable else "implement",
         str(len(ex.tests)), ex.location)
        for ex in EXERCISES
    ]  # fmt: skip
    print("\n".join(_table(header, rows)))
    without = [t for t in TUTORIALS if all(ex.tutorial != t for ex in EXERCISES)]
    if without:
        print(f"\ntutorials without exercises: {', '.join(without)}")
    print(
        "\nlevels: 'build OUT' gives each formula (implement); 'build OUT --derive' removes the\n"
        "docstring's Formula: paragraph where there is one (derive, then implement)."
    )
    return 0


def _derivable(root: Path) -> set[str]:
    """The exercises whose docstring has a Formula: paragraph (a derive level)."""
    regions = find_regions(root)
    texts = {path: (root / path).read_text(encoding="utf-8") for path in {r.path for r in regions}}
    return {r.id for r in regions if formula_paragraph(texts[r.path], r) is not None}


def shadowing_warning(out: Path) -> str | None:
    """A warning if a tutorial run in the copy (``python tutorials/NN.py``) would import another ldm_np.

    Such a script has ``tutorials/`` first on its path, so ``ldm_np`` comes from
    PYTHONPATH or an installed package: with an editable install of the
    reference, a student's stub would seem to work.
    """
    out = Path(out).resolve()
    probe = subprocess.run(
        [sys.executable, "-c", "import ldm_np; print(ldm_np.__file__)"],
        cwd=out / "tutorials" if (out / "tutorials").is_dir() else out,
        capture_output=True,
        text=True,
        timeout=60,
    )
    found = probe.stdout.strip()
    fix = (
        f"run the tutorials with PYTHONPATH={out} (python tutorials/NN.py), or install the copy "
        f"instead (pip install -e {out}); grading is not affected, it always puts the copy first"
    )
    if probe.returncode != 0 or not found:
        return f"warning: a tutorial run in {out} finds no ldm_np at all: {fix}"
    if not Path(found).resolve().is_relative_to(out):
        return (
            f"warning: a tutorial run in {out} would import ldm_np from {Path(found).parent}, not from the "
            f"copy, so a stubbed exercise would seem to work there: {fix}"
        )
    return None


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
        regions = build(args.out, args.root, chosen, derive=args.derive)
    except MarkerError as e:
        for problem in e.problems:
            print(f"error: {problem}", file=sys.stderr)
        return 1
    regions = sorted(regions, key=lambda r: list(BY_ID).index(r.id))  # in the order of the table
    level = "derive, then implement" if args.derive else "implement"
    print(f"wrote a student copy to {args.out} with {len(regions)} exercises stubbed out ({level}):")
    for r in regions:
        print(f"  {r.id:<24} {BY_ID[r.id].tutorial:<22} {r.path}")
    if regions:
        print(
            f"a student checks one exercise with: python -m ldm_np.exercises grade . --exercise {regions[0].id}"
        )
    warning = shadowing_warning(args.out)
    if warning:
        print(warning, file=sys.stderr)
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
    p.add_argument(
        "--derive",
        action="store_true",
        help="also remove each stubbed exercise's Formula: paragraph (derive, then implement)",
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
