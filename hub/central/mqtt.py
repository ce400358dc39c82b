"""The consumer's MQTT 5 connection: paho-mqtt's ``Client`` driven by this asyncio loop, acknowledging by hand.

Why not aiomqtt (which the hub publishes with): its ``Client`` acknowledges every QoS 1 message as soon as paho hands
it over (2.5.1 has no manual-ack API; the pull request adding one is open), and a message acknowledged before its
PostgreSQL transaction commits is lost if the consumer dies in between. paho-mqtt 2.x has the switch
(``Client(manual_ack=True)``, then ``ack(mid, qos)``) and documents the calls for driving it from an external event
loop (``on_socket_open`` / ``on_socket_close`` / ``on_socket_register_write`` / ``on_socket_unregister_write``,
``loop_read``, ``loop_write``, ``loop_misc``). This module is that driver, on paho's public API only: aiomqtt's
own driver is the same pattern, but reaching into it (``client._client``) would tie us to a private attribute.

* One ``Connection`` per network connection, with a fresh paho ``Client`` (``clean_start`` false, a fixed client
  id, a session expiry): the broker keeps the session, its subscription and every unacknowledged message while the
  consumer is away, and sends those again (DUP) when it comes back.
* A ``Delivery`` remembers the connection it came on. ``ack`` sends a PUBACK only on that same connection while
  it is up: a message id is a per-connection number, so a PUBACK for a message of an earlier connection could
  acknowledge whatever the broker numbered so on the new one, a message not yet committed. Those are dropped;
  the broker sends their messages again and the store's unique keys make that harmless.
* ``Receive Maximum`` (CONNECT property) caps the messages the broker sends without their PUBACK: the consumer's
  batch can never hold more.
* paho's ``connect`` blocks (DNS, TCP, TLS handshake): it runs in a worker thread; the socket callbacks it makes
  from there reach the loop through ``call_soon_threadsafe``. Everything else runs on the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import threading
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from hub.central.config import BrokerConfig

log = logging.getLogger("hub.central.mqtt")

CONNECT_TIMEOUT_S = 15.0


class BrokerError(Exception):
    """The broker could not be reached, refused the connection or the subscription; ``str()`` is one line."""


@dataclass(frozen=True, slots=True, eq=False)
class Delivery:
    """One PUBLISH from the broker, not yet acknowledged."""

    topic: str
    payload: bytes
    mid: int
    qos: int
    dup: bool
    connection: Connection = field(repr=False)
    received: float = 0.0  # loop time


class Connection:
    """One network connection to the broker: a paho client of its own, registered on the loop."""

    def __init__(self, cfg: BrokerConfig, loop: asyncio.AbstractEventLoop, deliveries: asyncio.Queue[Delivery]):
        self.cfg = cfg
        self.loop = loop
        self.deliveries = deliveries
        self.up = False  # CONNACK accepted and not lost since
        self.session_present = False
        self.dropped_qos0 = 0  # messages published at QoS 0 (not the contract's): dropped unread
        self.closed: asyncio.Future[str] = loop.create_future()  # why it ended, set once
        self._connack: asyncio.Future[tuple[ReasonCode, bool]] = loop.create_future()
        self._subacks: dict[int, asyncio.Future[list[ReasonCode]]] = {}
        self._fd = -1
        self._misc: asyncio.Task[None] | None = None
        self._loop_thread = threading.get_ident()  # made on the loop
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=cfg.client_id,
            protocol=MQTTProtocolVersion.MQTTv5,
            transport="tcp",
            reconnect_on_failure=False,
            manual_ack=True,
        )
        if cfg.username is not None:
            client.username_pw_set(cfg.username, cfg.password)
        if cfg.tls:
            client.tls_set_context(ssl.create_default_context(cafile=str(cfg.cafile) if cfg.cafile else None))
        client.connect_timeout = CONNECT_TIMEOUT_S
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_register_write
        client.on_socket_unregister_write = self._on_unregister_write
        self.client = client

    # ------------------------------------------------------------------------------------------- the public side

    async def open(self) -> None:
        """Connect, wait for CONNACK; BrokerError when that fails (nothing is left registered on the loop)."""
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self.cfg.session_expiry_s
        props.ReceiveMaximum = self.cfg.receive_maximum

        def connect() -> None:
            self.client.connect(self.cfg.host, self.cfg.port, self.cfg.keepalive_s, clean_start=False, properties=props)

        try:
            await self.loop.run_in_executor(None, connect)
        except (OSError, ValueError) as exc:  # DNS, TCP, TLS (ssl.SSLError is an OSError), a bad host
            self._end(f"cannot connect to {self.cfg.host}:{self.cfg.port}: {exc}")
            raise BrokerError(str(self.closed.result())) from None
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                waiting: set[asyncio.Future[Any]] = {self._connack, self.closed}
                done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        except TimeoutError:
            self.abort(f"no CONNACK from {self.cfg.host}:{self.cfg.port} within {CONNECT_TIMEOUT_S:g} s")
            raise BrokerError(self.closed.result()) from None
        if self._connack not in done:
            raise BrokerError(self.closed.result())
        reason, self.session_present = self._connack.result()
        if reason.is_failure:
            self.abort(f"the broker refused the connection: {reason}")
            raise BrokerError(self.closed.result())
        self.up = True
        self._misc = self.loop.create_task(self._misc_loop(), name="mqtt-keepalive")

    async def subscribe(self, topic: str, qos: int = 1) -> None:
        """Subscribe; BrokerError unless the broker grants ``qos``."""
        rc, mid = self.client.subscribe(topic, options=SubscribeOptions(qos=qos))  # (no noLocal: shared)
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            raise BrokerError(f"cannot subscribe to {topic}: {mqtt.error_string(rc)}")
        fut: asyncio.Future[list[ReasonCode]] = self.loop.create_future()
        self._subacks[mid] = fut
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            waiting: set[asyncio.Future[Any]] = {fut, self.closed}
            done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if fut not in done:
            raise BrokerError(f"connection lost while subscribing: {self.closed.result()}")
        codes = fut.result()
        if not codes or codes[0].is_failure or codes[0].value != qos:
            raise BrokerError(f"the broker refused the subscription {topic} at QoS {qos}: {codes[0] if codes else '?'}")

    def ack(self, d: Delivery) -> bool:
        """PUBACK for ``d`` if it came on this connection and the connection is still up; False otherwise (the
        broker will send the message again)."""
        if d.connection is not self or not self.up or d.qos == 0:
            return False
        rc = self.client.ack(d.mid, d.qos)
        return rc == MQTTErrorCode.MQTT_ERR_SUCCESS

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> bool:
        """Queue a PUBLISH on this connection (paho retransmits it while the connection lasts); False if down."""
        if not self.up:
            return False
        return self.client.publish(topic, payload, qos=qos).rc == MQTTErrorCode.MQTT_ERR_SUCCESS

    async def close(self) -> None:
        """A normal DISCONNECT (the session stays for its expiry), then the socket is closed."""
        if self.closed.done():
            return
        self.up = False
        with contextlib.suppress(Exception):
            self.client.disconnect()
            self.client.loop_write()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2.0):
                await asyncio.shield(self.closed)
        self.abort("closed")

    def abort(self, why: str) -> None:
        """Drop the connection now, without DISCONNECT (as a crash would)."""
        sock = self.client.socket()
        self._unregister()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()
        self._end(why)

    # ------------------------------------------------------------------------------------------ paho's callbacks

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any) -> None:
        if not self._connack.done():
            self._connack.set_result((reason, bool(flags.session_present)))

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any) -> None:
        self._end(f"disconnected: {reason}")

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, codes: list[ReasonCode], props: Any) -> None:
        fut = self._subacks.pop(mid, None)
        if fut is not None and not fut.done():
            fut.set_result(list(codes))

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: ReasonCode, props: Any) -> None:
        if reason.is_failure:
            log.warning("the broker refused a publish of ours (%d): %s", mid, reason)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            topic = message.topic
        except UnicodeDecodeError:  # a broker checks topics are UTF-8; paho raises on one that is not
            topic = "(not UTF-8)"
        if message.qos == 0:
            # The contract is QoS 1; Receive Maximum bounds only QoS 1 and 2 in flight, so a hub publishing at QoS 0
            # could fill this queue without end (while PostgreSQL is slow or down): dropped here, payload unkept.
            self.dropped_qos0 += 1
            if self.dropped_qos0 == 1 or self.dropped_qos0 % 10_000 == 0:
                log.warning("dropped %d QoS 0 message(s) (the contract is QoS 1), last on %s", self.dropped_qos0, topic)
            return
        self.deliveries.put_nowait(
            Delivery(topic, bytes(message.payload), message.mid, message.qos, bool(message.dup), self, self.loop.time())
        )

    def _on_socket_open(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        fd = sock.fileno()

        def register() -> None:
            if self.closed.done():
                return
            self._fd = fd
            self.loop.add_reader(fd, self._readable)

        self._call_on_loop(register)

    def _on_socket_close(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._call_on_loop(self._unregister)

    def _on_register_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        fd = sock.fileno()

        def register() -> None:
            if not self.closed.done() and fd >= 0:
                self.loop.add_writer(fd, self._writable)

        self._call_on_loop(register)

    def _on_unregister_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        fd = sock.fileno()
        self._call_on_loop(lambda: fd >= 0 and self.loop.remove_writer(fd))

    # ----------------------------------------------------------------------------------------------- internals

    def _call_on_loop(self, fn: Any) -> None:
        if threading.get_ident() == self._loop_thread:
            fn()
        elif not self.loop.is_closed():
            self.loop.call_soon_threadsafe(fn)

    def _readable(self) -> None:
        try:
            while True:
                rc = self.client.loop_read()
                if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    self.abort(f"connection lost: {mqtt.error_string(rc)}")
                    return
                sock = self.client.socket()
                pending = getattr(sock, "pending", None)  # TLS: decrypted bytes the selector cannot see
                if pending is None or pending() <= 0:
                    return
        except Exception as exc:  # a broken socket, a protocol error: the connection is over
            self.abort(f"connection lost: {exc}")

    def _writable(self) -> None:
        try:
            rc = self.client.loop_write()
        except Exception as exc:
            self.abort(f"connection lost: {exc}")
            return
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            self.abort(f"connection lost: {mqtt.error_string(rc)}")

    async def _misc_loop(self) -> None:
        while not self.closed.done():
            if self.client.loop_misc() != MQTTErrorCode.MQTT_ERR_SUCCESS:
                self.abort("connection lost: no answer to keep-alive")
                return
            await asyncio.sleep(1.0)

    def _unregister(self) -> None:
        if self._fd >= 0:
            self.loop.remove_reader(self._fd)
            self.loop.remove_writer(self._fd)
            self._fd = -1

    def _end(self, why: str) -> None:
        self.up = False
        self._unregister()
        # this client is done with the loop: paho's own clean-up (its __del__ closes the socket again, later, from
        # whichever thread collects it) must not call back into it
        for name in ("on_socket_open", "on_socket_close", "on_socket_register_write", "on_socket_unregister_write"):
            setattr(self.client, name, None)
        if not self.closed.done():
            self.closed.set_result(why)
        if self._misc is not None and self._misc is not asyncio.current_task():
            self._misc.cancel()
        for fut in self._subacks.values():
            if not fut.done():
                fut.cancel()
