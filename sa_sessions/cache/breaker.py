"""A circuit breaker: stop calling a failing cache node so requests stop paying its timeouts."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable

from sa_sessions.exceptions import SessionConfigError

log = logging.getLogger("sa_sessions.cache")


def positive_seconds(name: str, value: object) -> float:
    """``value`` as a float number of seconds; SessionConfigError unless finite and > 0."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise SessionConfigError(f"{name} must be a positive number of seconds, got {value!r}")
    return float(value)


class CircuitBreaker:
    """Stop calling a failing cache for a while so requests do not pay its timeouts.

    Closed: calls pass.  After ``failure_threshold`` consecutive failures it opens:
    :meth:`allow` returns False for ``reset_after`` seconds.  Then it is half-open and
    lets a single trial call through; success closes it, failure re-opens it.  A trial
    that never reports back is replaced by a new one after another ``reset_after``.
    Thread-safe; ``clock`` is injectable for tests.
    """

    def __init__(
        self,
        failure_threshold: int = 3,
        reset_after: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if (
            isinstance(failure_threshold, bool)
            or not isinstance(failure_threshold, int)
            or failure_threshold < 1
        ):
            raise SessionConfigError("failure_threshold must be an int >= 1")
        self.failure_threshold = failure_threshold
        self.reset_after = positive_seconds("reset_after", reset_after)
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at: float | None = None  # None while closed
        self._trial_at: float | None = None  # when the half-open trial was let through
        #: Calls refused so far (each one a timeout or a refused connection not paid).
        self.refused = 0

    @property
    def state(self) -> str:
        """``"closed"``, ``"open"`` or ``"half-open"``."""
        with self._lock:
            return self._state(self._clock())

    def _state(self, now: float) -> str:
        if self._opened_at is None:
            return "closed"
        if self._trial_at is not None or now - self._opened_at >= self.reset_after:
            return "half-open"
        return "open"

    def allow(self) -> bool:
        """Whether the caller may try the cache now."""
        if self._opened_at is None:  # closed: the common case needs no lock
            return True
        with self._lock:
            now = self._clock()
            state = self._state(now)
            if state == "closed":
                return True
            if state == "open" or (
                self._trial_at is not None and now - self._trial_at < self.reset_after
            ):  # open, or half-open with its trial call already in flight
                self.refused += 1
                return False
            self._trial_at = now
            return True

    def record_success(self) -> None:
        """A call worked: close the breaker and forget past failures."""
        if self._opened_at is None and not self._failures:
            return
        with self._lock:
            if self._opened_at is not None:
                log.info("cache circuit closed: the cache answers again")
            self._failures = 0
            self._opened_at = None
            self._trial_at = None

    def record_failure(self) -> None:
        """A call failed: count it, and open (or re-open) the breaker when due."""
        with self._lock:
            now = self._clock()
            if self._opened_at is not None:
                self._opened_at = now  # a failed trial (or late failure) restarts the wait
                self._trial_at = None
                return
            self._failures += 1
            if self._failures >= self.failure_threshold:
                self._opened_at = now
                self._trial_at = None
                log.info(
                    "cache circuit opened after %d consecutive failures; retry in %.1f s",
                    self._failures,
                    self.reset_after,
                )
