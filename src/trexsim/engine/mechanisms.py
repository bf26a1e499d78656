"""Settlement mechanisms: a registry, and the three of the T-REX paper's case study.

A mechanism turns one pool's order book into matches with prices. Pairwise mechanisms
share the ALEX matching order (:func:`trexsim.engine.matching.match_pairwise`) and differ
in when a pair trades and at what prices. A new mechanism registers itself with
:func:`register_mechanism` and needs no change to the market; a package outside trexsim adds
one through the entry-point group ``trexsim.mechanisms`` (:mod:`trexsim.plugins`, loaded before
the registry first answers). ``trexsim.testing.check_mechanism`` checks any of them against the
market's rules (docs/extending.md).

Mechanisms (T-REX paper, section 5):

- M1 ``average_price``: a pair trades if bid >= ask, both at (bid + ask) / 2.
- M2 ``exact_match``: a pair trades only if bid == ask, at that price.
- M3 ``exact_price``: a pair trades if bid >= ask; the buyer pays its bid, the seller
  receives its ask, and the difference stays with the auctioneer (weakly budget balanced).

Beyond the paper: ``k_double_auction`` (a uniform price per pool from the marginal matched pair, k = 0.5;
``k_double_auction_0`` and ``k_double_auction_1`` ship too, :func:`register_k_double_auction` adds others), and
``sbba`` (Segal-Halevi et al. 2016: one price, strongly budget balanced and truthful for unit traders, with a
seller lottery drawn from the run's seed).
docs/mechanisms.md tables every mechanism's properties with references.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar, NamedTuple

import numba
import numpy as np

from trexsim.engine.matching import Matches, _greedy_pairs, match_book, match_pairwise, pool_orders_into
from trexsim.engine.ties import (_GOLDEN, PRO_RATA, SUBMISSION, _mix64, _pro_rata_quantities, _round_base,
                                 clear_book_ordered, clear_book_ordered_into, submission_order)
from trexsim.engine.unit_curves import _crossing, _first_units, _unit_holder


class Mechanism(ABC):
    """Clears one energy pool for one delivery round."""

    name: ClassVar[str]
    paper_name: ClassVar[str] = ""
    budget_balance: ClassVar[str] = "strong"  # 'strong' (no money left over) or 'weak'
    # a mechanism that draws (SBBA's lottery) sets this: the market then gives clear_book and clear a
    # :class:`Lottery`, ``rng``, drawn from the run's seed, episode and delivery round (:func:`lottery_rng`)
    lottery: ClassVar[bool] = False

    @abstractmethod
    def clear(
        self,
        bid_participant: np.ndarray,
        bid_price: np.ndarray,
        bid_quantity_wh: np.ndarray,
        ask_participant: np.ndarray,
        ask_price: np.ndarray,
        ask_quantity_wh: np.ndarray,
    ) -> Matches:
        """Match bids and asks (arrays in submission order); prices in $/kWh, quantities in Wh."""

    def clear_book(self, participant, side, pool, price, quantity_wh, n_pools: int = 2,
                   rng: "Lottery | None" = None) -> tuple[Matches, np.ndarray]:
        """Clear every pool of a book (side 0 = bid, 1 = ask), the highest pool code first.

        Returns the matches (indices into the book) and each match's pool. Subclasses may
        override this with a faster whole-book kernel; the default clears pool by pool.
        ``rng``: the round's lottery, passed on to :meth:`clear` for a mechanism with ``lottery``.
        """
        parts, pools = [], []
        draws = {"rng": rng if rng is not None else lottery_rng(0, 0, 0)} if self.lottery else {}
        for code in range(n_pools - 1, -1, -1):
            bids = np.flatnonzero((pool == code) & (side == 0))
            asks = np.flatnonzero((pool == code) & (side == 1))
            if bids.size == 0 or asks.size == 0:
                continue
            m = self.clear(participant[bids], price[bids], quantity_wh[bids], participant[asks], price[asks], quantity_wh[asks],
                           **draws)
            parts.append(Matches(bids[m.bid_index], asks[m.ask_index], m.quantity_wh, m.buyer_price, m.seller_price))
            pools.append(np.full(len(m), code, dtype=np.int64))
        if not parts:
            return Matches.empty(), np.zeros(0, dtype=np.int64)
        return (Matches(*(np.concatenate([getattr(p, f) for p in parts]) for f in
                          ("bid_index", "ask_index", "quantity_wh", "buyer_price", "seller_price"))),
                np.concatenate(pools))


class PairwiseMechanism(Mechanism):
    """ALEX pairwise matching with a mechanism-specific trade condition and prices."""

    equal_prices: ClassVar[bool] = False

    @abstractmethod
    def settlement_prices(self, bid_price: np.ndarray, ask_price: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(buyer_price, seller_price)`` [$/kWh] of matched pairs."""

    def clear(self, bid_participant, bid_price, bid_quantity_wh, ask_participant, ask_price, ask_quantity_wh) -> Matches:
        bi, ai, q = match_pairwise(
            bid_participant, bid_price, bid_quantity_wh, ask_participant, ask_price, ask_quantity_wh,
            equal_prices=self.equal_prices,
        )
        if q.size == 0:
            return Matches.empty()
        buyer, seller = self.settlement_prices(np.asarray(bid_price, dtype=np.float64)[bi], np.asarray(ask_price, dtype=np.float64)[ai])
        return Matches(bi, ai, q, buyer, seller)

    def clear_book(self, participant, side, pool, price, quantity_wh, n_pools: int = 2,
                   rng: "Lottery | None" = None) -> tuple[Matches, np.ndarray]:
        bi, ai, q, pools = match_book(participant, side, pool, price, quantity_wh, equal_prices=self.equal_prices, n_pools=n_pools)
        if q.size == 0:
            return Matches.empty(), pools
        buyer, seller = self.settlement_prices(price[bi], price[ai])
        return Matches(bi, ai, q, buyer, seller), pools


