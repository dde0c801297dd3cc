"""No password leaves the harness: results, history, report, terminal, recorded command lines.

The end-to-end test runs real ``celery worker`` processes against an embedded Redis that
the test starts with a password it knows, hands it over with ``--redis-url`` placed right
after the command (so the 120-character cut of recorded command lines cannot hide it), and
searches every byte the runs wrote or printed for the password and for any piece of it.
"""
from __future__ import annotations

import contextlib
import json
import secrets
import string
import subprocess
import sys
import time

import pytest

try:
    from celery_fixtures import require_redis_binary
    from celery_procs import MarkedRun
except ImportError:  # tests/ imported as a package
    from tests.celery_fixtures import require_redis_binary
    from tests.celery_procs import MarkedRun

from taskrace.measuring.measure import TreeSampler
from workers.infra.redact import redact_argv, redact_cmdline, redact_text, scrub
from workers.infra.redis_server import EmbeddedRedis

RUN_S = 180
NO_URL = ("REDIS_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "TASKRACE_EXTERNAL_WORKERS")
PIECE = 10  # no run of this many characters of the password may show anywhere


def _password(length: int) -> str:
    """Letters only: no piece of it can occur by chance in hex ids, digests or numbers."""
    return "Pw" + "".join(secrets.choice(string.ascii_letters) for _ in range(length - 2))


def _leaks(text: str, password: str) -> list[str]:
    return [password[i:i + PIECE] for i in range(len(password) - PIECE + 1) if password[i:i + PIECE] in text]


# --- the redaction rules ----------------------------------------------------------------------

PW = "Pw" + "kQzXvLmTrYbNcJhG"


@pytest.mark.parametrize("argv, shown", [
    (["python3", "-m", "taskrace", "run", "--redis-url", f"redis://:{PW}@127.0.0.1:6379/0", "power-io"],
     "python3 -m taskrace run --redis-url redis://:***@127.0.0.1:6379/0 power-io"),
    (["x", f"--redis-url=redis://user:{PW}@h:1/0"], "x --redis-url=redis://user:***@h:1/0"),
    (["x", f"rediss://{PW}@h/0"], "x rediss://***@h/0"),  # userinfo without a colon
    (["x", f"redis://u:{PW[:5]}/{PW[5:]}@h/0"], "x redis://u:***@h/0"),  # an unencoded "/"
    (["x", f"redis://h:1/0?password={PW}&db=1"], "x redis://h:1/0?password=***&db=1"),
    (["redis-server", "--requirepass", PW, "--port", "1"], "redis-server --requirepass *** --port 1"),
    (["redis-server", "conf", "requirepass", PW], "redis-server conf requirepass ***"),
    (["redis-cli", "-a", PW, "ping"], "redis-cli -a *** ping"),
    (["redis-cli", "AUTH", PW], "redis-cli AUTH ***"),
    (["tool", "--password", PW, "--db-password=" + PW, "REDIS_PASSWORD=" + PW],
     "tool --password *** --db-password=*** REDIS_PASSWORD=***"),
    # nothing to hide: left exactly as it was (celery's -A names the app, not a password)
    (["python3", "-m", "celery", "-A", "workers.celery_app", "worker", "-n", "w1@%h", "-Q", "q"],
     "python3 -m celery -A workers.celery_app worker -n w1@%h -Q q"),
])
def test_redact_argv(argv, shown):
    assert " ".join(redact_argv(argv)) == shown
    assert PW[:PIECE] not in shown


def test_redaction_happens_before_the_cut():
    argv = ["python3", "--redis-url", f"redis://:{PW}@h/0"]
    for limit in range(10, 50):
        line = redact_cmdline(argv, limit)
        assert len(line) <= limit and not _leaks(line, PW) and PW[:3] not in line


def test_free_text_and_whole_documents():
    text = f"Redis at redis://:{PW}@h:1/0 is down; retry with --password {PW} or token={PW}"
    assert _leaks(redact_text(text), PW) == []
    assert "redis://:***@h:1/0" in redact_text(text)
    doc = {"runs": [{"tier": {"broker": f"redis://u:{PW}@h/0"}, "n": 3, "x": [f"-p 1 requirepass {PW}"]}],
           f"key redis://:{PW}@h": None}
    out = scrub(doc)
    assert not _leaks(json.dumps(out), PW)
    assert out["runs"][0]["n"] == 3 and out["runs"][0]["tier"]["broker"] == "redis://u:***@h/0"
    assert scrub(out) == out  # idempotent: redacting twice changes nothing more


def test_sampler_records_command_lines_without_secrets():
    """A real child process with secrets on its command line, watched by the sampler."""
    code = "import time; time.sleep(30)"
    child = subprocess.Popen([sys.executable, "-c", code, "--password", PW, "-a", PW,
                              f"redis://:{PW}@h/0", "requirepass", PW])
    try:
        with TreeSampler() as sampler:
            time.sleep(0.1)
        seen = {p["pid"]: p["cmdline"] for p in sampler.metrics()["processes_seen"]}
    finally:
        child.kill()
        child.wait(10)
    assert child.pid in seen, seen  # the child was recorded ...
    line = seen[child.pid]
    assert "--password ***" in line and "-a ***" in line, line  # ... with its secrets hidden
    assert not _leaks(json.dumps(seen), PW), line


# --- end to end: real celery workers, a real Redis with a known password ------------------------

def test_no_output_of_a_celery_run_carries_the_redis_password(tmp_path):
    require_redis_binary()
    # The password as long as fits into the recorded 120 characters right after
    # "<python> -m taskrace run --redis-url redis://:", so the cut cannot hide it.
    prefix = f"{sys.executable} -m taskrace compare --redis-url redis://:"
    password = _password(max(16, min(40, 119 - len(prefix))))
    server = EmbeddedRedis()
    server.password = password
    url = None
    outputs: list[tuple[str, str]] = []  # (what, text) printed on the terminal
    try:
        server.start()
        url = server.url
        assert password in url

        def taskrace(*commands: tuple[str, ...]) -> None:
            """The commands side by side (each its own run id, queue and workers on this
            Redis; each records its own process tree), every one waited for."""
            with contextlib.ExitStack() as stack:
                runs = [stack.enter_context(MarkedRun(*args, drop_env=NO_URL)) for args in commands]
                codes = [run.communicate(RUN_S) for run in runs]
            for args, run, code in zip(commands, runs, codes):
                outputs.extend([(f"stdout of {args[0]}", run.out), (f"stderr of {args[0]}", run.err)])
                assert code == 0, run.err[-3000:]

        taskrace(("run", "--redis-url", url, "power-io", "-b", "celery", "-n", "2", "--tasks", "2",
                  "--sleep", "0.1", "--json", str(tmp_path / "run.json")),
                 ("run", "--redis-url", url, "bank", "-b", "celery", "-n", "2", "--strategy", "atomic",
                  "--trials", "1", "--steps", "5", "--delay", "0", "--history", str(tmp_path / "ops.jsonl"),
                  "--json", str(tmp_path / "bank.json")),
                 ("compare", "--redis-url", url, "--scenario", "power-io", "--backend", "celery", "-n", "1",
                  "--repeat", "1", "--warmup", "0", "--set", "power-io.sleep=0.1", "--no-progress",
                  "--json", str(tmp_path / "compare.json"), "--report", str(tmp_path / "compare-report")))
        taskrace(("report", str(tmp_path / "run.json"), "-o", str(tmp_path / "run-report")))
    finally:
        server.stop()

    # The runs really went through this Redis, and really recorded the command lines that
    # carried its URL (else finding no password would prove nothing).
    run = json.loads((tmp_path / "run.json").read_text())["runs"][0]
    assert run["tier"]["broker"] == server.redacted_url and run["verdict"]["ok"]
    own_lines = [p["cmdline"] for p in run["metrics"]["processes_seen"] + run["repeats"][0]["metrics"]["processes_seen"]
                 if "taskrace run --redis-url" in p["cmdline"]]
    assert len(own_lines) == 2 and all("redis://:***@127.0.0.1:" in line for line in own_lines), own_lines
    compare = json.loads((tmp_path / "compare.json").read_text())
    assert any("compare --redis-url redis://:***@" in p["cmdline"]
               for r in compare["runs"] for p in r["metrics"]["processes_seen"])
    assert (tmp_path / "ops.jsonl").read_text().strip(), "the bank wrote no history"

    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert {"run.json", "bank.json", "compare.json", "ops.jsonl", "index.html"} <= {p.name for p in files}
    for path in files:
        data = path.read_bytes().decode("latin-1")
        assert not _leaks(data, password), f"{path.relative_to(tmp_path)} holds the password"
    for what, text in outputs:
        assert not _leaks(text, password), f"the {what} shows the password"
