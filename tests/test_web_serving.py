"""The status page as the hub serves it (hub/web/serving/): HTTPS with the hub's own certificate, the plain-HTTP
redirect, and what a slow or hostile client on the store LAN can and cannot hold — over real sockets on loopback.

Hostile clients connect from other loopback addresses (127.0.0.2 and up: Linux routes all of 127/8 to lo), so the
per-address limits see them apart from the staff and the till on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import http.client
import http.cookiejar
import json
import logging
import re
import socket
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from hub.config import ConfigError, load_config
from hub.web.accounts.clients import add_client, new_token, token_sha256
from hub.web.accounts.users import end_sessions, set_disabled, set_role
from hub.web.headers import DATA_CSP
from hub.web.live import lane_feed as live
from hub.web.server import WebServer
from hub.web.serving.connections import Limits
from hub.web.serving.http_server import HttpServer, Listener, bind
from hub.web.serving.tls import (
    TlsError,
    TlsFiles,
    ensure_self_signed,
    fingerprint,
    host_names,
    self_signed_paths,
    server_context,
)
from hub.web.serving.wsgi_bridge import LARGE_BODIES, BodyLimit, Pools, WsgiBridge
from tests.web_support import PASSWORD, Env, EventStream

DEADLINE_S = 10.0


def _tls_files(env: Env) -> TlsFiles:
    files = self_signed_paths(env.db)
    ensure_self_signed(files, *host_names("127.0.0.1"))
    return files


def _client_tls(files: TlsFiles) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(files.certificate))


@contextmanager
def _serving(env: Env, **kwargs: Any) -> Iterator[WebServer]:
    web = WebServer.start(env.db, env.writer.ledger, env.writer.loop, host="127.0.0.1", port=0, **kwargs)
    try:
        yield web
    finally:
        asyncio.run(web.stop())


def _port(url: str) -> int:
    m = re.fullmatch(r"https?://127\.0\.0\.1:(\d+)/", url)
    assert m, url
    return int(m.group(1))


def _token(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match
    return match.group(1)


def _add_till(env: Env) -> str:
    token = new_token()
    env.write(lambda ledger: ledger.transact(lambda tx: add_client(tx, "till-1", token_sha256(token), ("sales",),
                                                                   actor="t")))  # fmt: skip
    return token


# --------------------------------------------------------------------------------------------------------- TLS


def test_login_and_acknowledge_over_https_with_the_hubs_own_certificate(env: Env) -> None:
    files = _tls_files(env)
    context = _client_tls(files)
    with _serving(env, tls=files) as web:
        assert web.url.startswith("https://127.0.0.1:") and web.fingerprint == fingerprint(files.certificate)
        # the certificate served is the one whose fingerprint staff are shown
        with (
            socket.create_connection(("127.0.0.1", _port(web.url)), timeout=DEADLINE_S) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls_sock,
        ):
            der = tls_sock.getpeercert(binary_form=True)
            assert der is not None and tls_sock.version() in ("TLSv1.2", "TLSv1.3")
        assert hashlib.sha256(der).hexdigest().upper() == web.fingerprint.replace(":", "")

        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(jar), urllib.request.HTTPSHandler(context=context)
        )
        with opener.open(web.url, timeout=DEADLINE_S) as resp:  # anonymous: the login page
            assert resp.url.startswith(web.url + "login")
            assert resp.headers["Strict-Transport-Security"].startswith("max-age=")
            login = resp.read().decode()
        data = urllib.parse.urlencode({"username": "clerk", "password": PASSWORD, "csrf_token": _token(login)})
        with opener.open(web.url + "login", data=data.encode(), timeout=DEADLINE_S) as resp:
            overview = resp.read().decode()
        assert 'id="lane-A1"' in overview
        session = [c for c in jar if c.name == "smartshelf_session"]
        assert session and session[0].secure  # the session cookie never goes back over plain HTTP
        (alert,) = env.sql("SELECT id FROM alerts WHERE cause_key = 'lane:A1/COLA'")[0]
        data = urllib.parse.urlencode({"csrf_token": _token(overview)})
        with opener.open(f"{web.url}alerts/{alert}/acknowledge", data=data.encode(), timeout=DEADLINE_S) as resp:
            assert f"Alert {alert} acknowledged." in resp.read().decode()
        assert env.sql("SELECT status, acknowledged_by FROM alerts WHERE id = ?", (alert,)) == [
            ("acknowledged", "web:clerk")
        ]
        # a client that does not trust the certificate gets nowhere (no silent downgrade)
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
            urllib.request.urlopen(web.url + "login", timeout=DEADLINE_S)


def test_the_plain_http_port_redirects_pages_and_refuses_credentials(env: Env) -> None:
    files = _tls_files(env)
    token = _add_till(env)
    with _serving(env, tls=files, http_port=0) as web:
        assert web.redirect_url is not None
        plain = _port(web.redirect_url.replace("http://", "https://"))
        https = _port(web.url)

        def ask(method: str, path: str, headers: dict[str, str] | None = None, body: bytes | None = None) -> Any:
            conn = http.client.HTTPConnection("127.0.0.1", plain, timeout=DEADLINE_S)
            try:
                conn.request(method, path, body=body, headers=headers or {})
                resp = conn.getresponse()
                return resp.status, resp.getheader("Location"), resp.read().decode()
            finally:
                conn.close()

        status, location, _ = ask("GET", "/alerts?status=open")
        assert status == 308 and location == f"https://127.0.0.1:{https}/alerts?status=open"
        conn = http.client.HTTPConnection("127.0.0.1", plain, timeout=DEADLINE_S)
        conn.request("GET", "/")
        headers = conn.getresponse().headers
        conn.close()
        assert headers["Content-Security-Policy"] == DATA_CSP and headers["X-Frame-Options"] == "DENY"
        assert headers["X-Content-Type-Options"] == "nosniff" and headers["Cache-Control"] == "no-store"
        form = urllib.parse.urlencode({"username": "clerk", "password": PASSWORD}).encode()
        status, location, text = ask("POST", "/login", {"Content-Type": "application/x-www-form-urlencoded"}, form)
        assert status == 403 and location is None and "HTTPS only" in text
        sale = json.dumps({"items": [{"id": "s-1", "sku": "COLA", "quantity": 1}]}).encode()
        bearer = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        assert ask("POST", "/api/v1/sales", bearer, sale)[0] == 403
        assert ask("GET", "/api/v1/stock", {"Authorization": f"Bearer {token}"})[0] == 403
        assert ask("GET", "/api/v1/stock")[0] == 403  # an API path is never redirected either
    assert env.sql("SELECT COUNT(*) FROM movements WHERE source_ref LIKE '%s-1%'") == [(0,)]


def test_plain_http_is_only_for_loopback(env: Env, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="clear text"):
        WebServer.start(env.db, env.writer.ledger, env.writer.loop, host="0.0.0.0", port=0)
    path = tmp_path / "hub.toml"
    path.write_text('[web]\nhost = "0.0.0.0"\ntls = "off"\n')
    with pytest.raises(ConfigError, match=r"web\.tls: .*clear text"):
        load_config(path)
    path.write_text('[web]\nhost = "::1"\ntls = "off"\n')
    web = load_config(path).web
    assert web is not None and web.tls == "off"


def test_the_self_signed_certificate_names_the_hub_and_its_key_is_private(env: Env) -> None:
    files = self_signed_paths(env.db)
    names, addresses = host_names("127.0.0.1")
    assert ensure_self_signed(files, names, addresses)
    assert files.private_key.stat().st_mode & 0o777 == 0o600
    assert files.private_key.parent.stat().st_mode & 0o777 == 0o700
    cert = x509.load_pem_x509_certificate(files.certificate.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert socket.gethostname().lower() in san.get_values_for_type(x509.DNSName)
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert {str(ip) for ip in san.get_values_for_type(x509.IPAddress)} >= {"127.0.0.1", "::1"}
    before = files.certificate.read_bytes()
    assert not ensure_self_signed(files, names, addresses)  # kept across restarts: staff checked it once
    assert files.certificate.read_bytes() == before
    assert not ensure_self_signed(files, names, ["192.0.2.7"])  # a new DHCP address alone changes nothing
    assert ensure_self_signed(files, [*names, "till-room-hub"], addresses)  # renamed: a new one that names it
    assert files.certificate.read_bytes() != before


def test_an_operator_key_readable_by_others_is_refused(env: Env, tmp_path: Path) -> None:
    generated = _tls_files(env)
    key = tmp_path / "shop.key"
    key.write_bytes(generated.private_key.read_bytes())
    key.chmod(0o644)
    with pytest.raises(TlsError, match=rf"{re.escape(str(key))}: .*readable by other users .*chmod 600"):
        server_context(TlsFiles(generated.certificate, key, generated=False))
    key.chmod(0o600)
    server_context(TlsFiles(generated.certificate, key, generated=False))


# -------------------------------------------------------------------------------------------- hostile clients


def _from(address: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((address, 0))
    sock.settimeout(DEADLINE_S)
    with contextlib.suppress(ConnectionResetError):  # refused at accept (over a limit) before connect() returned
        sock.connect(("127.0.0.1", port))
    return sock


def _closed_by_server(sock: socket.socket, within_s: float) -> bool:
    """Did the server close ``sock`` (EOF or reset) within ``within_s``? (Anything it sent first is skipped.)"""
    sock.settimeout(0.2)
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            if sock.recv(4096) == b"":
                return True
        except TimeoutError:
            continue
        except OSError:
            return True
    return False


def _sale(url: str, token: str, ref: str) -> int:
    body = json.dumps({"items": [{"id": ref, "sku": "COLA", "quantity": 1}]}).encode()
    request = urllib.request.Request(
        url + "api/v1/sales",
        data=body,
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=DEADLINE_S) as resp:
        return int(resp.status)


def test_half_sent_requests_cannot_lock_out_the_login_page_or_the_tills(env: Env) -> None:
    """120 connections that send half a request and then a byte a second: what locked everyone out under waitress."""
    token = _add_till(env)
    limits = Limits(max_per_client=32, max_connections=256, header_timeout_s=6.0)
    with _serving(env, limits=limits) as web:
        port = _port(web.url)
        one_address = [_from("127.0.0.2", port) for _ in range(60)]
        many_addresses = [_from(f"127.0.1.{i % 30 + 1}", port) for i in range(60)]
        hostile = one_address + many_addresses
        for sock in hostile:
            with contextlib.suppress(OSError):
                sock.sendall(b"GET / HTTP/1.1\r\nHost: hub\r\nX-Slow: ")
        deadline = time.monotonic() + DEADLINE_S
        while web.connections.refused < 28 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert web.connections.from_host("127.0.0.2") == 32  # the rest of its 60 were closed at once
        assert web.connections.refused == 28

        stop = threading.Event()

        def trickle() -> None:  # a byte a second keeps no connection alive past the header deadline
            while not stop.wait(0.5):
                for sock in hostile:
                    with contextlib.suppress(OSError):
                        sock.send(b"a")

        dribbler = threading.Thread(target=trickle, daemon=True)
        dribbler.start()
        try:
            with urllib.request.urlopen(web.url + "login", timeout=DEADLINE_S) as resp:
                assert resp.status == 200
            assert _sale(web.url, token, "till-1-0001") in (200, 201)
            # ... served while every hostile connection the limits let in was still held open
            assert web.connections.from_host("127.0.0.2") == 32 and len(web.connections) >= 32 + 60
            # every half-sent request is dropped by the header deadline, however it trickles
            assert all(_closed_by_server(sock, within_s=limits.header_timeout_s + 3.0) for sock in hostile)
        finally:
            stop.set()
            dribbler.join(5)
            for sock in hostile:
                sock.close()
        deadline = time.monotonic() + DEADLINE_S
        while web.connections.from_host("127.0.0.2") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert web.connections.from_host("127.0.0.2") == 0
    assert env.sql("SELECT COUNT(*) FROM movements WHERE source_ref LIKE '%till-1-0001%'")[0][0] >= 1


def test_a_slow_or_oversized_body_holds_no_thread_and_gets_a_clear_answer(env: Env) -> None:
    with _serving(env, limits=Limits(body_timeout_s=1.0)) as web:
        port = _port(web.url)
        with closing(_from("127.0.0.3", port)) as sock:
            sock.sendall(b"POST /login HTTP/1.1\r\nHost: hub\r\nContent-Length: 100\r\n\r\nusername=")
            answer = sock.recv(4096).decode()
            assert answer.startswith("HTTP/1.1 408")
        with closing(_from("127.0.0.3", port)) as sock:
            sock.sendall(b"POST /login HTTP/1.1\r\nHost: hub\r\nContent-Length: 99999999\r\n\r\n")
            assert sock.recv(4096).decode().startswith("HTTP/1.1 413")


def _api_post(
    url: str, path: str, token: str, body: bytes, content_type: str, context: ssl.SSLContext
) -> tuple[int, str, dict[str, Any]]:
    """A POST as a till or ``ledger import --url`` sends it: the whole body, then the answer is read."""
    request = urllib.request.Request(url + path.lstrip("/"), data=body, method="POST", headers={
        "Authorization": f"Bearer {token}", "Content-Type": content_type})  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=DEADLINE_S * 3, context=context) as resp:
            return resp.status, resp.headers["Content-Type"], json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], json.loads(exc.read())


def test_the_api_takes_the_bodies_it_documents_over_the_real_server(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    """Found by the API fuzzer (tests/test_web_api_fuzz.py): the server refused every body over the pages' 64 KiB with
    a plain-text 413, so a batch of 1000 items or a CSV file of a few thousand rows never reached the API; and a
    client that sent a body over a limit whole got a reset (or a broken TLS close, logged as an error), not the 413."""
    token = new_token()
    env.write(lambda ledger: ledger.transact(lambda tx: add_client(tx, "wms", token_sha256(token), ("receipts",),
                                                                   actor="t")))  # fmt: skip
    stamp = "2025-11-27T14:03:00+01:00"
    items = [{"id": f"delivery-7-line-{i:04d}", "sku": "COLA", "quantity": 1, "timestamp": stamp} for i in range(1000)]
    batch = json.dumps({"items": items}).encode()
    rows = "".join(f"csv-delivery-line-{i:05d},{stamp},TEA,2\n" for i in range(3000))
    csv_file = f"id,timestamp,sku,quantity\n{rows}".encode()
    assert len(batch) > 64 * 1024 and len(csv_file) > 64 * 1024
    files = _tls_files(env)
    context = _client_tls(files)
    with _serving(env, tls=files) as web:
        status, _, answer = _api_post(web.url, "/api/v1/receipts", token, batch, "application/json", context)
        assert status == 201 and len(answer["items"]) == 1000
        status, _, answer = _api_post(web.url, "/api/v1/imports/receipts", token, csv_file, "text/csv", context)
        assert (status, answer["rows"], answer["applied"]) == (201, 3000, 3000)
        # beyond the API's own limits: its JSON error, as documented (not the server's plain text), read by a client
        # that sent it all
        for path, size, says in [("/api/v1/receipts", 1024 * 1024 + 1, "send fewer items"),
                                 ("/api/v1/imports/receipts", 3_000_001, "split it")]:  # fmt: skip
            status, content_type, answer = _api_post(web.url, path, token, b"x" * size, "text/csv", context)
            assert (status, content_type) == (413, "application/json")
            assert says in answer["errors"][0]["message"]
        # a page still takes no more than 64 KiB
        request = urllib.request.Request(web.url + "login", data=b"x" * (64 * 1024 + 1), method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=DEADLINE_S, context=context)
        assert refused.value.code == 413
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    assert env.sql("SELECT COUNT(*) FROM movements WHERE actor = 'api:wms'") == [(4000,)]


def _streaming_app(produced: threading.Event, closed: threading.Event, gate: threading.Event) -> Any:
    chunk = b"x" * 65536

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        path = environ["PATH_INFO"]
        if path == "/slow":
            gate.wait(DEADLINE_S)
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"slow\n"]
        if path.startswith("/api/"):
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"api\n"]
        start_response("200 OK", [("Content-Type", "application/octet-stream")])

        def body() -> Iterator[bytes]:
            try:
                while True:
                    produced.set()
                    yield chunk
            finally:
                closed.set()

        return body()

    return app


@contextmanager
def _bridge_server(
    limits: Limits, threads: int = 2, larger: Callable[[str], BodyLimit | None] | None = None
) -> Iterator[tuple[HttpServer, Pools, int, threading.Event, threading.Event, threading.Event]]:
    produced, closed, gate = threading.Event(), threading.Event(), threading.Event()
    pools = Pools.create(threads, 1, 2)
    sock = bind("127.0.0.1", 0)
    listeners: list[Listener] = []
    server = HttpServer(listeners, limits)
    listeners.append(Listener(sock, WsgiBridge(_streaming_app(produced, closed, gate), pools, server.connections,
                                               max_body=1024, larger=larger), None))  # fmt: skip
    server.start()
    try:
        yield server, pools, listeners[0].address[1], produced, closed, gate
    finally:
        gate.set()
        server.stop(grace_s=0.5)
        pools.shutdown()


def test_a_client_that_stops_reading_is_cut_after_the_write_timeout() -> None:
    with _bridge_server(Limits(write_timeout_s=1.0)) as (server, _, port, produced, closed, _gate):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.bind(("127.0.0.4", 0))
        sock.connect(("127.0.0.1", port))
        try:
            sock.sendall(b"GET /stream HTTP/1.1\r\nHost: hub\r\n\r\n")  # and never reads a byte
            assert produced.wait(DEADLINE_S)
            # the kernel's buffers fill, the write waits, the deadline cuts the connection and frees the thread
            assert closed.wait(DEADLINE_S), "the response's iterator was never closed: its thread is held"
            assert server.connections.cut == 1
            deadline = time.monotonic() + DEADLINE_S
            while server.connections.from_host("127.0.0.4") and time.monotonic() < deadline:
                time.sleep(0.05)
            assert server.connections.from_host("127.0.0.4") == 0
        finally:
            sock.close()


def test_bodies_beyond_the_pages_limit_are_read_a_few_at_a_time() -> None:
    """However many connections send the API's larger bodies, at most LARGE_BODIES of them are held in memory."""
    larger = BodyLimit(8192, b'{"errors": []}')
    with _bridge_server(Limits(), larger=lambda path: larger if path.startswith("/api/") else None) as (_, _, port,
                                                                                                       *_):  # fmt: skip
        head = b"POST /api/v1/imports/sales HTTP/1.1\r\nHost: hub\r\nContent-Length: 5000\r\n\r\n"
        held = [_from(f"127.0.0.{10 + i}", port) for i in range(LARGE_BODIES)]
        for sock in held:
            sock.sendall(head + b"x" * 100)  # each takes a slot and trickles
        waiting = _from("127.0.0.20", port)
        waiting.sendall(head + b"x" * 5000)
        waiting.settimeout(0.5)
        with pytest.raises(TimeoutError):
            waiting.recv(4096)  # complete, but every slot is taken: not read yet
        small = http.client.HTTPConnection("127.0.0.1", port, timeout=DEADLINE_S)  # within the pages' limit: no slot
        small.request("POST", "/api/v1/sales", body=b"x" * 1000)
        assert small.getresponse().read() == b"api\n"
        held[0].sendall(b"x" * 4900)  # one completes and frees its slot
        assert held[0].recv(4096).startswith(b"HTTP/1.1 200")
        waiting.settimeout(DEADLINE_S)
        assert waiting.recv(4096).startswith(b"HTTP/1.1 200")
        over = _from("127.0.0.21", port)
        over.sendall(b"POST /api/v1/sales HTTP/1.1\r\nHost: hub\r\nContent-Length: 8193\r\n\r\n" + b"x" * 8193)
        answer = b"".join(iter(lambda: over.recv(4096), b""))  # to the close
        assert answer.startswith(b"HTTP/1.1 413") and b"content-type: application/json" in answer
        assert answer.endswith(b'{"errors": []}')
        for sock in [*held, waiting, over]:
            sock.close()
        small.close()