_REGISTRY: dict[str, Mechanism] = {}


def register_mechanism(cls: type[Mechanism]) -> type[Mechanism]:
    """Class decorator: make a mechanism available by its ``name`` to configs and the market.

    A name belongs to one class: registering another class under a taken name raises
    ``ValueError`` (the same class again, e.g. on a module reload, replaces it).
    """
    if not getattr(cls, "name", None):
        raise ValueError("a mechanism needs a class attribute 'name'")
    if getattr(cls, "budget_balance", None) not in ("strong", "weak"):
        raise ValueError(f"mechanism {cls.name!r}: budget_balance must be 'strong' or 'weak', not {cls.budget_balance!r}")
    held = _REGISTRY.get(cls.name)
    if held is not None and _qualname(type(held)) != _qualname(cls):
        raise ValueError(f"settlement mechanism {cls.name!r} is already registered by {_qualname(type(held))}; "
                         f"{_qualname(cls)} needs another name")
    _REGISTRY[cls.name] = cls()
    return cls


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _load_plugins() -> None:
    """Packages outside trexsim register mechanisms through entry points (:mod:`trexsim.plugins`),
    loaded once, before the registry first answers."""
    from trexsim.plugins import load_mechanism_plugins

    load_mechanism_plugins()


def get_mechanism(name: str) -> Mechanism:
    _load_plugins()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown settlement mechanism {name!r}; registered: {', '.join(sorted(_REGISTRY))}") from None


def registered_mechanisms() -> list[str]:
    _load_plugins()
    return sorted(_REGISTRY)


def mechanisms_defined_in(module: str) -> list[str]:
    """Names of the registered mechanisms whose class lives in ``module`` or a submodule of it."""
    return sorted(n for n, m in _REGISTRY.items()
                  if type(m).__module__ == module or type(m).__module__.startswith(module + "."))


# The built-in mechanisms' rules as codes a compiled driver uses (:func:`compiled_clearing`): the pairwise price
# rules of the paper's three, the k-double auction's uniform price and SBBA's unit-curve clearing
MIDPOINT, BID_PRICE, EACH_OWN_PRICE, UNIFORM_K, SBBA_UNITS = 0, 1, 2, 3, 4


@numba.njit(cache=True, nogil=True)
def pair_prices(rule, bid_price, ask_price):
    """``(buyer_price, seller_price)`` [$/kWh] of one matched pair under a price rule.

    ``MIDPOINT``: both at (bid + ask) / 2 (M1); ``BID_PRICE``: both at the bid, which equals
    the ask under exact matching (M2); ``EACH_OWN_PRICE``: the buyer pays its bid and the
    seller receives its ask (M3).
    """
    if rule == MIDPOINT:
        mid = (bid_price + ask_price) / 2.0
        return mid, mid
    if rule == BID_PRICE:
        return bid_price, bid_price
    return bid_price, ask_price


@numba.njit(cache=True, nogil=True)
def _prices(rule, bid_price, ask_price):
    n = bid_price.size
    buyer = np.empty(n)
    seller = np.empty(n)
    for i in range(n):
        buyer[i], seller[i] = pair_prices(rule, bid_price[i], ask_price[i])
    return buyer, seller


class RulePricedMechanism(PairwiseMechanism):
    """A pairwise mechanism whose prices follow one of the compiled price rules."""

    price_rule: ClassVar[int]

    def settlement_prices(self, bid_price, ask_price):
        return _prices(self.price_rule, np.ascontiguousarray(bid_price, dtype=np.float64),
                       np.ascontiguousarray(ask_price, dtype=np.float64))


@register_mechanism
class AveragePrice(RulePricedMechanism):
    name = "average_price"
    paper_name = "M1"
    price_rule = MIDPOINT


