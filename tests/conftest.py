import copy
import os
from pathlib import Path

import pytest

# the CityLearn 2022 data: beside the checkout (../shared/data/...) or where TREXSIM_CITYLEARN_DIR points
CITYLEARN_DIR = Path(os.environ.get("TREXSIM_CITYLEARN_DIR",
                                    Path(__file__).resolve().parents[2] / "shared" / "data" / "citylearn-2022"))

TWO_HOUSES = {
    "study": {"name": "two-houses", "start_datetime": "2021-07-01 00:00:00",
              "timezone": "America/Edmonton", "days": 1, "episodes": 1, "seed": 7,
              "interval_s": 60},
    "market": {"type": "alex", "settlement": "average_price", "close_steps": 1,
               "grid": {"buy_price": 0.1449, "sell_price": 0.069}},
    "participants": {
        "buyer": {"profile": {"type": "flat", "load_w": 60000, "generation_w": 0},
                  "trader": {"type": "fixed_price", "bid_price": 0.12, "ask_price": 0.10}},
        "seller": {"profile": {"type": "flat", "load_w": 0, "generation_w": 36000},
                   "trader": {"type": "fixed_price", "bid_price": 0.12, "ask_price": 0.10}},
    },
}


@pytest.fixture
def two_houses():
    """The ALEX issue's config, verbatim (a fresh copy per test)."""
    return copy.deepcopy(TWO_HOUSES)
