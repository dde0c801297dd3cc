"""Every command the README and the docs show works as written.

README.md and every docs/*.md page are read at test time, so a command added, changed or
moved there is checked without editing this file. From their ```sh blocks:

* every ``taskrace ...`` line (also after ``&&`` and inside ``docker compose run ... lab``)
  parses and passes the checks the CLI makes before any work starts: ``run`` and
  ``compare`` through ``taskrace.cli.main`` with ``--dry-run``, ``faults`` through its
  planner, the other commands through the parser;
* the cheap ones run for real (REAL below), with lighter sizes where the pages' take
  minutes, in one directory, so that ``report`` and ``compare a.json b.json`` read files
  the ``compare`` line wrote, whichever page shows them;
* every ``docker compose ...`` line's files, profiles and environment give a valid
  configuration (``docker compose config``) with the services the line names; skipped
  without Compose, except in CI (CI=true), where that is a failure;
* every ``python3 -m pytest ...`` line (and such a command in a code span of the prose)
  collects tests, and its ``-m`` names only registered markers and leaves some out;
* the two commands of the README's "Two commands" are there, letter for letter.

And every relative link of those pages points to a file that exists, and its ``#anchor``
to a heading of that page; the README links every docs page.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from scenarios import SCENARIOS  # noqa: E402
from taskrace.cli import build_parser, main  # noqa: E402
from taskrace.options import UsageError  # noqa: E402
from workers import TIERS  # noqa: E402

README = REPO_ROOT / "README.md"
DOCS = sorted((REPO_ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS]  # what a reader is sent to; the commands of all of them are checked
INSTALL_AND_COMPARE = "pip install -e . && taskrace compare"
TEST_COMMAND = "pip install -e '.[test]' && python3 -m pytest -q"
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


@dataclass
class Command:
    text: str  # as the page writes it, continuations joined, comment dropped
    argv: list[str]
    prefix: dict = field(default_factory=dict)  # VAR=value before the command
    exports: dict = field(default_factory=dict)  # what the block's `export` lines set
    page: str = ""  # README.md, docs/lab.md, ...

    @property
    def env(self) -> dict:
        return {**self.exports, **self.prefix}

    def __str__(self) -> str:  # the test id: the page and what a reader finds there
        line = " ".join([*(f"{k}={v}" for k, v in self.prefix.items()), *self.argv])
        return f"{self.page}: {line}" if self.page else line


def sh_lines(text: str) -> list[tuple[str, list[str]]]:
    """(line, tokens) for every command of every ```sh block: `\\` continuations joined,
    comments dropped (shlex knows where a comment starts), blank lines skipped; a new
    block starts a new list of exports, so the blocks are kept apart by None markers."""
    out: list = []
    for block in re.findall(r"^```sh\n(.*?)^```", text, flags=re.S | re.M):
        out.append(None)
        pending = ""
        for raw in block.splitlines():
            line = pending + raw
            if line.rstrip().endswith("\\"):
                pending = line.rstrip()[:-1] + " "
                continue
            pending = ""
            tokens = shlex.split(line, comments=True)
            if tokens:
                out.append((re.sub(r"\s+#.*$", "", line).strip(), tokens))
    return out


def page_name(path: Path) -> str:
    return path.relative_to(REPO_ROOT).as_posix()


def readme_commands(text: str | None = None) -> list[Command]:
    """Each command of README.md and docs/*.md (or of ``text``), split at ``&&``, its
    VAR=value prefixes taken out into ``env``; an ``export VAR=$(...)`` line sets VAR (as
    the shell would) for the rest of its block."""
    if text is None:
        return [cmd for path in PAGES for cmd in page_commands(path.read_text(), page_name(path))]
    return page_commands(text, "")


def page_commands(text: str, page: str) -> list[Command]:
    commands: list[Command] = []
    exports: dict = {}
    for item in sh_lines(text):
        if item is None:
            exports = {}
            continue
        line, tokens = item
        if tokens[0] == "export":
            name = tokens[1].split("=", 1)[0]
            value = subprocess.run(["bash", "-c", f'{line} && printf %s "${name}"'], capture_output=True,
                                   text=True, timeout=30).stdout
            exports[name] = value
            continue
        parts, current = [], []
        for token in tokens + ["&&"]:
            if token == "&&":
                parts.append(current)
                current = []
            else:
                current.append(token)
        for argv in parts:
            prefix = {}
            while argv and ASSIGNMENT.match(argv[0]):
                key, _, value = argv.pop(0).partition("=")
                prefix[key] = value
            if argv:
                commands.append(Command(line, argv, prefix, dict(exports), page))
    return commands


def taskrace_commands() -> list[Command]:
    """``taskrace ...`` lines, and the taskrace command a ``docker compose ... run`` line
    runs in the lab container."""
    out = []
    for cmd in readme_commands():
        if cmd.argv[0] == "taskrace":
            out.append(cmd)
        elif is_compose(cmd) and "taskrace" in cmd.argv:
            out.append(Command(cmd.text, cmd.argv[cmd.argv.index("taskrace"):], page=cmd.page))  # the container's env
    return out


def is_compose(cmd: Command) -> bool:
    return cmd.argv[:2] == ["docker", "compose"] or cmd.argv[0] == "docker-compose"


def compose_commands() -> list[Command]:
    return [cmd for cmd in readme_commands() if is_compose(cmd)]


# --- the two commands ---------------------------------------------------------------

def test_the_two_commands_are_in_the_readme_as_written():
    lines = [item[0] for item in sh_lines(README.read_text()) if item]
    assert INSTALL_AND_COMPARE in lines
    assert TEST_COMMAND in lines
    # "CI runs exactly this, via .ci/run": the same install and the same pytest line.
    ci = (REPO_ROOT / ".ci" / "run").read_text().splitlines()
    assert "python3 -m pytest -q" in [line.strip() for line in ci]
    assert any("pip install" in line and "-e '.[test]'" in line for line in ci)


def test_the_readme_is_read_as_a_shell_would():
    # The reader itself, on a made-up block: a comment, a continuation, a prefix, &&.
    text = ("```sh\n# a comment\nA=1 B=2 taskrace run power-io \\\n  -n 2   # two\n"
            "pip install x && taskrace list\nexport G=$(echo 7)\ndocker compose up\n```\n"
            "```python\ntaskrace nope\n```\n```sh\ndocker compose down\n```\n")
    got = [(c.prefix, c.argv, c.env) for c in readme_commands(text)]
    assert got == [({"A": "1", "B": "2"}, ["taskrace", "run", "power-io", "-n", "2"], {"A": "1", "B": "2"}),
                   ({}, ["pip", "install", "x"], {}), ({}, ["taskrace", "list"], {}),
                   ({}, ["docker", "compose", "up"], {"G": "7"}),  # an export holds for its block
                   ({}, ["docker", "compose", "down"], {})]  # and no further


