"""Issue 18: the three Celery exercises, proved through the grader (taskrace.grading.runner):
every starter fails its hidden checks, every reference passes them, and every wrong
solution fails with its lesson (hidden/wrong/<label>/expect.txt in the failing check's
message).

    idempotent-task   a transfer task delivered twice: crash points, two deliveries at once,
                      and the fault lab's pause-worker and kill-child on real workers
    beat-the-broker   tiny tasks batched on real Celery workers, a rate ratio measured
                      against one item per message on the same workers
    choose-the-model  a tier and a predicted speedup per workload, judged against what the
                      check measures (CPU-bound: nothing else may run meanwhile)

A wrong solution is graded on the checks where its lesson lives (a checks file that
imports those from the exercise's hidden checks): the grader runs them as written, and the
other checks are proved on the reference and the starter. The gradings that start Celery
workers run side by side; choose-the-model's measures run alone afterwards.
"""
from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from celery_fixtures import require_redis_binary  # noqa: E402
from taskrace.grading.runner import grade  # noqa: E402

# choose-the-model's hidden checks time power-cpu on processes, beat-the-broker's a rate
# ratio: both cores, nothing beside them (tests/conftest.py).
pytestmark = pytest.mark.alone

EXERCISES = REPO_ROOT / "exercises"
EXERCISE_NAMES = ("idempotent-task", "beat-the-broker", "choose-the-model")
# Per wrong solution: the checks its lesson lives in.
LESSON_CHECKS = {
    ("idempotent-task", "key-after-effect"): ["survives_a_crash_at_every_step"],
    ("idempotent-task", "check-then-act"): ["survives_a_crash_at_every_step", "two_deliveries_at_once"],
    ("beat-the-broker", "chunk-of-one"): ["batched_beats_one_per_message"],
    ("beat-the-broker", "one-giant-chunk"): ["every_worker_gets_a_share"],
    ("choose-the-model", "threads-for-cpu"): ["cpu_bound_power"],
}


def _wrong(exercise: str) -> list[str]:
    return sorted(p.name for p in (EXERCISES / exercise / "hidden" / "wrong").iterdir() if p.is_dir())


def _only(tmp: Path, exercise: str, names: list[str]) -> Path:
    """A checks file holding only ``names`` of the exercise's hidden checks."""
    hidden = EXERCISES / exercise / "hidden"
    path = tmp / f"{exercise}-{'-'.join(names)}.py"
    path.write_text(
        "import importlib.util\nimport sys\n\n"
        f"sys.path.insert(0, {str(hidden)!r})\n"
        f"_spec = importlib.util.spec_from_file_location('hidden_{exercise.replace('-', '_')}', "
        f"{str(hidden / 'checks.py')!r})\n"
        "_module = importlib.util.module_from_spec(_spec)\n"
        "sys.modules[_spec.name] = _module\n"
        "_spec.loader.exec_module(_module)\n"
        + "".join(f"{n} = _module.{n}\n" for n in names))
    return path


def _gradings(tmp: Path) -> dict[tuple[str, str], tuple[Path, Path]]:
    """{(exercise, who): (folder, checks file)}: reference and starter on the hidden checks,
    each wrong solution on the checks of its lesson."""
    plan = {}
    for exercise in EXERCISE_NAMES:
        base = EXERCISES / exercise
        plan[(exercise, "reference")] = (base / "hidden" / "reference", base / "hidden" / "checks.py")
        plan[(exercise, "starter")] = (base / "starter", base / "hidden" / "checks.py")
        for label in _wrong(exercise):  # one not in LESSON_CHECKS: every hidden check
            names = LESSON_CHECKS.get((exercise, label))
            plan[(exercise, label)] = (base / "hidden" / "wrong" / label,
                                       _only(tmp, exercise, names) if names else base / "hidden" / "checks.py")
    return plan


def _measures_cpu(key: tuple[str, str]) -> bool:
    """Gradings that time CPU-bound work: graded alone, one check at a time (the starter
    fails before it measures anything)."""
    return key[0] == "choose-the-model" and key[1] != "starter"


@pytest.fixture(scope="module")
def scores(tmp_path_factory):
    """Every grading of this module: {(exercise, who): Score}. Those that start Celery
    workers side by side (3 gradings at a time, 2 checks each), then those that time
    CPU-bound work, alone."""
    require_redis_binary()
    plan = _gradings(tmp_path_factory.mktemp("exercises"))
    alone = {key: args for key, args in plan.items() if _measures_cpu(key)}
    out = {}
    with ThreadPoolExecutor(3) as pool:
        futures = {key: pool.submit(grade, folder, checks=checks, jobs=2)
                   for key, (folder, checks) in plan.items() if key not in alone}
        out.update({key: f.result() for key, f in futures.items()})
    for key, (folder, checks) in alone.items():
        out[key] = grade(folder, checks=checks, jobs=1)
    return out


def _said(score) -> str:
    return "; ".join(f"{c.name}: {c.status} {c.message}" for c in score.checks)


@pytest.mark.parametrize("exercise", EXERCISE_NAMES)
def test_the_reference_passes_every_hidden_check(scores, exercise):
    score = scores[(exercise, "reference")]
    assert score.ok, _said(score)
    assert score.earned == score.possible > 0


@pytest.mark.parametrize("exercise", EXERCISE_NAMES)
def test_the_starter_fails_its_hidden_checks_with_lessons(scores, exercise):
    score = scores[(exercise, "starter")]
    assert not score.ok and score.earned < score.possible, _said(score)
    failed = [c for c in score.checks if not c.passed]
    # a failure the student can read: no crash, no traceback, one line
    assert all(c.status == "failed" and c.message and "Traceback" not in c.message for c in failed), _said(score)


@pytest.mark.parametrize("exercise,label", sorted(LESSON_CHECKS))
def test_a_wrong_solution_fails_with_its_lesson(scores, exercise, label):
    score = scores[(exercise, label)]
    lesson = (EXERCISES / exercise / "hidden" / "wrong" / label / "expect.txt").read_text().strip()
    assert lesson
    assert any(c.status == "failed" and lesson in c.message for c in score.checks), _said(score)


def test_every_wrong_solution_is_proved():
    assert sorted(LESSON_CHECKS) == sorted((e, w) for e in EXERCISE_NAMES for w in _wrong(e))


def test_the_fault_checks_ran_the_students_task_on_real_workers(scores):
    """The fault lab's hook (run_fault(apply_fn=, worker_env=)) ran the starter's transfer:
    pause-worker under at-least-once applied one twice, which the ledger's own
    effectively-once never does."""
    checks = {c.name: c for c in scores[("idempotent-task", "starter")].checks}
    pause = checks["fault_lab_pause_worker"]
    assert pause.status == "failed" and "applied twice" in pause.message and "2 real workers" in pause.message
    ref = {c.name: c for c in scores[("idempotent-task", "reference")].checks}
    assert ref["fault_lab_pause_worker"].passed and ref["fault_lab_kill_child"].passed


def test_no_worker_of_the_fault_checks_is_left(scores):
    """The fault checks' workers (paused and killed ones among them) were stopped, by the
    check or by the grader's sweep: none is left with the student's folder in its
    environment (idem_adapter.FOLDER_ENV, which only they carry)."""
    left = []
    for p in psutil.process_iter():
        try:
            if "TASKRACE_STUDENT_FOLDER" in p.environ():
                left.append((p.pid, " ".join(p.cmdline())[:80]))
        except psutil.Error:
            continue
    assert left == []
