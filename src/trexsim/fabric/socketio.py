"""The Socket.IO fabric: every message goes through a Socket.IO server, as in the original T-REX.

Each module process is a Socket.IO client (websocket transport) of one relay,
``trexsim fabric-server`` (:mod:`trexsim.fabric.socketio_server`). A client joins the room named by
its ``namespace`` (one simulation's bus) and sends every message as a ``bus`` event with one binary
argument; the server relays each one to every client in the room, the sender included, in one
global order.

The payload is exactly the MQTT fabric's: a msgpack array ``[topic, sender, sequence, message]``
(:mod:`trexsim.fabric.messages` encoding, arrays as raw bytes, every field type-checked on
decoding). The synchronisation is also the MQTT fabric's: :meth:`SocketIOFabric.settle`
dispatches arriving messages, in server order, until every message this client published has
come back and been handled, and until every module process has acknowledged each controller
message (``fabric/ack``); module processes announce themselves with ``fabric/hello`` and run
:meth:`SocketIOFabric.serve`. So a run over Socket.IO records the identical ledger to an
in-process run (tested). A payload that does not decode is counted in
:attr:`SocketIOFabric.rejected` and dropped; it never stops the run.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
import uuid
from typing import Any, Callable
from urllib.parse import urlparse

import msgspec

from trexsim.errors import MessageError, TrexsimError
from trexsim.fabric.messages import Ack, Hello, Message, SimulationEnd, _dec_hook, _enc_hook

# the same logical topics and envelope as the MQTT fabric: one protocol, two transports
ACK = "fabric/ack"
HELLO = "fabric/hello"
CONTROL_PREFIX = "sim/"  # the controller's messages: remote module processes acknowledge each one
BUS_EVENT = "bus"  # the Socket.IO event that carries every message
ERROR_EVENT = "fabric_error"  # the server's answer to an event it did not relay

Handler = Callable[[Any], None]


class _Envelope(msgspec.Struct, array_like=True):
    topic: str
    sender: str
    sequence: int
    message: Message


_ENCODER = msgspec.msgpack.Encoder(enc_hook=_enc_hook)
_DECODER = msgspec.msgpack.Decoder(_Envelope, dec_hook=_dec_hook)


def parse_socketio_url(url: str) -> str:
    """``socketio://host:port`` (``socketios://`` for TLS) -> the server's ``http(s)://host:port``."""
    parsed = urlparse(url)
    if parsed.scheme not in ("socketio", "socketios") or not parsed.hostname:
        raise TrexsimError(f"fabric URL {url!r}: expected socketio://HOST:PORT or socketios://HOST:PORT")
    tls = parsed.scheme == "socketios"
    try:
        port = parsed.port or (443 if tls else 5000)
    except ValueError:
        raise TrexsimError(f"fabric URL {url!r}: the port is not a number from 0 to 65535") from None
    host = f"[{parsed.hostname}]" if ":" in parsed.hostname else parsed.hostname
    return f"{'https' if tls else 'http'}://{host}:{port}"


_CLIENT_CLASS = None


def _client_class():
    """socketio.Client whose arriving messages are handled in arrival order.

    python-socketio's threaded client hands each arriving Engine.IO message to a new thread, so
    two messages can be handled out of order (and a binary event's attachment can race its
    header). The bus needs the server's order; handling each message on the read thread as it
    arrives keeps it, and costs nothing here because the handler only queues the payload.
    """
    global _CLIENT_CLASS
    if _CLIENT_CLASS is None:
        import engineio
        import socketio

        class InOrderEngineIOClient(engineio.Client):
            def _trigger_event(self, event, *args, **kwargs):
                kwargs["run_async"] = False
                return super()._trigger_event(event, *args, **kwargs)

        class InOrderClient(socketio.Client):
            def _engineio_client_class(self):
                return InOrderEngineIOClient

        _CLIENT_CLASS = InOrderClient
    return _CLIENT_CLASS


