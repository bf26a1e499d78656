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
    net = load_wh - generation_wh + battery_charge_wh - battery_discharge_wh
    contracted = bought_wh - sold_wh
    imbalance = net - contracted
    grid_import = np.maximum(imbalance, 0)
    grid_export = np.maximum(-imbalance, 0)
    shortfall = np.minimum(sold_wh, grid_import)
    unused = np.minimum(bought_wh, grid_export)
    # what the shortfall would have been without the discharge, less what it is
    shortfall_without_battery = np.minimum(sold_wh, np.maximum(imbalance + battery_discharge_wh, 0))
    battery_cover = shortfall_without_battery - shortfall
    return DeliveryResult(
        net_meter_wh=net,
        grid_import_wh=grid_import,
        grid_export_wh=grid_export,
        shortfall_wh=shortfall,
        unused_wh=unused,
        battery_cover_wh=battery_cover,
        grid_cost_usd=grid_import * (buy_price / 1000.0),
        grid_revenue_usd=grid_export * (sell_price / 1000.0),
    )
