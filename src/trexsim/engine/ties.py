"""Who trades first among orders at equal prices (``market.tie_break``).

ALEX matches bids from the highest price down and asks from the lowest up (rules 5-6); orders at
the same price are taken in *submission order*. In a simulation that order is the roster order,
so, left alone, the household listed first wins every tie — and ties are the rule, not the
exception: every fixed-price trader of a kind bids the same price. In the original T-REX
deployment submission order was network arrival order, i.e. effectively random. The rules:

- ``random`` (:data:`RANDOM`, the default): within each round placed, the participants are put
  in a fresh random order for every delivery round. The order is a counter-based hash of
  ``(run key, episode, delivery round, participant)`` (SplitMix64, Steele et al. 2014), so it
  needs no random state, is the same whichever driver computes it (modules, RL envs, the study's
  compiled loop) and however the participants are split over processes.
- ``pro_rata`` (:data:`PRO_RATA`): the orders of one price level of one side share what that
  level trades in proportion to their quantities, in whole Wh by the largest-remainder rule
  (equal remainders: submission order). The level's total is what ALEX matching gives it, which
  does not depend on the order within the level; only a self-trade skip can make a share
  unfillable, and then it stays unfilled.
- ``submission`` (:data:`SUBMISSION`): the roster order (round placed, roster position, order
  within the batch). Orders placed in an earlier round always come before later ones (price-time
  priority) under every rule.

:func:`clear_book_ordered` is the one compiled entry every driver calls.
"""

from __future__ import annotations

import numba
import numpy as np

from trexsim.engine.matching import BOOK_ORDER, _SMALL_SORT, _clear_book_in_order, _clear_book_in_order_into

SUBMISSION, RANDOM, PRO_RATA = 0, 1, 2
TIE_BREAKS = {"submission": SUBMISSION, "random": RANDOM, "pro_rata": PRO_RATA}

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def tie_break_code(name: str) -> int:
    """The compiled code of a ``market.tie_break`` name."""
    try:
        return TIE_BREAKS[name]
    except KeyError:
        raise ValueError(f"unknown tie_break {name!r}; choose one of {', '.join(TIE_BREAKS)}") from None


def tie_key(seed: int) -> int:
    """The run's tie-break key from ``study.seed`` (the third child of the study's SeedSequence)."""
    state = np.random.SeedSequence(int(seed)).spawn(3)[2].generate_state(1, np.uint64)
    return int(state[0] & np.uint64(0x7FFFFFFFFFFFFFFF))


@numba.njit(cache=True, nogil=True)
def _mix64(z):
    """SplitMix64's finaliser: a bijection of uint64 whose outputs look independent."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@numba.njit(cache=True, nogil=True)
def _round_base(key, episode, delivery_round):
    base = _mix64(np.uint64(key) + _GOLDEN)
    base = _mix64(base ^ (np.uint64(episode) * _GOLDEN))
    return _mix64(base ^ (np.uint64(delivery_round) + _GOLDEN))


@numba.njit(cache=True, nogil=True)
def _draw(base, participant):
    """A participant's draw for one round; distinct participants get distinct draws (a bijection)."""
    return _mix64(base + np.uint64(participant + 1) * _GOLDEN)


@numba.njit(cache=True, nogil=True)
def participant_draws(key, episode, delivery_round, n_participants):
    """Every participant's draw for one delivery round (distinct values)."""
    base = _round_base(key, episode, delivery_round)
    draws = np.empty(n_participants, dtype=np.uint64)
    for i in range(n_participants):
        draws[i] = _draw(base, i)
    return draws


def participant_rank(key: int, episode: int, delivery_round: int, n_participants: int) -> np.ndarray:
    """Each participant's place in the random order of one delivery round (a permutation of 0..n-1):
    the participants ordered by their draws. (NumPy's sort: the draws are distinct, so any sort
    gives the same order, and NumPy's is several times faster than a compiled mergesort here.)"""
    order = np.argsort(participant_draws(int(key), int(episode), int(delivery_round), int(n_participants)))
    rank = np.empty(n_participants, dtype=np.int64)
    rank[order] = np.arange(n_participants, dtype=np.int64)
    return rank


