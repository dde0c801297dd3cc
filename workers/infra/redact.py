"""Credentials out of everything taskrace records or prints.

The harness records command lines (the processes seen during a run, including its own:
``taskrace run ... --redis-url redis://:PASSWORD@host/0``) and writes results, reports and
one-line errors. Whatever it writes goes through here first:

    redact_argv(argv)     a command line, token by token: any URL's userinfo
                          (``redis://user:***@host``, via ``redact_url``), ``?password=``,
                          the value after ``--password``/``-a``/``requirepass`` style
                          arguments, and ``NAME=value`` where NAME says pass/secret/token
    redact_cmdline(argv)  the same joined into one line, *then* cut to a length (cutting
                          first could leave half a password behind)
    redact_text(text)     free text (an error line, a log tail, a recorded string)
    scrub(obj)            every string in a JSON-able document, recursively

Over-redaction is the accepted failure mode: a recorded command line with ``***`` where a
harmless word was is better than a password in a results file.
"""
from __future__ import annotations

import functools
import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit


# Here, not in workers.infra.redis_server: redacting must not import redis-py (the local tiers'
# runs never use it, and importing it is most of the harness's fixed cost per run).
def redact_url(url: str) -> str:
    """Hide passwords in a redis URL: ``user:pw@`` -> ``user:***@``, ``?password=`` too."""
    try:
        p = urlsplit(url)
        netloc = p.netloc
        if p.password is not None:
            userinfo, _, hostport = netloc.rpartition("@")
            netloc = f"{userinfo.partition(':')[0]}:***@{hostport}"
        query = p.query
        if "password" in query:  # redis-py also accepts ?password=...
            query = urlencode([(k, "***" if k == "password" else v)
                               for k, v in parse_qsl(query, keep_blank_values=True)], safe="*")
        return urlunsplit((p.scheme, netloc, p.path, query, p.fragment))
    except ValueError:  # unparseable: blank anything between "://" and "@"
        return re.sub(r"://[^@/]*@", "://***@", url)


MASK = "***"

# Options whose *next* argument is a secret: --password, --redis-password, --requirepass,
# --masterauth, --auth, --token, --secret (and single-dash spellings); redis-cli's -a;
# redis-server's and CONFIG SET's bare directives.
_SECRET_WORD = r"(?:password|passwd|passphrase|pass|pwd|secret|token|requirepass|masterauth|auth)"
_SECRET_FLAG = re.compile(rf"^--?[\w.-]*{_SECRET_WORD}$", re.IGNORECASE)
_SECRET_BARE = {"-a"}  # case matters: celery's -A names the app
_SECRET_DIRECTIVES = {"requirepass", "masterauth", "auth"}  # any case: redis-cli AUTH pw
# NAME=value (a query string, an environment assignment, --password=value).
_SECRET_ASSIGN = re.compile(rf"(?P<name>[\w.-]*{_SECRET_WORD})=(?P<value>[^\s&;]*)", re.IGNORECASE)
# scheme://userinfo@ : everything between "://" and the last "@" before whitespace, so a
# password with an unencoded "/" or "@" is hidden too.
_URL_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>\S*)@")
_ONE_TOKEN = re.compile(r"\S+")
# In free text, "<secret flag> value".
_FLAG_VALUE = re.compile(rf"(?P<flag>(?<!\S)(?:--?[\w.-]*{_SECRET_WORD}|requirepass|masterauth))"
                         rf"(?P<sep>\s+)(?P<value>\S+)", re.IGNORECASE)


def _userinfo(match: re.Match) -> str:
    info = match["userinfo"]
    user, colon, _ = info.partition(":")
    if colon and "/" not in user and user != MASK:
        shown = f"{user}:{MASK}"
    else:
        shown = MASK
    return f"{match['scheme']}{shown}@"


def _assign(match: re.Match) -> str:
    return f"{match['name']}={MASK}"


def _flat(text: str) -> str:
    """URLs and NAME=value pairs in one string."""
    if "://" in text:
        if "@" in text and _ONE_TOKEN.fullmatch(text):
            text = redact_url(text)  # the URL as a whole: keeps its user name, hides ?password=
        text = _URL_USERINFO.sub(_userinfo, text)
    return _SECRET_ASSIGN.sub(_assign, text)


def redact_argv(argv) -> list[str]:
    """A command line with every credential replaced by ``***``."""
    out: list[str] = []
    hide_next = False
    for token in argv:
        token = str(token)
        if hide_next:
            out.append(MASK)
            hide_next = False
            continue
        if token in _SECRET_BARE or token.lower() in _SECRET_DIRECTIVES or _SECRET_FLAG.match(token):
            hide_next = True
            out.append(token)
            continue
        out.append(_flat(token))
    return out


def redact_cmdline(argv, limit: int | None = 120) -> str:
    """``argv`` redacted, joined, then cut to ``limit`` characters."""
    line = " ".join(redact_argv(argv))
    return line if limit is None else line[:limit]


# Every secret the patterns below find has a secret word, a "=" or a "://" in it: text
# with none of them is returned as it is, at once (scrub runs on every event of a live
# view, a worker's name or a timestamp's key most of the time).
_MAYBE_SECRET = re.compile(rf"=|://|{_SECRET_WORD}", re.IGNORECASE)


def redact_text(text: str) -> str:
    """Free text with URL userinfo, NAME=value secrets and ``--password value`` hidden."""
    if not _MAYBE_SECRET.search(text):
        return text
    text = _FLAG_VALUE.sub(lambda m: f"{m['flag']}{m['sep']}{MASK}", text)
    return " ".join(_flat(part) if "://" in part or "=" in part else part
                    for part in text.split(" "))


@functools.lru_cache(maxsize=4096)
def _redact_short(text: str) -> str:
    # An event's keys, backends and worker names come back with every task: remembered.
    return redact_text(text)


def scrub(obj):
    """Every string in a JSON-able document (dicts, lists, tuples), redacted; keys too."""
    if isinstance(obj, str):
        return _redact_short(obj) if len(obj) <= 64 else redact_text(obj)
    if isinstance(obj, dict):
        return {scrub(k) if isinstance(k, str) else k: scrub(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [scrub(v) for v in obj]
    return obj
