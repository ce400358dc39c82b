"""Home Assistant MQTT discovery (``[homeassistant]`` in ``hub.toml``): the store's lanes, nodes and alerts as Home
Assistant entities on the store's own broker. ``payloads`` builds the discovery configs and states (no I/O),
``model`` reads the ledger into the topic -> payload map the broker should hold, ``bridge`` is the connection."""
