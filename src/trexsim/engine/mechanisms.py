"""Settlement mechanisms: a registry, and the three of the T-REX paper's case study.

A mechanism turns one pool's order book into matches with prices. Pairwise mechanisms
share the ALEX matching order (:func:`trexsim.engine.matching.match_pairwise`) and differ
in when a pair trades and at what prices. A new mechanism registers itself with
:func:`register_mechanism` and needs no change to the market.

Mechanisms (T-REX paper, section 5):

- M1 ``average_price``: a pair trades if bid >= ask, both at (bid + ask) / 2.
- M2 ``exact_match``: a pair trades only if bid == ask, at that price.
- M3 ``exact_price``: a pair trades if bid >= ask; the buyer pays its bid, the seller
  receives its ask, and the difference stays with the auctioneer (weakly budget balanced).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import numba
import numpy as np

from trexsim.engine.matching import Matches, match_book, match_pairwise


class Mechanism(ABC):
    """Clears one energy pool for one delivery round."""

    name: ClassVar[str]
    paper_name: ClassVar[str] = ""
    budget_balance: ClassVar[str] = "strong"  # 'strong' (no money left over) or 'weak'

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

    def clear_book(self, participant, side, pool, price, quantity_wh, n_pools: int = 2) -> tuple[Matches, np.ndarray]:
        """Clear every pool of a book (side 0 = bid, 1 = ask), the highest pool code first.

        Returns the matches (indices into the book) and each match's pool. Subclasses may
        override this with a faster whole-book kernel; the default clears pool by pool.
        """
        parts, pools = [], []
        for code in range(n_pools - 1, -1, -1):
            bids = np.flatnonzero((pool == code) & (side == 0))
            asks = np.flatnonzero((pool == code) & (side == 1))
            if bids.size == 0 or asks.size == 0:
                continue
            m = self.clear(participant[bids], price[bids], quantity_wh[bids], participant[asks], price[asks], quantity_wh[asks])
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

    def clear_book(self, participant, side, pool, price, quantity_wh, n_pools: int = 2) -> tuple[Matches, np.ndarray]:
        bi, ai, q, pools = match_book(participant, side, pool, price, quantity_wh, equal_prices=self.equal_prices, n_pools=n_pools)
        if q.size == 0:
            return Matches.empty(), pools
        buyer, seller = self.settlement_prices(price[bi], price[ai])
        return Matches(bi, ai, q, buyer, seller), pools


_REGISTRY: dict[str, Mechanism] = {}


def register_mechanism(cls: type[Mechanism]) -> type[Mechanism]:
    """Class decorator: make a mechanism available by its ``name`` to configs and the market."""
    if not getattr(cls, "name", None):
        raise ValueError("a mechanism needs a class attribute 'name'")
    _REGISTRY[cls.name] = cls()
    return cls


def get_mechanism(name: str) -> Mechanism:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown settlement mechanism {name!r}; registered: {', '.join(sorted(_REGISTRY))}") from None


def registered_mechanisms() -> list[str]:
    return sorted(_REGISTRY)


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
