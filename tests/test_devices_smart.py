"""Price-responsive devices (``trexsim.devices.PriceResponsiveDevice``) and the smart EV (``ev`` with
``charging: "smart"``): a hand-worked placement under known prices, the same sessions as the scheduled EV,
the carry past a schedule's end, the config's refusals, the fallback (with a warning) where no schedule
exists, and the TC households' plan and meter taking the same answer."""

import warnings

import numpy as np
import pytest

from trexsim import parse_config
from trexsim.data.profiles import Clock, ProfileSet
from trexsim.devices import PriceResponsiveDevice, PriceSignalWarning
from trexsim.errors import ConfigError


def config(devices, interval_s=3600, days=2, start="2024-06-03 00:00:00", tz="America/Edmonton", **extra):
    return parse_config({
        "study": {"days": days, "interval_s": interval_s, "start_datetime": start, "timezone": tz, "seed": 5},
        "participants": {"h1": {"profile": {"type": "flat", "load_w": 0.0}, "devices": devices}, **extra},
    })


def profiles_of(cfg):
    st = cfg.study
    members = cfg.expanded_participants()
    clock = Clock(st.start_utc_s, st.interval_s, st.rounds_per_episode, st.timezone)
    return ProfileSet.of_participants([p for p, _ in members], [s for _, s in members], clock, st.seed)


def ev_bank(cfg):
    (owners, bank), = profiles_of(cfg).devices._banks
    return bank


# 3 kW, 7 kWh a day at the meter, home 18:00 to 07:00 the next day (hourly rounds: rounds 18 .. 30 of day 0)
SMART = {"type": "ev", "daily_energy_wh": 7000, "efficiency": 1.0, "charge_power_w": 3000, "arrival_hour": 18,
         "departure_hour": 7, "charging": "smart"}
# a second car home only 18:00 to 20:30: 3,000 + 3,000 + 1,500 Wh of charger in its window
SHORT = {**SMART, "departure_hour": 20.5}


def hand_prices():
    price = np.full(48, 0.20)
    price[10] = 0.01                       # cheap, but no car is home
    price[18:22] = 0.30                    # the evening
    price[20] = 0.10                       # ... but the short car's last half hour is cheap
    price[24] = price[27] = 0.12
    price[26] = 0.10
    price[45] = 0.05                       # the second evening's cheapest hour
    return price


def test_threshold_answer_by_hand_cheapest_rounds_within_the_window_and_the_charger():
    bank = ev_bank(config([SMART, SHORT]))
    draw, supply = bank.respond_wh(0, 48, hand_prices(), 0.0)
    assert draw.dtype == np.int64 and supply.sum() == 0 and draw.min() >= 0
    long, short = draw[:, 0], draw[:, 1]
    # night 0: 20 and 26 (0.10) full, then 24 (0.12, earlier than 27): 3,000 + 3,000 + 1,000
    assert {int(r): int(long[r]) for r in np.flatnonzero(long[:40])} == {20: 3000, 24: 1000, 26: 3000}
    # evening 1 (arrives round 42, leaves after the span): its cheapest hour 45, then 42 and 43 (0.20, earliest)
    assert {int(r): int(long[r]) for r in np.flatnonzero(long[40:]) + 40} == {42: 3000, 43: 1000, 45: 3000}
    # the short car: its half-hour round 20 holds 1,500 Wh at most, the rest in 18 (0.30, earlier than 19)
    assert short[18:21].tolist() == [3000, 2500, 1500] and short[:18].sum() == short[21:42].sum() == 0
    # the second day's window is one price (0.20): nothing to gain, it charges as scheduled (from the arrival)
    assert short[42:45].tolist() == [3000, 3000, 1000]
    assert long[10] == short[10] == 0 and long.sum() == short.sum() == 14_000


def test_proportional_answer_is_the_stated_logit_water_filling():
    band = 0.05
    bank = ev_bank(config([SMART]))
    price = hand_prices()
    draw = bank.respond_wh(0, 48, price, band)[0][:, 0]
    # night 0's session, rounds 18 .. 30, by the formula of trexsim.devices.smart_charging
    p = price[18:31]
    cap = np.full(13, 3000.0)
    ref = np.minimum(cap, np.maximum(7000 - np.r_[0, np.cumsum(cap)[:-1]], 0))   # as soon as possible
    w = cap * np.exp(-(p - p.min()) / band)
    target = 7000 * w / w.sum()
    assert target.max() < 3000                          # no round capped: no water-filling step needed
    beta = min(1.0, (p.max() - p.min()) / band)
    new = ref + beta * (target - ref)
    expect = np.diff(np.floor(np.cumsum(new) + 0.5), prepend=0.0).astype(np.int64)
    assert draw[18:31].tolist() == expect.tolist() and draw[18:31].sum() == 7000
    assert draw[:18].sum() == 0 and draw[31:42].sum() == 0 and draw.max() <= 3000
    # continuous: a small change of one price moves a little energy, not a whole round's
    nudged = price.copy()
    nudged[26] += 0.001
    moved = np.abs(bank.respond_wh(0, 48, nudged, band)[0][:, 0] - draw).sum()
    assert 0 < moved < 100


