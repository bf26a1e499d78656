"""Transactive control: devices worked by hand and under hypothesis, the TC market on a congested feeder,
the comparison command."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from trexsim import TrexsimError, parse_config
from trexsim.devices.flexible_load import shift_flexible_load
from trexsim.devices.price_battery import price_battery_dispatch
from trexsim.errors import ConfigError
from trexsim.tc.pricing import congestion_price, register_congestion, registered_congestion


# -- flexible load ----------------------------------------------------------------------------------------------
def test_flexible_load_by_hand():
    load = np.full((4, 1), 100.0)
    price = np.array([0.2, 0.1, 0.3, 0.1])
    # share 0.5: 50 Wh flexible per round; rounds 1 and 3 are cheapest and keep theirs; 100 Wh move there
    out = shift_flexible_load(load, price, 0.5, max_power_w=60_000, window_rounds=4, interval_s=60)  # 1000 Wh/round
    assert out[:, 0].tolist() == pytest.approx([50, 150, 50, 150])
    # a device limit of 80 Wh per round (4.8 kW for 60 s): rounds 1 and 3 take 30 more each, the 40 Wh left go
    # to the next price level (round 0, 0.2 $/kWh), nothing to the dearest round
    out = shift_flexible_load(load, price, 0.5, max_power_w=4_800, window_rounds=4, interval_s=60)
    assert out[:, 0].tolist() == pytest.approx([90, 130, 50, 130])
    # windows of 2 rounds: energy stays in its window (rounds 0-1, rounds 2-3)
    out = shift_flexible_load(load, price, 0.5, max_power_w=60_000, window_rounds=2, interval_s=60)
    assert out[:, 0].tolist() == pytest.approx([50, 150, 50, 150])
    out = shift_flexible_load(load, np.array([0.1, 0.2, 0.3, 0.1]), 0.5, 60_000, 2, 60)
    assert out[:, 0].tolist() == pytest.approx([150, 50, 50, 150])
    # one price: nothing moves
    assert np.array_equal(shift_flexible_load(load, np.full(4, 0.1), 0.5, 60_000, 4, 60), load)


@settings(max_examples=60, deadline=None)
@given(data=st.data(), rounds=st.integers(1, 30), houses=st.integers(1, 4), window=st.integers(1, 12),
       share=st.floats(0, 1), max_power_w=st.floats(60, 20_000))
def test_flexible_load_conserves_energy_and_respects_limits(data, rounds, houses, window, share, max_power_w):
    load = data.draw(arrays(np.float64, (rounds, houses), elements=st.floats(0, 2000)))
    price = data.draw(arrays(np.float64, (rounds,), elements=st.sampled_from([0.05, 0.1, 0.12, 0.3])))
    out = shift_flexible_load(load, price, share, max_power_w, window, 60)
    for w0 in range(0, rounds, window):
        assert np.allclose(out[w0:w0 + window].sum(axis=0), load[w0:w0 + window].sum(axis=0), rtol=1e-9, atol=1e-6)
    flex_before = share * load
    flex_after = out - (1 - share) * load          # the inflexible part is never touched
    assert np.all(flex_after >= -1e-6)
    assert np.all(flex_after <= np.maximum(max_power_w / 60, flex_before) + 1e-6)
    # energy only moves to rounds that are no dearer than where it came from: the cost never rises
    for w0 in range(0, rounds, window):
        sl = slice(w0, w0 + window)
        assert (out[sl] * price[sl, None]).sum() <= (load[sl] * price[sl, None]).sum() + 1e-6


# -- price-reactive battery -------------------------------------------------------------------------------------
def test_price_battery_by_hand():
    price = np.array([0.1, 0.1, 0.3, 0.3])
    need = np.array([[100.0], [100.0], [400.0], [400.0]])
    # 1000 Wh, 500 Wh per round: 2 rounds to fill, 2 to empty -> charge in the 2 cheapest, discharge in the 2 dearest
    c, d, s = price_battery_dispatch(need, price, np.array([0.0]), 1000.0, 500.0, 500.0, 1.0, 1.0)
    assert c[:, 0].tolist() == [500, 500, 0, 0]
    assert d[:, 0].tolist() == [0, 0, 400, 400]     # covers the net import, never exports
    assert s[:, 0].tolist() == [500, 1000, 600, 200]
    # charging from the grid must pay for the round trip: at 90 % one-way, 0.1 < 0.3 * 0.81 still does...
    c, d, s = price_battery_dispatch(need, price, np.array([0.0]), 1000.0, 500.0, 500.0, 0.9, 1.0)
    assert c[0, 0] == 500 and s[0, 0] == pytest.approx(450)
    # ... but 0.25 is not below 0.3 * 0.81 = 0.243: no charging from the grid then
    c, d, s = price_battery_dispatch(need, np.array([0.25, 0.25, 0.3, 0.3]), np.array([0.0]), 1000.0, 500.0, 500.0, 0.9, 1.0)
    assert c.sum() == 0
    # one price: plain self-consumption (store the surplus, cover the import)
    c, d, s = price_battery_dispatch(np.array([[-200.0], [300.0]]), np.array([0.1, 0.1]), np.array([100.0]),
                                     1000.0, 500.0, 500.0, 1.0, 1.0)
    assert c[:, 0].tolist() == [200, 0] and d[:, 0].tolist() == [0, 300] and s[:, 0].tolist() == [300, 0]
    # keeps what the dear rounds ahead need: round 0 is mid-priced, the 1000 Wh are kept for rounds 1-2
    c, d, s = price_battery_dispatch(np.array([[300.0], [500.0], [500.0], [0.0]]), np.array([0.2, 0.3, 0.3, 0.1]),
                                     np.array([1000.0]), 1000.0, 500.0, 500.0, 1.0, 1.0)
    assert d[:, 0].tolist() == [0, 500, 500, 0]


@settings(max_examples=60, deadline=None)
@given(data=st.data(), rounds=st.integers(1, 40), houses=st.integers(1, 4))
def test_price_battery_never_exceeds_its_limits(data, rounds, houses):
    need = data.draw(arrays(np.float64, (rounds, houses), elements=st.floats(-5000, 5000)))
    price = data.draw(arrays(np.float64, (rounds,), elements=st.floats(0.01, 1.0)))
    cap = data.draw(arrays(np.float64, (houses,), elements=st.floats(0, 20_000)))
    c_lim = data.draw(arrays(np.float64, (houses,), elements=st.floats(1, 200)))
    d_lim = data.draw(arrays(np.float64, (houses,), elements=st.floats(1, 200)))
    eta = data.draw(arrays(np.float64, (houses,), elements=st.floats(0.5, 1.0)))
    soc = data.draw(arrays(np.float64, (houses,), elements=st.floats(0, 1)))
    ret = 0.99999
    c, d, s = price_battery_dispatch(need, price, soc * cap, cap, c_lim, d_lim, eta, ret)
    assert np.all(c >= 0) and np.all(d >= 0) and np.all(c * d == 0)
    assert np.all(c <= c_lim + 1e-9) and np.all(d <= d_lim + 1e-9)
    assert np.all(d <= np.maximum(need, 0) + 1e-9)   # never discharges into the grid
    assert np.all(s >= 0) and np.all(s <= cap + 1e-9)
    before = np.vstack([soc * cap, s[:-1]])
    assert np.allclose(s, np.clip((before + c * eta - d / eta) * ret, 0, cap), atol=1e-6)


# -- pricing --------------------------------------------------------------------------------------------------------
def test_congestion_formula_and_plugins():
    cfg = parse_config({"participants": {"a": {"profile": {"type": "flat"}}}, "tc": {}}).tc.congestion
    # linear: 0.5 $/kWh per 100 % above 60 %, 5 $/kWh per p.u. above 0.03
    got = congestion_price(np.array([50.0, 80.0, 120.0]), np.array([0.02, 0.05, 0.03]), cfg)
    assert got.tolist() == pytest.approx([0.0, 0.5 * 0.2 + 5 * 0.02, 0.5 * 0.6])
    register_congestion("step", lambda loading, dv, p: np.where(loading > 100, 1.0, 0.0))
    assert "step" in registered_congestion()
    step = parse_config({"participants": {"a": {"profile": {"type": "flat"}}},
                         "tc": {"congestion": {"type": "step"}}}).tc.congestion
    assert congestion_price(np.array([90.0, 110.0]), np.zeros(2), step).tolist() == [0.0, 1.0]
    with pytest.raises(ConfigError) as info:
        parse_config({"participants": {"a": {"profile": {"type": "flat"}}}, "tc": {"congestion": {"type": "cubic"}}})
    assert "unknown congestion component 'cubic'" in dict(info.value.problems)["tc.congestion.type"]
    with pytest.raises(ConfigError) as info:
        parse_config({"participants": {"a": {"profile": {"type": "flat"}}}, "tc": {"flexible_load": {"share": 1.5}}})
    assert "tc.flexible_load.share" in dict(info.value.problems)


# -- the TC market on a congested feeder, and the comparison ------------------------------------------------------
pytest.importorskip("opendssdirect")

COMMUNITY = {
    "study": {"name": "tc", "start_datetime": "2021-07-01 00:00:00", "timezone": "America/Edmonton", "days": 1,
              "seed": 5, "interval_s": 600},
    "market": {"grid": {"buy_price": 0.1449, "sell_price": 0.069}},
    "participants": {
        # heavy households (heat pumps, EVs: 16 x a 5,000 kWh/year house) on a 100 kVA transformer
        "pro": {"count": 4, "profile": {"type": "realistic", "annual_load_kwh": 5000, "pv_capacity_kw": 7, "load_scale": 16},
                "storage": {"capacity_wh": 13500, "power_w": 5000}, "trader": {"type": "fixed_price"}},
        "con": {"count": 4, "profile": {"type": "realistic", "annual_load_kwh": 5000, "pv_capacity_kw": 0, "load_scale": 16},
                "trader": {"type": "fixed_price"}},
    },
}
FEEDER = {"transformer_kva": 100, "spacing_m": 60}


@pytest.fixture(scope="module")
def comparison(tmp_path_factory):
    from trexsim.tc.compare import compare_command

    out = tmp_path_factory.mktemp("cmp")
    return compare_command(parse_config(COMMUNITY), feeder=FEEDER, out=out, plots=True)


def test_tc_lowers_the_peak_on_a_congested_feeder(comparison):
    modes = comparison.report["modes"]
    grid, tc = modes["grid_only"], modes["tc"]
    assert grid["peak_transformer_loading_pct"] > 100                       # congested without coordination
    assert tc["peak_transformer_loading_pct"] < 0.95 * grid["peak_transformer_loading_pct"]
    assert tc["hours_transformer_overloaded"] < grid["hours_transformer_overloaded"]
    assert tc["min_voltage_pu"] > grid["min_voltage_pu"]
    assert tc["max_price"] > 0.1449 and tc["shifted_load_kwh"] > 0           # prices rose; load moved
    # every participant has a bill in every mode; the ALEX run equals the config's own run
    ids = comparison.report["participants"]
    assert len(ids) == 8 and all(set(m["bills"]) == set(ids) for m in modes.values())
    assert all(m["total_bill"] == pytest.approx(sum(m["bills"].values())) for m in modes.values())


def test_the_tc_leg_is_a_recorded_tc_run(comparison):
    """compare's TC column is a trexsim run of the TC market module on the in-process fabric, on the feeder the
    comparison measures on: its schedule in the run's database, its bills in the ledger."""
    import duckdb

    out = comparison.out_dir / "tc"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["tc"]["horizons"] == 1 and summary["tc"]["price_intervals"] == 24
    # 24 hourly prices per pass: 4 passes and the published schedule's own prediction
    assert summary["tc"]["powerflow_solves_for_prices"] == 24 * 5
    assert summary["tc"]["feeder"]["transformer_kva"] == 100
    con = duckdb.connect(str(out / "run.duckdb"), read_only=True)
    try:
        prices = con.execute("SELECT tou_buy_price, congestion, price FROM tc_schedule ORDER BY first_round").fetchnumpy()
        imports = con.execute("SELECT participant, "
                              "sum(d.grid_import_wh * (r.grid_buy_price - 0.1449)) / 1000 AS congestion "
                              "FROM deliveries d JOIN rounds r USING (episode, round) GROUP BY participant "
                              "ORDER BY participant").fetchnumpy()
    finally:
        con.close()
    assert len(prices["price"]) == 24
    assert np.allclose(prices["price"], prices["tou_buy_price"] + prices["congestion"])
    assert (prices["congestion"] >= 0).all() and prices["congestion"].max() > 0.05
    tc = comparison.report["modes"]["tc"]
    ids = comparison.report["participants"]
    # the congestion part of each bill, from the ledger by hand (the tariff is flat: 0.1449 $/kWh)
    assert [tc["congestion_paid"][pid] for pid in ids] == pytest.approx(imports["congestion"].tolist(), abs=1e-6)
    assert sum(tc["congestion_paid"].values()) > 1
    assert tc["max_price"] == pytest.approx(prices["price"].max())


