"""Ledger explorer: movements filtered by SKU, lane, reason, actor and date; paginated; CSV export."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("ledger", __name__)