def test_same_seed_same_sessions_as_the_scheduled_ev_only_the_timing_differs():
    spread = {"type": "ev", "daily_energy_wh": 11_000, "charge_power_w": 7200, "spread_minutes": 40,
              "energy_spread": 0.2}
    two = {"h2": {"profile": {"type": "flat"}, "devices": [spread]}}
    scheduled = ev_bank(config([spread], interval_s=600, days=4, **two))
    smart_cfg = config([{**spread, "charging": "smart"}], interval_s=600, days=4,
                       h2={"profile": {"type": "flat"}, "devices": [{**spread, "charging": "smart"}]})
    smart = ev_bank(smart_cfg)
    first_day = scheduled._edges(0, 1)[1]
    for m in range(2):
        for day in range(first_day - 2, first_day + 5):
            assert smart.session(m, day) == scheduled.session(m, day)
    n = 4 * 144
    sched_wh = scheduled.energy_wh(0, n)[0]
    assert np.array_equal(smart.energy_wh(0, n)[0], sched_wh)                 # without prices: as scheduled
    assert np.array_equal(smart.respond_wh(0, n, np.full(n, 0.1), 0.05)[0], sched_wh)   # a flat price moves nothing
    rng = np.random.default_rng(3)
    price = 0.1 + 0.2 * rng.random(n)
    for band in (0.0, 0.05):
        moved = smart.respond_wh(0, n, price, band)[0]
        assert not np.array_equal(moved, sched_wh)
        assert moved.sum(axis=0).tolist() == sched_wh.sum(axis=0).tolist()   # every Wh, in other rounds
        assert moved.max() <= 1200                                            # 7.2 kW for 10 minutes


def test_a_session_past_the_schedules_end_carries_what_is_left_into_the_next():
    # day-long schedules from midnight: the evening car puts what fits before midnight, the rest the next morning
    car = {**SMART, "daily_energy_wh": 20_000, "charge_power_w": 2000}   # 10 h of charging, 6 h before midnight
    bank = ev_bank(config([car], days=3))
    price = np.tile(np.r_[0.30, 0.30, np.full(5, 0.05), np.full(17, 0.25)], 3)   # cheap from 02:00 to 07:00
    days = []
    for d in range(3):
        span = slice(24 * d, 24 * d + 24)
        days.append(bank.respond_wh(24 * d, 24, price[span], 0.0)[0][:, 0])
        bank.follow(24 * d, 24, price[span], 0.0)
    draw = np.concatenate(days)
    # evening 0: 12,000 Wh in 18-23, all it can (the prices end at midnight); morning 1: the 8,000 Wh left, in
    # the cheap hours 02-05 before 07:00. The morning of day 0 (the session of the evening before the run, no
    # schedule followed then) carries its scheduled 8,000 Wh left at midnight the same way
    assert draw[:7].tolist() == [0, 0, 2000, 2000, 2000, 2000, 0]
    assert draw[18:24].tolist() == [2000] * 6 and draw[24:31].tolist() == [0, 0, 2000, 2000, 2000, 2000, 0]
    assert draw[31:42].sum() == 0 and draw.max() <= 2000
    # each followed session gets its whole 20,000 Wh before it leaves
    assert draw[18:31].sum() == 20_000 and draw[42:55].sum() == 20_000
    bank.reset()   # a new episode: nothing followed, the morning's carry is the scheduled one again
    assert bank.respond_wh(24, 24, price[24:48], 0.0)[0][:7, 0].sum() == 20_000 - 12_000   # (the same here)


def test_config_refusals_name_the_key():
    with pytest.raises(ConfigError) as err:
        config([{**SMART, "charging": "sometimes"}])
    assert "participants.h1.devices[0].charging" in str(err.value)
    with pytest.raises(ConfigError) as err:
        config([{**SMART, "charge_start_hour": 23}])
    assert "participants.h1.devices[0].charging" in str(err.value) and "charge_start_hour" in str(err.value)
    assert config([{**SMART, "charging": "scheduled", "charge_start_hour": 23}])


