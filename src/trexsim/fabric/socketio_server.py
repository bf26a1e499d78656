"""The Socket.IO relay: ``trexsim fabric-server``, the hub the Socket.IO fabric's modules connect to.

As in the original T-REX, every module is a Socket.IO client of one server. The server is a
relay with MQTT's routing and nothing else: it does not decode the simulation's messages (the
modules do, and refuse what does not decode or does not belong), so the Socket.IO fabric carries
exactly the MQTT fabric's topics and payloads (docs/fabric.md).

- A client connects with the auth payload ``{"room": NAMESPACE, "subscriptions": [FILTER, ...],
  "will": [TOPIC, BASE64 PAYLOAD] or null, "client_id": ID}``. The room is the simulation's namespace
  (several simulations can share one server); filters are MQTT topic filters under it (``+`` one
  level, ``#`` the rest), e.g. ``trexsim/demo/sim/+``. A connection without a valid room or
  filters is refused with the reason.
- A ``bus`` event with arguments ``(topic, payload)`` (a topic under the room without wildcards, a
  binary payload) is relayed as the same ``bus`` event to every *other* client of the room with a
  matching filter. Relays are serialised: every client sees the messages it gets in one global
  order (stronger than MQTT's per-publisher order, which the fabric needs).
- When a client's connection drops before it has sent ``fabric_leave`` (crash, kill, network),
  its will is relayed as if it had sent it (MQTT's last will: the fabric announces a
  ``Goodbye``). ``fabric_leave`` (no arguments) withdraws the will before a clean disconnect.
- Anything else (another event name, wrong argument types, a topic outside the room, a payload
  over ``max_message_bytes``) is not relayed; the sender gets a ``fabric_error`` event
  ``(topic or event, reason)``, and the server counts it. An event more than 4 KiB over the limit
  closes the sender's connection instead (Engine.IO's own bound). Neither stops the server.

Open by default: the relay checks no credentials and no ACLs. Given the ``credentials.json`` of
``trexsim broker`` (``trexsim fabric-server --credentials FILE``), a client must log in to one of
its accounts (auth ``username``/``password``), and each account writes and reads only what its
Mosquitto ACL allows (:func:`account_acl`): a participant publishes only its own orders, meter
readings, hello and acknowledgements, and receives only its own settlements and the public topics.

Built on python-socketio's asyncio server with aiohttp (websocket transport), with Socket.IO's msgpack
parser: every packet is one binary websocket frame holding a msgpack map ``{type, nsp, data}``.
"""

from __future__ import annotations

import asyncio
import base64
import threading
from dataclasses import dataclass, field

BUS_EVENT = "bus"
ERROR_EVENT = "fabric_error"
LEAVE_EVENT = "fabric_leave"
# Socket.IO's msgpack parser (socket.io-msgpack-parser in JavaScript): a message with a binary payload is one
# websocket frame, where the default parser needs two (a JSON header and the attachment); measured ~1.7x the
# relay's throughput and ~40 % less CPU in the server and the clients
SERIALIZER = "msgpack"
DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024  # a Delivered message of 100,000 households is ~11 MB
MAX_SUBSCRIPTIONS = 64


@dataclass
class RelayStats:
    """What the relay has done since it started (read from the server's thread, or after it stops)."""

    relayed: int = 0  # bus events received and relayed (to zero or more clients)
    deliveries: int = 0  # copies sent to clients
    wills: int = 0  # last wills relayed for dropped connections
    refused: int = 0  # events not relayed (answered with fabric_error)
    clients: int = 0  # clients connected now
    reasons: list[str] = field(default_factory=list)  # the last refusals' reasons (at most 100)


def topic_matches(topic_filter: str, topic: str) -> bool:
    """MQTT filter matching: ``+`` matches one level, a final ``#`` the rest (including nothing)."""
    f_parts, t_parts = topic_filter.split("/"), topic.split("/")
    for i, f in enumerate(f_parts):
        if f == "#":
            return True
        if i >= len(t_parts) or (f != "+" and f != t_parts[i]):
            return False
    return len(f_parts) == len(t_parts)


