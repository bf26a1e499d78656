"""The Socket.IO fabric: modules in separate processes (or hosts) as clients of one Socket.IO server.

As in the original T-REX, every module process is a Socket.IO client (websocket transport) of one
relay, ``trexsim fabric-server`` (:mod:`trexsim.fabric.socketio_server`). The protocol is the networked
fabric's, as over MQTT: the same roles, topics, payloads, checks, barrier and catch-up
(:class:`~trexsim.fabric.protocol.NetworkFabric` and docs/fabric.md), so a run over Socket.IO records
the identical ledger to an in-process run (tested). Only the carriage differs:

- a message is a ``bus`` event with two arguments, the MQTT topic (``<ns>/sim/round_start``,
  ``<ns>/p/<account>/orders``, ...) and the binary payload ``[sender, sequence, message]``;
- a client states its topic filters and its last will (a ``Goodbye``) in its connection's auth
  payload; the server relays each ``bus`` event to the other clients whose filters match, in one
  global order, and the will of a client whose connection drops;
- an event the server will not relay is answered with ``fabric_error`` ``(topic, reason)``,
  kept in :attr:`SocketIOFabric.refused_publishes` (the broker's refusals on MQTT).

The bundled server checks no credentials (``username``/``password`` are sent in the auth payload
for a server that does): per-participant authentication and ACLs need the MQTT fabric.
"""

from __future__ import annotations

import base64
import threading
import time
from urllib.parse import urlparse

from trexsim.errors import TrexsimError
from trexsim.fabric.messages import Goodbye
from trexsim.fabric.protocol import _ENCODER, ROLES, NetworkFabric, _Envelope, url_credentials
from trexsim.fabric.socketio_server import SERIALIZER

BUS_EVENT = "bus"  # the Socket.IO event that carries every message: (MQTT topic, payload)
ERROR_EVENT = "fabric_error"  # the server's answer to an event it did not relay: (topic or event, reason)
LEAVE_EVENT = "fabric_leave"  # a clean departure: the server forgets the client's will


