"""Every message the modules exchange: frozen msgspec Structs in one tagged union.

Arrays (one entry per order or per participant, batched per round) are numpy arrays in
memory. On a networked fabric they travel as ``{dtype, shape, bytes}`` through
:func:`encode` / :func:`decode`, which also validate every field's type.

Schema evolution: a new field needs a default; a field's type never changes.
Participants are referred to by their index in :class:`Roster`, which is sent first.
"""

from __future__ import annotations

from typing import Any, Union

import msgspec
import numpy as np

# order sides and pools, as small integers in arrays
BID, ASK = 0, 1
NON_DISPATCH, DISPATCH = 0, 1
POOL_NAMES = ("non_dispatch", "dispatch")
SIDE_NAMES = ("bid", "ask")


class _Msg(msgspec.Struct, frozen=True, tag=True, array_like=False):
    pass


class Roster(_Msg):
    """Participant ids in index order; every array indexed by participant follows it."""

    participant_ids: list[str]


class EpisodeStart(_Msg):
    episode: int
    start_utc_s: int
    rounds: int
    interval_s: int


class EpisodeEnd(_Msg):
    episode: int


class SimulationEnd(_Msg):
    episodes: int


class RoundStart(_Msg):
    """Round ``round`` begins: orders may now be placed for ``delivery_round``."""

    episode: int
    round: int
    start_utc_s: int
    interval_s: int
    delivery_round: int


class RoundEnd(_Msg):
    """Round ``round`` is over: the market clears ``round + close_steps`` and settles ``round``."""

    episode: int
    round: int


class GridPrices(_Msg):
    """Net-billing prices [$/kWh] for rounds ``first_round ... first_round + len - 1``."""

    episode: int
    first_round: int
    buy_price: np.ndarray
    sell_price: np.ndarray


class Orders(_Msg):
    """A batch of bids and asks placed in ``round`` for delivery in ``delivery_round``."""

    episode: int
    round: int
    delivery_round: int
    participant: np.ndarray  # int index into the roster
    side: np.ndarray  # BID or ASK
    pool: np.ndarray  # NON_DISPATCH or DISPATCH
    price: np.ndarray  # $/kWh
    quantity_wh: np.ndarray  # whole Wh, > 0
    order_id: np.ndarray  # sender-chosen ids, unique per participant and episode
    # the market these orders are for ('': the only one); a market's own id in ``from_market`` when it hands
    # the orders it left unmatched to its parent market (participants never set it)
    market: str = ""
    from_market: str = ""


class Accepted(_Msg):
    """Orders the market took into its book (prices as booked, after snapping to the tick)."""

    episode: int
    round: int
    delivery_round: int
    participant: np.ndarray
    side: np.ndarray
    pool: np.ndarray
    price: np.ndarray
    quantity_wh: np.ndarray
    order_id: np.ndarray
    # where each order stands in the delivery round's submission order: its participant's place
    # (roster position, or the round's random draw) and its place in the book as it arrived
    tie_rank: np.ndarray | None = None
    batch_position: np.ndarray | None = None
    market: str = ""  # the market that booked them


class Rejected(_Msg):
    """Orders the market refused, with a reason each (see trexsim.modules.market.REJECT_REASONS)."""

    episode: int
    round: int
    delivery_round: int
    participant: np.ndarray
    side: np.ndarray
    pool: np.ndarray
    price: np.ndarray
    quantity_wh: np.ndarray
    order_id: np.ndarray
    reason: list[str]
    market: str = ""  # the market that refused them


class Cleared(_Msg):
    """Settled contracts for ``delivery_round``, decided at the end of ``round``."""

    episode: int
    round: int
    delivery_round: int
    pool: np.ndarray
    buyer: np.ndarray
    seller: np.ndarray
    quantity_wh: np.ndarray
    buyer_price: np.ndarray
    seller_price: np.ndarray
    bid_id: np.ndarray
    ask_id: np.ndarray
    market: str = ""  # the market that cleared them


class MeterReadings(_Msg):
    """What each participant's meter and battery did in ``round`` (integer Wh)."""

    episode: int
    round: int
    participant: np.ndarray
    load_wh: np.ndarray
    generation_wh: np.ndarray
    battery_charge_wh: np.ndarray
    battery_discharge_wh: np.ndarray
    battery_stored_wh: np.ndarray  # after the round (float)
    grid_only_net_wh: np.ndarray  # counterfactual: net energy with no market (own battery on self-consumption)


