"""ALEX, the local market module: order intake and clearing.

It wraps the pure kernels of :mod:`trexsim.engine`; every rule is written there once.

Per round ``k`` (see README, "Timeline of a round"):

1. During round k it takes ``Orders`` for delivery round ``k + close_steps`` (or later, up
   to ``max_ahead_rounds``); an invalid order is rejected with a reason and never stops
   the market.
2. At the end of round k it clears every pool for delivery round ``k + close_steps`` and
   publishes the contracts (``Cleared``).

Delivery is not the market's: :mod:`trexsim.modules.delivery` settles each delivered round against the
meters, over the contracts of every market.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from trexsim.config.schema import MarketConfig
from trexsim.engine.checks import CLEARING_RULES
from trexsim.engine.intake import REASONS, reject_codes
from trexsim.engine.market_round import clear_checked, clearing_codes, unmatched_orders
from trexsim.engine.mechanisms import get_mechanism
from trexsim.engine.ties import RANDOM, participant_rank, place_batch, tie_break_code, tie_key
from trexsim.errors import ConservationError
from trexsim.fabric import topics
from trexsim.fabric.messages import (
    Accepted,
    Cleared,
    EpisodeStart,
    Orders,
    Rejected,
    Roster,
    RoundEnd,
    RoundStart,
)

REJECT_REASONS = {
    "malformed": "the message's arrays have different lengths or wrong types",
    "wrong_round": "the order was placed for another round than the current one (stale or early)",
    "unknown_participant": "participant index not in the roster (a whole number from 0 to participants - 1)",
    "bad_side": "side must be 0 (bid) or 1 (ask), exactly",
    "bad_pool": "pool must be 0 (non_dispatch) or 1 (dispatch), exactly",
    "quantity_not_finite": "quantity is NaN or infinite",
    "quantity_not_integer": "quantity must be a whole number of Wh (ALEX rule 7)",
    "quantity_not_positive": "quantity must be > 0 Wh",
    "quantity_too_large": "quantity above market.max_order_wh",
    "price_not_finite": "price is NaN or infinite",
    "price_out_of_range": "price outside [market.min_price, market.max_price]",
    "price_not_allowed": "price not in market.allowed_prices",
    "bad_order_id": "order_id must be a whole number",
    "delivery_too_near": "delivery round earlier than round + close_steps (past or too near), or already cleared",
    "delivery_too_far": "delivery round beyond round + close_steps + max_ahead_rounds",
    "delivery_after_episode": "delivery round after the episode's last round",
    "not_a_member": "the participant does not trade in this market (its members)",
    "unknown_market": "no market has this id (Orders.market), or the orders name none where there are several",
}

# the round's random order of the participants, drawn once for every market of the run (each market's book
# reads it; none writes it): with a street's and a community's markets, one draw instead of one per market
_shared_rank = lru_cache(maxsize=32)(participant_rank)

_REASON_NAMES = list(REASONS) + ["price_not_allowed", "bad_order_id", "not_a_member"]
_PRICE_NOT_ALLOWED = len(REASONS)
_BAD_ORDER_ID = len(REASONS) + 1
_NOT_A_MEMBER = len(REASONS) + 2


def _whole_int64(values: np.ndarray) -> np.ndarray:
    """Which values are whole numbers that fit in int64 (False for NaN, inf, 0.5, 2**63, text)."""
    try:
        v = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        return np.zeros(len(values), dtype=bool)
    with np.errstate(invalid="ignore"):
        return np.isfinite(v) & (v == np.floor(v)) & (np.abs(v) < 2.0**63)



def _recorded_index(values, pick: np.ndarray) -> np.ndarray:
    """Index values of rejected orders as stored: whole numbers as given, anything else -1 (so that
    participant 0.5 is never recorded as participant 0 or 1)."""
    v = np.asarray(values)[pick]
    if v.dtype.kind in "iu":
        return v.astype(np.int64)
    whole = _whole_int64(v)
    out = np.full(v.size, -1, dtype=np.int64)
    out[whole] = np.asarray(v, dtype=np.float64)[whole].astype(np.int64)
    return out


def _int64(values) -> np.ndarray:
    """As contiguous int64 (the compiled clearing's layout); whole-valued floats (already checked at intake)
    are converted exactly."""
    return np.ascontiguousarray(values, dtype=np.int64)


def _intake_admits(parent: MarketConfig, child: MarketConfig) -> bool:
    """Whether every order ``child`` books passes ``parent``'s intake as well: the child's price window, order
    size and price list lie within the parent's, and both snap prices alike (members, rounds and ids hold for
    leftovers by construction: a parent's members include its children's, and leftovers come for the round)."""
    if child.min_price < parent.min_price or child.max_price > parent.max_price or child.max_order_wh > parent.max_order_wh:
        return False
    if parent.allowed_prices is not None:
        return child.allowed_prices is not None and set(child.allowed_prices) <= set(parent.allowed_prices)
    return child.allowed_prices is None and child.price_tick == parent.price_tick


class _Book:
    """Accepted orders for one delivery round, appended batch by batch.

    ``rank``: each participant's place in the round's submission order (the roster position, or
    the round's random draw under ``tie_break: random``).
    """

    __slots__ = ("parts", "rank", "counts")

    def __init__(self, n_participants: int, rank: np.ndarray | None = None) -> None:
        self.parts: list[tuple[np.ndarray, ...]] = []
        self.rank = rank
        self.counts = np.zeros(n_participants, dtype=np.int64)  # orders booked so far, per participant

    def add(self, participant, side, pool, price, quantity_wh, order_id, placed_round: int = 0) -> np.ndarray:
        """Append a batch (contiguous int64 arrays, ``price`` float64); returns each order's place among its
        participant's orders in this book (0 for the first): with the round placed and the tie rank, it fixes
        the order's place in the submission order, whatever the arrival order of other participants' messages."""
        self.parts.append((participant, side, pool, price, quantity_wh, order_id,
                           np.full(participant.size, placed_round, dtype=np.int64)))
        position = place_batch(participant, self.counts)
        return position

    def arrays(self) -> tuple[np.ndarray, ...]:
        """participant, side, pool, price, quantity_wh, order_id and the round each order was placed in."""
        if len(self.parts) == 1:
            return self.parts[0]
        return tuple(np.concatenate(cols) for cols in zip(*self.parts))


class OrdersRouter:
    """One subscription to the orders topic for every market of a process.

    Each ``Orders`` goes to the market it names — every other market would drop it unread (``Market.on_orders``),
    so this changes no result, only how many handlers each message wakes (11 a message with ten streets and a
    community). One naming no market or an unknown one goes to every market, as without the router, so that the
    first market answers it (``unknown_market``)."""

    def __init__(self) -> None:
        self._by_id: dict[str, Market] = {}
        self._all: list[Market] = []

    def add(self, fabric, market: "Market") -> None:
        if not self._all:  # subscribed where the first market's own subscription was
            fabric.subscribe(topics.ORDERS, self.on_orders)
        self._by_id[market.id] = market
        self._all.append(market)

    def on_orders(self, msg: Orders) -> None:
        market = self._by_id.get(msg.market)
        if market is not None:
            market.on_orders(msg)
            return
        for market in self._all:
            market.on_orders(msg)


class Market:
    def __init__(self, fabric, config: MarketConfig, n_participants: int, rounds_per_episode: int, seed: int = 0, *,
                 members: np.ndarray | None = None, market_ids: list[str] | None = None,
                 children: list[MarketConfig] = (), router: "OrdersRouter | None" = None):
        """``seed``: the study's seed, from which the ``random`` tie-break draws each round's order.

        With several markets (``market_ids``: every market's id, this one's among them): ``members``, the roster
        indices that may trade here (None: everyone); ``children``, the markets that hand this one what they left
        unmatched (it clears a delivery round once all of them have). The first market of ``market_ids`` also
        refuses orders naming no market or an unknown one, so that no order goes unanswered."""
        self.fabric = fabric
        self.config = config
        self.id = config.id
        self.market_ids = list(market_ids) if market_ids is not None else [self.id]
        self._only = len(self.market_ids) == 1
        self._answers_unknown = self.market_ids[0] == self.id
        self.member_mask = None
        self.member_count = n_participants if members is None else len(members)
        if members is not None and len(members) < n_participants:
            self.member_mask = np.zeros(n_participants, dtype=bool)
            self.member_mask[np.asarray(members, dtype=np.int64)] = True
        self.parent = config.parent
        self.children = frozenset(c.id for c in children)
        # children whose every booked order passes this market's intake too: their leftovers are booked unchecked
        self._checked_children = frozenset(c.id for c in children if _intake_admits(config, c))
        self._awaiting: dict[int, int] = {}  # delivery round -> children still to hand over their leftovers
        self._round_over = -1  # the last round whose end this market has seen
        self.mechanism = get_mechanism(config.settlement)
        self._codes = clearing_codes(self.mechanism)
        self.tie_break = tie_break_code(config.tie_break)
        self.tie_key = tie_key(seed)
        self.close_steps = config.close_steps
        self.n = n_participants
        self.rounds = rounds_per_episode
        self.allowed_prices = None if config.allowed_prices is None else np.unique(np.asarray(config.allowed_prices, dtype=np.float64))
        self.episode = -1
        self.round = -1
        self._cleared_through = -1  # the last delivery round cleared in this episode
        self._books: dict[int, _Book] = {}
        fabric.subscribe(topics.ROSTER, self.on_roster)
        fabric.subscribe(topics.EPISODE_START, self.on_episode_start)
        fabric.subscribe(topics.ROUND_START, self.on_round_start)
        if router is None:
            fabric.subscribe(topics.ORDERS, self.on_orders)
        else:  # several markets in one process: one subscription hands each Orders to the market it names
            router.add(fabric, self)
        fabric.subscribe(topics.ROUND_END, self.on_round_end)

    # ------------------------------------------------------------------ bookkeeping
    def on_roster(self, msg: Roster) -> None:
        self.n = len(msg.participant_ids)

    def on_episode_start(self, msg: EpisodeStart) -> None:
        self.episode = msg.episode
        self.round = -1
        self._cleared_through = -1
        self._round_over = -1
        self._books.clear()
        self._awaiting.clear()

    def on_round_start(self, msg: RoundStart) -> None:
        self.round = msg.round

    # ------------------------------------------------------------------ intake
    def validate(self, msg: Orders) -> tuple[np.ndarray | None, list[str]]:
        """Accepted mask (None: every order accepted; empty: the message is refused whole) and the
        reasons of the rejected orders. Never raises on bad values."""
        n = len(msg.participant)
        lengths = {len(msg.side), len(msg.pool), len(msg.price), len(msg.quantity_wh), len(msg.order_id)}
        if lengths != {n}:
            return np.zeros(0, dtype=bool), ["malformed"] * max([n, *lengths])
        d = msg.delivery_round
        earliest = self.round + self.close_steps
        whole = ""
        if msg.episode != self.episode or msg.round != self.round:
            whole = "wrong_round"
        elif d < earliest or d <= self._cleared_through:
            # (an order for a round already cleared arrived after the round's end: too late to trade)
            whole = "delivery_too_near"
        elif d > earliest + self.config.max_ahead_rounds:
            whole = "delivery_too_far"
        elif d >= self.rounds:
            whole = "delivery_after_episode"
        if whole:
            return np.zeros(n, dtype=bool), [whole] * n
        codes = reject_codes(msg.participant, msg.side, msg.pool, msg.price, msg.quantity_wh, n_participants=self.n,
                             min_price=self.config.min_price, max_price=self.config.max_price,
                             max_quantity_wh=self.config.max_order_wh, member=self.member_mask,
                             not_member_code=_NOT_A_MEMBER)
        if self.allowed_prices is not None:
            # (a price off the list is named before membership, as the reasons are ordered)
            off_list = ((codes == 0) | (codes == _NOT_A_MEMBER)) & np.isnan(
                self._snap_allowed(np.asarray(msg.price, dtype=np.float64)))
            codes[off_list] = _PRICE_NOT_ALLOWED
        order_id = np.asarray(msg.order_id)
        if order_id.dtype.kind not in "iu":  # ids are whole numbers; a float id is refused, never truncated
            codes[(codes == 0) & ~_whole_int64(order_id)] = _BAD_ORDER_ID
        if not codes.any():
            return None, []
        ok = codes == 0
        return ok, [_REASON_NAMES[c] for c in codes[~ok]]

    def _snap_allowed(self, price: np.ndarray) -> np.ndarray:
        allowed = self.allowed_prices
        pos = np.clip(np.searchsorted(allowed, price), 0, allowed.size - 1)
        lower = np.clip(pos - 1, 0, allowed.size - 1)
        best = np.where(np.abs(allowed[lower] - price) < np.abs(allowed[pos] - price), lower, pos)
        out = allowed[best]
        return np.where(np.abs(out - price) <= 1e-9, out, np.nan)

    def _snap_price(self, price: np.ndarray) -> np.ndarray:
        if self.allowed_prices is not None:
            return self._snap_allowed(price)
        tick = self.config.price_tick
        snapped = price / tick
        np.rint(snapped, out=snapped)  # (what np.round gives, half to even, without its Python-level wrapper)
        snapped *= tick
        return snapped

    def on_orders(self, msg: Orders) -> None:
        market = msg.market
        if market != self.id and (market or not self._only):  # another market's, or naming none among several
            if self._answers_unknown and (market == "" or market not in self.market_ids):
                self._reject_all(msg, ["unknown_market"])
            return
        if msg.from_market:
            self._on_leftovers(msg)
            return
        self._book_orders(msg)

    def _on_leftovers(self, msg: Orders) -> None:
        """A child market's unmatched orders for ``msg.delivery_round``: booked, and once every child has handed
        its over and the round is over, the round is cleared."""
        d = msg.delivery_round
        if msg.from_market not in self.children:
            self._reject_all(msg, ["unknown_market"])
            return
        if msg.episode != self.episode or msg.round != self.round or d != self.round + self.close_steps \
                or self._awaiting.get(d, len(self.children)) <= 0:
            self._reject_all(msg, ["wrong_round"])
            return
        if len(msg.participant):
            self._book_orders(msg, checked=msg.from_market in self._checked_children)
        waiting = self._awaiting[d] = self._awaiting.get(d, len(self.children)) - 1
        if waiting == 0 and self._round_over == self.round:
            self._clear_and_publish(d)

    def _book_orders(self, msg: Orders, checked: bool = False) -> None:
        """``checked``: every order already passed an intake at least as strict as this market's."""
        try:
            ok, reasons = (None, []) if checked else self.validate(msg)
        except Exception as exc:  # a message we cannot even read is rejected whole, never fatal
            ok, reasons = np.zeros(0, dtype=bool), [f"malformed: {exc}"]
        if ok is not None:
            if ok.size == 0:
                if reasons:
                    self._reject_all(msg, reasons)
                return
            bad = ~ok
            self.fabric.publish(topics.REJECTED, Rejected(
                msg.episode, msg.round, msg.delivery_round,
                _recorded_index(msg.participant, bad), _recorded_index(msg.side, bad), _recorded_index(msg.pool, bad),
                np.asarray(msg.price, dtype=np.float64)[bad], np.asarray(msg.quantity_wh, dtype=np.float64)[bad],
                np.asarray(msg.order_id)[bad], reasons, market=self.id))
            if not ok.any():
                return
        book = self._books.get(msg.delivery_round)
        if book is None:
            rank = (_shared_rank(self.tie_key, self.episode, msg.delivery_round, self.n)
                    if self.tie_break == RANDOM else None)
            book = self._books[msg.delivery_round] = _Book(self.n, rank)
        if checked:  # a child's leftovers: booked there as they are here (same tick or price list, snapped)
            entry = (_int64(msg.participant), _int64(msg.side), _int64(msg.pool),
                     np.ascontiguousarray(msg.price, dtype=np.float64), _int64(msg.quantity_wh), _int64(msg.order_id))
        elif ok is None:
            entry = (_int64(msg.participant), _int64(msg.side), _int64(msg.pool),
                     self._snap_price(np.asarray(msg.price, dtype=np.float64)), _int64(msg.quantity_wh), _int64(msg.order_id))
        else:
            pick = lambda values: _int64(np.asarray(values)[ok])  # noqa: E731 - select before converting
            entry = (pick(msg.participant), pick(msg.side), pick(msg.pool),
                     self._snap_price(np.asarray(msg.price, dtype=np.float64)[ok]), pick(msg.quantity_wh),
                     pick(msg.order_id))
        position = book.add(*entry, placed_round=msg.round)
        rank = entry[0] if book.rank is None else book.rank[entry[0]]
        self.fabric.publish(topics.ACCEPTED, Accepted(msg.episode, msg.round, msg.delivery_round, *entry,
                                                      tie_rank=rank, batch_position=position, market=self.id))

    def _reject_all(self, msg: Orders, reasons: list[str]) -> None:
        def col(values, dtype):
            try:
                return np.asarray(values, dtype=dtype).ravel()
            except Exception:
                return np.zeros(0, dtype=dtype)

        arrays = [col(msg.participant, np.int64), col(msg.side, np.int64), col(msg.pool, np.int64),
                  col(msg.price, np.float64), col(msg.quantity_wh, np.float64), col(msg.order_id, np.int64)]
        n = min(len(a) for a in arrays)
        arrays = [a[:n] for a in arrays]
        if n == 0:
            arrays = [np.full(1, -1, dtype=np.int64), np.full(1, -1, dtype=np.int64), np.full(1, -1, dtype=np.int64),
                      np.full(1, np.nan), np.full(1, np.nan), np.full(1, -1, dtype=np.int64)]
            n = 1
        self.fabric.publish(topics.REJECTED, Rejected(msg.episode, msg.round, msg.delivery_round, *arrays, [reasons[0]] * n,
                                                      market=self.id))

    # ------------------------------------------------------------------ clearing
    def _clear(self, delivery_round: int) -> tuple[Cleared, tuple[np.ndarray, ...] | None]:
        """Every pool's book for ``delivery_round`` cleared: the round's contracts and, for a market with a
        parent, the orders it left unmatched (their remaining
        quantities; participant, side, pool, price, quantity_wh, order_id)."""
        book = self._books.pop(delivery_round, None)
        n = self.n
        if book is None:
            empty_i = np.zeros(0, dtype=np.int64)
            empty_f = np.zeros(0)
            cleared = Cleared(self.episode, self.round, delivery_round, empty_i, empty_i, empty_i, empty_i, empty_f,
                              empty_f, empty_i, empty_i, market=self.id)
            return cleared, (empty_i, empty_i, empty_i, empty_f, empty_i, empty_i)
        # "submission order" is by round placed, then place in the roster (or the round's random order),
        # then order within the batch, never by arrival time: the same book however the participants
        # are split over processes
        orders = book.arrays()
        c = clear_checked(self.mechanism, *orders, n, tie_break=self.tie_break, key=self.tie_key, episode=self.episode,
                          delivery_round=delivery_round, rank=book.rank, codes=self._codes, typed=True)
        if c.broken_rule:
            rule, index = c.broken_rule, c.broken_at
            where = f"match {index}" if rule < 10 else (f"order {index}" if rule == 10 else f"participant {index}")
            raise ConservationError(
                f"episode {self.episode}, round {self.round} (clearing delivery round {delivery_round}), mechanism "
                f"{self.mechanism.name!r}: broken rule: {CLEARING_RULES[rule]} ({where})")
        cleared = Cleared(self.episode, self.round, delivery_round, c.pool, c.buyer, c.seller, c.quantity_wh,
                          c.buyer_price, c.seller_price, c.bid_id, c.ask_id, market=self.id)
        if self.parent is None:
            return cleared, None
        i64 = lambda a: np.ascontiguousarray(a, dtype=np.int64)  # noqa: E731 - (a plug-in's clearing may give floats)
        return cleared, unmatched_orders(*orders[:6], i64(c.bid_index), i64(c.ask_index), i64(c.quantity_wh))

    def _clear_and_publish(self, delivery_round: int) -> None:
        self._cleared_through = delivery_round
        self._awaiting.pop(delivery_round, None)
        cleared, leftovers = self._clear(delivery_round)
        self.fabric.publish(topics.CLEARED, cleared)
        if self.parent is not None:  # what this market left unmatched goes up, for the same delivery round
            self.fabric.publish(topics.ORDERS, Orders(self.episode, self.round, delivery_round, *leftovers,
                                                      market=self.parent, from_market=self.id))

    def on_round_end(self, msg: RoundEnd) -> None:
        if msg.round != self.round:
            return
        self._round_over = msg.round
        delivery = msg.round + self.close_steps
        if delivery >= self.rounds:
            return
        if self.children and self._awaiting.setdefault(delivery, len(self.children)) > 0:
            return  # cleared when the last child market hands over what it left
        self._clear_and_publish(delivery)
