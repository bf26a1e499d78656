"""A run on real metered data: the CityLearn 2022 homes, converted and imported."""

import pytest

from trexsim import parse_config
from trexsim.data.importer import convert_citylearn
from trexsim.simulation import Simulation

from conftest import CITYLEARN_DIR as CITYLEARN  # noqa: E402


@pytest.mark.skipif(not CITYLEARN.exists(), reason="the CityLearn 2022 data is not beside this checkout")
def test_one_day_of_citylearn_homes_in_the_market(tmp_path):
    data = convert_citylearn(CITYLEARN, tmp_path / "citylearn.parquet", buildings=[1, 2, 3, 4])
    participants = {
        f"Building_{i}": {"profile": {"type": "file", "path": str(data), "id": f"Building_{i}"},
                          "trader": {"type": "fixed_price", "bid_price": 0.12, "ask_price": 0.10}}
        for i in (1, 2, 3, 4)
    }
    participants["Building_4"]["storage"] = {"capacity_wh": 6400, "power_w": 5000, "efficiency": 0.9487}
    cfg = parse_config({"study": {"name": "citylearn", "start_datetime": "2017-06-01 00:00:00",
                                  "timezone": "America/Los_Angeles", "days": 1, "interval_s": 300},
                        "participants": participants})
    s = Simulation(cfg, tmp_path / "run").run(plots=False).summary
    total_load = sum(p["load_wh"] for p in s["participants"].values())
    total_gen = sum(p["generation_wh"] for p in s["participants"].values())
    assert 10_000 < total_load < 200_000  # a day of four homes, Wh
    assert total_gen > 0
    assert s["market"]["settled_wh"] > 0
    assert s["conservation"]["max_energy_error_wh"] == 0
