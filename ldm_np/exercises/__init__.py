"""Classroom exercises cut from the library's own source, and their grader.

A chosen function body sits between two comment lines, ``### BEGIN SOLUTION
<id>`` and ``### END SOLUTION``, placed after the function's docstring: the
docstring (task, shapes, formula) is what the student keeps, the region is
what the student writes. From the project root:

    python -m ldm_np.exercises list                  # the exercises and their tutorials
    python -m ldm_np.exercises check                 # markers balanced, ids and places match the table
    python -m ldm_np.exercises build OUT             # a student copy of the whole project
    python -m ldm_np.exercises grade OUT [--exercise ID]

The package, one module per job:

- ``table``    the exercises: id, file:function, tutorial, the tests that grade it;
- ``probes``   for gradient exercises, the largest relative error of the student's gradient;
- ``markers``  finding and checking the markers, cutting regions out of a text;
- ``handout``  building the student copy (``build``);
- ``grading``  one pytest subprocess on a copy, turned into one row per exercise (``grade``);
- ``plugin``   the pytest hooks that subprocess loads (a copy of this package, so the
  grading logic is the grader's, never the submission's);
- ``cli``      the command line.
"""

from .cli import main
from .grading import Grade, RunResult, format_grades, grade, grade_exercise, run_tests
from .handout import build
from .markers import (
    EXCLUDED_DIRS,
    PROJECT_ROOT,
    MarkerError,
    Region,
    find_regions,
    parse_python,
    project_files,
    scan_markers,
    stub_out,
)
from .table import BY_ID, EXERCISES, TUTORIALS, Exercise, stub_line

__all__ = [
    "BY_ID",
    "EXCLUDED_DIRS",
    "EXERCISES",
    "PROJECT_ROOT",
    "TUTORIALS",
    "Exercise",
    "Grade",
    "MarkerError",
    "Region",
    "RunResult",
    "build",
    "find_regions",
    "format_grades",
    "grade",
    "grade_exercise",
    "main",
    "parse_python",
    "project_files",
    "run_tests",
    "scan_markers",
    "stub_line",
    "stub_out",
]
