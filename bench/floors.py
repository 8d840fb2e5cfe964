"""Floors: the raw operations no session layer can do without, on the bytes sa_sessions stored.

Measured as extra cases in the same interleaved rounds as the layers (see
``bench/measure.py``); a floor does not run the app, so its absolute time compares
with a layer's overhead (layer minus bare app).

* **cookie read floor**: find the session cookie in the ``Cookie`` header, base64url-
  decode, HMAC-SHA256 the signed text (``hmac.digest``), JSON-decode, check the expiry;
  on sa_sessions' own cookie of the scenario.
* **cookie write floor**: the read floor, then the new cookie: change the value,
  JSON-encode, base64url, HMAC-SHA256, the ``Set-Cookie`` text.
* **read floor** (per cache kind and shape): raw ``Client.get`` (pymemcache) or ``GET``
  (redis-py) of sa_sessions' own cache entry + one HMAC-SHA256 over the blob in it +
  ``pickle.loads`` of the bytes of the one value the request reads (``user_id``).
  Nothing is charged for the keys the request never reads, for finding the value in
  the blob (its bytes are located once, before timing, with ``store.codec.open_lazy``)
  nor for decompressing a compressed blob (shown apart, as ``inflate``, when the stored
  blob is compressed).
* **write floor**: the read floor on the write's key (``hits``), then a raw
  ``UPDATE <table> SET data=%s WHERE id=%s`` + ``COMMIT`` on the driver's own
  connection (a row of its own, alternating two blobs of the stored size so every
  UPDATE changes the row) + a raw cache set of the entry (under a key of its own).

Everything is read from what sa_sessions stored (the row's blob and the cache entry),
so the floors follow the library's layout.  The blob's MAC message is taken from
``sa_sessions/codec/blob.py``'s docstring (label, hashed id, version, every byte
before the MAC); if a layout change makes the check fail, the floor still computes an
HMAC over the same bytes (same cost) and the report says "MAC not verified".
"""

from __future__ import annotations

import binascii
import contextlib
import hashlib
import hmac
import json
import pickle
import time
import zlib
from collections.abc import Callable
from typing import Any

import peers
from measure import Case
from measure import Scenario
from measure import Servers

#: The source layers of each cache kind's floors: default first, then server-only
#: (used when the default keeps the shape in its cookie).
SOURCES = {
    "memcached": ("sa_sessions", "sa_sessions_server"),
    "redis": ("sa_sessions_redis", "sa_sessions_redis_server"),
}
_BLOB_LABEL = b"sa_sessions.blob.v1\x00"  # blob.py docstring: HMAC(LABEL || id || version || ..)
_MAC = 32
_TTL = 3600
_FROM_URLSAFE = bytes.maketrans(b"-_", b"+/")
_TO_URLSAFE = bytes.maketrans(b"+/", b"-_")
_PAD = ("", "===", "==", "=")


def _b64decode(text: str) -> bytes:
    return binascii.a2b_base64(
        (text + _PAD[len(text) % 4]).encode("ascii").translate(_FROM_URLSAFE)
    )


def _b64encode(raw: bytes) -> str:
    return binascii.b2a_base64(raw, newline=False).translate(_TO_URLSAFE).rstrip(b"=").decode()


def _derive(master: bytes, purpose: str) -> bytes:
    from sa_sessions.signing import derive_key  # setup only: which key the library uses

    return derive_key(master, purpose)


# --------------------------------------------------------------------------- cookies


