"""Finding and checking the solution markers, and cutting the regions out of a text.

A region runs from ``### BEGIN SOLUTION <id>`` to ``### END SOLUTION``, after
the docstring of the function the table names.
"""

from __future__ import annotations

import ast
import os
import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .table import ANSWER_BEARING_TESTS, BY_ID, EXERCISES, stub_line

PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent

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
            # name in EXCLUDED_DIRS: a git worktree's .git is a file
            if name.endswith(EXCLUDED_SUFFIXES) or name in EXCLUDED_DIRS or rel.as_posix() in INSTRUCTOR_ONLY:
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
    for file, names in ANSWER_BEARING_TESTS.items():
        try:
            _, missing = strip_functions((root / file).read_text(encoding="utf-8"), names)
        except (OSError, SyntaxError) as e:
            problems.append(f"{file}: cannot read it to leave its answer-bearing tests out: {e}")
            continue
        problems += [f"{file}: ANSWER_BEARING_TESTS names {name}, which does not exist" for name in missing]
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
# The derive level: the docstring's formula paragraph removed
# --------------------------------------------------------------------------

DERIVE_HEADER = "Formula:"  # a docstring paragraph whose first line starts so is what --derive removes
DERIVE_STUB = "Formula: not given; derive it from the definitions above, then implement it."


def formula_paragraph(text: str, region: Region) -> tuple[int, int] | None:
    """The 1-based first and last line of the ``Formula:`` paragraph in the docstring of the
    function that holds ``region``, or None if its docstring has none.

    The paragraph runs from the header line to the line before the next blank
    line or the docstring's closing quotes.
    """
    enclosing = [
        fn for _, fn in _functions(parse_python(text)) if fn.lineno < region.begin <= (fn.end_lineno or 0)
    ]
    if not enclosing:
        return None
    fn = max(enclosing, key=lambda f: f.lineno)
    doc = fn.body[0] if fn.body else None
    if not (isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant)):
        return None
    lines = text.split("\n")
    for first in range(doc.lineno, (doc.end_lineno or doc.lineno) + 1):
        if lines[first - 1].strip().startswith(DERIVE_HEADER):
            last = first
            while (
                last < (doc.end_lineno or last)
                and lines[last].strip()
                and not lines[last].strip().startswith('"""')
            ):
                last += 1
            return first, last
    return None


def derive_out(text: str, regions: Sequence[Region]) -> str:
    """``text`` with the formula paragraph of each region's function replaced by ``DERIVE_STUB``."""
    lines = text.split("\n")
    found = [(span, r) for r in regions if (span := formula_paragraph(text, r)) is not None]
    for (first, last), _ in sorted(found, key=lambda item: item[0][0], reverse=True):
        indent = lines[first - 1][: len(lines[first - 1]) - len(lines[first - 1].lstrip())]
        lines[first - 1 : last] = [indent + DERIVE_STUB]
    return "\n".join(lines)


# --------------------------------------------------------------------------
# Tests that state a solution: removed from the student copy
# --------------------------------------------------------------------------


def strip_functions(text: str, names: Iterable[str]) -> tuple[str, list[str]]:
    """``text`` without the top-level functions ``names`` and every top-level function that uses
    one of them (decorators included, with the blank lines after each); also returns the
    names of ``names`` that were not found."""
    tree = parse_python(text)
    functions = {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    removed = {n for n in names if n in functions}
    missing = [n for n in names if n not in functions]
    grew = True
    while grew:  # a test that calls (or is parametrized with) a removed helper goes too
        used_by = {
            name
            for name, fn in functions.items()
            if name not in removed and any(isinstance(x, ast.Name) and x.id in removed for x in ast.walk(fn))
        }
        grew = bool(used_by)
        removed |= used_by
    lines = text.split("\n")
    for fn in sorted((functions[n] for n in removed), key=lambda f: f.lineno, reverse=True):
        first = min([fn.lineno, *(d.lineno for d in fn.decorator_list)]) - 1
        last = fn.end_lineno or fn.lineno
        while last < len(lines) and not lines[last].strip():
            last += 1
        del lines[first:last]
    return "\n".join(lines), missing
