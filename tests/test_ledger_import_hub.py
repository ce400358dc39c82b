"""`smartshelf ledger import` beside a running hub, as a new user following the docs meets it: the hub's own HTTPS
(its self-signed certificate at <ledger db>.tls/cert.pem), its HTTP errors, and an import without --url while the hub
has the ledger open. The hub here is the real one (hub run's HubService with [web]: hypercorn, TLS, its writer)."""

from __future__ import annotations

import asyncio
import hashlib
import io
import socket
import sqlite3
import threading
from collections.abc import AsyncIterator
from contextlib import closing, redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import pytest

from hub.cli import main
from hub.ledger import Sku
from hub.service import HubService
from hub.web.accounts.clients import TOKEN_PREFIX, add_client, token_sha256
from hub.web.serving.tls import TlsFiles, ensure_self_signed
from tests.hub_support import FakeNode, start_hub, write_config

RECEIPTS = "id,timestamp,sku,quantity\nd1,2026-11-27T08:00:00Z,COLA,6\n"


def cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = main(list(args))
    return rc, out.getvalue(), err.getvalue()


async def cli_beside(*args: str) -> tuple[int, str, str]:
    """The CLI in a thread: the hub's loop (this one) keeps serving its requests."""
    return await asyncio.to_thread(cli, *args)


def receipts(db: Path) -> list[tuple[object, ...]]:
    with closing(sqlite3.connect(db)) as conn:
        return conn.execute("SELECT source_ref, qty, actor FROM movements WHERE reason = 'receipt'").fetchall()


async def hub_with_web(tmp_path: Path, sockdir: Path) -> HubService:
    config = write_config(tmp_path, sockdir, [FakeNode(1, bytes(range(16)), tmp_path / "node-1")])
    config.write_text(config.read_text() + '[web]\nhost = "127.0.0.1"\nport = 0\n')
    service = await start_hub(config)
    assert service.ledger is not None and service.web is not None
    await service.ledger.add_sku(Sku("COLA", "Cola 330 ml", 3500, 20), actor="setup")
    return service


@pytest.fixture
async def hub(tmp_path: Path, sockdir: Path) -> AsyncIterator[HubService]:
    service = await hub_with_web(tmp_path, sockdir)
    yield service
    await service.stop()


async def token_file(hub: HubService, tmp_path: Path, scopes: tuple[str, ...] = ("receipts",)) -> Path:
    assert hub.ledger is not None
    token = f"{TOKEN_PREFIX}{hashlib.sha256(b'wms').hexdigest()[:43]}"
    await hub.ledger.transact(lambda tx: add_client(tx, "wms", token_sha256(token), scopes, actor="setup"))
    path = tmp_path / "token"
    path.write_text(token + "\n")
    return path


async def test_an_untrusted_hub_certificate_is_one_line_naming_its_file_and_fingerprint(
    hub: HubService, tmp_path: Path
) -> None:
    assert hub.web is not None
    db, url = hub.config.database, hub.web.url
    cert = Path(f"{db}.tls") / "cert.pem"
    assert hub.web.certificate == cert  # where the hub keeps it: what the line names, and what --cafile takes
    f = tmp_path / "delivery.csv"
    f.write_text(RECEIPTS)
    token = await token_file(hub, tmp_path)
    args = ("ledger", "import", "receipts", str(f), "--url", url, "--token-file", str(token))

    rc, out, err = await cli_beside(*args, "--config", str(hub.config.path))  # on the Pi: its hub.toml names the file
    assert (rc, out) == (2, "") and err.count("\n") == 1, err
    assert err.startswith(f"smartshelf ledger: {url}: the hub's certificate is not trusted (self-signed certificate")
    assert f"SHA-256 {hub.web.fingerprint}" in err  # as the hub logs it: "status page certificate SHA-256 ..."
    assert f"--cafile {cert}" in err and "status page certificate SHA-256" in err and "nothing was sent" in err
    assert "urlopen" not in err and "_ssl.c" not in err
    rc, _, err = await cli_beside(*args, "--db", str(tmp_path / "elsewhere.db"))  # another machine: the usual paths
    assert rc == 2 and "--cafile <ledger db>.tls/cert.pem (on a Pi: /var/lib/smartshelf/smartshelf.db.tls" in err
    assert receipts(db) == []

    other = TlsFiles(tmp_path / "other" / "cert.pem", tmp_path / "other" / "key.pem", generated=True)
    ensure_self_signed(other, ["localhost"], ["127.0.0.1"])  # another hub's (or one this hub has replaced since)
    rc, _, err = await cli_beside(*args, "--cafile", str(other.certificate))
    assert rc == 2 and err.count("\n") == 1, err
    assert f"the hub's certificate (self-signed certificate, SHA-256 {hub.web.fingerprint}) is not the one in" in err
    assert f"--cafile {other.certificate}: give the hub's current <ledger db>.tls/cert.pem" in err
    rc, _, err = await cli_beside(*args, "--cafile", str(tmp_path / "token"))
    assert (rc, err) == (2, f"smartshelf ledger: --cafile {tmp_path / 'token'}: not a PEM certificate (give the hub's"
                            " certificate, <ledger db>.tls/cert.pem); nothing was sent\n")  # fmt: skip

    rc, out, err = await cli_beside(*args, "--cafile", str(cert))
    assert (rc, err) == (0, "") and "delivery.csv: 1 receipts rows: 1 applied" in out
    assert receipts(db) == [("receipt:d1", 6, "api:wms")]


