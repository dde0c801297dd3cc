"""Every command's terminal output, JSON and report are unchanged for the same records.

tests/golden holds documents from real runs (compare, faults, network) and, under
expected/, what the code before the library face and the event stream (commit 449a007)
rendered of them: tables at 80 and 200 columns, markdown, CSV, the results JSON, and
each report page (charts and drawing time left out). Today's code must render the same.
Regenerate only for an intended change of output: see tests/golden/golden_render.py.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

GOLDEN = Path(__file__).resolve().parent / "golden"
sys.path.insert(0, str(GOLDEN))

from golden_render import render_all  # noqa: E402

RENDERED = {}


def rendered() -> dict[str, str]:
    if not RENDERED:
        RENDERED.update(render_all())
    return RENDERED


@pytest.mark.parametrize("name", sorted(p.name for p in (GOLDEN / "expected").iterdir()))
def test_renders_as_before(name):
    expected = (GOLDEN / "expected" / name).read_text(encoding="utf-8")
    assert rendered()[name] == expected


def test_every_rendering_has_its_golden_file():
    assert set(rendered()) == {p.name for p in (GOLDEN / "expected").iterdir()}
