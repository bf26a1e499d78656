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
    pf = {"feeder": FEEDER, "every": 5, "limits": {"v_min_pu": 0.95}, "detail": True}
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
    out, _ = live_run
    pf = {"feeder": FEEDER, "every": 5, "limits": {"v_min_pu": 0.95}, "solver": "process"}
    Simulation(parse_config(_config(pf)), tmp_path / "run").run(plots=False)
    tables = []
    for folder in (out, tmp_path / "run"):
        con = duckdb.connect(str(folder / "run.duckdb"), read_only=True)
        tables.append(con.execute("SELECT * EXCLUDE (max_line) FROM powerflow_rounds ORDER BY round").df())
        con.close()
    inline, process = tables
    assert inline.columns.tolist() == process.columns.tolist() and len(inline) == 5
    for col in inline.columns:
        if inline[col].dtype.kind == "f":
            assert np.allclose(inline[col], process[col], rtol=1e-9, atol=1e-9), col
        else:
            assert inline[col].tolist() == process[col].tolist(), col


def test_export_writes_the_powerflow_tables_that_hold_rows(live_run, tmp_path):
    from trexsim.records.export import export_run

    out_dir = live_run[0]
    written = {p.stem: p for p in export_run(out_dir, "csv", tmp_path / "export")}
    assert {"deliveries", "powerflow_rounds", "powerflow_episodes"} <= set(written)
    con = duckdb.connect(str(out_dir / "run.duckdb"), read_only=True)
    rows = con.execute("SELECT count(*) FROM powerflow_rounds").fetchone()[0]
    assert rows > 0 and len(written["powerflow_rounds"].read_text().splitlines()) == rows + 1