def test_a_response_in_parts_does_not_wait_for_the_clients_delayed_ack() -> None:
    """Found by timing the API fuzzer (tests/test_web_api_fuzz.py): every request took 40+ ms, because the accepted
    sockets lacked TCP_NODELAY (asyncio sets it only on sockets made with proto IPPROTO_TCP): a response's body,
    written after its head, waited for the client's delayed ACK of the head."""
    with _bridge_server(Limits()) as (_, _, port, *_):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=DEADLINE_S)
        times = []
        for _ in range(21):
            started = time.monotonic()
            conn.request("GET", "/api/v1/lanes")  # head, body and end: three writes
            assert conn.getresponse().read() == b"api\n"
            times.append(time.monotonic() - started)
        conn.close()
        assert sorted(times)[10] < 0.03, times  # the median, well below Linux's 40 ms delayed ACK


def test_api_requests_have_threads_pages_cannot_take() -> None:
    with _bridge_server(Limits(), threads=2) as (_, _, port, _, _, gate):
        slow = [http.client.HTTPConnection("127.0.0.1", port, timeout=DEADLINE_S) for _ in range(4)]
        for conn in slow:
            conn.request("GET", "/slow")  # two run and block, two wait for a page thread
        time.sleep(0.3)
        api = http.client.HTTPConnection("127.0.0.1", port, timeout=DEADLINE_S)
        started = time.monotonic()
        api.request("GET", "/api/v1/stock")
        resp = api.getresponse()
        assert resp.status == 200 and resp.read() == b"api\n" and time.monotonic() - started < 2.0
        gate.set()
        for conn in slow:
            assert conn.getresponse().read() == b"slow\n"
            conn.close()
        api.close()


