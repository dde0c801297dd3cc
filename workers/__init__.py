"""The tier registry: name -> "module:Class", imported only when asked for.

Adding a tier is one module in this package plus one line here. Importing this package
never imports a backend, so a missing optional dependency only matters to its own tier.
"""
from __future__ import annotations

import importlib

TIERS: dict[str, str] = {
    "sequential": "workers.sequential:SequentialTier",
    "threads": "workers.threads:ThreadsTier",
    "asyncio": "workers.asyncio_tier:AsyncioTier",
    "processes": "workers.processes:ProcessesTier",
    "interpreters": "workers.interpreters_tier:InterpretersTier",
    "celery": "workers.celery_tier:CeleryTier",
}

# The pip package that brings each module a tier needs, for the install hint.
_INSTALL_HINTS = {"celery": "celery[redis]", "redis": "redis", "kombu": "celery[redis]"}


class UnknownChoice(ValueError):
    """A name that is not in a registry; the message lists the valid ones."""


class MissingDependency(RuntimeError):
    """A tier's optional dependency is not installed; the message says what to install."""


def load(registry: dict[str, str], kind: str, name: str):
    if name not in registry:
        raise UnknownChoice(f"unknown {kind} {name!r}; choose from: {', '.join(registry)}")
    module_name, _, attr = registry[name].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        top = (exc.name or "").split(".")[0]
        if top in _INSTALL_HINTS:
            raise MissingDependency(
                f"the {name} {kind} needs {top!r}: pip install '{_INSTALL_HINTS[top]}'") from exc
        raise
    return getattr(module, attr)


def get_tier(name: str):
    """The tier class registered as ``name``."""
    return load(TIERS, "backend", name)


def available_tiers() -> list[str]:
    """The registered tiers that load here, in registry order: what ``compare`` runs by
    default and the test matrix covers. A tier whose dependency (or Python version) is
    missing is left out; ``taskrace list`` says why, and asking for it by name is the
    one-line error."""
    out = []
    for name in TIERS:
        try:
            get_tier(name)
        except MissingDependency:
            continue
        out.append(name)
    return out
