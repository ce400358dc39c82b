"""Security headers on every response: pages, redirects, error pages (4xx, 5xx), the API, the live stream, the CSV
exports and the assets.

``install(app)`` adds them in an ``after_request`` hook (which also runs for an error page and for the 500 of an
unhandled exception) and serves the page's own scripts and stylesheets (``assets.py``), the only ones the policy
lets a page load:

* ``Content-Security-Policy``: an HTML response gets ``PAGE_CSP``: scripts, styles and images from the hub itself,
  no inline script or style (no ``'unsafe-inline'``, no ``'unsafe-eval'``: an injected ``<script>``, ``onclick=``
  or ``style=`` does nothing), the live feed (``EventSource``) from the hub only, forms posting to the hub only, no
  ``<base>``, no plugins, never inside a frame. Anything else (JSON, CSV, the event stream, plain text, the assets)
  gets ``DATA_CSP``: nothing loads, no frame;
* ``X-Content-Type-Options: nosniff`` (a JSON or CSV body is never run as a script or shown as a page),
  ``X-Frame-Options: DENY`` (frame denial for browsers without ``frame-ancestors``), ``Referrer-Policy:
  same-origin`` (a page's URL, with its filters and lane ids, never goes to another site; the hub's own forms keep
  an honest ``Origin``), ``Cross-Origin-Opener-Policy`` and ``Cross-Origin-Resource-Policy: same-origin`` (no
  other site's window holds a handle on a page, nor embeds a response);
* ``Cache-Control: no-store`` on every response but the assets: every page shows stock, alerts, users or tokens,
  the login page carries the session's CSRF token, and the API answers with the store's data, so none of it is kept
  by a browser or a proxy (a stream's or page's own ``no-store`` stays as it is). The assets keep their own
  (``assets.py``: a year for a versioned URL);
* ``Strict-Transport-Security: max-age=31536000`` when ``app.config["TLS_ENABLED"]`` (the hub serves HTTPS).
"""

from __future__ import annotations

from flask import Flask, current_app, request
from werkzeug.wrappers.response import Response

from hub.web import assets

PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self';"
    " form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
DATA_CSP = "default-src 'none'; frame-ancestors 'none'"
COMMON = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
NO_STORE = "no-store"
HSTS = "max-age=31536000"  # a year; no includeSubDomains: the hub does not speak for its domain's other hosts


def secure(response: Response) -> Response:
    headers = response.headers
    headers["Content-Security-Policy"] = PAGE_CSP if response.mimetype == "text/html" else DATA_CSP
    for name, value in COMMON.items():
        headers[name] = value
    if not (request.blueprint == assets.bp.name and response.status_code in (200, 304)):  # not an asset itself
        cache = headers.get("Cache-Control", "")
        if NO_STORE not in {d.strip().lower() for d in cache.split(",")}:
            headers["Cache-Control"] = NO_STORE
    if current_app.config.get("TLS_ENABLED"):
        headers["Strict-Transport-Security"] = HSTS
    return response


def install(app: Flask) -> None:
    """Before ``access.install``: the assets' endpoint declares its rule (public) like every other."""
    assets.install(app)
    app.after_request(secure)