def cookie_floor(scenario: Scenario, source: Case) -> Case:
    """The cookie floor of ``scenario`` (read or write) on ``source``'s cookie."""
    name = f"floor_cookie_{scenario.op}"
    case = Case(name, scenario)
    header = source.cookie or ""
    cookie_name = peers.COOKIE_NAME
    key = _derive(peers.COOKIE_KEY, "sa_sessions.cookie:" + cookie_name)
    value = header.partition("=")[2]
    signed, _, sig = value.rpartition(".")
    version, kind, _ = signed.split(".", 2) if signed.count(".") >= 2 else ("", "", "")
    if version != "v1" or kind not in ("d", "dz"):
        case.na = f"not a data cookie ({version}.{kind})"
        return case
    if not hmac.compare_digest(hmac.digest(key, signed.encode(), "sha256"), _b64decode(sig)):
        case.na = "cookie signature layout not recognised"
        return case
    compressed = kind.endswith("z")
    case.extra = {"source": source.name, "cookie_bytes": len(value), "compressed": compressed}
    body_at = len(version) + len(kind) + 2
    digest, compare = hmac.digest, hmac.compare_digest
    loads, dumps, decompress = json.loads, json.dumps, zlib.decompress
    now_us = time.time_ns

    def read() -> list[Any]:
        value = ""
        for part in header.split(";"):
            found, _, text = part.strip().partition("=")
            if found == cookie_name:
                value = text
                break
        signed, _, sig = value.rpartition(".")
        if not compare(digest(key, signed.encode("ascii"), "sha256"), _b64decode(sig)):
            raise AssertionError("cookie floor: bad signature")
        raw = _b64decode(signed[body_at:])
        if compressed:
            raw = decompress(raw, -15)
        fields: list[Any] = loads(raw)
        if fields[2] <= now_us() // 1000:
            raise AssertionError("cookie floor: expired")
        return fields

    read()  # fails here, not in the rounds, if the cookie is not what the floor reads

    def write() -> str:
        fields = read()
        data = fields[5]
        data["hits"] = data.get("hits", 0) + 1
        fields[2] = now_us() // 1000 + 14 * 86400 * 1_000_000
        signed = "v1.d." + _b64encode(dumps(fields, separators=(",", ":")).encode())
        sig = _b64encode(digest(key, signed.encode("ascii"), "sha256"))
        return f"{cookie_name}={signed}.{sig}; Max-Age=1209600; Path=/; HttpOnly; SameSite=Lax"

    case.op = write if scenario.op == "write" else read
    return case


# --------------------------------------------------------------------------- server floors


class _Raw:
    """A raw cache client of one kind: get, and set with an expiry."""

    def __init__(self, kind: str, servers: Servers) -> None:
        self.kind = kind
        if kind == "memcached":
            from pymemcache.client.base import Client

            host, port = servers.memcached.rsplit(":", 1)
            # The socket settings of memcached_region's defaults.
            client = Client(
                (host, int(port)),
                no_delay=True,
                default_noreply=False,
                connect_timeout=0.25,
                timeout=0.25,
            )
            self.get: Any = client.get
            self.set: Any = lambda key, value: client.set(key, value, expire=_TTL)
            self.delete: Any = client.delete
            self.close: Any = client.close
        else:
            import redis

            assert servers.redis is not None
            # The socket settings of redis_region's defaults.
            rclient = redis.Redis.from_url(
                servers.redis, socket_timeout=0.25, socket_connect_timeout=0.25
            )
            self.get = rclient.get
            self.set = lambda key, value: rclient.set(key, value, px=_TTL * 1000)
            self.delete = rclient.delete
            self.close = rclient.close


