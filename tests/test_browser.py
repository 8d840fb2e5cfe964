"""The demo in a real headless Chromium: what a browser actually keeps in its cookie jar.

Needs Debian's ``chromium`` and ``chromium-driver`` packages and the ``selenium``
Python package; Selenium Manager is never used (the driver path is given), so
nothing is downloaded.  Skips locally when they are missing, fails in CI.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler
from wsgiref.simple_server import make_server

import pytest
from sqlalchemy import select

from sa_sessions.bottle import SessionPlugin

from .conftest import SECRET
from .conftest import missing_service
from .test_examples import load_example

pytestmark = pytest.mark.browser

CHROMEDRIVER = "/usr/bin/chromedriver"
CHROME_ARGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1000,800",
)


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Any, Any]]:
    """The demo app on a free loopback port, served by threads (as a browser needs)."""
    module = load_example("bottle_app")
    db = tmp_path_factory.mktemp("browser") / "demo.db"
    app = module.create_app(db_url=f"sqlite:///{db}", cookie_key=SECRET)
    httpd = make_server(
        "127.0.0.1", 0, app, server_class=module._ThreadingWSGIServer, handler_class=_Quiet
    )
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}", module, app
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    chromium = shutil.which("chromium")
    if chromium is None or not Path(CHROMEDRIVER).is_file():
        missing_service("chromium")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing_service("chromium (the selenium package)")
        raise
    options = webdriver.ChromeOptions()
    options.binary_location = str(chromium)
    for arg in CHROME_ARGS:
        options.add_argument(arg)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    # An explicit driver path: Selenium Manager (which downloads drivers) is skipped.
    browser = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    browser.set_page_load_timeout(30)
    yield browser
    browser.quit()


def _engine(app: Any) -> Any:
    [plugin] = [p for p in app.plugins if isinstance(p, SessionPlugin)]
    return plugin.settings.store.engine


def user_ids(module: Any, app: Any) -> list[int | None]:
    """The user_id of every session row."""
    with _engine(app).connect() as conn:
        return list(conn.scalars(select(module.WebSession.user_id)))


def user_id_of(module: Any, app: Any, username: str) -> int:
    with _engine(app).connect() as conn:
        return int(conn.scalar(select(module.User.id).where(module.User.username == username)))


def session_cookie(driver: Any) -> dict[str, Any]:
    """The one session cookie in the browser's jar, with its attributes checked."""
    cookies = [c for c in driver.get_cookies() if c["name"] in ("session", "__Host-session")]
    assert len(cookies) == 1, f"expected exactly one session cookie, got {cookies}"
    [cookie] = cookies
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Lax"
    assert cookie["path"] == "/"
    assert cookie["name"] == "session" and cookie["secure"] is False, "plain http"
    return cookie


def no_session_cookie(driver: Any) -> None:
    assert [c for c in driver.get_cookies() if "session" in c["name"]] == []


def submit(driver: Any, css: str) -> None:
    """Click a submit button and wait until the browser shows the next page.

    A marker set on the current page's ``window`` disappears when the next document
    loads.  Waiting for the clicked element to go stale instead asks the driver about
    a node of a document that may already be gone, which newer Chromium answers with
    an "unhandled inspector error" rather than a stale-element error.
    """
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.execute_script("window.__sa_sessions_old_page = true;")
    driver.find_element(By.CSS_SELECTOR, css).click()
    WebDriverWait(driver, 15).until(
        lambda d: d.execute_script(
            "return document.readyState === 'complete' && !window.__sa_sessions_old_page;"
        )
    )


def text(driver: Any) -> str:
    from selenium.webdriver.common.by import By

    return str(driver.find_element(By.TAG_NAME, "body").text)


def test_login_count_notes_logout_in_a_real_browser(
    driver: Any, demo_server: tuple[str, Any, Any]
) -> None:
    from selenium.webdriver.common.by import By

    url, module, app = demo_server
    driver.get(url + "/")
    assert "browsing anonymously" in text(driver)
    no_session_cookie(driver)  # reading the home page starts no session

    # Count visits: a cookie-only session.
    for visit in (1, 2, 3):
        driver.get(url + "/counter")
        assert driver.find_element(By.CSS_SELECTOR, "p.big").text == str(visit)
        assert session_cookie(driver)["value"].startswith("v1.d")

    # Add notes until the session outgrows the cookie and moves into a row.
    driver.get(url + "/notes")
    for _ in range(15):
        submit(driver, "button[name=action][value=random]")
        if session_cookie(driver)["value"].startswith("v1.i"):
            break
    else:
        raise AssertionError("the session never moved server-side")
    assert "server" in text(driver) and "sealed blob of" in text(driver)
    anonymous = session_cookie(driver)["value"]

    # Log in: a new id in the same single cookie.
    driver.get(url + "/login")
    driver.find_element(By.NAME, "username").send_keys("alice")
    driver.find_element(By.NAME, "password").send_keys("demo")
    submit(driver, "form[action='/login'] button")
    assert "Logged in as alice" in text(driver)
    assert "Signed in as alice" in text(driver)
    assert session_cookie(driver)["value"] != anonymous

    driver.get(url + "/counter")
    assert driver.find_element(By.CSS_SELECTOR, "p.big").text == "4", "data kept at login"
    session_cookie(driver)
    driver.get(url + "/sessions")
    assert "this one" in text(driver)
    assert user_ids(module, app) == [user_id_of(module, app, "alice")]

    # Log out: the cookie is gone from the jar.
    submit(driver, "form[action='/logout'] button")
    assert "browsing anonymously" in text(driver)
    no_session_cookie(driver)

    assert user_ids(module, app) == [], "logout deleted the row"
