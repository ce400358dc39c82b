"""RFID in the ledger: the records the node link submits, and how a tag's SKU is found.

Tags are observations, like lane readings: they never move stock. They are kept beside the movements (migration
7, ``schema._V7_RFID``) and booked by the one writer in the sensor batches (``tag_booking``):

* ``TagEvent``: a node's ``tag_seen`` / ``tag_lost`` (protocol v1.2). It takes its ``event_seq`` from the node's one
  event sequence, so it is booked exactly once under ``(node, event_seq)`` like a weight event (a re-sent one is a
  ``Duplicate``) and the node's contiguous mark, hence its ack, covers it only once committed. Its time is the
  node's: the arrival (first read) of a seen tag, the departure (last read on the lane) of a lost one. Its
  ``Applied`` outcome holds the id of its ``tag_events`` row.
* ``TagRecheck``: the node restarted (a hello with a new boot count). A node keeps its tags in RAM, so after a
  restart it reads every tag again (``tag_seen``) and never reports those that left while it was down: each tag
  present on its lanes is marked *unconfirmed* until read again; ``expire_unconfirmed`` (run by reconciliation)
  later records those not read again as gone at an unknown time, never as a departure the rules could judge.
* ``ReaderReport``: a reader's state from ``reader_health``, submitted when it changes (and periodically while
  every reader of the node works: that confirms the node's present tags are still read, ``last_read_ms``). Outages
  go to ``rfid_outages``: a tag leaving as its reader stopped reading is no evidence of tampering. Which reader
  serves which lane the hub does not know; but a tag read at ``t`` was on a reader that was reading at ``t``, so
  only an outage that began about then or later can be its reader's (``OUTAGE_SLACK_MS``).

**Which SKU a tag is.** The store's imported table (``epc_skus``) first, else the SKU whose GTIN the EPC's SGTIN
encodes (``epc.decode``), else unknown (the tag is still tracked). ``tag_sku_sql`` is that rule in SQL, used by
every reader (pages, API, reconciliation), so a table imported later names tags booked before it.

**Retention.** Tag events, outages that ended and the presence rows of tags gone are pruned after
``TAG_RETENTION_MS`` (``prune_tags``); the presence of tags still on a lane is never pruned, however old.
"""

from __future__ import annotations

from dataclasses import dataclass

SEEN, LOST, EXPIRED = "seen", "lost", "expired"
TAG_RETENTION_MS = 30 * 86_400_000  # tag events: a month, the span a loss-prevention investigation looks back over
# An outage that began this long before a tag's last read may still be its reader's (the outage's time and the read's
# come from different reports); one that began earlier is another reader's (``tag_booking.expire_unconfirmed``).
# Reconciliation's verdicts use its tag_window_s for the same (default 20 s).
OUTAGE_SLACK_MS = 20_000
CONFIRM_INTERVAL_MS = 60_000  # a node's present tags are confirmed as still read at most this often
READER_OK, READER_SILENT, READER_STARTING = 0, 1, 2  # reader_health.state (shared_protocol.messages)
READER_STATES = {READER_OK: "ok", READER_SILENT: "silent", READER_STARTING: "starting"}


@dataclass(frozen=True, slots=True)
class TagEvent:
    """One ``tag_seen`` / ``tag_lost`` of a node, ready for the ledger."""

    node_id: int
    event_seq: int
    lane_index: int
    kind: str  # SEEN | LOST
    epc: str  # upper-case hex (epc.epc_hex)
    ts_ms: int  # seen: the tag's first read (arrival); lost: its last read on the lane (departure)
    rssi: int | None = None  # seen: the strongest read of the debounce window (reader units)
    ts_known: bool = True  # False: from an earlier boot of the node (AGE_UNKNOWN): ts_ms is the hub's arrival
    uplink_seq: int | None = None  # the frame that carried it: persisted as nodes.last_uplink_seq

    @property
    def source_ref(self) -> str:
        """The same namespace as weight events: one event_seq is one event of the node, whichever kind."""
        return f"node:{self.node_id}:ev:{self.event_seq}"


@dataclass(frozen=True, slots=True)
class TagRecheck:
    """The node restarted at ``ts_ms``: its present tags are unconfirmed until it reads them again. ``uplink_seq``:
    the hello that said so, persisted as ``nodes.last_uplink_seq`` in the same transaction (a replayed hello is then
    refused as a replay, never rechecks again)."""

    node_id: int
    ts_ms: int
    uplink_seq: int | None = None


@dataclass(frozen=True, slots=True)
class ReaderReport:
    """A reader's ``reader_health`` that matters to the ledger: a change of state, an outage its counters show
    between two reports (``missed_from_ms``), or a report while every reader of the node works (``all_ok``), which
    confirms the node's present tags as read at ``ts_ms``."""

    node_id: int
    reader: int
    ts_ms: int
    state: int  # READER_OK | READER_SILENT | READER_STARTING
    all_ok: bool = False  # every reader of the node reported OK lately
    missed_from_ms: int | None = None  # the counters show an outage since this report time
    missed_cause: str = ""
    uplink_seq: int | None = None  # the frame that carried it: persisted as nodes.last_uplink_seq with it


def tag_sku_sql(alias: str) -> str:
    """The SKU a tag row (``alias`` has ``epc`` and ``gtin``) is: the imported table, else its GTIN's SKU, else
    NULL (unknown)."""
    return (
        f"coalesce((SELECT x.sku FROM epc_skus AS x WHERE x.epc = {alias}.epc),"
        f" (SELECT s.sku FROM skus AS s WHERE s.gtin = {alias}.gtin))"
    )
