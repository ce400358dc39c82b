"""RFID on a shelf node (issue #12): UHF reader modules on UARTs, one antenna per lane behind an RF switch.

    uhf.py       UhfReader: the R200 / YRM100 / JRD-4035 class module's frames and commands, and the reader's life
                 (configure, inventory one antenna per dwell, verify its settings, survive reboots and silences)
    presence.py  Presence: which tag is on which lane (reads debounced, cross-reads settled by RSSI), bounded
    poller.py    RfidPoller: the node's fourth task: readers + switches + presence -> outbox records and
                 reader_health; AntennaSwitch

Only ``firmware/node.py`` imports this package, and only when the config has an ``rfid`` section: a node without
readers never loads it.
"""
