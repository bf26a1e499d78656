"""The MQTT fabric: every message goes through a real broker (e.g. Mosquitto), MQTT v5.

All of a simulation's messages travel on one topic, ``<namespace>/bus`` (QoS 1), each framed as
``[topic, sender, sequence, message]`` and encoded by :func:`trexsim.fabric.messages.encode`
(msgpack; arrays as raw bytes; every field type-checked on decoding). One topic gives every
subscriber the broker's single order of messages, and one publishing client's messages keep
their order, so a run whose modules share one MQTT client sees exactly the message order of the
in-process fabric — and records the identical ledger (tested against a real broker).

Handlers run on the caller's thread inside :meth:`MqttFabric.settle`, which the controller calls
after each of its messages: it dispatches arriving messages, in broker order, until every message
this client published has come back and been handled (quiescence). A message that cannot be
decoded is counted in :attr:`MqttFabric.rejected` and dropped; it never stops the run.

This is the first slice of the networked fabric: modules in separate processes or hosts (a
distributed barrier), per-participant credentials and ACLs, and Socket.IO come next.
"""

from __future__ import annotations

import itertools
import queue
import socket
import threading
import uuid
from typing import Any, Callable
from urllib.parse import urlparse

import msgspec

from trexsim.errors import MessageError, TrexsimError
from trexsim.fabric.messages import Ack, Hello, Message, SimulationEnd, _dec_hook, _enc_hook

ACK = "fabric/ack"
HELLO = "fabric/hello"
CONTROL_PREFIX = "sim/"  # the controller's messages: remote module processes acknowledge each one

Handler = Callable[[Any], None]


class _Envelope(msgspec.Struct, array_like=True):
    topic: str
    sender: str
    sequence: int
    message: Message


_ENCODER = msgspec.msgpack.Encoder(enc_hook=_enc_hook)
_DECODER = msgspec.msgpack.Decoder(_Envelope, dec_hook=_dec_hook)


def parse_mqtt_url(url: str) -> tuple[str, int, bool]:
    """``mqtt://host:port`` (or ``mqtts://`` for TLS) -> (host, port, tls)."""
    parsed = urlparse(url)
    if parsed.scheme not in ("mqtt", "mqtts") or not parsed.hostname:
        raise TrexsimError(f"fabric URL {url!r}: expected mqtt://HOST:PORT or mqtts://HOST:PORT")
    tls = parsed.scheme == "mqtts"
    return parsed.hostname, parsed.port or (8883 if tls else 1883), tls


