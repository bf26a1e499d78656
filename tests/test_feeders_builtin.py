"""The built-in feeders (``builtin:european-lv``, ``builtin:ieee13``): their files, their published data, the default
mapping, the config errors, and the bundled 55-household TC example on the European LV feeder."""

import json
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from trexsim.config.loader import parse_config
from trexsim.errors import ConfigError
from trexsim.powerflow.builtin import BUILTIN_FEEDERS, builtin_path, round_robin_mapping
from trexsim.powerflow.errors import PowerflowError
from trexsim.powerflow.mapping import resolve_mapping

FLAT = {"profile": {"type": "flat", "load_w": 500, "generation_w": 0}}

# IEEE 13 Node Test Feeder, published power-flow results (IEEE PES Distribution System Analysis Subcommittee,
# "IEEE 13 Node Test Feeder", radial test feeders; Kersting): node voltage magnitudes in p.u., phases a, b, c
# (None: the phase is absent), with the regulators at their published taps 1.0625, 1.0500, 1.06875.
PUBLISHED_IEEE13_PU = {
    "650": (1.0000, 1.0000, 1.0000), "rg60": (1.0625, 1.0500, 1.0687), "632": (1.0210, 1.0420, 1.0174),
    "633": (1.0180, 1.0401, 1.0148), "634": (0.9940, 1.0218, 0.9960), "645": (None, 1.0329, 1.0155),
    "646": (None, 1.0311, 1.0134), "671": (0.9900, 1.0529, 0.9778), "680": (0.9900, 1.0529, 0.9778),
    "684": (0.9881, None, 0.9758), "611": (None, None, 0.9738), "652": (0.9825, None, None),
    "692": (0.9900, 1.0529, 0.9777), "675": (0.9835, 1.0553, 0.9758),
}
PUBLISHED_TOLERANCE_PU = 0.002  # OpenDSS' model of the feeder against the published table (largest gap: 0.0013)


def _config(feeder, n=2, key="powerflow"):
    return {"participants": {"h": {**FLAT, "count": n}}, key: {"feeder": feeder}}


# -- without OpenDSS -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("key", ["powerflow", "tc"])
def test_unknown_builtin_name_is_an_error_naming_the_key_and_the_builtins(key):
    with pytest.raises(ConfigError) as info:
        parse_config(_config("builtin:european_lv", key=key))
    problems = dict(info.value.problems)
    assert f"{key}.feeder" in problems
    assert "builtin:european-lv" in problems[f"{key}.feeder"] and "builtin:ieee13" in problems[f"{key}.feeder"]


def test_builtin_names_are_accepted_by_the_schema():
    for name in ("builtin:european-lv", "builtin:ieee13", "BUILTIN:IEEE13"):
        assert parse_config(_config(name)).powerflow.feeder == name


def test_builtin_files_are_package_data_with_their_notice():
    root = resources.files("trexsim.powerflow") / "feeders"
    assert (root / "NOTICE.md").is_file()
    for spec in BUILTIN_FEEDERS.values():
        assert builtin_path("builtin:" + spec.name).is_file()
    # the published files are shipped unmodified (CRLF line ends and all); no multi-MB file
    lines = (root / "european_lv" / "Lines.txt").read_bytes()
    assert lines.count(b"New Line.") == 905 and b"\r\n" in lines
    assert max(p.stat().st_size for p in Path(str(root)).rglob("*") if p.is_file()) < 100_000


def test_default_mapping_round_robin_by_hand():
    ids = ["h1", "h2", "h3", "h4", "h5"]
    table = round_robin_mapping(ids, ["load1", "load2"])
    assert table == {"h1": ["load1"], "h2": ["load2"], "h3": ["load1"], "h4": ["load2"], "h5": ["load1"]}
    resolved = resolve_mapping(table, ids, ["load1", "load2", "load3"])
    # households drawing 100, 200, 300, 400, 500 W: load1 carries 100 + 300 + 500, load2 200 + 400, load3 nothing
    assert resolved.load_names == ["load1", "load2"]
    np.testing.assert_array_equal(resolved.expand(np.array([[100.0, 200, 300, 400, 500]])), [[900.0, 600.0]])
    # no more households than loads: one each, in the circuit's order
    assert round_robin_mapping(["a", "b"], ["x", "y", "z"]) == {"a": ["x"], "b": ["y"]}
    with pytest.raises(PowerflowError):
        round_robin_mapping(["a"], [])


