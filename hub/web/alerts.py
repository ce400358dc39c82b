"""Alerts: list (filters, keyset pages), acknowledge, resolve with a reason (posting the ledger entry it implies).

Reconciliation's alert kinds are resolved through ``hub.reconcile.resolve`` with one of its ``OUTCOMES`` (the
write-off or count it implies is posted in the same transaction); any other kind (opened by other code) has one
plain outcome, ``resolved``, which closes it through ``LedgerService.resolve_alert`` with the note as resolution.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

from flask import Blueprint, abort, flash, g, redirect, render_template, request
from werkzeug.wrappers.response import Response

from hub.ledger.models import MAX_QTY, Alert, AlertStatus, InvalidArgument, LedgerError, UnknownAlert
from hub.reconcile.resolve import OUTCOMES
from hub.reconcile.resolve import resolve as resolve_reconciliation
from hub.web.app import get_db, get_writer

bp = Blueprint("alerts", __name__)

PAGE_SIZE = 50
NOTE_MAX = 500
SEARCH_MAX = 100
EVIDENCE_ITEMS_SHOWN = 10  # per list in the evidence (the newest)
PLAIN = "resolved"  # the one outcome of an alert kind outside reconciliation's OUTCOMES
STATUSES: dict[str, tuple[str, ...]] = {
    "unresolved": ("open", "acknowledged"),
    "open": ("open",),
    "acknowledged": ("acknowledged",),
    "resolved": ("resolved",),
    "all": (),
}
# outcome -> the evidence field its write-off defaults to (qty overrides it)
WRITE_OFFS: dict[str, str] = {"theft": "unexplained_units", "damaged": "suggested_units"}
COUNTS = ("count",)
OUTCOME_LABELS: dict[str, str] = {
    "theft": "theft: write the units off as shrinkage",
    "found": "found: the units are there",
    "count": "count: post a physical count of the lane",
    "damaged": "damaged: write the units off as damage",
    "no_damage": "no damage",
    "moved": "moved back to its place",
    "kept": "kept where it is",
    "fixed": "fixed",
    "ordered": "ordered (resolves itself when stock recovers)",
    "dismissed": "dismissed",
    PLAIN: "resolved",
}
_LANE_CAUSE = re.compile(r"lane:([A-Za-z0-9][A-Za-z0-9._-]{0,63})(?:/.*)?", re.DOTALL)
_CURSOR = re.compile(r"(\d{1,15})\.(\d{1,18})")
_WHOLE = re.compile(r"\d{1,7}")
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


def outcomes(kind: str) -> tuple[str, ...]:
    """The outcomes an alert of ``kind`` can be resolved with, those that post no ledger entry first (the form's
    default choice never writes stock off)."""
    return tuple(sorted(OUTCOMES.get(kind, (PLAIN,)), key=lambda o: (o in WRITE_OFFS, o in COUNTS)))


# ---------------------------------------------------------------------------------------------------- the list


@dataclass(frozen=True, slots=True)
class Filters:
    status: str = "unresolved"
    kind: str = ""
    q: str = ""  # text in the cause key
    since: date | None = None  # opened on or after this day (UTC)
    until: date | None = None  # opened on or before this day (UTC)

    def args(self) -> dict[str, str]:
        """The query arguments that select these filters (defaults left out)."""
        out = {"status": self.status} if self.status != "unresolved" else {}
        if self.kind:
            out["kind"] = self.kind
        if self.q:
            out["q"] = self.q
        if self.since:
            out["from"] = self.since.isoformat()
        if self.until:
            out["to"] = self.until.isoformat()
        return out


def _day(text: str, what: str) -> date | None:
    if not text:
        return None
    try:
        if _DAY.fullmatch(text) is None:
            raise ValueError(text)
        return date.fromisoformat(text)
    except ValueError:
        raise InvalidArgument(f"{what} must be a date like 2025-11-27, not {text[:20]!r}") from None


def parse_filters(args: Mapping[str, str], kinds: list[str]) -> Filters:
    status = args.get("status", "").strip() or "unresolved"
    if status not in STATUSES:
        raise InvalidArgument(f"status must be one of {', '.join(STATUSES)}, not {status[:20]!r}")
    kind = args.get("kind", "").strip()
    if kind and kind not in kinds:
        raise InvalidArgument(f"there are no alerts of kind {kind[:40]!r} (kinds: {', '.join(kinds) or 'none'})")
    q = args.get("q", "").strip()
    if len(q) > SEARCH_MAX:
        raise InvalidArgument(f"the search text is at most {SEARCH_MAX} characters")
    since = _day(args.get("from", "").strip(), "from")
    until = _day(args.get("to", "").strip(), "to")
    if since and until and since > until:
        raise InvalidArgument(f"the date range is empty: from {since} is after to {until}")
    return Filters(status, kind, q, since, until)


def _cursor(text: str | None, name: str) -> tuple[int, int] | None:
    if text is None:
        return None
    m = _CURSOR.fullmatch(text)
    if m is None:
        raise InvalidArgument(f"{name} is not a page position: follow the page links")
    return int(m[1]), int(m[2])


def _day_ms(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class EvidenceItem:
    key: str
    text: str  # a scalar, or a summary of a list / object
    items: tuple[str, ...] = ()  # the newest entries of a list, each as "key: value, ..."
    more: int = 0  # entries of the list not shown


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
    outcomes: tuple[str, ...]
    takes_qty: bool  # one of its outcomes writes off (qty)
    takes_counted: bool  # one of its outcomes is a count (counted)
    default_qty: int | None  # what a write-off takes from the evidence when qty is empty


def _scalar(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str | int | float):
        return str(value)
    if isinstance(value, list) and all(not isinstance(v, dict | list) for v in value):
        return ", ".join(_scalar(v) for v in value) or "none"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_scalar(v)}" for k, v in value.items()) or "none"
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _g(weight_dg: Any) -> str:
    return f"{weight_dg / 10:.1f} g" if isinstance(weight_dg, int) and not isinstance(weight_dg, bool) else "?"


def _n(value: Any, one: str, many: str) -> str:
    return f"{value} {one if value == 1 else many}"


def summary(kind: str, text: str) -> str:
    """One sentence a store manager reads before the evidence: what the alert says happened (from the evidence
    reconciliation writes, hub/reconcile/README.md); empty when the evidence lacks what the sentence needs."""
    try:
        ev = json.loads(text)
    except ValueError:
        return ""
    if not isinstance(ev, dict):
        return ""
    sku, lane = ev.get("sku"), ev.get("lane_id")
    try:
        if kind == "shrinkage":
            return (
                f"{_n(ev['unexplained_units'], 'unit', 'units')} of {sku} left lane {lane} and were neither put back"
                f" nor sold within {ev['window_s']:.0f} s (picks {ev['first_pick'][11:19]}"
                f"-{ev['last_pick'][11:19]} UTC)."
            )
        if kind == "damage":
            return (
                f"The weight on lane {lane} ({sku}) dropped without a whole item leaving:"
                f" {_n(ev['suggested_units'], 'unit', 'units')} likely damaged or spilled."
            )
        if kind == "misplaced":
            last = ev["events"][-1]
            return (
                f"Something weighing {_g(last['weight_delta_dg'])} was put on lane {lane} ({sku}):"
                f" it fits {ev['likely_sku']}, not {sku}."
            )
        if kind == "reorder":
            return (
                f"{sku} ({ev['sku_name']}): {ev['available']} available, at or below the reorder point"
                f" {ev['reorder_point']}; suggested order {ev['suggested_qty']}."
            )
        if kind == "sensor":
            problem = ev.get("problem")
            if problem == "silent":
                return f"Node {ev['node_id']} has not been heard from since {ev['last_seen'][:19]} UTC."
            if problem == "stuck":
                return (
                    f"Lane {lane} ({sku}) reported nothing for {ev['no_event_for_s'] / 60:.0f} min while"
                    f" {_n(ev['unseen_sale_units'], 'unit was', 'units were')} sold: the load cell may be stuck."
                )
            if problem == "drift":
                return (
                    f"Lane {lane} ({sku}): {ev['events_in_period']} uncertain or unexplained weight changes in"
                    f" {ev['period_s'] / 60:.0f} min (threshold {ev['threshold']}): the load cell may drift."
                )
    except (KeyError, TypeError, ValueError, IndexError, AttributeError):
        return ""
    return ""


def readable_evidence(text: str) -> tuple[EvidenceItem, ...]:
    """The evidence as key: value items; lists of objects (picks, events) as their newest entries."""
    try:
        evidence = json.loads(text)
    except ValueError:
        return (EvidenceItem("evidence", text[:500]),)
    if not isinstance(evidence, dict):
        return (EvidenceItem("evidence", _scalar(evidence)),)
    plain: list[EvidenceItem] = []
    nested: list[EvidenceItem] = []
    for key, value in evidence.items():
        if isinstance(value, list) and any(isinstance(v, dict | list) for v in value):
            shown = value[-EVIDENCE_ITEMS_SHOWN:]
            summary = f"{len(value)} {'entry' if len(value) == 1 else 'entries'}"
            if len(shown) < len(value):
                summary += f", the newest {len(shown)} shown"
            nested.append(EvidenceItem(key, summary, tuple(_scalar(v) for v in shown), len(value) - len(shown)))
        else:
            plain.append(EvidenceItem(key, _scalar(value)))
    return (*plain, *nested)


def _alert_row(r: sqlite3.Row) -> AlertRow:
    lane = _LANE_CAUSE.fullmatch(r["cause_key"])
    kind = r["kind"]
    kinds_outcomes = outcomes(kind)
    movement = None
    if r["m_location"] is not None:
        qty = int(r["m_qty"])
        movement = f"{qty:+d} {r['m_sku'] or ''} at {r['m_location']} ({r['m_reason']})".replace("  ", " ")
    default_qty = None
    write_offs = [o for o in kinds_outcomes if o in WRITE_OFFS]
    if write_offs:
        try:
            value = json.loads(r["evidence"]).get(WRITE_OFFS[write_offs[0]])
        except (ValueError, AttributeError):
            value = None
        default_qty = value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None
    return AlertRow(
        id=r["id"],
        kind=kind,
        cause_key=r["cause_key"],
        lane_id=lane[1] if lane else None,
        status=r["status"],
        opened_ms=r["opened_ms"],
        acknowledged_ms=r["acknowledged_ms"],
        acknowledged_by=r["acknowledged_by"],
        resolved_ms=r["resolved_ms"],
        resolved_by=r["resolved_by"],
        resolution=r["resolution"],
        movement_id=r["resolution_movement_id"],
        movement=movement,
        summary=summary(kind, r["evidence"]),
        evidence=readable_evidence(r["evidence"]),
        outcomes=kinds_outcomes,
        takes_qty=bool(write_offs),
        takes_counted=any(o in COUNTS for o in kinds_outcomes),
        default_qty=default_qty,
    )


_SELECT = (
    "SELECT a.id, a.kind, a.cause_key, a.status, a.opened_ms, a.acknowledged_ms, a.acknowledged_by, a.resolved_ms,"
    " a.resolved_by, a.resolution, a.resolution_movement_id, a.evidence,"
    " m.sku AS m_sku, m.location AS m_location, m.qty AS m_qty, m.reason AS m_reason"
    " FROM alerts AS a LEFT JOIN movements AS m ON m.id = a.resolution_movement_id"
)


@dataclass(frozen=True, slots=True)
class Page:
    rows: list[AlertRow]
    older: str | None  # cursor of the next (older) page
    newer: str | None  # cursor of the previous (newer) page
    first: bool  # this is the newest page


def list_alerts(
    conn: sqlite3.Connection,
    filters: Filters,
    *,
    before: tuple[int, int] | None = None,
    after: tuple[int, int] | None = None,
    page_size: int = PAGE_SIZE,
) -> Page:
    """One page of alerts matching ``filters``, newest first: those older than ``before`` (opened_ms, id), or
    the page just newer than ``after``; the newest page without either."""
    where: list[str] = []
    params: list[Any] = []
    statuses = STATUSES[filters.status]
    if statuses:
        where.append(f"a.status IN ({', '.join('?' * len(statuses))})")
        params += statuses
    if filters.kind:
        where.append("a.kind = ?")
        params.append(filters.kind)
    if filters.q:
        where.append("a.cause_key LIKE ? ESCAPE '\\'")
        params.append("%" + re.sub(r"([\\%_])", r"\\\1", filters.q) + "%")
    if filters.since:
        where.append("a.opened_ms >= ?")
        params.append(_day_ms(filters.since))
    if filters.until:
        where.append("a.opened_ms < ?")
        params.append(_day_ms(filters.until + timedelta(days=1)))
    conn.row_factory = sqlite3.Row

    def fetch(extra: str, extra_params: tuple[int, ...], order: str) -> list[AlertRow]:
        clauses = [*where, extra] if extra else where
        sql = _SELECT + (" WHERE " + " AND ".join(clauses) if clauses else "")
        sql += f" ORDER BY a.opened_ms {order}, a.id {order} LIMIT ?"
        return [_alert_row(r) for r in conn.execute(sql, [*params, *extra_params, page_size + 1])]

    try:
        if after is not None:
            newer = fetch("(a.opened_ms > ? OR (a.opened_ms = ? AND a.id > ?))", (after[0], after[0], after[1]), "ASC")
            if len(newer) > page_size:  # there are newer pages still
                rows = newer[:page_size][::-1]
                return Page(rows, _key(rows[-1]), _key(rows[0]), first=False)
            before = None  # fewer than a page newer than that: the newest page
        if before is not None:
            older = fetch(
                "(a.opened_ms < ? OR (a.opened_ms = ? AND a.id < ?))", (before[0], before[0], before[1]), "DESC"
            )
        else:
            older = fetch("", (), "DESC")
    finally:
        conn.row_factory = None
    rows = older[:page_size]
    more = len(older) > page_size
    first = before is None
    return Page(rows, _key(rows[-1]) if more else None, None if first or not rows else _key(rows[0]), first)


def _key(row: AlertRow) -> str:
    return f"{row.opened_ms}.{row.id}"


def _kinds(conn: sqlite3.Connection) -> list[str]:
    return sorted({*OUTCOMES, *(r[0] for r in conn.execute("SELECT DISTINCT kind FROM alerts"))})


@bp.get("/alerts")
def index() -> str | tuple[str, int]:
    conn = get_db()
    kinds = _kinds(conn)
    try:
        filters = parse_filters(request.args, kinds)
        before = _cursor(request.args.get("before"), "before")
        after = _cursor(request.args.get("after"), "after")
    except InvalidArgument as exc:
        page = Page([], None, None, first=True)
        return _render(page, Filters(), kinds, error=str(exc)), 400
    return _render(list_alerts(conn, filters, before=before, after=after), filters, kinds, error=None)


def _render(page: Page, filters: Filters, kinds: list[str], *, error: str | None) -> str:
    return render_template(
        "alerts.html",
        page=page,
        alerts=page.rows,
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


def _whole(text: str, what: str, low: int) -> int:
    if _WHOLE.fullmatch(text) is None or not low <= int(text) <= MAX_QTY:
        raise InvalidArgument(f"{what} must be a whole number {low}..{MAX_QTY:,}, not {text[:20]!r}")
    return int(text)


def parse_resolution(kind: str, form: Mapping[str, str]) -> Resolution:
    """Check a resolve form against the alert's kind; raises InvalidArgument with what is wrong."""
    allowed = outcomes(kind)
    outcome = form.get("outcome", "").strip()
    if not outcome:
        raise InvalidArgument(f"choose an outcome ({', '.join(allowed)})")
    if outcome not in allowed:
        raise InvalidArgument(f"a {kind} alert is resolved as one of: {', '.join(allowed)}, not {outcome[:40]!r}")
    res = Resolution(outcome)
    qty = form.get("qty", "").strip()
    if qty:
        if outcome not in WRITE_OFFS:
            raise InvalidArgument(f"units (qty) are for a write-off ({', '.join(WRITE_OFFS)}), not for {outcome}")
        res = replace(res, qty=_whole(qty, "units (qty)", 1))
    counted = form.get("counted", "").strip()
    if outcome in COUNTS:
        if not counted:
            raise InvalidArgument("a count needs the number of units counted on the lane (counted)")
        res = replace(res, counted=_whole(counted, "the counted quantity", 0))
    elif counted:
        raise InvalidArgument(f"a counted quantity is for a count, not for {outcome}")
    note = form.get("note", "").strip()
    if len(note) > NOTE_MAX:
        raise InvalidArgument(f"the note is at most {NOTE_MAX} characters, not {len(note)}")
    if any(ord(c) < 32 or ord(c) == 127 for c in note):
        raise InvalidArgument("the note must be one line of text")
    if outcome in WRITE_OFFS and not note:
        raise InvalidArgument("say why the stock is written off (note)")
    if outcome in WRITE_OFFS and res.qty is None:  # the evidence's units: exactly those the page showed
        shown = form.get("shown_qty", "").strip()
        if not shown:
            raise InvalidArgument("the form does not say how many units it showed: reload the page, or give the units")
        res = replace(res, shown_qty=_whole(shown, "the units shown (shown_qty)", 0))
    return replace(res, note=note)


def _resolved_message(before: str, alert: Alert) -> str:
    if alert.status != AlertStatus.RESOLVED:  # a reorder suggestion marked ordered: acknowledged
        if before != AlertStatus.OPEN:
            return f"Alert {alert.id} was already acknowledged: it resolves itself when stock recovers."
        return f"Alert {alert.id} acknowledged as ordered: it resolves itself when stock recovers."
    posted = f" (movement {alert.resolution_movement_id})" if alert.resolution_movement_id is not None else ""
    return f"Alert {alert.id} resolved: {alert.resolution}{posted}."


@bp.post("/alerts/<int:alert_id>/resolve")
def resolve(alert_id: int) -> Response:
    row = get_db().execute("SELECT kind, status FROM alerts WHERE id = ?", (alert_id,)).fetchone()
    if row is None:
        abort(404)
    kind, status = str(row[0]), str(row[1])
    actor = f"web:{g.user.username}"
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
                )
            )
    except UnknownAlert:
        abort(404)
    except LedgerError as exc:
        flash(f"Alert {alert_id} not resolved: {exc}")
    else:
        flash(_resolved_message(status, alert))
    return redirect(_back())