class MqttFabric:
    """A fabric over an MQTT broker. ``url`` like ``mqtt://127.0.0.1:1883``."""

    def __init__(self, url: str, namespace: str = "trexsim", username: str | None = None,
                 password: str | None = None, timeout_s: float = 30.0, client_id: str | None = None):
        import paho.mqtt.client as mqtt
        from paho.mqtt.properties import Properties
        from paho.mqtt.packettypes import PacketTypes

        host, port, tls = parse_mqtt_url(url)
        self.topic = f"{namespace}/bus"
        self.timeout_s = timeout_s
        self.sender = client_id or f"trexsim-{uuid.uuid4().hex[:12]}"
        self.rejected = 0
        self._serving = False
        self._finished = False
        self._subscribers: dict[str, list[Handler]] = {}
        self._inbox: queue.Queue = queue.Queue()
        self._sequence = itertools.count()
        self._in_flight = 0
        self._acks_needed = 0  # remote module processes that acknowledge each controller message
        self._pending_acks: dict[int, int] = {}  # our sequence -> acknowledgements still missing
        self.hellos: list[Hello] = []
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self._error: str | None = None
        self._mqtt = mqtt
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.sender, protocol=mqtt.MQTTv5)
        if username is not None:
            client.username_pw_set(username, password)
        if tls:
            client.tls_set()
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.on_disconnect = self._on_disconnect
        self._client = client
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 0
        try:
            client.connect(host, port, keepalive=30, clean_start=True, properties=props)
        except OSError as exc:
            raise TrexsimError(f"cannot reach the MQTT broker at {url}: {exc}") from None
        # every round is a chain of small dependent messages: Nagle's algorithm would hold each one
        # back waiting for an ACK (≈ 40 ms a message here; TREX-Core lost most of its speed to this)
        sock = client.socket()
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.loop_start()
        if not self._connected.wait(timeout_s) or self._error:
            client.loop_stop()
            raise TrexsimError(f"MQTT broker at {url} refused the connection: {self._error or 'timed out'}")
        client.subscribe(self.topic, qos=1)
        if not self._subscribed.wait(timeout_s) or self._error:
            raise TrexsimError(f"MQTT broker at {url} refused the subscription to {self.topic}: {self._error or 'timed out'}")

    # ------------------------------------------------------------------ paho callbacks (network thread)
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self._error = str(reason_code)
        self._connected.set()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        failed = [str(rc) for rc in reason_codes if rc.is_failure]
        if failed:
            self._error = ", ".join(failed)
        self._subscribed.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self._error = f"disconnected: {reason_code}"

    def _on_message(self, client, userdata, msg) -> None:
        self._inbox.put(msg.payload)

    # ------------------------------------------------------------------ fabric API
    def subscribe(self, topic: str, handler: Handler) -> None:
        self._subscribers.setdefault(topic, []).append(handler)

    def expect_acks_from(self, n_processes: int) -> None:
        """From now on every controller message waits for ``n_processes`` remote acknowledgements."""
        self._acks_needed = int(n_processes)

    def wait_for_hellos(self, n: int, timeout_s: float | None = None) -> list[Hello]:
        """Dispatch until ``n`` module processes have announced themselves."""
        import time

        deadline = time.monotonic() + (timeout_s or self.timeout_s)
        while len(self.hellos) < n:
            try:
                payload = self._inbox.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise TrexsimError(f"{len(self.hellos)} of {n} module processes joined within the time limit") from None
            self._dispatch(payload)
        return self.hellos

    def publish(self, topic: str, message: Any) -> None:
        sequence = next(self._sequence)
        payload = _ENCODER.encode(_Envelope(topic, self.sender, sequence, message))
        if self._acks_needed and topic.startswith(CONTROL_PREFIX):
            self._pending_acks[sequence] = self._acks_needed
        counted = topic not in (ACK, HELLO)  # nobody waits for acks and hellos to come back
        if counted:
            self._in_flight += 1
        info = self._client.publish(self.topic, payload, qos=1)
        if info.rc != self._mqtt.MQTT_ERR_SUCCESS:
            self._in_flight -= counted
            raise TrexsimError(f"MQTT publish on {self.topic} failed: {self._mqtt.error_string(info.rc)}")

    def settle(self) -> None:
        """Dispatch arriving messages until everything this client published has been handled."""
        while self._in_flight > 0 or self._pending_acks:
            try:
                payload = self._inbox.get(timeout=self.timeout_s)
            except queue.Empty:
                raise TrexsimError(f"no message from the broker for {self.timeout_s} s with {self._in_flight} "
                                   f"in flight{': ' + self._error if self._error else ''}") from None
            self._dispatch(payload)

    def _dispatch(self, payload: bytes) -> None:
        try:
            envelope = _DECODER.decode(payload)
        except (msgspec.ValidationError, msgspec.DecodeError, ValueError) as exc:
            self.rejected += 1
            self.last_rejection = str(MessageError(str(exc)))
            return
        if envelope.sender == self.sender and envelope.topic not in (ACK, HELLO):
            self._in_flight -= 1
        if envelope.topic == ACK:
            ack = envelope.message
            if ack.acked_sender == self.sender and ack.acked_sequence in self._pending_acks:
                left = self._pending_acks[ack.acked_sequence] - 1
                if left:
                    self._pending_acks[ack.acked_sequence] = left
                else:
                    del self._pending_acks[ack.acked_sequence]
            return
        if envelope.topic == HELLO:
            if envelope.sender != self.sender:
                self.hellos.append(envelope.message)
            return
        for handler in self._subscribers.get(envelope.topic, ()):
            handler(envelope.message)
        if self._serving and envelope.sender != self.sender and envelope.topic.startswith(CONTROL_PREFIX):
            # published after every reaction: the broker's single order puts the reactions first
            self.publish(ACK, Ack(self.sender, envelope.sender, envelope.sequence))
            if isinstance(envelope.message, SimulationEnd):
                self._finished = True

    def serve(self, role: str) -> None:
        """Run as a module process: announce, then handle and acknowledge messages until SimulationEnd."""
        self._serving = True
        self._finished = False
        self.publish(HELLO, Hello(self.sender, role))
        while not self._finished:
            try:
                payload = self._inbox.get(timeout=self.timeout_s)
            except queue.Empty:
                raise TrexsimError(f"{role}: nothing from the controller for {self.timeout_s} s") from None
            self._dispatch(payload)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
