"""The node link: everything between a transport's raw frames and the ledger, per node and for the hub.

```
transport (serial, BLE) --raw frames--> ingest.Ingest --verified, by type--> booking.SensorBooking -> ledger
                                                   |                              commands.CommandDesk  -> audit
                                                   +--> session.NodeSession (per node: route, boot session, acks,
                                                        downlink reservation, transmit, jobs, stats)
```

* ``ingest``   Ingest: the transports' sink, verification and the dispatch from message type to handler.
* ``session``  NodeSession: one node's state and the methods that change it; ``transmit`` sends its downlink.
* ``booking``  SensorBooking: events and tag events (acks after commit, coalesced), lane readings, reader reports,
  sensor gaps, outbox skips.
* ``gaps``     pure sensor-gap detection from lane counters, tallies and marks.
* ``marks``    EventMarks (the contiguous committed mark), LaneTally (what the ledger holds per lane).
* ``commands`` command queue per node, CommandDesk (call, answer, timeout) and the audit records.
* ``jobs``     per-node jobs in arrival order (a bounded asyncio.Queue and one worker).
* ``rfid``     per node: its RFID readers' last reports (status), what of them the ledger needs, tag counters.
* ``restore``  sessions rebuilt from the ledger at start.

Who may call it: ``hub.service`` builds and stops it and reaches nodes through ``Ingest.command``; transports call
only ``Ingest.enqueue`` (the ``hub.transport.FrameSink``). Nothing here imports the web, reconciliation or tools.
"""
