"""Delivery (imbalance) settlement: contracts are firm, the grid takes the rest.

After a delivery round each participant's metered net energy (load - generation +
battery charge - battery discharge; positive = import) is compared with its contracted
net position (bought - sold in the market). The difference is traded with the grid at
net-billing prices:

``imbalance_wh = net_meter_wh - (bought_wh - sold_wh)``; a positive imbalance is bought
from the grid at the buy price, a negative one is sold to it at the sell price.

This one rule gives the T-REX paper's rules 8 and 9: a seller that produced less than
it sold buys the shortfall from the grid (unless its battery discharge covered it), and
a buyer that used less than it bought has still paid the seller in full, the surplus
being exported at the sell price. Own PV and battery serve own load first because the
meter nets them before anything else.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np


@dataclass(frozen=True)
class DeliveryResult:
    """Per participant outcome of one delivery round (all arrays of length n_participants)."""

    net_meter_wh: np.ndarray  # metered net energy, + import
    grid_import_wh: np.ndarray
    grid_export_wh: np.ndarray
    shortfall_wh: np.ndarray  # sold energy not delivered (bought from the grid instead)
    unused_wh: np.ndarray  # bought energy not used (exported to the grid)
    battery_cover_wh: np.ndarray  # shortfall that the battery's discharge covered
    grid_cost_usd: np.ndarray  # paid to the grid
    grid_revenue_usd: np.ndarray  # received from the grid


def settle_delivery(
    load_wh: np.ndarray,
    generation_wh: np.ndarray,
    battery_charge_wh: np.ndarray,
    battery_discharge_wh: np.ndarray,
    bought_wh: np.ndarray,
    sold_wh: np.ndarray,
    buy_price: float,
    sell_price: float,
) -> DeliveryResult:
    """Settle one delivery round against the meters.

    Parameters
    ----------
    load_wh, generation_wh : array of int
        Metered consumption and generation of the round [Wh], >= 0.
    battery_charge_wh, battery_discharge_wh : array of int
        Battery energy at the meter [Wh], >= 0 (charge draws, discharge supplies).
    bought_wh, sold_wh : array of int
        Energy the participant bought and sold in the market for this round [Wh].
    buy_price, sell_price : float
        Grid net-billing prices for the round [$/kWh].
    """
    cols = _settle(np.ascontiguousarray(load_wh, dtype=np.int64), np.ascontiguousarray(generation_wh, dtype=np.int64),
                   np.ascontiguousarray(battery_charge_wh, dtype=np.int64), np.ascontiguousarray(battery_discharge_wh, dtype=np.int64),
                   np.ascontiguousarray(bought_wh, dtype=np.int64), np.ascontiguousarray(sold_wh, dtype=np.int64),
                   float(buy_price), float(sell_price))
    return DeliveryResult(*cols)


@numba.njit(cache=True, nogil=True)
def settle_participant(load, gen, charge, discharge, bought, sold, buy_price, sell_price):
    """Net billing of one participant's delivered round (the rule of :func:`settle_delivery`, scalars):
    ``(net, import, export, shortfall, unused, battery_cover)`` [Wh] and ``(grid_cost, grid_revenue)`` [$].
    A driver that keeps its own arrays (``engine.step``) calls this and allocates nothing."""
    e = load - gen + charge - discharge
    imbalance = e - (bought - sold)
    imp = exp = shortfall = unused = 0
    cost = revenue = 0.0
    if imbalance > 0:
        imp = imbalance
        shortfall = min(sold, imbalance)
        cost = imbalance * (buy_price / 1000.0)
    elif imbalance < 0:
        exp = -imbalance
        unused = min(bought, -imbalance)
        revenue = -imbalance * (sell_price / 1000.0)
    # the shortfall there would have been without the discharge, less the one there is
    without = imbalance + discharge
    cover = min(sold, max(without, 0)) - shortfall
    return e, imp, exp, shortfall, unused, cover, cost, revenue


@numba.njit(cache=True, nogil=True)
def _settle(load, gen, charge, discharge, bought, sold, buy_price, sell_price):
    n = load.size
    net = np.empty(n, dtype=np.int64)
    imp = np.empty(n, dtype=np.int64)
    exp = np.empty(n, dtype=np.int64)
    shortfall = np.empty(n, dtype=np.int64)
    unused = np.empty(n, dtype=np.int64)
    cover = np.empty(n, dtype=np.int64)
    cost = np.empty(n)
    revenue = np.empty(n)
    for i in range(n):
        (net[i], imp[i], exp[i], shortfall[i], unused[i], cover[i], cost[i],
         revenue[i]) = settle_participant(load[i], gen[i], charge[i], discharge[i], bought[i], sold[i], buy_price,
                                          sell_price)
    return net, imp, exp, shortfall, unused, cover, cost, revenue


@numba.njit(cache=True, nogil=True)
def energy_balance_error_wh(load_wh, generation_wh, battery_charge_wh, battery_discharge_wh, grid_import_wh, grid_export_wh):
    """Consumed (load + charging) minus supplied (generation + discharge + grid net import), summed [Wh].

    Zero in every settled round: an independent check of :func:`settle_delivery`'s bookkeeping.
    """
    total = 0
    for i in range(load_wh.size):
        total += (load_wh[i] + battery_charge_wh[i]) - (generation_wh[i] + battery_discharge_wh[i]
                                                        + grid_import_wh[i] - grid_export_wh[i])
    return total


@numba.njit(cache=True, nogil=True)
def _settle_round(load, gen, charge, discharge, bought, sold, grid_only_net, buy_price, sell_price):
    """The market's whole delivery step in one compiled call.

    :func:`_settle`, then each participant's grid-only bill (its grid-only net energy at the
    round's net-billing prices) and two independent checks: the energy balance
    (:func:`energy_balance_error_wh`) and bought minus sold, both zero in a correct round [Wh].
    """
    net, imp, exp, shortfall, unused, cover, cost, revenue = _settle(load, gen, charge, discharge, bought, sold,
                                                                      buy_price, sell_price)
    n = load.size
    grid_only_cost = np.empty(n)
    traded = 0
    for i in range(n):
        e = grid_only_net[i]
        grid_only_cost[i] = e * (buy_price / 1000.0) if e > 0 else e * (sell_price / 1000.0)
        traded += bought[i] - sold[i]
    energy_error = energy_balance_error_wh(load, gen, charge, discharge, imp, exp)
    return net, imp, exp, shortfall, unused, cover, cost, revenue, grid_only_cost, energy_error, traded

