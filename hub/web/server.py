"""Serving the app from the hub process: waitress (a production WSGI server) in a thread beside the hub's loop."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from waitress.server import BaseWSGIServer, MultiSocketServer, create_server

from hub.ledger import LedgerService
from hub.web.app import create_app
from hub.web.bridge import LoopWriter


class WebServer:
    """``WebServer.start(...)`` on the hub's loop binds the socket and starts serving; ``await stop()``."""

    def __init__(self, server: MultiSocketServer | BaseWSGIServer, thread: threading.Thread, url: str) -> None:
        self._server = server
        self._thread = thread
        self.url = url

    @classmethod
    def start(
        cls,
        ledger_path: Path,
        ledger: LedgerService,
        loop: asyncio.AbstractEventLoop,
        *,
        host: str,
        port: int,
        threads: int = 4,
    ) -> WebServer:
        app = create_app(ledger_path, LoopWriter(ledger, loop))
        server = create_server(app, host=host, port=port, threads=threads, ident="smartshelf")
        bound_host = getattr(server, "effective_host", host)
        bound_port = getattr(server, "effective_port", port)
        shown = f"[{bound_host}]" if ":" in str(bound_host) else str(bound_host)
        thread = threading.Thread(target=server.run, name="web", daemon=True)
        thread.start()
        return cls(server, thread, f"http://{shown}:{bound_port}/")

    async def stop(self) -> None:
        """Stop accepting, let the worker threads finish (their ledger writes need this loop running)."""

        def close() -> None:
            self._server.close()
            self._server.task_dispatcher.shutdown()
            self._thread.join(5)

        await asyncio.to_thread(close)
