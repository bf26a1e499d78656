"""The transactive-control (TC) co-simulation: a TC market pricing from predicted powerflow, reactive devices.

Per horizon (``tc.horizon_h``, default a day), before it starts:

1. the TC market forecasts every household's consumption and PV for the horizon (perfect foresight: the
   profiles themselves, as trexsim's traders forecast), lets the devices respond to the current schedule
   (at first the grid's time-of-use price), and solves the feeder's powerflow once per price interval
   (``tc.price_interval_s``, default an hour) on the predicted average net powers;
2. prices each interval as ``grid buy price + congestion(predicted transformer loading, voltage deviation)``
   (``trexsim.tc.pricing``; the formula is in docs/powerflow.md);
3. repeats 1-2 ``tc.iterations`` times, each new schedule damped into the last
   (``schedule = (1 - damping) * schedule + damping * new``), so the herd of devices that all move to the
   same cheap hour is priced before the schedule is published; then publishes it;
4. the households run the horizon against the published schedule: flexible loads move within their windows
   (``trexsim.devices.flexible_load``), batteries charge when it is cheap and discharge when it is dear
   (``trexsim.devices.price_battery``); their net loads are metered.

Bills: imports at the published TC price, exports at the grid's sell price. The metered net loads of the
whole episode are then run through the feeder with the replay's code (``replay_ledger``), so the TC result
is measured exactly as an ALEX or grid-only run's ledger is.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trexsim.config.schema import SimulationConfig, TCConfig
from trexsim.errors import TrexsimError


@dataclass
class TCResult:
    out_dir: Path
    participant_ids: list[str]
    price_per_kwh: np.ndarray        # (rounds,) the published TC buy price
    tou_per_kwh: np.ndarray          # (rounds,) the grid's buy price
    sell_per_kwh: np.ndarray         # (rounds,)
    load_wh: np.ndarray              # (rounds, households) consumption after flexible loads moved
    base_load_wh: np.ndarray         # (rounds, households) consumption as forecast, before moving
    generation_wh: np.ndarray
    charge_wh: np.ndarray
    discharge_wh: np.ndarray
    stored_wh: np.ndarray            # after each round
    net_wh: np.ndarray               # metered net energy, + import
    bill_usd: np.ndarray             # (households,)
    summary: dict[str, Any] = field(default_factory=dict)
    powerflow: dict[str, Any] = field(default_factory=dict)
    figures: list[Path] = field(default_factory=list)


def _rounds(value_s: float, interval_s: int, key: str) -> int:
    n = value_s / interval_s
    if n < 1 or abs(n - round(n)) > 1e-9:
        raise TrexsimError(f"{key}: {value_s:g} s is not a whole number (>= 1) of the study's {interval_s} s rounds")
    return int(round(n))


def _batteries(specs, n: int, interval_s: int):
    from trexsim.devices.battery import BatteryBank

    bank = BatteryBank(n, interval_s)
    active = np.zeros(n, dtype=bool)
    for i, spec in enumerate(specs):
        s = spec.storage
        if s is not None:
            bank.configure(i, s.capacity_wh, s.charge_power_w, s.discharge_power_w, s.efficiency,
                           s.monthly_self_discharge, s.initial_soc, True)
            active[i] = s.policy != "idle"
    return bank, active


def run_tc(config: SimulationConfig, feeder=None, mapping=None, out_dir: str | Path = "runs/tc", *,
           every: int = 1, v_min_pu: float = 0.95, v_max_pu: float = 1.05, max_loading_pct: float = 100.0,
           pf_import: float = 0.95, pf_export: float = 1.0, plots: bool = True) -> TCResult:
    """Run the community of ``config`` (its first episode) under TC on a feeder; write ``out_dir``.

    feeder / mapping: as for ``trexsim powerflow`` (None: a generated feeder, one house per participant).
    TC settings come from ``config.tc`` (defaults if it has none).
    """
    from trexsim.data.profiles import Clock, ProfileSet
    from trexsim.engine.grid import tariff_prices
    from trexsim.powerflow.engine import create_engine
    from trexsim.powerflow.replay import Ledger, Limits, load_feeder, replay_ledger
    from trexsim.tc.pricing import congestion_price
    from trexsim.tc.response import next_schedule, predict_intervals, respond

    tc: TCConfig = config.tc or TCConfig()
    study = config.study
    interval_s = study.interval_s
    R = study.rounds_per_episode
    H = _rounds(tc.horizon_h * 3600, interval_s, "tc.horizon_h")
    P = _rounds(tc.price_interval_s, interval_s, "tc.price_interval_s")
    W = _rounds(tc.flexible_load.window_h * 3600, interval_s, "tc.flexible_load.window_h") if tc.flexible_load else 1
    limits = Limits(v_min_pu, v_max_pu, max_loading_pct)
    limits.validate()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()

    members = config.expanded_participants()
    ids = [pid for pid, _ in members]
    specs = [spec for _, spec in members]
    n = len(ids)
    clock = Clock(study.start_utc_s, interval_s, R, study.timezone)
    profiles = ProfileSet(ids, [s.profile for s in specs], clock, study.seed, chunk_rounds=min(1440, R))
    load_i, gen_i = profiles.energy_wh(0, R)
    base_load = load_i.astype(np.float64)
    gen = gen_i.astype(np.float64)
    starts = study.start_utc_s + np.arange(R, dtype=np.int64) * interval_s
    tou, sell = tariff_prices(starts, study.timezone, config.market.grid)
    bank, active = _batteries(specs, n, interval_s)
    if not tc.batteries:  # batteries that do not react run self-consumption: a flat price gives no signal
        react = np.zeros(n, dtype=bool)
    else:
        react = active

    engine = create_engine("opendss")
    info, layout, resolved = load_feeder(feeder, mapping, ids, engine, out)
    (out / "mapping.json").write_text(json.dumps(resolved.table, indent=2) + "\n")
    engine.bind_loads(resolved.load_names)
    trafo_cols = np.flatnonzero(np.array(layout.element_kind) == "transformer")
    checked = np.flatnonzero(layout.node_checked)

    def respond_h(price, h0, h1, stored):
        r = respond(base_load[h0:h1], gen[h0:h1], price, stored, bank, active, react, tc.flexible_load, W, interval_s)
        return r.load_wh, r.charge_wh, r.discharge_wh, r.stored_after_wh, r.net_wh

    solves = 0

    def predict(net_wh, h0):
        """Predicted (peak transformer loading %, largest |V - 1| p.u.) per price interval of the horizon."""
        nonlocal solves
        solves += -(-net_wh.shape[0] // P)
        return predict_intervals(engine, resolved, net_wh, P, interval_s, pf_import, pf_export, trafo_cols, checked)

    price = np.empty(R)
    congestion = np.empty(R)
    arrays = {k: np.empty((R, n)) for k in ("load", "charge", "discharge", "stored", "net")}
    intervals: list[dict] = []
    stored = bank.stored_wh.copy()
    for h0 in range(0, R, H):
        h1 = min(R, h0 + H)
        base = tou[h0:h1]
        schedule = base.copy()
        for it in range(tc.iterations):
            *_, net = respond_h(schedule, h0, h1, stored)
            loading, dv = predict(net, h0)
            cong = np.repeat(congestion_price(loading, dv, tc.congestion), P)[: h1 - h0]
            schedule = next_schedule(schedule, base, cong, it, tc.damping)
        load, c, d, s_after, net = respond_h(schedule, h0, h1, stored)
        loading_final, dv_final = predict(net, h0)
        price[h0:h1] = schedule
        congestion[h0:h1] = schedule - base
        for key, val in (("load", load), ("charge", c), ("discharge", d), ("stored", s_after), ("net", net)):
            arrays[key][h0:h1] = val
        stored = s_after[-1].copy()
        for j, first in enumerate(range(h0, h1, P)):
            intervals.append({"first_round": first, "start_utc_s": int(starts[first]), "tou_buy_price": float(tou[first]),
                              "congestion": float(congestion[first]), "price": float(price[first]),
                              "sell_price": float(sell[first]), "predicted_transformer_loading_pct": float(loading_final[j]),
                              "predicted_voltage_deviation_pu": float(dv_final[j])})
    t_market = time.perf_counter() - t_start

    net = arrays["net"]
    imp, exp = np.maximum(net, 0.0), np.maximum(-net, 0.0)
    bill = (imp * price[:, None]).sum(axis=0) / 1000.0 - (exp * sell[:, None]).sum(axis=0) / 1000.0
    congestion_paid = (imp * congestion[:, None]).sum(axis=0) / 1000.0

    ledger = Ledger(run_dir=out, name=f"{study.name} (TC)", episode=0, interval_s=interval_s, timezone=study.timezone,
                    participant_ids=ids, rounds=np.arange(R, dtype=np.int64), start_utc_s=starts, net_wh=net)
    pf = replay_ledger(ledger, engine, layout, resolved, out, every=every, limits=limits, pf_import=pf_import,
                       pf_export=pf_export, detail=False)
    engine.close()
    series = pf.pop("_series")
    pf = {"feeder": info, **pf}
    figures: list[Path] = []
    if plots:
        from trexsim.powerflow.report import plot_report

        figures = plot_report(out, series, pf, limits)
        figures.append(_plot_schedule(out, intervals, study.timezone))
    pf["figures"] = [f.name for f in figures]
    (out / "powerflow_summary.json").write_text(json.dumps(pf, indent=2) + "\n")

    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(intervals), out / "prices.parquet")
    shifted = np.abs(arrays["load"] - base_load).sum() / 2.0
    summary = {
        "study": study.name, "participants": n, "rounds": R, "interval_s": interval_s,
        "tc": tc.model_dump(mode="json"),
        "horizons": -(-R // H), "powerflow_solves_for_prices": solves, "market_s": round(t_market, 3),
        "mean_price": float(price.mean()), "max_price": float(price.max()), "max_congestion": float(congestion.max()),
        "shifted_load_kwh": float(shifted / 1000.0),
        "battery_charge_kwh": float(arrays["charge"].sum() / 1000.0),
        "battery_discharge_kwh": float(arrays["discharge"].sum() / 1000.0),
        "bills": {pid: round(float(b), 6) for pid, b in zip(ids, bill)},
        "congestion_paid": {pid: round(float(b), 6) for pid, b in zip(ids, congestion_paid)},
        "total_bill": float(bill.sum()),
        "powerflow": {k: pf[k] for k in ("max_transformer_loading_pct", "min_voltage_pu", "max_voltage_pu",
                                         "losses_kwh", "hours_over_limit", "violations")},
    }
    (out / "tc_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return TCResult(out_dir=out, participant_ids=ids, price_per_kwh=price, tou_per_kwh=tou, sell_per_kwh=sell,
                    load_wh=arrays["load"], base_load_wh=base_load, generation_wh=gen, charge_wh=arrays["charge"],
                    discharge_wh=arrays["discharge"], stored_wh=arrays["stored"], net_wh=net, bill_usd=bill,
                    summary=summary, powerflow=pf, figures=figures)


def _plot_schedule(out: Path, intervals: list[dict], timezone: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    starts = [iv["start_utc_s"] for iv in intervals]
    starts.append(starts[-1] + (starts[-1] - starts[-2] if len(starts) > 1 else 3600))  # the last interval's end
    t = pd.to_datetime(starts, unit="s", utc=True).tz_convert(timezone).tz_localize(None)

    def series(key):  # the last value repeated at the end, so the last step is drawn
        values = [iv[key] for iv in intervals]
        return values + values[-1:]

    fig, ax1 = plt.subplots(figsize=(10, 4))
    ax1.step(t, series("tou_buy_price"), where="post", color="tab:gray", label="grid buy price")
    ax1.step(t, series("price"), where="post", color="tab:red", label="TC price")
    ax1.set_ylabel("$/kWh")
    ax1.set_xlabel(f"local time ({timezone})")
    ax2 = ax1.twinx()
    ax2.step(t, series("predicted_transformer_loading_pct"), where="post", color="tab:purple",
             lw=0.8, ls="--", label="predicted transformer loading (published schedule)")
    ax2.set_ylabel("% of rating")
    lines = ax1.get_legend_handles_labels()
    more = ax2.get_legend_handles_labels()
    ax1.legend(lines[0] + more[0], lines[1] + more[1], loc="best", fontsize=8)
    ax1.set_title("TC price schedule")
    fig.autofmt_xdate()
    fig.tight_layout()
    path = out / "figures" / "tc_prices.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


__all__ = ["TCResult", "run_tc"]
