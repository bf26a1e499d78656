"""The grid module: publishes the net-billing tariff for every round of an episode."""

from __future__ import annotations

import numpy as np

from trexsim.config.schema import GridConfig
from trexsim.engine.grid import tariff_prices
from trexsim.fabric import topics
from trexsim.fabric.messages import EpisodeStart, GridPrices

BLOCK_ROUNDS = 1440


class Grid:
    """An infinite bus: prices are known ahead (a published tariff), sent in blocks at episode start."""

    def __init__(self, fabric, grid: GridConfig, timezone: str):
        self.fabric = fabric
        self.grid = grid
        self.timezone = timezone
        fabric.subscribe(topics.EPISODE_START, self.on_episode_start)

    def on_episode_start(self, msg: EpisodeStart) -> None:
        starts = msg.start_utc_s + np.arange(msg.rounds, dtype=np.int64) * msg.interval_s
        buy, sell = tariff_prices(starts, self.timezone, self.grid)
        for first in range(0, msg.rounds, BLOCK_ROUNDS):
            self.fabric.publish(topics.GRID_PRICES, GridPrices(msg.episode, first, buy[first:first + BLOCK_ROUNDS], sell[first:first + BLOCK_ROUNDS]))