@register_mechanism
class ExactMatch(RulePricedMechanism):
    name = "exact_match"
    paper_name = "M2"
    equal_prices = True
    price_rule = BID_PRICE


@register_mechanism
class ExactPrice(RulePricedMechanism):
    name = "exact_price"
    paper_name = "M3"
    budget_balance = "weak"
    price_rule = EACH_OWN_PRICE


class KDoubleAuction(PairwiseMechanism):
    """The k-double auction: one uniform price for every trade of a pool (pay-as-clear).

    Chatterjee and Samuelson (1983) for one buyer and one seller; Rustichini, Satterthwaite and Williams
    (1994) for many. The ALEX pairwise matching decides who trades and how much (bids from the highest,
    asks from the lowest, as every pairwise mechanism here); then every matched pair of the pool trades at

        price = k * lowest matched bid + (1 - k) * highest matched ask,

    the marginal pair's prices. Matching takes bids in descending and asks in ascending order, so the
    lowest matched bid is at least the highest matched ask: the price lies between them, every matched
    buyer bid at least the price and every matched seller asked at most it (individually rational), and
    buyers pay what sellers receive (strongly budget balanced). One exception keeps both properties: when
    the matching skipped a self-trade (a participant's bid meeting its own ask) the matched prices can
    cross (a later pair's bid below an earlier pair's ask, found by ``trexsim.testing``); then each pair
    trades at the uniform price clipped into its own [ask, bid]. Not truthful (a marginal trader shades
    its price), though the incentive to shade vanishes as the market grows (Rustichini et al. 1994).
    ``k`` is a class attribute (0.5 here: the midpoint); :func:`register_k_double_auction` registers
    another. The price applies per pool (non-dispatchable and dispatchable clear apart).
    """

    name = "k_double_auction"
    k: ClassVar[float] = 0.5

    def settlement_prices(self, bid_price, ask_price):
        # the matched pairs of one pool, priced by the compiled rule every driver uses (_price_matches, UNIFORM_K);
        # the clip into each pair's own [ask, bid] is a no-op unless the matching skipped a self-trade (docstring)
        bid_price = np.ascontiguousarray(bid_price, dtype=np.float64)
        ask_price = np.ascontiguousarray(ask_price, dtype=np.float64)
        m = bid_price.size
        buyer, seller = np.empty(m), np.empty(m)
        pairs = np.arange(m, dtype=np.int64)
        _price_matches(pairs, pairs + m, np.zeros(m, dtype=np.int64), np.concatenate([bid_price, ask_price]),
                       UNIFORM_K, float(self.k), 1, buyer, seller)
        return buyer, seller

    def clear_book(self, participant, side, pool, price, quantity_wh, n_pools: int = 2, rng=None):
        # pool by pool (Mechanism.clear_book): the uniform price is each pool's own marginal pair's
        return Mechanism.clear_book(self, participant, side, pool, price, quantity_wh, n_pools)


register_mechanism(KDoubleAuction)


def register_k_double_auction(k: float) -> str:
    """Register the k-double auction with this ``k`` in [0, 1] (0: the highest matched ask sets the price,
    1: the lowest matched bid) as ``k_double_auction_<k>``; returns the name to give ``market.settlement``."""
    k = float(k)
    if not 0.0 <= k <= 1.0:
        raise ValueError(f"k must be in [0, 1], not {k:g}")
    name = f"k_double_auction_{k:g}"
    if name in _REGISTRY and getattr(_REGISTRY[name], "k", None) == k:
        return name
    register_mechanism(type(f"KDoubleAuction_{k:g}".replace(".", "_"), (KDoubleAuction,),
                            {"name": name, "k": k, "__module__": __name__}))
    return name


for _k in (0.0, 1.0):  # the two ends ship too: the marginal seller's and the marginal buyer's price
    register_k_double_auction(_k)


