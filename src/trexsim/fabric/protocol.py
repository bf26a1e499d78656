"""The networked fabric's protocol, independent of the transport: framing, roles and topics, the barrier,
catch-up and the gate. :class:`NetworkFabric` holds all of it; a transport
(:class:`~trexsim.fabric.mqtt.MqttFabric` over an MQTT v5 broker,
:class:`~trexsim.fabric.socketio.SocketIOFabric` over a Socket.IO relay) only connects, carries framed
payloads on topics (``_transmit``) and hands what arrives to ``_take``.

Each process holds some modules and one client of the transport with a *role*:

=============== ============================================ ==========================================
role            modules in the process                       reads (MQTT topics under ``<ns>/``)
=============== ============================================ ==========================================
``coordinator`` controller, grid, market, recorder            ``fabric/hello/+``, ``fabric/ack/+``,
                (and the households, if none run elsewhere)  ``p/+/orders``, ``p/+/meter``
``controller``  controller                                   ``fabric/hello/+``, ``fabric/ack/+``,
                                                             ``grid/+``
``market``      market, grid, recorder                       ``sim/+``, ``p/+/orders``, ``p/+/meter``
``participants`` a group of households (one or more)          ``sim/*`` but ``sim/round_end``, ``grid/+``,
                                                             ``p/<account>/settlements``
=============== ============================================ ==========================================

Messages between modules of one process are handed over in process, exactly as on
:class:`~trexsim.fabric.inprocess.InProcessFabric` (FIFO); what another process needs goes to the
broker on the topics of :mod:`trexsim.fabric.topics` (QoS 0, or 1 for a participant's first publish on a
topic, so that a refusal comes back), each payload a msgpack array
``[sender, sequence, message]``. The market's outputs go to each participant account as its own
rows only (``p/<account>/settlements``), plus a public :class:`MarketResults` per clearing. In the
coordinator those rows are held until the next round start and go with it in one :class:`Bundle` per
participant process, which answers with one :class:`Bundle` (meter readings, orders, its Ack) on
``p/<account>/round``: one message a round each way (docs/fabric.md).

Synchronisation (the barrier): after each controller message, :meth:`settle` dispatches arriving
messages until every live module process has acknowledged it (``fabric/ack/<account>``, published
after the process's reactions; one broker keeps one client's messages in order, so the reactions
arrive first). A participant process that has not answered within ``barrier_timeout_s``, or whose
connection dropped (its last will, :class:`Goodbye`), is marked absent and no longer waited for;
the event is logged in :attr:`events`. It rejoins with its next acknowledgement, or, if it
restarted, with its :class:`Hello`: the controller then sends it the roster, the episode and the
grid prices (catch-up). A market process is never dropped: without it the run stops with an error.

Every message from a participant is checked (:class:`_Gate`) before any module sees it: size,
schema, the topic's account holding the participants it names, the round, replayed order ids,
duplicate and out-of-range meter readings. A refused message is answered on the sender's
``settlements`` topic (``Rejected`` / ``Error``) and recorded (``rejections`` table, reasons in
:data:`FABRIC_REJECT_REASONS`); it never stops the market. Households that sent no valid meter
reading by the end of a round are settled from their profiles (``meter_fallback``).
"""


from __future__ import annotations


import itertools
import queue
import threading
import time
import uuid
from collections import deque
from typing import Any, Callable
from urllib.parse import unquote, urlparse

import msgspec
import numpy as np

from trexsim.errors import TrexsimError
from trexsim.fabric import topics
from trexsim.fabric.messages import (
    Accepted,
    Ack,
    Bundle,
    Cleared,
    Delivered,
    DeliveredRows,
    EpisodeEnd,
    EpisodeStart,
    Error,
    Goodbye,
    GridPrices,
    Hello,
    MarketResults,
    Message,
    MeterReadings,
    Orders,
    Rejected,
    Roster,
    RoundEnd,
    RoundStart,
    SimulationEnd,
    TCPlan,
    TCSchedule,
    _dec_hook,
    _enc_hook,
)
from trexsim.fabric.gate import Gate, _rows, account_members


Handler = Callable[[Any], None]
ROLES = ("coordinator", "controller", "market", "participants")

FABRIC_REJECT_REASONS = {
    "oversized": "the payload is larger than the fabric's max_message_bytes",
    "malformed": "the payload is not a message of the protocol (bad msgpack, unknown type, wrong field types, "
                 "arrays of different lengths, or a message kind that does not belong on that topic)",
    "unknown_account": "the topic names an account that is neither a participant id nor a group of this simulation",
    "participant_not_sender": "the message names a participant that the account on its topic does not hold",
    "wrong_round": "a meter reading for another round than the current one (stale or early)",
    "duplicate_order_id": "an order id not above the highest id of this participant's orders booked in the episode, "
                          "or not above the one before it in the same message (a replay)",
    "duplicate_meter": "a second meter reading for the same participant in the same round",
    "meter_out_of_range": "a meter reading with a negative energy, or a non-finite stored energy",
    "meter_missing": "no valid meter reading by the end of the round (late, crashed or disconnected): "
                     "settled from the participant's profile with its battery idle, the grid covering its contracts",
}

