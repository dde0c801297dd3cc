"""Every command's terminal output, JSON and report are unchanged for the same records.

tests/golden holds documents from real runs (compare, faults, network) and, under
expected/, what the code before the library face and the event stream (commit 449a007)
rendered of them: tables at 80 and 200 columns, markdown, CSV, the results JSON, and
each report page (charts and drawing time left out). Today's code must render the same.
Regenerate only for an intended change of output: see tests/golden/golden_render.py.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

GOLDEN = Path(__file__).resolve().parent / "golden"
sys.path.insert(0, str(GOLDEN))

from golden_render import render_all  # noqa: E402

BEFORE = "449a007"  # the last commit before the library face and the event stream
RENDERED: dict[str, str] = {}


def rendered() -> dict[str, str]:
    if not RENDERED:
        RENDERED.update(render_all())
    return RENDERED


@pytest.fixture(scope="module")
def before(tmp_path_factory) -> dict[str, str]:
    """What the code of BEFORE renders of the same documents, here and now (its tree out
    of git, rendered in a process of its own); expected/ when git has no such commit (a
    shallow clone, a tarball), as it rendered them on the day."""
    repo = GOLDEN.parents[1]
    tree, out = tmp_path_factory.mktemp("before"), tmp_path_factory.mktemp("before-out")
    archive = subprocess.run(["git", "-C", str(repo), "archive", BEFORE, "taskrace", "scenarios", "workers"],
                             capture_output=True, timeout=60)
    if archive.returncode == 0:
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True, timeout=60)
        env = dict(os.environ, PYTHONPATH=str(tree))
        proc = subprocess.run([sys.executable, str(GOLDEN / "golden_render.py"), str(out)], cwd=tree, env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert proc.stdout.strip().endswith(f"by the taskrace in {tree}"), proc.stdout  # not today's code
        source = out
    else:
        source = GOLDEN / "expected"
    return {p.name: p.read_text(encoding="utf-8") for p in source.iterdir()}


@pytest.mark.parametrize("name", sorted(p.name for p in (GOLDEN / "expected").iterdir()))
def test_renders_as_before(name, before):
    assert rendered()[name] == before[name]


def test_every_rendering_has_its_golden_file(before):
    assert set(rendered()) == set(before) == {p.name for p in (GOLDEN / "expected").iterdir()}

