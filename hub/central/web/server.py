"""Serving the central page and API: the hub's serving layer (``hub.web.serving``: hypercorn's HTTP/1.1 on accept
loops of our own, admission per client address, header / body / write deadlines, TLS by the standard library, the
plain-HTTP port that only redirects) around ``create_central_app``, with PostgreSQL on a loop thread of its own
(``pg.Database``: one pooled connection per worker thread).

``CentralWebServer.start(cfg)`` connects, checks the schema (``central migrate`` first), builds the app, binds and
serves; ``stop()`` stops serving and closes the pool. ``smartshelf central serve`` runs it until SIGINT / SIGTERM,
pruning old sign-in attempts every ``PRUNE_INTERVAL_S``.
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass

from hub.central.schema import check_current
from hub.central.web.accounts import prune_login_attempts
from hub.central.web.app import create_central_app
from hub.central.web.config import CentralWebConfig
from hub.central.web.pg import Database
from hub.config.web import is_loopback
from hub.ledger.models import now_ms
from hub.web.accounts.users import LOGIN_ATTEMPTS_RETENTION_MS
from hub.web.serving.connections import Limits
from hub.web.serving.http_server import HttpServer, Listener, bind
from hub.web.serving.plain_http import RedirectToHttps
from hub.web.serving.tls import TlsFiles, ensure_self_signed, fingerprint, host_names, self_signed_paths, server_context
from hub.web.serving.wsgi_bridge import Pools, WsgiBridge

log = logging.getLogger("hub.central.web")


def tls_files(cfg: CentralWebConfig) -> TlsFiles | None:
    """The operator's certificate, or a self-signed one (generated on first start); None with ``tls = "off"``."""
    web = cfg.web
    if web.tls == "off":
        return None
    if web.certificate is not None and web.private_key is not None:
        return TlsFiles(web.certificate, web.private_key, generated=False)
    files = self_signed_paths(cfg.self_signed_base)
    names, addresses = host_names(web.host)
    if ensure_self_signed(files, names, addresses):
        log.info("central web: generated a self-signed certificate %s", files.certificate)
    return files


@dataclass
class CentralWebServer:
    server: HttpServer
    pools: Pools
    database: Database
    url: str
    fingerprint: str | None = None
    redirect_url: str | None = None

    @classmethod
    def start(cls, cfg: CentralWebConfig, database: Database | None = None) -> CentralWebServer:
        """``database``: an already started one (tests), else one is started from ``[database]`` (and closed by
        ``stop``). Raises ``SchemaError`` for a database not at this smartshelf's schema."""
        web = cfg.web
        tls = tls_files(cfg)
        if tls is None and not is_loopback(web.host):
            raise ValueError(f"central web: plain HTTP on {web.host} would send passwords and tokens in clear text")
        context = server_context(tls) if tls is not None else None
        db = database or Database.start(cfg.central.database, max_size=web.threads + web.api_threads)
        sockets: list[socket.socket] = []
        pools = Pools.create(web.threads, 0, web.api_threads)
        try:
            db.run(check_current)
            app = create_central_app(
                db,
                config={"TLS_ENABLED": tls is not None, "SESSION_COOKIE_SECURE": tls is not None},
                offline_after_ms=int(cfg.offline_after_s * 1000),
            )
            limits = Limits(
                max_connections=web.max_connections,
                max_per_client=web.max_connections_per_client,
                handshake_timeout_s=web.header_timeout_s,
                header_timeout_s=web.header_timeout_s,
                body_timeout_s=web.body_timeout_s,
                write_timeout_s=web.write_timeout_s,
            )
            main = bind(web.host, web.port, setting="web.port")
            sockets.append(main)
            listeners: list[Listener] = []
            server = HttpServer(listeners, limits)
            bridge = WsgiBridge(app, pools, server.connections, max_body=int(app.config["MAX_CONTENT_LENGTH"]))
            listeners.append(Listener(main, bridge, context))
            redirect_url = None
            if tls is not None and web.http_port is not None:
                plain = bind(web.host, web.http_port, setting="web.http_port")
                sockets.append(plain)
                listeners.append(Listener(plain, RedirectToHttps(listeners[0].address[1]), None))
                redirect_url = _url("http", *listeners[1].address)
            server.start()
        except BaseException:
            for sock in sockets:
                sock.close()
            pools.shutdown()
            if database is None:
                db.close()
            raise
        url = _url("https" if tls is not None else "http", *listeners[0].address)
        return cls(server, pools, db, url, fingerprint(tls.certificate) if tls else None, redirect_url)

    def prune(self) -> int:
        """Delete sign-in attempts older than the hub's retention (each user's last success stays)."""
        before = now_ms() - LOGIN_ATTEMPTS_RETENTION_MS
        return self.database.run(lambda conn: prune_login_attempts(conn, before))

    def stop(self, *, close_database: bool = True) -> None:
        self.server.stop()
        self.pools.shutdown()
        if close_database:
            self.database.close()


def _url(scheme: str, host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}:{port}/"