@register_mechanism
class SBBA(Mechanism):
    """SBBA, the strongly budget-balanced truthful double auction (Segal-Halevi, Hassidim and Aumann 2016).

    For traders of one unit each: sort the bids from the highest (b_1 >= b_2 >= ...) and the asks from
    the lowest (a_1 <= a_2 <= ...); k is the efficient trade count, the largest with b_k >= a_k. One
    price for everybody,

        p = min(b_k, a_{k+1})      (a_{k+1} = +inf where the supply curve has no (k+1)-th unit).

    - If p = a_{k+1} (the (k+1)-th ask is at most b_k): the k highest buyers and the k lowest sellers
      all trade at p. Every trade of the competitive allocation is made.
    - Otherwise p = b_k: the k-th buyer leaves, the k - 1 highest buyers trade, and k - 1 of the k lowest
      sellers, drawn by a lottery (each of the k equally likely to be the one left out), sell at p.

    Buyers pay what sellers receive (strong budget balance), nobody trades beyond its limit price
    (individually rational), and nobody's price depends on its own order, which with the seller
    lottery makes truthful bidding a dominant strategy for unit traders. The price of this is at most
    one trade of k, as McAfee's trade reduction, but no money stays with the auctioneer.

    **Adapted to integer Wh, as McAfee's plug-in (examples/trexsim-mcafee): every Wh is a unit**
    (:mod:`trexsim.engine.unit_curves`). The reduction drops one Wh: the lottery draws one of the k
    supply Wh uniformly and the ask holding it sells one Wh less. The traded Wh are paired in ALEX's
    pairwise order (:func:`~trexsim.engine.matching.match_pairwise`, never a participant with itself:
    a Wh that could only trade with its own participant's order stays unsold). An order is not a
    single-unit trader, so the dominant-strategy property does not carry over to multi-Wh orders.
    The lottery comes from the run's seed, episode and delivery round (:func:`lottery_rng`): the same
    config gives the same trades.
    """

    name = "sbba"
    lottery = True

    def clear(self, bid_participant, bid_price, bid_quantity_wh, ask_participant, ask_price, ask_quantity_wh,
              rng: "Lottery | None" = None) -> Matches:
        f64 = lambda a: np.ascontiguousarray(a, dtype=np.float64)  # noqa: E731
        i64 = lambda a: np.ascontiguousarray(a, dtype=np.int64)  # noqa: E731
        bid_price, ask_price = f64(bid_price), f64(ask_price)
        bid_q, ask_q = i64(bid_quantity_wh), i64(ask_quantity_wh)
        if bid_q.size == 0 or ask_q.size == 0:
            return Matches.empty()
        by_bid, by_ask, k, price, units, draws = _sbba_price(bid_price, bid_q, ask_price, ask_q)
        if units == 0:
            return Matches.empty()
        left_out = int((rng if rng is not None else lottery_rng(0, 0, 0)).integers(k)) if draws else -1
        bi, ai, q = _sbba_fill(i64(bid_participant), bid_price, bid_q, i64(ask_participant), ask_price, ask_q, by_bid,
                               by_ask, k, units, left_out)
        return Matches(bi, ai, q, np.full(q.size, price), np.full(q.size, price))


@numba.njit(cache=True, nogil=True)
def _sbba_price(bid_price, bid_q, ask_price, ask_q):
    """SBBA's price for one pool's book (arrays in submission order): ``(by_bid, by_ask, k, price, units, draws)``,
    the curves' orders, the efficient count k [Wh], the price [$/kWh], the Wh that trade, and whether the lottery
    leaves out one of the k supply Wh (it draws only then)."""
    by_bid = np.argsort(-bid_price, kind="mergesort")
    by_ask = np.argsort(ask_price, kind="mergesort")
    k, b_k, _, _, a_next = _crossing(bid_price[by_bid], bid_q[by_bid], ask_price[by_ask], ask_q[by_ask])
    if k == 0:
        return by_bid, by_ask, 0, np.nan, 0, False
    if not np.isnan(a_next) and a_next <= b_k:
        return by_bid, by_ask, k, a_next, k, False
    return by_bid, by_ask, k, b_k, k - 1, k > 1


@numba.njit(cache=True, nogil=True)
def _sbba_fill(bid_part, bid_price, bid_q, ask_part, ask_price, ask_q, by_bid, by_ask, k, units, left_out_unit):
    """SBBA's trades: the first ``units`` Wh of the demand curve and the first k of the supply curve less the
    Wh ``left_out_unit`` (-1: none), paired in ALEX's pairwise order. Returns ``(bid_index, ask_index, quantity_wh)``."""
    asks, ask_take = _first_units(by_ask, ask_q, k)
    if left_out_unit >= 0:
        left_out = _unit_holder(by_ask, ask_q, left_out_unit)
        keep = 0
        for t in range(asks.size):
            take = ask_take[t] - (1 if asks[t] == left_out else 0)
            if take > 0:
                asks[keep] = asks[t]
                ask_take[keep] = take
                keep += 1
        asks, ask_take = asks[:keep], ask_take[:keep]
    bids, bid_take = _first_units(by_bid, bid_q, units)
    bp = bid_price[bids]
    ap = ask_price[asks]
    bid_order = np.argsort(-bp, kind="mergesort")
    ask_order = np.argsort(ap, kind="mergesort")
    bi, ai, q = _greedy_pairs(bid_part[bids], bp, bid_take, ask_part[asks], ap[ask_order], ask_take, bid_order,
                              ask_order, False)
    return bids[bi], asks[ai], q


_LOTTERY_SALT = np.uint64(0x5BBA5BBA5BBA5BBA)


