"""The app under the production WSGI server (waitress): worker threads write through LoopWriter to the ledger
on its own loop, as in the hub."""

from __future__ import annotations

import http.cookiejar
import re
import sqlite3
import threading
import urllib.error
import urllib.parse
import urllib.request
from contextlib import closing

import pytest
from waitress.server import create_server

from tests.web_support import PASSWORD, Env


def test_login_overview_and_acknowledge_over_http(env: Env) -> None:
    server = create_server(env.app, host="127.0.0.1", port=0, threads=4)
    thread = threading.Thread(target=server.run, name="waitress", daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.effective_port}"  # type: ignore[union-attr]
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))

    def token(html: str) -> str:
        match = re.search(r'name="csrf_token" value="([^"]+)"', html)
        assert match
        return match.group(1)

    def post(path: str, fields: dict[str, str]) -> str:
        data = urllib.parse.urlencode(fields).encode()
        with opener.open(base + path, data=data, timeout=10) as resp:
            return str(resp.read().decode())

    try:
        with opener.open(base + "/", timeout=10) as resp:  # anonymous: redirected to the login page
            assert resp.url.startswith(base + "/login")
            login = resp.read().decode()
        overview = post("/login", {"username": "clerk", "password": PASSWORD, "csrf_token": token(login)})
        assert 'id="lane-A1"' in overview and "clerk (clerk)" in overview
        with closing(sqlite3.connect(env.db)) as conn:
            alert = conn.execute("SELECT id FROM alerts WHERE cause_key = 'lane:A1/COLA'").fetchone()[0]
        with pytest.raises(urllib.error.HTTPError) as refused:
            post(f"/alerts/{alert}/acknowledge", {"csrf_token": "forged"})
        assert refused.value.code == 400
        page = post(f"/alerts/{alert}/acknowledge", {"csrf_token": token(overview)})
        assert f"Alert {alert} acknowledged." in page
        with closing(sqlite3.connect(env.db)) as conn:
            row = conn.execute("SELECT status, acknowledged_by FROM alerts WHERE id = ?", (alert,)).fetchone()
        assert row == ("acknowledged", "web:clerk")
    finally:
        server.close()
        server.task_dispatcher.shutdown()  # type: ignore[union-attr]
        thread.join(5)
    assert not thread.is_alive()
