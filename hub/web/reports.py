"""Reports: reorder, shrink rate as % of sales, sell-through, days of cover, out-of-stock minutes."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("reports", __name__)
