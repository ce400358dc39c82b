"""The status page served by the hub process ([web] in hub.toml): HTTPS in a thread, writes through the hub's
ledger on the hub's loop; hub.toml [web] settings are checked."""

from __future__ import annotations

import asyncio
import http.cookiejar
import re
import sqlite3
import ssl
import urllib.error
import urllib.parse
import urllib.request
from contextlib import closing
from pathlib import Path

import pytest
from werkzeug.security import generate_password_hash

from hub.config import ConfigError, load_config
from hub.web.accounts.users import add_user
from tests.hub_support import FakeNode, start_hub, write_config


def _config(tmp_path: Path, sockdir: Path, web: str) -> Path:
    node = FakeNode(1, bytes(range(16)), tmp_path / "node-1")  # never plugged in: the hub waits for it
    path = write_config(tmp_path, sockdir, [node])
    path.write_text(path.read_text() + web)
    return path


async def test_hub_serves_the_status_page_and_stops_it(tmp_path: Path, sockdir: Path) -> None:
    hub = await start_hub(_config(tmp_path, sockdir, '[web]\nhost = "127.0.0.1"\nport = 0\n'))
    try:
        assert hub.web is not None and hub.ledger is not None
        url = hub.web.url
        assert re.fullmatch(r"https://127\.0\.0\.1:\d+/", url)
        # the self-signed certificate generated on first start, trusted as itself: the host name is checked too
        assert hub.web.certificate is not None and hub.web.fingerprint is not None
        tls = ssl.create_default_context(cafile=str(hub.web.certificate))
        pw = generate_password_hash("manager-password", method="pbkdf2:sha256:1000")
        await hub.ledger.transact(lambda tx: add_user(tx, "mia", pw, "manager", actor="test"))
        opened = await hub.ledger.open_alert("damage", "lane:X/SOUP", {}, actor="test")
        opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()), urllib.request.HTTPSHandler(context=tls)
        )

        def fetch(path: str, fields: dict[str, str] | None = None) -> str:
            data = None if fields is None else urllib.parse.urlencode(fields).encode()
            with opener.open(url.rstrip("/") + path, data=data, timeout=10) as resp:
                return str(resp.read().decode())

        def token(html: str) -> str:
            match = re.search(r'name="csrf_token" value="([^"]+)"', html)
            assert match
            return match.group(1)

        # blocking HTTP calls run in threads: the hub's loop must keep running to serve the writes
        login = await asyncio.to_thread(fetch, "/login")
        fields = {"username": "mia", "password": "manager-password", "csrf_token": token(login), "next": "/alerts"}
        alerts = await asyncio.to_thread(fetch, "/login", fields)
        assert "lane:X/SOUP" in alerts
        done = await asyncio.to_thread(fetch, f"/alerts/{opened.alert_id}/acknowledge", {"csrf_token": token(alerts)})
        assert f"Alert {opened.alert_id} acknowledged." in done
        with closing(sqlite3.connect(hub.config.database)) as conn:
            row = conn.execute("SELECT acknowledged_by FROM alerts WHERE id = ?", (opened.alert_id,)).fetchone()
        assert row == ("web:mia",)
        # the nodes page gets the hub's live status (on the hub's loop): node 1 is configured, never plugged in
        nodes = await asyncio.to_thread(fetch, "/nodes")
        assert "unavailable" not in nodes
        assert "offline" in nodes.split('<tr id="node-1">')[1].split("</tr>")[0]
    finally:
        await hub.stop()
    assert hub.web is None
    with pytest.raises(urllib.error.URLError):
        await asyncio.to_thread(urllib.request.urlopen, url + "login", timeout=2)


async def test_without_a_web_table_there_is_no_status_page(tmp_path: Path, sockdir: Path) -> None:
    hub = await start_hub(_config(tmp_path, sockdir, ""))
    try:
        assert hub.config.web is None and hub.web is None
    finally:
        await hub.stop()


@pytest.mark.parametrize(
    ("web", "message"),
    [
        ("[web]\nport = 70000\n", "web.port"),
        ('[web]\nport = "80"\n', "web.port"),
        ("[web]\nthreads = 0\n", "web.threads"),
        ("[web]\nmax_live_clients = -1\n", "web.max_live_clients"),
        ("[web]\nmax_live_clients = 513\n", "web.max_live_clients"),
        ("[web]\nhots = 1\n", "web.hots: unknown setting"),
        ('web = "yes"\n', "web: must be a table"),
    ],
)
def test_web_settings_are_checked(tmp_path: Path, web: str, message: str) -> None:
    path = tmp_path / "hub.toml"
    path.write_text(web)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(path)


def test_web_defaults(tmp_path: Path) -> None:
    path = tmp_path / "hub.toml"
    path.write_text("[web]\n")
    web = load_config(path).web
    assert web is not None and (web.host, web.port, web.threads, web.max_live_clients) == ("127.0.0.1", 8443, 4, 64)
    assert web.tls == "auto" and web.certificate is None and web.http_port is None
    path.write_text("[web]\nmax_live_clients = 0\n")  # no live updates: the overview still works without them
    web = load_config(path).web
    assert web is not None and web.max_live_clients == 0