# -- with OpenDSS ----------------------------------------------------------------------------------------------
@pytest.fixture
def engine():
    pytest.importorskip("opendssdirect")
    from trexsim.powerflow.engine import create_engine

    return create_engine("opendss")


def _node_pu(engine):
    d = engine.dss
    return dict(zip([n.lower() for n in d.Circuit.AllNodeNames()], np.asarray(d.Circuit.AllBusMagPu())))


def test_european_lv_is_as_published(engine, tmp_path):
    from trexsim.powerflow.replay import load_feeder

    ids = [f"h{i}" for i in range(55)]
    info, layout, mapping = load_feeder("builtin:european-lv", None, ids, engine, tmp_path)
    d = engine.dss
    assert info["kind"] == "builtin" and info["loads"] == 55 and info["loads_driven"] == 55
    assert len(layout.bus_names) == 907          # 906 LV buses and the 11 kV source bus
    assert d.Solution.Frequency() == 50.0
    assert d.Transformers.AllNames() == ["tr1"]
    d.Transformers.First()
    assert d.Transformers.kVA() == 800.0 and d.Transformers.Xhl() == 4.0
    d.Transformers.Wdg(1)
    assert d.Transformers.kV() == 11.0 and d.Transformers.IsDelta()
    d.Transformers.Wdg(2)
    assert d.Transformers.kV() == 0.416 and not d.Transformers.IsDelta()
    # 55 single-phase loads at 0.23 kV, household i on load i+1 (the default mapping)
    assert mapping.load_names == [f"load{i + 1}" for i in range(55)]
    more = d.Loads.First()
    while more:
        assert d.CktElement.NumPhases() == 1 and d.Loads.kV() == 0.23
        more = d.Loads.Next()
    # no load (the shipped master zeroes the loads): the LV busbar sits at the source's published 1.05 p.u.
    pu = _node_pu(engine)
    assert pu["1.1"] == pytest.approx(1.05, abs=5e-4)
    # driven: every household 2 kW at pf 0.95; the circuit takes 110 kW plus its losses
    engine.bind_loads(mapping.load_names)
    assert engine.series_method() == "loadshape"   # a plain circuit: the placeholders' zero loads do not move
    p = np.full((2, 55), 2000.0)
    ok, node_pu, loading, scalars = engine.solve_arrays(p, p * np.tan(np.arccos(0.95)))
    assert ok.all()
    losses = scalars[:, 2]
    np.testing.assert_allclose(scalars[:, 0], 110_000.0 + losses, rtol=1e-6)
    assert 0 < losses[0] < 0.05 * 110_000
    assert node_pu[0, layout.node_checked].min() < 1.05


def test_european_lv_with_fewer_households_keeps_the_fast_path(engine, tmp_path):
    from trexsim.powerflow.replay import load_feeder

    info, _, mapping = load_feeder("builtin:european-lv", None, [f"h{i}" for i in range(50)], engine, tmp_path)
    engine.bind_loads(mapping.load_names)
    assert info["loads_driven"] == 50 and engine.series_method() == "loadshape"


def test_ieee13_agrees_with_its_published_voltages(engine):
    engine.load_circuit(builtin_path("builtin:ieee13"))
    d = engine.dss
    # the published file's own "alternate solution script": the regulators at the published taps, controls off
    for cmd in ("Transformer.Reg1.Taps=[1.0 1.0625]", "Transformer.Reg2.Taps=[1.0 1.0500]",
                "Transformer.Reg3.Taps=[1.0 1.06875]", "Set Controlmode=OFF", "Solve"):
        d.Text.Command(cmd)
    pu = _node_pu(engine)
    gaps = [abs(pu[f"{bus}.{ph}"] - v) for bus, vals in PUBLISHED_IEEE13_PU.items()
            for ph, v in enumerate(vals, start=1) if v is not None]
    assert len(gaps) == 35
    assert max(gaps) < PUBLISHED_TOLERANCE_PU


def test_ieee13_as_loaded_is_opendss_own_solve_of_the_unmodified_file(engine):
    odd = pytest.importorskip("opendssdirect")
    path = builtin_path("builtin:ieee13")
    layout = engine.load_circuit(path)
    assert len(layout.load_names) == 15
    assert sorted(layout.element_kind).count("transformer") == 5   # sub, three regulators, XFM1
    ours = _node_pu(engine)
    own = odd.NewContext()
    own.Text.Command(f'redirect "{path}"')   # the published file, as OpenDSS runs it (its own Solve)
    theirs = dict(zip([n.lower() for n in own.Circuit.AllNodeNames()], own.Circuit.AllBusMagPu()))
    assert ours.keys() == theirs.keys()
    assert max(abs(ours[n] - theirs[n]) for n in ours) < 1e-3   # OpenDSS' default tolerance 1e-4 vs trexsim's 1e-6
    d = own.Loads
    total_kw = 0.0
    more = d.First()
    while more:
        total_kw += d.kW()
        more = d.Next()
    assert total_kw == pytest.approx(3466.0)   # the published spot loads


