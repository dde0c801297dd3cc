"""What counts as bad input, wherever it is found: the CLI prints any of these as one
line and exits 2; the library raises it again as ``taskrace.InputError`` with the same
message. One list, so the two never disagree."""
from __future__ import annotations

from scenarios.base import BadInput
from taskrace.eventlog import BadEventLog
from taskrace.options import UsageError
from taskrace.reporting.results import BadResults
from workers import MissingDependency, UnknownChoice
from workers.infra.redis_server import RedisUnavailable

BAD_INPUT = (UsageError, BadInput, UnknownChoice, MissingDependency, RedisUnavailable, BadResults, BadEventLog)


class InputError(ValueError):
    """A bad name or value given to the library: the message is the CLI's one line."""
