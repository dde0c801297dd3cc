"""``taskrace host add|rm|list``: hosts with their own addresses on this machine, for
workers that join the lab as if from elsewhere (network namespaces on a bridge, made by
workers.infra.netns; root)."""
from __future__ import annotations

import sys

from taskrace.options import UsageError
from workers.infra.netns import GATEWAY, NETWORK, PREFIX, HostError, add_host, list_hosts, netns_name, remove_host


def add_host_parser(sub) -> None:
    """``taskrace host ...``, registered by taskrace.parser.build_parser."""
    host = sub.add_parser("host", help="hosts with their own addresses on this machine "
                          "(network namespaces on a bridge; root)")
    verbs = host.add_subparsers(dest="host_command", parser_class=type(host))
    add = verbs.add_parser("add", help=f"a host: netns {PREFIX}NAME, address on {NETWORK}")
    add.add_argument("name", metavar="NAME")
    rm = verbs.add_parser("rm", help="remove a host (and the bridge with the last one)")
    rm.add_argument("name", metavar="NAME")
    verbs.add_parser("list", help="the hosts and their addresses")


def cmd_host(args, console) -> int:
    try:
        if args.host_command == "add":
            print(add_host(args.name))  # stdout: the address alone, for scripts
            print(f"host {args.name}: Redis is at {GATEWAY} from there; run a worker with: ip netns "
                  f"exec {netns_name(args.name)} taskrace worker --env-file FILE --name {args.name}",
                  file=sys.stderr)
        elif args.host_command == "rm":
            removed = remove_host(args.name)
            print(f"removed {args.name}" if removed else f"no host {args.name}: nothing to remove")
        elif args.host_command == "list":
            hosts = list_hosts()
            if hosts:  # 32 + 15 + veth: within 80 columns for the longest name
                print(f"{'host':<32} {'address':<15} veth")
            for h in hosts:
                print(f"{h['name']:<32} {h['address'] or '?':<15} {h['veth'] or '?'}")
            if not hosts:
                print("no hosts (taskrace host add NAME)")
        else:
            raise UsageError("choose: taskrace host add NAME | rm NAME | list")
    except HostError as exc:
        raise UsageError(str(exc)) from None
    return 0
