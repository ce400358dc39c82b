"""Live updates of the overview: a change feed polled from the ledger, fanned out as server-sent events."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("live", __name__)
