"""The grader's pytest plugin, active only in the grading subprocess (see grading.run_tests).

The hooks record each test's outcome and whether it stopped on an exercise's
stub; at the end of the session the probes run and everything is written as
JSON to the file named by ``REPORT_ENV``. In normal use the hooks do nothing.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np

from .table import BY_ID, Exercise

REPORT_ENV = "LDM_NP_GRADE_REPORT"
PROBES_ENV = "LDM_NP_GRADE_PROBES"
_NIE_MESSAGE = re.compile(r"^exercise ([A-Za-z0-9_]+)$")
# A stub's message seen as text: in a traceback, or as the CLI prints it ("error: exercise <id>").
_STUB_TEXT = re.compile(r"(?:NotImplementedError: |error: )exercise (" + "|".join(BY_ID) + r")\b")

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
    entry["message"] = _clip(f"{type(exc).__name__}: {text}")  # the whole message, every line
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
    path = os.environ.get(REPORT_ENV)
    if not path:
        return
    probes = {ex_id: _run_probe(BY_ID[ex_id]) for ex_id in filter(None, os.environ[PROBES_ENV].split(","))}
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
            report = ex.probe()  # type: ignore[misc]
    except NotImplementedError as e:
        if _NIE_MESSAGE.match(str(e)):
            return {"status": "not attempted", "error": None, "message": str(e)}
        return {"status": "error", "error": None, "message": f"NotImplementedError: {e}"}
    except Exception as e:
        return {"status": "error", "error": None, "message": f"{type(e).__name__}: {e}"[:300]}
    return {"status": "ok", "error": float(report.error), "message": report.explain()}


def _failure_line(text: str) -> str:
    """The exception lines of a pytest failure text ("E   ValueError: ..."), else its last line."""
    lines = [line for line in text.splitlines() if line.strip()]
    errors = [line[1:].strip() for line in lines if line.startswith("E ")]
    return _clip("\n".join(errors) if errors else (lines[-1].strip() if lines else ""))


def _clip(text: str, limit: int = 4000) -> str:
    """At most ``limit`` characters: enough for any assertion message, not for a runaway repr."""
    return text if len(text) <= limit else text[:limit] + " ..."
