"""Every limit and validation of the cookie header code, at its edge and one past it."""

from __future__ import annotations

import logging
from datetime import datetime
from datetime import timedelta
from datetime import timezone
from email.utils import format_datetime
from typing import Any

import pytest

from sa_sessions._cookie_header import DEFAULT_MAX_HEADER_BYTES
from sa_sessions._cookie_header import CookiePolicy
from sa_sessions._cookie_header import http_date
from sa_sessions._cookie_header import read_cookie_values
from sa_sessions.exceptions import SessionConfigError

UTC = timezone.utc
NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
LATER = NOW + timedelta(days=7)


# --------------------------------------------------------------------------- reading


def test_default_header_bound_at_the_edge(caplog: pytest.LogCaptureFixture) -> None:
    assert DEFAULT_MAX_HEADER_BYTES == 8192
    exact = "s=" + "v" * (8192 - 2)
    assert read_cookie_values(exact, "s") == ["v" * 8190]
    with caplog.at_level(logging.INFO, logger="sa_sessions.security"):
        assert read_cookie_values(exact + "v", "s") == []
    (record,) = caplog.records
    assert (
        record.getMessage() == "Cookie header of 8193 bytes exceeds the 8192-byte limit; not parsed"
    )


def test_configured_header_bound_at_the_edge() -> None:
    assert read_cookie_values("s=abc", "s", max_header_bytes=5) == ["abc"]
    assert read_cookie_values("s=abc", "s", max_header_bytes=4) == []


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        pytest.param('s="abc"', ["abc"], id="quoted"),
        pytest.param('s=""', [""], id="two-quotes"),
        pytest.param('s="', ['"'], id="one-quote"),
        pytest.param('s="abc', ['"abc'], id="opening-quote-only"),
        pytest.param('s=abc"', ['abc"'], id="closing-quote-only"),
        pytest.param('s=a"b', ['a"b'], id="inner-quote"),
        pytest.param('s=""abc""', ['"abc"'], id="one-pair-removed"),
        pytest.param("Xs=1; s=X2X", ["X2X"], id="strips-only-space-and-tab"),
        pytest.param("s\t=\t2\t;s = 3 ", ["2", "3"], id="space-and-tab"),
        pytest.param("s=1;s=2", ["1", "2"], id="no-space"),
        pytest.param("a=s; s", [], id="name-without-equals"),
        pytest.param("ss=1; xs=2", [], id="name-inside-another"),
    ],
)
def test_reading_values(header: str, expected: list[str]) -> None:
    assert read_cookie_values(header, "s") == expected


# --------------------------------------------------------------------------- dates


def test_every_weekday_and_month_is_spelled_as_http_wants() -> None:
    moment = datetime(2025, 1, 1, 0, 0, 0, tzinfo=UTC)
    for days in range(0, 400, 3):  # every month, and every weekday many times
        day = moment + timedelta(days=days, seconds=days * 1237)
        assert http_date(day) == format_datetime(day, usegmt=True)


def test_http_date_fields_are_zero_padded() -> None:
    assert http_date(datetime(5, 2, 3, 4, 5, 6, tzinfo=UTC)) == "Thu, 03 Feb 0005 04:05:06 GMT"
    assert http_date(datetime(2026, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)) == (
        "Thu, 31 Dec 2026 23:59:59 GMT"
    )


def test_http_date_converts_to_gmt() -> None:
    tokyo = timezone(timedelta(hours=9))
    assert http_date(datetime(2026, 1, 1, 3, 0, tzinfo=tokyo)) == "Wed, 31 Dec 2025 18:00:00 GMT"


# --------------------------------------------------------------------------- attributes