def test_tc_conserves_flexible_energy(tmp_path):
    """Flexible loads under TC move within their 6-hour windows; the same households' loads of the grid-only
    run (no prices to react to) are the forecast they move from."""
    from trexsim.simulation import Simulation

    def loads(market_type, tc):
        cfg = json.loads(json.dumps(COMMUNITY))
        for spec in cfg["participants"].values():
            spec["trader"] = {"type": "grid_only"}
        cfg["market"]["type"] = market_type
        cfg["tc"] = tc
        run = Simulation(parse_config(cfg), tmp_path / market_type).run(plots=False)
        con = duckdb.connect(str(run.database), read_only=True)
        try:
            return con.execute("SELECT load_wh, battery_charge_wh, battery_discharge_wh, battery_stored_wh "
                               "FROM deliveries ORDER BY round, participant").fetchnumpy()
        finally:
            con.close()

    import duckdb

    tc = {"iterations": 2, "feeder": FEEDER, "flexible_load": {"share": 0.3, "window_h": 6, "max_power_w": 4000}}
    moved, base = loads("tc", tc), loads("alex", None)
    load, base_load = moved["load_wh"].reshape(144, -1), base["load_wh"].reshape(144, -1)
    for w0 in range(0, 144, 36):   # 6 h windows of 10-minute rounds; whole-Wh meters keep the running sums
        assert np.abs(load[w0:w0 + 36].sum(axis=0) - base_load[w0:w0 + 36].sum(axis=0)).max() <= 1
    assert np.abs(load - base_load).sum() > 10_000
    assert moved["battery_charge_wh"].max() <= 5000 / 6 and moved["battery_discharge_wh"].max() <= 5000 / 6
    assert moved["battery_stored_wh"].max() <= 13500


