"""Alerts: list (filters, keyset pages), acknowledge, resolve with a reason (posting the ledger entry it implies).

Reconciliation's alert kinds are resolved through ``hub.reconcile.resolve`` with one of its ``OUTCOMES`` (the
write-off or count it implies is posted in the same transaction); any other kind (opened by other code) has one
plain outcome, ``resolved``, which closes it through ``LedgerService.resolve_alert`` with the note as resolution. An
``unassigned_lane`` alert has none: it resolves itself when its lane is assigned a SKU, and the page says how
(``hub.reconcile.resolve.assign_instead``, the line ``smartshelf reconcile resolve`` refuses it with).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from flask import Blueprint, abort, current_app, flash, g, redirect, render_template, request
from werkzeug.wrappers.response import Response

from hub.ledger.causes import Cause
from hub.ledger.models import MAX_QTY, Alert, AlertStatus, InvalidArgument, LedgerError, UnknownAlert
from hub.ledger.reader import ALERT
from hub.reconcile.resolve import OUTCOMES, assign_instead
from hub.reconcile.resolve import resolve as resolve_reconciliation
from hub.web.access import requires
from hub.web.db import fetch_one, get_db, get_writer
from hub.web.inputs import BadInput, day_value, int_text, int_value, single
from hub.web.pages.alerts_queries import STATUSES, AlertRecord, Filters, Page, kinds_in_ledger, list_alerts
from hub.web.pages.alerts_text import EvidenceItem, cited_epcs, readable_evidence, summary

bp = Blueprint("alerts", __name__)

NOTE_MAX = 500
SEARCH_MAX = 100
PLAIN = "resolved"  # the one outcome of an alert kind outside reconciliation's OUTCOMES
# outcome -> the evidence field its write-off defaults to (qty overrides it)
WRITE_OFFS: dict[str, str] = {"theft": "unexplained_units", "damaged": "suggested_units"}
COUNTS = ("count",)
OUTCOME_LABELS: dict[str, str] = {
    "theft": "theft: write the units off as shrinkage",
    "found": "found: the units are there",
    "count": "count: post a physical count of the lane",
    "damaged": "damaged: write the units off as damage",
    "no_damage": "no damage",
    "tag_removed": "tag removed: the item is there without its tag",
    "no_tamper": "no tamper (a reader or antenna fault)",
    "moved": "moved back to its place",
    "kept": "kept where it is",
    "fixed": "fixed",
    "ordered": "ordered (resolves itself when stock recovers)",
    "dismissed": "dismissed",
    PLAIN: "resolved",
}


def _hub_config() -> str | None:
    """The running hub's hub.toml (``HUB_CONFIG``, set by ``WebServer.start``), for the commands the page names."""
    value = current_app.config.get("HUB_CONFIG")
    return str(value) if value else None


def outcomes(kind: str) -> tuple[str, ...]:
    """The outcomes an alert of ``kind`` can be resolved with, those that post no ledger entry first (the form's
    default choice never writes stock off)."""
    if assign_instead(kind, {}) is not None:
        return ()
    return tuple(sorted(OUTCOMES.get(kind, (PLAIN,)), key=lambda o: (o in WRITE_OFFS, o in COUNTS)))


# ---------------------------------------------------------------------------------------------------- the list


def _text(values: Mapping[str, str], name: str) -> str:
    """A parameter or form field (given at most once, ``hub.web.inputs.single``), spaces around it dropped."""
    try:
        return (single(values, name) or "").strip()
    except BadInput as exc:
        raise InvalidArgument(str(exc)) from None


def parse_filters(args: Mapping[str, str], kinds: list[str]) -> Filters:
    status = _text(args, "status") or "unresolved"
    if status not in STATUSES:
        raise InvalidArgument(f"status must be one of {', '.join(STATUSES)}, not {status[:20]!r}")
    kind = _text(args, "kind")
    if kind and kind not in kinds:
        raise InvalidArgument(f"there are no alerts of kind {kind[:40]!r} (kinds: {', '.join(kinds) or 'none'})")
    q = _text(args, "q")
    if len(q) > SEARCH_MAX:
        raise InvalidArgument(f"the search text is at most {SEARCH_MAX} characters")
    try:  # days 1970-01-01..9999-12-31 in ASCII digits, as on every page (hub/web/inputs.py)
        since, until = day_value(args, "from"), day_value(args, "to")
    except BadInput as exc:
        raise InvalidArgument(str(exc)) from None
    if since and until and since > until:
        raise InvalidArgument(f"the date range is empty: from {since} is after to {until}")
    return Filters(status, kind, q, since, until)


def _cursor(args: Mapping[str, str], name: str) -> tuple[int, int] | None:
    """A page position, ``<opened_ms>.<id>`` (both whole numbers within SQLite's range)."""
    text = _text(args, name)
    if not text:
        return None
    try:
        opened, _, alert_id = text.partition(".")
        return int_text(name, opened), int_text(name, alert_id)
    except BadInput:
        raise InvalidArgument(f"{name} is not a page position: follow the page links") from None


