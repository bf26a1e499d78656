"""Powerflow after the fact: replay a run's metered net loads through a feeder, round by round.

``powerflow_command(run_dir, ...)`` is what ``trexsim powerflow RUN_DIR`` runs. It reads the run's
``deliveries`` (``net_meter_wh`` per participant and round), turns each into an average power
``P = net_meter_wh * 3600 / interval_s`` W (positive = import) with a fixed power factor, drives one
circuit load per participant (or several sharing its power), solves every ``every``-th round and writes
``RUN_DIR/powerflow/``: Parquet tables, ``powerflow_summary.json`` and figures (see docs/powerflow.md).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from trexsim.powerflow.engine import Layout, PowerflowEngine, create_engine
from trexsim.powerflow.builtin import PREFIX, builtin_feeder, builtin_path, is_builtin, round_robin_mapping
from trexsim.powerflow.errors import PowerflowError
from trexsim.powerflow.feeder import FeederSpec, generate_feeder
from trexsim.powerflow.splitphase import SplitPhaseSpec
from trexsim.powerflow.mapping import LoadMapping, default_mapping, read_mapping, resolve_mapping

CHUNK = 1440  # solved rounds held in memory at a time


@dataclass(frozen=True)
class Limits:
    """Operating limits a solved round is checked against."""

    v_min_pu: float = 0.95
    v_max_pu: float = 1.05
    max_loading_pct: float = 100.0

    def validate(self) -> None:
        if not (0 < self.v_min_pu < self.v_max_pu):
            raise PowerflowError(f"voltage limits must satisfy 0 < v_min_pu < v_max_pu, got "
                                 f"{self.v_min_pu} and {self.v_max_pu}")
        if not self.max_loading_pct > 0:
            raise PowerflowError(f"max_loading_pct must be positive, got {self.max_loading_pct}")


@dataclass
class Ledger:
    """One episode of a run's metered net energy, as a (rounds, participants) array."""

    run_dir: Path
    name: str
    episode: int
    interval_s: int
    timezone: str
    participant_ids: list[str]
    rounds: np.ndarray          # round numbers, ascending
    start_utc_s: np.ndarray     # start of each round, Unix seconds
    net_wh: np.ndarray          # (rounds, participants), positive = import
    missing: int = 0            # (round, participant) cells without a delivery row (taken as 0 Wh)


@dataclass
class Report:
    """What ``powerflow_command`` wrote: its folder, the summary (also in powerflow_summary.json), files."""

    out_dir: Path
    summary: dict
    files: dict[str, Path] = field(default_factory=dict)
    figures: list[Path] = field(default_factory=list)

    def __str__(self) -> str:
        s = self.summary
        return (f"powerflow of {s['solved_rounds']} rounds on {s['feeder']['kind']} feeder -> {self.out_dir}: "
                f"voltage {s['min_voltage_pu']:.4f}..{s['max_voltage_pu']:.4f} p.u., transformer up to "
                f"{s['max_transformer_loading_pct']:.1f} %, {s['violations']['total']} violations, "
                f"{s['hours_over_limit']['any']:.2f} h over limits, losses {s['losses_kwh']:.3f} kWh")


