"""The API's errors: JSON everywhere under ``/api/`` (``{"errors": [{"field": ..., "message": ...}]}``), including
404 / 405 / 413 raised before a view runs, and the honest 503 for a write the ledger did not confirm."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from flask import current_app, jsonify, request
from flask.blueprints import BlueprintSetupState
from flask.sansio.app import App
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers.response import Response

from hub.web.api.fields import MAX_BODY_BYTES, MAX_CSV_BYTES, MAX_IMPORT_ROWS, PREFIX


@dataclass(frozen=True)
class FieldError:
    field: str
    message: str
    index: int | None = None  # the item, in a post

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"field": self.field, "message": self.message}
        if self.index is not None:
            out["index"] = self.index
        return out


def error_response(status: int, errors: Sequence[FieldError], headers: Mapping[str, str] | None = None) -> Response:
    resp = jsonify(errors=[e.as_json() for e in errors])
    resp.status_code = status
    for name, value in (headers or {}).items():
        resp.headers[name] = value
    return resp


class Rejected(Exception):
    """Raised inside the write transaction to roll it back."""

    def __init__(self, status: int, errors: list[FieldError]) -> None:
        super().__init__("request rejected")
        self.status = status
        self.errors = errors


def unavailable(exc: BaseException, what: Literal["request", "file"]) -> Response:
    """503 for a write the ledger did not confirm: closed (nothing was written), or no answer in time (it is still
    queued and may yet be applied: say so; re-sending is safe because every item's id is its idempotency key)."""
    if isinstance(exc, TimeoutError):
        message = (
            f"the ledger did not confirm the write in time: the {what} may still be applied. Send the same {what}"
            " again later: that is safe (ids are idempotency keys; what was applied is reported as duplicate)"
        )
    else:
        message = f"the ledger is not available: send the same {what} again later (safe: ids are idempotency keys)"
    return error_response(503, [FieldError("ledger", message)], {"Retry-After": "5"})


JSON_ERROR_CODES = (400, 403, 404, 405, 413, 415, 500)


def _is_api_path(path: str) -> bool:
    return path == "/api" or path.startswith("/api/")


def _is_api_request() -> bool:
    return _is_api_path(request.path)


def _too_large(import_: bool) -> str:
    if import_:
        return (
            f"the file is larger than {MAX_CSV_BYTES:,} bytes: split it into files of at most {MAX_IMPORT_ROWS:,}"
            " rows (each file is imported all or nothing)"
        )
    return f"the request body is larger than {MAX_BODY_BYTES:,} bytes: send fewer items per request"


def body_limit(path: str) -> tuple[int, bytes] | None:
    """For the HTTP server, which reads a body before the app runs: the largest body a path under /api/ takes (the
    limit ``auth.py`` gives the request) and the JSON 413 refusing a larger one; None for any other path."""
    if not _is_api_path(path):
        return None
    import_ = path.startswith(f"{PREFIX}/imports/")
    refusal = json.dumps({"errors": [FieldError("request", _too_large(import_)).as_json()]}).encode()
    return (MAX_CSV_BYTES if import_ else MAX_BODY_BYTES), refusal


def _json_error(exc: HTTPException) -> Response:
    code = exc.code or 500
    message = "internal error" if code == 500 else (exc.description or exc.name)
    if code == 413:
        message = _too_large((request.endpoint or "").startswith("api.import_"))
    headers = {k: v for k, v in exc.get_headers() if k == "Allow"}
    return error_response(code, [FieldError("request", message)], headers)


def install_json_errors(state: BlueprintSetupState) -> None:
    """JSON errors for every path under /api/ (404 and 405 are raised before any blueprint is chosen, so these are
    application handlers); other paths keep whatever handler the application had before."""
    app = state.app
    for code in JSON_ERROR_CODES:
        previous = dict(app.error_handler_spec[None].get(code, {}))
        app.register_error_handler(code, _chained(app, previous))


def _chained(app: App, previous: Mapping[type[Exception], Any]) -> Callable[[HTTPException], ResponseReturnValue]:
    def handle(exc: HTTPException) -> ResponseReturnValue:
        if _is_api_request():
            return _json_error(exc)
        for cls in type(exc).__mro__:
            handler = previous.get(cls)
            if handler is None:
                handler = app.error_handler_spec[None].get(None, {}).get(cls)
            if handler is not None:
                result: ResponseReturnValue = current_app.ensure_sync(handler)(exc)
                return result
        return exc

    return handle
