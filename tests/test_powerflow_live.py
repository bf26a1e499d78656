"""The live powerflow module on real OpenDSS and a real DuckDB: it equals the replay; config errors name keys."""

from __future__ import annotations

import json

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest

pytest.importorskip("opendssdirect")

from trexsim import TrexsimError, parse_config  # noqa: E402
from trexsim.errors import ConfigError  # noqa: E402
from trexsim.powerflow import powerflow_command  # noqa: E402
from trexsim.simulation import Simulation  # noqa: E402

ROUNDS = 24


def _config(powerflow: dict | None, rounds: int = ROUNDS) -> dict:
    cfg = {
        # evening: households import, PV is gone, batteries cover part of it
        "study": {"name": "live", "start_datetime": "2021-07-01 18:00:00", "timezone": "America/Edmonton",
                  "days": rounds * 60 / 86400, "seed": 11, "interval_s": 60},
        "participants": {
            "p": {"count": 4, "profile": {"type": "realistic", "annual_load_kwh": 9000, "pv_capacity_kw": 5},
                  "storage": {"capacity_wh": 5000, "power_w": 1000}, "trader": {"type": "fixed_price"}},
            "c": {"count": 3, "profile": {"type": "flat", "load_w": 18000}, "trader": {"type": "fixed_price"}},
        },
    }
    if powerflow is not None:
        cfg["powerflow"] = powerflow
    return cfg


# one lateral of 7 houses 120 m apart: 3 x 18 kW at its far end drop the voltage there below 0.95 p.u.
FEEDER = {"spacing_m": 120, "transformer_kva": 100}


@pytest.fixture(scope="module")
def live_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("live") / "run"
    pf = {"feeder": FEEDER, "every": 5, "limits": {"v_min_pu": 0.95}, "detail": True, "solver": "inline"}
    result = Simulation(parse_config(_config(pf)), out).run(plots=False)
    return out, result


def test_live_equals_replay(live_run):
    out, result = live_run
    con = duckdb.connect(str(out / "run.duckdb"), read_only=True)
    live = con.execute("SELECT * FROM powerflow_rounds ORDER BY round").df()
    live_v = con.execute("SELECT * FROM powerflow_violations ORDER BY round, kind, object").df()
    episodes = con.execute("SELECT * FROM powerflow_episodes").df()
    buses = con.execute("SELECT count(*), count(DISTINCT bus) FROM powerflow_bus_voltages").fetchone()
    elements = con.execute("SELECT count(*) FROM powerflow_element_loading").fetchone()[0]
    # by hand: every 5th of 24 rounds -> rounds 0, 5, 10, 15, 20; the last stands for rounds 20..23
    assert live["round"].tolist() == [0, 5, 10, 15, 20]
    assert live["rounds_represented"].tolist() == [5, 5, 5, 5, 4]
    # the metered net energy, as an average power: sum(net_meter_wh) * 3600 / 60 s
    net = con.execute("SELECT round, sum(net_meter_wh) * 60 AS w FROM deliveries WHERE round % 5 = 0 "
                      "GROUP BY round ORDER BY round").df()
    assert np.allclose(live["net_load_w"], net["w"])
    con.close()

    rep = powerflow_command(out, feeder=FEEDER, every=5, v_min_pu=0.95, plots=False, out=out / "replay")
    replay = pq.read_table(out / "replay" / "rounds.parquet").to_pandas()
    for col in ("net_load_w", "source_p_w", "source_q_var", "losses_w", "v_min_pu", "v_max_pu",
                "transformer_loading_pct", "line_loading_pct"):
        assert np.allclose(live[col], replay[col], rtol=1e-6, atol=1e-6), col
    for col in ("v_min_bus", "v_max_bus", "buses_under", "buses_over", "elements_over", "converged"):
        assert live[col].tolist() == replay[col].tolist(), col
    # the most loaded line: houses whose battery covers their load leave main sections equally loaded (ties to
    # the solver tolerance), so the name may differ; its loading may not
    detail = pq.read_table(out / "replay" / "element_loading.parquet").to_pandas()
    at = detail.set_index(["round", "element"])["loading_pct"]
    assert np.allclose([at[(r, e)] for r, e in zip(live["round"], live["max_line"])], replay["line_loading_pct"], atol=1e-6)
    replay_v = pq.read_table(out / "replay" / "violations.parquet").to_pandas().sort_values(["round", "kind", "object"])
    assert len(live_v) == len(replay_v) > 0            # the far houses are below 0.95 p.u.
    assert live_v["object"].tolist() == replay_v["object"].tolist()
    assert np.allclose(live_v["value"], replay_v["value"], atol=1e-6)

    s, r = result.summary["powerflow"], rep.summary
    assert s == json.loads(json.dumps(s))              # summary.json holds it as written
    assert s["solved_rounds"] == 5 and s["not_converged"] == 0
    assert s["min_voltage_pu"] == pytest.approx(r["min_voltage_pu"], abs=1e-6) and s["min_voltage_pu"] < 0.95
    assert s["max_transformer_loading_pct"] == pytest.approx(r["max_transformer_loading_pct"], rel=1e-6)
    assert s["losses_kwh"] == pytest.approx(r["losses_kwh"], rel=1e-6)
    assert s["hours_over_limit"] == pytest.approx(r["hours_over_limit"]["any"])
    assert s["violations"] == r["violations"]["total"] == len(live_v)
    assert episodes["solved_rounds"].tolist() == [5]
    # detail: every checked bus (mv, lv, 7 junctions, 7 houses) and every element (tx + 14 lines) per solved round
    assert buses == (5 * 16, 16) and elements == 5 * 15


