"""The hub's database: every subsystem's migration steps, in order (the one list all of them share).

Each subsystem owns its tables' steps (``hub.ledger.schema``, ``hub.reconcile.schema``, ``hub.web.schema``,
``hub.fleet.schema``); the ledger's migrator applies them (``hub.ledger.schema.migrate``) and never imports its
users, so this list is handed to it by whoever opens the database: the hub service, the ``smartshelf`` commands
(``hub.cli`` sets it as the ``migrations`` default of every subcommand), tests and tools. Append new steps at the
end; never edit a released one (a database records each as applied).
"""

from __future__ import annotations

from hub.fleet import schema as fleet
from hub.ledger import identity, lane_activity, sold_hours
from hub.ledger import schema as ledger
from hub.reconcile import schema as reconcile
from hub.web import schema as web

MIGRATIONS = ledger.compose(
    ledger.CORE,  # 1
    ledger.ALERTS,  # 2
    reconcile.STATE,  # 3
    web.USERS,  # 4
    # 5: released as one step of two subsystems' tables, listed as its parts in their released order
    web.API_CLIENTS,
    ledger.LANE_READINGS,
    web.INDEXES_AND_SESSIONS,
    ledger.SENSOR_COUNT,  # 6
    ledger.RFID,  # 7
    reconcile.TAGS,  # 8
    ledger.AUDIT_ORIGIN,  # 9
    web.AUDIT_PAGE,  # 10
    lane_activity.LANE_ACTIVITY,  # 11  sensor spans, lane activity, out-of-stock stretches
    sold_hours.SOLD_HOURS,  # (11) units sold per hour
    web.BOOK_LOCATIONS,  # 12
    fleet.FLEET,  # 13  publish cursor, alert outbox (hub/fleet/)
    identity.IDENTITY,  # 14  the ledger's incarnation (a restore starts a new one)
    sold_hours.SOLD_TOTALS,  # 15  units sold per SKU and location: first and last hour, total (the reports)
    ledger.LANE_ASSIGNED,  # 16  movements: reason lane_assigned (a lane's sensor units follow its SKU)
    web.LANE_ASSIGNMENTS,  # 17  lane assignment history from the audit, out-of-stock stretches by end (reports)
)
LATEST_VERSION = MIGRATIONS[-1].version
