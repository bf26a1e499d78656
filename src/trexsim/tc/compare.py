"""``trexsim compare CONFIG``: one community three ways on one feeder, side by side.

1. ``grid_only``: no coordination. The config's households with every trader replaced by ``grid_only``
   (batteries on self-consumption, no flexible load moved); a trexsim run, its ledger replayed on the feeder.
2. ``tc``: transactive control (``trexsim.tc.cosim.run_tc``): the TC market's price schedule from the
   predicted powerflow, price-reactive batteries and flexible loads; its metered net loads on the feeder.
3. ``alex``: the config as written (its traders in the ALEX market); a trexsim run, its ledger replayed.

All three net loads go through the same feeder with the same code (``replay_ledger``), so the metrics
are comparable: peak transformer loading, hours over limits, lowest voltage, losses, and every household's
bill (grid only and ALEX: the run's net cost; TC: imports at the TC price, exports at the grid's sell price).
Writes ``OUT/report.json``, ``OUT/figures/`` and each mode's folder (``OUT/grid_only``, ``OUT/tc``, ``OUT/alex``).
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


def _variant(config: SimulationConfig, grid_only: bool) -> SimulationConfig:
    data = config.model_dump(mode="json", by_alias=False)
    data["market"]["type"] = "alex"  # grid only and ALEX bill at the tariff, whatever market the config names
    data["powerflow"] = None
    data["tc"] = None
    data["records"]["level"] = "full"
    data["records"]["plots"] = False
    for pid, spec in data["participants"].items():
        if grid_only:
            spec["trader"] = {"type": "grid_only"}
            if spec.get("storage") and spec["storage"]["policy"] == "external":
                spec["storage"]["policy"] = "self_consumption"
        elif spec["trader"]["type"] == "external":
            raise TrexsimError(f"participants.{pid}.trader: an external trader needs an outside driver (an RL "
                               f"environment); trexsim compare runs the ALEX market with traders that act on their own")
    return SimulationConfig.model_validate(data)


def _run_and_replay(config: SimulationConfig, out: Path, feeder, mapping, every: int, limits: dict, plots: bool):
    from trexsim.powerflow import powerflow_command
    from trexsim.simulation import Simulation

    result = Simulation(config, out).run(plots=False)
    report = powerflow_command(out, feeder=feeder, mapping=mapping, every=every, plots=plots, detail=False, **limits)
    bills = {pid: float(p["net_cost"]) for pid, p in result.summary["participants"].items()}
    return report.summary, bills, report.out_dir


def compare_command(config: SimulationConfig | str | Path, feeder=None, mapping=None, out: str | Path | None = None,
                    every: int = 1, v_min_pu: float = 0.95, v_max_pu: float = 1.05, max_loading_pct: float = 100.0,
                    plots: bool = True) -> CompareReport:
    """Run grid-only, TC and ALEX on one feeder; write ``out`` (default runs/<study>-compare)."""
    from trexsim.config import load_config
    from trexsim.tc.cosim import run_tc

    cfg = load_config(config) if isinstance(config, (str, Path)) else config
    out_dir = Path(out) if out is not None else Path("runs") / f"{cfg.study.name}-compare"
    out_dir.mkdir(parents=True, exist_ok=True)
    if feeder is None:  # the config's own feeder (as the TC market picks it), never a default one in its place
        from trexsim.modules.tc import tc_feeder

        feeder, own_mapping, _, _ = tc_feeder(cfg)
        mapping = mapping if mapping is not None else own_mapping
    feeder_arg = Path(feeder) if isinstance(feeder, str) else feeder
    for what, path in (("feeder", feeder_arg), ("mapping", mapping)):  # before any run, not after the first
        if isinstance(path, (str, Path)) and not Path(path).is_file():
            raise TrexsimError(f"--{what} {path}: no such file")
    limits = {"v_min_pu": v_min_pu, "v_max_pu": v_max_pu, "max_loading_pct": max_loading_pct}
    alex_cfg = _variant(cfg, grid_only=False)  # first: a config ALEX cannot run fails before any work
    warnings = []
    if all(spec.trader.type in ("grid_only", "baseline_agent") for spec in alex_cfg.participants.values()):
        warnings.append("no participant has a trader that places orders: the ALEX column is the grid-only run "
                        "again (give the households traders, e.g. {\"type\": \"fixed_price\"}, to compare ALEX)")
    modes: dict[str, dict] = {}
    folders: dict[str, Path] = {}

    pf, bills, folders["grid_only"] = _run_and_replay(_variant(cfg, grid_only=True), out_dir / "grid_only", feeder_arg,
                                                      mapping, every, limits, plots)
    modes["grid_only"] = {**_metrics(pf), "bills": bills}
    tc = run_tc(cfg, feeder=feeder_arg, mapping=mapping, out_dir=out_dir / "tc", every=every, plots=plots, **limits)
    folders["tc"] = tc.out_dir
    modes["tc"] = {**_metrics(tc.powerflow), "bills": {k: float(v) for k, v in tc.summary["bills"].items()},
                   "congestion_paid": tc.summary["congestion_paid"], "max_price": tc.summary["max_price"],
                   "shifted_load_kwh": tc.summary["shifted_load_kwh"]}
    pf, bills, folders["alex"] = _run_and_replay(alex_cfg, out_dir / "alex", feeder_arg, mapping, every, limits, plots)
    modes["alex"] = {**_metrics(pf), "bills": bills}
    for m in modes.values():
        m["total_bill"] = float(sum(m["bills"].values()))
    report = {
        "study": cfg.study.name, "participants": list(modes["grid_only"]["bills"]), "every": every, "limits": limits,
        "feeder": pf["feeder"], "modes": modes, "folders": {k: str(v) for k, v in folders.items()},
        "tc": (cfg.tc.model_dump(mode="json") if cfg.tc else "defaults"), "warnings": warnings,
    }
    figures = _figures(out_dir, folders, modes, cfg.study.timezone, limits) if plots else []
    report["figures"] = [str(f.relative_to(out_dir)) for f in figures]
    (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return CompareReport(out_dir, report, figures)


def _figures(out_dir: Path, folders: dict[str, Path], modes: dict, timezone: str, limits: dict) -> list[Path]:
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
    rounds = {m: pq.read_table(folders[m] / "rounds.parquet").to_pandas() for m in MODES}
    figures = []
    study = out_dir.name
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
    _caption(fig, "Each household's bill over the run: grid only and ALEX the run's net cost, TC its imports at the TC "
                  "price and exports at the grid's sell price.")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    figures.append(fig_dir / "compare_bills.png")
    fig.savefig(figures[-1], dpi=110)
    plt.close(fig)
    return figures


__all__ = ["CompareReport", "compare_command"]
