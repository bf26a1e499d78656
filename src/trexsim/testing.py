"""Conformance checks for settlement mechanisms, for anyone who writes one.

>>> from trexsim.testing import check_mechanism
>>> check_mechanism("mcafee", max_examples=300)   # raises AssertionError with the book that broke it

:func:`check_mechanism` clears random order books (hypothesis; a test dependency:
``pip install "trexsim[test]"``, imported only when a check runs) the way the market does
(:func:`trexsim.engine.mechanisms.clear_round`: submission order under each tie-break rule, every
pool), then asks the market's own run-time checks (:mod:`trexsim.engine.checks`) whether the
result keeps the market's rules, so a rule is stated once, there:

- :func:`~trexsim.engine.checks.check_clearing`: no self-trade; no fill outside a limit price (a
  buyer never pays above its bid, a seller never receives below its ask); nobody filled beyond its
  order's quantity; the mechanism's declared ``budget_balance`` ('strong': each pair's buyer price
  equals its seller price; 'weak': the buyer price is never below the seller price, so the
  auctioneer's surplus is never negative); positive whole-Wh settlements, finite prices, matches
  that pair a bid with an ask of the same pool; contract totals that add up;
- :func:`~trexsim.engine.checks.check_delivery` on the contracts delivered against random meter
  readings: energy bought equals energy sold; buyers pay what sellers receive plus the auctioneer's
  surplus.

Checked here because the market's path cannot see it: the quantities the mechanism itself returns
are whole Wh (the market stores them as int64, which would truncate 1.5 Wh to 1), the match
arrays have one length, and the same book cleared twice gives the same matches (a run must be a
function of its config and seed).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trexsim.engine.checks import CLEARING_RULES, DELIVERY_RULES, auctioneer_surplus_usd, check_clearing, check_delivery
from trexsim.engine.delivery import settle_delivery
from trexsim.engine.mechanisms import Mechanism, clear_round, get_mechanism
from trexsim.engine.ties import TIE_BREAKS

__all__ = ["Book", "books", "check_book", "check_mechanism"]

_SIDES = ("bid", "ask")
_POOLS = ("non-dispatch", "dispatch")
_PRICE_GRID = tuple(round(0.06 + 0.01 * i, 4) for i in range(10))  # few prices: many ties and exact matches
_GRID_PRICES = (0.1449, 0.069)  # buy, sell [$/kWh] for the delivery check


@dataclass(frozen=True)
class Book:
    """One delivery round's order book, in arrival order (``placed_round``: the round each order was
    placed in), with the tie-break rule and key the market clears it under."""

    participant: np.ndarray  # int64 roster index
    side: np.ndarray  # 0 bid, 1 ask
    pool: np.ndarray  # 0 non-dispatchable, 1 dispatchable
    price: np.ndarray  # $/kWh
    quantity_wh: np.ndarray  # int64
    placed_round: np.ndarray  # int64
    n_participants: int
    tie_break: str = "submission"
    key: int = 0
    load_wh: np.ndarray | None = None  # meter readings for the delivery check (None: each meter equals its contracts)
    generation_wh: np.ndarray | None = None

    def __str__(self) -> str:
        lines = [f"book of {self.price.size} order{'s' * (self.price.size != 1)}, {self.n_participants} "
                 f"participant{'s' * (self.n_participants != 1)}, tie_break={self.tie_break!r}, "
                 f"key={self.key}", "  #  participant  side  pool          price $/kWh   quantity Wh  placed round"]
        for i in range(self.price.size):
            lines.append(f"  {i:<2} {int(self.participant[i]):<12} {_SIDES[int(self.side[i])]:<5} "
                         f"{_POOLS[int(self.pool[i])]:<13} {float(self.price[i]):<13.6g} {int(self.quantity_wh[i]):<12} "
                         f"{int(self.placed_round[i])}")
        if self.load_wh is not None:
            lines.append(f"  meters: load {self.load_wh.tolist()} Wh, generation {self.generation_wh.tolist()} Wh")
        return "\n".join(lines)


def _hypothesis():
    try:
        import hypothesis
        from hypothesis import strategies
    except ImportError:
        raise ImportError('trexsim.testing needs hypothesis (a test dependency): pip install "trexsim[test]"') from None
    return hypothesis, strategies


def books(max_orders: int = 12, max_participants: int = 6):
    """A hypothesis strategy of :class:`Book`: both pools, prices on a coarse grid (ties, exact
    matches) or any 1e-4 tick up to 10 $/kWh, quantities from 1 Wh to 10^9 Wh, orders placed in two
    rounds, every tie-break rule, random meters."""
    _, st = _hypothesis()

    @st.composite
    def _books(draw):
        n = draw(st.integers(1, max_participants))
        price = st.one_of(st.sampled_from(_PRICE_GRID), st.integers(0, 100_000).map(lambda t: t * 1e-4))
        quantity = st.one_of(st.integers(1, 50), st.integers(1, 5_000), st.integers(1, 10**9))
        orders = draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, 1), st.integers(0, 1), price, quantity,
                                         st.integers(0, 1)), max_size=max_orders))
        cols = list(zip(*orders)) if orders else [()] * 6
        i64 = lambda c: np.array(c, dtype=np.int64)  # noqa: E731
        meters = st.lists(st.integers(0, 2 * 10**9), min_size=n, max_size=n)
        with_meters = draw(st.booleans())
        return Book(i64(cols[0]), i64(cols[1]), i64(cols[2]), np.array(cols[3], dtype=np.float64), i64(cols[4]),
                    i64(cols[5]), n, draw(st.sampled_from(sorted(TIE_BREAKS))), draw(st.integers(0, 2**32)),
                    i64(draw(meters)) if with_meters else None, i64(draw(meters)) if with_meters else None)

    return _books()


def _mechanism(mechanism: Mechanism | str) -> Mechanism:
    return get_mechanism(mechanism) if isinstance(mechanism, str) else mechanism


def _fail(mechanism: Mechanism, book: Book, what: str) -> None:
    raise AssertionError(f"settlement mechanism {getattr(mechanism, 'name', type(mechanism).__name__)!r} broke a market "
                         f"rule: {what}\n{book}")


def check_book(mechanism: Mechanism | str, book: Book) -> None:
    """Clear one book as the market does and check the result; AssertionError naming the rule and the book."""
    mech = _mechanism(mechanism)
    if mech.budget_balance not in ("strong", "weak"):
        _fail(mech, book, f"budget_balance must be 'strong' or 'weak', not {mech.budget_balance!r}")
    n = book.n_participants
    order_id = np.arange(book.price.size, dtype=np.int64)
    # the mechanism's own output, before the market's int64 cast: whole Wh, one length
    raw, raw_pools = mech.clear_book(book.participant, book.side, book.pool, book.price, book.quantity_wh, 2)
    lengths = {len(np.asarray(getattr(raw, f))) for f in ("bid_index", "ask_index", "quantity_wh", "buyer_price",
                                                            "seller_price")} | {len(np.asarray(raw_pools))}
    if len(lengths) != 1:
        _fail(mech, book, f"the match arrays must have one length, not {sorted(lengths)}")
    q_raw = np.asarray(raw.quantity_wh)
    if q_raw.size and not (np.issubdtype(q_raw.dtype, np.integer)
                           or (np.all(np.isfinite(q_raw)) and np.array_equal(q_raw, np.rint(q_raw)))):
        _fail(mech, book, f"quantities must be whole Wh, the mechanism returned {q_raw.tolist()}")
    args = (book.participant, book.side, book.pool, book.price, book.quantity_wh, order_id, book.placed_round, n)
    kw = {"tie_break": TIE_BREAKS[book.tie_break], "key": int(book.key), "episode": 0, "delivery_round": 1}
    first = clear_round(mech, *args, **kw)
    again = clear_round(mech, *args, **kw)
    if not all(np.array_equal(a, b, equal_nan=np.asarray(a).dtype.kind == "f") for a, b in zip(first, again)):
        _fail(mech, book, "the same book cleared twice must give the same matches (a mechanism is a pure function)")
    (pool, buyer, seller, q, bp, sp, _bid_id, _ask_id, bought, sold, cost, revenue, bid_index, ask_index) = first
    rule, index = check_clearing((book.participant, book.side, book.pool, book.price, book.quantity_wh),
                                 (pool, buyer, seller, q, bp, sp, bid_index, ask_index), (bought, sold, cost, revenue),
                                 mech.budget_balance == "strong")
    if rule:
        where = f"match {index}" if rule < 10 else (f"order {index}" if rule == 10 else f"participant {index}")
        _fail(mech, book, f"{CLEARING_RULES[rule]} ({where}); matches (bid, ask, Wh, buyer $/kWh, seller $/kWh): "
                          f"{list(zip(np.asarray(bid_index).tolist(), np.asarray(ask_index).tolist(), np.asarray(q).tolist(), np.asarray(bp).tolist(), np.asarray(sp).tolist()))}")
    load = book.load_wh if book.load_wh is not None else bought
    gen = book.generation_wh if book.generation_wh is not None else sold
    zero = np.zeros(n, dtype=np.int64)
    res = settle_delivery(load, gen, zero, zero, bought, sold, *_GRID_PRICES)
    surplus = float(auctioneer_surplus_usd(np.ascontiguousarray(q, dtype=np.int64), np.ascontiguousarray(bp, dtype=np.float64),
                                           np.ascontiguousarray(sp, dtype=np.float64)))
    rule, index = check_delivery((load, gen, zero, zero), (bought, sold, cost, revenue),
                                 (res.grid_import_wh, res.grid_export_wh, res.grid_cost_usd, res.grid_revenue_usd),
                                 _GRID_PRICES, surplus)
    if rule:
        _fail(mech, book, f"at delivery: {DELIVERY_RULES[rule]} (participant {index})")


def check_mechanism(mechanism: Mechanism | str, max_examples: int = 200, *, seed: int | None = None,
                    max_orders: int = 12, shrink: bool = True) -> None:
    """Check a mechanism (an instance or a registered name) on ``max_examples`` random books.

    Raises AssertionError naming the broken rule, with the smallest book hypothesis found that
    breaks it (``shrink=False``: the first such book, found faster). ``seed``: a fixed hypothesis
    seed (the default draws afresh each time). Needs hypothesis.
    """
    hypothesis, _ = _hypothesis()
    mech = _mechanism(mechanism)
    phases = [p for p in hypothesis.Phase if shrink or p not in (hypothesis.Phase.shrink, hypothesis.Phase.explain)]
    settings = hypothesis.settings(max_examples=max_examples, deadline=None, database=None, phases=phases,
                                   report_multiple_bugs=False, suppress_health_check=list(hypothesis.HealthCheck))

    @settings
    @hypothesis.given(books(max_orders))
    def _conforms(book):
        check_book(mech, book)

    if seed is not None:
        _conforms = hypothesis.seed(seed)(_conforms)
    _conforms()