def _check_auth(auth) -> tuple[str, list[str], tuple[str, bytes] | None]:
    """(room, filters, will) from a client's auth payload; ValueError with the reason if it is not valid."""
    if not isinstance(auth, dict):
        raise ValueError("connect with auth {'room': NAMESPACE, 'subscriptions': [FILTER, ...]}")
    room = auth.get("room")
    if not isinstance(room, str) or not room or len(room) > 256 or set(room) & set("+#\x00"):
        raise ValueError("auth 'room' must be a namespace of 1 to 256 characters without '+' or '#'")
    filters = auth.get("subscriptions", [])
    if (not isinstance(filters, list) or len(filters) > MAX_SUBSCRIPTIONS
            or not all(isinstance(f, str) and f.startswith(room + "/") and len(f) <= 512 for f in filters)):
        raise ValueError(f"auth 'subscriptions' must be at most {MAX_SUBSCRIPTIONS} topic filters under {room + '/'!r}")
    for f in filters:
        parts = f.split("/")
        if any(("+" in p or "#" in p) and p not in ("+", "#") for p in parts) or "#" in parts[:-1]:
            raise ValueError(f"topic filter {f!r}: '+' must be a whole level and '#' the last one")
    will = auth.get("will")
    if will is not None:
        try:
            if (not isinstance(will, (list, tuple)) or len(will) != 2 or not isinstance(will[0], str)
                    or not will[0].startswith(room + "/") or set(will[0]) & set("+#") or not isinstance(will[1], str)):
                raise ValueError
            will = (will[0], base64.b64decode(will[1], validate=True))
        except ValueError:  # binascii.Error is a ValueError
            raise ValueError(f"auth 'will' must be [TOPIC under {room + '/'!r}, base64 payload]") from None
    return room, filters, will


class _Client:
    __slots__ = ("room", "filters", "will", "eio_sid", "account", "reads", "writes", "writable")

    def __init__(self, room, filters, will, eio_sid, account=None, reads=None, writes=None):
        self.room, self.filters, self.will, self.eio_sid = room, filters, will, eio_sid
        self.account, self.reads, self.writes = account, reads, writes  # reads/writes None: no ACL (open relay)
        self.writable: dict[str, bool] = {}  # topic -> may this client write it (a cache)

    def may_read(self, topic: str) -> bool:
        return self.reads is None or any(topic_matches(f, topic) for f in self.reads)

    def may_write(self, topic: str) -> bool:
        ok = self.writable.get(topic)
        if ok is None:
            ok = self.writes is None or any(topic_matches(f, topic) for f in self.writes)
            if len(self.writable) < 10_000:
                self.writable[topic] = ok
        return ok


def account_acl(account: str, namespace: str) -> tuple[list[str], list[str]]:
    """(read filters, write filters) of an account: the ACL ``trexsim broker`` gives Mosquitto."""
    from trexsim.fabric.broker import acl_rules

    reads, writes = [], []
    for line in acl_rules(account, namespace):
        _, access, pattern = line.split(" ", 2)
        if "read" in access:
            reads.append(pattern)
        if "write" in access:
            writes.append(pattern)
    return reads, writes


