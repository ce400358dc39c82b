"""The staff status page and HTTP API (hub/web/README.md)."""

from hub.web.app import create_app
from hub.web.bridge import LoopWriter, Writer

__all__ = ["LoopWriter", "Writer", "create_app"]
