"""RealisticProfiles: the seeded BDEW H25 + pvlib household generator."""

from __future__ import annotations

import datetime as dt
import zoneinfo

import numpy as np
import pytest

from trexsim.config.schema import RealisticProfile
from trexsim.data.profiles import Clock
from trexsim.data.realistic import RealisticProfiles


def make_clock(local: str, tz: str = "America/Edmonton", interval_s: int = 60, rounds: int = 1440) -> Clock:
    start = int(dt.datetime.fromisoformat(local).replace(tzinfo=zoneinfo.ZoneInfo(tz)).timestamp())
    return Clock(start_utc_s=start, interval_s=interval_s, rounds_per_episode=rounds, timezone=tz)


def spec(**kw) -> RealisticProfile:
    return RealisticProfile(type="realistic", **kw)


def households(n: int, clock: Clock, seed: int = 0, prefix: str = "H", **kw) -> RealisticProfiles:
    return RealisticProfiles([f"{prefix}{i}" for i in range(n)], [spec(**kw) for _ in range(n)], clock, seed)


JULY = make_clock("2021-07-01 00:00:00")


def test_shape_dtype_and_sign():
    load, gen = households(5, JULY).energy_wh(0, 1440)
    for arr in (load, gen):
        assert arr.shape == (1440, 5) and arr.dtype == np.float64
        assert np.isfinite(arr).all() and (arr >= 0).all()
    assert (load > 0).all()  # a household always draws something
    empty_load, empty_gen = households(3, JULY).energy_wh(0, 0)
    assert empty_load.shape == (0, 3) and empty_gen.shape == (0, 3)


def test_same_seed_same_numbers_different_seed_or_id_different():
    a = households(4, JULY, seed=11).energy_wh(0, 1440)
    b = households(4, JULY, seed=11).energy_wh(0, 1440)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    c = households(4, JULY, seed=12).energy_wh(0, 1440)
    assert not np.allclose(a[0], c[0])
    # households differ from each other, and a new id is a new household
    assert not np.allclose(a[0][:, 0], a[0][:, 1])
    d = households(4, JULY, seed=11, prefix="X").energy_wh(0, 1440)
    assert not np.allclose(a[0], d[0])


def test_numbers_depend_on_id_not_position_or_company():
    together = RealisticProfiles(["a", "b", "c"], [spec(), spec(annual_load_kwh=9000), spec(pv_capacity_kw=0)], JULY, 5)
    alone = RealisticProfiles(["b"], [spec(annual_load_kwh=9000)], JULY, 5)
    reordered = RealisticProfiles(["c", "b"], [spec(pv_capacity_kw=0), spec(annual_load_kwh=9000)], JULY, 5)
    lt, gt = together.energy_wh(0, 1440)
    la, ga = alone.energy_wh(0, 1440)
    lr, gr = reordered.energy_wh(0, 1440)
    np.testing.assert_array_equal(lt[:, 1], la[:, 0])
    np.testing.assert_array_equal(gt[:, 1], ga[:, 0])
    np.testing.assert_array_equal(lt[:, 1], lr[:, 1])


@pytest.mark.parametrize("cuts", [[1440], [700, 740], [1, 1438, 1], [300, 1000, 140]])
def test_chunking_does_not_change_numbers(cuts):
    src = households(6, JULY, seed=3)
    whole_load, whole_gen = src.energy_wh(0, 2880)
    fresh = households(6, JULY, seed=3)
    parts, start = [], 0
    for n in cuts + [2880 - sum(cuts)]:
        parts.append(fresh.energy_wh(start, n))
        start += n
    np.testing.assert_allclose(np.concatenate([p[0] for p in parts]), whole_load, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.concatenate([p[1] for p in parts]), whole_gen, rtol=1e-12, atol=1e-12)


def test_longer_rounds_are_sums_of_minutes():
    minutes_load, minutes_gen = households(3, JULY, seed=2).energy_wh(0, 1440)
    five = make_clock("2021-07-01 00:00:00", interval_s=300, rounds=288)
    load5, gen5 = households(3, five, seed=2).energy_wh(0, 288)
    np.testing.assert_allclose(load5, minutes_load.reshape(288, 5, 3).sum(axis=1), rtol=1e-12)
    np.testing.assert_allclose(gen5, minutes_gen.reshape(288, 5, 3).sum(axis=1), rtol=1e-12, atol=1e-9)
    # 90 s rounds do not fit the minute grid: each round takes its share of the minutes it overlaps
    odd = make_clock("2021-07-01 00:00:00", interval_s=90, rounds=100)
    load_odd, _ = households(3, odd, seed=2).energy_wh(0, 100)
    m = minutes_load
    np.testing.assert_allclose(load_odd[0], m[0] + 0.5 * m[1], rtol=1e-9)
    np.testing.assert_allclose(load_odd[1], 0.5 * m[1] + m[2], rtol=1e-9)
    np.testing.assert_allclose(load_odd.sum(axis=0), m[:150].sum(axis=0), rtol=1e-9)


def test_daily_energy_follows_annual_consumption():
    src = households(200, make_clock("2021-01-01 00:00:00"), seed=4, annual_load_kwh=3650)
    load, _ = src.energy_wh(0, 3 * 1440)
    daily_kwh = load.sum(axis=0) / 3 / 1000  # the yearly mean is 10 kWh a day
    # H25 winter days are above the yearly mean (about 1.2x); households scatter around it
    assert 10.5 < daily_kwh.mean() < 15.0
    assert 3.0 < daily_kwh.min() and daily_kwh.max() < 30.0
    summer = households(200, JULY, seed=4, annual_load_kwh=3650).energy_wh(0, 3 * 1440)[0].sum(axis=0) / 3 / 1000
    assert 7.0 < summer.mean() < 10.0
    # twice the annual demand: twice the energy on average
    double = households(200, JULY, seed=4, annual_load_kwh=7300).energy_wh(0, 3 * 1440)[0].sum(axis=0) / 3 / 1000
    assert double.mean() / summer.mean() == pytest.approx(2.0, rel=0.1)