# -- the run ---------------------------------------------------------------------------------------------------
def read_ledger(run_dir: str | Path, episode: int | None = None) -> Ledger:
    run_dir = Path(run_dir)
    db = run_dir / "run.duckdb"
    if not db.is_file():
        raise PowerflowError(f"{run_dir}: not a trexsim run folder (no run.duckdb)")
    try:
        con = duckdb.connect(str(db), read_only=True)
    except duckdb.Error as exc:
        raise PowerflowError(f"{db}: cannot open the run database: {exc}") from None
    try:
        meta = con.execute("SELECT name, interval_s, start_utc_s, timezone FROM runs LIMIT 1").fetchone()
        if meta is None:
            raise PowerflowError(f"{db}: the runs table is empty")
        name, interval_s, start_utc_s, timezone = meta
        parts = con.execute("SELECT participant, participant_id FROM participants ORDER BY participant").fetchall()
        if not parts:
            raise PowerflowError(f"{db}: the run has no participants")
        episodes = [e for (e,) in con.execute("SELECT DISTINCT episode FROM deliveries ORDER BY 1").fetchall()]
        if not episodes:
            raise PowerflowError(f"{db}: the run has no deliveries (meter readings) to replay")
        if episode is None:
            episode = episodes[-1]
        elif episode not in episodes:
            raise PowerflowError(f"{db}: no deliveries in episode {episode}; the run has episodes "
                                 f"{', '.join(map(str, episodes))}")
        columns = {c for (c,) in con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'deliveries'").fetchall()}
        # the meter's net energy; from its parts (load - PV + charge - discharge) if a run lacks the column
        net = ("net_meter_wh" if "net_meter_wh" in columns else
               "load_wh - generation_wh + battery_charge_wh - battery_discharge_wh")
        rows = con.execute(f"SELECT round, participant, {net} AS net_meter_wh FROM deliveries WHERE episode = ?",
                           [episode]).fetchnumpy()
        starts = con.execute("SELECT round, start_utc_s FROM rounds WHERE episode = ?", [episode]).fetchnumpy()
    except duckdb.Error as exc:
        raise PowerflowError(f"{db}: cannot read the run: {exc}") from None
    finally:
        con.close()
    index = {int(p): i for i, (p, _) in enumerate(parts)}
    rounds, inverse = np.unique(np.asarray(rows["round"], dtype=np.int64), return_inverse=True)
    col = np.array([index[int(p)] for p in np.asarray(rows["participant"])], dtype=np.int64)
    net = np.zeros((len(rounds), len(parts)))
    seen = np.zeros_like(net, dtype=bool)
    net[inverse, col] = np.asarray(rows["net_meter_wh"], dtype=float)
    seen[inverse, col] = True
    start_by_round = dict(zip(np.asarray(starts["round"]).tolist(), np.asarray(starts["start_utc_s"]).tolist()))
    start = np.array([start_by_round.get(int(r), start_utc_s + int(r) * interval_s) for r in rounds], dtype=np.int64)
    return Ledger(run_dir=run_dir, name=name, episode=int(episode), interval_s=int(interval_s), timezone=timezone,
                  participant_ids=[pid for _, pid in parts], rounds=rounds, start_utc_s=start, net_wh=net,
                  missing=int((~seen).sum()))


def net_powers(net_wh: np.ndarray, interval_s: int, pf_import: float = 0.95, pf_export: float = 1.0,
               scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Average active (W) and reactive (var) power from energy per round.

    Imports draw Q = P tan(acos pf_import) (lagging); exports absorb Q = |P| tan(acos pf_export), so
    both are consumption of reactive power (pf_export = 1: none).
    """
    for name, pf in (("pf_import", pf_import), ("pf_export", pf_export)):
        if not (0 < pf <= 1):
            raise PowerflowError(f"{name} must be in (0, 1], got {pf}")
    p = np.asarray(net_wh, dtype=float) * (3600.0 / interval_s) * scale
    q = np.where(p > 0, p * math.tan(math.acos(pf_import)), -p * math.tan(math.acos(pf_export)))
    return p, q


# -- the replay ------------------------------------------------------------------------------------------------
class _Tables:
    """Per-round detail tables, written in chunks as the replay goes."""

    def __init__(self, out: Path, layout: Layout, bus_ids: np.ndarray, detail: bool):
        self.detail = detail
        self.writers: dict[str, pq.ParquetWriter] = {}
        self.out = out
        self.bus_dict = pa.array([layout.bus_names[b] for b in bus_ids])
        self.element_dict = pa.array(layout.element_names)

    def _write(self, name: str, table: pa.Table) -> None:
        if name not in self.writers:
            self.writers[name] = pq.ParquetWriter(self.out / f"{name}.parquet", table.schema)
        self.writers[name].write_table(table)

    def chunk(self, rounds: np.ndarray, bus_min: np.ndarray, bus_max: np.ndarray, loading: np.ndarray) -> None:
        if not self.detail:
            return
        n, b = bus_min.shape
        self._write("bus_voltages", pa.table({
            "round": np.repeat(rounds, b).astype(np.int32),
            "bus": pa.DictionaryArray.from_arrays(np.tile(np.arange(b, dtype=np.int32), n), self.bus_dict),
            "v_min_pu": bus_min.ravel(), "v_max_pu": bus_max.ravel()}))
        e = loading.shape[1]
        if e:
            self._write("element_loading", pa.table({
                "round": np.repeat(rounds, e).astype(np.int32),
                "element": pa.DictionaryArray.from_arrays(np.tile(np.arange(e, dtype=np.int32), n), self.element_dict),
                "loading_pct": loading.ravel()}))

    def close(self) -> list[str]:
        for w in self.writers.values():
            w.close()
        return list(self.writers)


def _local_times(start_utc_s: np.ndarray, tz: str):
    import pandas as pd

    return pd.to_datetime(start_utc_s, unit="s", utc=True).tz_convert(tz)


def replay_ledger(ledger: Ledger, engine: PowerflowEngine, layout: Layout, mapping: LoadMapping, out_dir: Path, *,
                  every: int = 1, limits: Limits = Limits(), pf_import: float = 0.95, pf_export: float = 1.0,
                  scale: float = 1.0, detail: bool = True, method: str = "auto") -> dict[str, Any]:
    """Solve every ``every``-th round of ``ledger`` on the loaded circuit; write the tables; return the summary
    (without the feeder's description) and the per-round arrays the figures need (key ``_series``)."""
    if not isinstance(every, (int, np.integer)) or every < 1:
        raise PowerflowError(f"every must be a whole number of rounds >= 1, got {every!r}")
    limits.validate()
    n_rounds = len(ledger.rounds)
    solved = np.arange(0, n_rounds, every)
    p_part, q_part = net_powers(ledger.net_wh[solved], ledger.interval_s, pf_import, pf_export, scale)
    p_load, q_load = mapping.expand(p_part), mapping.expand(q_part)   # (solved rounds, driven loads)
    engine.bind_loads(mapping.load_names)
    method_used = engine.series_method(method) if hasattr(engine, "series_method") else "setters"

    weight = np.minimum(every, n_rounds - solved)      # rounds each solved round stands for
    hours = weight * ledger.interval_s / 3600.0
    S = len(solved)

    # checked nodes grouped by bus, for per-bus min/max with reduceat
    node_sel = np.flatnonzero(layout.node_checked)
    order = np.argsort(layout.node_bus[node_sel], kind="stable")
    node_sel = node_sel[order]
    bus_of = layout.node_bus[node_sel]
    starts = np.flatnonzero(np.r_[True, bus_of[1:] != bus_of[:-1]])
    bus_ids = bus_of[starts]
    B = len(bus_ids)
    kinds = np.array(layout.element_kind)
    trafo_cols = np.flatnonzero(kinds == "transformer")
    line_cols = np.flatnonzero(kinds == "line")
    E = len(layout.element_names)
    bus_names = np.array([layout.bus_names[b] for b in bus_ids], dtype=object)
    element_names = np.array(layout.element_names, dtype=object)

    per_round = {k: np.full(S, np.nan) for k in ("source_p_w", "source_q_var", "losses_w", "v_min_pu", "v_max_pu",
                                                  "transformer_loading_pct", "line_loading_pct")}
    v_min_bus = np.zeros(S, dtype=np.int64)
    v_max_bus = np.zeros(S, dtype=np.int64)
    max_line = np.zeros(S, dtype=np.int64)
    n_under = np.zeros(S, dtype=np.int64)
    n_over = np.zeros(S, dtype=np.int64)
    n_overload = np.zeros(S, dtype=np.int64)
    n_trafo_overload = np.zeros(S, dtype=np.int64)
    converged = np.zeros(S, dtype=bool)
    bus_vmin = np.full(B, np.inf)
    bus_vmax = np.full(B, -np.inf)
    bus_under = np.zeros(B)   # hours
    bus_over = np.zeros(B)
    el_max = np.full(E, -np.inf)
    el_sum = np.zeros(E)
    el_hours = np.zeros(E)
    el_over = np.zeros(E)
    viol: dict[str, list] = {"s": [], "kind": [], "obj": [], "value": [], "limit": []}
    tables = _Tables(out_dir, layout, bus_ids, detail)

    t_solve = 0.0
    t0 = time.perf_counter()
    for c0 in range(0, S, CHUNK):
        idx = np.arange(c0, min(S, c0 + CHUNK))
        node_pu = np.full((len(idx), len(layout.node_names)), np.nan)
        loading = np.full((len(idx), E), np.nan)
        ts = time.perf_counter()
        for k, snap in enumerate(engine.solve_series(p_load[idx], q_load[idx], method)):
            s = idx[k]
            converged[s] = snap.converged
            if not snap.converged:
                continue
            node_pu[k] = snap.node_pu
            loading[k] = snap.loading_pct
            per_round["losses_w"][s] = snap.losses_w
            per_round["source_p_w"][s] = snap.source_p_w
            per_round["source_q_var"][s] = snap.source_q_var
        t_solve += time.perf_counter() - ts

        ok = converged[idx]
        v = node_pu[:, node_sel]
        bmin = np.minimum.reduceat(v, starts, axis=1) if B else np.zeros((len(idx), 0))
        bmax = np.maximum.reduceat(v, starts, axis=1) if B else np.zeros((len(idx), 0))
        h = hours[idx]
        if B:
            good = np.where(ok[:, None], bmin, np.inf)
            v_min_bus[idx] = good.argmin(axis=1)
            per_round["v_min_pu"][idx] = np.where(ok, bmin[np.arange(len(idx)), v_min_bus[idx]], np.nan)
            goodx = np.where(ok[:, None], bmax, -np.inf)
            v_max_bus[idx] = goodx.argmax(axis=1)
            per_round["v_max_pu"][idx] = np.where(ok, bmax[np.arange(len(idx)), v_max_bus[idx]], np.nan)
            under = bmin < limits.v_min_pu          # NaN (not converged) compares False
            over = bmax > limits.v_max_pu
            n_under[idx] = under.sum(axis=1)
            n_over[idx] = over.sum(axis=1)
            bus_vmin = np.fmin(bus_vmin, np.fmin.reduce(bmin, axis=0))
            bus_vmax = np.fmax(bus_vmax, np.fmax.reduce(bmax, axis=0))
            bus_under += (under * h[:, None]).sum(axis=0)
            bus_over += (over * h[:, None]).sum(axis=0)
            for kind, mask, values, lim in (("undervoltage", under, bmin, limits.v_min_pu),
                                            ("overvoltage", over, bmax, limits.v_max_pu)):
                rr, bb = np.nonzero(mask)
                viol["s"].append(idx[rr]); viol["kind"].append(np.full(len(rr), kind, dtype=object))
                viol["obj"].append(bus_names[bb])
                viol["value"].append(values[rr, bb]); viol["limit"].append(np.full(len(rr), lim))
        if E:
            if len(trafo_cols):
                per_round["transformer_loading_pct"][idx] = loading[:, trafo_cols].max(axis=1)
            if len(line_cols):
                lc = np.where(ok[:, None], loading[:, line_cols], -np.inf)
                max_line[idx] = line_cols[lc.argmax(axis=1)]
                per_round["line_loading_pct"][idx] = np.where(ok, lc.max(axis=1), np.nan)
            overload = loading > limits.max_loading_pct
            n_overload[idx] = overload.sum(axis=1)
            n_trafo_overload[idx] = overload[:, trafo_cols].sum(axis=1)
            el_max = np.fmax(el_max, np.fmax.reduce(loading, axis=0))
            el_sum += np.nansum(loading * h[:, None], axis=0)
            el_hours += (ok * h).sum()
            el_over += (overload * h[:, None]).sum(axis=0)
            rr, ee = np.nonzero(overload)
            viol["s"].append(idx[rr]); viol["kind"].append(np.full(len(rr), "overload", dtype=object))
            viol["obj"].append(element_names[ee])
            viol["value"].append(loading[rr, ee]); viol["limit"].append(np.full(len(rr), limits.max_loading_pct))
        tables.chunk(ledger.rounds[solved[idx]], bmin, bmax, loading)
    elapsed = time.perf_counter() - t0
    detail_tables = tables.close()

    # -- tables -------------------------------------------------------------------------------------------------
    times = _local_times(ledger.start_utc_s[solved], "UTC")
    rounds_solved = ledger.rounds[solved]
    net_load = p_part.sum(axis=1)
    bus_name = np.array([layout.bus_names[b] for b in bus_ids] or [""], dtype=object)
    el_name = np.array(layout.element_names or [""], dtype=object)
    rounds_table = pa.table({
        "episode": np.full(S, ledger.episode, dtype=np.int32),
        "round": rounds_solved.astype(np.int32),
        "time_utc": pa.array(times.to_numpy(), type=pa.timestamp("s", tz="UTC")),
        "rounds_represented": weight.astype(np.int32),
        "net_load_w": net_load,
        "source_p_w": per_round["source_p_w"],
        "source_q_var": per_round["source_q_var"],
        "losses_w": per_round["losses_w"],
        "v_min_pu": per_round["v_min_pu"],
        "v_min_bus": bus_name[v_min_bus] if B else np.full(S, None),
        "v_max_pu": per_round["v_max_pu"],
        "v_max_bus": bus_name[v_max_bus] if B else np.full(S, None),
        "transformer_loading_pct": per_round["transformer_loading_pct"],
        "line_loading_pct": per_round["line_loading_pct"],
        "max_line": el_name[max_line] if len(line_cols) else np.full(S, None),
        "buses_under": n_under.astype(np.int32),
        "buses_over": n_over.astype(np.int32),
        "elements_over": n_overload.astype(np.int32),
        "converged": converged,
    })
    pq.write_table(rounds_table, out_dir / "rounds.parquet")
    pq.write_table(pa.table({
        "bus": [layout.bus_names[b] for b in bus_ids],
        "kv_base_ln": layout.bus_kv_base[bus_ids],
        "v_min_pu": np.where(np.isfinite(bus_vmin), bus_vmin, np.nan),
        "v_max_pu": np.where(np.isfinite(bus_vmax), bus_vmax, np.nan),
        "hours_under": bus_under, "hours_over": bus_over,
    }), out_dir / "buses.parquet")
    with np.errstate(invalid="ignore", divide="ignore"):
        el_mean = el_sum / el_hours
    pq.write_table(pa.table({
        "element": layout.element_names, "kind": layout.element_kind, "rating_a": layout.element_rating_a,
        "max_loading_pct": np.where(np.isfinite(el_max), el_max, np.nan), "mean_loading_pct": el_mean,
        "hours_over": el_over,
    }), out_dir / "elements.parquet")
    vs = np.concatenate(viol["s"]).astype(np.int64) if viol["s"] else np.zeros(0, dtype=np.int64)
    pq.write_table(pa.table({
        "round": rounds_solved[vs].astype(np.int32),
        "time_utc": pa.array(times.to_numpy()[vs], type=pa.timestamp("s", tz="UTC")),
        "kind": pa.array(np.concatenate(viol["kind"]).tolist() if viol["kind"] else [], type=pa.string()),
        "object": pa.array(np.concatenate(viol["obj"]).tolist() if viol["obj"] else [], type=pa.string()),
        "value": np.concatenate(viol["value"]) if viol["value"] else np.zeros(0),
        "limit": np.concatenate(viol["limit"]) if viol["limit"] else np.zeros(0),
    }).sort_by([("round", "ascending"), ("kind", "ascending")]), out_dir / "violations.parquet")

    # -- summary ------------------------------------------------------------------------------------------------
    def _at(values, fn):
        if not np.any(np.isfinite(values)):
            return None, None
        i = int(fn(values))
        return float(values[i]), i

    vmin, i_vmin = _at(per_round["v_min_pu"], np.nanargmin)
    vmax, i_vmax = _at(per_round["v_max_pu"], np.nanargmax)
    tmax, i_tmax = _at(per_round["transformer_loading_pct"], np.nanargmax)
    lmax, i_lmax = _at(per_round["line_loading_pct"], np.nanargmax)
    local = times.tz_convert(ledger.timezone)
    iso = lambda i: None if i is None else local[i].isoformat()  # noqa: E731
    any_v = (n_under + n_over + n_overload) > 0
    kinds_v = np.concatenate(viol["kind"]) if viol["kind"] else np.zeros(0, dtype=object)
    src = np.nan_to_num(per_round["source_p_w"])
    summary = {
        "run": str(ledger.run_dir), "run_name": ledger.name, "episode": ledger.episode,
        "engine": f"{engine.name} ({engine.version})",
        "interval_s": ledger.interval_s, "timezone": ledger.timezone, "rounds": int(n_rounds), "every": int(every), "solved_rounds": int(S),
        "not_converged": int((~converged).sum()), "missing_readings": ledger.missing,
        "hours": float(hours.sum()),
        "limits": dataclasses.asdict(limits),
        "power_factor": {"import": pf_import, "export": pf_export}, "load_scale": scale,
        "min_voltage_pu": vmin, "min_voltage_bus": None if i_vmin is None else str(bus_name[v_min_bus[i_vmin]]),
        "min_voltage_time": iso(i_vmin),
        "max_voltage_pu": vmax, "max_voltage_bus": None if i_vmax is None else str(bus_name[v_max_bus[i_vmax]]),
        "max_voltage_time": iso(i_vmax),
        "max_transformer_loading_pct": tmax, "max_transformer_loading_time": iso(i_tmax),
        "max_line_loading_pct": lmax, "max_line": None if i_lmax is None else str(el_name[max_line[i_lmax]]),
        "max_line_loading_time": iso(i_lmax),
        "hours_over_limit": {
            "any": float(hours[any_v].sum()),
            "undervoltage": float(hours[n_under > 0].sum()),
            "overvoltage": float(hours[n_over > 0].sum()),
            "overload": float(hours[n_overload > 0].sum()),
            "transformer_overload": float(hours[n_trafo_overload > 0].sum()),
        },
        "violations": {
            "total": int(len(vs)),
            "undervoltage": int((kinds_v == "undervoltage").sum()),
            "overvoltage": int((kinds_v == "overvoltage").sum()),
            "overload": int((kinds_v == "overload").sum()),
            "rounds_with_violations": int(any_v.sum()),
        },
        "losses_kwh": float(np.nansum(per_round["losses_w"] * hours) / 1000.0),
        "imported_kwh": float((np.maximum(src, 0) * hours).sum() / 1000.0),
        "exported_kwh": float((np.maximum(-src, 0) * hours).sum() / 1000.0),
        "buses_checked": int(B), "elements_checked": int(E),
        "timing": {"load_method": method_used, "replay_s": round(elapsed, 4), "solve_loop_s": round(t_solve, 4),
                   "rounds_per_s": round(S / t_solve, 1) if t_solve > 0 else None},
        "tables": ["rounds", "buses", "elements", "violations", *detail_tables],
    }
    summary["_series"] = {"times": times.tz_convert(ledger.timezone).tz_localize(None), "rounds": rounds_solved,
                          "per_round": per_round, "n_under": n_under, "n_over": n_over, "n_overload": n_overload,
                          "transformers": [layout.element_names[c] for c in trafo_cols],
                          "hours": hours}
    return summary


# -- the command -----------------------------------------------------------------------------------------------
def _feeder_and_mapping(feeder, mapping, ledger: Ledger, engine: PowerflowEngine, out: Path):
    """Load the circuit into ``engine``; return (feeder description, layout, resolved mapping)."""
    return load_feeder(feeder, mapping, ledger.participant_ids, engine, out)


def _load_builtin(feeder, mapping, ids: list[str], engine: PowerflowEngine):
    """A built-in feeder (``builtin:<name>``); without a mapping, households go to its loads round robin."""
    spec = builtin_feeder(feeder, "feeder")
    path = builtin_path(feeder, "feeder")
    layout = engine.load_circuit(path)
    if mapping is None:
        table = round_robin_mapping(ids, layout.load_names)
        source = f"mapping (households to the loads of {PREFIX}{spec.name} in order, round robin)"
    else:
        table, source = read_mapping(mapping)
    resolved = resolve_mapping(table, ids, layout.load_names, source, f"{PREFIX}{spec.name}")
    per_load = np.bincount(resolved.load_of_pair, minlength=len(resolved.load_names)) if \
        resolved.load_of_pair is not None else np.ones(len(resolved.load_names), dtype=np.int64)
    info = {"kind": "builtin", "name": spec.name, "title": spec.title, "path": str(path), "loads": len(layout.load_names),
            "loads_driven": len(resolved.load_names), "most_households_per_load": int(per_load.max()),
            "transformer_kva": spec.transformer_kva}
    return info, layout, resolved


def load_feeder(feeder, mapping, participant_ids, engine: PowerflowEngine, out: Path):
    """Load a feeder for these participants into ``engine`` (a generated one is written to ``out/feeder.dss``);
    return (feeder description, layout, resolved mapping). ``feeder``/``mapping`` as in ``powerflow_command``."""
    ids = list(participant_ids)
    if is_builtin(feeder):
        return _load_builtin(feeder, mapping, ids, engine)
    user_file = isinstance(feeder, (str, Path)) and Path(feeder).suffix.lower() not in (".json", ".json5")
    if user_file:
        path = Path(feeder)
        layout = engine.load_circuit(path)
        if mapping is None:
            table, source = default_mapping(ids, layout.load_names, str(path)), "mapping (loads named after participants)"
        else:
            table, source = read_mapping(mapping)
        resolved = resolve_mapping(table, ids, layout.load_names, source, str(path))
        info = {"kind": "file", "path": str(path.resolve()), "loads": len(layout.load_names),
                "loads_driven": len(resolved.load_names)}
        return info, layout, resolved
    if feeder is None:
        spec = FeederSpec()
    elif isinstance(feeder, (FeederSpec, SplitPhaseSpec)):
        spec = feeder
    elif isinstance(feeder, Mapping):
        spec = FeederSpec.from_dict(feeder)
    elif isinstance(feeder, (str, Path)):
        spec = FeederSpec.from_file(feeder)
    else:
        raise PowerflowError(f"feeder {feeder!r}: give an OpenDSS circuit file (.dss), a .json feeder spec, a "
                             f"FeederSpec, or nothing for the generated feeder")
    if spec.houses is not None and spec.houses < len(ids):
        raise PowerflowError(f"feeder.houses: {spec.houses} houses for {len(ids)} participants; a generated "
                             f"feeder needs at least one house per participant")
    gen = generate_feeder(spec, len(ids), out / "feeder.dss")
    layout = engine.load_circuit(gen.path)
    if mapping is None:
        table, source = {p: [gen.load_names[i]] for i, p in enumerate(ids)}, "mapping (participant i -> house i)"
    else:
        table, source = read_mapping(mapping)
    resolved = resolve_mapping(table, ids, layout.load_names, source, str(gen.path))
    return gen.info, layout, resolved


def powerflow_command(
    run_dir: str | Path,
    feeder: str | Path | FeederSpec | Mapping[str, Any] | None = None,
    mapping: str | Path | Mapping[str, Any] | None = None,
    every: int = 1,
    out: str | Path | None = None,
    v_min_pu: float = 0.95,
    v_max_pu: float = 1.05,
    max_loading_pct: float = 100.0,
    pf_import: float = 0.95,
    pf_export: float = 1.0,
    load_scale: float = 1.0,
    episode: int | None = None,
    plots: bool = True,
    detail: bool = True,
    engine: str = "opendss",
    method: str = "auto",
) -> Report:
    """Replay the run in ``run_dir`` through a feeder and write the powerflow report.

    feeder: None (a generated feeder, one house per participant), a ``.json`` file or dict of
      ``FeederSpec`` parameters, a ``FeederSpec``, or a user's ``.dss`` circuit.
    mapping: JSON file or dict, participant id -> load name(s). Optional: a generated feeder maps
      participant i to house i; a .dss circuit without one needs loads named after the participants.
    every: solve every k-th round (each solved round stands for the k rounds from it).
    out: report folder (default RUN_DIR/powerflow).
    v_min_pu, v_max_pu, max_loading_pct: the limits checked.
    pf_import, pf_export: power factors of imports (lagging) and exports (absorbing vars; 1 = none).
    load_scale: multiply every participant's power (what-if studies).
    episode: which episode to replay (default: the last).
    plots: draw the figures; detail: write the per-round per-bus and per-element tables.
    engine: the powerflow engine ('opendss'). method: how OpenDSS is given each round's loads, 'auto'
      (LoadShapes on plain circuits such as the generated feeder, else setters), 'setters' or 'loadshape'.
    """
    if not isinstance(every, (int, np.integer)) or isinstance(every, bool) or every < 1:
        raise PowerflowError(f"every must be a whole number of rounds >= 1, got {every!r}")
    if not (isinstance(load_scale, (int, float)) and math.isfinite(load_scale)):
        raise PowerflowError(f"load_scale must be a finite number, got {load_scale!r}")
    limits = Limits(v_min_pu, v_max_pu, max_loading_pct)
    limits.validate()
    net_powers(np.zeros(1), 60, pf_import, pf_export)  # checks the power factors before any work
    eng = create_engine(engine)  # first: without OpenDSSDirect.py nothing else is worth doing
    ledger = read_ledger(run_dir, episode)
    out_dir = Path(out) if out is not None else Path(run_dir) / "powerflow"
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in ("bus_voltages.parquet", "element_loading.parquet"):
        (out_dir / stale).unlink(missing_ok=True)
    try:
        info, layout, resolved = _feeder_and_mapping(feeder, mapping, ledger, eng, out_dir)
        (out_dir / "mapping.json").write_text(json.dumps(resolved.table, indent=2) + "\n")
        summary = replay_ledger(ledger, eng, layout, resolved, out_dir, every=every, limits=limits, pf_import=pf_import,
                         pf_export=pf_export, scale=load_scale, detail=detail, method=method)
    finally:
        eng.close()
    series = summary.pop("_series")
    summary = {"feeder": info, **summary}
    files = {name: out_dir / f"{name}.parquet" for name in summary["tables"]}
    files["mapping"] = out_dir / "mapping.json"
    if info["kind"] == "generated":
        files["feeder"] = out_dir / "feeder.dss"
    figures: list[Path] = []
    if plots:
        from trexsim.powerflow.report import plot_report

        figures = plot_report(out_dir, series, summary, limits)
    summary["figures"] = [str(f.name) for f in figures]
    files["summary"] = out_dir / "powerflow_summary.json"
    files["summary"].write_text(json.dumps(summary, indent=2) + "\n")
    return Report(out_dir=out_dir, summary=summary, files=files, figures=figures)