@numba.njit(cache=True, nogil=True)
def lottery_uniform(key, episode, delivery_round, draw):
    """Draw number ``draw`` (0, 1, ...) of one delivery round's lottery: a uniform float in [0, 1).

    Counter-based (SplitMix64 of the run's tie-break key, the episode, the delivery round and the draw
    number, as the random tie-break, :mod:`trexsim.engine.ties`, with its own salt): it needs no random state,
    so every driver, compiled or not, and any split of the participants over processes draws the same."""
    z = _mix64(_round_base(key, episode, delivery_round) ^ _LOTTERY_SALT)
    z = _mix64(z + np.uint64(draw + 1) * _GOLDEN)
    return np.float64(z >> np.uint64(11)) * (1.0 / 9007199254740992.0)  # the top 53 bits, / 2**53


@numba.njit(cache=True, nogil=True)
def lottery_integer(key, episode, delivery_round, draw, n):
    """Draw number ``draw`` of one delivery round's lottery as an integer in [0, n), each equally likely (to
    within n / 2**53)."""
    v = np.int64(lottery_uniform(key, episode, delivery_round, draw) * n)
    return v if v < n else n - 1


class Lottery:
    """One delivery round's lottery, as a lottery mechanism's ``clear`` receives it (``rng``): successive
    draws of :func:`lottery_uniform`. ``integers(n)`` and ``random()`` as NumPy's ``Generator`` names them."""

    __slots__ = ("key", "episode", "delivery_round", "draws")

    def __init__(self, key: int, episode: int, delivery_round: int):
        self.key, self.episode, self.delivery_round = int(key) & 0x7FFFFFFFFFFFFFFF, int(episode), int(delivery_round)
        self.draws = 0

    def random(self) -> float:
        """A uniform float in [0, 1)."""
        u = float(lottery_uniform(self.key, self.episode, self.delivery_round, self.draws))
        self.draws += 1
        return u

    def integers(self, n: int) -> int:
        """A uniform integer in [0, n)."""
        v = int(lottery_integer(self.key, self.episode, self.delivery_round, self.draws, int(n)))
        self.draws += 1
        return v


def lottery_rng(key: int, episode: int, delivery_round: int) -> Lottery:
    """The lottery a mechanism draws from for one delivery round: from the run's tie-break key
    (``study.seed``, :func:`trexsim.engine.ties.tie_key`), the episode and the delivery round, so the
    draws do not depend on how the participants were split over modules or hosts, nor on the driver."""
    return Lottery(key, episode, delivery_round)


@numba.njit(cache=True, nogil=True)
def add_contract(buyer, seller, quantity_wh, buyer_price, seller_price, bought_wh, sold_wh, cost_usd, revenue_usd):
    """Add one match's contract to the participants' totals, in place: the buyer gets ``q`` Wh and
    pays ``q x buyer price / 1000`` $, the seller delivers ``q`` Wh and receives ``q x seller price
    / 1000`` $ (prices in $/kWh). Every driver totals its contracts through this function."""
    bought_wh[buyer] += quantity_wh
    sold_wh[seller] += quantity_wh
    cost_usd[buyer] += quantity_wh * buyer_price / 1000.0
    revenue_usd[seller] += quantity_wh * seller_price / 1000.0


@numba.njit(cache=True, nogil=True)
def total_contracts(buyer, seller, quantity_wh, buyer_price, seller_price, bought_wh, sold_wh, cost_usd, revenue_usd):
    """:func:`add_contract` for every match, in matching order."""
    for t in range(quantity_wh.size):
        add_contract(buyer[t], seller[t], quantity_wh[t], buyer_price[t], seller_price[t], bought_wh, sold_wh, cost_usd,
                     revenue_usd)


@numba.njit(cache=True, nogil=True)
def total_contracts_checked(buyer, seller, quantity_wh, buyer_price, seller_price, bought_wh, sold_wh, cost_usd,
                            revenue_usd):
    """:func:`total_contracts` after checking that the match columns have one length and every match names a
    participant of the totals; False, and nothing added, for contracts that do not fit (a broken or forged
    ``Cleared``: compiled code does not check an index, so an unchecked one would write past the arrays)."""
    n = bought_wh.size
    m = quantity_wh.size
    if buyer.size != m or seller.size != m or buyer_price.size != m or seller_price.size != m:
        return False
    for t in range(m):
        if buyer[t] < 0 or buyer[t] >= n or seller[t] < 0 or seller[t] >= n:
            return False
    total_contracts(buyer, seller, quantity_wh, buyer_price, seller_price, bought_wh, sold_wh, cost_usd, revenue_usd)
    return True


