"""A market's two steps of a round, each one compiled call with its self-checks: clearing a delivery
round's book (:func:`clear_checked`) and settling a delivered round against the meters
(:func:`settle_checked`).

Each step returns a named record. The checks of :mod:`trexsim.engine.checks` run inside the same
compiled call as the kernel they check (for mechanisms with a compiled clearing), so a round
pays one dispatch per step; they stay independent of it: they recompute every quantity from the
orders, the matches and the meters, never from the kernel's own totals.
"""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np

from trexsim.engine.checks import _check_clearing, _check_delivery, auctioneer_surplus_usd, check_clearing
from trexsim.engine.delivery import _settle_round
from trexsim.engine.mechanisms import Mechanism, _clear_round, clear_round, compiled_clearing
from trexsim.engine.ties import SUBMISSION


class Clearing(NamedTuple):
    """One delivery round's book, cleared and checked. Matches in matching order; totals per participant."""

    pool: np.ndarray
    buyer: np.ndarray
    seller: np.ndarray
    quantity_wh: np.ndarray
    buyer_price: np.ndarray  # $/kWh
    seller_price: np.ndarray  # $/kWh
    bid_id: np.ndarray
    ask_id: np.ndarray
    bought_wh: np.ndarray
    sold_wh: np.ndarray
    cost_usd: np.ndarray
    revenue_usd: np.ndarray
    bid_index: np.ndarray  # each match's bid as an index into the book's arrays
    ask_index: np.ndarray
    auctioneer_surplus_usd: float  # exactly 0.0 for a strongly budget-balanced mechanism
    broken_rule: int  # 0: every check held; else an index into CLEARING_RULES
    broken_at: int  # the match, order or participant where it broke (-1: none)


@numba.njit(cache=True, nogil=True)
def _clear_checked(participant, side, pool, price, quantity_wh, order_id, placed_round, n_participants, rule, k,
                   equal_prices, n_pools, tie_break, key, episode, delivery_round, strong, rank):
    (pools, buyer, seller, q, bp, sp, bid_id, ask_id, bought, sold, cost, revenue, bi, ai) = _clear_round(
        participant, side, pool, price, quantity_wh, order_id, placed_round, n_participants, rule, k, equal_prices, n_pools,
        tie_break, key, episode, delivery_round, rank)
    broken, at = _check_clearing(participant, side, pool, price, quantity_wh, pools, buyer, seller, q, bp, sp, bi, ai,
                                 bought, sold, cost, revenue, strong)
    surplus = auctioneer_surplus_usd(q, bp, sp)
    return (pools, buyer, seller, q, bp, sp, bid_id, ask_id, bought, sold, cost, revenue, bi, ai, surplus, broken, at)


class ClearingCodes(NamedTuple):
    """What :func:`clear_checked` reads of a mechanism, looked up once by a caller that clears it every round
    (:func:`clearing_codes`)."""

    compiled: tuple[int, float] | None  # the compiled rule and its k (:func:`~trexsim.engine.mechanisms.compiled_clearing`)
    equal_prices: bool
    strong: bool  # strongly budget balanced: the checks require buyer price == seller price


@numba.njit(cache=True, nogil=True)
def unmatched_orders(participant, side, pool, price, quantity_wh, order_id, bid_index, ask_index, matched_wh):
    """The orders of a book with energy left after its matches, in book order, each with what it has left (Wh):
    what a market hands up to its parent. Returns ``(participant, side, pool, price, quantity_wh, order_id)``."""
    left = quantity_wh.copy()
    for t in range(matched_wh.size):
        left[bid_index[t]] -= matched_wh[t]
        left[ask_index[t]] -= matched_wh[t]
    keep = np.flatnonzero(left > 0)
    return participant[keep], side[keep], pool[keep], price[keep], left[keep], order_id[keep]


def clearing_codes(mechanism: Mechanism) -> ClearingCodes:
    return ClearingCodes(compiled_clearing(mechanism), bool(getattr(mechanism, "equal_prices", False)),
                         mechanism.budget_balance == "strong")