class Delivered(_Msg):
    """Delivery settlement of ``round`` per participant (every array indexed by roster)."""

    episode: int
    round: int
    grid_buy_price: float
    grid_sell_price: float
    net_meter_wh: np.ndarray
    bought_wh: np.ndarray
    sold_wh: np.ndarray
    grid_import_wh: np.ndarray
    grid_export_wh: np.ndarray
    shortfall_wh: np.ndarray
    unused_wh: np.ndarray
    battery_cover_wh: np.ndarray
    market_cost_usd: np.ndarray
    market_revenue_usd: np.ndarray
    grid_cost_usd: np.ndarray
    grid_revenue_usd: np.ndarray
    grid_only_cost_usd: np.ndarray
    auctioneer_surplus_usd: float


class DeliveredRows(Delivered):
    """A :class:`Delivered` cut to some participants' rows (what a networked fabric sends each participant
    account): ``participant`` holds their roster indices, every other array one entry per listed participant.
    The receiving fabric hands its modules a roster-length Delivered (other rows zero)."""

    participant: np.ndarray


class Hello(_Msg):
    """A module process joined the bus (networked fabrics). ``account``: the name its topics carry."""

    sender: str
    role: str
    account: str = ""


class Goodbye(_Msg):
    """A module process left the bus (its MQTT last will: the broker sends it when the connection drops)."""

    sender: str
    account: str = ""


class Error(_Msg):
    """The market refused a whole message from this module (see docs/fabric.md, "Rejections")."""

    episode: int
    round: int
    reason: str
    detail: str


class MarketResults(_Msg):
    """Public result of one clearing: ``trades`` contracts for ``delivery_round``, ``quantity_wh`` in all,
    at buyer prices from ``min_price`` to ``max_price`` [$/kWh] (quantity-weighted mean ``mean_price``; NaN if none)."""

    episode: int
    round: int
    delivery_round: int
    trades: int
    quantity_wh: int
    min_price: float
    max_price: float
    mean_price: float
    market: str = ""


class Ack(_Msg):
    """A module process has handled the controller's message ``(sender, sequence)`` and published what it caused."""

    sender: str
    acked_sender: str
    acked_sequence: int


class TCSchedule(_Msg):
    """The TC market's price schedule [$/kWh] for rounds ``first_round ... first_round + len - 1`` of a horizon.

    Pass ``iteration`` (from 0) of the market's predict-price-respond loop; every participant module answers
    each one with a :class:`TCPlan`. ``final``: the schedule as published (the market then also sends it as
    :class:`GridPrices`, which the market bills at).

    In a double auction (``tc.market: double_auction``) a schedule covers one price interval: the first
    (``final`` false) is the call for bids — ``buy_price`` the tariff, ``expected_price`` the market's
    expectation over the next day (the tariff plus yesterday's congestion at the same time) and
    ``price_cap`` —, answered with a :class:`TCPlan` that carries bids; the second (``final``) the cleared
    price, with ``fill`` the share of the bids at exactly that price that cleared (not answered)."""

    episode: int
    first_round: int
    iteration: int
    final: bool
    buy_price: np.ndarray
    sell_price: np.ndarray
    expected_price: np.ndarray | None = None
    price_cap: float = 0.0
    fill: float = 1.0


class TCPlan(_Msg):
    """A participant module's response to the :class:`TCSchedule` ``(episode, first_round, iteration)``: the
    planned net energy [Wh, + import] of its households (roster indices ``participant``) in every round of
    the horizon, round-major: ``net_wh[r * len(participant) + j]`` is household j's in round first_round + r.

    Answering a double auction's call for bids: ``net_wh`` is each household's unresponsive net energy over
    the interval (one value per household) and ``bid_*`` its price-responsive bids, one row each: roster
    index, price [$/kWh] and energy [Wh over the interval; > 0 buys at any price up to ``bid_price``, < 0
    sells (a battery discharging) at any price from it]."""

    episode: int
    first_round: int
    iteration: int
    participant: np.ndarray
    net_wh: np.ndarray
    bid_participant: np.ndarray | None = None
    bid_price: np.ndarray | None = None
    bid_wh: np.ndarray | None = None


