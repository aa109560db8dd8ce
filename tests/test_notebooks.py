"""Every tutorial turns into a Jupyter notebook (jupytext's percent format).

The documented command is ``jupytext --to notebook tutorials/[0-9]*.py``
(``pip install -e ".[notebooks]"`` installs jupytext). The structural test
runs everywhere; the conversion itself runs where jupytext is installed and
is skipped cleanly elsewhere (CI installs requirements.txt only: jupytext
brings about fifteen packages, too many for one test).
"""

from __future__ import annotations

from pathlib import Path

import pytest

TUTORIALS = sorted((Path(__file__).resolve().parent.parent / "tutorials").glob("[0-9][0-9]_*.py"))


def cells(text: str) -> list[tuple[str, list[str]]]:
    """(kind, lines) of each percent-format cell: kind is "markdown" or "code"."""
    out: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if line.startswith("# %%"):
            out.append(("markdown" if "[markdown]" in line else "code", []))
        elif out:
            out[-1][1].append(line)
    return out


@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_is_in_percent_format(path):
    """Starts with a markdown cell; markdown cells hold only comments, so they convert to text."""
    text = path.read_text()
    assert text.startswith("# %% [markdown]\n"), f"{path.name}: the first line must open a markdown cell"
    parsed = cells(text)
    assert sum(kind == "code" for kind, _ in parsed) >= 2
    for kind, lines in parsed:
        if kind == "markdown":
            bad = [line for line in lines if line.strip() and not line.startswith("#")]
            assert not bad, f"{path.name}: code inside a markdown cell: {bad[:2]}"


@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_converts_to_a_valid_notebook(path):
    jupytext = pytest.importorskip("jupytext")
    nbformat = pytest.importorskip("nbformat")
    notebook = jupytext.reads(path.read_text(), fmt="py:percent")
    nbformat.validate(notebook)
    expected = [kind for kind, _ in cells(path.read_text())]
    assert [c.cell_type for c in notebook.cells] == expected
    assert notebook.cells[0].source.startswith("# Tutorial")  # the title, as markdown
    back = jupytext.writes(notebook, fmt="py:percent")
    assert [kind for kind, _ in cells(back)] == expected  # and back to the same cells