@numba.njit(cache=True, nogil=True)
def place_batch(participant, booked):
    """Each order's place among its participant's orders in one delivery round's book (0 for the
    first), for a batch appended to the book; ``booked`` (orders booked so far, per participant)
    is advanced in place. With the round placed and the participant's tie rank, the place fixes an
    order's position in the submission order whatever the arrival order of other batches."""
    position = np.empty(participant.size, dtype=np.int64)
    for i in range(participant.size):
        position[i] = booked[participant[i]]
        booked[participant[i]] += 1
    return position


@numba.njit(cache=True, nogil=True)
def _placed_in_one_round(placed_round):
    """Whether every order of the book was placed in the same round (no price-time priority to apply)."""
    for i in range(1, placed_round.size):
        if placed_round[i] != placed_round[0]:
            return False
    return True


@numba.njit(cache=True, nogil=True)
def submission_order(participant, placed_round, n_participants, tie_break, key, episode, delivery_round, rank=None):
    """The permutation that puts a book in submission order: round placed, then the participant's
    place (roster position, or this round's random draw), then the order within its batch.
    Empty (:data:`~trexsim.engine.matching.BOOK_ORDER`) when the book already is in that order.

    ``rank``: the round's :func:`participant_rank`, where the caller has it already (the market
    does, for the ``orders`` table's ``tie_rank``); the random order is then a counting sort by it
    instead of a sort of the draws — the same order."""
    n = participant.size
    one_round = _placed_in_one_round(placed_round)
    if tie_break == RANDOM and rank is not None:
        # stable counting sort by the participant's rank (a permutation of 0..n_participants-1)
        start = np.zeros(n_participants + 1, dtype=np.int64)
        for i in range(n):
            start[rank[participant[i]] + 1] += 1
        for r in range(n_participants):
            start[r + 1] += start[r]
        order = np.empty(n, dtype=np.int64)
        for i in range(n):
            r = rank[participant[i]]
            order[start[r]] = i
            start[r] += 1
    elif tie_break == RANDOM:
        base = _round_base(key, episode, delivery_round)
        draws = np.empty(n, dtype=np.uint64)
        for i in range(n):
            draws[i] = _draw(base, participant[i])
        order = np.argsort(draws, kind="mergesort")
    else:
        in_order = True
        for i in range(1, n):
            if participant[i] < participant[i - 1]:
                in_order = False
                break
        if in_order and one_round:  # the usual book: already in roster order
            return BOOK_ORDER
        order = np.argsort(participant, kind="mergesort")
    if not one_round:
        order = order[np.argsort(placed_round[order], kind="mergesort")]
    return order


@numba.njit(cache=True, nogil=True)
def submission_order_into(participant, placed_round, n_participants, tie_break, key, episode, delivery_round, out,
                          draws):
    """:func:`submission_order` (without ``rank``) into ``out``; returns its length (0: the book's own order).
    Allocates nothing for a small book placed in one round; otherwise computes it as :func:`submission_order`
    does and copies it."""
    n = participant.size
    one_round = _placed_in_one_round(placed_round)
    if one_round and n <= _SMALL_SORT:
        if tie_break == RANDOM:
            base = _round_base(key, episode, delivery_round)
            for t in range(n):  # insertion sort by the participants' draws: stable, as the mergesort
                d = _draw(base, participant[t])
                u = t
                while u > 0 and draws[u - 1] > d:
                    out[u] = out[u - 1]
                    draws[u] = draws[u - 1]
                    u -= 1
                out[u] = t
                draws[u] = d
            return n
        in_order = True
        for i in range(1, n):
            if participant[i] < participant[i - 1]:
                in_order = False
                break
        if in_order:
            return 0
    order = submission_order(participant, placed_round, n_participants, tie_break, key, episode, delivery_round)
    for t in range(order.size):
        out[t] = order[t]
    return order.size


