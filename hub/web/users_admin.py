"""Users administration: add, change role, disable / enable, reset password."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("users", __name__)
