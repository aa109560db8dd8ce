"""Building the student copy: the project with each exercise region replaced by its stub."""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path

from .markers import (
    PROJECT_ROOT,
    MarkerError,
    Region,
    _check_against_table,
    _scan,
    derive_out,
    project_files,
    scan_markers,
    strip_functions,
    stub_out,
)
from .table import ANSWER_BEARING_TESTS, BY_ID


def build(
    out: Path,
    root: Path = PROJECT_ROOT,
    exercise_ids: Iterable[str] | None = None,
    *,
    derive: bool = False,
) -> list[Region]:
    """Write a student copy of the project at ``root`` into ``out`` (new or empty).

    Every exercise is stubbed out, or only those in ``exercise_ids``: the
    others keep their solution (without the markers), for a class that does
    only some of the tutorials. With ``derive`` the stubbed exercises also lose
    the ``Formula:`` paragraph of their docstring ("derive, then implement");
    without it the formula stays ("implement"). Returns the stubbed regions
    (line numbers of the project, not of the copy). The tests that state a
    solution (``ANSWER_BEARING_TESTS``) are left out of the copy. Nothing is
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
        text = texts[path]
        here = [r for r in regions if r.path == path]
        if derive:  # remove the formulas first, then find the regions again in the shorter text
            text = derive_out(text, [r for r in here if r.id in chosen])
            here = scan_markers(path, text)[0]
        stubbed[path] = stub_out(
            text, [r for r in here if r.id in chosen], [r for r in here if r.id not in chosen]
        )
        try:
            compile(stubbed[path], path, "exec")
        except SyntaxError as e:
            raise MarkerError([f"{path}:{e.lineno}: the stubbed file does not compile: {e.msg}"]) from None
    for path, names in ANSWER_BEARING_TESTS.items():
        if (root / path).is_file():
            stubbed[path], missing = strip_functions((root / path).read_text(encoding="utf-8"), names)
            if missing:
                raise MarkerError([f"{path}: ANSWER_BEARING_TESTS names {missing}, not in the file"])
    for rel in files:
        dest = out / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if rel.as_posix() in stubbed:
            dest.write_text(stubbed[rel.as_posix()], encoding="utf-8")
            shutil.copymode(root / rel, dest)
        else:
            shutil.copy2(root / rel, dest)
    return [r for r in regions if r.id in chosen]
