"""The exercise tooling (ldm_np.exercises): markers, the student copy, and the grader.

What is proven, and how:

- The reference project passes the grader for every exercise (the instructor's
  ``grade`` command, run as a subprocess on this repository).
- A freshly built student copy differs from the project only inside the
  marked regions and by the reference's tests that state a solution (left
  out), and the copy's *whole* test suite, graded tests included, shows every
  exercise "not attempted" and no failure other than a stub's
  NotImplementedError("exercise <id>"). Tests that never call a stubbed
  function pass; those that do (training, the CLI, the tutorials) stop on the
  stub: they need the students' code, so they cannot pass before it exists.
  The whole suite rather than a subset, because what can go wrong there is a
  handler between a test and a stub (the CLI's error handler, a tutorial's
  ``except``, a subprocess, a cached fixture) turning the stub's error into
  another failure, and only running the tests shows which ones reach a stub.
- The derive level differs from it only by the docstrings' Formula:
  paragraphs, and its exercises are all "not attempted" too.
- No graded test, and no test the copy ships, contains a solution
  expression; the stored outputs the graded tests compare with are the
  reference's own.
- Filling exercises back in from the reference makes exactly those pass: each
  of the thirteen, alone or with others (six copies cover every pair), and one
  literally alone through the command line, plus a wrong solution that fails
  with its gradient error.
- The grader explains: planted bugs (a transposed product, a factor of 2, a
  sum where a mean belongs, a DDIM step without sigma^2, a two-line error)
  print what each is.
- Bad markers are reported with file and line, by ``check`` and by ``build``,
  and ``build`` then writes nothing.

Cost: about fifteen pytest subprocesses, half of the time the copy's whole
suite; the two largest steps run two subprocesses at once. On a loaded
2-core machine the file took about four minutes. Grading runs turn off
Hypothesis's shrinking, so a test that stops on a stub fails at once.
"""

from __future__ import annotations

import ast
import itertools
import math
import re
import shutil
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from ldm_np import exercises
from ldm_np.exercises import BY_ID, EXERCISES, TUTORIALS, MarkerError
from ldm_np.exercises.table import ANSWER_BEARING_TESTS
from ldm_np.gradcheck import TOLERANCE

REPO = Path(__file__).resolve().parent.parent
MARK = "#" * 3  # the marker prefix, spelled so that this file holds no marker line itself


@pytest.fixture(scope="module")
def regions() -> dict[str, exercises.Region]:
    return {r.id: r for r in exercises.find_regions(REPO)}


@pytest.fixture(scope="module")
def student(tmp_path_factory) -> Path:
    """A fresh student copy (do not modify it: tests share it)."""
    out = tmp_path_factory.mktemp("handout") / "student"
    exercises.build(out, REPO)
    return out


