"""`taskrace grade` in the lab (compose/grading.yml), on the session's lab (fixture
``compose_lab``, conftest.py): a room of students' folders mounted read-only, graded in
the `lab` service's container as its non-root user, with no network; each check's own
Redis and Celery worker inside the container; a solution that never ends, in the check's
process and inside a Celery worker, stopped at its timeout; nothing of any check left
in the container when grading ends; the container gone after `run --rm`.
"""
from __future__ import annotations

import ast
import json
import os
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.docker  # needs a Docker engine (pyproject.toml: markers)

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

CHECKS = '''
import importlib, socket

from taskrace.grading import check, Fail


@check(points=2, timeout=3)
def adds(student):
    got = student.solution().add(2, 3)
    if got != 5:
        raise Fail(f"add(2, 3) returned {got!r}, not 5")


@check(points=1, timeout=10)
def offline(student):
    for host, port in (("redis", 6379), ("1.1.1.1", 53)):
        try:
            socket.create_connection((host, port), timeout=2).close()
        except OSError:
            continue
        raise Fail(f"reached {host}:{port}: a check must have no network")


@check(points=1, timeout=25, needs=("redis",))
def squares_on_celery(student):
    import taskrace

    square = importlib.import_module("solution").square
    r = taskrace.race(square, [1, 2, 3], backends=["celery"], workers=1, repeat=1, warmup=0, cpu_capacity=False,
                      progress=False, redis_url=student.redis_url)
    [rec] = [x for x in r.records if x["backend"] == "celery"]
    if rec.get("agrees_with_sequential") is not True:
        raise Fail("celery's answers differ from sequential's")
'''
SQUARE = "\n\ndef square(x):\n    return x * x\n"
STUDENTS = {
    "good": "def add(a, b):\n    return a + b\n" + SQUARE,
    "starter": "def add(a, b):\n    # TODO(student)\n    return 0\n" + SQUARE,
    # never ends: in the check's own process, and in a Celery worker (whose environment names a broker)
    "hang": "import os, time\n\ndef add(a, b):\n    while True:\n        time.sleep(1)\n\n\n"
            "def square(x):\n    while os.environ.get('TASKRACE_BROKER_URL'):\n        time.sleep(1)\n    return x * x\n",
}
REAL = sorted(p.parent.name for p in (REPO_ROOT / "exercises").glob("*/exercise.json"))
# After grading, in the same container: every process still there (tini, sh, this python).
LEFT = ("import os, psutil; me = os.getpid(); "
        "print('left:', sorted(p.info['name'] for p in psutil.process_iter(['name']) if p.pid != me))")


def test_grading_a_room_in_the_lab_container(compose_lab, tmp_path):
    lab = compose_lab
    students = tmp_path / "students"
    for name, source in STUDENTS.items():
        folder = students / "room" / name
        folder.mkdir(parents=True)
        (folder / "solution.py").write_text(source)
        (folder / ".taskrace-exercise").write_text(json.dumps({"exercise": "demo"}) + "\n")
    (students / "checks.py").write_text(CHECKS)
    for path in [students, *students.rglob("*")]:  # readable by the lab's user, whatever uid runs the test
        path.chmod(0o755 if path.is_dir() else 0o644)

    script = ("echo uid=$(id -u); taskrace exercise list; "  # the image's exercises, a student's copy checked
              "taskrace exercise start lost-update /tmp/lu > /dev/null && taskrace exercise check /tmp/lu; "
              "echo check=$?; taskrace grade /students/room --checks /students/checks.py "
              "--out results/scores --jobs 3; echo exit=$?; python -c \"$LEFT\"")
    proc = lab.compose("run", "--rm", "--no-deps", "-e", f"LEFT={LEFT}", "lab", "sh", "-c", script,
                       files=("compose/grading.yml",), env=dict(lab.env, STUDENTS_DIR=str(students)),
                       timeout=240, check=False)
    out = proc.stdout
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    assert "exit=1" in out, out[-3000:]  # graded; some students fail
    for name in REAL:  # the image holds every exercise; the starter fails its visible checks, in one table
        assert name in out, name
    assert "check=1" in out and "lu: lost-update, " in out, out[:3000]
    uid = int(out.split("uid=", 1)[1].split()[0])
    assert uid != 0
    assert "Traceback" not in out + proc.stderr
    # Nothing a check started is left in the container: no redis-server, celery, python but ours.
    left = ast.literal_eval(out.split("left: ", 1)[1].splitlines()[0])
    assert set(left) <= {"docker-init", "tini", "sh"}, left

    scores = lab.results / "scores"
    status = {name: {t["name"]: t["status"] for t in json.loads((scores / f"{name}.json").read_text())["tests"]}
              for name in STUDENTS}
    assert status == {
        "good": {"adds": "passed", "offline": "passed", "squares_on_celery": "passed"},
        "starter": {"adds": "failed", "offline": "passed", "squares_on_celery": "passed"},
        "hang": {"adds": "timeout", "offline": "passed", "squares_on_celery": "timeout"},
    }, status
    summary = json.loads((scores / "summary.json").read_text())["students"]
    assert [(s["student"], s["score"], s["full_score"]) for s in summary] == \
        [("good", 4, 4), ("hang", 1, 4), ("starter", 2, 4)]
    for name in STUDENTS:
        assert name in out
    print({t["name"]: t["seconds"] for t in json.loads((scores / "good.json").read_text())["tests"]})

    # `run --rm`: the grading container is gone.
    oneoff = [c for c in lab.containers("lab") if c.labels.get("com.docker.compose.oneoff") == "True"]
    assert oneoff == [], [c.name for c in oneoff]
    # and the score files are the lab user's, not root's
    assert os.stat(scores / "good.json").st_uid == uid