def test_compare_outputs(comparison):
    report = json.loads((comparison.out_dir / "report.json").read_text())
    assert set(report["modes"]) == {"grid_only", "tc", "alex"}
    # which forecast each leg planned with (the community has no tc section: TC's default, yesterday's profiles)
    assert report["forecasts"] == {"grid_only": None, "alex": {"type": "perfect"},
                                   "tc": {"type": "persistence", "lag_days": 1.0, "error_pct": 10.0}}
    assert {p.name for p in comparison.figures} == {"compare_transformer_loading.png", "compare_min_voltage.png",
                                                    "compare_bills.png", "compare_tc_prices.png"}
    assert all(p.stat().st_size > 10_000 for p in comparison.figures)
    # 16-home loads against 7 kW of PV: no household ever has energy to sell, so ALEX settles nothing and its
    # column is the grid-only run's; compare says so (and nothing about TC, which differs)
    import duckdb

    con = duckdb.connect(str(comparison.out_dir / "alex" / "run.duckdb"), read_only=True)
    try:
        settled = con.execute("SELECT count(*) FROM settlements").fetchone()[0]
    finally:
        con.close()
    assert settled == 0
    assert [w.split(":")[0] for w in comparison.report["warnings"]] == [
        "no coordination (grid only) and ALEX market gave the same result"]
    for mode in ("grid_only", "tc", "alex"):
        assert (comparison.out_dir / mode / "run.duckdb").is_file()
        assert (comparison.out_dir / mode / "powerflow" / "rounds.parquet").is_file()