def test_no_powerflow_section_no_module(tmp_path):
    sim = Simulation(parse_config(_config(None, rounds=3)), tmp_path / "run")
    result = sim.run(plots=False)
    assert sim.powerflow is None and "powerflow" not in result.summary
    con = duckdb.connect(str(tmp_path / "run" / "run.duckdb"), read_only=True)
    assert con.execute("SELECT count(*) FROM powerflow_rounds").fetchone()[0] == 0
    con.close()


@pytest.mark.parametrize("section, key, message", [
    ({"feeder": {"transformer_kva": 333}}, "powerflow.feeder", "transformer_kva: must be one of"),
    ({"feeder": {"houses_per_feeder": 3}}, "powerflow.feeder", "unknown feeder parameter"),
    ({"every": 0}, "powerflow.every", "must be >= 1"),
    ({"limits": {"v_min_pu": 1.1}}, "powerflow.limits", "v_min_pu must be below v_max_pu"),
    ({"pf_import": 1.5}, "powerflow.pf_import", "must be in (0, 1]"),
    ({"engine": "pandapower"}, "powerflow.engine", "opendss"),
    ({"colour": "red"}, "powerflow.colour", "unknown key"),
])
def test_config_errors_name_keys(section, key, message):
    with pytest.raises(ConfigError) as info:
        parse_config(_config(section))
    problems = dict(info.value.problems)
    assert key in problems and message in problems[key], problems


def test_runtime_errors_name_the_section(tmp_path):
    with pytest.raises(TrexsimError, match=r"powerflow.feeder: no such file 'nowhere.dss'"):
        Simulation(parse_config(_config({"feeder": "nowhere.dss"})), tmp_path / "a")
    with pytest.raises(TrexsimError, match=r"powerflow: .*participants without a load: c-3.*'house_099' \(for c-2\)"):
        mapping = {"p-1": "house_001", "p-2": "house_002", "p-3": "house_003", "p-4": "house_004",
                   "c-1": "house_005", "c-2": "house_099"}
        Simulation(parse_config(_config({"mapping": mapping})), tmp_path / "b")


def test_solver_process_gives_the_inline_results(live_run, tmp_path):
    # the process solves and reduces each batch itself and sends back per-round numbers (and, with detail, every
    # bus and element): the tables are those of the inline run, which the replay test checks
    out, _ = live_run
    pf = {"feeder": FEEDER, "every": 5, "limits": {"v_min_pu": 0.95}, "detail": True, "solver": "process"}
    sim = Simulation(parse_config(_config(pf)), tmp_path / "run")
    assert sim.powerflow.solver == "process"
    sim.run(plots=False)
    queries = {"rounds": "SELECT * EXCLUDE (max_line) FROM powerflow_rounds ORDER BY round",
               "violations": "SELECT * FROM powerflow_violations ORDER BY round, kind, object",
               "buses": "SELECT * FROM powerflow_bus_voltages ORDER BY round, bus",
               "elements": "SELECT * FROM powerflow_element_loading ORDER BY round, element",
               "episodes": "SELECT * EXCLUDE (solve_s, feeder) FROM powerflow_episodes"}
    tables = []
    for folder in (out, tmp_path / "run"):
        con = duckdb.connect(str(folder / "run.duckdb"), read_only=True)
        tables.append({k: con.execute(q).df() for k, q in queries.items()})
        con.close()
    inline, process = tables
    assert len(inline["rounds"]) == 5 and len(inline["violations"]) > 0
    assert len(inline["buses"]) == 5 * 16 and len(inline["elements"]) == 5 * 15
    for name in queries:
        a, b = inline[name], process[name]
        assert a.columns.tolist() == b.columns.tolist() and len(a) == len(b), name
        for col in a.columns:
            if a[col].dtype.kind == "f":
                assert np.allclose(a[col], b[col], rtol=1e-9, atol=1e-9, equal_nan=True), (name, col)
            else:
                assert a[col].tolist() == b[col].tolist(), (name, col)