@dataclass(frozen=True, slots=True)
class AlertRow:
    id: int
    kind: str
    cause_key: str
    lane_id: str | None  # the lane the cause key names (lane:<id> or lane:<id>/...)
    status: str
    opened_ms: int
    acknowledged_ms: int | None
    acknowledged_by: str | None
    resolved_ms: int | None
    resolved_by: str | None
    resolution: str | None
    movement_id: int | None
    movement: str | None  # what the resolution posted, e.g. "-2 COLA at lane:A1 (shrinkage)"
    summary: str  # one sentence from the evidence ("" when it lacks what the sentence needs)
    evidence: tuple[EvidenceItem, ...]
    epcs: tuple[str, ...]  # the RFID tags the evidence cites (each linked to its trail)
    outcomes: tuple[str, ...]
    takes_qty: bool  # one of its outcomes writes off (qty)
    takes_counted: bool  # one of its outcomes is a count (counted)
    default_qty: int | None  # what a write-off takes from the evidence when qty is empty
    instead: str | None  # an alert not resolved by hand (unassigned_lane): what resolves it


def alert_row(r: AlertRecord) -> AlertRow:
    """An alert as the page shows it."""
    cause = Cause.parse_or_none(r.cause_key)
    kind = r.kind
    kinds_outcomes = outcomes(kind)
    movement = None
    if r.posted_location is not None:
        qty = int(r.posted_qty or 0)
        movement = f"{qty:+d} {r.posted_sku or ''} at {r.posted_location} ({r.posted_reason})".replace("  ", " ")
    default_qty = None
    resolved = str(r.status) == AlertStatus.RESOLVED
    instead = None if resolved else assign_instead(kind, _evidence(r.evidence), _hub_config())
    write_offs = [o for o in kinds_outcomes if o in WRITE_OFFS]
    if write_offs:
        try:
            value = json.loads(r.evidence).get(WRITE_OFFS[write_offs[0]])
        except (ValueError, AttributeError):
            value = None
        default_qty = value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None
    return AlertRow(
        id=r.id,
        kind=kind,
        cause_key=r.cause_key,
        lane_id=None if cause is None else cause.lane_id,
        status=r.status,
        opened_ms=r.opened_ms,
        acknowledged_ms=r.acknowledged_ms,
        acknowledged_by=r.acknowledged_by,
        resolved_ms=r.resolved_ms,
        resolved_by=r.resolved_by,
        resolution=r.resolution,
        movement_id=r.resolution_movement_id,
        movement=movement,
        summary=summary(kind, r.evidence),
        evidence=readable_evidence(r.evidence),
        epcs=cited_epcs(r.evidence),
        outcomes=kinds_outcomes,
        takes_qty=bool(write_offs),
        takes_counted=any(o in COUNTS for o in kinds_outcomes),
        default_qty=default_qty,
        instead=instead,
    )


