"""Every page route of the status page, with a request that exercises it (the role-matrix test walks them all).

``url`` may name ``{alert}`` (an open shrinkage alert of the seeded ledger), ``{lane}`` (a seeded lane id),
``{user}`` (a seeded user), ``{client}`` (an API client the test adds) and ``{epc}`` (the seeded tag's EPC).
``data`` is the form a POST sends (the CSRF token is added). ``ok`` is the status an allowed role gets. The API's
endpoints are tested in tests/test_web_api.py (tokens, not roles).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Route:
    method: str
    url: str
    endpoint: str
    data: dict[str, str] = field(default_factory=dict)
    ok: int = 200


ROUTES: dict[str, Route] = {
    "overview": Route("GET", "/", "pages.overview"),
    "lanes json": Route("GET", "/lanes.json", "live.lanes"),
    "events": Route("GET", "/events?once=1", "live.events"),
    "shelf": Route("GET", "/lanes/{lane}", "shelf.detail"),
    "tags": Route("GET", "/tags?epc=3074", "tags.index"),
    "tag trail": Route("GET", "/tags/{epc}", "tags.detail"),
    "count lane": Route("POST", "/lanes/{lane}/count", "shelf.count", {"counted": "3"}, ok=302),
    "alerts": Route("GET", "/alerts", "alerts.index"),
    "acknowledge": Route("POST", "/alerts/{alert}/acknowledge", "alerts.acknowledge", ok=302),
    "resolve": Route("POST", "/alerts/{alert}/resolve", "alerts.resolve", {"outcome": "found"}, ok=302),
    "reorder": Route("GET", "/reorder", "reports.reorder"),
    "nodes": Route("GET", "/nodes", "nodes.index"),
    "ledger": Route("GET", "/ledger", "ledger.explorer"),
    "ledger csv": Route("GET", "/ledger.csv", "ledger.export"),
    "reports": Route("GET", "/reports", "reports.index"),
    "reports csv": Route("GET", "/reports.csv", "reports.export"),
    "users": Route("GET", "/users", "users.index"),
    "add user": Route(
        "POST",
        "/users",
        "users.create",
        {"username": "newbie", "role": "viewer", "password": "a-long-password", "confirm": "a-long-password"},
        ok=302,
    ),
    "api clients": Route("GET", "/api-clients", "clients.index"),
    "add api client": Route("POST", "/api-clients", "clients.create", {"name": "till-9", "scopes": "sales"}, ok=201),
    "disable api client": Route("POST", "/api-clients/{client}/disable", "clients.disable", ok=302),
    "update user": Route("POST", "/users/{user}", "users.update", {"role": "clerk"}, ok=302),
    "audit": Route("GET", "/audit?action=add_user", "audit.index"),
    "audit csv": Route("GET", "/audit.csv", "audit.export"),
}
