"""Race the caller's own function (``taskrace.race``): one call per input on each tier,
measured and judged as ``compare`` measures its scenarios.

    taskrace.race(f, [1, 2, 3], backends=["threads", "processes"], workers=2)

Nothing here runs or measures anything itself. ``race_scenario`` makes a scenario at run
time around (fn, inputs): its tasks are the calls ``fn(x)``, its answer the list of their
values, and compare's ``= seq`` column says whether each tier's answer equals
sequential's (the oracle). The tiers (``workers/``) run it, the measuring path
(``taskrace.measuring``: sweep, runner, measure) times, samples and judges it, and the
result is compare's ``Results``. The scenario is found by name only while the race runs
(``scenarios.provided``): ``taskrace list`` never shows it.
(This module is not ``taskrace.race``: importing a submodule of that name would replace
the package's ``race`` function with the module.)

How the function reaches each tier, decided from the tier's flags and said in each
record (``record["race"]["transport"]``)::

    in-process   sequential, threads, asyncio (tiers that share the caller's memory): the
                 function object itself, nothing is sent
    import       processes, interpreters: plain pickle, by reference (module + name): the
                 function and the inputs are imported again where they run; when nothing
                 of them lives in ``__main__``
    fork         processes started by fork, a function (or inputs) of ``__main__``: plain
                 pickle by reference, found in the child's copy of the caller's ``__main__``
    cloudpickle  processes started by spawn or forkserver (Python 3.14's default on Linux),
                 interpreters: a function of ``__main__`` (a notebook's cell, ``python -c``),
                 a lambda or a closure, which a child cannot import ("Can't get attribute
                 'f' on <module '__main__'>"): pickled by value, code and globals, with
                 cloudpickle as joblib/loky do; the inputs go and the results come back the
                 same way (a class of ``__main__`` exists only in the caller)
    json         celery (tiers whose work travels through a broker): the function by its
                 import path, inputs and results as JSON, the only thing the broker
                 carries; the workers must import its module (never ``__main__``), and a
                 worker calls only functions of the modules its environment allows
                 (``TASKRACE_TASK_MODULES``; the workers the tier starts are told the
                 function's module and folder)

A coroutine function is awaited on asyncio (its calls overlap at each ``await``) and run
to its end by ``asyncio.run`` in the calling thread everywhere else. A plain function on
asyncio is refused in one line: on the loop each call would run inline and block it.
"""
from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import os
import pickle
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import Any, Callable, NamedTuple

from scenarios.base import BadInput, Execution, Scenario, Verdict, coroutine_twin, task_errors

TRANSPORTS = {
    "in-process": "the function object itself: the tier runs in the caller's process",
    "import": "plain pickle by reference: function and inputs imported again where they run",
    "fork": "plain pickle by reference, found in the forked child's copy of the caller's __main__",
    "cloudpickle": "cloudpickle, by value: function and inputs there, results back (nothing of "
                   "__main__ can be imported there)",
    "json": "the function's import path and the inputs as JSON: the workers import its module",
}
SHOWN = 60  # characters of a value in a one-line message


# --- the tasks: what a tier calls ------------------------------------------------------------
def call_fn(fn: Callable, arg: Any) -> Any:
    """One task: ``fn(arg)``; a coroutine function's call is run to its end here. The
    function travels as itself (in-process) or by reference (import, fork)."""
    return _complete(fn(arg))


@coroutine_twin(call_fn)
async def call_fn_async(fn: Callable, arg: Any) -> Any:
    """On an event loop: the call awaited, so other calls run at its awaits."""
    value = fn(arg)
    return await value if inspect.isawaitable(value) else value


class Returned(NamedTuple):
    """A value on its way back by cloudpickle (it may be an object of a ``__main__`` class,
    which plain pickle cannot find where the call ran)."""

    blob: bytes


