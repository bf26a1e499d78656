"""``trexsim compare CONFIG``: one community three ways on one feeder, side by side.

1. ``grid_only``: no coordination. The config's households with every trader replaced by ``grid_only``
   (batteries on self-consumption, no flexible load moved); a trexsim run, its ledger replayed on the feeder.
2. ``tc``: transactive control: the config with ``market.type: "tc"`` and every trader replaced by
   ``grid_only``, a trexsim run on the in-process fabric (the TC market module prices each horizon from the
   predicted powerflow; price-reactive batteries and flexible loads answer), its ledger replayed.
3. ``alex``: the config as written with ``market.type: "alex"`` (its traders in the ALEX market); a trexsim run,
   its ledger replayed.

Each leg's market type is set here, whatever the config names. All three are trexsim runs of the same
households, profiles and seed, recorded the same way, and their net loads go through the same feeder with the
same code (``powerflow_command``), so the metrics are comparable: peak transformer loading, hours over limits,
lowest voltage, losses, and every household's bill (the run's net cost; under TC imports are billed at the
published TC price, exports at the grid's sell price). Two legs with the same metered net loads are named in
the report's ``warnings`` when their bills are the same too. Writes ``OUT/report.json``, ``OUT/figures/`` and each leg's run folder
(``OUT/grid_only``, ``OUT/tc``, ``OUT/alex``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trexsim.config.schema import SimulationConfig
from trexsim.errors import TrexsimError

MODES = ("grid_only", "tc", "alex")
LABELS = {"grid_only": "no coordination (grid only)", "tc": "transactive control", "alex": "ALEX market"}


@dataclass
class CompareReport:
    out_dir: Path
    report: dict[str, Any]
    figures: list[Path] = field(default_factory=list)


def _metrics(pf: dict) -> dict[str, Any]:
    return {
        "peak_transformer_loading_pct": pf["max_transformer_loading_pct"],
        "hours_over_limit": pf["hours_over_limit"]["any"],
        "hours_transformer_overloaded": pf["hours_over_limit"]["transformer_overload"],
        "min_voltage_pu": pf["min_voltage_pu"],
        "max_voltage_pu": pf["max_voltage_pu"],
        "losses_kwh": pf["losses_kwh"],
        "violations": pf["violations"]["total"],
    }


def _variant(config: SimulationConfig, mode: str) -> SimulationConfig:
    """The config as ``mode`` runs it: its market type, traders and records set for the comparison."""
    data = config.model_dump(mode="json", by_alias=False)
    if mode == "tc":  # one TC market in place of whatever markets the config has (TC runs as the only market)
        first = data["markets"][0] if data.get("markets") else data["market"]
        data["markets"] = None
        data["market"] = {**first, "type": "tc", "id": first.get("id", "alex"), "members": None, "parent": None,
                          "grid": data.get("grid") or first.get("grid")}
        data["grid"] = None
    elif data.get("markets"):
        for market in data["markets"]:
            market["type"] = "alex"
    else:
        data["market"]["type"] = "alex"  # grid only and ALEX bill at the tariff, whatever market the config names
    if (mode == "tc" and data.get("powerflow") and data.get("tc") and data["tc"].get("v_min_pu") is None
            and data["tc"].get("capacity_limits") == "loading_and_voltage"):
        data["tc"]["v_min_pu"] = data["powerflow"]["limits"]["v_min_pu"]  # the limit it keeps, without the section
    data["powerflow"] = None
    if mode != "tc":
        data["tc"] = None
    data["records"]["level"] = "full"
    data["records"]["plots"] = False
    for pid, spec in data["participants"].items():
        if mode in ("grid_only", "tc"):
            spec["trader"] = {"type": "grid_only"}
            if spec.get("storage") and spec["storage"]["policy"] == "external":
                spec["storage"]["policy"] = "self_consumption"
        elif spec["trader"]["type"] == "external":
            raise TrexsimError(f"participants.{pid}.trader: an external trader needs an outside driver (an RL "
                               f"environment); trexsim compare runs the ALEX market with traders that act on their own")
    return SimulationConfig.model_validate(data)


def _config_value(value):
    """A feeder or mapping argument as a config holds it: a path as a string, generator parameters as a dict."""
    import dataclasses

    if isinstance(value, Path):
        return str(value)
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    return value


def _on_feeder(config: SimulationConfig, feeder, mapping) -> SimulationConfig:
    data = config.model_dump(mode="json", by_alias=False)
    data["tc"] = {**(data["tc"] or {}), "feeder": _config_value(feeder), "mapping": _config_value(mapping)}
    return SimulationConfig.model_validate(data)


def _run_and_replay(config: SimulationConfig, out: Path, feeder, mapping, every: int, limits: dict, plots: bool):
    from trexsim.powerflow import powerflow_command
    from trexsim.simulation import Simulation

    result = Simulation(config, out).run(plots=False)
    report = powerflow_command(out, feeder=feeder, mapping=mapping, every=every, plots=plots, detail=False, **limits)
    bills = {pid: float(p["net_cost"]) for pid, p in result.summary["participants"].items()}
    return result, report.summary, bills


def _ledger(run_dir: Path, sql: str) -> dict[str, np.ndarray]:
    import duckdb

    con = duckdb.connect(str(run_dir / "run.duckdb"), read_only=True)
    try:
        return con.execute(sql).fetchnumpy()
    finally:
        con.close()


def _net_meter_wh(run_dir: Path, n: int) -> np.ndarray:
    """(rounds, participants) metered net energy of the run's first episode, + import."""
    d = _ledger(run_dir, "SELECT net_meter_wh FROM deliveries WHERE episode = 0 ORDER BY round, participant")
    return d["net_meter_wh"].reshape(-1, n)