_CONTROL = (Roster, EpisodeStart, RoundStart, RoundEnd, EpisodeEnd, SimulationEnd)
_MARKET_OUT = (Accepted, Rejected, Cleared, Delivered)
_SIM_LEAF = {Roster: "roster", EpisodeStart: "episode_start", RoundStart: "round_start", RoundEnd: "round_end",
             EpisodeEnd: "episode_end", SimulationEnd: "end"}
_INBOX_KINDS = (Accepted, Rejected, Cleared, DeliveredRows, Error, Roster, EpisodeStart, GridPrices, Bundle)
# what a Bundle may hold: to a participant process (its settlements topic), its rows of the round's results, then
# the next round start (last); from it (p/<account>/round), its meter readings, its orders and its Ack (last)
_BUNDLE_DOWN = (Rejected, Cleared, DeliveredRows, Error, RoundStart)
_BUNDLE_UP = (MeterReadings, Orders, Ack)
MAX_BUNDLE_ITEMS = 64


class _Envelope(msgspec.Struct, array_like=True):
    sender: str
    sequence: int
    message: Message


_ENCODER = msgspec.msgpack.Encoder(enc_hook=_enc_hook)
_DECODER = msgspec.msgpack.Decoder(_Envelope, dec_hook=_dec_hook)


def url_credentials(url: str) -> tuple[str | None, str | None]:
    """The ``user:pass@`` part of a fabric URL (percent-decoded), or (None, None)."""
    parsed = urlparse(url)
    return (unquote(parsed.username) if parsed.username else None,
            unquote(parsed.password) if parsed.password is not None else None)


class _Node:
    """A module process as the controller sees it: keyed by (account, sender), its role from its account."""

    __slots__ = ("sender", "account", "role", "live", "warm")

    def __init__(self, sender: str, account: str, role: str) -> None:
        self.sender, self.account, self.role, self.live = sender, account, role, True
        self.warm = False  # has acknowledged a round start: loading its profiles is behind it

    @property
    def key(self) -> tuple[str, str]:
        return self.account, self.sender


# Hellos that start a (re)join, per account: a burst of HELLO_BURST, then one per HELLO_REFILL_S seconds. Each
# accepted Hello costs a catch-up (roster, episode, grid prices) to the account's settlements topic
HELLO_BURST = 3
HELLO_REFILL_S = 30.0