@numba.njit(cache=True, nogil=True)
def _sbba_book(order, participant, side, pool, price, quantity_wh, n_pools, key, episode, delivery_round):
    """SBBA over a whole book, pool by pool (the highest pool code first) as :meth:`Mechanism.clear_book` clears
    it, each pool's orders in submission order ``order`` (empty: the book's own). The round's lottery draws in
    that order. Returns ``(bid_index, ask_index, quantity_wh, pool, price)``, indices into the book."""
    n = participant.size
    bids_buf = np.empty(n, dtype=np.int64)
    asks_buf = np.empty(n, dtype=np.int64)
    out_b = np.empty(n + 1, dtype=np.int64)
    out_a = np.empty(n + 1, dtype=np.int64)
    out_q = np.empty(n + 1, dtype=np.int64)
    out_p = np.empty(n + 1, dtype=np.int64)
    out_price = np.empty(n + 1)
    m = 0
    draws = 0
    for code in range(n_pools - 1, -1, -1):
        nb, na = pool_orders_into(order, side, pool, code, bids_buf, asks_buf)
        if nb == 0 or na == 0:
            continue
        bids = bids_buf[:nb]
        asks = asks_buf[:na]
        bid_price, ask_price = price[bids], price[asks]
        bid_q, ask_q = quantity_wh[bids], quantity_wh[asks]
        by_bid, by_ask, k, p, units, lottery = _sbba_price(bid_price, bid_q, ask_price, ask_q)
        if units == 0:
            continue
        left_out = -1
        if lottery:
            left_out = lottery_integer(key, episode, delivery_round, draws, k)
            draws += 1
        bi, ai, q = _sbba_fill(participant[bids], bid_price, bid_q, participant[asks], ask_price, ask_q, by_bid, by_ask,
                               k, units, left_out)
        for t in range(q.size):
            out_b[m] = bids[bi[t]]
            out_a[m] = asks[ai[t]]
            out_q[m] = q[t]
            out_p[m] = code
            out_price[m] = p
            m += 1
    return out_b[:m], out_a[:m], out_q[:m], out_p[:m], out_price[:m]


@numba.njit(cache=True, nogil=True)
def clear_book_priced(participant, side, pool, price, quantity_wh, placed_round, n_participants, rule, k,
                      equal_prices, n_pools, tie_break, key, episode, delivery_round, rank=None):
    """Clear one delivery round's book under a compiled rule (:func:`compiled_clearing`) and a tie-break rule.

    The one compiled clearing every driver calls. The book is in any order; submission order is restored here
    (:func:`trexsim.engine.ties.submission_order`). Returns ``(bid_index, ask_index, quantity_wh, pool,
    buyer_price, seller_price)``: the matches in matching order, indices into the arrays as given.

    - ``MIDPOINT``, ``BID_PRICE``, ``EACH_OWN_PRICE``: ALEX pairwise matching
      (:func:`~trexsim.engine.ties.clear_book_ordered`), each pair priced by :func:`pair_prices`;
    - ``UNIFORM_K``: the same matching, then every pair of a pool at the k-double auction's price ``k x lowest
      matched bid + (1 - k) x highest matched ask``, clipped into the pair's own [ask, bid]
      (:class:`KDoubleAuction`);
    - ``SBBA_UNITS``: :class:`SBBA` on the unit curves, with the round's lottery (:func:`lottery_integer`);
      under the pro-rata tie-break, cleared twice as :func:`clear_round` does (the second pass with each
      order's pro-rata share, the same lottery draws).
    """
    if rule == SBBA_UNITS:
        order = submission_order(participant, placed_round, n_participants, tie_break, key, episode, delivery_round,
                                 rank)
        bi, ai, q, pools, p = _sbba_book(order, participant, side, pool, price, quantity_wh, n_pools, key, episode,
                                         delivery_round)
        if tie_break == PRO_RATA and q.size > 0:
            share = _pro_rata_quantities(order, side, pool, price, quantity_wh, bi, ai, q)
            bi, ai, q, pools, p = _sbba_book(order, participant, side, pool, price, share, n_pools, key, episode,
                                             delivery_round)
        return bi, ai, q, pools, p, p.copy()
    bi, ai, q, pools = clear_book_ordered(participant, side, pool, price, quantity_wh, placed_round, n_participants,
                                          equal_prices, n_pools, tie_break, key, episode, delivery_round, rank)
    buyer_price = np.empty(q.size)
    seller_price = np.empty(q.size)
    _price_matches(bi, ai, pools, price, rule, k, n_pools, buyer_price, seller_price)
    return bi, ai, q, pools, buyer_price, seller_price


class ClearingWork(NamedTuple):
    """Buffers of :func:`clear_book_priced_into` for books of up to ``cap`` orders (:func:`new_clearing_work`):
    scratch, then the matches (``bi``, ``ai``, ``q``, ``pools``, ``buyer_price``, ``seller_price``)."""

    order: np.ndarray
    draws: np.ndarray
    bids: np.ndarray
    asks: np.ndarray
    bid_order: np.ndarray
    ask_order: np.ndarray
    ask_price_sorted: np.ndarray
    ask_rem: np.ndarray
    bi: np.ndarray
    ai: np.ndarray
    q: np.ndarray
    pools: np.ndarray
    buyer_price: np.ndarray
    seller_price: np.ndarray


