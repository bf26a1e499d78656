"""The community's net-load metrics in summary.json (May and Musilek 2024's): worked by hand on two days,
the same from minute rounds as from hourly ones, and present in every run's summary."""

import numpy as np
import pytest

from trexsim import parse_config
from trexsim.records.summary import community_metrics

EDMONTON_MIDNIGHT_UTC_S = 1625119200   # 2021-07-01 00:00 in America/Edmonton (UTC-6 in summer)


def two_days_wh():
    day1 = np.full(24, 1000.0)
    day1[12], day1[18] = -2000.0, 4000.0      # a midday export, an evening peak
    return np.concatenate([day1, np.full(24, 500.0)])


def test_two_days_by_hand():
    m = community_metrics(np.arange(48), two_days_wh(), EDMONTON_MIDNIGHT_UTC_S, 3600, "America/Edmonton")
    assert m["days"] == 2 and m["basis"] == "hourly"
    assert m["avg_daily_import_kwh"] == pytest.approx((26 + 12) / 2)      # day 1: 22 x 1 + 4; day 2: 24 x 0.5
    assert m["avg_daily_export_kwh"] == pytest.approx(1.0)                 # 2 kWh on day 1, none on day 2
    assert m["avg_daily_peak_kw"] == pytest.approx((4 + 0.5) / 2)
    assert m["avg_daily_valley_kw"] == pytest.approx((-2 + 0.5) / 2)
    assert (m["peak_kw"], m["valley_kw"]) == (4.0, -2.0)
    assert m["ramping_kw"] == pytest.approx(12.5 / 47, abs=1e-6)           # 3 + 3 + 3 + 3 + 0.5 over 47 steps
    assert m["one_minus_daily_load_factor"] == pytest.approx((0.75 + 0.0) / 2)   # day 1: 1 - 1/4; day 2: 1 - 1
    assert m["one_minus_monthly_load_factor"] == pytest.approx(1 - 0.75 / 4)


def test_minute_rounds_give_the_hourly_metrics():
    minutes = np.repeat(two_days_wh() / 60.0, 60)          # the same hours in 1-minute rounds
    hourly = community_metrics(np.arange(48), two_days_wh(), EDMONTON_MIDNIGHT_UTC_S, 3600, "America/Edmonton")
    fine = community_metrics(np.arange(48 * 60), minutes, EDMONTON_MIDNIGHT_UTC_S, 60, "America/Edmonton")
    assert fine == pytest.approx(hourly)


def test_every_run_reports_its_community(tmp_path):
    from trexsim.simulation import Simulation

    cfg = {"study": {"name": "c", "days": 2, "seed": 1, "interval_s": 3600, "start_datetime": "2021-07-01 00:00:00",
                     "timezone": "America/Edmonton"},
           "records": {"level": "summary"},
           "participants": {"a": {"profile": {"type": "flat", "load_w": 1500}},
                            "b": {"profile": {"type": "flat", "load_w": 500, "generation_w": 1000}}}}
    summary = Simulation(parse_config(cfg), tmp_path).run(plots=False).summary
    community = summary["community"]
    # flat: 1.5 + 0.5 - 1.0 = 1 kW every hour, at the summary records level too
    assert community["avg_daily_import_kwh"] == pytest.approx(24.0) and community["peak_kw"] == pytest.approx(1.0)
    assert community["ramping_kw"] == 0 and community["one_minus_daily_load_factor"] == pytest.approx(0.0)