def test_compare_errors(tmp_path):
    from trexsim.simulation import Simulation
    from trexsim.tc.compare import compare_command

    ext = json.loads(json.dumps(COMMUNITY))
    ext["participants"]["con"]["trader"] = {"type": "external"}
    with pytest.raises(TrexsimError, match=r"participants.con.trader: an external trader needs an outside driver"):
        compare_command(parse_config(ext), feeder=FEEDER, out=tmp_path / "a")
    with pytest.raises(TrexsimError, match=r"--feeder .*nowhere.dss: no such file"):
        compare_command(parse_config(COMMUNITY), feeder=str(tmp_path / "nowhere.dss"), out=tmp_path / "c")
    assert not (tmp_path / "c" / "grid_only").exists()   # checked before any run
    with pytest.raises(TrexsimError, match=r"tc.price_interval_s: 900 s is not a whole number .* 600 s rounds"):
        Simulation(parse_config(dict(COMMUNITY, market={"type": "tc"}, tc={"price_interval_s": 900})), tmp_path / "b")


def test_compare_command_line(tmp_path):
    from typer.testing import CliRunner

    from trexsim.cli import app

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(dict(COMMUNITY, tc={"damping": 0})))
    result = CliRunner().invoke(app, ["compare", str(bad), "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "tc.damping" in result.output


def test_tc_without_congestion_is_the_grid_only_run(tmp_path):
    """An uncongested feeder: no congestion price, so the schedule is flat, nothing moves and the batteries run
    plain self-consumption: the TC run is the grid-only run, to the Wh, and compare says so and why."""
    from trexsim.tc.compare import compare_command

    light = json.loads(json.dumps(COMMUNITY))
    for spec in light["participants"].values():
        spec["profile"]["load_scale"] = 1
    report = compare_command(parse_config(light), feeder={"transformer_kva": 250}, out=tmp_path, plots=False).report
    grid, tc = report["modes"]["grid_only"], report["modes"]["tc"]
    assert tc["max_price"] == pytest.approx(0.1449) and tc["shifted_load_kwh"] == 0
    assert grid["peak_transformer_loading_pct"] < 60
    for pid in report["participants"]:
        assert tc["bills"][pid] == pytest.approx(grid["bills"][pid], abs=1e-9)
    assert tc["peak_transformer_loading_pct"] == grid["peak_transformer_loading_pct"]
    assert tc["losses_kwh"] == grid["losses_kwh"]
    (same,) = [w for w in report["warnings"] if w.startswith("no coordination (grid only) and transactive control")]
    assert "predicted no congestion on this feeder, peak 8 % without coordination" in same


def test_compare_of_the_tc_example_runs_grid_only_and_alex_at_the_tariff_on_the_configs_feeder(tmp_path):
    """The bundled tc example says market.type 'tc', has a 100 kVA feeder in its powerflow section and no traders.
    compare used to run all three columns as TC on a default feeder, with no word: three identical columns."""
    from trexsim.cli import _example_path
    from trexsim.config import load_config
    from trexsim.tc.compare import compare_command

    cfg = load_config(_example_path("tc"))
    result = compare_command(cfg, out=tmp_path / "cmp", every=3, plots=False)
    modes = result.report["modes"]
    # the config's feeder, not the generated default
    feeder = result.report["feeder"]
    assert feeder["transformer_kva"] == 100 and feeder["spec"]["spacing_m"] == 60
    # grid only bills at the flat tariff: lower than TC's congestion-priced bills, and a higher peak
    assert modes["grid_only"]["total_bill"] < modes["tc"]["total_bill"]
    assert modes["grid_only"]["peak_transformer_loading_pct"] > modes["tc"]["peak_transformer_loading_pct"]
    # no traders: ALEX is grid only again, and the report says so
    assert modes["alex"]["total_bill"] == pytest.approx(modes["grid_only"]["total_bill"])
    assert [w.split(":")[0] for w in result.report["warnings"]] == [
        "no participant has a trader that places orders",
        "no coordination (grid only) and ALEX market gave the same result"]