async def test_the_hubs_http_errors_show_the_status_its_reason_and_the_hubs_message(
    hub: HubService, tmp_path: Path
) -> None:
    """The hub's server (hypercorn on h11) sends status lines without a reason phrase ("HTTP/1.1 403"): the CLI used
    to print "HTTP 403: ..." (and "HTTP 404: " with nothing after it for an answer without the API's JSON)."""
    assert hub.web is not None and hub.web.certificate is not None
    url, cafile = hub.web.url, str(hub.web.certificate)
    f = tmp_path / "sold.csv"
    f.write_text(RECEIPTS)
    token = str(await token_file(hub, tmp_path))  # receipts only
    rc, _, err = await cli_beside("ledger", "import", "sales", str(f), "--url", url, "--token-file", token,
                                  "--cafile", cafile)  # fmt: skip
    assert (rc, err) == (
        1,
        f"smartshelf ledger: {url}api/v1/imports/sales: HTTP 403 Forbidden: scope: this needs the scope 'sales';"
        " client wms has receipts\n",
    )
    rc, _, err = await cli_beside("ledger", "import", "receipts", str(f), "--url", url + "not-the-api/",
                                  "--token-file", token, "--cafile", cafile)  # fmt: skip
    assert (rc, err) == (
        1,
        f"smartshelf ledger: {url}not-the-api/api/v1/imports/receipts: HTTP 404 Not Found: the hub gave no message\n",
    )
    (tmp_path / "wrong").write_text("ssk_not-a-client\n")
    rc, _, err = await cli_beside("ledger", "import", "receipts", str(f), "--url", url,
                                  "--token-file", str(tmp_path / "wrong"), "--cafile", cafile)  # fmt: skip
    assert rc == 1 and err.startswith(f"smartshelf ledger: {url}api/v1/imports/receipts: HTTP 401 Unauthorized: "), err
    assert err.endswith(": check the token (--token-file or $SMARTSHELF_API_TOKEN) against smartshelf api-clients"
                        " list\n")  # fmt: skip
    assert receipts(hub.config.database) == []


async def test_an_import_without_url_is_refused_while_the_hub_has_the_ledger_open(
    tmp_path: Path, sockdir: Path
) -> None:
    """One writer: the hub. A file imported beside it (the CLI opening the ledger itself) used to be accepted."""
    f = tmp_path / "delivery.csv"
    f.write_text(RECEIPTS)
    hub = await hub_with_web(tmp_path, sockdir)
    db = hub.config.database
    try:
        for where in (("--config", str(hub.config.path)), ("--db", str(db))):
            rc, out, err = await cli_beside("ledger", "import", "receipts", str(f), *where)
            assert (rc, out) == (2, "") and err.count("\n") == 1, err
            assert err.startswith(f"smartshelf ledger: {db} is open by a running hub"), err
            assert "--url https://" in err and f"--cafile {db}.tls/cert.pem" in err and "stop the hub" in err
            assert "nothing was imported" in err
        assert receipts(db) == []
    finally:
        await hub.stop()  # the hub stopped: the same command imports
    rc, out, err = await cli_beside("ledger", "import", "receipts", str(f), "--db", str(db))
    assert (rc, err) == (0, "") and "1 receipts rows: 1 applied" in out
    assert [r[:2] for r in receipts(db)] == [("receipt:d1", 6)]


