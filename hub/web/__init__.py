"""The staff status page and HTTP API (hub/web/README.md)."""

from hub.web.app import create_app
from hub.web.bridge import LoopWriter, Writer
from hub.web.server import WebServer

__all__ = ["LoopWriter", "WebServer", "Writer", "create_app"]