def test_the_readme_shows_taskrace_and_compose_commands():
    # Guards the extraction: an empty list would make every test below pass vacuously.
    names = {c.argv[1] for c in taskrace_commands() if len(c.argv) > 1}
    assert {"run", "compare", "list", "report", "faults", "network", "bench", "worker"} <= names
    assert compose_commands()
    assert {c.page for c in compose_commands()} >= {"README.md", "docs/lab.md"}
    assert DOCS, "no docs/*.md page: the reader is looking in the wrong place"


# --- every taskrace line parses and passes the pre-run checks -----------------------

@pytest.fixture
def restore_sigterm():
    # main() turns SIGTERM into KeyboardInterrupt for the CLI's clean-up: not for pytest.
    before = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, before)


@pytest.mark.parametrize("cmd", taskrace_commands(), ids=str)
def test_every_taskrace_command_parses_and_validates(cmd, tmp_path, monkeypatch, capsys, restore_sigterm):
    monkeypatch.chdir(tmp_path)  # relative output paths are checked for writability here
    for key, value in cmd.env.items():
        monkeypatch.setenv(key, value)
    argv = cmd.argv[1:]
    if argv and argv[0] in ("run", "compare"):
        code = main(argv + ["--dry-run"])
        out, err = capsys.readouterr()
        assert code == 0, err
        assert "would" in out, out
        assert "Traceback" not in err
        return
    try:
        args = build_parser().parse_args(argv)
    except UsageError as exc:
        pytest.fail(f"{cmd}: {exc}")
    if args.command == "faults":
        from taskrace.faultlab.cli import plan_matrix

        assert plan_matrix(args), "the fault matrix is empty"


