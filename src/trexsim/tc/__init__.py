"""Transactive control (TC): a price schedule from the predicted powerflow, and price-reactive devices.

A run with ``market.type: "tc"`` runs a community under TC (the TC market module,
``trexsim.modules.tc``; ``trexsim compare`` runs it beside grid only and ALEX): ahead of every horizon (default: a day, hourly prices) the TC market predicts the households' net loads, solves the
feeder's powerflow on them and prices each interval as the grid's time-of-use price plus a congestion
component (``trexsim.tc.pricing``); batteries and flexible loads (``trexsim.devices``) react. See
docs/powerflow.md. The powerflow needs ``trexsim[powerflow]``; this package imports it only when run.
"""

from trexsim.tc.pricing import congestion_price, register_congestion, registered_congestion

__all__ = ["congestion_price", "register_congestion", "registered_congestion"]