# ------------------------------------------------------------------------------------------------ live streams


def _cookie(web: WebServer, user: str, env: Env, sid: str) -> str:
    serializer = web.app.session_interface.get_signing_serializer(web.app)  # type: ignore[attr-defined]
    assert serializer is not None
    epoch = env.sql("SELECT session_epoch FROM users WHERE username = ?", (user,))[0][0]
    return f"smartshelf_session={serializer.dumps({'user': user, 'epoch': epoch, 'sid': sid})}"


@pytest.mark.parametrize("change", ["disabled", "demoted", "signed out"])
def test_an_open_stream_ends_within_seconds_when_its_session_no_longer_stands(env: Env, change: str) -> None:
    with _serving(env, live={"LIVE_RECHECK_S": 0.3, "LIVE_HEARTBEAT_S": 60.0}) as web:
        stream = EventStream(_port(web.url), _cookie(web, "clerk", env, "s1"), DEADLINE_S)
        assert stream.resp.status == 200 and stream.next_event() == "snapshot"
        if change == "disabled":
            env.write(lambda ledger: ledger.transact(lambda tx: set_disabled(tx, "clerk", True, actor="web:admin")))
        elif change == "demoted":
            env.write(lambda ledger: ledger.transact(lambda tx: set_role(tx, "clerk", "viewer", actor="web:admin")))
        else:
            env.write(lambda ledger: ledger.transact(lambda tx: end_sessions(tx, "clerk", actor="web:clerk",
                                                                             why="logout")))  # fmt: skip
        started = time.monotonic()
        assert stream.next_event() == "signed-out"
        assert stream.next_event() is None and time.monotonic() - started < 3.0
        deadline = time.monotonic() + DEADLINE_S
        while live.feed(web.app).subscribers and time.monotonic() < deadline:
            time.sleep(0.05)
        assert live.feed(web.app).subscribers == 0
        stream.conn.close()


