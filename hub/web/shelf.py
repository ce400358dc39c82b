"""Shelf (lane) detail: weight and count over the last hour / day, and the event timeline."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("shelf", __name__)
