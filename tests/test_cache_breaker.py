"""The circuit breaker that stops calls to a failing cache node, and its settings check."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from sa_sessions.cache.breaker import CircuitBreaker
from sa_sessions.cache.breaker import positive_seconds
from sa_sessions.exceptions import SessionConfigError


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def opened(clock: FakeClock, threshold: int = 1, reset_after: float = 10.0) -> CircuitBreaker:
    breaker = CircuitBreaker(failure_threshold=threshold, reset_after=reset_after, clock=clock)
    for _ in range(threshold):
        breaker.record_failure()
    assert breaker.state == "open"
    return breaker


def test_full_cycle_closed_open_half_open_closed() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=3, reset_after=10.0, clock=clock)
    assert breaker.state == "closed"
    assert breaker.allow()

    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state == "closed"
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state == "open"
    assert not breaker.allow()

    clock.now += 9.9
    assert breaker.state == "open"
    assert not breaker.allow()

    clock.now += 0.1
    assert breaker.state == "half-open"
    assert breaker.allow()  # the single trial
    assert not breaker.allow()  # the others wait for it
    assert breaker.state == "half-open"

    breaker.record_failure()  # the trial failed: open again for a full period
    assert breaker.state == "open"
    assert not breaker.allow()
    clock.now += 9.9
    assert not breaker.allow()
    clock.now += 0.1
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state == "closed"
    assert breaker.allow()
    assert breaker.allow()

    breaker.record_failure()  # the count restarted when it closed
    breaker.record_failure()
    assert breaker.state == "closed"


def test_only_consecutive_failures_count() -> None:
    breaker = CircuitBreaker(failure_threshold=2, clock=FakeClock())
    for _ in range(5):
        breaker.record_failure()
        breaker.record_success()
    assert breaker.state == "closed"
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state == "open"


def test_a_trial_that_never_reports_is_replaced_after_another_period() -> None:
    clock = FakeClock()
    breaker = opened(clock, reset_after=5.0)
    clock.now += 5.0
    assert breaker.allow()
    clock.now += 4.9
    assert not breaker.allow()
    clock.now += 0.1
    assert breaker.allow()
    assert not breaker.allow()


def test_a_late_failure_while_open_restarts_the_wait() -> None:
    """A call let through before the breaker opened fails afterwards: wait again in full."""
    clock = FakeClock()
    breaker = opened(clock, reset_after=10.0)
    clock.now += 6.0
    breaker.record_failure()
    clock.now += 6.0  # 12 s after opening, 6 s after the late failure
    assert breaker.state == "open"
    assert not breaker.allow()
    clock.now += 4.0
    assert breaker.allow()


def test_a_late_success_while_open_closes_it() -> None:
    clock = FakeClock()
    breaker = opened(clock, threshold=2)
    breaker.record_success()
    assert breaker.state == "closed"
    assert breaker.allow()
    breaker.record_failure()  # the count restarted
    assert breaker.state == "closed"


def test_refusals_are_counted_while_open_and_while_a_trial_is_in_flight() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=2, reset_after=10.0, clock=clock)
    breaker.record_failure()
    assert breaker.allow()  # closed: nothing refused
    breaker.record_failure()
    assert [breaker.allow() for _ in range(3)] == [False] * 3
    clock.now += 10.0
    assert breaker.allow()  # the trial is not a refusal
    assert not breaker.allow()  # the others wait for it
    assert breaker.refused == 4
    breaker.record_success()
    assert breaker.allow()
    assert breaker.refused == 4


def test_the_default_settings() -> None:
    breaker = CircuitBreaker()
    assert breaker.failure_threshold == 3
    assert breaker.reset_after == 10.0


def test_a_closed_breaker_that_saw_no_failure_records_success_for_free() -> None:
    breaker = CircuitBreaker(clock=FakeClock())
    for _ in range(3):
        breaker.record_success()
        assert breaker.allow()
    assert breaker.state == "closed"


def test_transitions_are_logged_once_each(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=2, reset_after=7.0, clock=clock)
    with caplog.at_level("INFO", logger="sa_sessions.cache"):
        breaker.record_failure()
        assert caplog.records == []
        breaker.record_failure()
        breaker.record_failure()  # already open: no second message
        breaker.record_success()
        breaker.record_success()  # already closed: no second message
    messages = [record.getMessage() for record in caplog.records]
    assert messages == [
        "cache circuit opened after 2 consecutive failures; retry in 7.0 s",
        "cache circuit closed: the cache answers again",
    ]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"failure_threshold": 0}, "failure_threshold must be an int >= 1"),
        ({"failure_threshold": -1}, "failure_threshold must be an int >= 1"),
        ({"failure_threshold": 1.5}, "failure_threshold must be an int >= 1"),
        ({"failure_threshold": True}, "failure_threshold must be an int >= 1"),
        ({"failure_threshold": "3"}, "failure_threshold must be an int >= 1"),
        ({"reset_after": 0}, "reset_after must be a positive number of seconds"),
        ({"reset_after": -1.0}, "reset_after must be a positive number of seconds"),
        ({"reset_after": float("nan")}, "reset_after must be a positive number of seconds"),
        ({"reset_after": float("inf")}, "reset_after must be a positive number of seconds"),
        ({"reset_after": "10"}, "reset_after must be a positive number of seconds"),
        ({"reset_after": False}, "reset_after must be a positive number of seconds"),
    ],
)
def test_bad_settings_are_rejected(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(SessionConfigError, match=message):
        CircuitBreaker(**kwargs)


@pytest.mark.parametrize("value", [0.001, 1, 2.5, 1e6])
def test_positive_seconds_accepts_positive_finite_numbers(value: float) -> None:
    result = positive_seconds("timeout", value)
    assert type(result) is float
    assert result == value


@pytest.mark.parametrize(
    "value", [0, -0.5, float("nan"), float("inf"), float("-inf"), True, None, "0.5", b"1"]
)
def test_positive_seconds_names_the_setting_and_the_value(value: object) -> None:
    with pytest.raises(SessionConfigError) as caught:
        positive_seconds("connect_timeout", value)
    assert str(caught.value) == (
        f"connect_timeout must be a positive number of seconds, got {value!r}"
    )


def test_many_threads_failing_open_it_and_half_open_lets_exactly_one_through() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=50, reset_after=1.0, clock=clock)

    def fail() -> None:
        for _ in range(10):
            breaker.record_failure()

    threads = [threading.Thread(target=fail) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert breaker.state == "open"

    clock.now += 1.0
    allowed: list[bool] = []
    lock = threading.Lock()
    barrier = threading.Barrier(16)

    def probe() -> None:
        barrier.wait()
        answer = breaker.allow()
        with lock:
            allowed.append(answer)

    threads = [threading.Thread(target=probe) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert allowed.count(True) == 1
