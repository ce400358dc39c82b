"""The hub's side of the multi-store tier (``README.md``: the wire contract and how delivery works).

* ``messages``   the wire contract in code: topics, ``encode_*``, the strict ``decode`` (``records``, ``decoding``);
                 the central consumer imports it, so it depends on nothing but the standard library.
* ``schema``     the publish cursor and the alert outbox (migration step 13).
* ``outbox``     reads of batches on a read-only connection; cursor and outbox writes through the ledger's writer.
* ``publisher``  ``FleetPublisher``: MQTT 5 to the broker (aiomqtt), started by the hub when ``[fleet]`` is there.

This module imports nothing, so that importing ``hub.fleet.messages`` (the central consumer) loads no MQTT client.
"""
