"""``[web]`` of ``hub.toml``: the status page and API as the hub serves them (hub/web/README.md, "Serving")."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from hub.config.checks import FileChecks, type_name, under
from hub.ledger.origin import is_loopback

__all__ = ["WEB_KEYS", "TlsMode", "WebConfig", "is_loopback", "parse_web"]

WEB_KEYS = (
    "host",
    "port",
    "tls",
    "certificate",
    "private_key",
    "http_port",
    "threads",
    "api_threads",
    "max_live_clients",
    "max_live_per_session",
    "max_live_per_user",
    "max_connections",
    "max_connections_per_client",
    "header_timeout_s",
    "body_timeout_s",
    "write_timeout_s",
)
TlsMode = Literal["auto", "off"]


@dataclass(frozen=True, slots=True)
class WebConfig:
    """The status page and API (hub/web/README.md), served over HTTPS by the hub process (hub/web/serving/)."""

    host: str = "127.0.0.1"
    port: int = 8443  # 0: any free port
    tls: TlsMode = "auto"  # auto: the operator's certificate if given, else a self-signed one; off: loopback only
    certificate: Path | None = None  # PEM chain (with private_key): the operator's own certificate
    private_key: Path | None = None  # PEM, mode 0600
    http_port: int | None = None  # with TLS: a plain-HTTP port that redirects pages to HTTPS (and refuses the rest)
    threads: int = 4  # worker threads for pages
    api_threads: int = 4  # worker threads kept for /api/ (pages and live streams never take them)
    max_live_clients: int = 64  # concurrent live-update streams (/events); more get 503
    max_live_per_session: int = 4  # streams one signed-in browser may hold
    max_live_per_user: int = 8  # streams one user may hold over all their sessions
    max_connections: int = 256  # open connections in all
    max_connections_per_client: int = 32  # open connections from one client address
    header_timeout_s: float = 10.0  # a request head (or a TLS handshake) not complete by then: dropped
    body_timeout_s: float = 30.0  # a request body not complete by then: 408
    write_timeout_s: float = 30.0  # a response the client does not read for this long: connection cut
    hub_config: Path | None = None  # the hub.toml this was read from (load_config): the page names it in commands


def parse_web(f: FileChecks, raw: Mapping[str, Any], base: Path) -> WebConfig:
    d = WebConfig()
    host = f.text("web.host", raw.get("host", d.host))
    tls = raw.get("tls", d.tls)
    if tls not in ("auto", "off"):
        raise f.fail("web.tls", f'must be "auto" or "off", not {type_name(tls)}')
    files = [raw.get(k) for k in ("certificate", "private_key")]
    if (files[0] is None) != (files[1] is None):
        raise f.fail("web.certificate", "give both certificate and private_key, or neither (a self-signed one)")
    cert = under(base, f.text("web.certificate", files[0])) if files[0] is not None else None
    key = under(base, f.text("web.private_key", files[1])) if files[1] is not None else None
    if tls == "off":
        if not is_loopback(host):
            raise f.fail(
                "web.tls",
                f'"off" on {host} would send passwords and API tokens in clear text over the network; '
                "plain HTTP is allowed only on a loopback host (127.0.0.1, ::1, localhost)",
            )
        if cert is not None or "http_port" in raw:
            raise f.fail("web.tls", '"off" serves no certificate and needs no http_port')
    http_port = raw.get("http_port")
    web = WebConfig(
        host=host,
        port=f.integer("web.port", raw.get("port", d.port), 0, 65535),
        tls="off" if tls == "off" else "auto",
        certificate=cert,
        private_key=key,
        http_port=f.integer("web.http_port", http_port, 0, 65535) if http_port is not None else None,
        threads=f.integer("web.threads", raw.get("threads", d.threads), 1, 64),
        api_threads=f.integer("web.api_threads", raw.get("api_threads", d.api_threads), 1, 64),
        max_live_clients=f.integer("web.max_live_clients", raw.get("max_live_clients", d.max_live_clients), 0, 512),
        max_live_per_session=f.integer(
            "web.max_live_per_session", raw.get("max_live_per_session", d.max_live_per_session), 1, 512
        ),
        max_live_per_user=f.integer("web.max_live_per_user", raw.get("max_live_per_user", d.max_live_per_user), 1, 512),
        max_connections=f.integer("web.max_connections", raw.get("max_connections", d.max_connections), 8, 65535),
        max_connections_per_client=f.integer(
            "web.max_connections_per_client",
            raw.get("max_connections_per_client", d.max_connections_per_client),
            1,
            65535,
        ),
        header_timeout_s=f.seconds("web.header_timeout_s", raw.get("header_timeout_s", d.header_timeout_s)),
        body_timeout_s=f.seconds("web.body_timeout_s", raw.get("body_timeout_s", d.body_timeout_s)),
        write_timeout_s=f.seconds("web.write_timeout_s", raw.get("write_timeout_s", d.write_timeout_s)),
    )
    if web.max_connections_per_client > web.max_connections:
        raise f.fail("web.max_connections_per_client", f"must not exceed max_connections ({web.max_connections})")
    if web.http_port is not None and web.http_port != 0 and web.http_port == web.port:
        raise f.fail("web.http_port", f"must differ from web.port ({web.port})")
    return web
