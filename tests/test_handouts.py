"""Exercises with solutions in every chapter, and the student/instructor handouts (`make handouts`)."""
from __future__ import annotations

import re
import subprocess
import sys
import zipfile

import jupytext
import nbformat
import pytest

from repro.catalog import all_chapters
from repro.handouts import (HandoutError, SOLUTION_TAG, build_handouts, instructor_notebook, run_handout,
                            solution_cells, student_notebook)

CHAPTERS = [c.name for c in all_chapters()]
_EXERCISE = re.compile(r"^```\{exercise\}.*?\n:label: (?P<label>[\w-]+)", re.M)
_SOLUTION = re.compile(r"^```\{solution(?:-start)?\} (?P<label>[\w-]+)\n(?P<options>(?::[^\n]*\n)*)", re.M)


def _md(text):
    return nbformat.v4.new_markdown_cell(text)


def _code(text, tags=()):
    cell = nbformat.v4.new_code_cell(text)
    if tags:
        cell.metadata["tags"] = list(tags)
    cell.outputs = [nbformat.v4.new_output("stream", text="old output\n")]
    return cell


def _toy():
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        _code("profile = 'book'", tags=["parameters"]),
        _md("## Exercises\n\n```{exercise} One\n:label: ex-one\n\nDo it.\n```\n\n"
            "```{solution} ex-one\n:class: dropdown\n\nThe answer.\n```\n\nText after."),
        _md("```{exercise} Two\n:label: ex-two\n\nCode it.\n```\n\n```{solution-start} ex-two\n:class: dropdown\n```\n\n"
            "Explanation of the code."),
        _code("print('solution')", tags=[SOLUTION_TAG]),
        _code("print('inside a gated solution, untagged')"),
        _md("```{solution-end}\n```\n\n## References"),
        _code("print('after')"),
    ]
    return nb


def test_student_notebook_drops_every_kind_of_solution_and_keeps_the_rest():
    nb = _toy()
    student = student_notebook(nb)
    text = "\n".join(c.source for c in student.cells)
    assert "The answer" not in text and "Explanation of the code" not in text
    assert "print('solution')" not in text and "inside a gated solution" not in text
    assert "{solution" not in text
    for kept in ("Do it.", "Code it.", "Text after.", "## References", "print('after')", "profile = 'book'"):
        assert kept in text
    assert student.cells[0].metadata["tags"] == ["parameters"]
    assert all(c.outputs == [] for c in student.cells if c.cell_type == "code")
    assert solution_cells(student) == [] and solution_cells(nb) == [1, 2, 3, 5]
    assert nb.cells[3].outputs, "the original notebook is not modified"
    instructor = instructor_notebook(nb)
    assert len(instructor.cells) == len(nb.cells) and all(c.outputs == [] for c in instructor.cells
                                                         if c.cell_type == "code")


@pytest.mark.parametrize("cells", [
    [_md("```{solution-start} x\n```")],                                     # never closed
    [_md("```{solution-end}\n```")],                                         # closed, never opened
    [_md("```{solution} x\n:class: dropdown\n\nno closing fence")],          # unclosed directive
])
def test_malformed_solutions_are_refused(cells):
    nb = nbformat.v4.new_notebook()
    nb.cells = cells
    with pytest.raises(HandoutError):
        student_notebook(nb)


@pytest.mark.parametrize("name", CHAPTERS)
def test_chapter_has_three_exercises_each_with_a_collapsed_solution(name):
    chapter = next(c for c in all_chapters() if c.name == name)
    text = chapter.path.read_text()
    body = text[text.index("## Exercises"):]
    exercises = [m.group("label") for m in _EXERCISE.finditer(body)]
    solutions = {m.group("label"): m.group("options") for m in _SOLUTION.finditer(body)}
    assert len(exercises) >= 3, exercises
    for line in body.splitlines():  # a backtick fence's info string may not hold backticks (CommonMark)
        if line.startswith("```{exercise}"):
            assert "`" not in line[3:], f"backtick in an exercise title breaks the fence: {line}"
    assert len(set(exercises)) == len(exercises)
    for label in exercises:
        assert label in solutions, f"exercise {label} has no solution"
        assert ":class: dropdown" in solutions[label], f"solution of {label} is not collapsed"
    nb = jupytext.read(chapter.path)
    runnable = [c for c in nb.cells if c.cell_type == "code" and SOLUTION_TAG in c.metadata.get("tags", [])]
    assert runnable, "at least one solution must be a code cell (tagged 'solution') that every profile runs"
    student = student_notebook(nb)
    assert solution_cells(student) == []
    full_code = [c.source for c in nb.cells if c.cell_type == "code"]
    student_code = [c.source for c in student.cells if c.cell_type == "code"]
    assert student_code == [s for s in full_code if s not in {c.source for c in runnable}]
    assert any("parameters" in c.metadata.get("tags", []) for c in student.cells)


@pytest.mark.parametrize("name", CHAPTERS)
def test_runnable_solutions_ran_without_error_at_smoke(smoke_run, name):
    executed = nbformat.read(smoke_run(name).notebook, 4)
    ran = [c for c in executed.cells if c.cell_type == "code" and SOLUTION_TAG in c.metadata.get("tags", [])]
    assert ran
    for cell in ran:
        assert cell.outputs, "a runnable solution should print what it found"
        assert not [o for o in cell.outputs if o.output_type == "error"]


def test_make_handouts_writes_both_sets_and_zips(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "repro", "handouts", "--out", str(tmp_path)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    for kind in ("student", "instructor"):
        with zipfile.ZipFile(tmp_path / f"{kind}.zip") as zf:
            names = set(zf.namelist())
            assert {f"{kind}/{n}.ipynb" for n in CHAPTERS} | {f"{kind}/README.txt"} == names
            for n in CHAPTERS:
                nb = nbformat.reads(zf.read(f"{kind}/{n}.ipynb").decode(), 4)
                assert bool(solution_cells(nb)) == (kind == "instructor"), (kind, n)
                assert all(not c.outputs for c in nb.cells if c.cell_type == "code")
    bad = subprocess.run([sys.executable, "-m", "repro", "handouts", "no-such-chapter", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "no-such-chapter" in bad.stderr


@pytest.mark.parametrize("name", CHAPTERS)
def test_student_notebook_runs_at_smoke(tmp_path_factory, name):
    out = tmp_path_factory.mktemp("handouts")
    folder = build_handouts([name], out / "build", stream=sys.stderr)
    executed = run_handout(folder / "student" / f"{name}.ipynb", out / "run", "smoke", timeout_s=300)
    nb = nbformat.read(executed, 4)
    assert solution_cells(nb) == []
    assert (out / "run" / "metrics.json").exists(), "the student notebook runs through to run.finish()"
