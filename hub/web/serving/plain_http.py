"""The plain-HTTP port when the page is served over TLS (``[web] http_port``): it only sends people to HTTPS.

A ``GET``/``HEAD`` of a page is redirected (308) to the same path on the HTTPS port. Anything that may carry a
secret is refused, not redirected, so a misconfigured till learns at once instead of silently sending its token in
clear text on every request: a request with an ``Authorization`` header, any ``/api/`` request, any method other
than GET/HEAD (a login form's password). Nothing here reaches the app or the ledger.
"""

from __future__ import annotations

from typing import Any

from hub.web.serving.wsgi_bridge import Receive, Send, _plain


class RedirectToHttps:
    """An ASGI application (hypercorn's app-wrapper signature)."""

    def __init__(self, https_port: int) -> None:
        self.https_port = https_port

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send, *_: Any) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                await send({"type": "websocket.close"})
            return
        headers = {name.lower(): value for name, value in scope.get("headers", ())}
        path: str = scope["path"]
        refuse = (
            b"authorization" in headers
            or scope["method"] not in ("GET", "HEAD")
            or path == "/api"
            or path.startswith("/api/")
        )
        if refuse:
            await _plain(
                403,
                "This hub takes credentials and API calls over HTTPS only: nothing was done. "
                f"Use https://<hub>:{self.https_port}{path} (and a new token if one was just sent here).\n",
                send,
            )
            return
        host = _host_without_port(headers.get(b"host", b"").decode("latin-1"))
        if not host:
            await _plain(400, "Missing Host header.\n", send)
            return
        raw = scope.get("raw_path") or path.encode()
        query = scope.get("query_string", b"")
        target = raw.decode("latin-1") + (("?" + query.decode("latin-1")) if query else "")
        port = "" if self.https_port == 443 else f":{self.https_port}"
        location = f"https://{host}{port}{target}"
        await _plain(308, f"Moved to {location}\n", send, [(b"location", location.encode("latin-1"))])


def _host_without_port(host: str) -> str:
    host = host.strip()
    if host.startswith("["):  # [v6]:port
        end = host.find("]")
        return host[: end + 1] if end > 0 else ""
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    if any(c in name for c in "/\\@?#\r\n \t") or not name:
        return ""
    return name