def test_ieee13_shares_its_spot_loads_among_households(engine, tmp_path):
    from trexsim.powerflow.replay import load_feeder

    ids = [f"h{i}" for i in range(20)]
    info, layout, mapping = load_feeder("builtin:ieee13", None, ids, engine, tmp_path)
    assert mapping.table["h0"] == mapping.table["h15"] == ["671"]   # 15 loads: the 16th household is back on the first
    assert info["most_households_per_load"] == 2 and info["loads_driven"] == 15
    engine.bind_loads(mapping.load_names)
    per_household = np.full((1, 20), 5000.0)
    p = mapping.expand(per_household)
    assert p[0, 0] == 10_000.0 and p[0, 5] == 5_000.0
    ok, _, _, scalars = engine.solve_arrays(p, 0.3 * p)
    assert ok.all() and scalars[0, 0] == pytest.approx(100_000.0 + scalars[0, 2], rel=1e-4)


def test_european_lv_example_runs_and_records(tmp_path):
    pytest.importorskip("opendssdirect")
    import pyjson5

    from trexsim.simulation import Simulation

    data = pyjson5.decode((resources.files("trexsim.config") / "examples" / "tc-european-lv.json").read_text())
    assert data["powerflow"]["feeder"] == "builtin:european-lv"
    assert sum(group["count"] for group in data["participants"].values()) == 55
    data["study"]["interval_s"] = 3600  # short: 24 hourly rounds
    data["tc"]["iterations"] = 2
    data["records"] = {"plots": False}
    cfg = parse_config(data)
    result = Simulation(cfg, tmp_path / "run").run(plots=False)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary == json.loads(json.dumps(result.summary))
    pf = summary["powerflow"]
    assert pf["feeder"]["kind"] == "builtin" and pf["feeder"]["name"] == "european-lv"
    assert pf["solved_rounds"] == 24
    assert 0 < pf["max_transformer_loading_pct"] < 100
    assert 0.9 < pf["min_voltage_pu"] <= pf["max_voltage_pu"] < 1.1
    # real-sized households: a day's consumption of a few kWh each
    loads_kwh = [p["load_wh"] / 1000 for p in summary["participants"].values()]
    assert 5 < np.mean(loads_kwh) < 30
    mapping = json.loads((tmp_path / "run" / "powerflow" / "mapping.json").read_text())
    assert mapping["pvbat-01"] == ["load1"] and mapping["home-25"] == ["load55"]


def test_ev_example_congests_the_published_feeder_and_tc_relieves_it(tmp_path):
    """The bundled tc-ev-european-lv example: 40 evening EV chargers on the IEEE European LV feeder take its far
    ends below EN 50160's 0.9 p.u. without coordination; TC's converged schedule (adaptive update, a noisy
    persistence forecast) brings them back above it, lowers the peak and the violations, and refunds every
    cent of congestion rent. The three legs differ. Numbers as in docs/powerflow.md."""
    pytest.importorskip("opendssdirect")
    from trexsim.config import load_config
    from trexsim.tc.compare import compare_command

    path = resources.files("trexsim.config") / "examples" / "tc-ev-european-lv.json"
    cfg = load_config(Path(str(path)))
    assert cfg.tc.forecast.type == "persistence"   # TC plans with yesterday's profiles, not perfect foresight
    report = compare_command(cfg, out=tmp_path / "cmp", v_min_pu=0.9, v_max_pu=1.1, plots=False).report
    assert report["warnings"] == []
    grid, tc, alex = (report["modes"][m] for m in ("grid_only", "tc", "alex"))
    assert grid["min_voltage_pu"] == pytest.approx(0.8739, abs=5e-4) and grid["min_voltage_pu"] < 0.9
    assert tc["min_voltage_pu"] == pytest.approx(0.9139, abs=5e-4) and tc["min_voltage_pu"] > 0.9
    assert tc["peak_transformer_loading_pct"] == pytest.approx(37.76, abs=0.05)
    assert grid["peak_transformer_loading_pct"] == pytest.approx(41.25, abs=0.05)
    assert tc["violations"] < grid["violations"] / 5 and tc["hours_over_limit"] < grid["hours_over_limit"]
    summary = json.loads((tmp_path / "cmp" / "tc" / "summary.json").read_text())["tc"]
    money = summary["congestion"]
    assert money["rent_usd"] > 1.0 and money["refunded_usd"] == pytest.approx(money["rent_usd"], abs=1e-9)
    # (the report rounds each household's amounts to a millionth of a dollar)
    assert sum(tc["congestion_refund"].values()) == pytest.approx(money["rent_usd"], abs=55e-6)
    assert alex["total_bill"] < grid["total_bill"]   # the households trade among themselves
    assert summary["max_residual_per_kwh"] <= cfg.tc.tolerance and summary["horizon_passes"][0] < cfg.tc.iterations


