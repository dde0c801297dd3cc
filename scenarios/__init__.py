"""The scenario registry: name -> "module:Class", imported only when asked for.

Adding a scenario is one module in this package plus one line here. A scenario made at run
time (``taskrace.race``: the caller's own function) is found by name only while it runs
(``provided``), and is never listed.
"""
from __future__ import annotations

from contextlib import contextmanager

from workers import load

SCENARIOS: dict[str, str] = {
    "power-io": "scenarios.power:PowerIO",
    "power-cpu": "scenarios.power:PowerCPU",
    "globals": "scenarios.globals_visibility:GlobalsVisibility",
    "bank": "scenarios.bank:Bank",
    "pipeline": "scenarios.pipeline:Pipeline",
    "mapreduce": "scenarios.mapreduce:MapReduce",
}


_PROVIDED: dict[str, type] = {}  # scenarios made at run time, by name, while they run


def get_scenario(name: str):
    """The scenario class registered as ``name`` (or provided under it for now)."""
    if name in _PROVIDED:
        return _PROVIDED[name]
    return load(SCENARIOS, "scenario", name)


@contextmanager
def provided(scenario_cls):
    """``scenario_cls`` found by ``get_scenario(scenario_cls.name)`` within the block: the
    measuring path (taskrace.measuring) takes scenarios by name."""
    name = scenario_cls.name
    before = _PROVIDED.get(name)
    _PROVIDED[name] = scenario_cls
    try:
        yield scenario_cls
    finally:
        if before is None:
            _PROVIDED.pop(name, None)
        else:
            _PROVIDED[name] = before