def parse_socketio_url(url: str) -> str:
    """``socketio://[user:pass@]host:port`` (``socketios://`` for TLS) -> the server's ``http(s)://host:port``."""
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

    python-socketio's threaded client hands each arriving Engine.IO message to a new thread, so two
    messages can be handled out of order (and a binary event's attachment can race its header).
    The fabric needs the server's order; handling each message on the read thread as it arrives
    keeps it, and costs nothing because the handler only queues the payload.
    """
    global _CLIENT_CLASS
    if _CLIENT_CLASS is None:
        import engineio
        import socketio

        class InOrderEngineIOClient(engineio.Client):
            def _trigger_event(self, event, *args, **kwargs):
                kwargs["run_async"] = False
                return super()._trigger_event(event, *args, **kwargs)

            def disconnect(self, abort=False, reason=None):
                # a disconnect the server asked for is now handled on the read thread, which cannot wait for itself
                if threading.current_thread() is self.read_loop_task:
                    abort = True
                return super().disconnect(abort=abort, reason=reason)

        class InOrderClient(socketio.Client):
            def _engineio_client_class(self):
                return InOrderEngineIOClient

        _CLIENT_CLASS = InOrderClient
    return _CLIENT_CLASS


class SocketIOFabric(NetworkFabric):
    """A fabric over a Socket.IO relay. ``url`` like ``socketio://127.0.0.1:5000``.

    The arguments are :class:`~trexsim.fabric.mqtt.MqttFabric`'s (``role``, ``account``,
    ``participant_ids``, ``timeout_s``, ``barrier_timeout_s``, ...); ``ca_file`` verifies a
    ``socketios://`` server (behind a TLS proxy).
    """

    def __init__(self, url: str, namespace: str = "trexsim", *, role: str = "coordinator", account: str | None = None,
                 username: str | None = None, password: str | None = None, participant_ids: list[str] | None = None,
                 timeout_s: float = 30.0, barrier_timeout_s: float = 10.0, max_message_bytes: int = 1 << 20,
                 ca_file: str | None = None, client_id: str | None = None, roster_size: int = 0,
                 accounts: list[str] | None = None):
        import socketio

        if role not in ROLES:
            raise TrexsimError(f"fabric role {role!r}: expected one of {', '.join(ROLES)}")
        base_url = parse_socketio_url(url)
        url_user, url_password = url_credentials(url)
        username = username or url_user
        password = password if password is not None else url_password
        # the protocol's state: this class is only how messages travel
        self._init_state(role, account, username, namespace, timeout_s, barrier_timeout_s, max_message_bytes, client_id,
                         participant_ids, roster_size, accounts)
        self._closing = False

        # the transport
        will = None
        if role in ("participants", "market"):
            # the server announces our departure if the connection drops (crash, kill, network)
            # (base64: a Socket.IO connection's auth payload cannot carry binary)
            goodbye = _ENCODER.encode(_Envelope(self.sender, -1, Goodbye(self.sender, self.account)))
            will = [self._mqtt_topic_hello(), base64.b64encode(goodbye).decode("ascii")]
        auth = {"room": self.ns, "client_id": self.sender, "subscriptions": self._subscriptions(), "will": will}
        if username is not None or password is not None:
            auth.update(username=username or self.account, password=password)
        options = {}
        if ca_file:
            if not url.startswith("socketios://"):
                raise TrexsimError(f"a CA file ({ca_file}) needs a TLS URL: socketios://HOST:PORT")
            options["websocket_extra_options"] = {"sslopt": {"ca_certs": ca_file}}
        # a dropped connection (a network blip, a restarted server) is retried for about timeout_s, as paho does
        # for the MQTT fabric; messages in the gap are lost, and the barrier takes the process back when its
        # acknowledgements resume (a server that says goodbye is not retried)
        client = _client_class()(reconnection=True, reconnection_delay=0.2, reconnection_delay_max=2.0,
                                 reconnection_attempts=max(1, int(self.timeout_s / 2.0)), randomization_factor=0.1,
                                 handle_sigint=False, logger=False, engineio_logger=False, serializer=SERIALIZER, **options)
        client.on(BUS_EVENT, self._on_bus)
        client.on(ERROR_EVENT, self._on_server_error)
        client.on("disconnect", self._on_socket_disconnect)
        client.on("connect_error", self._on_connect_error)
        client.on("connect", self._on_socket_connect)
        self._client = client
        try:
            client.connect(base_url, auth=auth, transports=["websocket"], wait_timeout=self.timeout_s)
        except socketio.exceptions.ConnectionError as exc:
            raise TrexsimError(f"cannot reach the Socket.IO server at {base_url} as {self.account!r}: "
                               f"{self._error or exc or 'refused'}") from None
        self._connected.set()
        self._subscribed.set()

    # ------------------------------------------------------------------ socketio callbacks (read thread)
    def _on_bus(self, *args) -> None:
        if len(args) == 2 and isinstance(args[0], str) and isinstance(args[1], (bytes, bytearray)):
            self._inbox.put((args[0], bytes(args[1])))
        else:  # not from the bundled server: refused as malformed when dispatched
            self._inbox.put(("", b""))

    def _on_server_error(self, what="", reason="", *rest) -> None:
        self.refused_publishes.append((str(what), str(reason)))

    def _on_connect_error(self, data=None) -> None:
        if isinstance(data, dict):  # the server's reason
            self._error = f"the server refused the connection: {data.get('message')}"
        else:  # the client's own (no server there, a network error)
            self._error = f"{data or 'connection failed'} (is `trexsim fabric-server` running there?)"

    def _on_socket_connect(self) -> None:
        self._error = None  # (re)connected

    def _on_socket_disconnect(self, reason=None) -> None:
        self.disconnects += 1
        if not self._closing and self._error is None:
            self._error = f"disconnected from the Socket.IO server ({reason})"

    # ------------------------------------------------------------------ transport
    def _transmit(self, topic: str, payload: bytes) -> None:
        import socketio

        try:
            self._client.emit(BUS_EVENT, (topic, payload))
        except socketio.exceptions.SocketIOError as exc:
            raise TrexsimError(f"Socket.IO send on {topic} failed: {self._error or exc}") from None

    # (no _stop_round_start_broadcast: the relay's filters are the connection's, and the copies on
    # sim/round_start are dropped unread; no _run_network_here: python-socketio's read thread feeds _inbox)

    def close(self) -> None:
        """Leave cleanly: withdraw the will, let the write thread send what is queued, then disconnect."""
        self._closing = True
        if not self._client.connected:
            self._client.shutdown()  # stops a reconnection in progress, if any
            return
        try:
            self._client.emit(LEAVE_EVENT)
        except Exception:  # noqa: BLE001 - already cut off: the server relays the will, as it should
            pass
        # python-socketio's disconnect closes the websocket at once, dropping whatever the write thread has
        # not sent yet (here: the last acknowledgements); wait until it has sent everything (bounded)
        eio = self._client.eio
        deadline = time.monotonic() + min(self.timeout_s, 5.0)
        while eio.queue.unfinished_tasks and eio.write_loop_task is not None and time.monotonic() < deadline:
            time.sleep(0.001)
        self._client.disconnect()