def call_packed(fn_blob: bytes, arg_blob: bytes) -> Returned:
    """One task whose function and input came by cloudpickle (the ``cloudpickle``
    transport): loaded here (the function once per process), called, the value sent back
    the same way."""
    import cloudpickle

    value = _complete(_loaded(fn_blob)(pickle.loads(arg_blob)))
    return Returned(cloudpickle.dumps(value))


@lru_cache(maxsize=16)
def _loaded(blob: bytes) -> Callable:
    return pickle.loads(blob)  # cloudpickle's output is read by plain pickle (it imports cloudpickle)


def _complete(value: Any) -> Any:
    """A coroutine run to its end in this thread (any other value as it is)."""
    if not inspect.iscoroutine(value):
        return value
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(value)
    # This thread runs an event loop already (a Jupyter kernel's cell does), which refuses
    # asyncio.run: the call gets its own loop in a thread of its own.
    with ThreadPoolExecutor(1, thread_name_prefix="taskrace-race") as pool:
        return pool.submit(asyncio.run, value).result()


# --- how the function travels ----------------------------------------------------------------
def describe_fn(fn: Callable) -> str:
    """``module:qualname`` of a function, or its repr."""
    qualname = getattr(fn, "__qualname__", None)
    module = getattr(fn, "__module__", None)
    return f"{module}:{qualname}" if qualname and module else repr(fn)[:SHOWN]


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= SHOWN else text[:SHOWN - 3] + "..."


def plain_pickle(fn: Callable, inputs: list) -> str:
    """What plain pickle makes of (fn, inputs): "ok" (by reference, nothing of
    ``__main__``), "main" (something of ``__main__``: only a forked child finds it) or
    "fails" (a lambda, a closure, a local class: no reference to pickle)."""
    try:
        blob = pickle.dumps((fn, inputs), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:  # noqa: BLE001 - pickle raises PicklingError, AttributeError, TypeError...
        return "fails"
    return "main" if b"__main__" in blob else "ok"


def transport_for(tier, pickled: str) -> str:
    """How the function reaches ``tier`` (a tier instance: its start method matters), from
    the tier's flags and what plain pickle makes of the work (``plain_pickle``)."""
    if tier.needs_broker:
        return "json"
    if tier.shares_memory:
        return "in-process"
    if pickled == "ok":
        return "import"
    if pickled == "main" and getattr(tier, "start_method", None) == "fork":
        return "fork"
    return "cloudpickle"


# --- refusals: one line each, before anything starts -------------------------------------------
def refusal(fn: Callable, inputs: list, coroutine: bool, tier_cls) -> str | None:
    """Why ``tier_cls`` will not race ``fn`` over ``inputs`` (one line), or None."""
    name = getattr(fn, "__qualname__", None) or _short(fn)
    if tier_cls.runs_coroutines and not coroutine:
        return (f"{tier_cls.name} awaits coroutine functions, and {name} is a plain function: on the loop each "
                f"call would run inline and block it, one after another as on sequential. Race an async def "
                f"(e.g. one that awaits asyncio.to_thread({name}, x)), or leave {tier_cls.name} out")
    if tier_cls.needs_broker:
        return _broker_refusal(fn, inputs, coroutine, tier_cls.name)
    return None


def _broker_refusal(fn: Callable, inputs: list, coroutine: bool, tier: str) -> str | None:
    module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", None)
    name = qualname or _short(fn)
    where = ("put it in a module on the workers' path (a .py file beside the notebook, imported from "
             "there; in the lab, the notebooks' folder, which the workers mount) and race that")
    if not (module and qualname):
        return f"{tier} workers call a function by its import path, and {name} has none: {where}"
    if module == "__main__":
        return (f"{tier} workers call a function by its import path, and {name} is defined in __main__ (a "
                f"notebook, a script, python -c), which no worker can import: {where}")
    if "<lambda>" in qualname or "<locals>" in qualname:
        return (f"{tier} workers call a function by its import path, and {name} is a lambda or a function "
                f"defined inside another, which has none: define it at the top of a module; {where}")
    try:
        found = importlib.import_module(module)
        for part in qualname.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError):
        found = None
    if found is not fn:
        return f"{tier} workers call a function by its import path, and {module}:{qualname} is not {name}: {where}"
    if coroutine:
        return (f"{tier} workers call plain functions, and {name} is a coroutine function: race a plain function "
                f"that runs it (asyncio.run), or leave {tier} out")
    for i, x in enumerate(inputs):
        try:
            same = json.loads(json.dumps(x)) == x
        except (TypeError, ValueError):
            same = False
        if not same:
            return (f"{tier} sends inputs as JSON, and input {i} ({_short(x)}) does not come back from JSON "
                    f"unchanged (a tuple arrives as a list, a dict's keys as strings, other objects not at all): "
                    f"race JSON values (numbers, strings, booleans, None, lists, dicts with string keys)")
    return None