def test_load_follows_local_clock_with_appliance_spikes():
    load, _ = households(300, JULY, seed=8).energy_wh(0, 1440)
    power_w = load * 60  # Wh per minute -> W
    mean = power_w.mean(axis=1)
    night = mean[3 * 60 : 5 * 60].mean()  # 03:00-05:00 local
    evening = mean[18 * 60 : 21 * 60].mean()  # 18:00-21:00 local
    assert evening > 1.5 * night
    # single households show kW-sized appliance events well above their base
    assert (power_w.max(axis=0) > 1500).mean() > 0.9
    # minute-to-minute changes exist (not a 15-minute staircase)
    assert (np.abs(np.diff(power_w[:, 0])) > 1e-6).mean() > 0.9


def test_pv_zero_at_night_and_producing_at_noon_in_edmonton_july():
    src = households(4, JULY, seed=1, pv_capacity_kw=5.0, cloudiness=0.0)
    _, gen = src.energy_wh(0, 1440)
    power_w = gen * 60
    assert (power_w[1 * 60 : 3 * 60] == 0).all()  # 01:00-03:00 MDT: dark
    noon = power_w[13 * 60 + 30]  # solar noon in Edmonton is about 13:30 MDT
    assert ((noon > 3000) & (noon < 5000)).all()
    daily_kwh = gen.sum(axis=0) / 1000
    assert ((daily_kwh > 25) & (daily_kwh < 45)).all()  # ~6-8 kWh per kW on a clear July day


def test_clouds_reduce_pv_and_are_shared_by_a_site():
    clear = households(20, JULY, seed=6, cloudiness=0.0).energy_wh(0, 5 * 1440)[1]
    cloudy = households(20, JULY, seed=6, cloudiness=0.9).energy_wh(0, 5 * 1440)[1]
    assert cloudy.sum() < 0.7 * clear.sum()
    # neighbours see the same weather: daily yields correlate strongly
    daily = cloudy.reshape(5, 1440, 20).sum(axis=1)
    assert np.corrcoef(daily[:, 0], daily[:, 1])[0, 1] > 0.9


def test_zero_capacity_and_scales():
    zero = households(3, JULY, pv_capacity_kw=0.0).energy_wh(0, 1440)[1]
    assert not zero.any()
    base_load, base_gen = RealisticProfiles(["h"], [spec()], JULY, 9).energy_wh(0, 1440)
    scaled_load, scaled_gen = RealisticProfiles(["h"], [spec(load_scale=2.5, generation_scale=0.5)], JULY, 9).energy_wh(0, 1440)
    np.testing.assert_allclose(scaled_load, 2.5 * base_load, rtol=1e-12)
    np.testing.assert_allclose(scaled_gen, 0.5 * base_gen, rtol=1e-12)
    assert base_gen.sum() > 0


def test_sites_and_orientations():
    west = RealisticProfiles(["h"], [spec(azimuth_deg=270.0, cloudiness=0.0)], JULY, 1).energy_wh(0, 1440)[1][:, 0]
    south = RealisticProfiles(["h"], [spec(azimuth_deg=180.0, cloudiness=0.0)], JULY, 1).energy_wh(0, 1440)[1][:, 0]
    minutes = np.arange(1440)
    assert (west * minutes).sum() / west.sum() > (south * minutes).sum() / south.sum() + 60  # west peaks later
    # a southern-hemisphere site in its July winter makes far less
    sydney = RealisticProfiles(["h"], [spec(latitude=-33.87, longitude=151.21, altitude_m=20.0, azimuth_deg=0.0, cloudiness=0.0)], make_clock("2021-07-01 00:00:00", tz="Australia/Sydney"), 1)
    winter = sydney.energy_wh(0, 1440)[1].sum()
    assert 0 < winter < 0.8 * south.sum()


def test_year_energy_matches_annual_consumption():
    # one day in each month stands for its month: the year's energy within 10 % of the spec
    clock = make_clock("2021-01-01 00:00:00")
    src = households(100, clock, seed=13, annual_load_kwh=5000)
    month_starts = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334, 365]
    total_kwh = np.zeros(100)
    for first, nxt in zip(month_starts[:-1], month_starts[1:]):
        day = first + 14
        load, _ = src.energy_wh(day * 1440, 1440)
        total_kwh += load.sum(axis=0) / 1000 * (nxt - first)
    assert total_kwh.mean() == pytest.approx(5000, rel=0.1)
    assert (total_kwh > 0.6 * 5000).all() and (total_kwh < 1.4 * 5000).all()


def test_linke_turbidity_read_once_per_site_equals_pvlib():
    """The cached climatology gives pvlib's own values across a year boundary and a leap day."""
    import pandas as pd
    import pvlib

    from trexsim.data.realistic import _linke_turbidity, _Site

    times = pd.DatetimeIndex(pd.date_range("2020-12-30", "2021-01-03", freq="7min", tz="UTC")).append(
        pd.date_range("2024-02-27", "2024-03-02", freq="13min", tz="UTC")).append(
        pd.date_range("2021-06-30", "2021-07-02", freq="1min", tz="America/Edmonton").tz_convert("UTC"))
    got = _linke_turbidity(_Site(53.5, -113.5, 668.0), times)
    want = pvlib.clearsky.lookup_linke_turbidity(times, 53.5, -113.5)
    np.testing.assert_array_equal(got.to_numpy(), want.to_numpy())