def test_one_session_or_user_cannot_take_every_live_stream(env: Env) -> None:
    settings = {"LIVE_MAX_PER_SESSION": 2, "LIVE_MAX_PER_USER": 3}
    with _serving(env, max_live_clients=10, live=settings) as web:
        port = _port(web.url)
        first, second = _cookie(web, "viewer", env, "browser-1"), _cookie(web, "viewer", env, "browser-2")
        held = [EventStream(port, first, DEADLINE_S), EventStream(port, first, DEADLINE_S)]
        assert [s.resp.status for s in held] == [200, 200]
        refused = EventStream(port, first, DEADLINE_S)
        assert refused.resp.status == 503 and "this browser already holds 2" in refused.resp.read().decode()
        held.append(EventStream(port, second, DEADLINE_S))
        assert held[-1].resp.status == 200
        refused = EventStream(port, second, DEADLINE_S)
        assert refused.resp.status == 503 and "viewer already holds 3" in refused.resp.read().decode()
        other = EventStream(port, _cookie(web, "clerk", env, "browser-3"), DEADLINE_S)  # another user still gets one
        assert other.resp.status == 200
        for stream in [*held, other]:
            stream.conn.close()


def test_hub_config_limits_reach_the_server(tmp_path: Path) -> None:
    path = tmp_path / "hub.toml"
    path.write_text(
        "[web]\nmax_connections = 100\nmax_connections_per_client = 10\nheader_timeout_s = 5\nwrite_timeout_s = 7\n"
        "max_live_per_session = 2\nmax_live_per_user = 5\napi_threads = 3\nhttp_port = 8080\n"
    )
    web = load_config(path).web
    assert web is not None
    assert (web.max_connections, web.max_connections_per_client, web.header_timeout_s, web.write_timeout_s) == (
        100, 10, 5.0, 7.0,
    )  # fmt: skip
    assert (web.max_live_per_session, web.max_live_per_user, web.api_threads, web.http_port) == (2, 5, 3, 8080)
    for bad, setting in (
        ("max_connections_per_client = 300\n", "web.max_connections_per_client"),
        ('certificate = "c.pem"\n', "web.certificate"),
        ("http_port = 8443\n", "web.http_port"),
        ('tls = "maybe"\n', "web.tls"),
    ):
        path.write_text("[web]\n" + bad)
        with pytest.raises(ConfigError, match=re.escape(setting)):
            load_config(path)


def test_a_port_in_use_is_named_with_its_setting() -> None:
    taken = bind("127.0.0.1", 0)
    try:
        port = taken.getsockname()[1]
        with pytest.raises(OSError) as err:
            bind("127.0.0.1", port, setting="web.port")
        assert err.value.errno == errno.EADDRINUSE
        assert f"cannot listen on 127.0.0.1:{port} (web.port): Address already in use" in str(err.value)
    finally:
        taken.close()