def test_a_name_the_certificate_does_not_cover_and_a_closed_port_are_one_line_each(tmp_path: Path) -> None:
    from werkzeug.serving import make_server

    from hub.web.serving.tls import server_context

    files = TlsFiles(tmp_path / "tls" / "cert.pem", tmp_path / "tls" / "key.pem", generated=True)
    ensure_self_signed(files, ["hub.example"], [])  # a certificate for another name than the one in --url
    server = make_server("127.0.0.1", 0, lambda env, start: [], ssl_context=server_context(files))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    f = tmp_path / "delivery.csv"
    f.write_text(RECEIPTS)
    (tmp_path / "token").write_text("ssk_x\n")
    args = ("ledger", "import", "receipts", str(f), "--token-file", str(tmp_path / "token"))
    try:
        url = f"https://127.0.0.1:{server.server_port}/"
        rc, _, err = cli(*args, "--url", url, "--cafile", str(files.certificate))
        assert (rc, err) == (
            2,
            f"smartshelf ledger: {url}: the hub's certificate is not valid for 127.0.0.1 (it names hub.example):"
            " use one of those in --url; nothing was sent\n",
        )
    finally:
        server.shutdown()
        thread.join(5)
    with closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nobody listens there once it is closed
    rc, _, err = cli(*args, "--url", f"https://127.0.0.1:{port}/")
    assert (rc, err) == (
        1,
        f"smartshelf ledger: https://127.0.0.1:{port}/: nothing answers there (connection refused): is the hub"
        f" running, with [web] port = {port}?\n",
    )


def test_the_token_goes_only_to_url_never_through_a_proxy_or_a_redirect(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plain-HTTP loopback --url (allowed) with $http_proxy set: the request goes to --url itself, not the proxy;
    the hub's address answering a redirect is not followed (urllib would re-send the token as a GET to any host); an
    answer that is not the import report, and an empty token file, are one line each."""
    from werkzeug.serving import make_server

    seen: dict[str, list[str]] = {"url": [], "elsewhere": []}

    def answer(env: dict[str, Any], start: Any, status: str, body: bytes, *headers: tuple[str, str]) -> list[bytes]:
        env["wsgi.input"].read(int(env.get("CONTENT_LENGTH") or 0))  # the request read whole, the answer sized
        start(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body))), *headers])
        return [body]

    def elsewhere(env: dict[str, Any], start: Any) -> list[bytes]:
        seen["elsewhere"].append(f"{env['REQUEST_METHOD']} {env['PATH_INFO']} {env.get('HTTP_AUTHORIZATION')}")
        return answer(env, start, "200 OK", b'{"rows": 1, "applied": 1, "duplicates": 0}')

    other = make_server("127.0.0.1", 0, elsewhere, threaded=True)

    def hub_address(env: dict[str, Any], start: Any) -> list[bytes]:
        seen["url"].append(f"{env['REQUEST_METHOD']} {env['PATH_INFO']}")
        if str(env["QUERY_STRING"]).endswith("odd.csv"):
            return answer(env, start, "200 OK", b'{"hello": "world"}')
        return answer(env, start, "302 Found", b"", ("Location", f"http://127.0.0.1:{other.server_port}/steal"))

    server = make_server("127.0.0.1", 0, hub_address, threaded=True)
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in (server, other)]
    for t in threads:
        t.start()
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{other.server_port}")
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{other.server_port}")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    token = tmp_path / "token"
    token.write_text("ssk_secret\n")
    url = f"http://127.0.0.1:{server.server_port}/"
    try:
        for name in ("delivery.csv", "odd.csv"):
            (tmp_path / name).write_text(RECEIPTS)
        rc, out, err = cli("ledger", "import", "receipts", str(tmp_path / "delivery.csv"), "--url", url,
                           "--token-file", str(token))  # fmt: skip
        assert (rc, out) == (1, "") and err.count("\n") == 1, err
        assert f"answered HTTP 302 Found, a redirect to http://127.0.0.1:{other.server_port}/steal: not followed" in err
        rc, out, err = cli("ledger", "import", "receipts", str(tmp_path / "odd.csv"), "--url", url,
                           "--token-file", str(token))  # fmt: skip
        assert (rc, out) == (1, "") and "is not the hub's import report" in err and err.count("\n") == 1, err
        assert seen == {"url": ["POST /api/v1/imports/receipts"] * 2, "elsewhere": []}  # never the proxy, nor Location
        token.write_text("\n")
        rc, _, err = cli("ledger", "import", "receipts", str(tmp_path / "delivery.csv"), "--url", url,
                         "--token-file", str(token))  # fmt: skip
        assert (rc, err) == (
            2,
            f"smartshelf ledger: --token-file {token}: empty (it holds the token smartshelf api-clients add printed)\n",
        )
        assert len(seen["url"]) == 2  # nothing sent
    finally:
        for s in (server, other):
            s.shutdown()
        for t in threads:
            t.join(5)
