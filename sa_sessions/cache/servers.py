"""Server lists as users write them: one string, a list, or a comma-separated line."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence

from sa_sessions.exceptions import SessionConfigError

_HOSTNAME = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?")


def split_list(value: object) -> list[object]:
    """A list from a list, a tuple, or a string separated by commas or whitespace.

    Configuration files hold one string (``url = 10.0.0.5:11211, 10.0.0.6:11211``).
    """
    if isinstance(value, str):
        return [part for part in re.split(r"[,\s]+", value) if part]
    if isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray)):
        return list(value)
    raise SessionConfigError("servers must be a string or a list of strings")


def check_server(spec: object) -> str:
    """Validate one ``"host:port"`` (or ``"[v6]:port"``) spec; a port is always required."""
    if not isinstance(spec, str):
        raise SessionConfigError(f"memcached server must be a 'host:port' string, got {spec!r}")
    host, sep, port_text = spec.rpartition(":")
    if not sep or not host or not port_text.isascii() or not port_text.isdigit():
        raise SessionConfigError(f"malformed memcached server {spec!r}: expected 'host:port'")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise SessionConfigError(f"malformed memcached server {spec!r}: port out of range")
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise SessionConfigError(f"malformed memcached server {spec!r}") from None
    elif not host.isascii() or _HOSTNAME.fullmatch(host) is None:
        raise SessionConfigError(f"malformed memcached server {spec!r}: bad host")
    return spec


def check_servers(servers: Sequence[object]) -> list[str]:
    """Validate a non-empty list of distinct ``"host:port"`` specs."""
    checked = [check_server(spec) for spec in servers]
    if not checked:
        raise SessionConfigError("at least one memcached server is required")
    if len(set(checked)) != len(checked):
        raise SessionConfigError("duplicate memcached server in the list")
    return checked
