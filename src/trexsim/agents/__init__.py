"""Traders: populations of agents as arrays, one object per trader type."""

from trexsim.agents.base import OrderBatch, TraderObservation, TraderPopulation, build_trader_populations
from trexsim.agents.baselines import FixedPriceTraders, GridOnlyTraders

__all__ = [
    "FixedPriceTraders",
    "GridOnlyTraders",
    "OrderBatch",
    "TraderObservation",
    "TraderPopulation",
    "build_trader_populations",
]
