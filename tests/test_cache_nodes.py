"""Which node holds a key: rendezvous hashing (BLAKE2b) over a fixed list of nodes."""

from __future__ import annotations

import hashlib
from collections import Counter

import pytest

from sa_sessions.cache.nodes import NodeRing

NODES = ["10.0.0.1:11211", "10.0.0.2:11211", "10.0.0.3:11211"]


def session_key(n: int) -> str:
    return "sas:" + hashlib.sha256(f"session-{n}".encode()).hexdigest()


def ring_of(names: list[str]) -> NodeRing[str]:
    return NodeRing([(name, name) for name in names])


def documented_owner(names: list[str], key: str) -> str:
    """The rule of the module docstring, written independently of the class."""
    return max(
        (hashlib.blake2b(f"{name}\0{key}".encode(), digest_size=8).digest(), name) for name in names
    )[1]


# Pinned: a change here moves every deployed key to another node, so it must be
# deliberate (and announced as a cache re-warm).  Same values as the previous hasher.
FIXED_MAPPING = {
    0: "10.0.0.1:11211",
    1: "10.0.0.2:11211",
    4: "10.0.0.1:11211",
    5: "10.0.0.3:11211",
}


@pytest.mark.parametrize("order", [NODES, NODES[::-1], [NODES[1], NODES[2], NODES[0]]])
def test_fixed_keys_map_to_fixed_nodes_in_any_order(order: list[str]) -> None:
    ring = ring_of(order)
    for n, node in FIXED_MAPPING.items():
        assert ring.node_for(session_key(n)) == node


def test_mapping_follows_the_documented_formula() -> None:
    ring = ring_of(NODES)
    for n in range(300):
        key = session_key(n)
        assert ring.node_for(key) == documented_owner(NODES, key)


def test_non_ascii_keys_hash_as_utf8() -> None:
    ring = ring_of(NODES)
    for key in ["clé-é", "ключ", "键" * 40]:
        assert ring.node_for(key) == documented_owner(NODES, key)


def test_keys_spread_evenly_over_three_nodes() -> None:
    ring = ring_of(NODES)
    counts = Counter(ring.node_for(session_key(n)) for n in range(10_000))
    assert set(counts) == set(NODES)
    for node in NODES:
        assert 2_900 <= counts[node] <= 3_800, counts


def test_a_key_keeps_its_node_when_another_node_is_added_or_removed() -> None:
    """Rendezvous hashing: a pool change moves only the keys of the node that changed."""
    keys = [session_key(n) for n in range(3_000)]
    full = ring_of(NODES)
    smaller = ring_of([NODES[0], NODES[2]])
    moved = 0
    for key in keys:
        owner = full.node_for(key)
        if owner == NODES[1]:
            moved += 1
            assert smaller.node_for(key) in (NODES[0], NODES[2])
        else:
            assert smaller.node_for(key) == owner
    assert moved > 0


def test_the_node_objects_are_returned_not_the_names() -> None:
    servers = [object(), object()]
    ring: NodeRing[object] = NodeRing([("a:1", servers[0]), ("b:2", servers[1])])
    assert ring.nodes == servers
    owners = {id(ring.node_for(session_key(n))) for n in range(50)}
    assert owners == {id(server) for server in servers}
    by_name = ring_of(["a:1", "b:2"])
    for n in range(50):
        owner = ring.node_for(session_key(n))
        assert owner is servers[["a:1", "b:2"].index(by_name.node_for(session_key(n)))]


def test_the_mapping_depends_on_the_names_only() -> None:
    first: NodeRing[int] = NodeRing([(name, i) for i, name in enumerate(NODES)])
    second = ring_of(NODES)
    for n in range(100):
        key = session_key(n)
        assert NODES[first.node_for(key)] == second.node_for(key)


def test_a_single_node_is_returned_without_hashing() -> None:
    ring = ring_of([NODES[0]])
    assert ring.node_for(session_key(0)) == NODES[0]
    assert ring.node_for("\ud800") == NODES[0]  # not encodable: would fail if hashed
    with pytest.raises(UnicodeEncodeError):
        ring_of(NODES).node_for("\ud800")


def test_nodes_are_listed_in_the_order_given() -> None:
    assert ring_of(NODES[::-1]).nodes == NODES[::-1]


def test_an_empty_ring_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one node"):
        ring_of([])


def test_duplicate_names_are_refused() -> None:
    with pytest.raises(ValueError, match="unique"):
        ring_of([NODES[0], NODES[1], NODES[0]])
