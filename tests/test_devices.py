"""Devices behind the meter (``participants.<id>.devices``): the built-in EV worked by hand, its energy the
same whichever span of rounds is asked, across a daylight-saving change, in every driver (the simulation, the
compiled RL backend, the networked market's meter limits), and the registry's refusals."""

import duckdb
import numpy as np
import pytest

from trexsim import parse_config
from trexsim.data.profiles import Clock, ProfileSet
from trexsim.devices import DeviceSet, ScheduledDevice, register_device
from trexsim.errors import ConfigError, TrexsimError
from trexsim.simulation import Simulation


def config(devices, interval_s=900, days=3, start="2024-06-03 00:00:00", tz="America/Edmonton", load_w=0.0, **extra):
    return parse_config({
        "study": {"days": days, "interval_s": interval_s, "start_datetime": start, "timezone": tz, "seed": 5},
        "participants": {"h1": {"profile": {"type": "flat", "load_w": load_w}, "devices": devices}, **extra},
    })


def device_wh(cfg, start_round=0, n_rounds=None):
    st = cfg.study
    members = cfg.expanded_participants()
    clock = Clock(st.start_utc_s, st.interval_s, st.rounds_per_episode, st.timezone)
    profiles = ProfileSet.of_participants([p for p, _ in members], [s for _, s in members], clock, st.seed)
    return profiles.energy_wh(start_round, st.rounds_per_episode if n_rounds is None else n_rounds)[0]


EV = {"type": "ev", "daily_energy_wh": 11_000, "efficiency": 1.0, "charge_power_w": 7200}


def test_ev_charges_from_arrival_at_full_power_until_the_days_energy_is_in():
    # 15-minute rounds: 7,200 W is 1,800 Wh a round; 11,000 Wh is 6 full rounds from 18:00 (round 72) and 200 Wh
    load = device_wh(config([EV]))[:, 0].reshape(3, 96)
    for day in load:
        assert day[72:78].tolist() == [1800] * 6 and day[78] == 200
        assert day.sum() == 11_000 and day[:72].sum() == 0 and day[79:].sum() == 0


def test_ev_timer_across_midnight_efficiency_and_early_departure():
    # a timer at 23:30: 2 rounds on the day, the rest after midnight; the meter draws 9,000 / 0.9 = 10,000 Wh
    load = device_wh(config([{**EV, "daily_energy_wh": 9000, "efficiency": 0.9, "charge_start_hour": 23.5}]))[:, 0]
    assert load[94:96].tolist() == [1800, 1800] and load[96:99].tolist() == [1800] * 3 and load[99] == 1000
    # the car plugged in the evening before the run charges its last 6,400 Wh in its first 4 rounds; the third
    # evening's session is cut by the run's end
    assert load[:4].tolist() == [1800] * 3 + [1000] and load[4:94].sum() == 0 and load[100:190].sum() == 0
    assert load.sum() == 6400 + 2 * 10_000 + 3600
    # a car that leaves at 19:00 takes what it got in one hour
    load = device_wh(config([{**EV, "departure_hour": 19.0}]))[:, 0].reshape(3, 96)
    assert load.sum(axis=1).tolist() == [7200] * 3 and load[0, 72:76].tolist() == [1800] * 4
    # a timer after the departure (the next day's 6:00 is after 19:00's departure): never charges that session
    assert device_wh(config([{**EV, "departure_hour": 19.0, "charge_start_hour": 20.0}])).sum() == 0


def test_any_span_gives_the_same_rounds_and_sessions_add_up_to_the_whole_wh():
    cfg = config([{**EV, "charge_power_w": 3333, "spread_minutes": 40, "energy_spread": 0.2}], interval_s=480, days=4)
    whole = device_wh(cfg)
    rng = np.random.default_rng(0)
    cuts = np.sort(rng.choice(np.arange(1, whole.shape[0]), 9, replace=False))
    bounds = [0, *cuts.tolist(), whole.shape[0]]
    parts = np.concatenate([device_wh(cfg, a, b - a) for a, b in zip(bounds, bounds[1:])])
    assert np.array_equal(parts, whole)
    # a span before the first round (a persistence forecast looks back) is served too
    assert device_wh(cfg, -200, 300)[200:].tolist() == whole[:100].tolist()