class SocketIOFabric:
    """A fabric over a Socket.IO relay. ``url`` like ``socketio://127.0.0.1:5000``.

    The arguments are the MQTT fabric's. ``namespace`` names the room (the simulation's bus);
    ``username``/``password`` are sent in the connection's auth payload (the bundled relay does not
    check them); ``client_id`` is this client's sender name on the bus (default: random).
    """

    def __init__(self, url: str, namespace: str = "trexsim", username: str | None = None,
                 password: str | None = None, timeout_s: float = 30.0, client_id: str | None = None):
        import socketio

        base_url = parse_socketio_url(url)
        self.url = url
        self.room = namespace
        self.timeout_s = timeout_s
        self.sender = client_id or f"trexsim-{uuid.uuid4().hex[:12]}"
        self.rejected = 0
        self.last_rejection: str | None = None
        self.server_errors: list[str] = []  # fabric_error answers from the server (events it refused)
        self._serving = False
        self._finished = False
        self._subscribers: dict[str, list[Handler]] = {}
        self._inbox: queue.Queue = queue.Queue()
        self._sequence = itertools.count()
        self._in_flight = 0
        self._acks_needed = 0  # remote module processes that acknowledge each controller message
        self._pending_acks: dict[int, int] = {}  # our sequence -> acknowledgements still missing
        self.hellos: list[Hello] = []
        self._error: str | None = None
        self._closed = threading.Event()
        client = _client_class()(reconnection=False, handle_sigint=False, logger=False, engineio_logger=False)
        client.on(BUS_EVENT, self._on_bus)
        client.on(ERROR_EVENT, self._on_server_error)
        client.on("disconnect", self._on_disconnect)
        self._client = client
        auth = {"room": namespace, "client_id": self.sender}
        if username is not None:
            auth.update(username=username, password=password)
        try:
            client.connect(base_url, auth=auth, transports=["websocket"], wait_timeout=timeout_s)
        except socketio.exceptions.ConnectionError as exc:
            detail = str(exc) or "refused"
            raise TrexsimError(f"cannot reach the Socket.IO server at {url} ({base_url}): {detail}") from None

    # ------------------------------------------------------------------ socketio callbacks (read thread)
    def _on_bus(self, *args) -> None:
        self._inbox.put(args[0] if len(args) == 1 else args)

    def _on_server_error(self, reason=None, *rest) -> None:
        self.server_errors.append(str(reason))

    def _on_disconnect(self, reason=None) -> None:
        if not self._closed.is_set():
            self._error = f"disconnected from the Socket.IO server ({reason})"
            self._inbox.put(None)  # wakes a waiting settle() so that it can say so at once

    # ------------------------------------------------------------------ fabric API
    def subscribe(self, topic: str, handler: Handler) -> None:
        self._subscribers.setdefault(topic, []).append(handler)

    def expect_acks_from(self, n_processes: int) -> None:
        """From now on every controller message waits for ``n_processes`` remote acknowledgements."""
        self._acks_needed = int(n_processes)

    def wait_for_hellos(self, n: int, timeout_s: float | None = None) -> list[Hello]:
        """Dispatch until ``n`` module processes have announced themselves."""
        deadline = time.monotonic() + (timeout_s or self.timeout_s)
        while len(self.hellos) < n:
            payload = self._next(max(0.01, deadline - time.monotonic()),
                                 f"{len(self.hellos)} of {n} module processes joined within the time limit")
            self._dispatch(payload)
        return self.hellos

    def publish(self, topic: str, message: Any) -> None:
        import socketio

        sequence = next(self._sequence)
        payload = _ENCODER.encode(_Envelope(topic, self.sender, sequence, message))
        if self._acks_needed and topic.startswith(CONTROL_PREFIX):
            self._pending_acks[sequence] = self._acks_needed
        counted = topic not in (ACK, HELLO)  # nobody waits for acks and hellos to come back
        if counted:
            self._in_flight += 1
        try:
            self._client.emit(BUS_EVENT, payload)
        except socketio.exceptions.SocketIOError as exc:
            self._in_flight -= counted
            raise TrexsimError(f"Socket.IO publish to {self.url} failed: {self._error or exc}") from None

    def settle(self) -> None:
        """Dispatch arriving messages until everything this client published has been handled."""
        while self._in_flight > 0 or self._pending_acks:
            payload = self._next(self.timeout_s, f"no message from the Socket.IO server for {self.timeout_s} s "
                                                 f"with {self._in_flight} in flight")
            self._dispatch(payload)

    def _next(self, timeout_s: float, what: str):
        try:
            payload = self._inbox.get(timeout=timeout_s)
        except queue.Empty:
            raise TrexsimError(what + (f": {self._error}" if self._error else "")) from None
        if payload is None:
            raise TrexsimError(self._error or "disconnected from the Socket.IO server")
        return payload

    def _dispatch(self, payload) -> None:
        try:
            if not isinstance(payload, (bytes, bytearray)):
                raise MessageError(f"a {BUS_EVENT!r} event must carry one binary payload, got {type(payload).__name__}")
            envelope = _DECODER.decode(payload)
        except (msgspec.ValidationError, msgspec.DecodeError, ValueError, MessageError) as exc:
            self.rejected += 1
            self.last_rejection = str(exc if isinstance(exc, MessageError) else MessageError(str(exc)))
            return
        if envelope.sender == self.sender and envelope.topic not in (ACK, HELLO):
            self._in_flight -= 1
        if envelope.topic == ACK:
            ack = envelope.message
            if isinstance(ack, Ack) and ack.acked_sender == self.sender and ack.acked_sequence in self._pending_acks:
                left = self._pending_acks[ack.acked_sequence] - 1
                if left:
                    self._pending_acks[ack.acked_sequence] = left
                else:
                    del self._pending_acks[ack.acked_sequence]
            return
        if envelope.topic == HELLO:
            if envelope.sender != self.sender and isinstance(envelope.message, Hello):
                self.hellos.append(envelope.message)
            return
        for handler in self._subscribers.get(envelope.topic, ()):
            handler(envelope.message)
        if self._serving and envelope.sender != self.sender and envelope.topic.startswith(CONTROL_PREFIX):
            # published after every reaction: the server's single order puts the reactions first
            self.publish(ACK, Ack(self.sender, envelope.sender, envelope.sequence))
            if isinstance(envelope.message, SimulationEnd):
                self._finished = True

    def serve(self, role: str) -> None:
        """Run as a module process: announce, then handle and acknowledge messages until SimulationEnd."""
        self._serving = True
        self._finished = False
        self.publish(HELLO, Hello(self.sender, role))
        while not self._finished:
            self._dispatch(self._next(self.timeout_s, f"{role}: nothing from the controller for {self.timeout_s} s"))

    def close(self) -> None:
        self._closed.set()
        # the write thread sends what is queued (the last acknowledgements) before it closes the socket
        self._client.disconnect()
