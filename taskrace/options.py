"""Options that mean the same on every command are spelled the same on every command.

``run`` and ``compare`` share one builder for what they have in common: ``-b/--backend``,
``-n/--workers``, ``--set SCENARIO.OPTION=VALUE``, every scenario's own flags (``--tasks``,
``--strategy``, ...) and every tier's options (``--start-method``, ``--redis-url``, ...).
Scenario flags come from the scenarios' ``params`` and tier options from the tiers'
``cli_options``, read through the registries: a new scenario or tier brings its options
with it, and the CLI has no list of them to keep up to date.

One spelling, two readings: ``run`` takes one value where ``compare`` takes a comma list
(``-b threads`` / ``-b threads,processes``), and on ``compare`` a scenario flag given as a
comma list is a sweep (one row per value), as ``--chunksize`` always was.
"""
from __future__ import annotations

import argparse
import os

from scenarios import SCENARIOS, get_scenario
from workers import TIERS, MissingDependency, get_tier

SCALERS = ("none", "docker")


class UsageError(Exception):
    """Bad command line; printed as one line, exit 2."""


# Tiers whose module could not be imported (a missing optional dependency): their options
# are unknown, so an unrecognized option says why it may be missing.
UNAVAILABLE: dict[str, str] = {}


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse prints usage + message; we want one line
        if message.startswith("unrecognized arguments") and UNAVAILABLE:
            message += "".join(f" (the {name} backend is unavailable, with its options: {why})"
                               for name, why in UNAVAILABLE.items())
        raise UsageError(message)


class Into(argparse.Action):
    """``--flag VALUE`` stored as ``namespace.<bucket>[dest] = VALUE``. Options declared
    by the registries are gathered by name in a dict of their own, so they can never
    collide with a command's attributes, and what the user did not give is absent."""

    def __init__(self, option_strings, dest, bucket: str, **kwargs):
        super().__init__(option_strings, dest, default=argparse.SUPPRESS, **kwargs)
        self.bucket = bucket

    def __call__(self, parser, namespace, values, option_string=None):
        bucket = dict(getattr(namespace, self.bucket, None) or {})
        bucket[self.dest] = self.const if self.nargs == 0 else values
        setattr(namespace, self.bucket, bucket)


def check_writable(*paths: str | None) -> None:
    """Refuse an output path that cannot be written before any work starts."""
    for path in paths:
        if path == "-":  # not stdout: the table is printed there, and a file named "-" helps nobody
            raise UsageError("cannot write to '-': give a file name (on run and compare, --format json "
                             "prints the records on stdout)")
        if path:
            folder = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(folder):
                raise UsageError(f"cannot write {path}: folder {folder} does not exist")
            if not os.access(folder, os.W_OK):
                raise UsageError(f"cannot write {path}: folder {folder} is not writable")


def names_in(text: str, registry, kind: str) -> list[str]:
    """A comma list of names, each one of ``registry`` (or one line listing the choices)."""
    names = [v.strip() for v in text.split(",") if v.strip()]
    for name in names:
        if name not in registry:
            raise UsageError(f"unknown {kind} {name!r}; choose from: {', '.join(registry)}")
    return names


ENV_PREFIX = "env:"


def from_env(text: str) -> str:
    """``env:NAME``: the value of the environment variable NAME, so that a URL with a
    password (the lab's broker) reaches the command without being in its argv, where
    ``ps`` would show it. Any other text is taken as it is."""
    if not text.startswith(ENV_PREFIX):
        return text
    name = text[len(ENV_PREFIX):]
    value = os.environ.get(name) if name else None
    if not value:
        raise argparse.ArgumentTypeError(f"{text}: the environment variable {name or '(no name)'} is not set")
    return value


def add_events_option(p: argparse.ArgumentParser) -> None:
    """--events FILE: the run's event stream as JSON lines (taskrace.events), as it happens."""
    p.add_argument("--events", metavar="FILE", type=from_env,
                   help="write every event of the run here as it happens (JSON lines: points, tasks "
                        "queued/started/finished, ...; replay or study it later); redis://HOST:PORT/DB "
                        "relays them to a live view instead (taskrace live), env:NAME reads the URL from "
                        "the environment variable NAME (a password stays out of ps)")


def add_live_options(p: argparse.ArgumentParser) -> None:
    """--live [PORT] and --live-bind ADDR: what run, compare and faults take."""
    g = p.add_argument_group("live view")
    g.add_argument("--live", nargs="?", const=0, default=None, type=port_number, metavar="PORT",
                   help="watch the run in a browser: a read-only page on 127.0.0.1 (the URL is printed; "
                        "PORT default: any free one)")
    g.add_argument("--live-bind", default="127.0.0.1", metavar="ADDR",
                   help="the address the live view listens on (default 127.0.0.1: this machine only)")


