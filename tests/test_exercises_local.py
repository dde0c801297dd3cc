"""The exercises lost-update, store-step and back-pressure, through the real grader.

Every folder a student could hand in is graded as a room, the way a teacher grades one
(``grade_room``, two checks at a time, the hidden checks with their full repeats): the
starter as ``taskrace exercise start`` hands it out, the reference solution, and each
plausible wrong solution. Then, per folder:

* the starter fails its hidden checks, with lessons (``failed``), never a crash;
* the reference passes every hidden check;
* a wrong solution fails, and a failing check's message holds its ``expect.txt`` (the
  lesson it must teach: "take the two locks in one global order", "EXEC returned None:
  the transaction did not happen; retry", "a consumer never got its stop signal").

The visible checks are graded the same way for the starter (fails) and the reference
(passes). store-step's checks need Redis: the grader starts a private one per check
(skipped on a laptop without redis-server, a failure in CI).
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from celery_fixtures import IN_CI, require_redis_binary  # noqa: E402
from taskrace.grading.exercises import MARKER, start  # noqa: E402
from taskrace.grading.runner import grade_room  # noqa: E402
from workers.infra.redis_server import find_redis_server  # noqa: E402

EXERCISES = ("lost-update", "store-step", "back-pressure")
NEEDS_REDIS = {"store-step"}
JOBS = 2  # the machine's two cores


def _wrong(exercise: str) -> list[str]:
    return sorted(d.name for d in (REPO_ROOT / "exercises" / exercise / "hidden" / "wrong").iterdir()
                  if (d / "solution.py").is_file())


CASES = [(ex, label) for ex in EXERCISES for label in ("starter", "reference", *_wrong(ex))]


def _hand_in(room: Path, exercise: str, label: str) -> Path:
    """A student's folder holding ``label``'s solution: the starter exactly as handed out."""
    folder = room / f"{exercise}--{label}"
    if label == "starter":
        start(exercise, folder)
        return folder
    source = REPO_ROOT / "exercises" / exercise / "hidden" / (label if label == "reference" else f"wrong/{label}")
    folder.mkdir(parents=True)
    shutil.copy(source / "solution.py", folder / "solution.py")
    (folder / MARKER).write_text(json.dumps({"exercise": exercise}) + "\n", encoding="utf-8")
    return folder


def _table(score) -> str:
    """What the grader said, for an assertion's message."""
    return "\n".join(f"  {c.name}: {c.status} ({c.runs}/{c.repeat} runs) {c.message}" for c in score.checks)


@pytest.fixture(scope="module")
def graded(tmp_path_factory) -> dict:
    """Every case graded once: (exercise, label, "hidden" | "visible") -> Score. Without
    redis-server (a laptop; never in CI) the exercises that need it are left out, and
    their tests skip."""
    runnable = [(ex, label) for ex, label in CASES
                if ex not in NEEDS_REDIS or IN_CI or find_redis_server()]
    room = tmp_path_factory.mktemp("room")
    folders = {(ex, label): _hand_in(room, ex, label) for ex, label in runnable}
    scores = {}
    hidden = grade_room(list(folders.values()), jobs=JOBS)
    for (ex, label), score in zip(folders, hidden):
        scores[ex, label, "hidden"] = score
    shown = [(ex, label) for ex, label in folders if label in ("starter", "reference")]
    visible = grade_room([folders[k] for k in shown], hidden=False, jobs=JOBS)
    for (ex, label), score in zip(shown, visible):
        scores[ex, label, "visible"] = score
    return scores


def _score(graded: dict, exercise: str, label: str, checks: str):
    if exercise in NEEDS_REDIS:
        require_redis_binary()  # skips on a laptop without it, fails in CI
    return graded[exercise, label, checks]


@pytest.mark.parametrize("exercise", EXERCISES)
def test_starter_fails_with_lessons(graded, exercise):
    # Given the starter, as `taskrace exercise start` hands it out (it imports and runs)
    for checks in ("hidden", "visible"):
        score = _score(graded, exercise, "starter", checks)
        # Then it does not pass, and what fails, fails with a lesson (no crash, no timeout)
        assert score.error is None, score.error
        assert not score.ok, f"the starter of {exercise} passed its {checks} checks:\n{_table(score)}"
        assert {c.status for c in score.checks if not c.passed} == {"failed"}, _table(score)


@pytest.mark.parametrize("exercise", EXERCISES)
def test_reference_passes(graded, exercise):
    for checks in ("hidden", "visible"):
        score = _score(graded, exercise, "reference", checks)
        assert score.ok, f"the reference of {exercise} did not pass its {checks} checks:\n{_table(score)}"
        assert score.earned == score.possible > 0


@pytest.mark.parametrize("exercise,label", [(ex, label) for ex, label in CASES
                                            if label not in ("starter", "reference")])
def test_wrong_solution_fails_with_its_lesson(graded, exercise, label):
    score = _score(graded, exercise, label, "hidden")
    expect = (REPO_ROOT / "exercises" / exercise / "hidden" / "wrong" / label / "expect.txt") \
        .read_text(encoding="utf-8").strip()
    failing = [c for c in score.checks if not c.passed]
    assert failing, f"{exercise}/{label} passed every hidden check"
    # its own verdict (a lesson), not the grader's timeout or a crash
    assert {c.status for c in failing} == {"failed"}, _table(score)
    assert any(expect in c.message for c in failing), \
        f"no failing check of {exercise}/{label} says {expect!r}:\n{_table(score)}"


@pytest.mark.parametrize("exercise", EXERCISES)
def test_exercise_layout(exercise):
    """The format every exercise keeps (docs/exercises.md): what `start`, `check` and
    `grade` read is there, the gaps are marked, every wrong solution has its lesson."""
    base = REPO_ROOT / "exercises" / exercise
    meta = json.loads((base / "exercise.json").read_text(encoding="utf-8"))
    assert {"title", "teaches", "files", "order"} <= set(meta) and meta["files"] == ["solution.py"]
    assert "# TODO(student):" in (base / "starter" / "solution.py").read_text(encoding="utf-8")
    assert "taskrace exercise check ." in (base / "README.md").read_text(encoding="utf-8")
    for path in (base / "visible.py", base / "hidden" / "checks.py", base / "hidden" / "reference" / "solution.py"):
        assert path.is_file(), path
    wrong = _wrong(exercise)
    assert wrong
    for label in wrong:
        assert (base / "hidden" / "wrong" / label / "expect.txt").read_text(encoding="utf-8").strip()
