"""The cache's fast paths keep their guarantees: node choice, key checks, skip detection."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from dogpile.cache.region import CacheRegion

from sa_sessions._cache_guard import GuardedCache
from sa_sessions.cache import RendezvousHasher
from sa_sessions.cache import cache_key
from sa_sessions.cache import cache_key_function
from sa_sessions.cache import memcached_region
from sa_sessions.cache import memory_region
from sa_sessions.exceptions import SessionConfigError

from .test_cache_memcached import raw_get

NODES = ["10.0.0.1:11211", "10.0.0.2:11211", "10.0.0.3:11211"]
HEX = "0123456789abcdef" * 4


def session_key(n: int) -> str:
    return cache_key(hashlib.sha256(f"session-{n}".encode()).hexdigest())


def hasher_with(nodes: list[str]) -> RendezvousHasher:
    hasher = RendezvousHasher()
    for node in nodes:
        hasher.add_node(node)
    return hasher


# --------------------------------------------------------------------------- hasher


# Precomputed: BLAKE2b(node NUL key, 8 bytes), highest wins.  A change here moves every
# deployed key to another node: it must be deliberate (and documented as a re-warm).
FIXED_MAPPING = {
    0: "10.0.0.1:11211",
    1: "10.0.0.2:11211",
    4: "10.0.0.1:11211",
    5: "10.0.0.3:11211",
}


@pytest.mark.parametrize("order", [NODES, NODES[::-1], [NODES[1], NODES[2], NODES[0]]])
def test_fixed_keys_map_to_fixed_nodes_in_any_order(order: list[str]) -> None:
    hasher = hasher_with(order)
    for n, node in FIXED_MAPPING.items():
        assert hasher.get_node(session_key(n)) == node


def test_mapping_follows_the_documented_formula() -> None:
    """Independent of the class: what another implementation must reproduce."""
    hasher = hasher_with(NODES)
    for n in range(200):
        key = session_key(n)
        expected = max(
            (hashlib.blake2b(f"{node}\0{key}".encode(), digest_size=8).digest(), node)
            for node in NODES
        )[1]
        assert hasher.get_node(key) == expected


def test_str_and_bytes_keys_map_alike() -> None:
    hasher = hasher_with(NODES)
    for n in range(50):
        key = session_key(n)
        assert hasher.get_node(key) == hasher.get_node(key.encode("ascii"))


def test_keys_spread_evenly_over_three_nodes() -> None:
    hasher = hasher_with(NODES)
    counts = Counter(hasher.get_node(session_key(n)) for n in range(10_000))
    assert set(counts) == set(NODES)
    for node in NODES:
        assert 2_500 <= counts[node] <= 4_200, counts


def test_removing_a_node_moves_only_its_keys_and_readding_restores_them() -> None:
    hasher = hasher_with(NODES)
    keys = [session_key(n) for n in range(3_000)]
    before = {key: hasher.get_node(key) for key in keys}
    hasher.remove_node(NODES[1])
    after = {key: hasher.get_node(key) for key in keys}
    for key in keys:
        if before[key] == NODES[1]:
            assert after[key] in (NODES[0], NODES[2])
        else:
            assert after[key] == before[key]
    assert any(before[key] == NODES[1] for key in keys)
    hasher.add_node(NODES[1])
    assert {key: hasher.get_node(key) for key in keys} == before


def test_single_node_is_returned_without_hashing() -> None:
    hasher = hasher_with([NODES[0]])
    assert hasher.get_node(session_key(0)) == NODES[0]
    unhashable: Any = object()  # would fail to encode if it were hashed
    assert hasher.get_node(unhashable) == NODES[0]


def test_pool_bookkeeping_matches_pymemcache() -> None:
    hasher = RendezvousHasher()
    assert hasher.get_node(session_key(0)) is None  # HashClient: "all servers down"
    hasher.add_node(NODES[0])
    hasher.add_node(NODES[0])  # already there: ignored
    assert hasher.nodes == [NODES[0]]
    with pytest.raises(ValueError, match="no such node"):
        hasher.remove_node(NODES[1])
    hasher.remove_node(NODES[0])
    assert hasher.nodes == []
    assert hasher.get_node(session_key(0)) is None


def test_memcached_region_clients_use_the_fast_hasher() -> None:
    region = memcached_region(["127.0.0.1:1", "127.0.0.1:2"])  # never connected
    client = region.backend.client
    assert isinstance(client.hasher, RendezvousHasher)
    assert sorted(client.hasher.nodes) == ["127.0.0.1:1", "127.0.0.1:2"]


@pytest.mark.memcached
def test_items_land_on_the_node_the_hasher_names(
    memcached_factory: Callable[[], Any], regions: list[CacheRegion]
) -> None:
    servers = [memcached_factory() for _ in range(3)]
    region = memcached_region([server.address for server in servers])
    regions.append(region)
    guard = GuardedCache(region, prefix="sas:", max_value_bytes=100_000)
    hasher = hasher_with([server.address for server in servers])
    owners: set[str] = set()
    for n in range(30):
        hashed = hashlib.sha256(f"landing-{n}".encode()).hexdigest()
        assert guard.set(hashed, 1, b"blob")
        key = guard.key(hashed)
        owner = hasher.get_node(key)
        assert owner is not None
        owners.add(owner)
        holders = [s.address for s in servers if raw_get(s.address, key) is not None]
        assert holders == [owner]
        assert guard.get(hashed) == (1, b"blob")
    assert len(owners) == 3


# --------------------------------------------------------------------------- keys


def test_guard_checks_the_prefix_once_at_construction() -> None:
    with pytest.raises(SessionConfigError, match="printable ASCII"):
        GuardedCache(memory_region(), prefix="a b:", max_value_bytes=1024)
    with pytest.raises(SessionConfigError, match="too long"):
        GuardedCache(memory_region(), prefix="p" * 187, max_value_bytes=1024)
    guard = GuardedCache(memory_region(), prefix="p" * 186, max_value_bytes=1024)
    assert guard.key(HEX) == cache_key(HEX, prefix="p" * 186)
    with pytest.raises(AttributeError):
        guard.prefix = "a b:"  # type: ignore[misc]


@pytest.mark.parametrize(
    "hashed_id",
    [HEX[:-1], HEX + "0", HEX.upper(), "g" * 64, HEX[:-1] + " ", HEX[:-1] + "\x01", "é" * 64],
)
def test_guard_key_still_refuses_anything_but_sha256_hex(hashed_id: str) -> None:
    guard = GuardedCache(memory_region(), prefix="sas:", max_value_bytes=1024)
    with pytest.raises(ValueError, match="sha256"):
        guard.key(hashed_id)
    with pytest.raises(ValueError, match="sha256"):
        cache_key_function()(hashed_id)
    not_a_str: Any = HEX.encode()
    with pytest.raises(ValueError, match="sha256"):
        guard.key(not_a_str)


def test_cache_key_function_matches_cache_key() -> None:
    assert cache_key_function()(HEX) == cache_key(HEX)
    assert cache_key_function("app1:sess:")(HEX) == cache_key(HEX, prefix="app1:sess:")
    with pytest.raises(SessionConfigError):
        cache_key_function("\x01:")


# --------------------------------------------------------------------------- skipped


def test_skipped_without_failed_nodes_does_not_hash(monkeypatch: pytest.MonkeyPatch) -> None:
    region = memcached_region(["127.0.0.1:1", "127.0.0.1:2"])  # never connected
    guard = GuardedCache(region, prefix="sas:", max_value_bytes=1024)

    def no_hashing(key: str) -> str:
        raise AssertionError("hashed although no node has failed")

    monkeypatch.setattr(region.backend.client.hasher, "get_node", no_hashing)
    assert not guard._skipped([HEX])


def test_skipped_with_a_failed_node_checks_the_key_owner() -> None:
    region = memcached_region(["127.0.0.1:1", "127.0.0.1:2"])  # never connected
    guard = GuardedCache(region, prefix="sas:", max_value_bytes=1024)
    client = region.backend.client
    owner = client.hasher.get_node(guard.key(HEX))
    other = next(node for node in client.hasher.nodes if node != owner)
    client._failed_clients[client.clients[other].server] = {"failed_time": 0.0, "attempts": 0}
    assert not guard._skipped([HEX])
    client._failed_clients[client.clients[owner].server] = {"failed_time": 0.0, "attempts": 0}
    assert guard._skipped([HEX])


def test_skipped_is_false_for_backends_without_a_hash_client() -> None:
    guard = GuardedCache(memory_region(), prefix="sas:", max_value_bytes=1024)
    assert not guard._skipped([HEX])
