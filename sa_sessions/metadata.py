"""Request metadata for derived columns: where and on what a session is used.

Column hooks that take the request (``fn(data, environ)``) can store what a "your
sessions" page shows: "Firefox on Linux, last seen 3 minutes ago, from
203.0.113.0/24"::

    store = SessionStore(WebSession, engine, secret_keys=KEY, columns={
        "user_id": lambda data: data.get("user_id"),
        "device": lambda data, environ: metadata.device(environ),
        "network": lambda data, environ: metadata.client_network(environ),
    })

The last-seen time is the row's ``updated_at``; nothing is needed for it.

Privacy: an address identifies a person about as well as a name does.  These helpers
keep less than they could: :func:`client_network` stores the network (a /24 for IPv4,
a /48 for IPv6, by default), not the address; :func:`device` stores a short
description, not the user-agent string (:func:`user_agent` is there when you need it,
truncated).  Store what your users would expect to see, and say so in your privacy
notice.  Behind a reverse proxy ``REMOTE_ADDR`` is the proxy's address: let a
proxy-fix middleware you trust set it from ``X-Forwarded-For``; these helpers never
read forwarded headers themselves, since any client can send them.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Any

_BROWSERS = (
    ("Edge", re.compile(r"Edg(e|A|iOS)?/")),
    ("Opera", re.compile(r"OPR/|Opera")),
    ("Firefox", re.compile(r"Firefox/|FxiOS/")),
    ("Chrome", re.compile(r"Chrome/|CriOS/")),
    ("Safari", re.compile(r"Safari/")),
)
_SYSTEMS = (
    ("Android", re.compile(r"Android")),
    ("iOS", re.compile(r"iPhone|iPad|iPod")),
    ("Windows", re.compile(r"Windows")),
    ("macOS", re.compile(r"Mac OS X|Macintosh")),
    ("ChromeOS", re.compile(r"CrOS")),
    ("Linux", re.compile(r"Linux|X11")),
)


def client_network(
    environ: Mapping[str, Any], *, ipv4_prefix: int = 24, ipv6_prefix: int = 48
) -> str | None:
    """The network of the client's address (``REMOTE_ADDR``), e.g. ``"203.0.113.0/24"``;
    None when there is no valid address.  A prefix of 32 (128) keeps the address."""
    if not 0 <= ipv4_prefix <= 32 or not 0 <= ipv6_prefix <= 128:
        raise ValueError("ipv4_prefix must be 0..32 and ipv6_prefix 0..128")
    raw = environ.get("REMOTE_ADDR")
    if not isinstance(raw, str):
        return None
    try:
        address = ipaddress.ip_address(raw.strip())
    except ValueError:
        return None
    prefix = ipv4_prefix if address.version == 4 else ipv6_prefix
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


def user_agent(environ: Mapping[str, Any], *, limit: int = 256) -> str | None:
    """The ``User-Agent`` header, cut to ``limit`` characters (None when absent)."""
    raw = environ.get("HTTP_USER_AGENT")
    if not isinstance(raw, str) or not raw.strip():
        return None
    return raw.strip()[:limit]


def device(environ: Mapping[str, Any]) -> str | None:
    """A short description of the browser and system, e.g. ``"Firefox on Linux"``.

    A few well-known names, matched by simple rules: good enough for a person to
    recognise their own devices, not an exact inventory.
    """
    agent = user_agent(environ, limit=1024)
    if agent is None:
        return None
    browser = next((name for name, pattern in _BROWSERS if pattern.search(agent)), None)
    system = next((name for name, pattern in _SYSTEMS if pattern.search(agent)), None)
    if browser and system:
        return f"{browser} on {system}"
    return browser or system or "unknown device"