def fill_in(copy: Path, region: exercises.Region) -> None:
    """Put the reference's solution of one exercise back into a student copy, as a student would."""
    solution = (REPO / region.path).read_text().splitlines(keepends=True)[region.begin : region.end - 1]
    target = copy / region.path
    text = target.read_text()
    stub = exercises.stub_line(region.id, region.indent) + "\n"
    assert text.count(stub) == 1, f"{region.id}: stub not found once in {target}"
    target.write_text(text.replace(stub, "".join(solution)))


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """``python -m ldm_np.exercises ARGS``, as an instructor or a student types it."""
    return subprocess.run(
        [sys.executable, "-m", "ldm_np.exercises", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )


def grade_rows(stdout: str) -> dict[str, str]:
    """The rows of a printed grade table, by exercise id."""
    return {line.split()[0]: line for line in stdout.splitlines() if line.split()[:1] in ([i] for i in BY_ID)}


# --------------------------------------------------------------------------
# The table and the markers of this repository
# --------------------------------------------------------------------------


def test_list_shows_every_exercise_with_its_tutorial(capsys):
    assert exercises.main(["list"]) == 0
    out = capsys.readouterr().out
    for ex in EXERCISES:
        line = next(line for line in out.splitlines() if line.startswith(ex.id + " "))
        assert ex.tutorial in line and ex.location in line
    assert {ex.tutorial for ex in EXERCISES} <= set(TUTORIALS)
    assert len(BY_ID) == len(EXERCISES)  # ids are unique


def test_the_instructor_notes_list_every_exercise_and_tutorial():
    notes = (REPO / "tutorials" / "README.md").read_text()
    assert all(f"`{ex.id}`" in notes for ex in EXERCISES), [
        ex.id for ex in EXERCISES if f"`{ex.id}`" not in notes
    ]
    assert all(f"`{t}.py`" in notes for t in TUTORIALS)
    assert {p.stem for p in (REPO / "tutorials").glob("[0-9][0-9]_*.py")} == set(TUTORIALS)


def test_check_passes_on_this_repository(capsys, regions):
    assert exercises.main(["check"]) == 0
    assert f"ok: {len(EXERCISES)} exercise regions" in capsys.readouterr().out
    assert set(regions) == set(BY_ID)


def _normalised(source: str) -> str:
    """Source without whitespace and array-module prefixes, so `np.sqrt(a) * b` matches `xp.sqrt(a)*b`."""
    return re.sub(r"\b(?:np|xp|math|numpy)\.", "", re.sub(r"\s+", "", source))


def solution_expressions(region: exercises.Region) -> set[str]:
    """The right-hand sides and returned expressions of a region that compute something (an operator)."""
    lines = (REPO / region.path).read_text().splitlines()[region.begin : region.end - 1]
    body = textwrap.dedent("\n".join(lines))
    found = set()
    for node in ast.walk(ast.parse(body)):
        value = (
            getattr(node, "value", None)
            if isinstance(node, (ast.Assign, ast.AugAssign, ast.Return))
            else None
        )
        if value is not None and any(isinstance(n, ast.BinOp) for n in ast.walk(value)):
            text = _normalised(ast.unparse(value))
            if len(text) >= 8:
                found.add(text)
    return found


def graded_source(nodeid: str) -> str:
    """The source of a graded test function and of every function of its file that it calls, transitively."""
    file, _, name = nodeid.partition("::")
    tree = ast.parse((REPO / file).read_text())
    text = (REPO / file).read_text()
    functions = {n.name: n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    todo, seen, parts = [name.split("[", 1)[0]], set(), []
    while todo:
        fn = functions.get(todo.pop())
        if fn is None or fn.name in seen:
            continue
        seen.add(fn.name)
        parts.append(ast.get_source_segment(text, fn) or "")
        todo += [n.id for n in ast.walk(fn) if isinstance(n, ast.Name) and n.id in functions]
    return "\n".join(parts)


@pytest.mark.parametrize("exercise", [ex.id for ex in EXERCISES])
def test_no_graded_test_contains_its_exercise_s_solution(exercise, regions):
    """A student copy ships the graded tests: none may hold an expression of the solution it grades."""
    expressions = solution_expressions(regions[exercise])
    assert expressions, f"{exercise}: no solution expression found (the check would prove nothing)"
    for nodeid in BY_ID[exercise].tests:
        source = _normalised(graded_source(nodeid))
        leaked = sorted(e for e in expressions if e in source)
        assert not leaked, f"{nodeid} contains the solution of {exercise}: {leaked}"


def test_the_proof_of_no_leak_can_fail(regions, tmp_path):
    """The check above finds a solution expression pasted into a test."""
    expression = sorted(solution_expressions(regions["dense_backward"]))[0]
    assert expression in _normalised(f"def test_x():\n    expected = {expression}\n")


def test_stored_outputs_of_the_graded_tests_are_the_reference_s_own():
    """tests/data/graded_exercises.npz equals what this project's code computes on the same inputs."""
    sys.path.insert(0, str(REPO / "tests"))
    try:
        import test_graded_exercises as graded
    finally:
        sys.path.remove(str(REPO / "tests"))
    with np.load(graded.EXPECTED) as stored:
        keys = set(stored.files)
        computed = {}
        for exercise, cases in graded.CASES.items():
            for k, (name, _, compute) in enumerate(cases()):
                computed[f"{exercise}.{k}"] = np.asarray(compute())
                np.testing.assert_allclose(
                    stored[f"{exercise}.{k}"], computed[f"{exercise}.{k}"], rtol=1e-12, err_msg=name
                )
    assert keys == set(computed), "rerun: python tests/test_graded_exercises.py --record"


# --------------------------------------------------------------------------
# The student copy
# --------------------------------------------------------------------------


def test_student_copy_differs_from_the_project_only_in_the_regions(student, regions):
    files = {p.as_posix() for p in exercises.project_files(REPO)}
    copied = {p.relative_to(student).as_posix() for p in student.rglob("*") if p.is_file()}
    assert copied == files
    assert "tests/test_exercises.py" not in copied and "ldm_np/exercises/__init__.py" in copied
    assert not any(part in exercises.EXCLUDED_DIRS for f in copied for part in Path(f).parts)
    for required in ("pyproject.toml", "requirements.txt", "tests/conftest.py", "tutorials/_tutorial.py"):
        assert required in copied
    stubbed = {r.path for r in regions.values()}
    for rel in files:
        original, copy = (REPO / rel).read_bytes(), (student / rel).read_bytes()
        if rel in stubbed:
            expected = exercises.stub_out(original.decode(), [r for r in regions.values() if r.path == rel])
            assert copy.decode() == expected, rel
        elif rel in ANSWER_BEARING_TESTS:
            expected, missing = exercises.markers.strip_functions(
                original.decode(), ANSWER_BEARING_TESTS[rel]
            )
            assert copy.decode() == expected and not missing, rel
            for name in ANSWER_BEARING_TESTS[rel]:
                assert f"def {name}(" in original.decode() and f"def {name}(" not in copy.decode()
        else:
            assert copy == original, rel


def test_the_student_copy_ships_no_solution_expression(student, regions):
    """Not only the graded tests: no test file of the copy holds an expression of any solution."""
    shipped = {p: _normalised(p.read_text()) for p in (student / "tests").rglob("*.py")}
    leaks = [
        f"{p.relative_to(student)}: {ex_id}: {e}"
        for ex_id, region in regions.items()
        for e in solution_expressions(region)
        for p, text in shipped.items()
        if e in text
    ]
    assert not leaks, "\n".join(leaks)


def test_each_region_becomes_one_indented_stub_under_the_kept_docstring(student, regions):
    for ex in EXERCISES:
        region = regions[ex.id]
        source = (student / ex.path).read_text()
        assert source.count(f'raise NotImplementedError("exercise {ex.id}")') == 1
        assert exercises.stub_line(ex.id, region.indent) + "\n" in source
        assert "SOLUTION" not in source
        docs = {}
        for root in (REPO, student):
            tree = exercises.parse_python((root / ex.path).read_text())
            fn = dict(exercises.markers._functions(tree))[ex.function]
            docs[root] = ast.get_docstring(fn)
            if root is student:  # the body after the docstring starts or ends with the stub
                stubs = [n for n in ast.walk(fn) if isinstance(n, ast.Raise) and "exercise" in ast.unparse(n)]
                assert len(stubs) == 1
        assert docs[student] and docs[student] == docs[REPO]


def test_build_can_stub_out_one_tutorial_only(tmp_path, capsys, regions):
    out = tmp_path / "student"
    assert exercises.main(["build", str(out), "--tutorial", "01_dense_and_backprop"]) == 0
    first = [ex for ex in EXERCISES if ex.tutorial == "01_dense_and_backprop"]
    assert f"with {len(first)} exercises stubbed out" in capsys.readouterr().out
    for ex in EXERCISES:
        source = (out / ex.path).read_text()
        assert (f'raise NotImplementedError("exercise {ex.id}")' in source) == (
            ex.tutorial == "01_dense_and_backprop"
        )
        assert "SOLUTION" not in source
    kept = [r for r in regions.values() if r.path == "ldm_np/diffusion.py"]  # solutions kept, markers gone
    assert (out / "ldm_np/diffusion.py").read_text() == exercises.stub_out(
        (REPO / "ldm_np/diffusion.py").read_text(), [], kept
    )
    assert exercises.main(["build", str(tmp_path / "x"), "--tutorial", "09_nope"]) == 2


def test_build_refuses_a_non_empty_folder_and_the_project_itself(tmp_path):
    (tmp_path / "old.txt").write_text("x")
    with pytest.raises(MarkerError, match="not an empty folder"):
        exercises.build(tmp_path, REPO)
    with pytest.raises(MarkerError, match="the project itself"):
        exercises.build(REPO, REPO)


# --------------------------------------------------------------------------
# Grading
# --------------------------------------------------------------------------


def test_the_reference_passes_the_grader_for_every_exercise():
    result = run_cli("grade", str(REPO))
    assert result.returncode == 0, result.stdout + result.stderr
    rows = grade_rows(result.stdout)
    assert set(rows) == set(BY_ID)
    for ex in EXERCISES:
        assert " passed " in rows[ex.id], rows[ex.id]
        if ex.probe is not None:  # the largest gradient error, printed as 1.2e-10
            assert float(rows[ex.id].split()[-1]) < TOLERANCE, rows[ex.id]
    assert f"{len(EXERCISES)} exercises: {len(EXERCISES)} passed" in result.stdout


def test_a_fresh_copy_fails_every_exercise_on_its_stub_and_nothing_else(student, monkeypatch):
    # The project on PYTHONPATH as well: the copy must still import its own ldm_np.
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    files = sorted(p.relative_to(student).as_posix() for p in (student / "tests").glob("test_*.py"))
    probes = [ex.id for ex in EXERCISES if ex.probe is not None]
    with ThreadPoolExecutor(max_workers=2) as pool:  # the copy's whole suite, in two halves at once
        halves = list(
            pool.map(lambda k: exercises.run_tests(student, files[k::2], probes=probes[k::2]), (0, 1))
        )
    run = exercises.RunResult(
        tests={**halves[0].tests, **halves[1].tests},
        probes={**halves[0].probes, **halves[1].probes},
        collect_errors={**halves[0].collect_errors, **halves[1].collect_errors},
        modules={**halves[0].modules, **halves[1].modules},
        returncode=max(h.returncode for h in halves),
        output="",
    )
    assert all(Path(f).resolve().is_relative_to(student.resolve()) for f in run.modules.values())
    assert "ldm_np.layers" in run.modules and not run.collect_errors, run.collect_errors

    for ex in EXERCISES:
        row = exercises.grade_exercise(ex, run)
        assert (row.status, row.passed) == ("not attempted", 0), (ex.id, row)
        graded = {n: r for n, r in run.tests.items() if ex.grades(n)}
        assert graded and all(r["exercise"] == ex.id for r in graded.values()), (ex.id, graded)
        if ex.probe is not None:
            assert run.probes[ex.id]["status"] == "not attempted"

    failed = {n: r for n, r in run.tests.items() if r["outcome"] in ("failed", "error")}
    other = [f"{n}: {r['message']}" for n, r in failed.items() if not r["exercise"]]
    assert not other, "failures that are not an exercise stub:\n" + "\n".join(other)
    assert len(run.tests) - len(failed) > len(run.tests) / 2  # most tests never reach a stub


def fill_plan(n: int) -> list[list[int]]:
    """Which of n exercises to fill in, per copy, so that for any two exercises X != Y some
    copy has X filled in and Y still stubbed.

    Exercise i gets its own set of copies, all sets of one size k from m copies, so no set
    contains another; m is the smallest with C(m, m // 2) >= n (5 copies for 10 exercises).
    """
    m = next(m for m in range(1, n + 2) if math.comb(m, m // 2) >= n)
    codes = list(itertools.combinations(range(m), m // 2))[:n]
    return [[i for i, code in enumerate(codes) if copy in code] for copy in range(m)]


def test_filling_in_exercises_makes_exactly_those_pass(tmp_path, regions):
    """Each exercise passes once filled in, whichever others are filled in or still stubbed.

    For each X and each other Y, some copy has X filled in and Y stubbed; X passing there
    shows that X's tests never reach Y's region. So in a copy with X alone filled in, X's
    tests run exactly the reference's code and pass, while every other exercise still stops
    on its own stub (its tests reach their own stub first: the fresh-copy test). Five
    copies prove this for all ten exercises; the next test shows it literally for one.
    """

    def fill_and_grade(k: int, filled: list[int]) -> list[str]:
        copy = tmp_path / f"copy{k}"
        exercises.build(copy, REPO)
        for i in filled:
            fill_in(copy, regions[EXERCISES[i].id])
        wrong = []
        for i, row in enumerate(exercises.grade(copy)):
            expected = "passed" if i in filled else "not attempted"
            if row.status != expected:
                names = [EXERCISES[j].id for j in filled]
                wrong.append(
                    f"filled {names}: {row.exercise.id} is {row.status}, not {expected} {row.detail}"
                )
        return wrong

    n = len(EXERCISES)
    plan = fill_plan(n)
    assert all(any(x in f and y not in f for f in plan) for x in range(n) for y in range(n) if x != y)
    with ThreadPoolExecutor(max_workers=2) as pool:  # each grade waits on its own pytest subprocess
        problems = [p for found in pool.map(fill_and_grade, range(len(plan)), plan) for p in found]
    assert not problems, "\n".join(problems)


def test_filling_in_one_exercise_makes_exactly_that_one_pass_and_a_bug_fails_it(tmp_path, regions):
    copy = tmp_path / "student"
    exercises.build(copy, REPO)
    fill_in(copy, regions["dense_backward"])
    result = run_cli("grade", str(copy))  # what an instructor runs on a submission
    assert result.returncode == 1, result.stdout + result.stderr
    rows = grade_rows(result.stdout)
    assert " passed " in rows.pop("dense_backward")
    assert len(rows) == len(EXERCISES) - 1 and all(" not attempted " in r for r in rows.values()), (
        result.stdout
    )
    assert f"{len(EXERCISES)} exercises: 1 passed, {len(EXERCISES) - 1} not attempted" in result.stdout

    # Now a student's wrong solution: dkernel twice too large.
    region = regions["dense_backward"]
    target = copy / region.path
    wrong = f"{region.indent}x, kernel = cache\n{region.indent}return dy @ kernel.T, 2.0 * (x.T @ dy), dy.sum(axis=0)\n"
    solution = "".join(
        (REPO / region.path).read_text().splitlines(keepends=True)[region.begin : region.end - 1]
    )
    assert target.read_text().count(solution) == 1
    target.write_text(target.read_text().replace(solution, wrong))
    result = run_cli("grade", str(copy), "--exercise", "dense_backward")  # what a student runs
    assert result.returncode == 1, result.stdout + result.stderr
    assert list(grade_rows(result.stdout)) == ["dense_backward"]  # only the exercise asked for
    row = grade_rows(result.stdout)["dense_backward"]
    assert " failed " in row and float(row.split()[-1]) > 0.1, result.stdout
    assert "python -m pytest tests/test_graded_exercises.py::test_dense_backward_gradients" in result.stdout


# Planted bugs: (file, the reference's line, the bug, what the grader must print about it).
PLANTED = {
    "dense_backward": (
        "ldm_np/layers.py",
        "\n    dkernel = x.T @ dy",
        "\n    dkernel = dy.T @ x",
        ["dkernel: shape expected (5, 3), got (3, 5)", "transpose of the expected shape"],
    ),
    "kl_divergence_backward": (
        "ldm_np/losses.py",
        "\n    dmu = dkl * mu / batch",
        "\n    dmu = dkl * mu",
        [
            "dmu: shape (4, 3) ok, relative error",
            "the batch size (4) times the expected gradient",
            "a sum where a mean belongs",
        ],
    ),
    "reparameterize_backward": (
        "ldm_np/vae.py",
        "dlog_var = dz * eps * 0.5 * std",
        "dlog_var = dz * eps * std",
        ["dlog_var: shape (4, 3) ok", "twice the expected gradient: a factor of 2"],
    ),
    "ddim_step": (
        "ldm_np/samplers.py",
        "(1 - eta * eta) * gap",
        "gap",  # 1 - ab_prev in the direction term: sigma^2 not taken off
        [
            "the smallest failing case is 'one row, t = 7 -> 3, eta = 0.6'",
            "input eta = 0.6",
            "expected (1, 4):",
            "got      (1, 4):",
            "largest difference relative to the largest expected value",
        ],
    ),
    "adam_step": (
        "ldm_np/optim.py",
        "self.t += 1",
        'self.t += 1\n        raise ValueError("first line of the message\\nsecond line of the message")',
        ["first line of the message", "second line of the message"],
    ),
}


def test_the_grader_explains_each_planted_bug(tmp_path):
    """A copy with the reference's solutions and one planted bug per exercise: the printout says why each fails."""
    copy = tmp_path / "planted"
    exercises.build(copy, REPO, exercise_ids=[])  # every solution kept
    for ex_id, (path, right, wrong, _) in PLANTED.items():
        target = copy / path
        text = target.read_text()
        assert text.count(right) == 1, (ex_id, right)
        target.write_text(text.replace(right, wrong))
    result = run_cli("grade", str(copy), *(f"--exercise={i}" for i in PLANTED))
    print(result.stdout)  # the printout, for a reader of the test log
    assert result.returncode == 1, result.stdout + result.stderr
    rows = grade_rows(result.stdout)
    assert set(rows) == set(PLANTED) and all(" failed " in row for row in rows.values()), result.stdout
    for ex_id, (*_, expected) in PLANTED.items():
        for text in expected:
            assert text in result.stdout, f"{ex_id}: '{text}' not in the grader's output:\n{result.stdout}"


def test_explain_names_each_typical_mistake():
    from ldm_np.exercises.probes import explain

    g = np.random.default_rng(0).standard_normal((4, 3))
    assert "ok" in explain("dW", g, g.copy())[1]
    assert "transpose of the expected shape" in explain("dW", g, g.T)[1]
    assert "a factor of 2" in explain("dW", g, 2 * g)[1]
    assert "a factor of 2 missing" in explain("dW", g, 0.5 * g)[1]
    assert "wrong sign" in explain("dW", g, -g)[1]
    assert "a sum where a mean belongs" in explain("dW", g, 4 * g)[1]
    assert "a mean where a sum belongs" in explain("dW", g, g / 4)[1]
    assert "3 times the expected gradient" in explain("dW", g, 3 * g)[1]
    noisy = g + np.random.default_rng(1).standard_normal(g.shape)
    assert "hint" not in explain("dW", g, noisy)[1]  # no pattern: no hint
    square = np.random.default_rng(2).standard_normal((3, 3))
    assert "transpose of the expected gradient" in explain("dW", square, square.T)[1]


def test_the_derive_level_removes_only_the_formula_paragraphs(tmp_path, regions, student):
    """build --derive: the implement copy minus each Formula: paragraph, replaced by one line; its stubs grade."""
    from ldm_np.exercises.markers import DERIVE_STUB, formula_paragraph

    derive = tmp_path / "derive"
    assert exercises.main(["build", str(derive), "--derive"]) == 0
    derivable = [r for r in regions.values() if formula_paragraph((REPO / r.path).read_text(), r)]
    assert {r.id for r in derivable} >= {
        "dense_backward",
        "kl_divergence_backward",
        "reparameterize_backward",
    }
    for path in sorted({r.path for r in regions.values()}):
        implement_text, derive_text = (student / path).read_text(), (derive / path).read_text()
        reference = (REPO / path).read_text().split("\n")
        removed = []
        for r in derivable:
            if r.path == path:
                first, last = formula_paragraph("\n".join(reference), r)
                removed.append(reference[first - 1 : last])
        for lines in removed:
            block = "\n".join(lines) + "\n"
            assert block in implement_text and block not in derive_text, (path, lines[0])
            indent = lines[0][: len(lines[0]) - len(lines[0].lstrip())]
            implement_text = implement_text.replace(block, indent + DERIVE_STUB + "\n", 1)
        assert implement_text == derive_text, path
    assert any(DERIVE_STUB in (derive / r.path).read_text() for r in derivable)
    rows = exercises.grade(derive)  # every exercise stops on its stub, as in the implement copy
    assert [row.status for row in rows] == ["not attempted"] * len(EXERCISES), rows


def test_build_warns_when_the_copy_would_import_another_ldm_np(student, monkeypatch):
    from ldm_np.exercises.cli import shadowing_warning

    monkeypatch.setenv("PYTHONPATH", str(REPO))  # as an editable install of the reference would
    warning = shadowing_warning(student)
    assert warning and f"import ldm_np from {REPO / 'ldm_np'}" in warning, warning
    monkeypatch.setenv("PYTHONPATH", str(student))
    assert shadowing_warning(student) is None


def test_grade_refuses_an_unknown_exercise_and_a_folder_without_ldm_np(tmp_path, capsys):
    assert exercises.main(["grade", str(REPO), "--exercise", "nope"]) == 2
    assert "unknown exercise 'nope'" in capsys.readouterr().err
    assert exercises.main(["grade", str(tmp_path)]) == 2
    assert "no ldm_np package" in capsys.readouterr().err


def test_the_grader_refuses_a_copy_that_imports_another_ldm_np(tmp_path, monkeypatch):
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_one.py").write_text("import ldm_np\n\n\ndef test_one():\n    pass\n")
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # no ldm_np in tmp_path: it would come from REPO
    with pytest.raises(RuntimeError, match="imported ldm_np"):
        exercises.run_tests(tmp_path, ["tests/test_one.py"])


# --------------------------------------------------------------------------
# Bad markers: reported with file and line, by check and by build
# --------------------------------------------------------------------------


def q_sample_lines(text: str) -> tuple[int, int]:
    """0-based indices of the BEGIN and END lines of the q_sample region."""
    lines = text.splitlines()
    begin = lines.index(f"    {MARK} BEGIN SOLUTION q_sample")
    end = next(i for i in range(begin, len(lines)) if lines[i].strip() == f"{MARK} END SOLUTION")
    return begin, end


def drop_end(lines, begin, end):
    del lines[end]
    return begin, "BEGIN SOLUTION q_sample has no END SOLUTION"


def stray_end(lines, begin, end):
    lines.insert(end + 1, f"    {MARK} END SOLUTION")
    return end + 1, "END SOLUTION without a BEGIN SOLUTION"


def nested(lines, begin, end):
    lines.insert(begin + 1, f"    {MARK} BEGIN SOLUTION diffusion_loss")
    return begin, "cannot nest"


def unknown_id(lines, begin, end):
    lines[begin] = f"    {MARK} BEGIN SOLUTION q_sampel"
    return begin, "unknown exercise id 'q_sampel'"


def missing_id(lines, begin, end):
    lines[begin] = f"    {MARK} BEGIN SOLUTION"
    return begin, "needs an exercise id"


def near_miss(lines, begin, end):
    lines[begin] = "    ## BEGIN SOLUTION q_sample"
    return begin, "looks like a solution marker"


def around_docstring(lines, begin, end):
    marker = lines.pop(begin)
    first = max(i for i in range(begin) if lines[i].startswith("def q_sample("))
    lines.insert(first + 1, marker)
    return first + 1, "docstring"


def wrong_indent(lines, begin, end):
    lines[begin] = f"{MARK} BEGIN SOLUTION q_sample"
    lines[end] = f"{MARK} END SOLUTION"
    return begin, "indented 0 columns but the code in its region 4"


def duplicate(lines, begin, end):
    lines[end + 1 : end + 1] = [
        "",
        "",
        "def extra():",
        '    """Doc."""',
        f"    {MARK} BEGIN SOLUTION q_sample",
        "    return 1",
        f"    {MARK} END SOLUTION",
    ]
    return end + 5, "already has a region"


@pytest.mark.parametrize(
    "spoil",
    [
        drop_end,
        stray_end,
        nested,
        unknown_id,
        missing_id,
        near_miss,
        around_docstring,
        wrong_indent,
        duplicate,
    ],
)
def test_bad_markers_are_reported_with_file_and_line(spoil, tmp_path, capsys):
    project = tmp_path / "project"
    for rel in (p for p in exercises.project_files(REPO) if p.suffix == ".py"):  # all that is checked
        (project / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO / rel, project / rel)
    target = project / "ldm_np" / "diffusion.py"
    lines = target.read_text().splitlines()
    index, phrase = spoil(lines, *q_sample_lines(target.read_text()))
    target.write_text("\n".join(lines) + "\n")
    where = f"ldm_np/diffusion.py:{index + 1}:"

    assert exercises.main(["check", "--root", str(project)]) == 1
    err = capsys.readouterr().err
    assert any(where in line and phrase in line for line in err.splitlines()), err

    out = tmp_path / "out"
    with pytest.raises(MarkerError) as info:
        exercises.build(out, project)
    assert any(where in p and phrase in p for p in info.value.problems)
    assert not out.exists()  # nothing written


def test_scan_markers_on_a_small_file():
    text = "\n".join(
        [
            "def f(x):",
            '    """Twice x."""',
            f"    {MARK} BEGIN SOLUTION dense_backward",
            "    y = 2 * x",
            "    return y",
            f"    {MARK} END SOLUTION",
        ]
    )
    (region,), problems = exercises.scan_markers("f.py", text)
    assert not problems and (region.begin, region.end, region.indent) == (3, 6, "    ")
    stubbed = exercises.stub_out(text + "\n", [region])
    assert stubbed.splitlines()[2:] == ['    raise NotImplementedError("exercise dense_backward")']