def create_app(max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, credentials: dict | None = None):
    """The relay as an aiohttp application; returns ``(app, sio, stats)``.

    ``credentials``: a ``credentials.json`` of ``trexsim broker`` (``{namespace, accounts: {name:
    password}}``): then a client must log in (auth ``username``/``password``) to one of its accounts,
    in its namespace, and may write and read only the topics that account's ACL allows (the ones
    Mosquitto gets); a publish it may not make is refused with ``not authorized``. Without: an open
    relay.
    """
    import secrets

    import socketio
    from aiohttp import web
    from engineio import packet as eio_packet
    from socketio import packet as sio_packet

    accounts = None if credentials is None else dict(credentials["accounts"])
    secured_ns = None if credentials is None else str(credentials.get("namespace") or "").rstrip("/")
    # async_handlers=False: each client's events are handled in the order they arrived, inline
    sio = socketio.AsyncServer(async_mode="aiohttp", async_handlers=False, cors_allowed_origins="*", serializer=SERIALIZER,
                               max_http_buffer_size=max_message_bytes + 4096, logger=False, engineio_logger=False)
    app = web.Application(client_max_size=max_message_bytes + 4096)
    sio.attach(app)
    stats = RelayStats()
    clients: dict[str, _Client] = {}
    routes: dict[str, dict[str, list[tuple[str, str]]]] = {}  # room -> topic -> [(sid, eio sid)] (a cache)
    relay_lock = asyncio.Lock()

    async def refuse(sid: str, what: str, reason: str) -> None:
        stats.refused += 1
        stats.reasons.append(reason)
        del stats.reasons[:-100]
        await sio.emit(ERROR_EVENT, (what, reason), to=sid)

    def recipients(room: str, topic: str) -> list[tuple[str, str]]:
        cache = routes.setdefault(room, {})
        found = cache.get(topic)
        if found is None:
            found = [(sid, c.eio_sid) for sid, c in clients.items()
                     if c.room == room and any(topic_matches(f, topic) for f in c.filters) and c.may_read(topic)]
            if len(cache) < 100_000:  # topics are few (per account and kind); bounded all the same
                cache[topic] = found
        return found

    async def relay(sender_sid: str, room: str, topic: str, payload: bytes) -> None:
        # encode once, send the same Engine.IO packet(s) to every recipient (python-socketio's emit would
        # start one asyncio task per recipient and packet); under the lock no other relay interleaves
        encoded = sio.packet_class(sio_packet.EVENT, namespace="/", data=[BUS_EVENT, topic, payload]).encode()
        if not isinstance(encoded, list):
            encoded = [encoded]
        frames = [eio_packet.Packet(eio_packet.MESSAGE, p) for p in encoded]
        async with relay_lock:
            stats.relayed += 1
            for sid, eio_sid in recipients(room, topic):
                if sid != sender_sid:
                    stats.deliveries += 1
                    for frame in frames:
                        await sio.eio.send_packet(eio_sid, frame)

    def login(auth, room: str) -> tuple[str, list[str], list[str]]:
        user, password = auth.get("username"), auth.get("password")
        known = accounts.get(user) if isinstance(user, str) else None
        given = password.encode() if isinstance(password, str) else b""
        # compared in constant time; an unknown account costs as much as a wrong password
        matches = secrets.compare_digest((known or "").encode(), given)
        if known is None or not given or not matches:
            raise ValueError("not authorized: unknown account or wrong password")
        if room != secured_ns:
            raise ValueError(f"not authorized: this server serves the namespace {secured_ns!r}")
        return (user, *account_acl(user, room))

    @sio.event
    async def connect(sid, environ, auth):
        try:
            room, filters, will = _check_auth(auth)
            client = _Client(room, filters, will, sio.manager.eio_sid_from_sid(sid, "/"))
            if accounts is not None:
                client.account, client.reads, client.writes = login(auth, room)
                # the client id is bound to the login (as Mosquitto's use_username_as_clientid): the account's
                # name, or the name and a suffix (trexsim's <account>-<10 hex digits>)
                client_id = auth.get("client_id")
                if client_id is not None and not (isinstance(client_id, str) and (
                        client_id == client.account or client_id.startswith(client.account + "-"))):
                    raise ValueError(f"not authorized: client id {client_id!r} is not one of {client.account!r} "
                                     f"(its name, or its name and '-' and a suffix)")
                if will is not None and not client.may_write(will[0]):
                    raise ValueError(f"not authorized: {client.account!r} may not write its will's topic {will[0]!r}")
        except ValueError as exc:
            raise socketio.exceptions.ConnectionRefusedError(str(exc)) from None
        clients[sid] = client
        routes.pop(room, None)
        stats.clients += 1

    @sio.event
    async def disconnect(sid, reason=None):
        client = clients.pop(sid, None)
        if client is None:
            return
        routes.pop(client.room, None)
        stats.clients -= 1
        if client.will is not None:
            stats.wills += 1
            await relay(sid, client.room, *client.will)

    @sio.on(BUS_EVENT)
    async def bus(sid, *args):
        client = clients.get(sid)
        if client is None:
            return
        room = client.room
        if len(args) != 2 or not isinstance(args[0], str) or not isinstance(args[1], (bytes, bytearray)):
            kinds = ", ".join(type(a).__name__ for a in args)
            await refuse(sid, BUS_EVENT, f"a {BUS_EVENT!r} event carries (topic, binary payload), got ({kinds})")
            return
        topic, payload = args
        if not topic.startswith(room + "/") or set(topic) & set("+#"):
            await refuse(sid, topic, f"topic {topic!r} is not a topic under this client's room {room + '/'!r}")
            return
        if not client.may_write(topic):
            await refuse(sid, topic, f"not authorized: {client.account!r} may not write {topic!r}")
            return
        if len(payload) > max_message_bytes:
            await refuse(sid, topic, f"{len(payload)} bytes is over the server's limit of {max_message_bytes}")
            return
        await relay(sid, room, topic, bytes(payload))

    @sio.on(LEAVE_EVENT)
    async def leave(sid, *args):
        client = clients.get(sid)
        if client is not None:
            client.will = None

    @sio.on("*")
    async def other(event, sid, *args):
        await refuse(sid, str(event), f"unknown event {event!r}: this server relays only {BUS_EVENT!r} events")

    return app, sio, stats


