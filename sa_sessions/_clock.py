"""The one place that reads the wall clock: aware UTC, injectable for tests."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from datetime import timedelta
from datetime import timezone

UTC = timezone.utc
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

#: A clock is any zero-argument callable returning an aware UTC datetime.
Clock = Callable[[], datetime]


def utcnow() -> datetime:
    """Return the current time as an aware UTC datetime."""
    return datetime.now(UTC)


def to_micros(value: datetime) -> int:
    """Microseconds since the Unix epoch for an aware datetime (exact, no float)."""
    if value.tzinfo is None:
        raise ValueError("naive datetime: sa_sessions only handles aware UTC datetimes")
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(micros: int) -> datetime:
    """Inverse of :func:`to_micros`."""
    return _EPOCH + timedelta(microseconds=micros)