class NetworkFabric:
    """A fabric between processes: the protocol of the module doc over a transport (a subclass).

    ``role``: what this process holds (see the module doc). ``account``: the name on its topics and, with
    a password, its login (default: the role's name; required for ``participants``).
    ``participant_ids``: the roster, needed where the market runs (coordinator, market) to check who
    may speak for whom. ``timeout_s``: the longest wait for the transport or for an essential module;
    ``barrier_timeout_s``: how long a round waits for a participant process.
    """

    def _init_state(self, role: str, account: str | None, username: str | None, namespace: str, timeout_s: float,
                    barrier_timeout_s: float, max_message_bytes: int, client_id: str | None,
                    participant_ids: list[str] | None, roster_size: int, accounts: list[str] | None = None) -> None:
        """The protocol's state; a transport's ``__init__`` calls this first, then connects."""
        self.role = role
        self.account = account or (username if role == "participants" else None) or role
        if role == "participants" and self.account == role:
            raise TrexsimError("a participants process needs an account: a participant id or grp-<g>-of-<G>")
        if set(self.account) & topics.FORBIDDEN_IN_ACCOUNT:
            raise TrexsimError(f"account {self.account!r} may not contain '/', '+' or '#'")
        self.ns = namespace.rstrip("/")
        self.timeout_s = float(timeout_s)
        self.barrier_timeout_s = float(barrier_timeout_s)
        self.max_message_bytes = int(max_message_bytes)
        self.sender = client_id or f"{self.account}-{uuid.uuid4().hex[:10]}"
        self.rejected = 0  # messages refused (any reason), this process
        self.last_rejection = ""
        self.refused_publishes: list[tuple[str, str]] = []  # (MQTT topic, broker's reason) of publishes the broker refused
        self.events: list[dict] = []  # barrier events: late, left, rejoined, joined
        self.hellos: list[Hello] = []
        self.meter_fallback: Callable[[int, int, np.ndarray], MeterReadings] | None = None
        self._subscribers: dict[str, list[Handler]] = {}
        self._queue: deque[tuple[str, Any]] = deque()
        self._draining = False
        self._inbox: queue.Queue = queue.Queue()
        self._sequence = itertools.count()
        self._serving = False
        self._finished = False
        self._nodes: dict[tuple[str, str], _Node] = {}  # (account, sender) -> the module process
        self._account_node: dict[str, _Node] = {}  # account -> its one current process
        self._pending: dict[int, set[tuple[str, str]]] = {}  # our control message's sequence -> nodes still to acknowledge
        # the participant accounts of this run's layout (who holds which households); None: any account of the roster
        self.accounts: set[str] | None = set(accounts) if accounts is not None else None
        self._roster_ids: list[str] | None = list(participant_ids) if participant_ids is not None else None
        self._hello_budget: dict[str, list[float]] = {}  # account -> [tokens, last refill (monotonic s)]
        self._refused_accounts: set[tuple[str, str]] = set()  # (account, what) already told of in events
        self._first_round_sequence: int | None = None
        self._catch_up: list[Any] = []  # what a module joining mid-run needs: roster, episode, grid prices
        self._episode = -1
        self._round = -1
        self._roster_size = int(roster_size)
        self._order_id_offset = 0
        self._gate = Gate(self, participant_ids) if role in ("coordinator", "market") and participant_ids is not None else None
        self._remote_accounts: dict[str, np.ndarray] = {}  # participant accounts heard from -> their roster indices
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self._error: str | None = None
        self.disconnects = 0  # connection drops this process saw
        # one message a round each way (docs/fabric.md): the coordinator holds each account's rows of the market's
        # results until the next round start, which goes with them in one Bundle to the account's settlements topic;
        # a participant process answers such a bundle with one Bundle of what it published (meter, orders) and its Ack
        self._held: dict[str, list[Any]] = {}
        self._collecting: list[Any] | None = None
        self._bundled = False  # this participant process gets its round starts in bundles (then not on sim/round_start)


    # ------------------------------------------------------------------ topics
    def _mqtt_topic_hello(self) -> str:
        return f"{self.ns}/fabric/hello/{self.account}"

    def _subscriptions(self) -> list[str]:
        ns = self.ns
        return {
            "coordinator": [f"{ns}/fabric/hello/+", f"{ns}/fabric/ack/+", f"{ns}/p/+/orders", f"{ns}/p/+/meter",
                            f"{ns}/p/+/tc_plan", f"{ns}/p/+/round"],
            "controller": [f"{ns}/fabric/hello/+", f"{ns}/fabric/ack/+", f"{ns}/grid/+"],
            "market": [f"{ns}/sim/+", f"{ns}/p/+/orders", f"{ns}/p/+/meter"],
            # not sim/round_end: a household has nothing to do then, and every wake-up of every
            # participant process costs the round time (the market's results come before the next round start)
            "participants": [f"{ns}/sim/{leaf}" for leaf in _SIM_LEAF.values()
                             if leaf != "round_end" and not (self._bundled and leaf == "round_start")]
                            + [f"{ns}/grid/+", f"{ns}/p/{self.account}/settlements", f"{ns}/tc/schedule"],
        }[self.role]


    # ------------------------------------------------------------------ fabric API
    def subscribe(self, topic: str, handler: Handler) -> None:
        self._subscribers.setdefault(topic, []).append(handler)

    def publish(self, topic: str, message: Any) -> None:
        """Hand ``message`` to this process's subscribers and send what other processes need to the broker."""
        kind = type(message)
        if kind in _CONTROL:
            self._track_control(message)
            if self.role in ("coordinator", "controller"):
                if kind is RoundEnd and self._gate is not None:
                    self._gate.before_round_end(message)
                if kind is RoundStart and self.role == "coordinator":
                    sequence = self._start_round(message)
                else:
                    if kind is not RoundEnd:
                        self._flush_held()
                    sequence = self._send(f"{self.ns}/sim/{_SIM_LEAF[kind]}", message)
                    live = {s for s, node in self._nodes.items()
                            if node.live and (kind is not RoundEnd or node.role != "participants")}
                    if live:
                        self._pending[sequence] = live
                if kind is RoundStart and self._first_round_sequence is None:
                    self._first_round_sequence = sequence
        elif kind is GridPrices:
            self._track_control(message)
            if self.role in ("coordinator", "market"):
                self._send(f"{self.ns}/grid/prices", message)
        elif kind is Orders or kind is MeterReadings:
            if self.role == "participants":
                if kind is Orders and self._order_id_offset:
                    message = msgspec.structs.replace(message, order_id=message.order_id + self._order_id_offset)
                if self._collecting is not None:  # answering a round bundle: all of it goes in one message
                    self._collecting.append(message)
                else:
                    self._send(f"{self.ns}/p/{self.account}/{'orders' if kind is Orders else 'meter'}", message)
            elif kind is MeterReadings and self._gate is not None:
                self._gate.note_meter(message)
        elif kind in _MARKET_OUT and self.role in ("coordinator", "market"):
            self._project(message)
        elif kind is TCSchedule and self.role == "coordinator":
            # a pass of the TC market: settle() waits until every live participant process has answered it
            sequence = self._send(f"{self.ns}/tc/schedule", message)
            live = {s for s, node in self._nodes.items() if node.live and node.role == "participants"}
            if live:
                self._pending[sequence] = live
        elif kind is TCPlan and self.role == "participants":
            self._send(f"{self.ns}/p/{self.account}/tc_plan", message)
        self._queue.append((topic, message))
        if not self._draining:
            self._drain()

    def settle(self) -> None:
        """Dispatch arriving messages until every live module process has acknowledged our control messages.

        A participant process still silent after ``barrier_timeout_s`` is marked absent (see the module doc) —
        before its first round start, while it loads its profiles, after ``timeout_s``; an essential one (the
        market) still silent after ``timeout_s`` stops the run with an error.
        """
        if not self._pending:
            if self._nodes:
                # nobody to wait for (every process late or gone): still read what has arrived, so that a process
                # whose acknowledgements resume is taken back
                self._read_arrived()
            return
        self._run_network_here()
        start = time.monotonic()
        barrier_deadline = start + self.barrier_timeout_s
        hard_deadline = start + self.timeout_s
        while self._pending:
            now = time.monotonic()
            waiting = [self._nodes[s] for left in self._pending.values() for s in left]
            patient = any(n.role != "participants" or not n.warm for n in waiting)
            wait = (hard_deadline if patient and now >= barrier_deadline else barrier_deadline) - now
            try:
                mqtt_topic, payload = self._take(max(0.0, wait))
            except queue.Empty:
                now = time.monotonic()
                if now >= barrier_deadline:
                    self._drop_late(cold_too=now >= hard_deadline)
                if self._pending and now >= hard_deadline:
                    missing = sorted({self._nodes[s].account for left in self._pending.values() for s in left})
                    raise TrexsimError(f"no acknowledgement from {', '.join(missing)} for {self.timeout_s} s"
                                       f"{': ' + self._error if self._error else ''}") from None
                continue
            self._receive(mqtt_topic, payload)

    def _read_arrived(self, limit: int = 10_000) -> None:
        """Handle what has arrived (at most ``limit`` messages), without waiting."""
        self._run_network_here()
        for _ in range(limit):
            try:
                mqtt_topic, payload = self._take(0.0)
            except queue.Empty:
                return
            self._receive(mqtt_topic, payload)

    def wait_for_hellos(self, n: int, timeout_s: float | None = None) -> list[Hello]:
        """Dispatch until ``n`` module processes have announced themselves."""
        deadline = time.monotonic() + (timeout_s or self.timeout_s)
        self._run_network_here()
        while len(self.hellos) < n:
            try:
                mqtt_topic, payload = self._take(max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise TrexsimError(f"{len(self.hellos)} of {n} module processes joined within the time limit") from None
            self._receive(mqtt_topic, payload)
        return self.hellos

    def poll(self, duration_s: float) -> None:
        """Handle whatever arrives for ``duration_s`` (between rounds, e.g. to let a module rejoin)."""
        deadline = time.monotonic() + duration_s
        self._run_network_here()
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            try:
                mqtt_topic, payload = self._take(left)
            except queue.Empty:
                return
            self._receive(mqtt_topic, payload)

    def serve(self, role: str = "") -> None:
        """Run as a module process: announce, then handle and acknowledge messages until SimulationEnd."""
        self._serving = True
        self._finished = False
        self._run_network_here()
        hello = Hello(self.sender, role or self.role, self.account)
        self._send(self._mqtt_topic_hello(), hello)
        last_heard = time.monotonic()
        while not self._finished:
            try:
                mqtt_topic, payload = self._take(1.0)
            except queue.Empty:
                if time.monotonic() - last_heard > self.timeout_s:
                    raise TrexsimError(f"{self.account}: nothing from the controller for {self.timeout_s} s"
                                       f"{': ' + self._error if self._error else ''}") from None
                if self._episode < 0:
                    # nothing from a controller yet: it may have subscribed after our hello (modules start in any order)
                    self._send(self._mqtt_topic_hello(), hello)
                continue
            last_heard = time.monotonic()
            self._receive(mqtt_topic, payload)

    def abort(self, reason: str) -> None:
        """Tell every module process the run has stopped (an ``Error`` on ``sim/end``), so none waits out its timeout."""
        if self.role not in ("coordinator", "controller"):
            return
        try:
            self._send(f"{self.ns}/sim/end", Error(self._episode, self._round, "aborted", str(reason)[:500]))
            self._flush_network()  # let it out before the connection closes
        except Exception:  # noqa: BLE001 - the connection may be what failed; the processes then time out
            pass


    # ------------------------------------------------------------------ the transport under the protocol
    def _send(self, topic: str, message: Any) -> int:
        """Frame ``message`` (``[sender, sequence, message]``, msgpack) and hand it to the transport; returns its
        sequence number (what the barrier waits to see acknowledged)."""
        sequence = next(self._sequence)
        self._transmit(topic, _ENCODER.encode(_Envelope(self.sender, sequence, message)))
        return sequence

    def _transmit(self, topic: str, payload: bytes) -> None:
        """Carry one framed payload to every other process subscribed to ``topic`` (the transport's)."""
        raise NotImplementedError

    def _take(self, timeout_s: float) -> tuple[str, bytes]:
        """The next (topic, payload) that arrived, waiting up to ``timeout_s``; raises queue.Empty. A transport
        whose own thread reads the network puts what it reads in ``_inbox``."""
        return self._inbox.get(timeout=timeout_s)

    def _run_network_here(self) -> None:
        """Read the network in the calling thread from now on (serve, settle, ...), where the transport can."""

    def _flush_network(self) -> None:
        """Send what the transport still holds (before the connection closes)."""

    def _stop_round_start_broadcast(self) -> None:
        """This process gets its round starts in bundles now: stop reading ``sim/round_start``, where it can."""

    def close(self) -> None:
        raise NotImplementedError


    def _project(self, message: Any) -> None:
        """The market's output, cut to each participant account's own rows, to its ``settlements`` topic."""
        kind = type(message)
        if kind is Cleared:
            q = np.asarray(message.quantity_wh)
            total = int(q.sum())
            prices = np.asarray(message.buyer_price, dtype=np.float64)
            self._send(f"{self.ns}/market/results", MarketResults(
                message.episode, message.round, message.delivery_round, int(q.size), total,
                float(prices.min()) if q.size else float("nan"), float(prices.max()) if q.size else float("nan"),
                float((prices * q).sum() / total) if total else float("nan"), market=message.market))
        if kind is Accepted or (kind is Cleared and not len(message.quantity_wh)):
            return  # an order not refused was booked; no contracts, nothing to tell
        masks = self.__dict__.setdefault("_account_masks", {})
        n = self._gate.n if self._gate is not None else self._roster_size
        for account, members in self._remote_accounts.items():
            if kind is Delivered:
                part = DeliveredRows(participant=members, **{
                    f: (value[members] if isinstance(value, np.ndarray) else value)
                    for f in message.__struct_fields__ for value in (getattr(message, f),)})
            else:
                mask = masks.get(account)
                if mask is None or mask.size != n:
                    mask = masks[account] = np.zeros(n, dtype=bool)
                    mask[members] = True
                if kind is Cleared:
                    rows = mask[message.buyer] | mask[message.seller]
                else:  # Rejected: the rows of this account's participants (indices in the roster)
                    idx = np.asarray(message.participant, dtype=np.int64)
                    rows = mask[np.clip(idx, 0, n - 1)] & (idx >= 0) & (idx < n)
                if not rows.any():
                    continue
                part = _rows(message, rows)
            if self.role == "coordinator":  # goes with the next round start, in one message (_start_round)
                self._held.setdefault(account, []).append(part)
            else:
                self._send(f"{self.ns}/p/{account}/settlements", part)

    def _start_round(self, message: RoundStart) -> int | None:
        """The coordinator's round start: to each participant process, one Bundle on its settlements topic with its
        rows of the last round's results and then the RoundStart; waited for like a broadcast (one sequence per
        process). Returns the first bundle's sequence (None: no participant process)."""
        first = None
        for account, node in list(self._account_node.items()):
            if node.role != "participants":
                continue
            items = self._held.pop(account, [])
            items.append(message)
            sequence = self._send(f"{self.ns}/p/{account}/settlements", Bundle(items))
            if node.live:  # a late process gets it too: its acknowledgement takes it back
                self._pending[sequence] = {node.key}
            if first is None:
                first = sequence
        self._flush_held()  # rows of accounts heard from that have no process (never said hello)
        # and on sim/round_start for everyone else (observers, a process not yet known); a process that has had a
        # round bundle ignores it (and, over MQTT, unsubscribes from it)
        sequence = self._send(f"{self.ns}/sim/round_start", message)
        return sequence if first is None else first

    def _flush_held(self) -> None:
        """Send the market's results held for the next round start now (before any other control message)."""
        if not self._held:
            return
        held, self._held = self._held, {}
        for account, items in held.items():
            self._send(f"{self.ns}/p/{account}/settlements", items[0] if len(items) == 1 else Bundle(items))

    # ------------------------------------------------------------------ receiving
    def _drain(self) -> None:
        self._draining = True
        try:
            queue_, subscribers = self._queue, self._subscribers
            while queue_:
                topic, message = queue_.popleft()
                for handler in subscribers.get(topic, ()):
                    handler(message)
        finally:
            self._draining = False
            self._queue.clear()

    def _dispatch_local(self, message: Any) -> None:
        self._queue.append((topics.TOPIC_OF_KIND[type(message).__name__], message))
        if not self._draining:
            self._drain()

    def _track_control(self, message: Any) -> None:
        kind = type(message)
        if kind is Roster:
            self._roster_size = len(message.participant_ids)
            self._catch_up = [message]
            if self._roster_ids is None:
                self._roster_ids = list(message.participant_ids)
        elif kind is EpisodeStart:
            self._episode = message.episode
            self._round = -1
            self._catch_up = [m for m in self._catch_up if type(m) is Roster] + [message]
            if self._gate is not None:
                self._gate.on_episode_start(message)
        elif kind is GridPrices:
            if self.role in ("coordinator", "controller") and message.episode == self._episode:
                self._catch_up.append(message)
        elif kind is RoundStart:
            self._round = message.round
            if self._gate is not None:
                self._gate.on_round_start(message)

    def _refuse(self, account: str | None, reason: str, detail: str, message: Any = None) -> None:
        """Record a refused message from ``account`` and tell its sender why."""
        self.rejected += 1
        self.last_rejection = f"{reason}: {detail}"
        if self._gate is not None:
            self._gate.record(account, reason, message)
        if account is not None and self.role in ("coordinator", "market"):
            self._send(f"{self.ns}/p/{account}/settlements", Error(self._episode, self._round, reason, detail[:500]))

    def _receive(self, mqtt_topic: str, payload: bytes) -> None:
        """Check one message from the broker and hand it to this process's modules."""
        if self._bundled and mqtt_topic.endswith("/sim/round_start") and mqtt_topic == f"{self.ns}/sim/round_start":
            return  # had in this round's bundle already
        rest = mqtt_topic[len(self.ns) + 1:] if mqtt_topic.startswith(self.ns + "/") else ""
        parts = rest.split("/")
        account = parts[1] if len(parts) == 3 and parts[0] == "p" else None
        if len(payload) > self.max_message_bytes:
            return self._refuse(account, "oversized", f"{len(payload)} bytes on {mqtt_topic} (limit {self.max_message_bytes})")
        try:
            envelope = _DECODER.decode(payload)
        except (msgspec.ValidationError, msgspec.DecodeError, ValueError, TypeError) as exc:
            return self._refuse(account, "malformed", f"on {mqtt_topic}: {exc}")
        if envelope.sender == self.sender:
            return
        message = envelope.message
        kind = type(message)
        allowed = _allowed_kinds(parts)
        if kind not in allowed:
            return self._refuse(account, "malformed", f"a {kind.__name__} does not belong on {mqtt_topic}")
        if parts[0] == "fabric":
            return self._on_fabric(parts[2], message)
        if kind is Bundle:
            return self._receive_bundle(mqtt_topic, parts, account, envelope)
        if kind is Error and parts[0] == "sim":
            if self._serving:
                raise TrexsimError(f"{self.account}: the controller stopped the run: {message.detail}")
            return
        if account is not None and parts[2] == "tc_plan":
            members = self._gate.account_members(account) if self._gate is not None else None
            if members is None:
                return self._refuse(account, "unknown_account", f"{mqtt_topic}: no such account in this simulation")
            idx = np.asarray(message.participant, dtype=np.int64)
            if idx.shape != members.shape or not np.array_equal(np.sort(idx), np.sort(members)):
                return self._refuse(account, "participant_not_sender",
                                    f"a TCPlan must answer for exactly the account's households ({members.size})")
            net = np.asarray(message.net_wh)
            if net.size % max(idx.size, 1) or not np.all(np.isfinite(net)):
                return self._refuse(account, "malformed", "a TCPlan's net_wh must be finite, rounds x households values")
            if message.bid_wh is not None:  # a double auction's bids: the account's own households', finite, a few each
                who, price, wh = (np.asarray(getattr(message, f) if getattr(message, f) is not None else [])
                                  for f in ("bid_participant", "bid_price", "bid_wh"))
                if not (who.size == price.size == wh.size) or who.size > 3 * idx.size:
                    return self._refuse(account, "malformed", "a TCPlan's bids must be rows of participant, price and "
                                                              "energy, at most 3 a household")
                if not (np.all(np.isfinite(price.astype(float))) and np.all(np.isfinite(wh.astype(float)))):
                    return self._refuse(account, "malformed", "a TCPlan's bid prices and energies must be finite")
                if not np.isin(who, members).all():
                    return self._refuse(account, "participant_not_sender",
                                        "a TCPlan's bids must be for the account's own households")
            beyond = self._gate.plan_beyond_limits(message) if self._gate is not None else None
            if beyond:
                return self._refuse(account, "plan_out_of_range", beyond)
        elif account is not None and parts[2] in ("orders", "meter"):
            return self._admit(account, message)
        elif kind is DeliveredRows:
            message = _expand(message, self._roster_size)
        elif account is not None and kind in (Roster, EpisodeStart) and self._serving:
            # a catch-up after rejoining: order ids continue above the ones the lost process used
            self._order_id_offset = (1 << 38) + (time.time_ns() // 1_000_000) % (1 << 38)
        if kind in _CONTROL or kind is GridPrices:
            self._track_control(message)
            if kind is RoundEnd and self._gate is not None:
                self._gate.before_round_end(message)
        self._dispatch_local(message)
        if self._serving and parts[0] in ("sim", "tc"):
            # published after every reaction: the broker's order puts the reactions first
            self._send(f"{self.ns}/fabric/ack/{self.account}", Ack(self.sender, envelope.sender, envelope.sequence))
            if kind is SimulationEnd:
                self._finished = True

    def _admit(self, account: str, message: Any) -> None:
        """Orders or meter readings from a participant account: checked by the gate, then to the market."""
        if self._gate is None:
            return
        try:
            message = self._gate.admit(account, message)
            if message is not None:
                self._gate._admitting = account
                try:
                    self._dispatch_local(message)
                finally:
                    self._gate._admitting = None
        except (ValueError, TypeError, IndexError, OverflowError) as exc:
            # values no check foresaw: the message is refused, the market goes on
            self._queue.clear()
            self._refuse(account, "malformed", f"could not be handled: {exc}")

    def _receive_bundle(self, mqtt_topic: str, parts: list[str], account: str | None, envelope: _Envelope) -> None:
        """A Bundle: its items in order, each checked and handled exactly as if it had come alone on its own topic."""
        items = envelope.message.items
        upstream = parts[2] == "round"
        allowed = _BUNDLE_UP if upstream else _BUNDLE_DOWN
        last = Ack if upstream else RoundStart
        bad = [type(m).__name__ for m in items if type(m) not in allowed]
        if bad or len(items) > MAX_BUNDLE_ITEMS or any(type(m) is last for m in items[:-1]):
            return self._refuse(account, "malformed", f"a bundle on {mqtt_topic} holds at most {MAX_BUNDLE_ITEMS} of "
                                                      f"{', '.join(k.__name__ for k in allowed)} (a {last.__name__} only "
                                                      f"last){', not ' + bad[0] if bad else ''}")
        if upstream:  # a participant process's answer to a round bundle: meter readings, orders, acknowledgement
            if self._gate is None:
                return
            for m in items:
                if type(m) is Ack:
                    self._on_fabric(account, m)  # acts only on this account's own process, as on fabric/ack/<account>
                else:
                    self._admit(account, m)
            return
        start = items[-1] if items and type(items[-1]) is RoundStart else None
        for m in items:
            if m is start:
                break
            self._dispatch_local(_expand(m, self._roster_size) if type(m) is DeliveredRows else m)
        if start is None:
            return
        if not self._bundled:
            self._bundled = True
            self._stop_round_start_broadcast()
        self._track_control(start)
        if not self._serving:
            self._dispatch_local(start)
            return
        self._collecting = collected = []
        try:
            self._dispatch_local(start)
        finally:
            self._collecting = None
        # after every reaction, in the same message: the coordinator handles them in this order
        collected.append(Ack(self.sender, envelope.sender, envelope.sequence))
        self._send(f"{self.ns}/p/{self.account}/round", Bundle(collected))



    def _on_fabric(self, account: str, message: Any) -> None:
        """Hello, Goodbye and Ack from module processes (controller side).

        ``account`` is the topic's (``fabric/hello/<account>``, ``fabric/ack/<account>``), which only that
        account may write (the broker's or the relay's ACL): a process's role follows from it
        (:meth:`_role_of`), never from the message, and a message acts only on that account's own process.
        """
        if self.role not in ("coordinator", "controller"):
            return
        kind = type(message)
        key = (account, message.sender)
        node = self._nodes.get(key)
        where = {"episode": self._episode, "round": self._round, "account": account, "sender": message.sender}
        if kind is Hello:
            if node is not None:
                return  # a repeat (a process says hello every second until the controller speaks)
            role = self._role_of(account)
            if role is None:
                return self._note_refused(account, "refused_hello", where)
            if not self._take_hello_token(account):
                return self._note_refused(account, "hello_rate_limited", where)
            old = self._account_node.get(account)
            if old is not None:  # a restarted process (or one more from the same account): it replaces the old one
                if old.role != "participants" and self._first_round_sequence is not None:
                    raise TrexsimError(f"a second {old.role} process ({account}) joined mid-run: the run cannot go on")
                self._drop_node(old)
            node = _Node(message.sender, account, role)
            # joining mid-run: waited for like any process (the long start-up patience is for the first round only)
            node.warm = self._first_round_sequence is not None
            self._nodes[key] = node
            self._account_node[account] = node
            hello = Hello(message.sender, role, account)
            self.hellos = [h for h in self.hellos if h.account != account] + [hello]  # one per account
            if self._catch_up:  # joining mid-run: what it missed, on its own topic
                self.events.append({**where, "event": "joined"})
                for m in self._catch_up:
                    if type(m) is GridPrices:  # from the current round on: what it can still use
                        m = _prices_from(m, max(self._round, 0))
                        if m is None:
                            continue
                    self._send(f"{self.ns}/p/{account}/settlements", m)
        elif kind is Goodbye:
            if node is None:
                return  # not this account's process (or one already replaced): nothing to do
            if node.role != "participants":
                raise TrexsimError(f"the {node.role} process ({account}) lost its connection: the run cannot go on")
            if node.live:
                node.live = False
                self.events.append({**where, "event": "left"})
                self._forget(key)
        elif kind is Ack and node is not None:
            if (message.acked_sender == self.sender and self._first_round_sequence is not None
                    and message.acked_sequence >= self._first_round_sequence):
                node.warm = True
            if not node.live:
                node.live = True
                self.events.append({**where, "event": "rejoined"})
            left = self._pending.get(message.acked_sequence)
            if left is not None and message.acked_sender == self.sender:
                left.discard(key)
                if not left:
                    del self._pending[message.acked_sequence]

    def _role_of(self, account: str) -> str | None:
        """The role a process of ``account`` has on the bus, from the account alone; None: it has none here."""
        if account == "market":  # a separate market process: only where the market is not in this process
            return "market" if self.role == "controller" else None
        if account in topics.MODULE_ACCOUNTS or account == "observer":
            return None
        if self.accounts is not None:  # the run's layout says who holds households
            return "participants" if account in self.accounts else None
        if self._roster_ids is not None:
            index_of = {pid: i for i, pid in enumerate(self._roster_ids)}
            return "participants" if account_members(account, self._roster_ids, index_of) is not None else None
        return "participants"

    def _take_hello_token(self, account: str) -> bool:
        now = time.monotonic()
        budget = self._hello_budget.setdefault(account, [float(HELLO_BURST), now])
        budget[0] = min(float(HELLO_BURST), budget[0] + (now - budget[1]) / HELLO_REFILL_S)
        budget[1] = now
        if budget[0] < 1.0:
            return False
        budget[0] -= 1.0
        return True

    def _note_refused(self, account: str, event: str, where: dict) -> None:
        """One event per account and kind (a flood of refused hellos is not a flood of records)."""
        if (account, event) not in self._refused_accounts and len(self._refused_accounts) < 10_000:
            self._refused_accounts.add((account, event))
            self.events.append({**where, "event": event})

    def _drop_node(self, node: _Node) -> None:
        self._nodes.pop(node.key, None)
        if self._account_node.get(node.account) is node:
            del self._account_node[node.account]
        self._forget(node.key)

    def _drop_late(self, cold_too: bool) -> None:
        late = {k for left in self._pending.values() for k in left
                if self._nodes[k].role == "participants" and (cold_too or self._nodes[k].warm)}
        for key in late:
            node = self._nodes[key]
            node.live = False
            self.events.append({"episode": self._episode, "round": self._round, "account": node.account,
                                "sender": node.sender, "event": "late"})
            self._forget(key)

    def _forget(self, key: tuple[str, str]) -> None:
        for sequence in list(self._pending):
            left = self._pending[sequence]
            left.discard(key)
            if not left:
                del self._pending[sequence]



def _prices_from(message: GridPrices, first_round: int) -> GridPrices | None:
    """The rounds ``first_round ...`` of a block of grid prices (None if the block ends before)."""
    skip = max(0, first_round - message.first_round)
    if skip >= len(message.buy_price):
        return None
    if skip == 0:
        return message
    return GridPrices(message.episode, message.first_round + skip, message.buy_price[skip:], message.sell_price[skip:])


def _allowed_kinds(parts: list[str]) -> tuple:
    if parts == ["sim", "end"]:
        return _CONTROL + (Error,)  # an Error there: the controller stopped the run (abort)
    if len(parts) == 2 and parts[0] == "sim":
        return _CONTROL
    if parts == ["grid", "prices"]:
        return (GridPrices,)
    if parts == ["market", "results"]:
        return (MarketResults,)
    if parts == ["tc", "schedule"]:
        return (TCSchedule,)
    if len(parts) == 3 and parts[0] == "p":
        return {"orders": (Orders,), "meter": (MeterReadings,), "tc_plan": (TCPlan,), "round": (Bundle,),
                "settlements": _INBOX_KINDS}.get(parts[2], ())
    if len(parts) == 3 and parts[0] == "fabric":
        return {"hello": (Hello, Goodbye), "ack": (Ack,)}.get(parts[1], ())
    return ()


def _expand(message: DeliveredRows, n: int) -> Delivered:
    """A participant module's rows of a Delivered back to roster length (others' rows zero)."""
    idx = np.asarray(message.participant, dtype=np.int64)
    n = max(n, int(idx.max()) + 1 if idx.size else 0)
    fields = {}
    for f in Delivered.__struct_fields__:
        value = getattr(message, f)
        if isinstance(value, np.ndarray):
            full = np.zeros(n, dtype=value.dtype)
            full[idx] = value
            value = full
        fields[f] = value
    return Delivered(**fields)