@numba.njit(cache=True, nogil=True)
def _pro_rata_quantities(order, side, pool, price, quantity_wh, bid_index, ask_index, filled_q):
    """Each order's share of what its (pool, side, price) level traded, whole Wh, largest remainder
    (equal remainders: submission order ``order``)."""
    n = side.size
    if order.size == 0:
        order = np.arange(n)
    filled = np.zeros(n, dtype=np.int64)
    for t in range(filled_q.size):
        filled[bid_index[t]] += filled_q[t]
        filled[ask_index[t]] += filled_q[t]
    # levels: orders sorted by (pool, side, price); the stable sorts keep submission order inside a level
    level = order[np.argsort(price[order], kind="mergesort")]
    level = level[np.argsort(side[level], kind="mergesort")]
    level = level[np.argsort(pool[level], kind="mergesort")]
    share = quantity_wh.copy()
    start = 0
    while start < n:
        first = level[start]
        stop = start + 1
        while (stop < n and pool[level[stop]] == pool[first] and side[level[stop]] == side[first]
               and price[level[stop]] == price[first]):
            stop += 1
        total_q = 0
        traded = 0
        for s in range(start, stop):
            total_q += quantity_wh[level[s]]
            traded += filled[level[s]]
        if stop - start > 1 and traded < total_q:
            rest = traded
            remainder = np.empty(stop - start)
            for s in range(start, stop):
                i = level[s]
                exact = traded * (quantity_wh[i] / total_q)
                whole = np.int64(np.floor(exact))
                if whole > quantity_wh[i]:
                    whole = quantity_wh[i]
                share[i] = whole
                rest -= whole
                remainder[s - start] = exact - whole
            by_remainder = np.argsort(-remainder, kind="mergesort")
            t = 0
            while rest > 0 and t < by_remainder.size:
                i = level[start + by_remainder[t]]
                if share[i] < quantity_wh[i]:
                    share[i] += 1
                    rest -= 1
                t += 1
        start = stop
    return share


@numba.njit(cache=True, nogil=True)
def clear_book_ordered(participant, side, pool, price, quantity_wh, placed_round, n_participants, equal_prices,
                       n_pools, tie_break, key, episode, delivery_round, rank=None):
    """Match one delivery round's book under a tie-break rule.

    The arrays are the book in any order (``rank``: see :func:`submission_order`). Returns
    ``(bid_index, ask_index, quantity_wh, pool)``: the matches in matching order, indices into
    the arrays as given.
    """
    order = submission_order(participant, placed_round, n_participants, tie_break, key, episode, delivery_round, rank)
    bi, ai, mq, pools = _clear_book_in_order(order, participant, side, pool, price, quantity_wh, equal_prices, n_pools)
    if tie_break == PRO_RATA and mq.size > 0:
        share = _pro_rata_quantities(order, side, pool, price, quantity_wh, bi, ai, mq)
        bi, ai, mq, pools = _clear_book_in_order(order, participant, side, pool, price, share, equal_prices, n_pools)
    return bi, ai, mq, pools


@numba.njit(cache=True, nogil=True)
def clear_book_ordered_into(participant, side, pool, price, quantity_wh, placed_round, n_participants, equal_prices,
                            n_pools, tie_break, key, episode, delivery_round, w):
    """:func:`clear_book_ordered` into the buffers of ``w`` (a :class:`~trexsim.engine.mechanisms.ClearingWork`):
    the matches are ``w.bi[:m]``, ``w.ai[:m]``, ``w.q[:m]``, ``w.pools[:m]``; returns ``m``. The same matches;
    a small book placed in one round allocates nothing."""
    length = submission_order_into(participant, placed_round, n_participants, tie_break, key, episode,
                                   delivery_round, w.order, w.draws)
    order = w.order[:length]
    m = _clear_book_in_order_into(order, participant, side, pool, price, quantity_wh, equal_prices, n_pools, w.bids,
                                  w.asks, w.bid_order, w.ask_order, w.ask_price_sorted, w.ask_rem, w.bi, w.ai, w.q,
                                  w.pools)
    if tie_break == PRO_RATA and m > 0:
        share = _pro_rata_quantities(order, side, pool, price, quantity_wh, w.bi[:m], w.ai[:m], w.q[:m])
        m = _clear_book_in_order_into(order, participant, side, pool, price, share, equal_prices, n_pools, w.bids,
                                      w.asks, w.bid_order, w.ask_order, w.ask_price_sorted, w.ask_rem, w.bi, w.ai,
                                      w.q, w.pools)
    return m
