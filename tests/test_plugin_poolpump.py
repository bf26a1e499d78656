"""The example device plug-in (examples/trexsim-poolpump): a pool pump on a timer found through its entry
point, its energy worked by hand, its config errors named by key, run by ``trexsim run`` and metered."""

import json
import os
import subprocess
import sys

import duckdb
import numpy as np
import pytest

pytest.importorskip("trexsim_poolpump", reason="the example device plug-in is not installed: pip install "
                                               "./examples/trexsim-poolpump (.ci/run installs it)")

from trexsim import parse_config  # noqa: E402
from trexsim.devices import device_class  # noqa: E402
from trexsim.errors import ConfigError  # noqa: E402
from trexsim.node import meter_limits  # noqa: E402
from trexsim.plugins import device_origin  # noqa: E402


def pool_house(**pump):
    """A household using 200 W, with a pool pump, in 10-minute rounds over two days."""
    return {
        "study": {"name": "pool", "days": 2, "interval_s": 600, "seed": 4, "start_datetime": "2024-07-01 00:00:00"},
        "market": {"grid": {"buy_price": 0.1449, "sell_price": 0.069}},
        "participants": {
            "home": {"profile": {"type": "flat", "load_w": 200}, "devices": [{"type": "pool_pump", **pump}]},
            "pv": {"profile": {"type": "flat", "generation_w": 3000},
                   "trader": {"type": "fixed_price", "bid_price": 0.12, "ask_price": 0.09}},
        },
    }


def test_found_through_its_entry_point():
    assert device_class("pool_pump").__module__ == "trexsim_poolpump"
    assert device_origin("pool_pump") == ("entry point 'pool_pump = trexsim_poolpump:PoolPumps' "
                                          "(group trexsim.devices) of package trexsim-poolpump 0.1.0")
    assert device_origin("ev") == "built-in"


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError) as err:
        parse_config(pool_house(power_w=0))
    assert "participants.home.devices[0].power_w" in str(err.value)
    with pytest.raises(ConfigError) as err:
        parse_config(pool_house(hours=3))
    assert "participants.home.devices[0].hours" in str(err.value)


def test_trexsim_run_meters_the_pump(tmp_path):
    # 1,100 W for 2.5 hours from 10:05: 10-minute rounds of 183.33 Wh, the first and last halves (91.67 Wh);
    # whole Wh by the running sum: 92 at 10:00, then 183 or 184, 2,750 Wh a day
    cfg = tmp_path / "pool.json"
    cfg.write_text(json.dumps(pool_house(start_hour=10 + 5 / 60, hours_per_day=2.5)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    r = subprocess.run([sys.executable, "-m", "trexsim", "run", str(cfg), "--out", str(tmp_path / "run"),
                        "--no-plots", "--no-report"], capture_output=True, text=True, env=env, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    with duckdb.connect(str(tmp_path / "run" / "run.duckdb"), read_only=True) as con:
        load = np.array(con.execute("SELECT load_wh FROM meter_readings WHERE participant_id = 'home' ORDER BY round")
                        .fetchall())[:, 0] - 33   # the household's own 200 W: 33.33 Wh a round, 33 in each
    day = load[:144]
    pump = day[60:76]
    assert pump[0] == 92 and pump[-1] == 92 and set(pump[1:-1].tolist()) <= {183, 184}
    assert pump.sum() == 2750 and day[:60].sum() == 0 and day[76:].sum() == 0
    assert np.array_equal(load[144:], day)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["participants"]["home"]["net_cost"] > 0


def test_meter_limits_take_its_power():
    limits = meter_limits(parse_config(pool_house(power_w=5000)))
    base = meter_limits(parse_config({**pool_house(), "participants": {"home": {"profile": {"type": "flat", "load_w": 200}},
                                                                       "pv": pool_house()["participants"]["pv"]}}))
    assert limits["load_wh"][0] - base["load_wh"][0] == pytest.approx(5000 / 6, abs=1)
