"""``PubackClient``: aiomqtt's MQTT client plus what its ``publish`` hides.

aiomqtt 2.5's ``Client.publish(qos=1)`` returns when paho reports the PUBACK (paho's ``on_publish``, which aiomqtt
registers as its ``_on_publish``), **whatever the PUBACK's reason code**: an MQTT 5 broker that refuses a publish
(Mosquitto answers 0x87 *Not authorized* when the ACL does not let the user write the topic) is reported as
delivered. ``send`` takes the code from ``on_publish`` instead, and returns at once with a future of it, so that many
publishes can be in flight without a task each. The CONNACK's Receive Maximum (how many QoS 1 publishes the broker
takes unacknowledged) is kept too: paho does not limit itself to it.

This uses aiomqtt 2.x's internals: its paho client (``_client``) and the two callbacks it registers with paho
(``_on_publish``, ``_on_connect``); ``pyproject.toml`` keeps aiomqtt below 3 and ``tests/test_fleet_publisher.py``
checks the behaviour against a real Mosquitto (an ACL refusal does not move the cursor).

What else the publisher relies on (read from aiomqtt's source, checked by the tests): a publish in flight when the
connection drops is not failed but waits for its timeout (10 s by default), and paho keeps the message to send again
on that same client's next connect: a client per connection, publishing from the cursor, makes both moot.
Disconnection is seen through the ``messages`` iterator (it raises ``MqttError``).
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiomqtt
import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

FAILURE = 0x80  # MQTT 5 reason codes from 0x80 up are failures
NO_SUBSCRIBERS = 0x10  # a success code: the broker took it, no subscription did (the message is gone)
RECEIVE_MAXIMUM_DEFAULT = 65535  # a CONNACK without the property


class PubackClient(aiomqtt.Client):
    """aiomqtt's client, plus what its ``publish`` hides: each PUBACK's reason code, and the CONNACK's Receive
    Maximum. Uses aiomqtt 2.x's paho client (``_client``) and its ``on_publish`` / ``on_connect`` methods
    (``_on_publish`` / ``_on_connect``, registered with paho by its constructor)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.acks: dict[int, asyncio.Future[int]] = {}
        self.receive_maximum = RECEIVE_MAXIMUM_DEFAULT
        self.session_present = False

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any = None) -> None:
        self.session_present = bool(getattr(flags, "session_present", False))
        self.receive_maximum = int(getattr(properties, "ReceiveMaximum", RECEIVE_MAXIMUM_DEFAULT))
        super()._on_connect(client, userdata, flags, reason_code, properties)

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        future = self.acks.pop(mid, None)
        if future is not None and not future.done():
            future.set_result(int(getattr(reason_code, "value", 0)))
        super()._on_publish(client, userdata, mid, reason_code, properties)

    def send(self, topic: str, payload: bytes, *, retain: bool = False) -> asyncio.Future[int]:
        """Publish with QoS 1 without waiting; the future resolves with the PUBACK's reason code."""
        info = self._client.publish(topic, payload, 1, retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise aiomqtt.MqttCodeError(info.rc, "could not publish")
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.acks[info.mid] = future  # its PUBACK is read later, by the loop's reader callback
        return future


def reason(code: int) -> str:
    """An MQTT 5 PUBACK reason code as paho names it (``Not authorized``)."""
    try:
        return str(ReasonCode(PacketTypes.PUBACK, identifier=code))
    except Exception:
        return f"reason code 0x{code:02X}"