def test_smart_ev_example_tc_moves_the_cars_and_clears_every_violation(tmp_path):
    """The bundled tc-smart-ev-european-lv example: tc-ev-european-lv's 40 cars, the same sessions, charging
    price-responsively ("charging": "smart"). Grid only and ALEX have no price schedule: the cars charge as they
    come (as in tc-ev-european-lv, number for number, with a PriceSignalWarning). Under TC the cars answer the
    schedule (the proportional logit rule), the fixed point converges, every bus stays above 0.9 p.u. with no
    violation, and the cars' energy moves into the late evening without a new peak there. Numbers as in
    docs/powerflow.md, "Smart cars on the congested feeder"."""
    pytest.importorskip("opendssdirect")
    import duckdb
    import pandas as pd

    from trexsim.config import load_config
    from trexsim.devices import PriceSignalWarning
    from trexsim.tc.compare import compare_command

    path = resources.files("trexsim.config") / "examples" / "tc-smart-ev-european-lv.json"
    cfg = load_config(Path(str(path)))
    assert {d.charging for spec in cfg.participants.values() for d in spec.devices} == {"smart"}
    with pytest.warns(PriceSignalWarning, match="charging: smart"):
        report = compare_command(cfg, out=tmp_path / "cmp", v_min_pu=0.9, v_max_pu=1.1, plots=False).report
    assert report["warnings"] == []
    grid, tc, alex = (report["modes"][m] for m in ("grid_only", "tc", "alex"))
    # no schedule, no smart charging: grid only is tc-ev-european-lv's
    assert grid["min_voltage_pu"] == pytest.approx(0.8739, abs=5e-4) and grid["violations"] == 637
    assert grid["peak_transformer_loading_pct"] == pytest.approx(41.25, abs=0.05)
    assert alex["violations"] == 637
    assert tc["min_voltage_pu"] == pytest.approx(0.9269, abs=5e-4)
    assert tc["peak_transformer_loading_pct"] == pytest.approx(30.92, abs=0.05)
    assert tc["violations"] == 0 and tc["hours_over_limit"] == 0
    assert tc["losses_kwh"] == pytest.approx(40.54, abs=0.05) and grid["losses_kwh"] == pytest.approx(51.95, abs=0.05)
    assert tc["total_bill"] == pytest.approx(169.98, abs=0.05) and grid["total_bill"] == pytest.approx(165.71, abs=0.05)
    summary = json.loads((tmp_path / "cmp" / "tc" / "summary.json").read_text())["tc"]
    assert summary["max_residual_per_kwh"] <= cfg.tc.tolerance and summary["horizon_passes"] == [10]
    assert summary["congestion"]["rent_usd"] == pytest.approx(3.70, abs=0.01)

    def loads(leg):
        with duckdb.connect(str(tmp_path / "cmp" / leg / "run.duckdb"), read_only=True) as db:
            return db.execute("select sum(load_wh) from deliveries where episode = 0").fetchone()[0]

    assert loads("tc") == loads("grid_only")    # every Wh of every car is drawn within the day, only later
    hourly = {leg: pd.read_parquet(tmp_path / "cmp" / leg / "powerflow" / "rounds.parquet")
              .transformer_loading_pct.to_numpy().reshape(24, 6).max(axis=1) for leg in ("grid_only", "tc")}
    assert hourly["tc"][17:19].max() < hourly["grid_only"][17:19].max() - 10   # the 17-19 h peak is lower ...
    assert (hourly["tc"][20:24] > hourly["grid_only"][20:24]).all()              # ... the cars charge later ...
    assert hourly["tc"][20:24].max() == pytest.approx(17.2, abs=0.1)            # ... without a new peak there
