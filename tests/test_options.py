"""Options spelled the same on every command, and declared where they belong.

* a scenario option is the same as a flag, as ``--set OPTION=V`` and as
  ``--set SCENARIO.OPTION=V``, on run and on compare; compare refuses a flag that several
  chosen scenarios have, naming the --set spelling;
* -b and -n: one value on run, comma lists on compare;
* tier options come from the tiers' ``cli_options`` through the registry: a new tier with
  options is one module plus one registry line, and a tier whose dependency is missing
  leaves the others (and the CLI) working.
"""
from __future__ import annotations

import inspect
import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

try:
    from conftest import REPO_ROOT
except ImportError:  # tests/ imported as a package
    from tests.conftest import REPO_ROOT

from scenarios import SCENARIOS, get_scenario
from taskrace.cli import build_parser, main
from taskrace.options import tier_options
from workers import TIERS, available_tiers, get_tier


@pytest.fixture
def taskrace(capsys, monkeypatch, tmp_path):
    """``taskrace ARGS`` in this process: (exit code, stdout, stderr lines)."""
    before = signal.getsignal(signal.SIGTERM)  # main() installs its own handler
    monkeypatch.chdir(tmp_path)

    def call(*argv: str):
        code = main(list(argv))
        out, err = capsys.readouterr()
        return code, out, [line for line in err.splitlines() if line.strip()]

    yield call
    signal.signal(signal.SIGTERM, before)


def usage_error(result) -> str:
    code, _, err = result
    assert code == 2, result
    assert len(err) == 1 and err[0].startswith("taskrace: error:"), err
    return err[0]


def _params():
    return [(name, p) for name in SCENARIOS for p in get_scenario(name).params]


# --- scenario options ---------------------------------------------------------------

@pytest.mark.parametrize("scenario,param", _params(), ids=lambda v: getattr(v, "name", v))
def test_a_scenario_option_is_the_same_under_every_spelling(taskrace, scenario, param):
    # a value other than the default that run's default backend (sequential) takes
    # (--reduce chord needs celery: refused on sequential, as test_chord.py checks)
    def runs_on_sequential(v) -> bool:
        return get_scenario(scenario)({param.name: v}).supported_by(get_tier("sequential")) is None

    value = str(next(c for c in reversed(param.choices) if runs_on_sequential(c))
                if param.choices else param.default * 2 or 1)
    spellings = [[param.flag, value], ["--set", f"{param.name}={value}"],
                 ["--set", f"{scenario}.{param.name}={value}"],
                 ["--set", f"{scenario}.{param.name.replace('_', '-')}={value}"]]
    plans = set()
    for spelling in spellings:
        code, out, err = taskrace("run", scenario, *spelling, "--dry-run")
        assert code == 0, (spelling, err)
        plans.add(out)
    assert len(plans) == 1, plans
    shown = param.convert(value)
    assert f"{param.name.replace('_', '-')}={shown}" in plans.pop()


def test_compare_takes_a_flag_that_one_chosen_scenario_has(taskrace):
    for argv in (["--scenario", "power-io", "--tasks", "5"], ["--scenario", "power-io", "--set", "tasks=5"],
                 ["--scenario", "power-io", "--set", "power-io.tasks=5"]):
        code, out, err = taskrace("compare", *argv, "-b", "threads", "-n", "2", "--dry-run")
        assert code == 0, err
        assert out.count("tasks=5") == 2, out  # the sequential baseline and threads -n 2


def test_compare_applies_a_flag_only_one_scenario_has_to_that_one(taskrace):
    code, out, err = taskrace("compare", "--trials", "3", "-b", "threads", "-n", "2", "--dry-run")
    assert code == 0, err
    bank = [line for line in out.splitlines() if line.strip().startswith("bank")]
    others = [line for line in out.splitlines()[1:] if not line.strip().startswith("bank")]
    assert bank and all("trials=3" in line for line in bank)
    assert others and not any("trials" in line for line in others)


def test_compare_sweeps_a_flag_given_a_comma_list(taskrace):
    code, out, err = taskrace("compare", "--scenario", "power-io", "--tasks", "3,5", "-b", "threads",
                              "-n", "2", "--dry-run")
    assert code == 0, err
    assert out.count("tasks=3") == 2 and out.count("tasks=5") == 2, out


def test_compare_refuses_a_flag_several_chosen_scenarios_have_and_says_how(taskrace):
    line = usage_error(taskrace("compare", "--tasks", "8"))
    assert "--set power-io.tasks=8" in line and "power-cpu" in line and "globals" in line
    line = usage_error(taskrace("compare", "--set", "tasks=8"))
    assert "--set power-io.tasks=8" in line


