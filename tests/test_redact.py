"""Database URLs and error messages never show a password, wherever the URL put it."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import Engine
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

from sa_sessions._redact import MASK
from sa_sessions._redact import is_secret_name
from sa_sessions._redact import redact_text
from sa_sessions._redact import redact_url

SECRET = "s3cr3t-Value"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("mysql+mysqldb://app:s3cr3t-Value@db:3306/app", "mysql+mysqldb://app:***@db:3306/app"),
        (
            "mysql+mysqldb://app@db/app?password=s3cr3t-Value&charset=utf8mb4",
            "mysql+mysqldb://app@db/app?password=***&charset=utf8mb4",
        ),
        ("mysql+mysqldb://app@db/app?passwd=s3cr3t-Value", "mysql+mysqldb://app@db/app?passwd=***"),
        ("mssql+pyodbc://app@dsn?PWD=s3cr3t-Value", "mssql+pyodbc://app@dsn?PWD=***"),
        (
            "postgresql+psycopg://app@db/app?sslpassword=s3cr3t-Value&sslmode=require",
            "postgresql+psycopg://app@db/app?sslpassword=***&sslmode=require",
        ),
        (
            "postgresql://app@db/app?sslkey_password=s3cr3t-Value",
            "postgresql://app@db/app?sslkey_password=***",
        ),
        (
            "x://h/d?Client_Secret=s3cr3t-Value&API_TOKEN=s3cr3t-Value&MyPassWord=s3cr3t-Value",
            "x://h/d?Client_Secret=***&API_TOKEN=***&MyPassWord=***",
        ),
        # SQLAlchemy would refuse these; they are masked all the same.
        ("mysql+mysqldb://u:s3cr3t-Value@h:abc/db", "mysql+mysqldb://u:***@h:abc/db"),
        ("mysql://u:s3cr3t@Val/ue?x@h/db?password=s3cr3t-Value", "mysql://u:***@h/db?password=***"),
        # Nothing secret: unchanged.
        ("sqlite:////var/lib/app/sessions.db", "sqlite:////var/lib/app/sessions.db"),
        ("postgresql://app@db/app?sslmode=require", "postgresql://app@db/app?sslmode=require"),
        ("mysql://app:@db/app", "mysql://app:@db/app"),
        ("not a url", "not a url"),
        # A libpq connection string rather than a URL.
        ("host=db password=s3cr3t-Value dbname=app", "host=db password=*** dbname=app"),
    ],
)
def test_redact_url_string(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert SECRET not in redact_url(url) and "s3cr3t" not in redact_url(url)


def test_redact_url_object_masks_userinfo_and_query() -> None:
    url = make_url(
        "postgresql+psycopg://app:p%40ss@db/app?sslpassword=k1&a=1&a=2&options=-csearch_path%3Dx"
    )
    assert redact_url(url) == (
        "postgresql+psycopg://app:***@db/app?a=1&a=2&options=-csearch_path%3Dx&sslpassword=***"
    )
    plain = make_url("sqlite:///sessions.db")
    assert redact_url(plain) == "sqlite:///sessions.db"


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("password", True),
        ("PASSWORD", True),
        ("passwd", True),
        ("pwd", True),
        ("sslpassword", True),
        ("sslkey_password", True),
        ("client_secret", True),
        ("access_token", True),
        ("charset", False),
        ("sslmode", False),
        ("user", False),
    ],
)
def test_secret_names(name: str, secret: bool) -> None:
    assert is_secret_name(name) is secret


def test_redact_text_masks_urls_and_the_known_secrets_anywhere() -> None:
    url = "mysql+mysqldb://root:hunter22@db/app?sslpassword=k3y-pass"
    message = (
        "(MySQLdb.OperationalError) cannot connect to mysql+mysqldb://root:hunter22@db/app"
        "?sslpassword=k3y-pass; password 'hunter22' rejected; key k3y-pass; "
        "args {'passwd': 'other', 'host': 'db'} password=plain "
        "(Background on this error at: https://sqlalche.me/e/21/e3q8)"
    )
    shown = redact_text(message, url)
    for secret in ("hunter22", "k3y-pass", "other", "plain"):
        assert secret not in shown
    assert "mysql+mysqldb://root:***@db/app?sslpassword=***" in shown
    assert "{'passwd': '***', 'host': 'db'}" in shown
    assert "https://sqlalche.me/e/21/e3q8" in shown  # harmless URLs stay readable


def test_redact_text_masks_percent_encoded_passwords() -> None:
    url = make_url("mysql://u:p%40ss%2Fw0rd@h/db")
    assert url.password == "p@ss/w0rd"
    text = "raw p@ss/w0rd, encoded p%40ss%2Fw0rd"
    assert redact_text(text, url) == f"raw {MASK}, encoded {MASK}"


def test_redact_text_leaves_plain_messages_alone() -> None:
    text = "Access denied for user 'app'@'localhost' (using password: YES)"
    assert redact_text(text, "mysql://app@localhost/db") == text


def test_demo_start_up_line_shows_no_password(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """examples/bottle_app.py logs its database URL through redact_url."""
    from .test_examples import load_example

    demo = load_example("bottle_app")
    shown = make_url("mysql+mysqldb://app:Qs3cr3tQ@db/app?password=Qs3cr3tQ&charset=utf8mb4")

    def engine(db_url: str) -> Engine:
        made = create_engine("sqlite://")
        made.url = shown  # as if it were that server: only the log line reads it
        return made

    monkeypatch.setattr(demo, "_engine", engine)
    with caplog.at_level(logging.INFO, logger="sa_sessions.demo"):
        demo.create_app(cookie_key="k" * 32)
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("demo app:")]
    assert "Qs3cr3tQ" not in line
    assert "database mysql+mysqldb://app:***@db/app?charset=utf8mb4&password=***" in line


def test_redact_text_keeps_the_punctuation_around_a_secret() -> None:
    text = "cannot reach mysql://u@h/x?password=hunter22: refused; password=hunter22. Done"
    assert (
        redact_text(text) == "cannot reach mysql://u@h/x?password=***: refused; password=***. Done"
    )