def clear_checked(mechanism: Mechanism, participant, side, pool, price, quantity_wh, order_id, placed_round,
                  n_participants: int, n_pools: int = 2, *, tie_break: int = SUBMISSION, key: int = 0, episode: int = 0,
                  delivery_round: int = 0, rank: np.ndarray | None = None, codes: ClearingCodes | None = None,
                  typed: bool = False) -> Clearing:
    """Clear one delivery round's whole book (:func:`~trexsim.engine.mechanisms.clear_round`), check
    it (:func:`~trexsim.engine.checks.check_clearing`) and total the auctioneer's surplus.

    The record's ``broken_rule`` says whether a check failed; the caller decides what to do (the
    market stops the run, naming the rule). ``rank``: the round's participant rank under the
    random tie-break, where the caller has computed it (:func:`~trexsim.engine.ties.submission_order`).
    ``codes``: the mechanism's :func:`clearing_codes`, where the caller keeps them; ``typed``: every array is
    already contiguous int64 (``price`` float64), as a market's book holds them.
    """
    if not typed:
        i64 = lambda a: np.ascontiguousarray(a, dtype=np.int64)  # noqa: E731
        participant, side, pool, quantity_wh, order_id, placed_round = (
            i64(a) for a in (participant, side, pool, quantity_wh, order_id, placed_round))
        price = np.ascontiguousarray(price, dtype=np.float64)
        if rank is not None:
            rank = np.ascontiguousarray(rank, dtype=np.int64)
    if codes is None:
        codes = clearing_codes(mechanism)
    strong = codes.strong
    compiled = codes.compiled
    if compiled is not None:
        return Clearing._make(_clear_checked(
            participant, side, pool, price, quantity_wh, order_id, placed_round, int(n_participants), *compiled,
            codes.equal_prices, int(n_pools), int(tie_break), int(key), int(episode), int(delivery_round), strong,
            rank))
    cleared = clear_round(mechanism, participant, side, pool, price, quantity_wh, order_id, placed_round,
                          n_participants, n_pools, tie_break=tie_break, key=key, episode=episode,
                          delivery_round=delivery_round)
    (pools, buyer, seller, q, bp, sp, bid_id, ask_id, bought, sold, cost, revenue, bi, ai) = cleared
    broken, at = check_clearing((participant, side, pool, price, quantity_wh), (pools, buyer, seller, q, bp, sp, bi, ai),
                                (bought, sold, cost, revenue), strong)
    q64 = np.ascontiguousarray(q, dtype=np.int64)
    surplus = float(auctioneer_surplus_usd(q64, np.ascontiguousarray(bp, dtype=np.float64),
                                           np.ascontiguousarray(sp, dtype=np.float64)))
    return Clearing(*cleared, surplus, broken, at)


class Settlement(NamedTuple):
    """One delivered round, settled against the meters and checked: the per-participant arrays of
    :class:`~trexsim.engine.delivery.DeliveryResult` (in its order), each participant's grid-only
    bill, the two conservation sums and the checks' verdict."""

    net_meter_wh: np.ndarray
    grid_import_wh: np.ndarray
    grid_export_wh: np.ndarray
    shortfall_wh: np.ndarray
    unused_wh: np.ndarray
    battery_cover_wh: np.ndarray
    grid_cost_usd: np.ndarray
    grid_revenue_usd: np.ndarray
    grid_only_cost_usd: np.ndarray  # each participant's bill had it never traded
    energy_error_wh: int  # consumed minus supplied, summed: 0 in a correct round
    traded_error_wh: int  # bought minus sold, summed: 0
    broken_rule: int  # 0: every check held; else an index into DELIVERY_RULES
    broken_at: int  # the participant where it broke (-1: none or the whole round)


@numba.njit(cache=True, nogil=True)
def _settle_checked(load, gen, charge, discharge, bought, sold, grid_only_net, cost, revenue, buy_price, sell_price,
                    surplus):
    (net, imp, exp, shortfall, unused, cover, grid_cost, grid_revenue, grid_only_cost, energy_error,
     traded) = _settle_round(load, gen, charge, discharge, bought, sold, grid_only_net, buy_price, sell_price)
    broken, at = _check_delivery(load, gen, charge, discharge, bought, sold, imp, exp, grid_cost, grid_revenue,
                                 buy_price, sell_price, cost, revenue, surplus)
    return (net, imp, exp, shortfall, unused, cover, grid_cost, grid_revenue, grid_only_cost, energy_error, traded,
            broken, at)


def settle_checked(load_wh, generation_wh, battery_charge_wh, battery_discharge_wh, bought_wh, sold_wh,
                   grid_only_net_wh, cost_usd, revenue_usd, buy_price: float, sell_price: float,
                   auctioneer_surplus: float) -> Settlement:
    """Net billing of one delivered round (:func:`~trexsim.engine.delivery.settle_delivery` and the grid-only bills) with the
    delivery checks of :func:`~trexsim.engine.checks.check_delivery`, in one compiled call.

    Meter and contract energies in Wh, money in $, prices in $/kWh.
    """
    i64 = lambda a: np.ascontiguousarray(a, dtype=np.int64)  # noqa: E731
    f64 = lambda a: np.ascontiguousarray(a, dtype=np.float64)  # noqa: E731
    return Settlement._make(_settle_checked(
        i64(load_wh), i64(generation_wh), i64(battery_charge_wh), i64(battery_discharge_wh), i64(bought_wh),
        i64(sold_wh), i64(grid_only_net_wh), f64(cost_usd), f64(revenue_usd), float(buy_price), float(sell_price),
        float(auctioneer_surplus)))
