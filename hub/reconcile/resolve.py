"""How staff close reconciliation alerts, and the ledger entry each outcome posts (in the same transaction).

| kind | outcome | ledger entry |
| --- | --- | --- |
| shrinkage | ``theft`` | shrinkage write-off of the unexplained units (or ``qty``) from ``lane:<lane>`` |
| shrinkage | ``found`` | none: the units are there (a miscount, a put-back the sensor missed) |
| shrinkage | ``count`` | a physical count of the lane (``counted``): the difference is a count adjustment |
| damage | ``damaged`` | damage write-off of the suggested units (or ``qty``) from ``lane:<lane>`` |
| damage | ``no_damage`` | none |
| tamper | ``theft`` | shrinkage write-off of one unit per tag that left (or ``qty``) from ``lane:<lane>`` |
| tamper | ``tag_removed`` | none: the item is on the lane without its tag (torn off, found on the shelf) |
| tamper | ``no_tamper`` | none: a reader or antenna fault, a test |
| misplaced | ``moved`` | none: the item went back to its own place (the book never moved it) |
| misplaced | ``kept`` | none: left where it is (e.g. a deliberate display) |
| sensor | ``fixed`` | none |
| reorder | ``ordered`` | none: the suggestion is *acknowledged* and resolves itself when stock recovers |
| reorder | ``dismissed`` | none (it is raised again next run while stock stays at or below the reorder point) |

An ``unassigned_lane`` alert (the hub booked events of a lane that has no SKU) is not resolved here, nor on the page:
it resolves itself when the lane is assigned a SKU (``Tx.assign_lane``, in the same transaction), and closed by hand
it would open again at the lane's next event, with its units still in no SKU's stock. ``assign_instead`` says so and
names the commands that assign the lane (the same line on the page and from ``smartshelf reconcile resolve``).

The resolution text and the movement it posted are stored on the alert (``resolution``,
``resolution_movement_id``); the write-off's source reference is ``writeoff:alert<id>``, the count's
``resolution:alert<id>`` (a reference kind no API / CSV client can produce, so none can pre-empt it).
"""

from __future__ import annotations

from typing import Any

from hub.ledger.models import Alert, AlertKind, AlertStatus, InvalidArgument, Reason, UnknownAlert
from hub.ledger.postings import RESOLUTION_KIND, Tx, WriteOff
from hub.ledger.reader import ALERT_COLUMNS, alert_from_row
from hub.ledger.service import LedgerService

OUTCOMES: dict[str, tuple[str, ...]] = {
    "shrinkage": ("theft", "found", "count"),
    "damage": ("damaged", "no_damage"),
    "tamper": ("tag_removed", "no_tamper", "theft"),
    "misplaced": ("moved", "kept"),
    "sensor": ("fixed",),
    "reorder": ("ordered", "dismissed"),
}


