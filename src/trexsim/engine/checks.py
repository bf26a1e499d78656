"""Self-checks of every round that can fail: each recomputes a quantity from other quantities.

The market calls :func:`check_clearing` on every cleared book and :func:`check_delivery` on every
settled delivery round; a broken rule stops the run with a :class:`~trexsim.errors.ConservationError`
that names the round and the rule (everything recorded before it is kept). The checks do not
trust the kernels they check:

- clearing: every match against the two orders it pairs (their participants, sides, pools,
  prices and quantities), the mechanism's own budget rule (strong: buyer price = seller price
  for every pair, so the auctioneer keeps exactly 0; weak: buyer price >= seller price, the
  surplus is the sum of (buyer price - seller price) x quantity, never negative), individual
  rationality (nobody pays above its bid or receives below its ask), and the contract totals
  per participant recomputed from the matches;
- delivery: per participant, the metered net energy equals bought - sold + grid import - grid
  export; grid money is grid energy times the tariff; what buyers paid equals what sellers
  received plus the auctioneer's surplus (recomputed from each pair's prices); every amount finite.

Energy is exact (integer Wh); money is compared to :data:`MONEY_TOLERANCE_USD` plus 1e-12 of
the amount (float64 sums in a different order differ in the last bits).
"""

from __future__ import annotations

import numba
import numpy as np

MONEY_TOLERANCE_USD = 1e-9
_REL = 1e-12

CLEARING_RULES = (
    "",
    "a settlement's quantity must be a positive whole number of Wh",
    "settlement prices must be finite",
    "a match must pair a bid with an ask of the same pool",
    "a match's buyer and seller must be the participants of its bid and ask",
    "no participant trades with itself",
    "a buyer never pays more than its bid",
    "a seller never receives less than its ask",
    "strong budget balance: the buyer's price equals the seller's price",
    "weak budget balance: the buyer's price is at least the seller's price",
    "an order is never filled beyond its quantity",
    "contract energy per participant equals the sum of its settlements",
    "contract money per participant equals the sum of its settlements' quantity x price",
)

DELIVERY_RULES = (
    "",
    "meter readings must be non-negative",
    "per participant: metered net energy = bought - sold + grid import - grid export",
    "grid import and export are never both positive",
    "grid cost = grid import x grid buy price",
    "grid revenue = grid export x grid sell price",
    "energy bought in the market equals energy sold",
    "buyers paid what sellers received plus the auctioneer's surplus",
    "market money must be finite",
)


@numba.njit(cache=True, nogil=True)
def _money_close(a, b):
    return abs(a - b) <= MONEY_TOLERANCE_USD + _REL * max(abs(a), abs(b))


@numba.njit(cache=True, nogil=True)
def _check_clearing(participant, side, pool, price, quantity_wh, m_pool, buyer, seller, q, buyer_price, seller_price,
                    bid_index, ask_index, bought, sold, cost, revenue, strong):
    """``(rule, match or participant index)``; rule 0 when every check holds."""
    n_orders = participant.size
    filled = np.zeros(n_orders, dtype=np.int64)
    n = bought.size
    e_bought = np.zeros(n, dtype=np.int64)
    e_sold = np.zeros(n, dtype=np.int64)
    e_cost = np.zeros(n)
    e_revenue = np.zeros(n)
    for t in range(q.size):
        if q[t] <= 0:
            return 1, t
        bp = buyer_price[t]
        sp = seller_price[t]
        if not (np.isfinite(bp) and np.isfinite(sp)):
            return 2, t
        b = bid_index[t]
        a = ask_index[t]
        if b < 0 or b >= n_orders or a < 0 or a >= n_orders or side[b] != 0 or side[a] != 1 \
                or pool[b] != m_pool[t] or pool[a] != m_pool[t]:
            return 3, t
        if buyer[t] != participant[b] or seller[t] != participant[a]:
            return 4, t
        if buyer[t] == seller[t]:
            return 5, t
        if bp > price[b] * (1 + _REL) + 1e-12:
            return 6, t
        if sp < price[a] * (1 - _REL) - 1e-12:
            return 7, t
        if strong and bp != sp:
            return 8, t
        if bp < sp:
            return 9, t
        filled[b] += q[t]
        filled[a] += q[t]
        e_bought[buyer[t]] += q[t]
        e_sold[seller[t]] += q[t]
        e_cost[buyer[t]] += q[t] * bp / 1000.0
        e_revenue[seller[t]] += q[t] * sp / 1000.0
    for i in range(n_orders):
        if filled[i] > quantity_wh[i]:
            return 10, i
    for i in range(n):
        if bought[i] != e_bought[i] or sold[i] != e_sold[i]:
            return 11, i
        if not (_money_close(cost[i], e_cost[i]) and _money_close(revenue[i], e_revenue[i])):
            return 12, i
    return 0, -1