def port_number(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0-65535 (0: any free one), got {port}")
    return port


def add_study_options(p: argparse.ArgumentParser, json_help: str, dry_run_help: str) -> None:
    """What a study command (network, knobs) takes besides its own options: --json FILE,
    --no-progress, --dry-run and --events FILE."""
    p.add_argument("--json", metavar="FILE", help=json_help)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--dry-run", action="store_true", help=dry_run_help)
    add_events_option(p)


def whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


# --- -b and -n: one value on run, a comma list on compare ------------------------------

def one_backend(text: str) -> str:
    if "," in text:
        raise UsageError(f"run takes one backend, got {text!r}: compare takes a comma list")
    return text


def one_count(text: str) -> int:
    if "," in text:
        raise UsageError(f"run takes one -n, got {text!r}: compare takes a comma list")
    try:
        return int(text)
    except ValueError:
        raise UsageError(f"-n takes a whole number, got {text!r}") from None


def count_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"-n takes whole numbers separated by commas, got {text!r}") from None
    if not values:
        raise UsageError("-n needs at least one number")
    for v in values:
        if v < 1:
            raise UsageError(f"-n must be at least 1, got {v}")
    return values


def add_shared(p: argparse.ArgumentParser, many: bool) -> None:
    """The options run and compare share; ``many``: compare's comma lists."""
    if many:
        p.add_argument("-b", "--backend", default=None, metavar="A,B,...",
                       help="backends, comma list (default: every backend)")
        p.add_argument("-n", "--workers", type=count_list, default=None, metavar="N,M,...",
                       help="worker counts, comma list (default: the CPU count)")
    else:
        p.add_argument("-b", "--backend", type=one_backend, default="sequential",
                       help="the backend (default sequential)")
        p.add_argument("-n", "--workers", type=one_count, default=None, metavar="N",
                       help="workers (default 1)")
    p.add_argument("--set", action="append", default=[], metavar="SCENARIO.OPTION=VALUE",
                   help="a scenario option, e.g. bank.trials=10 (repeatable); the same as --trials 10; "
                        "SCENARIO may be left out where only one scenario of the command has OPTION")
    p.add_argument("--dry-run", action="store_true",
                   help="check everything and print what would run, then stop (exit 0)")


# --- scenario options ---------------------------------------------------------------

def scenario_params() -> dict[str, list]:
    """Each scenario flag with the (scenario, Param) pairs that declare it."""
    owners: dict[str, list] = {}
    for name in SCENARIOS:
        try:
            cls = get_scenario(name)
        except MissingDependency:
            continue  # running it says why, in one line
        for param in cls.params:
            owners.setdefault(param.flag, []).append((name, param))
    return owners