def test_without_a_price_schedule_it_charges_as_scheduled_and_says_so(tmp_path):
    from trexsim.simulation import Simulation

    runs = {}
    for mode in ("scheduled", "smart"):
        cfg = config([{**SMART, "charging": mode}], interval_s=900)
        cfg.records.plots = False
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = Simulation(cfg, tmp_path / mode).run(plots=False)
        found = [w for w in caught if issubclass(w.category, PriceSignalWarning)]
        assert len(found) == (mode == "smart")
        if found:
            assert "charging: smart" in str(found[0].message) and "h1" in str(found[0].message)
        runs[mode] = result.summary["participants"]["h1"]
    assert runs["smart"] == runs["scheduled"]


def test_tc_households_plan_and_meter_the_same_answer():
    from trexsim.config.schema import TCConfig
    from trexsim.devices.battery import BatteryBank
    from trexsim.fabric.messages import TCSchedule
    from trexsim.tc.households import TCHouseholds

    cfg = config([SMART, SHORT], interval_s=3600, days=2)
    profiles = profiles_of(cfg)
    tc = TCConfig(forecast={"type": "perfect"}, flexible_load=None, batteries=False)
    households = TCHouseholds(tc, profiles, BatteryBank(1, 3600), 3600, np.arange(1), np.zeros(1, dtype=bool))
    assert profiles.devices.priced
    price = hand_prices()[:24]
    plan = households.on_schedule(TCSchedule(0, 0, 0, True, price, np.full(24, 0.05)))
    expect = ev_bank(cfg).respond_wh(0, 24, price, 0.0)[0].sum(axis=1)
    assert np.asarray(plan.net_wh).tolist() == expect.tolist()      # what the TC market predicts from
    scheduled, _ = profiles.energy_wh(0, 24)
    metered = [int(households.meter_inputs(k, scheduled[k], np.zeros(1, dtype=bool), np.zeros(1, dtype=np.int64))[0][0])
               for k in range(24)]
    assert metered == expect.tolist() and metered != scheduled[:, 0].tolist()
    with warnings.catch_warnings():
        warnings.simplefilter("error", PriceSignalWarning)
        profiles.energy_wh(0, 24)                                    # priced: no fallback warning


def test_the_interface_is_checked():
    assert issubclass(type(ev_bank(config([SMART]))), PriceResponsiveDevice)


def test_the_tc_double_auction_gives_no_schedule_the_cars_charge_as_scheduled_with_the_warning():
    from trexsim.config.schema import TCConfig
    from trexsim.devices.battery import BatteryBank
    from trexsim.tc.households import AuctionHouseholds

    profiles = profiles_of(config([SMART]))
    tc = TCConfig(market="double_auction", price_interval_s=3600)
    AuctionHouseholds(tc, profiles, BatteryBank(1, 3600), 3600, np.arange(1), np.zeros(1, dtype=bool))
    assert not profiles.devices.priced
    with pytest.warns(PriceSignalWarning, match="no price schedule"):
        load, _ = profiles.energy_wh(0, 48)
    assert load[:, 0].tolist() == ev_bank(config([SMART])).energy_wh(0, 48)[0][:, 0].tolist()


def test_a_plug_in_answer_is_checked_like_energy_wh():
    from typing import Literal

    from trexsim.config.schema import DeviceSettings
    from trexsim.devices import register_device
    from trexsim.errors import TrexsimError

    class ProbeConfig(DeviceSettings):
        type: Literal["price_probe_for_test"]

    @register_device
    class Probe(PriceResponsiveDevice):
        kind = "price_probe_for_test"
        config_model = ProbeConfig

        def energy_wh(self, start_round, n_rounds):
            z = np.zeros((n_rounds, len(self.settings)), dtype=np.int64)
            return z, z

        def respond_wh(self, start_round, n_rounds, price_per_kwh, band_per_kwh):
            return np.full((n_rounds, len(self.settings)), 1.5), np.zeros((n_rounds, len(self.settings)), np.int64)

    profiles = profiles_of(config([{"type": "price_probe_for_test"}]))
    assert profiles.devices.responsive
    with pytest.raises(TrexsimError, match=r"Probe\)\.respond_wh: draw_wh must be whole Wh"):
        profiles.devices.respond_wh(0, 4, np.full(4, 0.1), 0.0)