class Floors:
    """Builds every floor of a scenario (a :data:`measure.FloorFactory`)."""

    def __init__(self, servers: Servers, kinds: tuple[str, ...] = ("memcached", "redis")) -> None:
        self.servers = servers
        self.kinds = tuple(k for k in kinds if k == "memcached" or servers.redis)
        self.raw = {kind: _Raw(kind, servers) for kind in self.kinds}
        self._connections: list[Any] = []
        self._engines: dict[str, Any] = {}
        self._cleanup: list[tuple[Any, str, str]] = []  # connection, table, id

    def __call__(self, scenario: Scenario, cases: dict[str, Case]) -> dict[str, Case]:
        self._release()  # the previous scenario's rounds are over
        floors: dict[str, Case] = {}
        if scenario.op in ("read", "write") and scenario.shape == "small":
            source = cases.get("sa_sessions")
            if source is not None and source.na is None:
                floors[f"floor_cookie_{scenario.op}"] = cookie_floor(scenario, source)
            return floors
        if scenario.op not in ("read", "write"):
            return floors
        for kind in self.kinds:
            source = self._source(kind, cases)
            name = f"floor_{scenario.op}_{kind}"
            if source is None:
                floor = Case(name, scenario)
                floor.na = "no sa_sessions layer keeps this shape server-side"
                floors[name] = floor
                continue
            try:
                floors.update(self._server_floor(kind, scenario, source))
            except Exception as exc:
                floor = Case(name, scenario)
                floor.na = f"floor not built: {type(exc).__name__}: {str(exc)[:120]}"
                floors[name] = floor
        return floors

    def _connect(self, store: Any) -> Any:
        """A driver connection of its own (never one of the store's pool: taking one
        would make the layer open a new connection inside the measured requests)."""
        from sqlalchemy import create_engine
        from sqlalchemy.pool import NullPool

        url = store.engine.url
        key = url.render_as_string(hide_password=False)
        if key not in self._engines:
            self._engines[key] = create_engine(url, poolclass=NullPool)
        return self._engines[key].raw_connection()

    def _source(self, kind: str, cases: dict[str, Case]) -> Case | None:
        """The first sa_sessions layer of ``kind`` whose session has a row (not a cookie)."""
        for name in SOURCES[kind]:
            case = cases.get(name)
            if case is None or case.na is not None or case.sid is None:
                continue
            store = case.layer.store if case.layer is not None else None
            if store is None:
                continue
            hashed = hashlib.sha256(case.sid.encode("ascii")).hexdigest()
            with contextlib.closing(self._connect(store)) as raw:
                cursor = raw.driver_connection.cursor()
                cursor.execute(f"SELECT 1 FROM {store.table.name} WHERE id=%s", (hashed,))
                found = cursor.fetchone() is not None
                cursor.close()
                raw.driver_connection.rollback()
            if found:
                return case
        return None

    def _server_floor(self, kind: str, scenario: Scenario, source: Case) -> dict[str, Case]:
        assert source.layer is not None and source.sid is not None
        store = source.layer.store
        raw = self.raw[kind]
        hashed = hashlib.sha256(source.sid.encode("ascii")).hexdigest()
        key = store.cache.key(hashed)
        table = store.table.name
        connection = self._connect(store)
        conn = connection.driver_connection
        cursor = conn.cursor()
        cursor.execute(f"SELECT data, version FROM {table} WHERE id=%s", (hashed,))
        blob, version = cursor.fetchone()
        blob = bytes(blob)
        conn.rollback()
        if scenario.op == "write":
            self._connections.append(connection)  # the floor's UPDATEs use it
        else:
            cursor.close()
            connection.close()
        entry = raw.get(key)
        if not isinstance(entry, bytes):
            raise RuntimeError(f"no cache entry for the session in {kind}")
        if not entry.endswith(blob):
            raise RuntimeError("the cache entry does not hold the row's blob")
        offset = len(entry) - len(blob)  # the entry's header; the blob follows
        mac_key = _derive(peers.BLOB_KEY, "sa_sessions.blob-mac")
        prefix = _BLOB_LABEL + hashed.encode("ascii") + version.to_bytes(8, "big", signed=True)
        mac = hmac.new(mac_key, prefix, "sha256")
        mac.update(memoryview(blob)[:-_MAC])
        verified = hmac.compare_digest(mac.digest(), blob[-_MAC:])
        read_key = "hits" if scenario.op == "write" else "user_id"
        _, data = store.codec.open_lazy(hashed, version, blob)
        if read_key not in data:
            read_key = "user_id"
        value_raw, compressed_values = _stored_value(data, read_key)
        value_inflate = value_raw[:1] == b"z"  # format 3: "z" + zlib stream of a pickle
        if value_inflate:
            value_raw = value_raw[1:]
        expected = _decode(value_raw, value_inflate)
        info = {
            "source": source.name,
            "entry_bytes": len(entry),
            "blob_bytes": len(blob),
            "value_bytes": len(value_raw),
            "keys": len(data),
            "mac_verified": verified,
            "compressed": (
                "whole payload"
                if blob[0] >> 4 in (1, 2) and blob[0] & 0x02
                else f"{compressed_values} of {len(data)} values"
                if compressed_values
                else "no"
            ),
            "format": blob[0] >> 4,
            "version": version,
        }
        clock = time.perf_counter_ns
        get, new_mac, compare = raw.get, hmac.new, hmac.compare_digest
        unpickle, unzip = pickle.loads, zlib.decompress
        loads: Callable[[bytes], Any] = (
            (lambda raw: unpickle(unzip(raw))) if value_inflate else unpickle
        )

        def read_part(case: Case) -> None:
            parts = case.part_ns
            t0 = clock()
            entry = get(key)
            t1 = clock()
            h = new_mac(mac_key, prefix, "sha256")
            h.update(memoryview(entry)[offset:-_MAC])
            compare(h.digest(), entry[-_MAC:])
            t2 = clock()
            if loads(value_raw) != expected:
                raise AssertionError("floor: value changed")
            t3 = clock()
            parts["get"] += t1 - t0
            parts["mac"] += t2 - t1
            parts["value"] += t3 - t2

        floors: dict[str, Case] = {}
        name = f"floor_{scenario.op}_{kind}"
        case = Case(name, scenario, extra=info)
        if scenario.op == "read":
            case.op = lambda: read_part(case)
            floors[name] = case
            payload = _compressed_payload(blob)
            if kind == "memcached" and payload is not None:
                inflate = Case("inflate", scenario, extra={"payload_bytes": len(payload)})
                decompress = zlib.decompress
                inflate.op = lambda: decompress(payload)
                floors["inflate"] = inflate
            return floors
        # The write floor's own row (a copy of the session's row under another id) and key.
        floor_hashed = hashlib.sha256(f"floor-{kind}-{scenario.key}".encode()).hexdigest()
        columns = [c.name for c in store.table.columns]
        picks = ", ".join("%s" if c == "id" else c for c in columns)
        cursor.execute(f"DELETE FROM {table} WHERE id=%s", (floor_hashed,))
        cursor.execute(
            f"INSERT INTO {table} ({', '.join(columns)}) SELECT {picks} FROM {table} WHERE id=%s",
            (floor_hashed, hashed),
        )
        conn.commit()
        self._cleanup.append((conn, table, floor_hashed))
        floor_key = store.cache.key(floor_hashed)
        blobs = (blob, blob[:-1] + bytes([blob[-1] ^ 1]))
        entries = (entry, entry[:-1] + bytes([entry[-1] ^ 1]))
        update = f"UPDATE {table} SET data=%s WHERE id=%s"
        execute, put = cursor.execute, raw.set
        flip = [0]

        def write() -> None:
            read_part(case)
            flip[0] ^= 1
            t0 = clock()
            execute(update, (blobs[flip[0]], floor_hashed))
            conn.commit()  # looked up each time: the counting pass patches the class
            t1 = clock()
            put(floor_key, entries[flip[0]])
            t2 = clock()
            case.part_ns["update_commit"] += t1 - t0
            case.part_ns["set"] += t2 - t1

        case.op = write
        floors[name] = case
        return floors

    def _release(self) -> None:
        """Delete the write floors' rows and give their connections back."""
        for conn, table, floor_hashed in self._cleanup:
            with contextlib.suppress(Exception):
                cursor = conn.cursor()
                cursor.execute(f"DELETE FROM {table} WHERE id=%s", (floor_hashed,))
                conn.commit()
                cursor.close()
        for connection in self._connections:
            with contextlib.suppress(Exception):
                connection.close()
        self._cleanup, self._connections = [], []

    def close(self) -> None:
        self._release()
        for engine in self._engines.values():
            engine.dispose()
        for raw in self.raw.values():
            with contextlib.suppress(Exception):
                raw.close()


