"""Powerflow on real OpenDSS: a case solved by hand, the generated feeder, replay of a run, mappings, errors."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

pytest.importorskip("opendssdirect")

from trexsim import TrexsimError, parse_config  # noqa: E402
from trexsim.powerflow import (  # noqa: E402
    FeederSpec,
    PowerflowError,
    create_engine,
    feeder_text,
    generate_feeder,
    net_powers,
    powerflow_command,
    read_mapping,
    resolve_mapping,
)

V_LN = 400 / math.sqrt(3)


# -- a case computed by hand ------------------------------------------------------------------------------------
HAND = """
clear
new circuit.hand basekv=0.4 pu=1 phases=3 bus1=grid r1=1e-7 x1=1e-7 r0=1e-7 x0=1e-7
new line.cable phases=3 bus1=grid bus2=house r1=0.1 x1=0.05 r0=0.1 x0=0.05 c1=0 c0=0 length=1 units=km normamps=100
new load.house phases=3 bus1=house kv=0.4 kw=0 kvar=0
set voltagebases=[0.4]
calcvoltagebases
"""


def _exact_v2(p_w: float, q_var: float, z: complex) -> complex:
    """Receiving-end phase voltage of a constant-power load behind z: V2 = V1 - z * conj(S / V2), iterated."""
    s = complex(p_w, q_var) / 3
    v2 = complex(V_LN)
    for _ in range(100):
        v2 = V_LN - z * (s / v2).conjugate()
    return v2


@pytest.mark.parametrize("pf", [1.0, 0.95])
def test_one_house_on_a_known_impedance(tmp_path, pf):
    path = tmp_path / "hand.dss"
    path.write_text(HAND)
    engine = create_engine()
    layout = engine.load_circuit(path)
    assert layout.bus_names == ["grid", "house"] and layout.load_names == ["house"]
    engine.bind_loads(["house"])
    p = 30_000.0
    q = p * math.tan(math.acos(pf))
    engine.set_loads(np.array([p]), np.array([q]))
    assert engine.solve()
    snap = engine.results()

    z = complex(0.1, 0.05)  # ohm per phase
    v2 = _exact_v2(p, q, z)
    house = snap.node_pu[layout.node_bus == 1]
    assert np.allclose(house, abs(v2) / V_LN, atol=1e-6)
    # by hand: I = S / (3 V), drop ~ I (R cos phi + X sin phi), losses = 3 I^2 R
    current = abs(complex(p, q)) / (3 * abs(v2))
    drop_v = V_LN * (1 - house.mean())
    phi = math.acos(pf)
    assert drop_v == pytest.approx(current * (0.1 * math.cos(phi) + 0.05 * math.sin(phi)), rel=0.02)
    # by hand: V2 ~ 226.5 V; pf 1: I = 30 kW / (3 x 226.5 V) = 44.2 A, drop 4.42 V;
    # pf 0.95: I = 31.6 kVA / (3 x 225.8 V) = 46.6 A, drop 46.6 x (0.1 x 0.95 + 0.05 x 0.312) = 5.16 V
    assert drop_v == pytest.approx(4.42 if pf == 1 else 5.16, abs=0.02)
    assert snap.losses_w == pytest.approx(3 * current ** 2 * 0.1, rel=1e-3)
    assert snap.source_p_w == pytest.approx(p + snap.losses_w, abs=0.1)
    assert snap.loading_pct[0] == pytest.approx(current, rel=1e-3)  # normamps = 100 A


# -- the generated feeder ---------------------------------------------------------------------------------------
def test_generated_feeder_structure(tmp_path):
    gen = generate_feeder(FeederSpec(houses_per_lateral=10), 23, tmp_path / "feeder.dss")
    text = gen.path.read_text()
    assert gen.houses == 23 and gen.laterals == 3 and gen.transformer.kva == 100  # 23 x 4 kVA -> 100 kVA
    assert text.count("new load.") == 23 and text.count("new transformer.") == 1
    engine = create_engine()
    layout = engine.load_circuit(gen.path)
    assert sorted(layout.load_names) == gen.load_names == [f"house_{k:03d}" for k in range(1, 24)]
    assert layout.element_kind.count("transformer") == 1 and "Transformer.tx" in layout.element_names
    assert layout.element_kind.count("line") == 46                    # a main section and a service cable per house
    assert len(layout.bus_names) == 2 + 23 + 23                       # mv, lv, junctions, houses
    assert {b for b in layout.bus_names if b.startswith("j")} >= {"j1_10", "j2_10", "j3_3"}
    assert "j3_4" not in layout.bus_names
    kv = dict(zip(layout.bus_names, layout.bus_kv_base))
    assert kv["mv"] == pytest.approx(10 / math.sqrt(3)) and kv["h001"] == pytest.approx(0.4 / math.sqrt(3))

    # the same 2 kW in every house: voltage falls along each lateral; the transformer carries them all
    engine.bind_loads(gen.load_names)
    engine.set_loads(np.full(23, 2000.0), np.zeros(23))
    assert engine.solve()
    snap = engine.results()
    v = {layout.bus_names[b]: snap.node_pu[layout.node_bus == b].mean() for b in range(len(layout.bus_names))}
    lateral_1 = [v[f"h{k:03d}"] for k in range(1, 11)]
    assert all(a > b for a, b in zip(lateral_1, lateral_1[1:]))
    assert v["mv"] > v["lv"] > v["j1_1"] > v["h001"]
    trafo = snap.loading_pct[layout.element_names.index("Transformer.tx")]
    assert trafo == pytest.approx(100 * (46 + snap.losses_w / 1000) / 100, rel=0.02)  # ~46 kW on 100 kVA

    # single-phase houses take phases a, b, c in turn
    text1, names1, *_ = feeder_text(FeederSpec(house_phases=1), 4)
    assert "bus1=h001.1 " in text1 and "bus1=h002.2 " in text1 and "bus1=h004.1 " in text1


def test_feeder_spec_errors(tmp_path):
    with pytest.raises(PowerflowError, match="unknown feeder parameter.*houses_per_feeder"):
        FeederSpec.from_dict({"houses_per_feeder": 3})
    with pytest.raises(PowerflowError, match="main_cable: unknown cable"):
        FeederSpec.from_dict({"main_cable": "copper 4x10"})
    with pytest.raises(PowerflowError, match="transformer_kva: must be one of"):
        FeederSpec.from_dict({"transformer_kva": 333})
    bad = tmp_path / "spec.json"
    bad.write_text("{houses_per_lateral: }")
    with pytest.raises(PowerflowError, match="spec.json: not a JSON feeder spec"):
        FeederSpec.from_file(bad)


# -- replay of a trexsim run ------------------------------------------------------------------------------------
def _config(households: dict[str, tuple[int, int]], rounds: int = 30) -> dict:
    return {
        "study": {"name": "pf", "start_datetime": "2021-07-01 00:00:00", "timezone": "America/Edmonton",
                  "days": rounds * 60 / 86400, "episodes": 1, "seed": 7, "interval_s": 60},
        "market": {"type": "alex", "settlement": "average_price", "close_steps": 1,
                   "grid": {"buy_price": 0.1449, "sell_price": 0.069}},
        "participants": {pid: {"profile": {"type": "flat", "load_w": load, "generation_w": gen},
                               "trader": {"type": "fixed_price", "bid_price": 0.12, "ask_price": 0.10}}
                         for pid, (load, gen) in households.items()},
    }


# H1 imports 3 kW, H2 6 kW, H3 exports 30 kW, H4 nothing (multiples of 60 W: whole Wh per round)
HOUSES = {"H1": (3000, 0), "H2": (6000, 0), "H3": (0, 30000), "H4": (0, 0)}


def _run(tmp_path_factory, houses, rounds):
    from trexsim.simulation import Simulation

    out = tmp_path_factory.mktemp("pf") / "run"
    Simulation(parse_config(_config(houses, rounds)), out).run(plots=False)
    return out


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return _run(tmp_path_factory, HOUSES, 30)


@pytest.fixture(scope="module")
def importers(tmp_path_factory):
    """Four houses importing 6 kW each, 10 rounds."""
    return _run(tmp_path_factory, {f"H{i}": (6000, 0) for i in range(1, 5)}, 10)


def _buses(report) -> dict[str, tuple[float, float]]:
    t = pq.read_table(report.out_dir / "buses.parquet").to_pandas()
    return {b: (lo, hi) for b, lo, hi in zip(t["bus"], t["v_min_pu"], t["v_max_pu"])}


def test_replay_import_lowers_and_export_raises_voltage(run_dir):
    # each house on its own lateral: same cable length, so only its own power differs
    report = powerflow_command(run_dir, feeder={"houses_per_lateral": 1})
    s = report.summary
    assert s["solved_rounds"] == 30 and s["not_converged"] == 0 and s["feeder"]["laterals"] == 4
    rounds = pq.read_table(report.out_dir / "rounds.parquet").to_pandas()
    assert np.allclose(rounds["net_load_w"], 3000 + 6000 - 30000)  # P = net_meter_wh * 3600 / interval_s
    v = _buses(report)
    lv = v["lv"][0]
    assert v["h002"][1] < v["h001"][1] < lv                   # more import, lower voltage
    assert v["h003"][0] > lv and v["h003"][0] > 1.0           # a large export raises it above 1 p.u.
    assert v["h004"][0] == pytest.approx(lv, abs=1e-6)        # no power, no drop
    assert s["max_voltage_bus"] == "h003"
    assert s["violations"]["total"] == 0 and s["hours_over_limit"]["any"] == 0
    # energy: what the source delivers is the houses' net power plus the losses
    assert np.allclose(rounds["source_p_w"], rounds["net_load_w"] + rounds["losses_w"], atol=0.5)
    assert s["losses_kwh"] == pytest.approx(rounds["losses_w"].sum() / 60 / 1000)
    # files
    assert json.loads((report.out_dir / "powerflow_summary.json").read_text())["solved_rounds"] == 30
    assert {p.name for p in report.figures} == {"voltage_envelope.png", "transformer_loading.png", "violations.png"}
    assert all(p.stat().st_size > 10_000 for p in report.figures)
    assert pq.read_metadata(report.out_dir / "bus_voltages.parquet").num_rows == 30 * s["buses_checked"]
    assert json.loads((report.out_dir / "mapping.json").read_text())["H3"] == ["house_003"]
    assert (report.out_dir / "feeder.dss").read_text().count("new load.") == 4


def test_scaled_up_loads_violate_limits(importers, run_dir, tmp_path):
    # 4 x 6 kW on the default feeder (one lateral, 100 kVA): within limits; 6 times that is not
    base = powerflow_command(importers, out=tmp_path / "x1", plots=False).summary
    assert base["violations"]["total"] == 0 and 0.98 < base["min_voltage_pu"] < 0.995
    report = powerflow_command(importers, load_scale=6, out=tmp_path / "x6", plots=False, detail=False)
    s = report.summary
    assert s["min_voltage_pu"] < 0.95 and s["min_voltage_bus"] == "h004"         # the end of the lateral
    assert s["violations"]["undervoltage"] > 0 and s["max_transformer_loading_pct"] > 150
    assert s["hours_over_limit"]["transformer_overload"] == pytest.approx(10 / 60)  # every round
    viol = pq.read_table(report.out_dir / "violations.parquet").to_pandas()
    assert set(viol["kind"]) == {"undervoltage", "overload"} and set(viol.loc[viol["kind"] == "overload", "object"]) == {"Transformer.tx"}
    assert (viol.loc[viol["kind"] == "overload", "value"] > 100).all()
    assert (viol.loc[viol["kind"] == "undervoltage", "value"] < 0.95).all()
    assert not (tmp_path / "x6" / "bus_voltages.parquet").exists()
    # exports scaled up on long laterals: overvoltage at the exporting house
    export = powerflow_command(run_dir, feeder={"houses_per_lateral": 1, "spacing_m": 250}, load_scale=5,
                               out=tmp_path / "x5", plots=False, detail=False).summary
    assert export["violations"]["overvoltage"] > 0 and export["max_voltage_bus"] == "h003"
    assert export["max_voltage_pu"] > 1.05
    # the limits are the user's: a tighter band flags the unscaled exporter
    tight = powerflow_command(run_dir, feeder={"houses_per_lateral": 1}, v_max_pu=1.001, out=tmp_path / "tight",
                              plots=False, detail=False)
    assert tight.summary["violations"]["overvoltage"] > 0 and tight.summary["limits"]["v_max_pu"] == 1.001


def test_every_k_rounds(run_dir, tmp_path):
    report = powerflow_command(run_dir, every=7, out=tmp_path / "k7", plots=False)
    rounds = pq.read_table(report.out_dir / "rounds.parquet").to_pandas()
    assert rounds["round"].tolist() == [0, 7, 14, 21, 28]
    assert rounds["rounds_represented"].tolist() == [7, 7, 7, 7, 2]
    assert report.summary["hours"] == pytest.approx(0.5)
    with pytest.raises(PowerflowError, match="every must be a whole number"):
        powerflow_command(run_dir, every=0, out=tmp_path / "k0")


def test_load_methods_agree(run_dir, tmp_path, monkeypatch):
    import trexsim.powerflow.replay as replay_module

    monkeypatch.setattr(replay_module, "CHUNK", 7)  # several chunks: the LoadShapes are reused
    tables = {}
    for method in ("setters", "loadshape"):
        report = powerflow_command(run_dir, every=2, method=method, out=tmp_path / method, plots=False)
        assert report.summary["timing"]["load_method"] == method
        tables[method] = pq.read_table(report.out_dir / "rounds.parquet").to_pandas()
    a, b = tables["setters"], tables["loadshape"]
    assert len(a) == 15
    for col in ("v_min_pu", "v_max_pu", "losses_w", "source_p_w", "transformer_loading_pct"):
        assert np.allclose(a[col], b[col], rtol=1e-6, atol=1e-6), col  # solver tolerance 1e-6
    with pytest.raises(PowerflowError, match="unknown load method"):
        powerflow_command(run_dir, method="fast", out=tmp_path / "bad")


def test_user_circuit_with_mapping(run_dir, tmp_path):
    # the generated feeder as a user's circuit, loads renamed, plus a static 20 kW workshop on lateral 1
    text, names, *_ = feeder_text(FeederSpec(houses_per_lateral=1), 4)
    for k, name in enumerate(names):
        text = text.replace(f"new load.{name} ", f"new load.customer_{k + 1} ")
    text += "new load.workshop phases=3 bus1=j1_1 kv=0.4 kw=20 pf=1 model=1\n"
    circuit = tmp_path / "my_feeder.dss"
    circuit.write_text(text)
    mapping = tmp_path / "mapping.json"
    mapping.write_text('{"H1": "customer_1", "H2": "Load.CUSTOMER_2", // comments allowed\n'
                       ' "H3": ["customer_3"], "H4": "customer_4"}')
    report = powerflow_command(run_dir, feeder=circuit, mapping=mapping, out=tmp_path / "user", plots=False)
    assert report.summary["feeder"] == {"kind": "file", "path": str(circuit.resolve()), "loads": 5, "loads_driven": 4}
    generated = powerflow_command(run_dir, feeder={"houses_per_lateral": 1}, out=tmp_path / "gen", plots=False)
    user_v, gen_v = _buses(report), _buses(generated)
    assert user_v["h001"][0] < gen_v["h001"][0] - 1e-3        # the static workshop load stays, on H1's lateral
    assert user_v["lv"][0] < gen_v["lv"][0]                   # ... and pulls the busbar down
    assert user_v["lv"][0] - user_v["h002"][0] == pytest.approx(gen_v["lv"][0] - gen_v["h002"][0], abs=1e-4)
    rounds = pq.read_table(report.out_dir / "rounds.parquet").to_pandas()
    assert np.allclose(rounds["source_p_w"], -21000 + 20000 + rounds["losses_w"], atol=0.5)

    # a participant split over two loads shares its power equally
    split = {"H1": ["customer_1", "workshop"], "H2": "customer_2", "H3": "customer_3", "H4": "customer_4"}
    report = powerflow_command(run_dir, feeder=circuit, mapping=split, out=tmp_path / "split", plots=False)
    rounds = pq.read_table(report.out_dir / "rounds.parquet").to_pandas()
    assert np.allclose(rounds["source_p_w"], -21000 + rounds["losses_w"], atol=0.5)  # the workshop now follows H1

    # an undriven load with a shape of its own: snapshots (setters) keep it at its nominal 20 kW
    shaped = circuit.with_name("shaped.dss")
    shaped.write_text(text.replace("new load.workshop", "new loadshape.ws npts=2 interval=1 mult=(0.5 0.5)\n"
                                                        "new load.workshop daily=ws yearly=ws"))
    report = powerflow_command(run_dir, feeder=shaped, mapping=mapping, out=tmp_path / "shaped", plots=False)
    assert report.summary["timing"]["load_method"] == "setters"
    rounds = pq.read_table(report.out_dir / "rounds.parquet").to_pandas()
    assert np.allclose(rounds["source_p_w"], -21000 + 20000 + rounds["losses_w"], atol=0.5)


def test_mapping_errors(run_dir, tmp_path):
    ids = ["H1", "H2", "H3"]
    loads = ["a", "b", "c", "static"]
    with pytest.raises(PowerflowError, match=r"participants without a load: H3"):
        resolve_mapping({"H1": ["a"], "H2": ["b"]}, ids, loads)
    with pytest.raises(PowerflowError, match=r"loads not in the circuit: 'zz' \(for H2\)"):
        resolve_mapping({"H1": ["a"], "H2": ["zz"], "H3": ["c"]}, ids, loads)
    with pytest.raises(PowerflowError, match=r"participants not in the run: H9"):
        resolve_mapping({"H1": ["a"], "H2": ["b"], "H3": ["c"], "H9": ["static"]}, ids, loads)
    with pytest.raises(PowerflowError, match=r"H1: load 'a' is named twice"):
        resolve_mapping({"H1": ["a", "Load.A"], "H2": ["b"], "H3": ["c"]}, ids, loads)
    # several households on one spot load: the load carries the sum of their powers
    shared = resolve_mapping({"H1": ["a"], "H2": ["a", "b"], "H3": ["c"]}, ids, loads)
    assert shared.load_names == ["a", "b", "c"]
    p = np.array([[1000.0, 400.0, 50.0]])   # W per participant
    assert shared.expand(p).tolist() == [[1000.0 + 200.0, 200.0, 50.0]]
    one = resolve_mapping({"H1": ["a"], "H2": ["b"], "H3": ["c"]}, ids, loads)
    assert one.load_of_pair is None and one.expand(p).tolist() == p.tolist()
    with pytest.raises(PowerflowError, match=r"H2: must be a load name or a non-empty list"):
        read_mapping({"H1": "a", "H2": 5})
    with pytest.raises(PowerflowError, match="no such mapping file"):
        read_mapping(tmp_path / "nope.json")
    (tmp_path / "broken.json").write_text('{"H1": "a",,}')
    with pytest.raises(PowerflowError, match="broken.json: not valid JSON"):
        read_mapping(tmp_path / "broken.json")

    # end to end: the message names the file, the participant and the load
    text, *_ = feeder_text(FeederSpec(), 4)
    circuit = tmp_path / "c.dss"
    circuit.write_text(text)
    (tmp_path / "m.json").write_text('{"H1": "house_001", "H2": "house_002", "H3": "house_03", "H4": "house_004"}')
    with pytest.raises(PowerflowError, match=r"m\.json: loads not in .*c\.dss: 'house_03' \(for H3\); its loads are"):
        powerflow_command(run_dir, feeder=circuit, mapping=tmp_path / "m.json", out=tmp_path / "o", plots=False)
    with pytest.raises(PowerflowError, match=r"give a mapping file .* participant\(s\) H1, H2, H3, H4"):
        powerflow_command(run_dir, feeder=circuit, out=tmp_path / "o", plots=False)
    with pytest.raises(PowerflowError, match="4 participants"):
        powerflow_command(run_dir, feeder={"houses": 3}, out=tmp_path / "o", plots=False)


def test_bad_circuits(run_dir, tmp_path):
    cases = {
        "missing.dss": (None, "no such circuit file"),
        "syntax.dss": ("new circuit.x basekv=0.4\nnew line.l bus1=a bus2=b length=abc\n", "could not read the circuit"),
        "noloads.dss": ("new circuit.x basekv=0.4 bus1=a\nnew line.l bus1=a bus2=b\nset voltagebases=[0.4]\ncalcv\n",
                        "has no Load elements"),
        "nocircuit.dss": ("! nothing here\n", "defines no circuit"),
    }
    for name, (text, message) in cases.items():
        path = tmp_path / name
        if text is not None:
            path.write_text(text)
        with pytest.raises(PowerflowError, match=message) as info:
            powerflow_command(run_dir, feeder=path, mapping={}, out=tmp_path / "o", plots=False)
        assert name in str(info.value)
    with pytest.raises(PowerflowError, match="not a trexsim run folder"):
        powerflow_command(tmp_path, out=tmp_path / "o")
    with pytest.raises(PowerflowError, match="no deliveries in episode 3"):
        powerflow_command(run_dir, episode=3, out=tmp_path / "o")
    with pytest.raises(PowerflowError, match="v_min_pu < v_max_pu"):
        powerflow_command(run_dir, v_min_pu=1.1, out=tmp_path / "o")


def test_power_factor():
    p, q = net_powers(np.array([[60, -60, 0]]), 60, pf_import=0.95, pf_export=0.9)
    assert p.tolist() == [[3600, -3600, 0]]
    assert q[0, 0] == pytest.approx(3600 * math.tan(math.acos(0.95)))       # lagging import
    assert q[0, 1] == pytest.approx(3600 * math.tan(math.acos(0.9)))        # exports absorb vars
    assert q[0, 2] == 0
    with pytest.raises(PowerflowError, match="pf_import must be in"):
        net_powers(p, 60, pf_import=1.2)


# -- without OpenDSSDirect.py -----------------------------------------------------------------------------------
def test_missing_opendss_is_a_clear_error(run_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "opendssdirect", None)  # makes `import opendssdirect` fail
    with pytest.raises(TrexsimError, match=r"install trexsim\[powerflow\]"):
        powerflow_command(run_dir, out=tmp_path / "o")


def test_core_does_not_import_opendss():
    code = ("import sys, trexsim, trexsim.simulation, trexsim.cli, trexsim.powerflow; "
            "print('opendssdirect' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# -- the North American split-phase feeder ---------------------------------------------------------------------
def test_split_phase_feeder(tmp_path, run_dir):
    from trexsim.powerflow import SplitPhaseSpec

    spec = FeederSpec.from_dict({"layout": "split_phase", "houses_per_transformer": 5})
    assert isinstance(spec, SplitPhaseSpec)
    gen = generate_feeder(spec, 12, tmp_path / "sp.dss")
    text = gen.path.read_text()
    assert gen.laterals == 3 and gen.info["service_transformers"] == 3 and gen.transformer is None
    # service transformers on phases a, b, c in turn; houses are 240 V loads between the two hot legs
    assert "buses=[p1.1 s1.1.0 s1.0.2]" in text and "buses=[p2.2 " in text and "buses=[p3.3 " in text
    assert "new load.house_001 phases=1 bus1=h001.1.2 kv=0.24" in text
    engine = create_engine()
    layout = engine.load_circuit(gen.path)
    kv = dict(zip(layout.bus_names, layout.bus_kv_base))
    assert kv["h001"] == pytest.approx(0.120, abs=2e-4) and kv["p1"] == pytest.approx(25 / math.sqrt(3))
    assert layout.element_kind.count("transformer") == 3

    # 5 kW at pf 0.95 in each house of the first transformer, nothing elsewhere
    engine.bind_loads(gen.load_names)
    p = np.zeros(12)
    p[:5] = 5000.0
    engine.set_loads(p, p * math.tan(math.acos(0.95)))
    assert engine.solve()
    snap = engine.results()
    loading = dict(zip(layout.element_names, snap.loading_pct))
    # by hand: 5 x 5.26 kVA = 26.3 kVA on 50 kVA -> 52.6 %, plus the secondaries' losses
    assert loading["Transformer.st1"] == pytest.approx(52.6, abs=1.5)
    assert loading["Transformer.st2"] < 1.0
    # each secondary carries 5 kW / (0.95 x 240 V x ~0.99) = 22.2 A of its 150 A rating -> ~14.8 %
    assert loading["Line.secondary_001"] == pytest.approx(14.8, abs=0.4)
    v = {n: x for n, x in zip(layout.node_names, snap.node_pu)}
    assert v["h001.1"] == pytest.approx(v["h001.2"], abs=1e-4)          # a 240 V load loads both legs alike
    assert v["h001.1"] < v["s1.1"] < 1.0 and v["h006.1"] > v["h001.1"]  # drop in the transformer and triplex
    assert snap.source_p_w == pytest.approx(25_000 + snap.losses_w, abs=1.0)

    # a run's replay on it
    report = powerflow_command(run_dir, feeder={"layout": "split_phase"}, out=tmp_path / "r", plots=False)
    assert report.summary["feeder"]["layout"] == "split_phase" and report.summary["not_converged"] == 0
    with pytest.raises(PowerflowError, match="feeder.layout: must be 'european'"):
        FeederSpec.from_dict({"layout": "radial"})
    with pytest.raises(PowerflowError, match="unknown split-phase feeder parameter.*spacing_m"):
        FeederSpec.from_dict({"layout": "split_phase", "spacing_m": 30})