def test_spread_is_seeded_per_household_and_device():
    spread = {**EV, "spread_minutes": 45, "energy_spread": 0.3}
    two = {"h2": {"profile": {"type": "flat"}, "devices": [spread]}}
    a = device_wh(config([spread], **two))
    b = device_wh(config([spread], **two))
    assert np.array_equal(a, b)                                   # same seed, same sessions
    assert not np.array_equal(a[:, 0], a[:, 1])                   # each household its own draws
    alone = device_wh(config([spread]))
    assert np.array_equal(alone[:, 0], a[:, 0])                   # ... whoever else is in the run
    days = a[:, 0].reshape(3, 96)
    assert len(set(days.sum(axis=1).tolist())) == 3               # each day its own energy
    twice = device_wh(config([spread, spread]))[:, 0]
    assert not np.array_equal(twice, 2 * alone[:, 0])             # two cars of one household differ


def test_sessions_keep_local_hours_across_daylight_saving():
    # Edmonton springs forward on 2024-03-10: with hourly rounds from local midnight of the 9th, 18:00 local
    # is round 18 on the 9th, 24 + 17 on the 10th (a 23-hour day) and 41 + 24 on the 11th
    load = device_wh(config([{**EV, "daily_energy_wh": 7200}], interval_s=3600, start="2024-03-09 00:00:00"))[:, 0]
    assert np.flatnonzero(load).tolist() == [18, 41, 65]
    assert load[[18, 41, 65]].tolist() == [7200] * 3


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError) as err:
        config([{"type": "ev", "charge_power_w": -1}])
    assert "participants.h1.devices[0]" in str(err.value) and "charge_power_w" in str(err.value)
    with pytest.raises(ConfigError) as err:
        config([{"type": "ev", "arrival_hour": 7, "departure_hour": 7}])
    assert "departure_hour equals arrival_hour" in str(err.value)
    with pytest.raises(ConfigError) as err:
        config([{"type": "heat_pump"}])
    assert "participants.h1.devices[0]" in str(err.value) and "heat_pump" in str(err.value)
    with pytest.raises(ConfigError) as err:
        config([{"type": "ev", "daily_energy": 5}])
    assert "daily_energy" in str(err.value)


def test_a_run_meters_the_ev_and_bills_it(tmp_path):
    # 100 W of load all day and a car of 11,000 Wh: 2,400 + 11,000 Wh a day at the grid's 0.1449 $/kWh
    cfg = config([EV], days=2, load_w=100)
    cfg.records.plots = False
    result = Simulation(cfg, tmp_path / "ev").run(plots=False)
    with duckdb.connect(str(result.database), read_only=True) as db:
        meter = np.array(db.execute("select load_wh from meter_readings order by round").fetchall())[:, 0]
    assert meter.reshape(2, 96)[:, 72:79].tolist() == [[1825, 1825, 1825, 1825, 1825, 1825, 225]] * 2
    assert meter.sum() == 2 * (2400 + 11_000)
    bill = result.summary["participants"]["h1"]["net_cost"]
    assert bill == pytest.approx(2 * 13.4 * 0.1449, abs=1e-9)