class Bundle(_Msg):
    """Several messages in one payload (networked fabrics): handled in order, each as if it came alone.

    One a round each way between the coordinator and each participant process (docs/fabric.md, "One
    message a round each way"): to the process on its ``settlements`` topic, its rows of the market's
    results of the round that ended (``Rejected``, ``Cleared``, ``DeliveredRows``, ``Error``) and then the
    next ``RoundStart``; from it on ``p/<account>/round``, its ``MeterReadings``, its ``Orders`` and its
    ``Ack`` of that bundle. Which kinds a bundle may hold depends on its topic; a bundle never holds a bundle.
    """

    items: list[Union[RoundStart, Rejected, Cleared, DeliveredRows, Error, MeterReadings, Orders, Ack]]


def merge_meter_readings(parts: list["MeterReadings"], n_participants: int) -> "MeterReadings":
    """One round's readings of every participant from the messages of several participant modules.

    Participants nobody reported for read zero (no energy, no battery change recorded).
    """
    if len(parts) == 1 and len(parts[0].participant) == n_participants:
        return parts[0]
    first = parts[0]
    fields = {}
    for name in ("load_wh", "generation_wh", "battery_charge_wh", "battery_discharge_wh", "grid_only_net_wh"):
        fields[name] = np.zeros(n_participants, dtype=np.int64)
    fields["battery_stored_wh"] = np.zeros(n_participants)
    for part in parts:
        for name, arr in fields.items():
            arr[part.participant] = getattr(part, name)
    return MeterReadings(first.episode, first.round, np.arange(n_participants, dtype=np.int64), **fields)


Message = Union[
    Roster, EpisodeStart, EpisodeEnd, SimulationEnd, RoundStart, RoundEnd, GridPrices,
    Orders, Accepted, Rejected, Cleared, MeterReadings, Delivered, DeliveredRows, Hello, Ack, Goodbye, Error, MarketResults,
    TCSchedule, TCPlan, Bundle,
]


def _enc_hook(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        arr = np.ascontiguousarray(obj)
        return {"dtype": arr.dtype.str, "shape": list(arr.shape), "data": arr.tobytes()}
    if isinstance(obj, np.generic):
        return obj.item()
    raise NotImplementedError(f"cannot encode {type(obj).__name__}")


_ALLOWED_DTYPES = {"<i8", "<i4", "<f8", "<f4", "|b1", "|i1", "|u1", "<u4", "<u8", "<i2"}


def _dec_hook(kind: type, obj: Any) -> Any:
    if kind is np.ndarray:
        if not isinstance(obj, dict) or set(obj) != {"dtype", "shape", "data"}:
            raise ValueError("an array must be {dtype, shape, data}")
        if obj["dtype"] not in _ALLOWED_DTYPES:
            raise ValueError(f"array dtype {obj['dtype']!r} not allowed")
        shape = obj["shape"]
        # every array of the protocol is one-dimensional (one entry per order, participant or round)
        if not isinstance(shape, list) or len(shape) != 1 or not isinstance(shape[0], int):
            raise ValueError(f"an array's shape must be [length], got {shape!r}")
        if not isinstance(obj["data"], (bytes, bytearray, memoryview)):
            raise ValueError("an array's data must be bytes")
        arr = np.frombuffer(obj["data"], dtype=np.dtype(obj["dtype"]))
        if arr.size != shape[0]:
            raise ValueError(f"array of shape {shape} has {arr.size} values")
        return arr
    raise NotImplementedError(f"cannot decode {kind}")


_ENCODER = msgspec.msgpack.Encoder(enc_hook=_enc_hook)
_DECODER = msgspec.msgpack.Decoder(Message, dec_hook=_dec_hook)


def encode(msg: Message) -> bytes:
    """Serialise a message (msgpack, arrays as raw little-endian bytes)."""
    return _ENCODER.encode(msg)


def decode(data: bytes) -> Message:
    """Parse and type-check a message; raises trexsim.errors.MessageError naming the field."""
    from trexsim.errors import MessageError

    try:
        return _DECODER.decode(data)
    except (msgspec.ValidationError, msgspec.DecodeError, ValueError) as exc:
        raise MessageError(str(exc)) from None