def module_folder(fn: Callable) -> str | None:
    """The folder ``fn``'s top-level package or module is imported from (what a worker
    needs on its path), or None (built in, or not found)."""
    top = (getattr(fn, "__module__", None) or "").split(".")[0]
    module = importlib.import_module(top) if top else None
    path = getattr(module, "__file__", None)
    if not path:
        return None
    path = os.path.dirname(os.path.abspath(path))
    return os.path.dirname(path) if hasattr(module, "__path__") else path  # a package: its parent


# --- the answer -------------------------------------------------------------------------------
def canonical(value: Any) -> Any:
    """A value as JSON sees it, the same wherever it was computed: what compare's ``= seq``
    compares (a digest of the answer). Tuples are lists and dict keys strings (as JSON
    brings them back from celery), sets sorted (their order varies between processes),
    arrays their lists; anything else its repr (an object without a value repr differs)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    if isinstance(value, dict):
        return {k if isinstance(k, str) else json.dumps(canonical(k), sort_keys=True): canonical(v)
                for k, v in value.items()}
    if isinstance(value, (set, frozenset)):
        return sorted((canonical(v) for v in value), key=lambda v: json.dumps(v, sort_keys=True))
    if isinstance(value, bytes):
        return value.hex()
    if callable(getattr(value, "tolist", None)):  # numpy arrays and scalars, array.array
        try:
            return canonical(value.tolist())
        except Exception:  # noqa: BLE001 - then its repr
            pass
    return repr(value)


# --- the scenario ----------------------------------------------------------------------------
class Race(Scenario):
    """The caller's function over its inputs, one task per input; made per race by
    ``race_scenario`` (the class carries the function and the inputs)."""

    name = "race"
    summary = "your own function, one call per input (taskrace.race)"
    fn: Callable = staticmethod(lambda x: x)
    inputs: tuple = ()
    coroutine = False
    chunksize = 1
    _pickled: str | None = None  # plain_pickle(fn, inputs), once per race
    _fn_blob: bytes | None = None  # cloudpickle of fn, once per race

    @classmethod
    def pickled(cls) -> str:
        if cls._pickled is None:
            cls._pickled = plain_pickle(cls.fn, list(cls.inputs))
        return cls._pickled

    @classmethod
    def fn_blob(cls) -> bytes:
        if cls._fn_blob is None:
            import cloudpickle

            cls._fn_blob = cloudpickle.dumps(cls.fn)
        return cls._fn_blob

    def task_count(self) -> int:
        return len(self.inputs)

    def supported_by(self, tier_cls) -> str | None:
        """Asked once per tier and race (the runner asks before every sample)."""
        refusals = type(self).__dict__.get("_refusals")
        if refusals is None:
            return self._refusal(tier_cls)
        if tier_cls.name not in refusals:
            refusals[tier_cls.name] = self._refusal(tier_cls)
        return refusals[tier_cls.name]

    def _refusal(self, tier_cls) -> str | None:
        reason = refusal(self.fn, list(self.inputs), self.coroutine, tier_cls)
        if reason or tier_cls.needs_broker or tier_cls.shares_memory or self.pickled() == "ok":
            return reason
        try:  # it will travel by cloudpickle (or fork, which needs no check): can it?
            self.fn_blob()
            import cloudpickle

            for x in self.inputs:
                cloudpickle.dumps(x)
        except ImportError:
            return (f"{describe_fn(self.fn)} cannot be imported by a {tier_cls.name} worker, and sending it "
                    f"by value needs cloudpickle: pip install cloudpickle")
        except Exception as exc:  # noqa: BLE001 - whatever cloudpickle refuses, in one line
            return f"cannot send {describe_fn(self.fn)} or its inputs to {tier_cls.name} (cloudpickle: {exc})"
        return None

    def execute(self, tier) -> Execution:
        transport = transport_for(tier, self.pickled())
        if transport == "json":  # the tier sends fn by its import path
            outcomes = tier.map(self.fn, [(x,) for x in self.inputs], self.chunksize)
        elif transport == "cloudpickle":
            import cloudpickle

            fn_blob = self.fn_blob()
            outcomes = tier.map(call_packed, [(fn_blob, cloudpickle.dumps(x)) for x in self.inputs], self.chunksize)
            for o in outcomes:
                if isinstance(o.value, Returned):
                    try:
                        o.value = pickle.loads(o.value.blob)
                    except Exception as exc:  # noqa: BLE001 - reported per task
                        o.value, o.error = None, f"its value could not be loaded here: {type(exc).__name__}: {exc}"
        else:
            outcomes = tier.map(call_fn, [(self.fn, x) for x in self.inputs], self.chunksize)
        record = {"function": describe_fn(self.fn), "coroutine": self.coroutine, "inputs": len(self.inputs),
                  "transport": transport, "how": TRANSPORTS[transport]}
        return Execution(outcomes, units=len(outcomes), data={"record": {"race": record}})

    def check(self, execution: Execution, tier) -> Verdict:
        outcomes = execution.outcomes
        errors = task_errors(outcomes)
        done = sum(o.error is None for o in outcomes)
        ok = not errors and len(outcomes) == len(self.inputs)
        return Verdict(ok, f"{len(self.inputs)} results", f"{done} results" + ("" if ok else " (errors)"),
                       answer=[canonical(o.value) for o in outcomes], details={"errors": errors})


def race_scenario(fn: Callable, inputs, name: str | None = None, chunksize: int = 1) -> type:
    """A Race class for (fn, inputs), named for the table (``f()`` by default). Raises
    BadInput (one line) for what cannot be raced anywhere."""
    from scenarios import SCENARIOS

    if not callable(fn):
        raise BadInput(f"race takes a function to call, got {_short(fn)}")
    if isinstance(inputs, (str, bytes)) or not hasattr(inputs, "__iter__"):
        raise BadInput(f"race takes the inputs as a list (one call each), got {_short(inputs)}")
    inputs = tuple(inputs)
    if not inputs:
        raise BadInput("race needs at least one input (one call each)")
    if isinstance(chunksize, bool) or not isinstance(chunksize, int) or chunksize < 1:
        raise BadInput(f"chunksize must be a whole number of at least 1, got {chunksize!r}")
    label = name if name is not None else f"{getattr(fn, '__qualname__', None) or type(fn).__name__}()"
    if not isinstance(label, str) or not label.strip() or label in SCENARIOS:
        raise BadInput(f"name must be a non-empty text other than a scenario's ({', '.join(SCENARIOS)}), "
                       f"got {label!r}")
    return type("Race", (Race,), {"name": label, "fn": staticmethod(fn), "inputs": inputs, "chunksize": chunksize,
                                  "coroutine": inspect.iscoroutinefunction(fn), "_refusals": {}})


def default_backends(coroutine: bool) -> list[str]:
    """The tiers a race runs unless told: every tier that loads here and needs no broker
    (sequential, threads, processes, interpreters on 3.14+), asyncio for a coroutine
    function."""
    from workers import available_tiers, get_tier

    out = []
    for name in available_tiers():
        cls = get_tier(name)
        if cls.needs_broker or (cls.runs_coroutines and not coroutine):
            continue
        out.append(name)
    return out


# Options of compare's parser that a race takes besides the tiers' own (--start-method, ...).
OWN_OPTIONS = ("live", "live_bind", "scale_workers")


def race_options() -> set[str]:
    """The keyword options race() passes to compare's parser: the tiers' (by name and by
    flag, from the registry) and the live view's."""
    from workers import TIERS, MissingDependency, get_tier

    names = set(OWN_OPTIONS)
    for tier in TIERS:
        try:
            cls = get_tier(tier)
        except MissingDependency:
            continue
        for opt in cls.cli_options:
            names |= {opt.name, opt.flag[2:].replace("-", "_")}
    return names