def test_solver_auto_is_a_process_with_a_second_core(tmp_path):
    import multiprocessing
    import os

    from trexsim.modules.powerflow import solver_kind

    assert parse_config(_config({})).powerflow.solver == "auto"
    can_fork = "fork" in multiprocessing.get_all_start_methods()
    expected = "process" if can_fork and len(os.sched_getaffinity(0)) > 1 else "inline"
    assert solver_kind("auto") == expected
    assert solver_kind("inline") == "inline"
    assert solver_kind("process") == ("process" if can_fork else "inline")
    sim = Simulation(parse_config(_config({"feeder": FEEDER}, rounds=3)), tmp_path / "run")
    assert sim.powerflow.solver == expected
    result = sim.run(plots=False)
    assert result.summary["powerflow"]["solved_rounds"] == 3


def _engine(spec, houses: int, folder):
    from trexsim.powerflow.feeder import generate_feeder
    from trexsim.powerflow.opendss import OpenDSSEngine

    gen = generate_feeder(spec, houses, folder / "feeder.dss")
    engine = OpenDSSEngine()
    layout = engine.load_circuit(gen.path)
    engine.bind_loads(gen.load_names)
    return engine, layout


def _opendss_reads(engine, layout):
    """The present solution as OpenDSS itself reports it: node p.u., element loading %, losses W."""
    d = engine.dss
    pct = dict(zip([n.lower() for n in d.PDElements.AllNames()], np.asarray(d.PDElements.AllPctNorm())))
    return (np.asarray(d.Circuit.AllBusMagPu()), np.array([pct[e.lower()] for e in layout.element_names]),
            float(np.asarray(d.Circuit.Losses())[0]))


@pytest.mark.parametrize("spec", ["three_phase", "single_phase", "split_phase"])
def test_engine_results_from_node_voltages_equal_opendss_reads(spec, tmp_path):
    # on plain circuits loadings and losses come from the node voltages and each element's Yprim; after every
    # solve they must be what OpenDSS' own AllBusMagPu, AllPctNorm and Losses report
    from trexsim.powerflow.feeder import FeederSpec
    from trexsim.powerflow.splitphase import SplitPhaseSpec

    spec = {"three_phase": FeederSpec(), "single_phase": FeederSpec(house_phases=1),
            "split_phase": SplitPhaseSpec()}[spec]
    engine, layout = _engine(spec, 12, tmp_path)
    rng = np.random.default_rng(3)
    p = rng.uniform(-6000, 9000, (6, 12)).round()
    q = np.abs(p) * 0.33
    for k in range(6):
        ok, node_pu, loading, scalars = engine.solve_arrays(p[k:k + 1], q[k:k + 1])
        assert engine._branches is not None and ok[0]      # the node-voltage path was used, and converged
        own_pu, own_loading, own_losses = _opendss_reads(engine, layout)
        assert np.allclose(node_pu[0], own_pu, rtol=0, atol=1e-12)
        assert np.allclose(loading[0], own_loading, rtol=0, atol=1e-9) and own_loading.max() > 10
        assert scalars[0, 2] == pytest.approx(own_losses, rel=1e-7) and own_losses > 100
        # the snapshot API (OpenDSS' own reads) gives the same
        snap = engine.results()
        assert np.allclose(snap.loading_pct, loading[0], rtol=0, atol=1e-9)
        assert snap.losses_w == pytest.approx(scalars[0, 2], rel=1e-7)


def test_engine_goes_back_to_opendss_reads_if_node_voltage_results_disagree(tmp_path):
    from trexsim.powerflow.feeder import FeederSpec

    engine, layout = _engine(FeederSpec(), 6, tmp_path)
    p = np.full((2, 6), 4000.0)
    engine.solve_arrays(p[:1], p[:1] * 0.3)
    assert engine._branches is not None
    engine._branches.pct_per_a = engine._branches.pct_per_a * 2    # a branch model that is wrong
    engine.bind_loads([f"house_{i:03d}" for i in range(1, 7)])     # binding again checks it again
    ok, node_pu, loading, scalars = engine.solve_arrays(p[1:], p[1:] * 0.3)
    assert engine._branches is None
    own_pu, own_loading, own_losses = _opendss_reads(engine, layout)
    assert np.array_equal(loading[0], own_loading) and np.array_equal(node_pu[0], own_pu)
    assert scalars[0, 2] == own_losses