def _evidence(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _kinds() -> list[str]:
    return sorted({*OUTCOMES, *kinds_in_ledger(get_db())})


@bp.get("/alerts")
@requires("viewer")
def index() -> str | tuple[str, int]:
    kinds = _kinds()
    try:
        filters = parse_filters(request.args, kinds)
        before = _cursor(request.args, "before")
        after = _cursor(request.args, "after")
    except InvalidArgument as exc:
        page = Page([], None, None, first=True)
        return _render(page, Filters(), kinds, error=str(exc)), 400
    return _render(list_alerts(get_db(), filters, before=before, after=after), filters, kinds, error=None)


def _render(page: Page, filters: Filters, kinds: list[str], *, error: str | None) -> str:
    return render_template(
        "alerts.html",
        page=page,
        alerts=[alert_row(r) for r in page.rows],
        filters=filters,
        filter_args=filters.args(),
        kinds=kinds,
        statuses=list(STATUSES),
        labels=OUTCOME_LABELS,
        error=error,
        note_max=NOTE_MAX,
        max_qty=MAX_QTY,
        back=request.full_path.rstrip("?"),
        lane_href=lambda lane_id: f"{request.script_root}/lanes/{lane_id}",
    )


def _back() -> str:
    """Where to go after a POST: the list as the user saw it (only /alerts pages)."""
    back = request.form.get("back", "")
    if re.fullmatch(r"/alerts(\?[^\\\s]*)?", back) is None:
        return f"{request.script_root}/alerts"
    return request.script_root + back


# --------------------------------------------------------------------------------------------- acting on them


@bp.post("/alerts/<int:alert_id>/acknowledge")
@requires("clerk")
def acknowledge(alert_id: int) -> Response:
    actor = f"web:{g.user.username}"
    try:
        get_writer().call(lambda ledger: ledger.acknowledge_alert(alert_id, actor=actor))
    except UnknownAlert:
        abort(404)
    except LedgerError as exc:
        flash(str(exc))
    else:
        flash(f"Alert {alert_id} acknowledged.")
    return redirect(_back())


@dataclass(frozen=True, slots=True)
class Resolution:
    outcome: str
    qty: int | None = None
    counted: int | None = None
    note: str = ""
    shown_qty: int | None = None  # a write-off without qty: the units the page showed (refused if the evidence moved)


def _whole(form: Mapping[str, str], name: str, what: str, low: int) -> int | None:
    """A form's whole number ``low..MAX_QTY`` in ASCII digits (``hub.web.inputs``), None when empty."""
    try:
        return int_value(form, name, low, MAX_QTY)
    except BadInput as exc:
        raise InvalidArgument(f"{what} {exc.message}") from None


def parse_resolution(kind: str, form: Mapping[str, str]) -> Resolution:
    """Check a resolve form against the alert's kind; raises InvalidArgument with what is wrong."""
    allowed = outcomes(kind)
    outcome = _text(form, "outcome")
    if not outcome:
        raise InvalidArgument(f"choose an outcome ({', '.join(allowed)})")
    if outcome not in allowed:
        raise InvalidArgument(f"a {kind} alert is resolved as one of: {', '.join(allowed)}, not {outcome[:40]!r}")
    res = Resolution(outcome)
    if _text(form, "qty"):
        if outcome not in WRITE_OFFS:
            raise InvalidArgument(f"units (qty) are for a write-off ({', '.join(WRITE_OFFS)}), not for {outcome}")
        res = replace(res, qty=_whole(form, "qty", "units (qty)", 1))
    counted = _text(form, "counted")
    if outcome in COUNTS:
        if not counted:
            raise InvalidArgument("a count needs the number of units counted on the lane (counted)")
        res = replace(res, counted=_whole(form, "counted", "the counted quantity", 0))
    elif counted:
        raise InvalidArgument(f"a counted quantity is for a count, not for {outcome}")
    note = _text(form, "note")
    if len(note) > NOTE_MAX:
        raise InvalidArgument(f"the note is at most {NOTE_MAX} characters, not {len(note)}")
    if any(ord(c) < 32 or ord(c) == 127 for c in note):
        raise InvalidArgument("the note must be one line of text")
    if outcome in WRITE_OFFS and not note:
        raise InvalidArgument("say why the stock is written off (note)")
    if outcome in WRITE_OFFS and res.qty is None:  # the evidence's units: exactly those the page showed
        shown = _whole(form, "shown_qty", "the units shown (shown_qty)", 0)
        if shown is None:
            raise InvalidArgument("the form does not say how many units it showed: reload the page, or give the units")
        res = replace(res, shown_qty=shown)
    return replace(res, note=note)


def _resolved_message(before: str, alert: Alert) -> str:
    if alert.status != AlertStatus.RESOLVED:  # a reorder suggestion marked ordered: acknowledged
        if before != AlertStatus.OPEN:
            return f"Alert {alert.id} was already acknowledged: it resolves itself when stock recovers."
        return f"Alert {alert.id} acknowledged as ordered: it resolves itself when stock recovers."
    posted = f" (movement {alert.resolution_movement_id})" if alert.resolution_movement_id is not None else ""
    return f"Alert {alert.id} resolved: {alert.resolution}{posted}."


@bp.post("/alerts/<int:alert_id>/resolve")
@requires("manager")
def resolve(alert_id: int) -> Response:
    found = fetch_one(get_db(), ALERT, (alert_id,))
    if found is None:
        abort(404)
    kind, status = found.kind, str(found.status)
    actor = f"web:{g.user.username}"
    if status == AlertStatus.RESOLVED:  # a lane assigned since resolved its own unassigned_lane alert, say
        flash(f"Alert {alert_id} not resolved: alert {alert_id} is already resolved ({found.resolution})")
        return redirect(_back())
    if (instead := assign_instead(kind, found.evidence, _hub_config())) is not None:
        flash(f"Alert {alert_id} not resolved: {instead}")
        return redirect(_back())
    try:
        res = parse_resolution(kind, request.form)
        if res.outcome == PLAIN:
            resolution = res.note or PLAIN
            alert = get_writer().call(lambda ledger: ledger.resolve_alert(alert_id, actor=actor, resolution=resolution))
        else:
            alert = get_writer().call(
                lambda ledger: resolve_reconciliation(
                    ledger,
                    alert_id,
                    res.outcome,
                    actor=actor,
                    qty=res.qty,
                    counted=res.counted,
                    note=res.note or None,
                    expected_units=res.shown_qty,
                    config=_hub_config(),
                )
            )
    except UnknownAlert:
        abort(404)
    except LedgerError as exc:
        flash(f"Alert {alert_id} not resolved: {exc}")
    else:
        flash(_resolved_message(status, alert))
    return redirect(_back())