def check_options(options: dict) -> None:
    allowed = race_options()
    for name in options:
        if name not in allowed:
            raise BadInput(f"race() has no option {name!r}; besides its own it takes the tiers' options: "
                           f"{', '.join(sorted(allowed - set(OWN_OPTIONS)))}, and live, live_bind")


def plan_points(scenario_cls, args) -> list:
    """The race's points, every one checked before anything starts (compare's plan, over
    one scenario: sequential first, then each backend at each -n). Call inside
    ``scenarios.provided(scenario_cls)``."""
    from taskrace.measuring import sweep
    from taskrace.options import UsageError, names_in, tier_options
    from workers import TIERS, get_tier

    if args.repeat < 1 or args.warmup < 0:
        raise UsageError("repeat must be at least 1 and warmup at least 0")
    backends = (names_in(args.backend, TIERS, "backend") if args.backend
                else default_backends(scenario_cls.coroutine))
    probe = scenario_cls()
    for backend in backends:
        reason = probe.supported_by(get_tier(backend))  # get_tier: a missing dependency is one line too
        if reason:
            raise BadInput(reason)
    options = tier_options(args)
    if any(get_tier(b).needs_broker for b in backends):  # the workers it starts import fn's module
        options["task_modules"] = {scenario_cls.fn.__module__: module_folder(scenario_cls.fn)}
        args.tier_settings = dict(getattr(args, "tier_settings", None) or {}, task_modules=options["task_modules"])
    counts = args.workers or [(external_count(options) if "celery" in backends else None) or os.cpu_count() or 2]
    points = sweep.expand([scenario_cls.name], backends, counts, lambda _: [None], lambda _: {}, lambda _: [{}],
                          scaling="as-given")
    sweep.validate(points, options, args.seed)
    return points


def external_count(options: dict) -> int | None:
    """How many external Celery workers answer a ping, when the celery tier would use
    them (``external_workers``, or $TASKRACE_EXTERNAL_WORKERS as in the lab's notebook):
    the race's default -n there, rather than this machine's CPU count, which the tier would
    wait for in vain (two minutes) on a laptop with more cores than the lab has workers.
    None when the workers are the race's own. Nobody answering is one line."""
    from workers import get_tier
    from workers.infra.redis_server import check_redis, redact_url

    tier = get_tier("celery")(1, **options)  # its settings only: nothing starts
    if not tier.external or not tier.redis_url:
        return None
    check_redis(tier.redis_url)  # RedisUnavailable: one line, the password hidden
    from workers.celery_app import make_app

    app = make_app(tier.redis_url)
    try:
        nodes = {node for reply in app.control.ping(timeout=1.0) for node in reply}
    finally:
        app.close()
    if not nodes:
        raise BadInput(f"no external Celery worker answers on {redact_url(tier.redis_url)}: start them "
                       f"(the lab: docker compose up -d worker), or give workers=N to wait for N")
    return len(nodes)
