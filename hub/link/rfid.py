"""RFID on the node link (protocol v1.2): what the hub keeps per node besides the ledger, and what a
``reader_health`` report is worth booking.

Tag events (``tag_seen`` / ``tag_lost``) are events of the node and go to the ledger like weight events
(``booking.SensorBooking.tag``); nothing of them is kept here. Per node this holds:

* each reader's last ``reader_health`` and when it came (the status snapshot, the nodes page);
* counters: tag events received, booked, duplicates; v1.0 ``rfid_seen`` / ``rfid_lost`` frames, which carry no
  sequence number (a lost frame would lose the sighting for good) and which no firmware sends: counted, never booked;
* ``report``: which ``reader_health`` reports the ledger needs (``hub.ledger.tags.ReaderReport``): a change of
  state; an outage the reader's counters show between two reports of the same boot (``silences`` or ``resets``
  went up while both reports said OK: the state change itself was missed, e.g. a frame lost); and, at most every
  ``CONFIRM_INTERVAL_MS`` while every reader of the node works, a confirmation that the node's present tags are
  still read (the node reports a tag lost once it is not read for its loss time, so a tag it still holds was read
  lately). Other reports only refresh the status.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hub.ledger.tags import CONFIRM_INTERVAL_MS, READER_OK, READER_STATES, ReaderReport
from shared_protocol.messages import ReaderHealth


@dataclass(slots=True)
class NodeRfid:
    node_id: int
    readers: dict[int, tuple[ReaderHealth, int]] = field(default_factory=dict)  # reader -> (last report, arrival ms)
    tags: int = 0  # tag events received
    tags_applied: int = 0
    tags_duplicates: int = 0
    v10_ignored: int = 0  # rfid_seen / rfid_lost frames (v1.0, unsequenced): counted, not booked
    confirmed_ms: int = 0  # when the node's present tags were last confirmed as read

    def restarted(self) -> None:
        """The node booted again: its readers start over (and their counters from 0)."""
        self.readers.clear()

    def report(self, msg: ReaderHealth, arrival_ms: int, uplink_seq: int | None = None) -> ReaderReport | None:
        """Remember the report; the ledger's part of it (carrying ``uplink_seq``, the frame's, persisted with it), or
        None when it changes nothing there."""
        previous = self.readers.get(msg.reader)
        self.readers[msg.reader] = (msg, arrival_ms)
        missed_from: int | None = None
        cause = ""
        if previous is not None:
            before, before_ms = previous
            same_boot = msg.reads >= before.reads and msg.silences >= before.silences and msg.resets >= before.resets
            if same_boot and before.state == READER_OK and msg.state == READER_OK:
                if msg.silences > before.silences:
                    missed_from, cause = before_ms, "silent between two reports"
                elif msg.resets > before.resets:
                    missed_from, cause = before_ms, "reset between two reports"
        all_ok = all(h.state == READER_OK for h, _ in self.readers.values())
        confirm = all_ok and arrival_ms - self.confirmed_ms >= CONFIRM_INTERVAL_MS
        changed = previous is None or previous[0].state != msg.state
        if not (changed or missed_from is not None or confirm):
            return None
        if confirm:
            self.confirmed_ms = arrival_ms
        return ReaderReport(self.node_id, msg.reader, arrival_ms, msg.state, confirm, missed_from, cause, uplink_seq)

    def status(self, now_ms: int) -> dict[str, Any]:
        """The node's RFID part of the hub's status (JSON-ready)."""
        return {
            "readers": [
                {
                    "reader": reader,
                    "state": READER_STATES.get(h.state, str(h.state)),
                    "reads": h.reads,
                    "bad_frames": h.bad_frames,
                    "resets": h.resets,
                    "silences": h.silences,
                    "present": h.present,
                    "reported_ms": ms,
                    "age_s": round(max(0, now_ms - ms) / 1000, 1),
                }
                for reader, (h, ms) in sorted(self.readers.items())
            ],
            "tag_events": self.tags,
            "tag_events_applied": self.tags_applied,
            "tag_events_duplicates": self.tags_duplicates,
            "v10_sightings_ignored": self.v10_ignored,
        }
