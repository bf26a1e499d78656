"""The Socket.IO relay: ``trexsim fabric-server``, the hub the Socket.IO fabric's modules connect to.

As in the original T-REX, every module is a Socket.IO client of one server. The server is a
relay and nothing else: it does not decode the simulation's messages (the modules do, and reject
what does not decode), so it is as protocol-agnostic as an MQTT broker.

- A client connects with the auth payload ``{"room": NAMESPACE, "client_id": ID}``; the room is
  the simulation's bus (several simulations can share one server, one room each). A connection
  without a room is refused.
- A ``bus`` event with one binary argument is relayed to every client in the sender's room,
  the sender included (its own message coming back tells it that everything before it has been
  delivered: the fabric's quiescence rule). Relays are serialised, so every client of a room sees
  one global order of messages, like subscribers of one MQTT topic.
- Anything else (another event name, a non-binary or missing argument, extra arguments, an event
  over ``max_message_bytes``) is not relayed; the sender gets a ``fabric_error`` event with the
  reason, and the server counts it. It never stops the server.

Built on python-socketio's asyncio server with aiohttp (websocket transport; HTTP long-polling
works too but is slower).
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field

BUS_EVENT = "bus"
ERROR_EVENT = "fabric_error"
DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024  # a Delivered message of 100,000 households is ~11 MB


@dataclass
class RelayStats:
    """What the relay has done since it started (read them from the server's thread or after it stops)."""

    relayed: int = 0  # bus events received and relayed
    refused: int = 0  # events not relayed (answered with fabric_error)
    clients: int = 0  # clients connected now
    reasons: list[str] = field(default_factory=list)  # the last refusals' reasons (at most 100)


def create_app(max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES):
    """The relay as an aiohttp application; returns ``(app, sio, stats)``."""
    import socketio
    from aiohttp import web
    from engineio import packet as eio_packet
    from socketio import packet as sio_packet

    # async_handlers=False: each client's events are handled in the order they arrived, inline
    sio = socketio.AsyncServer(async_mode="aiohttp", async_handlers=False, cors_allowed_origins="*",
                               max_http_buffer_size=max_message_bytes, logger=False, engineio_logger=False)
    app = web.Application(client_max_size=max_message_bytes)
    sio.attach(app)
    stats = RelayStats()
    room_of: dict[str, str] = {}  # sid -> room
    members: dict[str, dict[str, str]] = {}  # room -> {sid: engine.io sid}, in joining order
    relay_lock = asyncio.Lock()

    async def refuse(sid: str, reason: str) -> None:
        stats.refused += 1
        stats.reasons.append(reason)
        del stats.reasons[:-100]
        await sio.emit(ERROR_EVENT, reason, to=sid)

    @sio.event
    async def connect(sid, environ, auth):
        room = auth.get("room") if isinstance(auth, dict) else None
        if not isinstance(room, str) or not room or len(room) > 256:
            raise socketio.exceptions.ConnectionRefusedError(
                "connect with auth {'room': NAMESPACE} (a name of 1 to 256 characters)")
        room_of[sid] = room
        members.setdefault(room, {})[sid] = sio.manager.eio_sid_from_sid(sid, "/")
        stats.clients += 1

    @sio.event
    async def disconnect(sid, reason=None):
        room = room_of.pop(sid, None)
        if room is not None:
            stats.clients -= 1
            members[room].pop(sid, None)
            if not members[room]:
                del members[room]

    @sio.on(BUS_EVENT)
    async def bus(sid, *args):
        if len(args) != 1 or not isinstance(args[0], (bytes, bytearray)):
            await refuse(sid, f"a {BUS_EVENT!r} event carries exactly one binary payload "
                              f"(got {len(args)} argument(s){': ' + type(args[0]).__name__ if args else ''})")
            return
        room = room_of.get(sid)
        if room is None:
            return
        # encode once, send the same Engine.IO packets to everyone (python-socketio's emit would start
        # one asyncio task per recipient and packet); under the lock no other relay can interleave,
        # so all clients of the room see one order
        encoded = sio.packet_class(sio_packet.EVENT, namespace="/", data=[BUS_EVENT, bytes(args[0])]).encode()
        if not isinstance(encoded, list):
            encoded = [encoded]
        frames = [eio_packet.Packet(eio_packet.MESSAGE, p) for p in encoded]
        async with relay_lock:
            stats.relayed += 1
            for eio_sid in list(members.get(room, {}).values()):
                for frame in frames:
                    await sio.eio.send_packet(eio_sid, frame)

    @sio.on("*")
    async def other(event, sid, *args):
        await refuse(sid, f"unknown event {event!r}: this server relays only {BUS_EVENT!r} events")

    return app, sio, stats


async def _serve(host: str, port: int, max_message_bytes: int, on_ready, stop: asyncio.Event) -> None:
    """Serve until ``stop`` is set; ``on_ready(port, stats)`` once listening (port 0: the OS chose)."""
    from aiohttp import web

    app, sio, stats = create_app(max_message_bytes)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        on_ready(runner.addresses[0][1], stats)
        await stop.wait()
        await sio.shutdown()  # disconnects the clients and stops the ping tasks
    finally:
        await runner.cleanup()


def run_server(host: str = "127.0.0.1", port: int = 5000, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
               on_ready=None) -> RelayStats:
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

        await _serve(host, port, max_message_bytes, ready, stop)

    asyncio.run(main())
    return result[0] if result else RelayStats()


class ServerThread:
    """The relay on a background thread of this process (tests, benchmarks, notebooks).

    ``with ServerThread() as server: ...`` serves on ``server.url`` (``socketio://127.0.0.1:PORT``,
    a free port unless one is given) and stops on leaving the block.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES):
        self.host, self.port, self.max_message_bytes = host, port, max_message_bytes
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
            await _serve(self.host, self.port, self.max_message_bytes, ready, self._stop)

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
