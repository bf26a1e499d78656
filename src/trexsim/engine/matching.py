"""Pairwise double auction matching (ALEX rules 5 and 6).

Bids are sorted from the highest price to the lowest and asks from the lowest to the
highest, ties kept in submission order. Each bid in turn takes energy from the asks in
order; a pair settles ``min(bid remainder, ask remainder)`` and the remainders go on
(partial settlement). A participant never trades with itself: such a pair is skipped
and the ask stays available to the next bids.

With ``equal_prices`` a pair trades only when the two prices are identical (M2, exact
match); otherwise when ``bid price >= ask price``. The loop is compiled with Numba: it is
linear in the number of orders except for skipped self-trades.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np


@dataclass(frozen=True)
class Matches:
    """Matched pairs, in matching order. Indices point into the arrays given to the matcher."""

    bid_index: np.ndarray  # int64
    ask_index: np.ndarray  # int64
    quantity_wh: np.ndarray  # int64
    buyer_price: np.ndarray  # float64, $/kWh paid by the buyer
    seller_price: np.ndarray  # float64, $/kWh received by the seller

    def __len__(self) -> int:
        return int(self.quantity_wh.size)

    @staticmethod
    def empty() -> "Matches":
        z = np.zeros(0, dtype=np.int64)
        f = np.zeros(0, dtype=np.float64)
        return Matches(z, z.copy(), z.copy(), f, f.copy())


@numba.njit(cache=True, nogil=True)
def _greedy_pairs(bid_part, bid_price, bid_qty, ask_part, ask_price_sorted, ask_qty, bid_order, ask_order, equal_prices):
    nb = bid_order.size
    na = ask_order.size
    cap = nb + na + 1
    out_b = np.empty(cap, dtype=np.int64)
    out_a = np.empty(cap, dtype=np.int64)
    out_q = np.empty(cap, dtype=np.int64)
    k = _greedy_pairs_into(bid_part, bid_price, bid_qty, ask_part, ask_price_sorted, ask_qty, bid_order, ask_order,
                           equal_prices, np.empty(na, dtype=np.int64), out_b, out_a, out_q, 0)
    return out_b[:k], out_a[:k], out_q[:k]


@numba.njit(cache=True, nogil=True)
def _greedy_pairs_into(bid_part, bid_price, bid_qty, ask_part, ask_price_sorted, ask_qty, bid_order, ask_order,
                       equal_prices, ask_rem, out_b, out_a, out_q, k):
    """ALEX's pairwise matching of one pool (the rule, written once): bids in ``bid_order`` (highest price first),
    asks in ``ask_order`` (lowest first, ``ask_price_sorted`` their prices); the pairs are written at
    ``out_*[k:]``, ``ask_rem`` is scratch of at least ``ask_order.size``. Returns the new ``k``. Allocates nothing."""
    nb = bid_order.size
    na = ask_order.size
    cap = out_b.size
    for j in range(na):
        ask_rem[j] = ask_qty[ask_order[j]]
    first = 0
    for ii in range(nb):
        i = bid_order[ii]
        rem = bid_qty[i]
        if rem <= 0:
            continue
        p = bid_price[i]
        while first < na and ask_rem[first] <= 0:
            first += 1
        if first >= na:
            break
        j = first
        if equal_prices:
            # jump to the first ask at this price: asks below it cannot match this bid
            j = first + np.searchsorted(ask_price_sorted[first:na], p)
        while rem > 0 and j < na:
            if ask_rem[j] <= 0:
                j += 1
                continue
            ap = ask_price_sorted[j]
            if equal_prices:
                if ap != p:
                    break
            elif ap > p:
                break
            a = ask_order[j]
            if ask_part[a] == bid_part[i]:
                j += 1
                continue
            q = rem if rem < ask_rem[j] else ask_rem[j]
            if k == cap:  # cannot happen (each pair exhausts a bid or an ask), kept as a guard
                break
            out_b[k] = i
            out_a[k] = a
            out_q[k] = q
            k += 1
            rem -= q
            ask_rem[j] -= q
            if ask_rem[j] == 0:
                j += 1
    return k


# books up to this many orders a side are sorted in place (insertion sort); larger ones by NumPy's mergesort
_SMALL_SORT = 24


@numba.njit(cache=True, nogil=True)
def _stable_sort_into(index, n, key, descending, out):
    """``out[:n]`` = ``index[:n]`` stably sorted by ``key[index]`` (ascending, or descending): the order
    ``np.argsort(kind="mergesort")`` gives (a stable sort's result is unique). No allocation for small ``n``."""
    if n > _SMALL_SORT:
        k = key[index[:n]]
        o = np.argsort(-k if descending else k, kind="mergesort")
        for t in range(n):
            out[t] = index[o[t]]
        return
    for t in range(n):
        cur = index[t]
        c = key[cur]
        u = t
        if descending:
            while u > 0 and key[out[u - 1]] < c:
                out[u] = out[u - 1]
                u -= 1
        else:
            while u > 0 and key[out[u - 1]] > c:
                out[u] = out[u - 1]
                u -= 1
        out[u] = cur


def match_pairwise(
    bid_participant: np.ndarray,
    bid_price: np.ndarray,
    bid_quantity_wh: np.ndarray,
    ask_participant: np.ndarray,
    ask_price: np.ndarray,
    ask_quantity_wh: np.ndarray,
    *,
    equal_prices: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Match one pool's bids and asks pairwise.

    Parameters
    ----------
    bid_participant, ask_participant : array of int
        Who placed each order (used only to forbid self-trades).
    bid_price, ask_price : array of float
        Order prices [$/kWh]. Arrays are in submission order.
    bid_quantity_wh, ask_quantity_wh : array of int
        Order quantities [Wh], positive integers.
    equal_prices : bool
        Trade only when prices are identical (exact match) instead of when bid >= ask.

    Returns
    -------
    bid_index, ask_index, quantity_wh : arrays of int64
        The matched pairs in matching order; indices into the input arrays.
    """
    bid_price = np.ascontiguousarray(bid_price, dtype=np.float64)
    ask_price = np.ascontiguousarray(ask_price, dtype=np.float64)
    if bid_price.size == 0 or ask_price.size == 0:
        z = np.zeros(0, dtype=np.int64)
        return z, z.copy(), z.copy()
    bid_order = np.argsort(-bid_price, kind="stable").astype(np.int64)
    ask_order = np.argsort(ask_price, kind="stable").astype(np.int64)
    return _greedy_pairs(
        np.ascontiguousarray(bid_participant, dtype=np.int64),
        bid_price,
        np.ascontiguousarray(bid_quantity_wh, dtype=np.int64),
        np.ascontiguousarray(ask_participant, dtype=np.int64),
        ask_price[ask_order],
        np.ascontiguousarray(ask_quantity_wh, dtype=np.int64),
        bid_order,
        ask_order,
        bool(equal_prices),
    )


# an empty submission order: the book's own (a compile-time constant, so nothing is allocated)
BOOK_ORDER = np.zeros(0, dtype=np.int64)


@numba.njit(cache=True, nogil=True)
def _clear_book_in_order(order, participant, side, pool, price, quantity_wh, equal_prices, n_pools):
    """Match every pool of one delivery round's book; pools in descending code order.

    ``order`` is the submission order (a permutation of the book's indices; empty: the book's own
    order, with nothing allocated for it): equal prices are taken in that order. Returns
    ``(bid_index, ask_index, quantity_wh, pool)`` with indices into the book.
    """
    n = participant.size
    i64 = np.int64
    out_b, out_a, out_q, out_p = np.empty(n, i64), np.empty(n, i64), np.empty(n, i64), np.empty(n, i64)
    k = _clear_book_in_order_into(order, participant, side, pool, price, quantity_wh, equal_prices, n_pools,
                                  np.empty(n, i64), np.empty(n, i64), np.empty(n, i64), np.empty(n, i64),
                                  np.empty(n), np.empty(n, i64), out_b, out_a, out_q, out_p)
    return out_b[:k], out_a[:k], out_q[:k], out_p[:k]


@numba.njit(cache=True, nogil=True)
def pool_orders_into(order, side, pool, pool_code, bids, asks):
    """One pool's bids and asks, indices into the book in submission order ``order`` (empty: the book's own),
    written to ``bids`` and ``asks``; returns their counts ``(nb, na)``."""
    reorder = order.size > 0
    nb = 0
    na = 0
    for t in range(side.size):
        i = order[t] if reorder else t
        if pool[i] == pool_code:
            if side[i] == 0:
                bids[nb] = i
                nb += 1
            else:
                asks[na] = i
                na += 1
    return nb, na


@numba.njit(cache=True, nogil=True)
def _clear_book_in_order_into(order, participant, side, pool, price, quantity_wh, equal_prices, n_pools, bids, asks,
                              bid_order, ask_order, ask_price_sorted, ask_rem, out_b, out_a, out_q, out_p):
    """:func:`_clear_book_in_order` into scratch (``bids`` .. ``ask_rem``, at least the book's size) and output
    buffers; returns the match count. Allocates nothing for small books."""
    k = 0
    for pool_code in range(n_pools - 1, -1, -1):
        nb, na = pool_orders_into(order, side, pool, pool_code, bids, asks)
        if nb == 0 or na == 0:
            continue
        _stable_sort_into(bids, nb, price, True, bid_order)
        _stable_sort_into(asks, na, price, False, ask_order)
        for j in range(na):
            ask_price_sorted[j] = price[ask_order[j]]
        start = k
        k = _greedy_pairs_into(participant, price, quantity_wh, participant, ask_price_sorted, quantity_wh,
                               bid_order[:nb], ask_order[:na], equal_prices, ask_rem, out_b, out_a, out_q, k)
        for t in range(start, k):
            out_p[t] = pool_code
    return k


@numba.njit(cache=True, nogil=True)
def _clear_book(participant, side, pool, price, quantity_wh, equal_prices, n_pools):
    """:func:`_clear_book_in_order` with the book's own order as the submission order."""
    return _clear_book_in_order(BOOK_ORDER, participant, side, pool, price, quantity_wh, equal_prices, n_pools)


def match_book(participant, side, pool, price, quantity_wh, *, equal_prices=False, n_pools=2):
    """Match a whole book (every pool) for one delivery round.

    Same rule as :func:`match_pairwise`, applied to each pool on its own, the highest pool code
    (dispatchable) first. ``side`` is 0 for bids, 1 for asks. Returns
    ``(bid_index, ask_index, quantity_wh, pool)``, indices into the book's arrays.
    """
    return _clear_book(np.ascontiguousarray(participant, dtype=np.int64), np.ascontiguousarray(side, dtype=np.int64),
                       np.ascontiguousarray(pool, dtype=np.int64), np.ascontiguousarray(price, dtype=np.float64),
                       np.ascontiguousarray(quantity_wh, dtype=np.int64), bool(equal_prices), int(n_pools))
