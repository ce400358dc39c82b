"""The HTTP API for POS / WMS clients: bearer tokens per client, idempotent posts, OpenAPI description."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("api", __name__)