def new_clearing_work(cap: int) -> ClearingWork:
    i = lambda: np.zeros(max(int(cap), 1), dtype=np.int64)  # noqa: E731
    f = lambda: np.zeros(max(int(cap), 1))  # noqa: E731
    return ClearingWork(i(), np.zeros(max(int(cap), 1), dtype=np.uint64), i(), i(), i(), i(), f(), i(), i(), i(), i(),
                        i(), f(), f())


@numba.njit(cache=True, nogil=True)
def clear_book_priced_into(participant, side, pool, price, quantity_wh, placed_round, n_participants, rule, k,
                           equal_prices, n_pools, tie_break, key, episode, delivery_round, w):
    """:func:`clear_book_priced` into the buffers of ``w`` (:class:`ClearingWork`, at least the book's size);
    returns the match count ``m`` (the matches are ``w.bi[:m]`` ...). The same matches and prices; a small book
    cleared by a pairwise rule or the k-double auction allocates nothing (the driver's hot path: ``engine.step``)."""
    if rule == SBBA_UNITS:
        bi, ai, q, pools, bp, sp = clear_book_priced(participant, side, pool, price, quantity_wh, placed_round,
                                                     n_participants, rule, k, equal_prices, n_pools, tie_break, key,
                                                     episode, delivery_round)
        for t in range(q.size):
            w.bi[t], w.ai[t], w.q[t], w.pools[t] = bi[t], ai[t], q[t], pools[t]
            w.buyer_price[t], w.seller_price[t] = bp[t], sp[t]
        return q.size
    m = clear_book_ordered_into(participant, side, pool, price, quantity_wh, placed_round, n_participants,
                                equal_prices, n_pools, tie_break, key, episode, delivery_round, w)
    _price_matches(w.bi[:m], w.ai[:m], w.pools[:m], price, rule, k, n_pools, w.buyer_price, w.seller_price)
    return m


@numba.njit(cache=True, nogil=True)
def _price_matches(bi, ai, pools, price, rule, k, n_pools, buyer_price, seller_price):
    """Each match's buyer and seller prices under a pairwise price rule or the k-double auction's uniform price
    (``UNIFORM_K``: ``k x lowest matched bid + (1 - k) x highest matched ask`` per pool, clipped into each pair's
    own [ask, bid])."""
    m = bi.size
    if rule == UNIFORM_K:
        for code in range(n_pools):
            low_bid = np.inf
            high_ask = -np.inf
            for t in range(m):
                if pools[t] == code:
                    low_bid = min(low_bid, price[bi[t]])
                    high_ask = max(high_ask, price[ai[t]])
            uniform = k * low_bid + (1.0 - k) * high_ask
            for t in range(m):
                if pools[t] == code:
                    each = min(max(uniform, price[ai[t]]), price[bi[t]])
                    buyer_price[t] = each
                    seller_price[t] = each
        return
    for t in range(m):
        buyer_price[t], seller_price[t] = pair_prices(rule, price[bi[t]], price[ai[t]])


@numba.njit(cache=True, nogil=True)
def _clear_round(participant, side, pool, price, quantity_wh, order_id, placed_round, n_participants, rule, k,
                 equal_prices, n_pools, tie_break, key, episode, delivery_round, rank=None):
    """One delivery round's book, cleared (:func:`clear_book_priced`) and totalled per participant in one
    compiled call, so the result does not depend on how the participants were split over modules."""
    bi, ai, q, pools, buyer_price, seller_price = clear_book_priced(
        participant, side, pool, price, quantity_wh, placed_round, n_participants, rule, k, equal_prices, n_pools,
        tie_break, key, episode, delivery_round, rank)
    bought = np.zeros(n_participants, dtype=np.int64)
    sold = np.zeros(n_participants, dtype=np.int64)
    cost = np.zeros(n_participants)
    revenue = np.zeros(n_participants)
    buyer = np.empty(q.size, dtype=np.int64)
    seller = np.empty(q.size, dtype=np.int64)
    bid_id = np.empty(q.size, dtype=np.int64)
    ask_id = np.empty(q.size, dtype=np.int64)
    for t in range(q.size):
        buyer[t] = participant[bi[t]]
        seller[t] = participant[ai[t]]
        bid_id[t] = order_id[bi[t]]
        ask_id[t] = order_id[ai[t]]
    total_contracts(buyer, seller, q, buyer_price, seller_price, bought, sold, cost, revenue)
    return pools, buyer, seller, q, buyer_price, seller_price, bid_id, ask_id, bought, sold, cost, revenue, bi, ai