# --- the cheap ones run for real ----------------------------------------------------

# A command of README.md or docs/*.md -> options added to make it quick (the pages' sizes are the seed's,
# minutes in all). In this order, in one directory: report and the diff read the
# results.json that the compare line writes (the diff, two copies of it).
LIGHT_CPU = ["--set", "tasks=2", "--set", "size=200", "--set", "exponent=100"]
REAL = {
    "taskrace list": [],
    "taskrace exercise list": [],
    "taskrace run power-cpu -b processes -n 2": LIGHT_CPU,
    "taskrace run bank -b threads -n 2 --strategy none --history ops.jsonl":
        ["--set", "trials=2", "--set", "steps=20", "--set", "delay=0.001"],
    "taskrace run power-io -b threads -n 4 --tasks 8 --dry-run": [],
    "taskrace compare --scenario power-io,power-cpu -b threads,processes -n 1,2,4 --json results.json":
        ["--set", "power-io.sleep=0.01", "--set", "power-cpu.tasks=2", "--set", "power-cpu.size=200",
         "--set", "power-cpu.exponent=100", "--repeat", "1", "--warmup", "0", "--no-progress"],
    "taskrace compare --scenario power-io --tasks 8 -b threads -n 2 --format markdown":
        ["--sleep", "0.01", "--repeat", "1", "--warmup", "0", "--no-progress"],
    "taskrace report results.json -o report/": [],
    "taskrace compare before.json after.json": [],
}
TIMEOUT = {"compare": 300, "report": 180}


def _outputs(argv: list[str]) -> list[str]:
    """Files and folders the command line says it writes."""
    return [argv[i + 1] for i, a in enumerate(argv[:-1]) if a in ("--json", "--history", "-o", "--report")]


@pytest.fixture(scope="module")
def real_runs(tmp_path_factory) -> dict:
    """Each REAL command the pages still show, run in REAL's order in one directory:
    {command: (argv, CompletedProcess, directory)}."""
    workdir = tmp_path_factory.mktemp("readme")
    shown = {" ".join(c.argv): c for c in readme_commands()}
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
               PYTHONUNBUFFERED="1")
    ran = {}
    for text, lighter in REAL.items():
        if text not in shown:
            continue
        if text == "taskrace compare before.json after.json" and (workdir / "results.json").exists():
            for name in ("before.json", "after.json"):
                shutil.copy(workdir / "results.json", workdir / name)
        argv = shown[text].argv[1:] + list(lighter)
        proc = subprocess.run([sys.executable, "-m", "taskrace", *argv], capture_output=True, text=True,
                              cwd=workdir, env=dict(env, **shown[text].env), timeout=TIMEOUT.get(argv[0], 120))
        ran[text] = (argv, proc, workdir)
    return ran


@pytest.mark.parametrize("text", list(REAL))
def test_the_cheap_commands_really_run(text, real_runs):
    assert text in real_runs, (f"neither README.md nor docs/*.md shows `{text}` any more: "
                               f"update REAL in {Path(__file__).name}")
    argv, proc, workdir = real_runs[text]
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr
    for path in _outputs(argv):
        assert (workdir / path).exists(), f"{path} was not written"
        if path.endswith(".json"):
            json.loads((workdir / path).read_text())
        if path.endswith(".jsonl"):
            lines = (workdir / path).read_text().splitlines()
            assert lines and all(json.loads(line) for line in lines)
    args = build_parser().parse_args(argv)
    if args.command == "list":
        for name in [*SCENARIOS, *TIERS]:
            assert name in proc.stdout, name
    elif args.command == "run" and not args.dry_run:
        assert f"taskrace run {args.scenario}" in proc.stdout
    elif args.command == "compare" and args.json:
        # The points are the ones the line asks for: its scenarios, backends and -n.
        runs = json.loads((workdir / args.json).read_text())["runs"]
        assert {r["scenario"] for r in runs} == set(args.scenario.split(","))
        assert {r["backend"] for r in runs} == {"sequential", *args.backend.split(",")}
        assert {r["workers"] for r in runs if r["backend"] != "sequential"} == set(args.workers)
    elif args.command == "compare" and args.format == "markdown":
        table = [line for line in proc.stdout.splitlines() if line.startswith("|")]
        assert len(table) == 2 + 2, proc.stdout  # header, rule, sequential and threads
        assert proc.stdout.strip() == "\n".join(table)  # stdout holds the table alone
    elif args.command == "compare" and args.files:
        runs = json.loads((workdir / args.files[0]).read_text())["runs"]
        assert f"{len(runs)} points in both files" in proc.stdout
    elif args.command == "report":
        assert (workdir / args.output / "index.html").exists()