def _tc_extras(run_dir: Path, ids: list[str], grid_only_dir: Path, tc_summary: dict) -> dict[str, Any]:
    """What TC adds to a leg's metrics: who paid what congestion and got what back (the TC market's own
    account, ``summary.json``'s ``tc.congestion``), the highest price, the load moved against grid only."""
    d = _ledger(run_dir, "SELECT load_wh FROM deliveries WHERE episode = 0 ORDER BY round, participant")
    base = _ledger(grid_only_dir, "SELECT load_wh FROM deliveries WHERE episode = 0 ORDER BY round, participant")
    shifted_wh = np.abs(d["load_wh"].astype(np.float64) - base["load_wh"]).sum() / 2.0
    people = tc_summary["congestion"]["participants"]
    return {"congestion_paid": {pid: round(people[pid]["congestion_paid_usd"], 6) for pid in ids},
            "congestion_refund": {pid: round(people[pid]["refund_usd"], 6) for pid in ids},
            "refund": tc_summary["congestion"]["refund"],
            "max_price": tc_summary["max_price"], "mean_price": tc_summary["mean_price"],
            "shifted_load_kwh": float(shifted_wh / 1000.0)}


def compare_command(config: SimulationConfig | str | Path, feeder=None, mapping=None, out: str | Path | None = None,
                    every: int = 1, v_min_pu: float = 0.95, v_max_pu: float = 1.05, max_loading_pct: float = 100.0,
                    plots: bool = True) -> CompareReport:
    """Run grid-only, TC and ALEX on one feeder; write ``out`` (default runs/<study>-compare)."""
    from trexsim.config import load_config

    cfg = load_config(config) if isinstance(config, (str, Path)) else config
    out_dir = Path(out) if out is not None else Path("runs") / f"{cfg.study.name}-compare"
    out_dir.mkdir(parents=True, exist_ok=True)
    if feeder is None:  # the config's own feeder (as the TC market picks it), never a default one in its place
        from trexsim.modules.tc import tc_feeder

        feeder, own_mapping, _, _ = tc_feeder(cfg)
        mapping = mapping if mapping is not None else own_mapping
    from trexsim.powerflow.builtin import builtin_feeder, is_builtin

    if is_builtin(feeder):
        builtin_feeder(feeder, "--feeder")   # an unknown name fails before any run
        feeder_arg = str(feeder)
    else:
        feeder_arg = Path(feeder) if isinstance(feeder, str) else feeder
    for what, path in (("feeder", feeder_arg), ("mapping", mapping)):  # before any run, not after the first
        if isinstance(path, (str, Path)) and not is_builtin(path) and not Path(path).is_file():
            raise TrexsimError(f"--{what} {path}: no such file")
    limits = {"v_min_pu": v_min_pu, "v_max_pu": v_max_pu, "max_loading_pct": max_loading_pct}
    # every variant first: a config one leg cannot run fails before any work
    variants = {mode: _variant(cfg, mode) for mode in MODES}
    # the TC market predicts on the feeder the comparison measures on
    variants["tc"] = _on_feeder(variants["tc"], feeder_arg, mapping)
    tc_section = variants["tc"].tc.model_dump(mode="json", exclude={"feeder", "mapping"})
    warnings = []
    if all(spec.trader.type in ("grid_only", "baseline_agent") for spec in variants["alex"].participants.values()):
        warnings.append("no participant has a trader that places orders: the ALEX column is the grid-only run "
                        "again (give the households traders, e.g. {\"type\": \"fixed_price\"}, to compare ALEX)")
    modes: dict[str, dict] = {}
    folders = {mode: out_dir / mode for mode in MODES}
    ids: list[str] = []
    for mode in MODES:
        result, pf, bills = _run_and_replay(variants[mode], folders[mode], feeder_arg, mapping, every, limits, plots)
        modes[mode] = {**_metrics(pf), "bills": bills}
        ids = list(bills)
        if mode == "tc":
            modes[mode].update(_tc_extras(folders[mode], ids, folders["grid_only"], result.summary["tc"]))
            # a household's bill is what it paid in the ledger less what tc.refund gave back
            modes[mode]["bills"] = {pid: b - modes[mode]["congestion_refund"][pid] for pid, b in bills.items()}
    for m in modes.values():
        m["total_bill"] = float(sum(m["bills"].values()))
    nets = {mode: _net_meter_wh(folders[mode], len(ids)) for mode in MODES}
    for i, a in enumerate(MODES):
        for b in MODES[i + 1:]:
            same_bills = all(abs(modes[a]["bills"][pid] - modes[b]["bills"][pid]) < 1e-9 for pid in ids)
            if same_bills and np.array_equal(nets[a], nets[b]):
                why = ""
                if "tc" in (a, b) and sum(modes["tc"]["congestion_paid"].values()) == 0:
                    why = (f" (the TC market predicted no congestion on this feeder, peak "
                           f"{modes['grid_only']['peak_transformer_loading_pct']:.0f} % without coordination, so its "
                           f"prices stayed at the tariff; a feeder nearer its limits shows what TC does, e.g. "
                           f"--feeder with {{\"transformer_kva\": 100}})")
                warnings.append(f"{LABELS[a]} and {LABELS[b]} gave the same result: the same net energy metered "
                                f"in every round and the same bills, so their columns are one run's{why}")
    report = {
        "study": cfg.study.name, "participants": ids, "every": every, "limits": limits,
        "feeder": pf["feeder"], "modes": modes, "folders": {k: str(v) for k, v in folders.items()},
        "tc": tc_section or "defaults", "warnings": warnings,
        # what each leg's households planned with: TC's tc.forecast; the ALEX traders' own forecasts are their
        # profiles (trexsim's traders forecast perfectly); grid only plans nothing
        "forecasts": {"grid_only": None, "tc": variants["tc"].tc.forecast.model_dump(mode="json"),
                      "alex": {"type": "perfect"}},
    }
    figures = _figures(out_dir, folders, modes, cfg.study.timezone, limits, cfg.study.name) if plots else []
    report["figures"] = [str(f.relative_to(out_dir)) for f in figures]
    (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return CompareReport(out_dir, report, figures)


def _figures(out_dir: Path, folders: dict[str, Path], modes: dict, timezone: str, limits: dict,
             study: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd
    import pyarrow.parquet as pq

    from trexsim.records.plots import _caption

    fig_dir = out_dir / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    colors = {"grid_only": "tab:gray", "tc": "tab:red", "alex": "tab:blue"}
    # line styles and widths that keep coinciding modes visible (grid only and ALEX are often the same line)
    styles = {"grid_only": dict(ls="-", lw=2.6, alpha=0.55), "tc": dict(ls="-", lw=1.0), "alex": dict(ls="--", lw=1.2)}
    rounds = {m: pq.read_table(folders[m] / "powerflow" / "rounds.parquet").to_pandas() for m in MODES}
    figures = []
    for column, ylabel, name, lims, title, caption in (
            ("transformer_loading_pct", "transformer loading (% of rating)", "compare_transformer_loading.png",
             [limits["max_loading_pct"]], "Transformer loading",
             "Loading of the feeder's transformer in each solved round, the three ways on the same feeder; dashed "
             "black: the loading limit."),
            ("v_min_pu", "lowest bus voltage (p.u.)", "compare_min_voltage.png", [limits["v_min_pu"]],
             "Lowest bus voltage", "The lowest voltage of any bus in each solved round; dashed black: the lower limit.")):
        fig, ax = plt.subplots(figsize=(10, 4.4))
        for m in MODES:
            t = pd.DatetimeIndex(rounds[m]["time_utc"]).tz_convert(timezone).tz_localize(None)
            ax.step(t, rounds[m][column], where="post", color=colors[m], label=LABELS[m], **styles[m])
        for lim in lims:
            ax.axhline(lim, color="black", ls="--", lw=1, label="limit")
        ax.set_title(f"{study}: {title.lower()}, grid only vs transactive control vs ALEX")
        ax.set_ylabel(ylabel)
        ax.set_xlabel(f"local time ({timezone})")
        ax.legend(loc="best", fontsize=8)
        fig.autofmt_xdate()
        _caption(fig, caption)
        fig.tight_layout(rect=(0, 0.05, 1, 1))
        figures.append(fig_dir / name)
        fig.savefig(figures[-1], dpi=110)
        plt.close(fig)
    ids = list(modes["grid_only"]["bills"])
    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * len(ids) + 2), 4.4))
    x = np.arange(len(ids))
    for j, m in enumerate(MODES):
        ax.bar(x + (j - 1) * 0.27, [modes[m]["bills"][p] for p in ids], width=0.27, color=colors[m], label=LABELS[m],
               hatch=("", "//", "..")[j], edgecolor="white")
    ax.set_xticks(x, ids, rotation=45, ha="right", fontsize=8)
    ax.axhline(0, color="black", lw=0.6)
    ax.set_title(f"{study}: each household's bill, three ways")
    ax.set_ylabel("bill ($, negative: earned)")
    ax.legend(loc="best", fontsize=8)
    _caption(fig, "Each household's bill over the run: its net cost in the ledger (under TC imports at the published "
                  "TC price, exports at the grid's sell price; else the tariff and the ALEX settlements).")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    figures.append(fig_dir / "compare_bills.png")
    fig.savefig(figures[-1], dpi=110)
    plt.close(fig)
    figures.append(_plot_schedule(fig_dir, folders["tc"], timezone, study))
    return figures


def _plot_schedule(fig_dir: Path, run_dir: Path, timezone: str, study: str) -> Path:
    """The TC run's published schedule against the grid's price, with the loading each schedule predicted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    rows = _ledger(run_dir, "SELECT * FROM tc_schedule WHERE episode = 0 ORDER BY first_round")
    intervals = [dict(zip(rows, values)) for values in zip(*rows.values())]
    starts = [int(iv["start_utc_s"]) for iv in intervals]
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
    ax1.set_title(f"{study}: the published TC price schedule")
    fig.autofmt_xdate()
    fig.tight_layout()
    path = fig_dir / "compare_tc_prices.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


__all__ = ["CompareReport", "compare_command"]
