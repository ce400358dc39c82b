"""Alerts: opened once per (kind, cause key) while unresolved, acknowledged, given later evidence, resolved (with the
ledger entry the resolution implies, posted in the same transaction)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from hub.ledger.models import (
    BACKROOM,
    Alert,
    AlertStateError,
    AlertStatus,
    InvalidArgument,
    Reason,
    Timestamp,
    UnknownAlert,
    UnknownMovement,
    business_ms,
)
from hub.ledger.postings.checks import check_actor
from hub.ledger.postings.core import TxCore
from hub.ledger.postings.stock import write_off as post_write_off
from hub.ledger.reader import ALERT_COLUMNS, alert_from_row


@dataclass(frozen=True, slots=True)
class WriteOff:
    """The ledger entry implied by resolving an alert (e.g. shrinkage found on a lane)."""

    sku: str
    qty: int
    reason: Reason = Reason.SHRINKAGE
    location: str = BACKROOM


@dataclass(frozen=True, slots=True)
class AlertOpened:
    alert_id: int
    created: bool  # False: an unresolved alert for the same (kind, cause_key) already existed


async def get_alert(tx: TxCore, alert_id: int) -> Alert:
    rows = await tx.rows(f"SELECT {ALERT_COLUMNS} FROM alerts WHERE id = ?", (alert_id,))
    if not rows:
        raise UnknownAlert(f"no alert {alert_id}")
    return alert_from_row(rows[0])


async def open_alert(
    tx: TxCore, kind: str, cause_key: str, evidence: dict[str, Any], *, actor: str, ts: Timestamp = None
) -> AlertOpened:
    ts_ms = business_ms(ts)
    actor = check_actor(actor)
    if not kind or not cause_key:
        raise InvalidArgument("an alert needs a kind and a cause key")
    rows = await tx.rows(
        "SELECT id FROM alerts WHERE kind = ? AND cause_key = ? AND status != 'resolved'", (kind, cause_key)
    )
    if rows:
        return AlertOpened(rows[0][0], created=False)
    alert_id = await tx.insert(
        "INSERT INTO alerts (kind, cause_key, status, opened_ms, evidence) VALUES (?, ?, 'open', ?, ?)",
        (str(kind), cause_key, ts_ms if ts_ms is not None else tx.now_ms, json.dumps(evidence, sort_keys=True)),
    )
    await tx.audit(actor, "open_alert", {"alert_id": alert_id, "kind": str(kind), "cause_key": cause_key})
    return AlertOpened(alert_id, created=True)


async def acknowledge_alert(tx: TxCore, alert_id: int, *, actor: str) -> Alert:
    actor = check_actor(actor)
    alert = await get_alert(tx, alert_id)
    if alert.status != AlertStatus.OPEN:
        raise AlertStateError(f"alert {alert_id} is {alert.status}, not open")
    await tx.conn.execute(
        "UPDATE alerts SET status = 'acknowledged', acknowledged_ms = ?, acknowledged_by = ? WHERE id = ?",
        (tx.now_ms, actor, alert_id),
    )
    await tx.audit(actor, "acknowledge_alert", {"alert_id": alert_id})
    return await get_alert(tx, alert_id)


async def update_alert_evidence(tx: TxCore, alert_id: int, evidence: dict[str, Any], *, actor: str) -> bool:
    """Replace the evidence of an unresolved alert (later evidence for the same cause goes to the alert in
    flight, not to a new one). Returns False when it was already exactly this."""
    actor = check_actor(actor)
    alert = await get_alert(tx, alert_id)
    if alert.status == AlertStatus.RESOLVED:
        raise AlertStateError(f"alert {alert_id} is resolved: its evidence is final")
    text = json.dumps(evidence, sort_keys=True)
    if json.dumps(alert.evidence, sort_keys=True) == text:
        return False
    await tx.conn.execute("UPDATE alerts SET evidence = ? WHERE id = ?", (text, alert_id))
    await tx.audit(actor, "update_alert_evidence", {"alert_id": alert_id})
    return True


async def resolve_alert(
    tx: TxCore,
    alert_id: int,
    *,
    actor: str,
    resolution: str,
    write_off: WriteOff | None = None,
    movement_id: int | None = None,
) -> Alert:
    """Resolve an alert; ``write_off`` posts the entry it implies, or ``movement_id`` names one the caller
    posted in this transaction (e.g. a count adjustment)."""
    actor = check_actor(actor)
    if not isinstance(resolution, str) or not resolution.strip():
        raise InvalidArgument("say how the alert was resolved")
    if write_off is not None and movement_id is not None:
        raise InvalidArgument("an alert is resolved by one ledger entry: a write-off or a movement id")
    alert = await get_alert(tx, alert_id)
    if alert.status == AlertStatus.RESOLVED:
        raise AlertStateError(f"alert {alert_id} is already resolved")
    if movement_id is not None and not await tx.rows("SELECT 1 FROM movements WHERE id = ?", (movement_id,)):
        raise UnknownMovement(f"no movement {movement_id}")
    if write_off is not None:
        posted = await post_write_off(
            tx,
            write_off.sku,
            write_off.qty,
            write_off.reason,
            ts=tx.now_ms,
            actor=actor,
            ref=f"alert{alert_id}",
            location=write_off.location,
            note=f"alert {alert_id}: {resolution.strip()}",
        )
        movement_id = posted.movement_ids[0]
    await tx.conn.execute(
        "UPDATE alerts SET status = 'resolved', resolved_ms = ?, resolved_by = ?, resolution = ?,"
        " resolution_movement_id = ? WHERE id = ?",
        (tx.now_ms, actor, resolution.strip(), movement_id, alert_id),
    )
    await tx.audit(
        actor,
        "resolve_alert",
        {"alert_id": alert_id, "resolution": resolution.strip(), "movement_id": movement_id},
    )
    return await get_alert(tx, alert_id)


async def resolve_if_open(tx: TxCore, kind: str, cause_key: str, *, actor: str, resolution: str) -> None:
    rows = await tx.rows(
        "SELECT id FROM alerts WHERE kind = ? AND cause_key = ? AND status != 'resolved'", (kind, cause_key)
    )
    for (alert_id,) in rows:
        await resolve_alert(tx, alert_id, actor=actor, resolution=resolution)
