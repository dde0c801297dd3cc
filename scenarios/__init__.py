"""The scenario registry: name -> "module:Class", imported only when asked for.

Adding a scenario is one module in this package plus one line here.
"""
from __future__ import annotations

from workers import load

SCENARIOS: dict[str, str] = {
    "power-io": "scenarios.power:PowerIO",
    "power-cpu": "scenarios.power:PowerCPU",
    "globals": "scenarios.globals_visibility:GlobalsVisibility",
    "bank": "scenarios.bank:Bank",
    "pipeline": "scenarios.pipeline:Pipeline",
    "mapreduce": "scenarios.mapreduce:MapReduce",
}


def get_scenario(name: str):
    """The scenario class registered as ``name``."""
    return load(SCENARIOS, "scenario", name)
