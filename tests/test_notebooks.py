"""The notebooks (``notebooks/*.ipynb``, issue 17): stored without outputs, and each one
run top to bottom in a real Jupyter kernel, its last cell asserting what it measured.

The four run side by side in one module fixture, each in a kernel of its own (nbclient,
kernel ``python3``: this interpreter's ipykernel), at the small sizes their parameters
cell takes from ``TASKRACE_NOTEBOOK_QUICK=1``; each test then reports on its own
notebook. Their Celery parts run on real ``celery worker`` processes behind a real Redis,
both started by taskrace inside the kernel (no ``TASKRACE_BROKER_URL``, no ``REDIS_URL``:
the lab's and a developer's brokers are left out). The figure each notebook saves for the
README goes to a temporary folder (``TASKRACE_NOTEBOOK_FIGURES``) and is checked there.
A notebook whose assertion fails is an error of its test, with the failing cell and its
traceback; a fifth, one-cell notebook whose assertion fails shows that it is.
"""
from __future__ import annotations

import os
import re
import struct
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from celery_fixtures import IN_CI, require_redis_binary
from conftest import REPO_ROOT

# The notebooks' last cells assert CPU-bound ratios (processes over threads on power-cpu):
# both cores, nothing beside them (tests/conftest.py).
pytestmark = pytest.mark.alone

# in the [test] extra: a laptop without them skips, CI fails
nbformat = __import__("nbformat") if IN_CI else pytest.importorskip("nbformat")
nbclient = __import__("nbclient") if IN_CI else pytest.importorskip("nbclient")

NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
# each notebook and the README figure it saves (docs/images/<figure>.png)
FIGURES = {
    "1-the-seed": "nb-1-seed",
    "2-when-things-break": "nb-2-faults",
    "3-across-a-network": "nb-3-network",
    "4-race-your-own-function": "nb-4-race",
}
CELL_TIMEOUT = 300  # seconds one cell may take (the fault lab's runs are the longest)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def notebook_path(name: str) -> Path:
    return NOTEBOOKS_DIR / f"{name}.ipynb"


def code_cells(nb) -> list:
    return [c for c in nb.cells if c.cell_type == "code"]


@dataclass
class Executed:
    nb: object  # the notebook with its outputs (never written back)
    error: str | None  # the failing cell and its traceback, as nbclient tells it
    seconds: float


def execute(path: Path, env: dict) -> Executed:
    """Run ``path`` top to bottom in a fresh kernel whose working folder is the notebook's
    (as Jupyter's), with ``env``; an error stops it there, as it stops a reader."""
    nb = nbformat.read(str(path), as_version=4)
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                                     resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    try:
        client.execute(env=env)
        error = None
    except Exception as exc:  # noqa: BLE001 - CellExecutionError, a timeout, a dead kernel: the test says which
        error = f"{type(exc).__name__}: {exc}"
    return Executed(nb, error, time.perf_counter() - start)


FAILING = """\
import os
QUICK = os.environ.get("TASKRACE_NOTEBOOK_QUICK", "") == "1"
measured = {"speedup": 1.0}
assert measured["speedup"] >= 1.5, measured
"""


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """Every notebook run once, side by side, plus the one-cell notebook that must fail:
    {name: Executed}, the folder their figures went to, and the processes the kernels left
    behind (stopped by PID here; a test below fails on them)."""
    require_redis_binary()  # the Celery parts start an embedded Redis: skip locally without one, fail in CI
    figures = tmp_path_factory.mktemp("notebook-figures")
    failing = tmp_path_factory.mktemp("failing") / "fails.ipynb"
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                           "language": "python"}})
    nb.cells = [nbformat.v4.new_code_cell(FAILING)]
    nbformat.write(nb, str(failing))
    env = dict(os.environ, TASKRACE_NOTEBOOK_QUICK="1", TASKRACE_NOTEBOOK_FIGURES=str(figures))
    for name in ("TASKRACE_BROKER_URL", "REDIS_URL"):
        env.pop(name, None)
    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    paths = {name: notebook_path(name) for name in FIGURES} | {"failing": failing}
    with ThreadPoolExecutor(len(paths)) as pool:
        futures = {name: pool.submit(execute, path, env) for name, path in paths.items()}
        results = {name: future.result() for name, future in futures.items()}
    left = [p for p in me.children(recursive=True) if p.pid not in before]
    named = [_describe(p) for p in left]
    for p in left:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(left, timeout=10)
    yield results, figures, [n for n in named if n]