def _stored_value(data: dict[str, Any], key: str) -> tuple[bytes, int]:
    """The stored bytes of ``key``'s value, and how many stored values are compressed.

    Format 3 (``sa_sessions.codec.packed``): every key maps to one ``Packed`` whose
    ``raw(key)`` is the value's stored bytes (a pickle, or ``z`` + a zlib stream);
    formats 1/2 keyed: a ``Packed`` per value with its bytes as ``raw``; otherwise the
    value itself, pickled on its own here.
    """
    value = data[key]
    raw = getattr(value, "raw", None)
    if callable(raw):
        keys = getattr(value, "keys", ())
        compressed = sum(1 for k in keys if bytes(raw(k)[:1]) == b"z")
        return bytes(raw(key)), compressed
    if isinstance(raw, bytes):
        return raw, 0
    return pickle.dumps(value, protocol=5), 0


def _decode(raw: bytes, inflate: bool) -> Any:
    return pickle.loads(zlib.decompress(raw) if inflate else raw)


def _compressed_payload(blob: bytes) -> bytes | None:
    """The zlib payload of a compressed blob (formats 1 and 2 of blob.py's docstring)."""
    header = blob[0]
    if not header & 0x02 or header >> 4 not in (1, 2):
        return None
    start = 17
    if header >> 4 == 2:
        start = 18 + (4 if blob[1] & 0x02 else 0)
    payload = blob[start:-_MAC]
    try:
        zlib.decompress(payload)
    except zlib.error:
        return None
    return payload
