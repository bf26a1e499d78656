"""A pool's book as unit demand and supply curves: every Wh of an order is one unit at its price.

The truthful double auctions of the literature (McAfee 1992; SBBA, Segal-Halevi, Hassidim and Aumann 2016)
are defined for traders of one unit each. trexsim applies them to its own unit, the Wh: an order of ``q`` Wh
at price ``p`` counts as ``q`` unit orders at ``p``. The curves are walked order by order, never expanded,
so an order of 10^9 Wh costs as much as one of 1 Wh.
"""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np


class UnitBook(NamedTuple):
    """One pool's book as unit curves (:func:`unit_book`): the arrays as float64/int64, each side's order
    (bids from the highest price, asks from the lowest, equal prices in submission order) and where the
    curves cross (:func:`efficient_units`)."""

    bid_price: np.ndarray
    bid_wh: np.ndarray
    ask_price: np.ndarray
    ask_wh: np.ndarray
    by_bid: np.ndarray
    by_ask: np.ndarray
    k: int
    b_k: float
    a_k: float
    b_next: float | None
    a_next: float | None


def unit_book(bid_price, bid_quantity_wh, ask_price, ask_quantity_wh) -> UnitBook | None:
    """Sort one pool's bids and asks into unit curves and find where they cross; None if a side is empty."""
    bid_price = np.asarray(bid_price, dtype=np.float64)
    ask_price = np.asarray(ask_price, dtype=np.float64)
    bid_q = np.asarray(bid_quantity_wh, dtype=np.int64)
    ask_q = np.asarray(ask_quantity_wh, dtype=np.int64)
    if bid_q.size == 0 or ask_q.size == 0:
        return None
    by_bid = np.argsort(-bid_price, kind="stable")
    by_ask = np.argsort(ask_price, kind="stable")
    crossing = efficient_units(bid_price[by_bid], bid_q[by_bid], ask_price[by_ask], ask_q[by_ask])
    return UnitBook(bid_price, bid_q, ask_price, ask_q, by_bid, by_ask, *crossing)


def efficient_units(bid_price, bid_quantity_wh, ask_price, ask_quantity_wh):
    """Where the unit demand and supply curves cross.

    Parameters
    ----------
    bid_price, bid_quantity_wh : arrays
        Bids sorted from the highest price [$/kWh], quantities [Wh].
    ask_price, ask_quantity_wh : arrays
        Asks sorted from the lowest price [$/kWh], quantities [Wh].

    Returns
    -------
    k : int
        The efficient trade count [Wh]: the largest k with b_k >= a_k (b_j: the price of the bid
        holding the j-th Wh of the demand curve, a_j the same on the supply curve).
    b_k, a_k : float
        The k-th unit's bid and ask prices [$/kWh] (NaN when k = 0).
    b_next, a_next : float or None
        The (k+1)-th unit's bid and ask prices, None where that side has no (k+1)-th unit.
    """
    k, b_k, a_k, b_next, a_next = _crossing(np.ascontiguousarray(bid_price, dtype=np.float64),
                                            np.ascontiguousarray(bid_quantity_wh, dtype=np.int64),
                                            np.ascontiguousarray(ask_price, dtype=np.float64),
                                            np.ascontiguousarray(ask_quantity_wh, dtype=np.int64))
    return (int(k), float(b_k), float(a_k), None if np.isnan(b_next) else float(b_next),
            None if np.isnan(a_next) else float(a_next))


@numba.njit(cache=True, nogil=True)
def _crossing(bid_price, bid_quantity_wh, ask_price, ask_quantity_wh):
    """:func:`efficient_units`, compiled; a missing (k+1)-th unit's price is NaN."""
    nb, na = bid_price.size, ask_price.size
    i = j = 0
    used_b = used_a = 0  # Wh of the current bid / ask already counted
    k = 0
    b_k = a_k = np.nan
    while i < nb and j < na and bid_price[i] >= ask_price[j]:
        left_b = bid_quantity_wh[i] - used_b
        left_a = ask_quantity_wh[j] - used_a
        step = left_b if left_b < left_a else left_a
        k += step
        used_b += step
        used_a += step
        b_k, a_k = bid_price[i], ask_price[j]
        if used_b == bid_quantity_wh[i]:
            i, used_b = i + 1, 0
        if used_a == ask_quantity_wh[j]:
            j, used_a = j + 1, 0
    b_next = bid_price[i] if i < nb else np.nan
    a_next = ask_price[j] if j < na else np.nan
    return k, b_k, a_k, b_next, a_next


def first_units(order: np.ndarray, quantity_wh: np.ndarray, units: int) -> tuple[np.ndarray, np.ndarray]:
    """The orders holding the first ``units`` Wh of a curve sorted by ``order``, and how many of their Wh
    each: ``(index, taken_wh)``, indices into ``quantity_wh`` in submission (index) order, as
    :func:`trexsim.engine.matching.match_pairwise` expects them."""
    return _first_units(np.ascontiguousarray(order, dtype=np.int64), np.ascontiguousarray(quantity_wh, dtype=np.int64),
                        int(units))


@numba.njit(cache=True, nogil=True)
def _first_units(order, quantity_wh, units):
    taken = np.zeros(quantity_wh.size, dtype=np.int64)
    left = units
    count = 0
    for t in range(order.size):
        if left <= 0:
            break
        i = order[t]
        take = quantity_wh[i] if quantity_wh[i] < left else left
        if take > 0:
            taken[i] = take
            left -= take
            count += 1
    index = np.empty(count, dtype=np.int64)
    take_wh = np.empty(count, dtype=np.int64)
    c = 0
    for i in range(quantity_wh.size):  # in index (submission) order
        if taken[i] > 0:
            index[c] = i
            take_wh[c] = taken[i]
            c += 1
    return index, take_wh


def unit_holder(order: np.ndarray, quantity_wh: np.ndarray, unit: int) -> int:
    """The index of the order holding unit ``unit`` (0-based) of the curve sorted by ``order``."""
    return int(_unit_holder(np.ascontiguousarray(order, dtype=np.int64),
                            np.ascontiguousarray(quantity_wh, dtype=np.int64), int(unit)))


@numba.njit(cache=True, nogil=True)
def _unit_holder(order, quantity_wh, unit):
    before = 0
    for t in range(order.size):
        before += quantity_wh[order[t]]
        if unit < before:
            return order[t]
    return -1


__all__ = ["UnitBook", "efficient_units", "first_units", "unit_book", "unit_holder"]
