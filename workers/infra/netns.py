"""Hosts with their own addresses on one machine: Linux network namespaces on a bridge.

Why: a worker that joins the lab from another machine reaches Redis over a routed link,
not loopback. Tests and labs without a second computer get that from network
namespaces::

    this machine (root namespace)                    netns taskrace-h1
    -----------------------------                    -----------------
    Redis TLS port (or a proxy) on 10.77.0.1  <---   eth0 10.77.0.2/24, lo up
          |                                          default route via 10.77.0.1
    bridge trlab0 10.77.0.1/24 --- veth trv2 ======= eth0
                               --- veth trv3 ======= eth0 of netns taskrace-h2 (10.77.0.3)

``taskrace host add NAME`` makes one (the bridge on first use), ``taskrace host rm NAME``
removes it (the bridge with the last host), ``taskrace host list`` shows them. A worker
then runs inside with ``ip netns exec taskrace-NAME taskrace worker --env-file ...``; it
shares this machine's files and hostname, not its network. Host N's address is
10.77.0.N, and its veth on the bridge is ``trvN`` (interface names stop at 15
characters, so they are numbered, not named). Everything is done with iproute2's ``ip``
as root; an ``ip`` failure is one line.

In Python: ``with Host("h1") as h: subprocess.run(h.argv(["taskrace", "worker", ...]))``.
"""
from __future__ import annotations

import fcntl
import ipaddress
import json
import os
import re
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path

BRIDGE = "trlab0"
NETWORK = ipaddress.ip_network("10.77.0.0/24")
GATEWAY = "10.77.0.1"  # this machine, on the bridge: where hosts reach Redis
PREFIX = "taskrace-"  # netns names
VETH = "trv"  # host-side veth names: trv<N> for 10.77.0.N
INSIDE = "eth0"  # the veth's name inside the namespace
LOCK = Path("/run" if os.path.isdir("/run") else tempfile.gettempdir(), "taskrace-hosts.lock")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,30}$")


