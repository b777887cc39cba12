"""Which Host names `macsql serve` answers to (a guard against DNS rebinding): the names, the checks on
`--allowed-host` values, and the parsing of a Host header. Used by the start-up checks (server.py) and by
the app's Host check (app.py)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from macsql.errors import InputError

# Names a browser uses for the loopback interface. A page on another site can point its own DNS name at
# 127.0.0.1 (DNS rebinding) and then read the answers, so the server answers only requests whose Host header
# names it: these, the address it is bound to, and the names given with --allowed-host.
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
ANY_HOST = "*"


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface


def is_wildcard(host: str) -> bool:
    """0.0.0.0 or :: (every interface): its clients may use any of the machine's names and addresses."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        return False


def host_name(value: str) -> str:
    """The name in a Host header or an --allowed-host value, without its port: `Example.org:8000` ->
    `example.org`, `[::1]:8000` -> `::1`."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:].partition("]")[0]
    if value.count(":") == 1:
        return value.partition(":")[0]
    return value  # a bare name, or an IPv6 address without brackets (no port can follow it)


def allowed_hosts(bind: str, names: Iterable[str] = (), token: str | None = None) -> tuple[str, ...]:
    """The Host names requests may carry: the loopback names, the bound address and `names` (--allowed-host).
    A wildcard bind with no names allows any Host, which only a token makes safe (`*`, which also
    `--allowed-host '*'` asks for)."""
    given = []
    for name in names:
        if name.strip() == ANY_HOST:
            given.append(ANY_HOST)
            continue
        plain = host_name(name)
        if not plain or any(c in name.strip() for c in "/@ \t?#"):
            raise InputError(f"--allowed-host {name!r} is not a host name; pass a name or address, like "
                             "--allowed-host sql.example.org (no scheme, no path)")
        given.append(plain)
    if is_wildcard(bind) and not given:
        given = [ANY_HOST]
    if ANY_HOST in given:
        if token is None:
            raise InputError("answering any Host header needs a token (a page on any site could otherwise "
                             "read the answers): pass --token TOKEN or set $MACSQL_TOKEN, or name the hosts "
                             "with --allowed-host NAME")
        return (ANY_HOST,)
    own = [] if is_wildcard(bind) else [host_name(bind)]
    return tuple(dict.fromkeys([*LOOPBACK_HOSTS, *own, *given]))
