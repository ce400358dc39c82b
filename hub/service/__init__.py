"""The running hub as a whole: ``HubService`` (lifecycle), its status, and its local control channel.

* ``lifecycle``        HubService: start / stop order of ledger, node links, ingest, control, reconciliation, web.
* ``status``           the JSON-ready status snapshot and the periodic status line.
* ``control``          the control socket (Unix, JSON lines): server in the hub, client for the CLI.
* ``control_requests`` what a control request does (command a node, read the status).
* ``heap``             the process's garbage collector, settled once the service has started.
"""

from hub.service.lifecycle import HubService

__all__ = ["HubService"]