def test_the_compiled_rl_backend_sees_the_devices_as_the_simulation_does():
    pytest.importorskip("pettingzoo", reason="the rl extra is not installed")
    from trexsim.envs import parallel_env

    raw = {
        "study": {"days": 60 / 1440, "seed": 2, "start_datetime": "2021-07-01 17:40:00", "interval_s": 60},
        "market": {"grid": {"buy_price": 0.14, "sell_price": 0.06}},
        "participants": {
            "pv": {"profile": {"type": "flat", "generation_w": 9000},
                   "trader": {"type": "fixed_price", "bid_price": 0.12, "ask_price": 0.08}},
            "rl": {"profile": {"type": "flat", "load_w": 500},
                   "devices": [{"type": "ev", "charge_power_w": 6000, "spread_minutes": 10}],
                   "trader": {"type": "external", "max_price": 0.3, "max_quantity_wh": 300}},
        },
    }
    envs = {b: parallel_env(parse_config(raw), backend=b) for b in ("compiled", "simulation")}
    out = {}
    for backend, env in envs.items():
        obs, _ = env.reset(seed=9)
        rows = []
        while env.agents:
            obs, r, _, _, info = env.step({"rl": np.array([0.9, -1.0, -1.0, -1.0, 0.0], dtype=np.float32)})
            rows.append((r["rl"], info["rl"]["grid_import_wh"], info["rl"]["bought_wh"], obs["rl"].tolist()))
        out[backend] = rows
        env.close()
    assert out["compiled"] == out["simulation"]
    imports = [row[1] for row in out["compiled"]]
    assert max(imports) > 100 > min(imports)   # the car started charging inside the hour (18:00 +- 10 min)


def test_study_fast_path_and_meter_limits_know_devices():
    from trexsim.node import meter_limits
    from trexsim.studies.fast_market import fast_path_supported

    cfg = config([{**EV, "charge_power_w": 11_000}], load_w=10,
                 h2={"profile": {"type": "flat"}, "trader": {"type": "q_learning"}})
    cfg.participants["h1"].trader = cfg.participants["h2"].trader
    assert fast_path_supported(cfg) == "participant h1 has devices (ev)"
    limits = meter_limits(cfg)
    assert limits["load_wh"][0] - limits["load_wh"][1] == pytest.approx(11_000 * 0.25, abs=1)


def test_registry_refusals_and_a_device_that_answers_wrongly():
    from trexsim.config.schema import DeviceSettings, EVConfig

    class NotADevice:
        pass

    with pytest.raises(TypeError):
        register_device(NotADevice)

    class NoKind(ScheduledDevice):
        config_model = EVConfig

        def energy_wh(self, start_round, n_rounds):
            raise AssertionError

    with pytest.raises(ValueError, match="no 'kind'"):
        register_device(NoKind)

    class Mismatch(NoKind):
        kind = "other"

    with pytest.raises(ValueError, match=r"type must be Literal\['other'\]"):
        register_device(Mismatch)

    class Again(NoKind):
        kind = "ev"

    with pytest.raises(ValueError, match="already registered"):
        register_device(Again)

    from typing import Literal

    class BadConfig(DeviceSettings):
        type: Literal["bad_device_for_test"]

    class Bad(ScheduledDevice):
        kind = "bad_device_for_test"
        config_model = BadConfig
        answer = None

        def energy_wh(self, start_round, n_rounds):
            draw = Bad.answer(n_rounds, len(self.settings))
            return draw if draw is None else (draw, np.zeros((n_rounds, len(self.settings)), dtype=np.int64))

    register_device(Bad)
    cfg = config([{"type": "bad_device_for_test"}])
    clock = Clock(cfg.study.start_utc_s, 900, 288, cfg.study.timezone)
    devices = DeviceSet(["h1"], [cfg.participants["h1"].devices], clock, 0)
    for answer, message in [(lambda r, m: np.full((r, m), -3), "draw_wh is negative (-3 Wh) for 'h1'"),
                            (lambda r, m: np.zeros((r, m)), "whole Wh in an integer array, not float64"),
                            (lambda r, m: np.zeros((m, r + 1), dtype=int), "draw_wh has shape"),
                            (lambda r, m: None, "must return (draw_wh, supply_wh), not NoneType")]:
        Bad.answer = staticmethod(answer)
        with pytest.raises(TrexsimError, match="device 'bad_device_for_test'") as err:
            devices.energy_wh(0, 4)
        assert message in str(err.value)