@numba.njit(cache=True, nogil=True)
def auctioneer_surplus_usd(quantity_wh, buyer_price, seller_price):
    """What the auctioneer keeps [$]: the sum over pairs of (buyer price - seller price) x quantity.

    Exactly 0.0 (never -0.0) when every pair has equal prices (M1, M2).
    """
    total = 0.0
    for t in range(quantity_wh.size):
        total += quantity_wh[t] * (buyer_price[t] - seller_price[t]) / 1000.0
    return total + 0.0


def check_clearing(book, matches, totals, strong: bool) -> tuple[int, int]:
    """Check one cleared book. ``book``: (participant, side, pool, price, quantity_wh) arrays;
    ``matches``: (pool, buyer, seller, quantity_wh, buyer_price, seller_price, bid_index, ask_index);
    ``totals``: (bought_wh, sold_wh, cost_usd, revenue_usd) per participant. Returns
    ``(rule, index)``: rule 0 if all holds, else an index into :data:`CLEARING_RULES`."""
    f = lambda a: np.ascontiguousarray(a, dtype=np.float64)  # noqa: E731
    i = lambda a: np.ascontiguousarray(a, dtype=np.int64)  # noqa: E731
    participant, side, pool, price, quantity_wh = book
    m_pool, buyer, seller, q, bp, sp, bi, ai = matches
    bought, sold, cost, revenue = totals
    rule, index = _check_clearing(i(participant), i(side), i(pool), f(price), i(quantity_wh), i(m_pool), i(buyer),
                                  i(seller), i(q), f(bp), f(sp), i(bi), i(ai), i(bought), i(sold), f(cost), f(revenue),
                                  bool(strong))
    return int(rule), int(index)


@numba.njit(cache=True, nogil=True)
def _check_delivery(load, gen, charge, discharge, bought, sold, grid_import, grid_export, grid_cost, grid_revenue,
                    buy_price, sell_price, cost, revenue, surplus):
    n = load.size
    traded = 0
    paid = 0.0
    received = 0.0
    for i in range(n):
        if load[i] < 0 or gen[i] < 0 or charge[i] < 0 or discharge[i] < 0:
            return 1, i
        if load[i] - gen[i] + charge[i] - discharge[i] != bought[i] - sold[i] + grid_import[i] - grid_export[i]:
            return 2, i
        if grid_import[i] < 0 or grid_export[i] < 0 or (grid_import[i] > 0 and grid_export[i] > 0):
            return 3, i
        if not _money_close(grid_cost[i], grid_import[i] * buy_price / 1000.0):
            return 4, i
        if not _money_close(grid_revenue[i], grid_export[i] * sell_price / 1000.0):
            return 5, i
        if not (np.isfinite(cost[i]) and np.isfinite(revenue[i])):
            return 8, i
        traded += bought[i] - sold[i]
        paid += cost[i]
        received += revenue[i]
    if traded != 0:
        return 6, -1
    if not np.isfinite(surplus) or not _money_close(paid, received + surplus):
        return 7, -1
    return 0, -1


def check_delivery(meter, contracts, grid, prices, surplus: float) -> tuple[int, int]:
    """Check one settled delivery round. ``meter``: (load, generation, charge, discharge) Wh;
    ``contracts``: (bought_wh, sold_wh, cost_usd, revenue_usd); ``grid``: (import_wh, export_wh,
    cost_usd, revenue_usd); ``prices``: (buy, sell) $/kWh; ``surplus``: the auctioneer's $.
    Returns ``(rule, participant)`` (rule 0 if all holds; index into :data:`DELIVERY_RULES`)."""
    i = lambda a: np.ascontiguousarray(a, dtype=np.int64)  # noqa: E731
    f = lambda a: np.ascontiguousarray(a, dtype=np.float64)  # noqa: E731
    load, gen, charge, discharge = meter
    bought, sold, cost, revenue = contracts
    imp, exp, grid_cost, grid_revenue = grid
    rule, index = _check_delivery(i(load), i(gen), i(charge), i(discharge), i(bought), i(sold), i(imp), i(exp),
                                  f(grid_cost), f(grid_revenue), float(prices[0]), float(prices[1]), f(cost), f(revenue),
                                  float(surplus))
    return int(rule), int(index)
