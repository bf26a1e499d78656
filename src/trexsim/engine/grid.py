"""The grid's net-billing tariff: flat prices with optional time-of-use periods."""

from __future__ import annotations

import numpy as np
import pandas as pd

from trexsim.config.schema import GridConfig


def tariff_prices(round_start_utc_s: np.ndarray, timezone: str, grid: GridConfig) -> tuple[np.ndarray, np.ndarray]:
    """Grid ``(buy_price, sell_price)`` [$/kWh] for rounds starting at these UTC seconds.

    Time-of-use periods are matched on the round's local month and hour (and weekday,
    Monday-Friday, when ``weekdays_only``); a later period overrides an earlier one.
    """
    starts = np.asarray(round_start_utc_s, dtype=np.int64)
    buy = np.full(starts.size, float(grid.buy_price))
    sell = np.full(starts.size, float(grid.sell_price))
    if not grid.tou or starts.size == 0:
        return buy, sell
    local = pd.DatetimeIndex(pd.to_datetime(starts, unit="s", utc=True)).tz_convert(timezone)
    month = np.asarray(local.month)
    hour = np.asarray(local.hour)
    weekday = np.asarray(local.dayofweek) < 5
    for period in grid.tou:
        hit = np.isin(month, period.months) & np.isin(hour, period.hours)
        if period.weekdays_only:
            hit &= weekday
        buy[hit] = period.buy_price
        sell[hit] = period.sell_price
    return buy, sell