def test_a_flag_of_another_scenario_is_refused_by_name(taskrace):
    line = usage_error(taskrace("run", "power-io", "--strategy", "lock"))
    assert "--strategy" in line and "bank" in line
    line = usage_error(taskrace("compare", "--scenario", "power-io", "--trials", "3"))
    assert "trials" in line and "bank" in line


@pytest.mark.parametrize("argv,words", [
    (["run", "power-io", "--set", "bank.trials=3"], ["bank", "power-io"]),
    (["run", "power-io", "--set", "nope.tasks=3"], ["nope", "power-io"]),
    (["run", "power-io", "--set", "tasks"], ["SCENARIO.OPTION=VALUE"]),
    (["run", "power-io", "--set", "bogus=1"], ["bogus"]),
    (["run", "power-io", "--tasks", "8", "--set", "tasks=9"], ["8", "9"]),
    (["compare", "--set", "bogus=1"], ["bogus"]),
])
def test_bad_set_is_one_line(taskrace, argv, words):
    line = usage_error(taskrace(*argv))
    for word in words:
        assert word in line, (word, line)


# --- -b and -n ------------------------------------------------------------------------

def test_backend_and_workers_are_spelled_alike_on_run_and_compare(taskrace):
    code, out, _ = taskrace("run", "power-io", "-b", "processes", "-n", "3", "--dry-run")
    assert code == 0 and "on processes -n 3" in out
    code, out, _ = taskrace("run", "power-io", "--backend", "processes", "--workers", "3", "--dry-run")
    assert code == 0 and "on processes -n 3" in out
    for b in ("-b", "--backend"):
        code, out, err = taskrace("compare", "--scenario", "power-io", b, "threads,processes",
                                  "--workers", "1,3", "--dry-run")
        assert code == 0, err
        # the plan's points are indented; the notes under them (compare --scaling) are not
        labels = {line.split("  ")[1].strip() for line in out.splitlines()[1:] if line.startswith("  ")}
        assert labels == {"power-io on sequential -n 1", "power-io on threads -n 1", "power-io on threads -n 3",
                          "power-io on processes -n 1", "power-io on processes -n 3"}


@pytest.mark.parametrize("argv", [["-b", "threads,processes"], ["-n", "1,2"], ["--strategy", "none,lock"],
                                  ["--set", "strategy=none,lock"]])
def test_run_refuses_a_list_and_points_to_compare(taskrace, argv):
    assert "compare takes a comma list" in usage_error(taskrace("run", "bank", *argv))


def test_a_dry_run_still_refuses_bad_input(taskrace):
    usage_error(taskrace("run", "power-io", "--tasks", "-1", "--dry-run"))
    usage_error(taskrace("compare", "--scenario", "mapreduce", "--chunksize", "0", "--dry-run"))
    usage_error(taskrace("run", "power-io", "--json", "no/such/dir/r.json", "--dry-run"))


# --- tier options ---------------------------------------------------------------------

def test_the_cli_offers_exactly_the_options_the_tiers_declare(capsys):
    declared = {o.flag for name in available_tiers() for o in get_tier(name).cli_options}
    assert {"--start-method", "--redis-url", "--pool", "--concurrency", "--prefetch", "--acks-late",
            "--chunk", "--external-workers"} <= declared
    for command in ("run", "compare"):
        with pytest.raises(SystemExit):
            build_parser().parse_args([command, "-h"])
        help_text = capsys.readouterr().out
        for flag in declared:
            assert flag in help_text, (command, flag)


@pytest.mark.parametrize("name", available_tiers())  # one that cannot load here declares nothing here
def test_each_declared_option_is_a_constructor_argument_with_that_default(name):
    cls = get_tier(name)
    signature = inspect.signature(cls.__init__).parameters
    for option in cls.cli_options:
        # Not absorbed by **options, where a typo would pass silently.
        assert option.name in signature, (name, option.name)
        default = signature[option.name].default
        if (name, option.name) in FROM_ENVIRONMENT:  # not given: the environment decides
            assert default is None, (name, option.name, default)
            continue
        assert default == (False if option.switch else option.default), (name, option.name, default)


# Switches whose "not given" (None) defers to an environment variable, and False means
# "never": --external-workers (the lab's services set TASKRACE_EXTERNAL_WORKERS=1; the
# network study, which starts its own workers behind its proxy, passes False).
FROM_ENVIRONMENT = {("celery", "external"): "TASKRACE_EXTERNAL_WORKERS"}


