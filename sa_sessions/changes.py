"""Per-key changes of one request, and how they are re-applied to data saved meanwhile.

A request records what it did to each key: set it to a value, deleted it
(:data:`DELETED`), or added to it (:class:`Increment`).  When another request
saved the session first, only these changes are applied to the fresh data, so
parallel requests that touch different keys keep each other's writes, and
parallel increments add up.  For the same key the later save wins.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .codec.blob import Packed
from .exceptions import CodecError


class Deleted:
    """The request deleted the key."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "DELETED"


DELETED = Deleted()


class Increment:
    """The request added ``delta`` to a number (re-applied as an addition, not a value)."""

    __slots__ = ("delta",)

    def __init__(self, delta: int | float) -> None:
        self.delta = delta

    def __repr__(self) -> str:
        return f"Increment({self.delta!r})"


def _number(key: str, value: Any) -> int | float:
    if type(value) is Packed:
        try:
            value = value.value(key)
        except CodecError:
            return 0
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    return 0


def apply_changes(fresh: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """``fresh`` with ``changes`` applied on top (a new dict; ``fresh`` is not modified)."""
    merged = dict(fresh)
    for key, change in changes.items():
        if type(change) is Deleted:
            merged.pop(key, None)
        elif type(change) is Increment:
            merged[key] = _number(key, merged.get(key, 0)) + change.delta
        else:
            merged[key] = change
    return merged


def changes_between(base: Mapping[str, Any], data: Mapping[str, Any]) -> dict[str, Any]:
    """The changes that turn ``base`` into ``data``: keys set to a different value, and
    keys deleted.  Values still in their stored form compare by their stored bytes."""
    changes: dict[str, Any] = {key: DELETED for key in base if key not in data}
    for key, value in data.items():
        if key not in base:
            changes[key] = value
            continue
        old = base[key]
        if old is value:
            continue
        if type(old) is Packed and type(value) is Packed:
            if old.raw(key) != value.raw(key):
                changes[key] = value
            continue
        if type(old) is Packed:
            try:
                old = old.value(key)
            except CodecError:
                changes[key] = value
                continue
        if type(value) is Packed or old != value or type(old) is not type(value):
            changes[key] = value
    return changes
