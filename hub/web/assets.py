"""The page's own scripts and stylesheets: ``GET /static/<name>`` serves the files of ``hub/web/static/``.

The Content-Security-Policy of the pages (``headers.py``) runs no inline script or style, so every page links its
stylesheet (``base.css`` and one per page) and the overview its script (``overview.js``) from here. Templates name
them with ``asset_url(name)``: ``/static/<name>?v=<digest>``, the first 16 hex digits of the file's SHA-256, so a
browser may keep it for a year (``immutable``) and a changed file gets a new URL. A request with another version,
or none, is answered too, but revalidated every time (``no-cache``, ETag: 304 while unchanged). Only ``*.css`` and
``*.js`` directly in the folder are served, with their own types (``text/css``, ``text/javascript``, UTF-8).
Public: the login page needs its stylesheet before anyone signs in, and nothing here is the store's data.

The files are package data (pyproject.toml), like the templates, so an installed hub serves them.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

from flask import Blueprint, Flask, Response, abort, request, url_for

from hub.web.access import public

bp = Blueprint("assets", __name__)

FOLDER = Path(__file__).resolve().parent / "static"
TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}
VERSIONED = "public, max-age=31536000, immutable"  # the URL changes when the file does
UNVERSIONED = "no-cache"  # stored, but asked again (a 304 while the ETag matches)


class _Asset:
    __slots__ = ("body", "digest", "stamp")

    def __init__(self, body: bytes, stamp: tuple[int, int]) -> None:
        self.body = body
        self.digest = hashlib.sha256(body).hexdigest()[:16]
        self.stamp = stamp


_cache: dict[str, _Asset] = {}
_lock = threading.Lock()


def load(name: str) -> _Asset | None:
    """The file ``name`` of the folder (read again when it changed on disk), or None: not there, not a served type,
    or not directly in the folder."""
    if Path(name).suffix not in TYPES or "/" in name or "\\" in name or name.startswith("."):
        return None
    path = FOLDER / name
    try:
        st = path.stat()
    except OSError:
        return None
    stamp = (st.st_mtime_ns, st.st_size)
    found = _cache.get(name)
    if found is not None and found.stamp == stamp:
        return found
    try:
        body = path.read_bytes()
    except OSError:
        return None
    with _lock:
        _cache[name] = found = _Asset(body, stamp)
    return found


def asset_url(name: str) -> str:
    """For templates: the asset's URL with its version (a missing asset is an error: the page would be broken)."""
    found = load(name)
    if found is None:
        raise LookupError(f"hub/web/static/{name}: no such asset")
    return url_for("assets.asset", name=name, v=found.digest)


@bp.get("/static/<name>")
@public
def asset(name: str) -> Response:
    found = load(name)
    if found is None:
        abort(404)
    resp = Response(found.body, content_type=TYPES[Path(name).suffix])
    resp.set_etag(found.digest)
    resp.headers["Cache-Control"] = VERSIONED if request.args.get("v") == found.digest else UNVERSIONED
    resp.make_conditional(request)  # in place: 304 while the ETag matches
    return resp


def install(app: Flask) -> None:
    app.register_blueprint(bp)
    app.jinja_env.globals["asset_url"] = asset_url