@pytest.mark.parametrize("tier, option", list(FROM_ENVIRONMENT))
def test_a_switch_not_given_follows_its_environment_variable_and_false_overrides_it(tier, option, monkeypatch):
    cls = get_tier(tier)
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")  # external workers need a broker named
    monkeypatch.setenv(FROM_ENVIRONMENT[(tier, option)], "1")
    assert getattr(cls(1), option) is True
    assert getattr(cls(1, **{option: False}), option) is False
    monkeypatch.delenv(FROM_ENVIRONMENT[(tier, option)])
    assert getattr(cls(1), option) is False and getattr(cls(1, **{option: True}), option) is True


def test_tier_options_reach_the_tier_as_given_and_nothing_else():
    args = build_parser().parse_args(
        ["run", "power-io", "-b", "celery", "--redis-url", "redis://h:1/0", "--pool", "threads",
         "--concurrency", "2", "--prefetch", "4", "--acks-late", "--chunk", "10", "--external-workers",
         "--start-method", "spawn"])
    assert tier_options(args) == {"redis_url": "redis://h:1/0", "pool": "threads", "concurrency": 2,
                                  "prefetch": 4, "acks_late": True, "chunk": 10, "external": True,
                                  "start_method": "spawn"}
    assert tier_options(build_parser().parse_args(["compare"])) == {}


def test_tier_option_choices_and_types_are_checked_by_the_parser(taskrace):
    assert "--pool" in usage_error(taskrace("run", "power-io", "-b", "celery", "--pool", "nope"))
    assert "--concurrency" in usage_error(taskrace("run", "power-io", "-b", "celery", "--concurrency", "x"))
    assert "--start-method" in usage_error(taskrace("compare", "--start-method", "nope"))


FAKE_TIER = textwrap.dedent('''
    from workers.base import TierOption
    from workers.threads import ThreadsTier

    class FakeTier(ThreadsTier):
        name = "fake"
        cli_options = (TierOption("flavour", "which flavour", choices=("plain", "salty"), default="plain"),)

        def __init__(self, workers=1, flavour="plain", **options):
            super().__init__(workers, **options)
            self.flavour = flavour

        def describe(self):
            return {**super().describe(), "flavour": self.flavour}
''')


def test_a_new_tier_with_options_is_one_module_and_one_registry_line(taskrace, tmp_path, monkeypatch):
    (tmp_path / "fake_tier.py").write_text(FAKE_TIER)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(TIERS, "fake", "fake_tier:FakeTier")  # the registry line
    code, out, err = taskrace("run", "power-io", "-b", "fake", "-n", "2", "--flavour", "salty", "--dry-run")
    assert code == 0, err
    assert "tier: flavour=salty" in out
    code, out, err = taskrace("run", "power-io", "-b", "fake", "-n", "2", "--sleep", "0", "--flavour", "salty",
                              "--json", "r.json")
    assert code == 0, err
    assert json.loads((tmp_path / "r.json").read_text())["runs"][0]["tier"]["flavour"] == "salty"
    assert "--flavour" in usage_error(taskrace("run", "power-io", "-b", "fake", "--flavour", "sweet"))


# A Python where celery and kombu are not installed (sys.modules[name] = None makes
# `import name` raise ModuleNotFoundError, as a missing package does).
WITHOUT_CELERY = ("import sys; sys.modules['kombu'] = None; sys.modules['celery'] = None; "
                  "from taskrace.cli import main; sys.exit(main(sys.argv[1:]))")


def without_celery(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", WITHOUT_CELERY, *argv], capture_output=True, text=True,
                          timeout=120, cwd=REPO_ROOT, env=dict(os.environ, COLUMNS="200"))


def test_a_tier_whose_dependency_is_missing_leaves_the_others_working():
    listed = without_celery("list")
    assert listed.returncode == 0, listed.stderr
    assert "unavailable" in listed.stdout and "celery[redis]" in listed.stdout
    ran = without_celery("run", "power-io", "-b", "processes", "-n", "2", "--sleep", "0",
                         "--start-method", "spawn")
    assert ran.returncode == 0, ran.stderr
    for argv, words in ((["run", "power-io", "-b", "celery"], ["celery[redis]"]),
                        (["run", "power-io", "--redis-url", "redis://h/0"], ["--redis-url", "celery backend"]),
                        (["faults"], ["faults", "celery[redis]"])):
        proc = without_celery(*argv)
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
        for word in words:
            assert word in lines[0], (word, lines[0])