def test_reducing_batches_equals_reducing_the_whole(tmp_path):
    # what a solver reduces batch by batch, joined, is what reducing all rounds at once gives
    from trexsim.powerflow.feeder import FeederSpec
    from trexsim.powerflow.reduce import Reduced, RoundReducer
    from trexsim.powerflow.replay import Limits

    engine, layout = _engine(FeederSpec(spacing_m=120, transformer_kva=100), 7, tmp_path)
    rng = np.random.default_rng(5)
    p = rng.uniform(0, 22000, (150, 7)).round()
    ok, node_pu, loading, _ = engine.solve_arrays(p, p * 0.33)
    ok[17] = False                                      # a round that did not converge reduces to NaN
    reducer = RoundReducer(layout, Limits(v_min_pu=0.95, max_loading_pct=80))
    whole = reducer.reduce(node_pu, loading, ok)
    parts = [reducer.reduce(node_pu[b:b + 60], loading[b:b + 60], ok[b:b + 60]) for b in range(0, 150, 60)]
    joined = Reduced.concat(parts)
    assert len(whole.viol_row) > 0 and set(whole.viol_kind) == {"undervoltage", "overload"}
    assert np.isnan(whole.v_min_pu[17]) and whole.v_min_bus[17] is None
    for name in Reduced.__dataclass_fields__:
        a, b = getattr(whole, name), getattr(joined, name)
        if a.dtype.kind == "f":
            assert np.array_equal(a, b, equal_nan=True), name
        else:
            assert a.tolist() == b.tolist(), name
    light = Reduced.concat([r.without_detail() for r in parts])
    assert light.bus_min is None and light.bus_max is None and np.array_equal(light.viol_row, whole.viol_row)


def test_export_writes_the_powerflow_tables_that_hold_rows(live_run, tmp_path):
    from trexsim.records.export import export_run

    out_dir = live_run[0]
    written = {p.stem: p for p in export_run(out_dir, "csv", tmp_path / "export")}
    assert {"deliveries", "powerflow_rounds", "powerflow_episodes"} <= set(written)
    con = duckdb.connect(str(out_dir / "run.duckdb"), read_only=True)
    rows = con.execute("SELECT count(*) FROM powerflow_rounds").fetchone()[0]
    assert rows > 0 and len(written["powerflow_rounds"].read_text().splitlines()) == rows + 1


def test_solver_batch_is_the_main_side_reduction_and_small(tmp_path):
    # what a solver (process or inline) hands back for a batch: the reduction the main process would compute from
    # the engine's arrays, and without detail no node voltages or element loadings
    from trexsim.modules.powerflow import _Solver
    from trexsim.powerflow.feeder import FeederSpec, generate_feeder
    from trexsim.powerflow.mapping import LoadMapping
    from trexsim.powerflow.opendss import OpenDSSEngine
    from trexsim.powerflow.reduce import RoundReducer
    from trexsim.powerflow.replay import Limits

    gen = generate_feeder(FeederSpec(spacing_m=120, transformer_kva=100), 7, tmp_path / "feeder.dss")
    engines, layouts = [], []
    for _ in range(2):                                   # one for the solver, one to compute by hand
        engine = OpenDSSEngine()
        layouts.append(engine.load_circuit(gen.path))
        engine.bind_loads(gen.load_names)
        engines.append(engine)
    mapping = LoadMapping(gen.load_names, np.arange(7), np.ones(7), {})
    limits = Limits(v_min_pu=0.95)
    net_wh = np.random.default_rng(9).integers(-50, 300, (60, 7))    # Wh per one-minute round
    for detail in (False, True):
        solved = _Solver(engines[0], RoundReducer(layouts[0], limits), mapping, 60, 0.95, 1.0, detail)(net_wh)
        p = net_wh * 60.0                                               # W: Wh x 3600 / 60 s
        q = np.where(p > 0, p * np.tan(np.arccos(0.95)), 0.0)
        ok, node_pu, loading, scalars = engines[1].solve_arrays(p, q)
        by_hand = RoundReducer(layouts[1], limits).reduce(node_pu, loading, ok)
        assert np.array_equal(solved.converged, ok) and ok.all()
        assert np.allclose(solved.scalars[:, 0], p.sum(axis=1)) and np.array_equal(solved.scalars[:, 1:], scalars)
        assert np.array_equal(solved.reduced.v_min_pu, by_hand.v_min_pu)
        assert solved.reduced.v_min_bus.tolist() == by_hand.v_min_bus.tolist()
        assert solved.reduced.viol_object.tolist() == by_hand.viol_object.tolist() and len(by_hand.viol_row) > 0
        if detail:
            assert np.array_equal(solved.loading, loading) and np.array_equal(solved.reduced.bus_min, by_hand.bus_min)
        else:
            assert solved.loading is None and solved.reduced.bus_min is None and solved.reduced.bus_max is None