def test_a_dry_run_starts_nothing_and_writes_nothing(tmp_path):
    """--dry-run stops before any work: no results file, no history, exit 0."""
    proc = subprocess.run([sys.executable, "-m", "taskrace", "run", "bank", "-b", "processes", "-n", "2",
                           "--strategy", "lock", "--json", "r.json", "--history", "h.jsonl", "--dry-run"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120,
                          env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)))
    assert proc.returncode == 0, proc.stderr
    assert "would run it once on processes -n 2" in proc.stdout
    assert "strategy=lock" in proc.stdout
    assert not list(tmp_path.iterdir())


# --- the "Options" section names options run and compare both have --------------------

def options_section() -> list[str]:
    """The code spans of the "Options" section (one page of README.md and docs/*.md has it)."""
    pages = [path.read_text() for path in PAGES if "\n## Options\n" in path.read_text()]
    assert len(pages) == 1, f"{len(pages)} pages have an \"## Options\" section"
    section = pages[0].split("\n## Options\n", 1)[1].split("\n## ", 1)[0]
    return [" ".join(span.split()) for span in re.findall(r"`([^`]+)`", section)]


def test_every_option_the_options_section_names_exists_on_run_and_compare(capsys):
    named = {flag for span in options_section() if span.startswith("-")
             for flag in re.findall(r"(?<![\w-])(--[a-z][a-z-]*|-[a-z])\b", span)}
    assert {"-b", "--backend", "-n", "--workers", "--set", "--dry-run", "--format", "--wide",
            "--columns", "--start-method", "--redis-url", "--strategy"} <= named
    for command in ("run", "compare"):
        with pytest.raises(SystemExit):
            build_parser().parse_args([command, "-h"])
        spelled = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*|-[a-z])\b", capsys.readouterr().out))
        assert named <= spelled, (command, sorted(named - spelled))


def test_the_options_sections_examples_pass_a_dry_run(tmp_path, monkeypatch, capsys, restore_sigterm):
    monkeypatch.chdir(tmp_path)
    examples = [span.split() for span in options_section()
                if span.split()[0] in ("run", "compare") and len(span.split()) > 1]
    assert len(examples) >= 3
    for argv in examples:
        assert main(argv + ["--dry-run"]) == 0, (argv, capsys.readouterr().err)


# --- docker compose lines -----------------------------------------------------------

def _compose() -> list[str] | None:
    for base in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(base[0]) and subprocess.run([*base, "version"], capture_output=True,
                                                    timeout=60).returncode == 0:
            return base
    return None


# Compose options before the subcommand that take a value; services a subcommand names.
GLOBAL_VALUE_OPTIONS = {"-f", "--file", "--profile", "-p", "--project-name", "--env-file"}
SERVICE_OPTIONS = {"--scale", "--exit-code-from"}


def split_compose(argv: list[str]) -> tuple[list[str], str, list[str]]:
    """(global options, subcommand, its arguments) of a compose command line."""
    rest = argv[2:] if argv[0] == "docker" else argv[1:]
    options = []
    while rest and rest[0].startswith("-"):
        option = rest.pop(0)
        options.append(option)
        if option in GLOBAL_VALUE_OPTIONS and "=" not in option:
            options.append(rest.pop(0))
    return options, rest[0], rest[1:]


