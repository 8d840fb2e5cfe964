"""Which node of a pool holds a key, and calling that node through its breaker.

A key always maps to the same node, in every process and thread, whether or not
that node is answering.  Keys of a failed node are misses (the row is read
instead) and writes to it fail; they are never re-hashed to a survivor.  A
survivor holding a second copy of a key is how a pool serves stale data: when
the failed node comes back, its keys return to it, and whichever copy a process
reads depends on its own view of which nodes are alive.

Each node scores a key with the 8-byte BLAKE2b digest of ``node name + NUL +
key``; the highest score (then the greater name) wins.  BLAKE2b is unsalted,
unlike Python's ``hash()``, so every host and Python version agrees; the mapping
is this library's own, so a pool must not be shared with clients that place keys
by another rule (use a distinct key prefix).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Sequence
from typing import Any
from typing import Generic
from typing import Protocol
from typing import TypeVar

from .backend import CacheUnavailable
from .breaker import CircuitBreaker

N = TypeVar("N")


class NodeRing(Generic[N]):
    """Maps keys to a fixed, non-empty list of named nodes (see the module docstring)."""

    __slots__ = ("_only", "_scored")

    def __init__(self, nodes: Sequence[tuple[str, N]]) -> None:
        if not nodes:
            raise ValueError("a node ring needs at least one node")
        names = [name for name, _ in nodes]
        if len(set(names)) != len(names):
            raise ValueError("node names must be unique")
        self._only: N | None = nodes[0][1] if len(nodes) == 1 else None
        self._scored: tuple[tuple[Any, str, N], ...] = tuple(
            (hashlib.blake2b(name.encode("utf-8") + b"\0", digest_size=8), name, node)
            for name, node in nodes
        )

    @property
    def nodes(self) -> list[N]:
        """Every node, in the order given."""
        return [node for _, _, node in self._scored]

    def node_for(self, key: str) -> N:
        """The node that owns ``key``."""
        if self._only is not None:
            return self._only
        data = key.encode("utf-8")
        best: tuple[bytes, str] | None = None
        owner: N | None = None
        for seeded, name, node in self._scored:
            scorer = seeded.copy()
            scorer.update(data)
            score = (scorer.digest(), name)  # equal-length digests compare as numbers
            if best is None or score > best:
                best, owner = score, node
        assert owner is not None
        return owner


class Server(Protocol):
    """A node of a :class:`ServerPool`: something to call, and its breaker."""

    breaker: CircuitBreaker

    @property
    def label(self) -> str:
        """How the node is named in messages (no secrets)."""
        ...


S = TypeVar("S", bound=Server)


class ServerPool(Generic[S]):
    """The part every cache pool shares: the ring, per-node breakers, grouped writes.

    ``answered(exc)`` tells an error the server answered with (a refused command: the
    server is alive) from a broken connection or a timeout, which counts against it.
    """

    name = "cache"

    def __init__(self, nodes: Sequence[tuple[str, S]]) -> None:
        self._ring: NodeRing[S] = NodeRing(nodes)

    def answered(self, exc: Exception) -> bool:
        return False

    def node_for(self, key: str) -> S:
        return self._ring.node_for(key)

    def nodes(self) -> list[S]:
        return self._ring.nodes

    def node_states(self) -> dict[str, str]:
        """Each server and its breaker's state (``closed``, ``open`` or ``half-open``)."""
        return {node.label: node.breaker.state for node in self._ring.nodes}

    def group(self, keys: Iterable[str]) -> dict[S, list[str]]:
        """``keys`` by the node that holds them (for one round trip per node)."""
        by_node: dict[S, list[str]] = {}
        for key in keys:
            by_node.setdefault(self._ring.node_for(key), []).append(key)
        return by_node

    def call(
        self,
        node: S,
        what: str,
        call: Callable[..., Any],
        *args: Any,
        force: bool = False,
        **kwargs: Any,
    ) -> Any:
        """``call(*args, **kwargs)`` on ``node``, through its breaker.

        ``force`` tries it even while the node is marked dead (end markers: the node
        may answer again already); a forced call that fails leaves the breaker's wait
        as it was.  Any failure is a :class:`CacheUnavailable`.
        """
        breaker = node.breaker
        forced = force and breaker.state != "closed"
        if not forced and not breaker.allow():
            raise CacheUnavailable(f"{self.name} {node.label} is marked dead")
        try:
            result = call(*args, **kwargs)
        except Exception as exc:
            if self.answered(exc):
                outcome = f"refused ({type(exc).__name__})"
            else:  # socket errors, timeouts, a connection closed mid-reply
                outcome = f"failed ({type(exc).__name__})"
                if not forced:
                    breaker.record_failure()
            raise CacheUnavailable(f"{self.name} {what} {outcome}") from exc
        breaker.record_success()
        return result