def add_scenario_options(p: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """One flag per scenario option name, shared by the scenarios that declare it; ``skip``:
    flags the command defines itself (with the same meaning)."""
    group = p.add_argument_group("scenario options", "each one is an option of the scenarios "
                                 "named before its help, with their defaults")
    for flag, pairs in scenario_params().items():
        if flag in skip:
            continue
        first = pairs[0][1]
        helps: dict[str, list[str]] = {}  # help text -> "scenario (default)", grouped
        for scenario, param in pairs:
            helps.setdefault(param.help, []).append(f"{scenario} ({param.default})")
        text = "; ".join(f"{', '.join(who)}: {h}" for h, who in helps.items())
        group.add_argument(flag, dest=first.name, action=Into, bucket="scenario_flags",
                           metavar="{" + ",".join(first.choices) + "}" if first.choices else
                           {int: "N", float: "X"}.get(first.type, "VALUE"),
                           help=text.replace("%", "%%"))


def owners_of(option: str, scenarios: list[str]) -> list[str]:
    """Which of ``scenarios`` declare ``option`` (a Param name)."""
    return [s for s in scenarios if any(p.name == option for p in get_scenario(s).params)]


def _and(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def parse_sets(items: list[str], scenarios: list[str], run: str | None = None) -> dict[str, dict]:
    """--set SCENARIO.OPTION=VALUE (or OPTION=VALUE) -> {scenario: {option: value}}.
    ``run``: the one scenario of a run, which SCENARIO must name when given."""
    out: dict[str, dict] = {}
    for item in items:
        key, eq, value = item.partition("=")
        scenario, dot, option = key.rpartition(".")
        option = option.replace("-", "_")
        if not (eq and option):
            raise UsageError(f"--set takes SCENARIO.OPTION=VALUE, got {item!r}")
        if dot and scenario not in SCENARIOS:
            raise UsageError(f"unknown scenario {scenario!r} in --set; choose from: {', '.join(SCENARIOS)}")
        if run and dot and scenario != run:
            raise UsageError(f"--set {item} names {scenario}, but this run is {run}")
        if run and "," in value:
            raise UsageError(f"run takes one value, got --set {item}: compare takes a comma list")
        if not dot:
            scenario = run or _one_owner(option, scenarios, f"--set {item}", f"--set SCENARIO.{option}={value}")
        _put(out, scenario, option, value)
    return out


def _one_owner(option: str, scenarios: list[str], given: str, spelled: str) -> str:
    owners = owners_of(option, scenarios)
    if len(owners) == 1:
        return owners[0]
    if not owners:
        others = owners_of(option, list(SCENARIOS))
        where = f"an option of {_and(others)}, not of {_and(scenarios)}" if others else "no scenario's option"
        raise UsageError(f"{given}: {option.replace('_', '-')} is {where}")
    raise UsageError(f"{given}: {_and(owners)} all have {option.replace('_', '-')}; "
                     f"say which: {spelled.replace('SCENARIO', owners[0])}")


def _put(out: dict, scenario: str, option: str, value: str) -> None:
    before = out.setdefault(scenario, {}).get(option)
    if before is not None and before != value:
        raise UsageError(f"{scenario} {option.replace('_', '-')} is given twice ({before} and {value})")
    out[scenario][option] = value


def flag_items(args, scenarios: list[str], run: str | None = None) -> tuple[list[str], list[str]]:
    """Scenario flags as --set items (and, on compare, a comma list as a --sweep item).
    A flag belongs to the one scenario of a run; on compare, to the one selected scenario
    that declares it, or the flag is refused with the --set spelling that says which."""
    sets, sweeps = [], []
    for option, value in (getattr(args, "scenario_flags", None) or {}).items():
        flag = "--" + option.replace("_", "-")
        if run:
            owner = run
            if not owners_of(option, [run]):
                raise UsageError(f"{flag} is an option of {_and(owners_of(option, list(SCENARIOS)))}, "
                                 f"not of {run}")
            if "," in value:
                raise UsageError(f"run takes one {flag}, got {value!r}: compare takes a comma list")
        else:
            owner = _one_owner(option, scenarios, f"{flag} {value}", f"--set SCENARIO.{option}={value}")
        (sweeps if not run and "," in value else sets).append(f"{owner}.{option}={value}")
    return sets, sweeps


# --- tier options -------------------------------------------------------------------

def tier_declarations() -> dict[str, tuple[list[str], object]]:
    """Each tier option's flag -> (the tiers declaring it, the first declaration). A tier
    whose module cannot be imported is left out (and noted in UNAVAILABLE): the others
    keep working."""
    out: dict[str, tuple[list[str], object]] = {}
    for name in TIERS:
        try:
            cls = get_tier(name)
        except MissingDependency as exc:
            UNAVAILABLE[name] = str(exc)
            continue
        for option in cls.cli_options:
            tiers, _ = out.setdefault(option.flag, ([], option))
            tiers.append(name)
    return out


def add_tier_options(p: argparse.ArgumentParser) -> None:
    """One argument group per tier with options, built from its ``cli_options``."""
    groups: dict = {}  # title -> argument group
    for flag, (tiers, option) in tier_declarations().items():
        title = f"{_and(tiers)} backend{'s' if len(tiers) > 1 else ''}"
        if title not in groups:
            groups[title] = p.add_argument_group(title)
        group = groups[title]
        kwargs = {"nargs": 0, "const": True} if option.switch else {
            "type": option.type, "choices": option.choices, "metavar": option.metavar}
        text = option.help + (f" (default {option.default})" if option.default is not None else "")
        group.add_argument(flag, dest=option.name, action=Into, bucket="tier_settings",
                           help=text.replace("%", "%%"), **kwargs)
    lab = p.add_argument_group("compose lab")
    lab.add_argument("--scale-workers", choices=SCALERS, default=os.environ.get("TASKRACE_SCALER", "none"),
                     help="resize the external workers to -n before each run: docker = the compose "
                          "worker service, via the Docker SDK (default $TASKRACE_SCALER or none)")


def tier_options(args) -> dict:
    """The tier settings given on the command line; each tier takes the ones it knows."""
    options = dict(getattr(args, "tier_settings", None) or {})
    scaler = getattr(args, "scale_workers", "none")
    if scaler not in SCALERS:  # from $TASKRACE_SCALER: argparse checks only what is typed
        raise UsageError(f"--scale-workers / TASKRACE_SCALER: choose none or docker, got {scaler!r}")
    if scaler == "docker":
        from taskrace.lab.cluster import scale_workers
        options["scaler"] = scale_workers
    return options