def named_services(sub: str, args: list[str]) -> set[str]:
    """Services a line names: positional ones (for run, only the first: the rest is its
    command), --scale SERVICE=N, --exit-code-from SERVICE."""
    names, positional = set(), []
    items = iter(args)
    for a in items:
        if a in SERVICE_OPTIONS:
            names.add(next(items).split("=")[0])
        elif not a.startswith("-"):
            positional.append(a)
    if sub == "run":
        positional = positional[:1]
    if sub in ("up", "run", "stop", "start", "restart", "logs", "rm", "kill"):
        names |= set(positional)
    return names


@pytest.mark.parametrize("cmd", compose_commands(), ids=str)
def test_every_compose_command_matches_the_stack(cmd):
    base = _compose()
    if base is None:
        if os.environ.get("CI") == "true":
            pytest.fail("Docker Compose is needed in CI (compose/install-compose-v2.sh)")
        pytest.skip("no docker compose here")
    options, sub, args = split_compose(cmd.argv)
    env = dict(os.environ, **cmd.env)
    proc = subprocess.run([*base, *options, "config", "--services"], capture_output=True, text=True,
                          cwd=REPO_ROOT, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    services = set(proc.stdout.split())
    assert named_services(sub, args) <= services, (sorted(named_services(sub, args)), sorted(services))


def test_compose_lines_are_split_as_compose_reads_them():
    argv = shlex.split("docker compose -f a.yml -f b.yml --profile m run --rm lab taskrace compare -n 2")
    assert split_compose(argv) == (["-f", "a.yml", "-f", "b.yml", "--profile", "m"], "run",
                                   ["--rm", "lab", "taskrace", "compare", "-n", "2"])
    assert named_services("run", ["--rm", "lab", "taskrace", "compare"]) == {"lab"}
    assert named_services("up", ["--scale", "worker=2", "--exit-code-from", "lab"]) == {"worker", "lab"}
    assert named_services("up", ["-d", "flower"]) == {"flower"}
    assert named_services("down", ["-v"]) == set()


# --- scripts the pages run from the checkout ---------------------------------------

def test_every_script_the_readme_runs_exists():
    scripts = set()
    for cmd in readme_commands():
        argv = cmd.argv[1:] if cmd.argv[0] == "sudo" else cmd.argv
        if argv and "/" in argv[0] and not argv[0].startswith("/"):
            scripts.add(argv[0])
    assert scripts, "no script found: the reader is broken"
    for script in scripts:
        path = REPO_ROOT / script
        assert path.is_file() and os.access(path, os.X_OK), f"{script} is not an executable file"


# --- the pytest lines: they collect, and their markers exist ---------------------------

def registered_markers() -> set[str]:
    import tomllib

    ini = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    return {line.split(":", 1)[0].split("(", 1)[0].strip() for line in ini.get("markers", [])}


def prose(text: str) -> str:
    """A page without its fenced code blocks."""
    return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


def pytest_commands() -> list[Command]:
    """``python3 -m pytest ...`` in the pages' sh blocks, and in their prose's code spans
    (the README names its quick subset in a sentence); each argv once."""
    found = [cmd for cmd in readme_commands() if cmd.argv[:3] == ["python3", "-m", "pytest"]]
    for path in PAGES:
        for span in re.findall(r"`(python3 -m pytest[^`]*)`", prose(path.read_text())):
            found.append(Command(span, shlex.split(span), page=page_name(path)))
    unique = {}
    for cmd in found:
        unique.setdefault(tuple(cmd.argv), cmd)
    return list(unique.values())


def _collected(argv: list[str]) -> tuple[int, int]:
    """(selected, deselected) by ``python3 -m pytest ARGV --collect-only`` in the checkout.
    A module that fails to import is its own tests' business, not the selection's: it is
    counted out, and the rest still collected."""
    argv = [a for a in argv if a not in ("-q", "-qq", "-v", "-vv")]  # one -q: the summary line below
    # Not this run's own options or test lock (tests/conftest.py): the child only collects.
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTEST_ADDOPTS", "TASKRACE_TEST_LOCKS") and not k.startswith("PYTEST_XDIST")}
    proc = subprocess.run([sys.executable, "-m", "pytest", *argv, "--collect-only", "-q", "-p", "no:cacheprovider",
                           "--continue-on-collection-errors", "-n", "0"],
                          capture_output=True, text=True, cwd=REPO_ROOT, timeout=300, env=env)
    last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    m = re.match(r"(\d+)(?:/(\d+))? tests? collected(?: \((\d+) deselected\))?(, \d+ errors?)?", last)
    assert m and (proc.returncode == 0 or (proc.returncode == 1 and m.group(4))), \
        (argv, proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    selected, deselected = int(m.group(1)), int(m.group(3) or 0)
    return selected, deselected


def test_the_pages_show_the_test_command_and_a_quick_subset():
    argvs = [c.argv for c in pytest_commands()]
    assert ["python3", "-m", "pytest", "-q"] in argvs
    assert ["python3", "-m", "pytest", "-q", "-m", "not docker"] in argvs
    assert "docker" in registered_markers()


@pytest.mark.parametrize("cmd", pytest_commands(), ids=str)
def test_every_pytest_command_selects_tests(cmd):
    argv = cmd.argv[3:]
    selected, deselected = _collected(argv)
    assert selected > 0, f"{cmd} selects no test"
    if "-m" in argv:
        expression = argv[argv.index("-m") + 1]
        names = set(re.findall(r"[A-Za-z_]\w*", expression)) - {"and", "or", "not"}
        assert names <= registered_markers(), (sorted(names - registered_markers()), "not in pyproject.toml")
        assert deselected > 0, f"{cmd} leaves nothing out: is the marker on any test?"


def test_not_docker_leaves_out_exactly_the_docker_tests():
    quick, left_out = _collected(["-m", "not docker"])
    docker, rest = _collected(["-m", "docker"])
    assert docker == left_out and quick == rest, (quick, left_out, docker, rest)
    assert docker > 0


# --- links between the pages ------------------------------------------------------------

def slugs(text: str) -> set[str]:
    """The anchors GitHub gives a page's headings: lower case, punctuation dropped (code
    and link markup too), spaces to hyphens, -1, -2, ... on repeats; fenced code skipped."""
    seen: dict = {}
    out = set()
    for line in prose(text).splitlines():
        m = re.match(r"^#{1,6} +(.*?)\s*#*\s*$", line)
        if not m:
            continue
        title = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", m.group(1))
        slug = re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def relative_links(text: str) -> list[str]:
    """Targets of the markdown links (and images) of a page's prose, code spans left out,
    that point into the checkout: no scheme (http:, mailto:, ...)."""
    plain = re.sub(r"`[^`]*`", "", prose(text))
    targets = re.findall(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", plain)
    return [t for t in targets if not re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", t)]


def test_the_link_reader_finds_files_and_anchors():
    text = ("# A `b`: c, d?\n## A `b`: c, d?\n```sh\n# not a heading [x](nowhere.md)\n```\n"
            "[one](docs/x.md#y) ![two](img.png) `[code](no.md)` [web](https://x.org) [self](#a-b-c-d)\n")
    assert slugs(text) == {"a-b-c-d", "a-b-c-d-1"}
    assert relative_links(text) == ["docs/x.md#y", "img.png", "#a-b-c-d"]
    assert "3-more-workers---scale-workern" in slugs("### 3. More workers: `--scale worker=N`\n")


@pytest.mark.parametrize("path", PAGES, ids=page_name)
def test_every_relative_link_points_to_a_file_and_heading_that_exist(path):
    text = path.read_text()
    for target in relative_links(text):
        file, _, anchor = target.partition("#")
        dest = (path.parent / file).resolve() if file else path
        assert dest.exists(), f"{page_name(path)}: link to {target}: no such file"
        assert dest == REPO_ROOT or REPO_ROOT in dest.parents, f"{page_name(path)}: {target} leaves the checkout"
        if anchor and dest.suffix == ".md":
            assert anchor in slugs(dest.read_text()), \
                f"{page_name(path)}: link to {target}: no such heading (have {sorted(slugs(dest.read_text()))})"


def test_the_readme_links_every_docs_page():
    linked = {(README.parent / t.partition("#")[0]).resolve() for t in relative_links(README.read_text())}
    assert not [page_name(p) for p in DOCS if p.resolve() not in linked], "docs pages the README never links"
