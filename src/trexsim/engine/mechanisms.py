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
from typing import ClassVar

import numba
import numpy as np

from trexsim.engine.matching import Matches, match_book, match_pairwise
from trexsim.engine.ties import PRO_RATA, SUBMISSION, _pro_rata_quantities, clear_book_ordered, submission_order
from trexsim.engine.unit_curves import first_units, unit_book, unit_holder


class Mechanism(ABC):
    """Clears one energy pool for one delivery round."""

    name: ClassVar[str]
    paper_name: ClassVar[str] = ""
    budget_balance: ClassVar[str] = "strong"  # 'strong' (no money left over) or 'weak'
    # a mechanism that draws (SBBA's lottery) sets this: the market then gives clear_book and clear a
    # generator, ``rng``, drawn from the run's seed, episode and delivery round (:func:`lottery_rng`)
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
                   rng: np.random.Generator | None = None) -> tuple[Matches, np.ndarray]:
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
                   rng: np.random.Generator | None = None) -> tuple[Matches, np.ndarray]:
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


# Price rules of the built-in pairwise mechanisms, as codes a compiled fast path can use too
MIDPOINT, BID_PRICE, EACH_OWN_PRICE = 0, 1, 2


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
        bid_price = np.asarray(bid_price, dtype=np.float64)
        ask_price = np.asarray(ask_price, dtype=np.float64)
        if bid_price.size == 0:
            return bid_price.copy(), ask_price.copy()
        price = self.k * float(bid_price.min()) + (1.0 - self.k) * float(ask_price.max())
        # (into each pair's own [ask, bid]: a no-op unless the matching skipped a self-trade, see the docstring)
        each = np.minimum(np.maximum(price, ask_price), bid_price)
        return each, each.copy()

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
              rng: np.random.Generator | None = None) -> Matches:
        book = unit_book(bid_price, bid_quantity_wh, ask_price, ask_quantity_wh)
        if book is None or book.k == 0:
            return Matches.empty()
        k, b_k, a_next, ask_q = book.k, book.b_k, book.a_next, book.ask_wh
        if a_next is not None and a_next <= b_k:
            units, price = k, a_next
            asks, ask_take = first_units(book.by_ask, ask_q, k)
        else:  # p = b_k: one bid Wh leaves, and one of the k supply Wh, by lottery
            units, price = k - 1, b_k
            if units == 0:
                return Matches.empty()
            rng = rng if rng is not None else lottery_rng(0, 0, 0)
            left_out = unit_holder(book.by_ask, ask_q, int(rng.integers(k)))
            asks, ask_take = first_units(book.by_ask, ask_q, k)
            ask_take = ask_take - (asks == left_out)
            keep = ask_take > 0
            asks, ask_take = asks[keep], ask_take[keep]
        bids, bid_take = first_units(book.by_bid, book.bid_wh, units)
        bi, ai, q = match_pairwise(np.asarray(bid_participant)[bids], book.bid_price[bids], bid_take,
                                   np.asarray(ask_participant)[asks], book.ask_price[asks], ask_take)
        return Matches(bids[bi], asks[ai], q, np.full(q.size, price), np.full(q.size, price))


def lottery_rng(key: int, episode: int, delivery_round: int) -> np.random.Generator:
    """The generator a lottery mechanism draws from for one delivery round: from the run's tie-break key
    (``study.seed``, :func:`trexsim.engine.ties.tie_key`), the episode and the delivery round, so the
    draws do not depend on how the participants were split over modules or hosts."""
    return np.random.default_rng([int(key) & (2**64 - 1), int(episode), int(delivery_round), 0x5BBA])


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
def add_contracts(participant, price, bid_index, ask_index, quantity_wh, rule, bought_wh, sold_wh, cost_usd, revenue_usd):
    """Price each match by ``rule`` (:func:`pair_prices`) and add its contract to the totals
    (:func:`total_contracts`). Returns ``(buyer, seller, buyer_price, seller_price)`` per match."""
    k = quantity_wh.size
    buyer = np.empty(k, dtype=np.int64)
    seller = np.empty(k, dtype=np.int64)
    buyer_price = np.empty(k)
    seller_price = np.empty(k)
    for t in range(k):
        buyer[t] = participant[bid_index[t]]
        seller[t] = participant[ask_index[t]]
        buyer_price[t], seller_price[t] = pair_prices(rule, price[bid_index[t]], price[ask_index[t]])
    total_contracts(buyer, seller, quantity_wh, buyer_price, seller_price, bought_wh, sold_wh, cost_usd, revenue_usd)
    return buyer, seller, buyer_price, seller_price


@numba.njit(cache=True, nogil=True)
def _clear_round(participant, side, pool, price, quantity_wh, order_id, placed_round, n_participants, rule,
                 equal_prices, n_pools, tie_break, key, episode, delivery_round, rank=None):
    """One delivery round's book, cleared and totalled in one compiled call.

    The book is matched in submission order under the round's tie-break rule
    (:func:`trexsim.engine.ties.clear_book_ordered`), so the result does not depend on how the
    participants were split over modules. Each pair is priced by ``rule`` (:func:`pair_prices`)
    and the contracts summed per participant.
    """
    bi, ai, q, pools = clear_book_ordered(participant, side, pool, price, quantity_wh, placed_round, n_participants,
                                          equal_prices, n_pools, tie_break, key, episode, delivery_round, rank)
    bought = np.zeros(n_participants, dtype=np.int64)
    sold = np.zeros(n_participants, dtype=np.int64)
    cost = np.zeros(n_participants)
    revenue = np.zeros(n_participants)
    buyer, seller, buyer_price, seller_price = add_contracts(participant, price, bi, ai, q, rule, bought, sold, cost,
                                                             revenue)
    bid_id = np.empty(q.size, dtype=np.int64)
    ask_id = np.empty(q.size, dtype=np.int64)
    for t in range(q.size):
        bid_id[t] = order_id[bi[t]]
        ask_id[t] = order_id[ai[t]]
    return pools, buyer, seller, q, buyer_price, seller_price, bid_id, ask_id, bought, sold, cost, revenue, bi, ai


def compiled_price_rule(mechanism: Mechanism) -> int | None:
    """The mechanism's compiled price rule if it clears exactly as the built-in pairwise path does.

    A subclass that overrides ``clear_book`` or ``settlement_prices`` gets ``None`` and is
    cleared through its own methods.
    """
    cls = type(mechanism)
    if (isinstance(mechanism, RulePricedMechanism) and cls.clear_book is PairwiseMechanism.clear_book
            and cls.settlement_prices is RulePricedMechanism.settlement_prices):
        return int(mechanism.price_rule)
    return None


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
    Mechanisms with a compiled price rule run as one compiled call.
    """
    participant = np.ascontiguousarray(participant, dtype=np.int64)
    side = np.ascontiguousarray(side, dtype=np.int64)
    pool = np.ascontiguousarray(pool, dtype=np.int64)
    price = np.ascontiguousarray(price, dtype=np.float64)
    quantity_wh = np.ascontiguousarray(quantity_wh, dtype=np.int64)
    order_id = np.ascontiguousarray(order_id, dtype=np.int64)
    placed_round = np.ascontiguousarray(placed_round, dtype=np.int64)
    rule = compiled_price_rule(mechanism)
    if rule is not None:
        return _clear_round(participant, side, pool, price, quantity_wh, order_id, placed_round, int(n_participants),
                            rule, bool(getattr(mechanism, "equal_prices", False)), int(n_pools), int(tie_break), int(key),
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