def _describe(p: psutil.Process) -> str | None:
    try:
        return f"{p.pid} {' '.join(p.cmdline())[:120]}"
    except psutil.Error:  # gone meanwhile: not left behind
        return None


# --- stored: no outputs, the shape every notebook shares ------------------------------------------

def test_the_notebooks_are_there():
    found = sorted(p.stem for p in NOTEBOOKS_DIR.glob("*.ipynb"))
    assert found == sorted(FIGURES)
    assert (NOTEBOOKS_DIR / "mywork.py").is_file()  # what notebook 4 races on Celery


@pytest.mark.parametrize("name", list(FIGURES))
def test_stored_without_outputs(name):
    nb = nbformat.read(str(notebook_path(name)), as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    for cell in code_cells(nb):
        assert cell.outputs == [], f"{name}: a cell was committed with its outputs: {cell.source[:60]!r}"
        assert cell.execution_count is None, f"{name}: a cell was committed executed: {cell.source[:60]!r}"


@pytest.mark.parametrize("name", list(FIGURES))
def test_each_notebook_takes_sizes_first_and_ends_with_assertions(name):
    nb = nbformat.read(str(notebook_path(name)), as_version=4)
    cells = code_cells(nb)
    first, last = cells[0], nb.cells[-1]
    assert "parameters" in first.metadata.get("tags", []), "the first code cell is the parameters cell"
    assert "TASKRACE_NOTEBOOK_QUICK" in first.source and "TASKRACE_NOTEBOOK_FIGURES" in first.source
    assert last.cell_type == "code" and last.source.count("assert ") >= 3, "it ends with what it measured"
    # independent of this machine: the lab mounts the folder elsewhere, a student clones it anywhere
    text = "\n".join(c.source for c in nb.cells)
    assert not re.search(r"""["'](/work|/home|/root|/tmp|/Users|[A-Z]:\\)""", text), "an absolute path"
    assert f'"{FIGURES[name]}"' in text, "it saves its README figure under the name the README shows"


# --- run: top to bottom, in a real kernel -----------------------------------------------------------

@pytest.mark.parametrize("name", list(FIGURES))
def test_runs_top_to_bottom_and_its_assertions_hold(executed, name):
    results, _, _ = executed
    run = results[name]
    print(f"{name}: {run.seconds:.1f} s")
    assert run.error is None, f"{name} failed:\n{run.error[-6000:]}"
    cells = code_cells(run.nb)
    assert all(c.execution_count is not None for c in cells), "every code cell ran"
    said = "".join(o.get("text", "") for o in cells[-1].outputs if o.get("output_type") == "stream")
    assert said.strip(), "the assertion cell ends by saying what held"


def test_a_failing_assertion_fails_the_run(executed):
    results, _, _ = executed
    run = results["failing"]
    assert run.error is not None and "AssertionError" in run.error and "'speedup': 1.0" in run.error


def test_each_notebook_saves_its_readme_figure(executed):
    _, figures, _ = executed
    for name, figure in FIGURES.items():
        png = figures / f"{figure}.png"
        assert png.is_file(), f"{name} saved no {figure}.png"
        head = png.read_bytes()[:24]
        assert head[:8] == PNG_MAGIC
        width, height = struct.unpack(">II", head[16:24])
        assert width == 1200 and 300 <= height <= 2000, (figure, width, height)


def test_the_kernels_leave_no_process_behind(executed):
    _, _, left = executed
    assert left == [], f"processes outlived their notebooks (stopped now): {left}"


# --- the README and the install line ------------------------------------------------------------

def test_the_readme_shows_each_notebooks_figure_and_how_to_open_them():
    readme = (REPO_ROOT / "README.md").read_text()
    assert "pip install -e '.[notebook]'" in readme and "jupyter lab notebooks/" in readme
    for figure in FIGURES.values():
        assert f"docs/images/{figure}.png" in readme
        assert (REPO_ROOT / "docs" / "images" / f"{figure}.png").is_file()


def test_the_notebook_extra_brings_jupyterlab():
    # pip install -e '.[notebook]': the kernel, pandas for to_dataframe, and JupyterLab to open them
    line = re.search(r"^notebook = \[(.*)\]$", (REPO_ROOT / "pyproject.toml").read_text(), re.M)
    assert line, "pyproject.toml has a one-line notebook extra"
    names = {re.split(r"[<>=\[; ]", req.strip(' "'), maxsplit=1)[0].lower() for req in line.group(1).split(",")}
    assert {"jupyterlab", "ipykernel", "pandas"} <= names, names