async def resolve(
    ledger: LedgerService,
    alert_id: int,
    outcome: str,
    *,
    actor: str,
    qty: int | None = None,
    counted: int | None = None,
    note: str | None = None,
    expected_units: int | None = None,
    config: str | None = None,
) -> Alert:
    """Close (or, for ``reorder``/``ordered``, acknowledge) a reconciliation alert with ``outcome``, posting the
    entry it implies from the evidence as it is at that moment (later evidence cannot slip past).
    ``expected_units``: for a write-off without ``qty``, the units the person resolving was shown; refused when the
    evidence says otherwise by the time the transaction runs (it grew since the page was loaded). ``config``: the
    hub's hub.toml, named in the refusal of an ``unassigned_lane`` alert (``assign_instead``)."""

    async def run(tx: Tx) -> Alert:
        rows = list(await tx.conn.execute_fetchall(f"SELECT {ALERT_COLUMNS} FROM alerts WHERE id = ?", (alert_id,)))
        if not rows:
            raise UnknownAlert(f"no alert {alert_id}")
        alert = alert_from_row(rows[0])
        if alert.status == AlertStatus.RESOLVED:  # first: a lane assigned since resolved its own alert
            raise InvalidArgument(f"alert {alert_id} is already resolved ({alert.resolution})")
        if (instead := assign_instead(alert.kind, alert.evidence, config)) is not None:
            raise InvalidArgument(f"alert {alert_id} is not resolved by hand: {instead}")
        allowed = OUTCOMES.get(alert.kind)
        if allowed is None:
            raise InvalidArgument(f"alert {alert_id} is a {alert.kind} alert, not one of reconciliation's")
        if outcome not in allowed:
            raise InvalidArgument(f"a {alert.kind} alert is resolved as one of: {', '.join(allowed)}")
        ev = alert.evidence
        suffix = f" ({note.strip()})" if note and note.strip() else ""
        if alert.kind == "reorder" and outcome == "ordered":
            if alert.status == AlertStatus.OPEN:
                return await tx.acknowledge_alert(alert_id, actor=actor)
            return alert
        write_off: WriteOff | None = None
        movement_id: int | None = None
        if outcome in ("theft", "damaged"):
            key = "unexplained_units" if outcome == "theft" else "suggested_units"
            units = _units(qty if qty is not None else ev.get(key, 0))
            if qty is None and expected_units is not None and units != expected_units:
                raise InvalidArgument(
                    f"alert {alert_id}'s evidence changed since the page was shown: it now has {units} units to write"
                    f" off, not {expected_units}. Nothing was written: reload the page and check before resolving"
                )
            if units == 0:
                raise InvalidArgument(f"nothing to write off for alert {alert_id}: say how many units (qty)")
            reason = Reason.SHRINKAGE if outcome == "theft" else Reason.DAMAGE
            write_off = WriteOff(_field(ev, "sku", alert_id), units, reason, _field(ev, "location", alert_id))
            text = f"{'theft confirmed' if outcome == 'theft' else 'damaged'}: {units} written off{suffix}"
        elif outcome == "count":
            if counted is None:
                raise InvalidArgument("a count resolution needs the counted quantity (counted)")
            sku, location = _field(ev, "sku", alert_id), _field(ev, "location", alert_id)
            result = await tx.count(
                sku, counted, actor=actor, ref=f"alert{alert_id}", location=location, kind=RESOLUTION_KIND
            )
            movement_id = result.adjustment_movement_id
            text = f"counted {result.counted_qty} on the lane (book {result.book_qty}){suffix}"
        else:
            text = outcome.replace("_", " ") + suffix
        return await tx.resolve_alert(
            alert_id, actor=actor, resolution=text, write_off=write_off, movement_id=movement_id
        )

    return await ledger.transact(run)


def assign_instead(kind: str, evidence: dict[str, Any], config: str | None = None) -> str | None:
    """For an ``unassigned_lane`` alert, why it is not resolved by hand and what resolves it (assigning the lane a
    SKU), as one line; None for every other kind. ``config``: the hub's hub.toml, when the caller knows it (else
    ``hub.toml`` stands for it). ``ledger assign-lane`` works beside the running hub, which sends the node the
    assignment after its next hello (``hub.service.node_lanes``)."""
    if kind != AlertKind.UNASSIGNED_LANE:
        return None
    node, lane = evidence.get("node_id", "NODE"), evidence.get("lane_index", "LANE")
    toml = config or "hub.toml"
    return (
        f"lane {evidence.get('lane_id') or f'{lane} of node {node}'} has no SKU, and the alert resolves itself when"
        " the lane gets one (closed by hand, it would open again at the lane's next event):"
        f" smartshelf hub command --config {toml} {node} set-lane {lane} SKU while the node is connected; or"
        f" smartshelf ledger assign-lane --config {toml} --node {node} --lane {lane} --sku SKU, which the hub sends"
        " the node after its next hello"
    )


def _units(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidArgument(f"units must be a whole number >= 0, not {value!r}")
    return value


def _field(evidence: dict[str, Any], key: str, alert_id: int) -> str:
    """A text field of the evidence the ledger entry needs (an alert opened by hand may lack it)."""
    value = evidence.get(key)
    if not isinstance(value, str) or not value:
        raise InvalidArgument(
            f"alert {alert_id}'s evidence names no {key}, so no ledger entry can be posted for it:"
            " choose an outcome that posts none"
        )
    return value