class HostError(RuntimeError):
    """Not root, no ``ip``, a bad or taken name, an ``ip`` failure: one line."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        reason = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[0]
        raise HostError(f"ip {' '.join(args)}: {reason}")
    return proc


def _ip_json(*args: str) -> list:
    out = _ip("-j", *args).stdout.strip()
    return json.loads(out) if out else []


def require_tools() -> None:
    if not shutil.which("ip"):
        raise HostError("taskrace host needs iproute2's `ip` command: apt-get install iproute2")
    if os.geteuid() != 0:
        raise HostError("taskrace host needs root (network namespaces, a bridge): run it with sudo")


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise HostError(f"bad host name {name!r}: lower-case letters, digits, - and _, "
                        f"at most 31 characters, starting with a letter or digit")
    return name


def netns_name(name: str) -> str:
    return PREFIX + name


@contextmanager
def _locked():
    """One change at a time across processes (two adds must not take the same address)."""
    with open(LOCK, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _address_in(netns: str) -> str | None:
    """The 10.77.0.N address of eth0 in ``netns``, or None (not one of ours)."""
    try:
        links = _ip_json("-n", netns, "-4", "addr", "show", "dev", INSIDE)
    except (HostError, ValueError):
        return None
    for link in links:
        for a in link.get("addr_info", []):
            if ipaddress.ip_address(a.get("local", "0.0.0.0")) in NETWORK:
                return a["local"]
    return None


def list_hosts() -> list[dict]:
    """Every taskrace host: name, netns, address, veth (sorted by address)."""
    require_tools()
    hosts = []
    for ns in _ip_json("netns", "list"):
        netns = ns.get("name", "")
        if netns.startswith(PREFIX):
            address = _address_in(netns)
            n = address.rsplit(".", 1)[1] if address else "?"
            hosts.append({"name": netns[len(PREFIX):], "netns": netns, "address": address,
                          "veth": f"{VETH}{n}" if address else None})
    return sorted(hosts, key=lambda h: ipaddress.ip_address(h["address"] or "255.255.255.255"))


def _ensure_bridge() -> None:
    if _ip("link", "show", "dev", BRIDGE, check=False).returncode != 0:
        for route in _ip_json("-4", "route", "show", "to", "match", str(NETWORK.network_address)):
            dev = route.get("dev")
            if route.get("dst") != "default" and dev != BRIDGE:
                raise HostError(f"{NETWORK} is already routed via {dev}: the hosts' network "
                                f"would clash with it")
        _ip("link", "add", BRIDGE, "type", "bridge")
    have = {a.get("local") for link in _ip_json("-4", "addr", "show", "dev", BRIDGE)
            for a in link.get("addr_info", [])}
    if GATEWAY not in have:
        _ip("addr", "add", f"{GATEWAY}/{NETWORK.prefixlen}", "dev", BRIDGE)
    _ip("link", "set", BRIDGE, "up")


def _remove_bridge_if_unused() -> None:
    if not list_hosts():
        _ip("link", "del", BRIDGE, check=False)


def add_host(name: str) -> str:
    """Create host ``name`` (idempotent: an existing one is kept); returns its address."""
    require_tools()
    check_name(name)
    netns = netns_name(name)
    with _locked():
        hosts = list_hosts()
        for h in hosts:
            if h["netns"] == netns:
                if h["address"]:
                    return h["address"]
                raise HostError(f"name taken: network namespace {netns} exists but is not a taskrace "
                                f"host (no {INSIDE} on {NETWORK}); remove it with ip netns del {netns}")
        used = {h["address"] for h in hosts} | {GATEWAY}
        free = [str(a) for a in NETWORK.hosts() if str(a) not in used]
        if not free:
            raise HostError(f"no free address left in {NETWORK}")
        address = free[0]
        veth = f"{VETH}{address.rsplit('.', 1)[1]}"
        if _ip("link", "show", "dev", veth, check=False).returncode == 0:
            _ip("link", "del", veth, check=False)  # a leftover of a host removed by hand
        made_ns = False
        try:
            _ensure_bridge()
            _ip("netns", "add", netns)
            made_ns = True
            _ip("link", "add", veth, "type", "veth", "peer", "name", f"{veth}p")
            _ip("link", "set", f"{veth}p", "netns", netns)
            _ip("-n", netns, "link", "set", f"{veth}p", "name", INSIDE)
            _ip("link", "set", veth, "master", BRIDGE)
            _ip("link", "set", veth, "up")
            _ip("-n", netns, "addr", "add", f"{address}/{NETWORK.prefixlen}", "dev", INSIDE)
            _ip("-n", netns, "link", "set", INSIDE, "up")
            _ip("-n", netns, "link", "set", "lo", "up")
            _ip("-n", netns, "route", "add", "default", "via", GATEWAY)
        except BaseException:
            if made_ns:
                _ip("netns", "del", netns, check=False)
            _ip("link", "del", veth, check=False)
            _remove_bridge_if_unused()
            raise
        return address


def remove_host(name: str) -> bool:
    """Remove host ``name`` (its veth goes with its namespace) and, with the last host,
    the bridge. Returns False if there was no such host (nothing to do)."""
    require_tools()
    check_name(name)
    netns = netns_name(name)
    with _locked():
        host = next((h for h in list_hosts() if h["netns"] == netns), None)
        if host is not None:
            _ip("netns", "del", netns)
            if host["veth"]:
                _ip("link", "del", host["veth"], check=False)  # normally gone with the netns
        _remove_bridge_if_unused()
        return host is not None


class Host:
    """A host for as long as the ``with`` block runs: made on entry, removed on exit."""

    def __init__(self, name: str) -> None:
        self.name = check_name(name)
        self.netns = netns_name(name)
        self.address: str | None = None

    def __enter__(self) -> "Host":
        self.address = add_host(self.name)
        return self

    def __exit__(self, *exc) -> None:
        remove_host(self.name)

    def argv(self, command: list[str]) -> list[str]:
        """``command`` run inside this host's network namespace."""
        return ["ip", "netns", "exec", self.netns, *command]
