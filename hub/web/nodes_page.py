"""Nodes: online/offline, firmware, last seen, link quality, sample rate, forged frames."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("nodes", __name__)