def test_attribute_length_at_the_edge() -> None:
    path = "/" + "a" * 1023
    assert CookiePolicy(path=path, host_prefix=False).path == path
    with pytest.raises(SessionConfigError, match="longer than 1024 bytes"):
        CookiePolicy(path=path + "a", host_prefix=False)
    domain = "a" * 1024
    assert CookiePolicy(domain=domain, host_prefix=False).domain == domain
    with pytest.raises(SessionConfigError, match="longer than 1024 bytes"):
        CookiePolicy(domain=domain + "a", host_prefix=False)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"path": "/a b"}, "^cookie path '/a b' is not allowed", id="path"),
        pytest.param({"domain": "a;b"}, "^cookie domain 'a;b' is not allowed", id="domain"),
        pytest.param({"path": "/" * 1025}, "^cookie path is longer than", id="long-path"),
        pytest.param({"domain": "a" * 1025}, "^cookie domain is longer than", id="long-domain"),
    ],
)
def test_attribute_errors_name_the_attribute(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(SessionConfigError, match=message):
        CookiePolicy(host_prefix=False, **kwargs)


@pytest.mark.parametrize("name", [42, None, b"session", ["session"]], ids=repr)
def test_name_must_be_a_string(name: Any) -> None:
    with pytest.raises(SessionConfigError, match="token"):
        CookiePolicy(name)


@pytest.mark.parametrize("name", ["__HOST-s", "__Secure-s", "__SECURE-s", "__secure-"])
def test_reserved_prefixes_in_any_case(name: str) -> None:
    with pytest.raises(SessionConfigError, match="prefix"):
        CookiePolicy(name)


def test_names_that_merely_resemble_a_prefix_are_fine() -> None:
    for name in ("_Host-s", "Host-s", "__Hosts", "x__Host-s"):
        assert CookiePolicy(name).name == name


@pytest.mark.parametrize("secure", ["yes", 2, "True"], ids=repr)
def test_secure_must_be_none_true_or_false(secure: Any) -> None:
    with pytest.raises(SessionConfigError, match="secure must be"):
        CookiePolicy(secure=secure)


@pytest.mark.parametrize("samesite", ["Lax", "LAX", "", None, "loose"], ids=repr)
def test_samesite_must_be_lowercase_and_known(samesite: Any) -> None:
    with pytest.raises(SessionConfigError, match="samesite must be"):
        CookiePolicy(samesite=samesite)


def test_samesite_none_needs_secure_true() -> None:
    for secure in (None, False):
        with pytest.raises(SessionConfigError, match="requires secure=True"):
            CookiePolicy(samesite="none", secure=secure)
    assert CookiePolicy(samesite="none", secure=True).samesite == "none"
    for other in ("lax", "strict"):
        for secure in (None, True, False):
            assert CookiePolicy(samesite=other, secure=secure).samesite == other


def test_host_prefix_needs_root_path_and_no_domain() -> None:
    for secure in (None, True):
        with pytest.raises(SessionConfigError, match="__Host-"):
            CookiePolicy(path="/app", secure=secure)
        with pytest.raises(SessionConfigError, match="__Host-"):
            CookiePolicy(domain="example.com", secure=secure)
        assert CookiePolicy(secure=secure).path == "/"
        assert CookiePolicy(path="/app", secure=secure, host_prefix=False).path == "/app"
    assert CookiePolicy(path="/app", domain="example.com", secure=False).path == "/app"


@pytest.mark.parametrize("domain", ["example.com", ".example.com", "a", "a-b_c.d1"])
def test_good_domains(domain: str) -> None:
    header = CookiePolicy(domain=domain, host_prefix=False).delete_cookie_header(secure=False)
    assert f"; Domain={domain};" in header


@pytest.mark.parametrize("domain", ["example..com", "example.com.", "..example.com", "-:80"])
def test_bad_domains(domain: str) -> None:
    with pytest.raises(SessionConfigError, match="not a host name"):
        CookiePolicy(domain=domain, host_prefix=False)


# --------------------------------------------------------------------------- policy behaviour


def test_defaults_and_repr() -> None:
    policy = CookiePolicy()
    assert (policy.name, policy.path, policy.domain, policy.secure) == ("session", "/", None, None)
    assert (policy.samesite, policy.httponly, policy.host_prefix) == ("lax", True, True)
    assert policy.partitioned is False
    assert repr(policy) == (
        "CookiePolicy('session', path='/', domain=None, secure=None, samesite='lax', "
        "httponly=True, host_prefix=True, partitioned=False)"
    )


@pytest.mark.parametrize("secure", [None, False])
def test_partitioned_needs_secure_true(secure: bool | None) -> None:
    with pytest.raises(SessionConfigError, match="partitioned=True requires secure=True"):
        CookiePolicy(partitioned=True, secure=secure)


def test_partitioned_cookies_carry_the_attribute_on_set_and_delete() -> None:
    policy = CookiePolicy(partitioned=True, secure=True)
    now = datetime(2030, 1, 1, tzinfo=timezone.utc)
    line = policy.set_cookie_header("v", secure=True, expires_at=now + timedelta(hours=1), now=now)
    assert line.endswith("; Secure; HttpOnly; SameSite=Lax; Partitioned")
    assert policy.delete_cookie_header(secure=True).endswith("; SameSite=Lax; Partitioned")


def test_a_browser_session_cookie_has_neither_expires_nor_max_age() -> None:
    policy = CookiePolicy()
    now = datetime(2030, 1, 1, tzinfo=timezone.utc)
    line = policy.set_cookie_header(
        "v", secure=False, expires_at=now + timedelta(hours=1), now=now, persistent=False
    )
    assert line == "session=v; Path=/; HttpOnly; SameSite=Lax"


@pytest.mark.parametrize(
    ("secure", "https", "ssl_only", "expected"),
    [
        (None, False, False, False),
        (None, True, False, True),
        (None, False, True, True),
        (None, True, True, True),
        (True, False, False, True),
        (True, True, True, True),
        (False, False, False, False),
        (False, True, False, False),
    ],
)
def test_is_secure(secure: bool | None, https: bool, ssl_only: bool, expected: bool) -> None:
    assert CookiePolicy(secure=secure).is_secure(https=https, ssl_only=ssl_only) is expected


def test_insecure_policy_refuses_ssl_only_sessions() -> None:
    for https in (False, True):
        with pytest.raises(SessionConfigError, match="ssl_only"):
            CookiePolicy(secure=False).is_secure(https=https, ssl_only=True)


def test_header_attributes_for_each_samesite_and_httponly() -> None:
    expected = {"lax": "Lax", "strict": "Strict", "none": "None"}
    for samesite, text in expected.items():
        for httponly in (True, False):
            policy = CookiePolicy(samesite=samesite, secure=True, httponly=httponly)  # type: ignore[arg-type]
            header = policy.set_cookie_header("v", secure=True, expires_at=LATER, now=NOW)
            tail = ("; HttpOnly" if httponly else "") + f"; SameSite={text}"
            assert header.endswith("; Max-Age=604800; Secure" + tail)
            assert policy.delete_cookie_header(secure=True).endswith("; Secure" + tail)


@pytest.mark.parametrize("naive", ["expires_at", "now"])
def test_either_naive_datetime_is_refused(naive: str) -> None:
    times = {"expires_at": LATER, "now": NOW, naive: datetime(2026, 3, 1)}
    with pytest.raises(ValueError, match="aware"):
        CookiePolicy().set_cookie_header("v", secure=False, **times)


def test_max_age_edges() -> None:
    policy = CookiePolicy()
    for seconds, max_age in ((0, 0), (1, 1), (-1, 0), (0.5, 0), (59.999, 59)):
        header = policy.set_cookie_header(
            "v", secure=False, expires_at=NOW + timedelta(seconds=seconds), now=NOW
        )
        assert f"; Max-Age={max_age};" in header


def test_empty_value_is_allowed() -> None:
    header = CookiePolicy().set_cookie_header("", secure=False, expires_at=LATER, now=NOW)
    assert header.startswith("session=; Path=/; Expires=")