async def _serve(host: str, port: int, max_message_bytes: int, on_ready, stop: asyncio.Event,
                 credentials: dict | None = None) -> None:
    """Serve until ``stop`` is set; ``on_ready(port, stats)`` once listening (port 0: the OS chose)."""
    from aiohttp import web

    app, sio, stats = create_app(max_message_bytes, credentials)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        on_ready(runner.addresses[0][1], stats)
        await stop.wait()
        # tell every client (their fabric then stops waiting with a clear error), then stop the ping tasks
        for sid in list(sio.manager.get_participants("/", None)):
            await sio.disconnect(sid[0])
        await sio.shutdown()
    finally:
        await runner.cleanup()


def run_server(host: str = "127.0.0.1", port: int = 5000, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
               on_ready=None, credentials: dict | None = None) -> RelayStats:
    """Serve until SIGINT or SIGTERM; ``on_ready(port, stats)`` is called once listening. Returns the counts."""
    import signal

    result: list[RelayStats] = []

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)

        def ready(actual_port: int, stats: RelayStats) -> None:
            result.append(stats)
            if on_ready is not None:
                on_ready(actual_port, stats)

        await _serve(host, port, max_message_bytes, ready, stop, credentials)

    asyncio.run(main())
    return result[0] if result else RelayStats()


class ServerThread:
    """The relay on a background thread of this process (tests, benchmarks, notebooks).

    ``with ServerThread() as server: ...`` serves on ``server.url`` (``socketio://127.0.0.1:PORT``,
    a free port unless one is given) and stops on leaving the block.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                 credentials: dict | None = None):
        self.host, self.port, self.max_message_bytes, self.credentials = host, port, max_message_bytes, credentials
        self.stats: RelayStats | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="trexsim-fabric-server", daemon=True)

    @property
    def url(self) -> str:
        return f"socketio://{self.host}:{self.port}"

    def start(self) -> "ServerThread":
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise self._error
        return self

    def _main(self) -> None:
        def ready(port: int, stats: RelayStats) -> None:
            self.port, self.stats = port, stats
            self._ready.set()

        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            await _serve(self.host, self.port, self.max_message_bytes, ready, self._stop, self.credentials)

        try:
            asyncio.run(main())
        except BaseException as exc:  # noqa: BLE001 - reported to the thread that started the server
            self._error = exc
            self._ready.set()

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def __enter__(self) -> "ServerThread":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