def compiled_clearing(mechanism: Mechanism) -> tuple[int, float] | None:
    """``(rule, k)``: the compiled rule that clears exactly as the mechanism does (:func:`clear_book_priced`),
    or ``None``. The built-ins have one; a subclass that overrides how they clear or price gets ``None`` and is
    cleared through its own methods (so are plug-ins)."""
    cls = type(mechanism)
    if (isinstance(mechanism, RulePricedMechanism) and cls.clear_book is PairwiseMechanism.clear_book
            and cls.settlement_prices is RulePricedMechanism.settlement_prices):
        return int(mechanism.price_rule), 0.0
    if (isinstance(mechanism, KDoubleAuction) and cls.clear_book is KDoubleAuction.clear_book
            and cls.clear is PairwiseMechanism.clear and cls.settlement_prices is KDoubleAuction.settlement_prices
            and not mechanism.equal_prices):
        return UNIFORM_K, float(mechanism.k)
    if isinstance(mechanism, SBBA) and cls.clear is SBBA.clear and cls.clear_book is Mechanism.clear_book:
        return SBBA_UNITS, 0.0
    return None


def compiled_price_rule(mechanism: Mechanism) -> int | None:
    """The rule code of :func:`compiled_clearing` (``None``: the mechanism has no compiled rule)."""
    compiled = compiled_clearing(mechanism)
    return None if compiled is None else compiled[0]


def clear_round(mechanism: Mechanism, participant, side, pool, price, quantity_wh, order_id, placed_round,
                n_participants: int, n_pools: int = 2, *, tie_break: int = SUBMISSION, key: int = 0, episode: int = 0,
                delivery_round: int = 0):
    """Clear one delivery round's whole book and total the contracts per participant.

    Arrays are the book in any order (``placed_round``: the round each order was placed in);
    submission order under the tie-break rule (:mod:`trexsim.engine.ties`; ``key``, ``episode``
    and ``delivery_round`` draw the round's random order) is restored here. Returns ``(pool, buyer, seller, quantity_wh, buyer_price,
    seller_price, bid_id, ask_id, bought_wh, sold_wh, cost_usd, revenue_usd, bid_index, ask_index)``:
    the matches in matching order, then per participant the energy bought and sold [Wh] and the
    money paid and received [$], then each match's bid and ask as indices into the arrays given.
    Mechanisms with a compiled clearing (:func:`compiled_clearing`) run as one compiled call.
    """
    participant = np.ascontiguousarray(participant, dtype=np.int64)
    side = np.ascontiguousarray(side, dtype=np.int64)
    pool = np.ascontiguousarray(pool, dtype=np.int64)
    price = np.ascontiguousarray(price, dtype=np.float64)
    quantity_wh = np.ascontiguousarray(quantity_wh, dtype=np.int64)
    order_id = np.ascontiguousarray(order_id, dtype=np.int64)
    placed_round = np.ascontiguousarray(placed_round, dtype=np.int64)
    compiled = compiled_clearing(mechanism)
    if compiled is not None:
        return _clear_round(participant, side, pool, price, quantity_wh, order_id, placed_round, int(n_participants),
                            compiled[0], compiled[1], bool(getattr(mechanism, "equal_prices", False)), int(n_pools), int(tie_break), int(key),
                            int(episode), int(delivery_round))
    order = submission_order(participant, placed_round, int(n_participants), int(tie_break), int(key), int(episode),
                             int(delivery_round))
    if order.size == 0:
        order = np.arange(participant.size)
    participant, side, pool, price, quantity_wh, order_id = (a[order] for a in (participant, side, pool, price, quantity_wh, order_id))
    # a lottery draws the same numbers in both passes of the pro-rata tie-break
    draws = (lambda: {"rng": lottery_rng(key, episode, delivery_round)}) if mechanism.lottery else dict
    m, pools = mechanism.clear_book(participant, side, pool, price, quantity_wh, n_pools, **draws())
    if tie_break == PRO_RATA and len(m):  # the same two passes as the compiled path, through the mechanism's own clearing
        share = _pro_rata_quantities(np.arange(len(participant)), side, pool, price, quantity_wh,
                                     np.asarray(m.bid_index, dtype=np.int64),
                                     np.asarray(m.ask_index, dtype=np.int64), np.asarray(m.quantity_wh, dtype=np.int64))
        m, pools = mechanism.clear_book(participant, side, pool, price, share, n_pools, **draws())
    bi, ai, q = m.bid_index, m.ask_index, np.asarray(m.quantity_wh, dtype=np.int64)
    buyer, seller, bp, sp = participant[bi], participant[ai], np.asarray(m.buyer_price, dtype=np.float64), np.asarray(m.seller_price, dtype=np.float64)
    n = int(n_participants)
    bought, sold, cost, revenue = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64), np.zeros(n), np.zeros(n)
    buyer, seller = np.ascontiguousarray(buyer, dtype=np.int64), np.ascontiguousarray(seller, dtype=np.int64)
    total_contracts(buyer, seller, np.ascontiguousarray(q), np.ascontiguousarray(bp), np.ascontiguousarray(sp), bought, sold,
                    cost, revenue)
    return pools, buyer, seller, q, bp, sp, order_id[bi], order_id[ai], bought, sold, cost, revenue, order[bi], order[ai]
