"""The grid's net-billing tariff with time-of-use periods, in the study's local time."""

import datetime as dt
import zoneinfo

import numpy as np

from trexsim.config.schema import GridConfig
from trexsim.engine.grid import tariff_prices

TZ = "America/Edmonton"


def utc_s(local: str) -> int:
    return int(dt.datetime.fromisoformat(local).replace(tzinfo=zoneinfo.ZoneInfo(TZ)).timestamp())


def test_flat_prices():
    buy, sell = tariff_prices(np.array([0, 60]), TZ, GridConfig())
    assert buy.tolist() == [0.1449, 0.1449] and sell.tolist() == [0.069, 0.069]


def test_time_of_use_local_hours_weekdays_and_later_periods_win():
    grid = GridConfig(buy_price=0.10, sell_price=0.05, tou=[
        {"months": [6, 7, 8], "hours": [17, 18, 19], "weekdays_only": True, "buy_price": 0.30, "sell_price": 0.08},
        {"months": [7], "hours": [19], "buy_price": 0.40, "sell_price": 0.09},
    ])
    times = ["2021-07-02 18:30:00",  # Friday, peak
             "2021-07-03 18:30:00",  # Saturday: the weekday-only period does not apply
             "2021-07-02 16:59:00",  # before the peak
             "2021-07-02 19:00:00",  # both periods: the later one wins
             "2021-12-01 18:00:00"]  # December: flat
    buy, sell = tariff_prices(np.array([utc_s(t) for t in times]), TZ, grid)
    assert buy.tolist() == [0.30, 0.10, 0.10, 0.40, 0.10]
    assert sell.tolist() == [0.08, 0.05, 0.05, 0.09, 0.05]
