"""Figures of a run for papers, drawn from its database: ``trexsim plot RUN_DIR`` redraws them.

Each has a title naming the run, axes with units and a caption line under it saying what it shows;
lines that may coincide differ in style (solid, dashed, dotted, markers), not only in colour. For
looking at a run, the interactive ``report.html`` (:mod:`trexsim.records.report`) shows more.

- ``prices.png``: settlement prices per delivery round against the grid's buy and sell prices
- ``energy.png``: the community's total energy traded in the market and with the grid, per round
- ``battery_soc.png``: batteries' state of charge
- ``bills.png``: each participant's bill against its grid-only bill
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

MAX_POINTS = 5000  # longer series are averaged into this many bins so figures stay readable


def _matplotlib():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _times(con, rounds: pd.Series) -> tuple[pd.DatetimeIndex | pd.Series, str]:
    meta = con.execute("SELECT start_utc_s, interval_s, timezone FROM runs LIMIT 1").fetchone()
    start, interval, tz = meta
    t = pd.to_datetime(start + rounds.to_numpy(dtype=np.int64) * interval, unit="s", utc=True).tz_convert(tz)
    return t.tz_localize(None), tz


def _caption(fig, text: str) -> None:
    """A line under the figure saying what it shows."""
    fig.text(0.01, 0.01, text, fontsize=7.5, color="0.3", ha="left", va="bottom", wrap=True)


def _per(frame: pd.DataFrame, n_rounds: int) -> str:
    """'per round', or the mean over how many rounds a point stands for when the series was binned."""
    if n_rounds <= MAX_POINTS:
        return "per round"
    return f"mean of {int(np.ceil(n_rounds / MAX_POINTS))} rounds per point"


def _binned(frame: pd.DataFrame, columns: list[str], how: str = "mean") -> pd.DataFrame:
    if len(frame) <= MAX_POINTS:
        return frame
    step = int(np.ceil(len(frame) / MAX_POINTS))
    groups = np.arange(len(frame)) // step
    agg = frame.groupby(groups).agg({c: how for c in columns})
    agg["round"] = frame["round"].groupby(groups).first().to_numpy()
    return agg


def plot_run(run_dir: str | Path) -> list[Path]:
    """Draw every figure of the run in ``run_dir`` into ``run_dir/figures``; return their paths."""
    run_dir = Path(run_dir)
    plt = _matplotlib()
    out = run_dir / "figures"
    out.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(run_dir / "run.duckdb"), read_only=True)
    figures: list[Path] = []
    try:
        episode = con.execute("SELECT max(episode) FROM rounds").fetchone()[0]
        if episode is None:
            return figures
        rounds = con.execute(
            "SELECT round, grid_buy_price, grid_sell_price, market_wh, grid_import_wh, grid_export_wh FROM rounds "
            "WHERE episode = ? ORDER BY round", [episode]).df()
        prices = con.execute(
            "SELECT delivery_round AS round, sum(quantity_wh * buyer_price) / sum(quantity_wh) AS buyer_price, "
            "sum(quantity_wh * seller_price) / sum(quantity_wh) AS seller_price FROM settlements WHERE episode = ? "
            "GROUP BY 1 ORDER BY 1", [episode]).df()
        settlement, name = con.execute("SELECT any_value(settlement), any_value(name) FROM runs").fetchone()
        n = len(rounds)

        # prices
        fig, ax = plt.subplots(figsize=(10, 4))
        r = _binned(rounds, ["grid_buy_price", "grid_sell_price"])
        t, tz = _times(con, r["round"])
        ax.step(t, r["grid_buy_price"], where="post", color="tab:red", lw=1.2, label="grid buy price")
        ax.step(t, r["grid_sell_price"], where="post", color="tab:green", lw=1.2, ls="--", label="grid sell price")
        if len(prices):
            p = _binned(prices, ["buyer_price", "seller_price"])
            tp, _ = _times(con, p["round"])
            if np.allclose(p["buyer_price"], p["seller_price"]):
                ax.plot(tp, p["buyer_price"], ".", ms=2, color="tab:blue", label="settlement price")
            else:
                ax.plot(tp, p["buyer_price"], "^", ms=2.5, color="tab:blue", label="price paid by buyers")
                ax.plot(tp, p["seller_price"], "v", ms=2.5, color="tab:orange", label="price received by sellers")
        ax.set_ylabel("price ($/kWh)")
        ax.set_xlabel(f"local time ({tz})")
        ax.set_title(f"{name}: settlement prices ({settlement}), episode {episode}")
        ax.legend(loc="best", fontsize=8)
        fig.autofmt_xdate()
        _caption(fig, f"Quantity-weighted mean price of the energy settled for each delivery round "
                      f"({_per(prices, len(prices))}), against the grid's net-billing buy and sell prices.")
        figures.append(_save(fig, out / "prices.png", plt))

        # energy
        fig, ax = plt.subplots(figsize=(10, 4))
        e = _binned(rounds, ["market_wh", "grid_import_wh", "grid_export_wh"])
        t, tz = _times(con, e["round"])
        ax.plot(t, e["market_wh"], label="traded in the market", color="tab:blue", lw=1.2)
        ax.plot(t, e["grid_import_wh"], label="bought from the grid", color="tab:red", lw=1, ls="--")
        ax.plot(t, -e["grid_export_wh"], label="sold to the grid (negative)", color="tab:green", lw=1, ls=":")
        ax.axhline(0, color="black", lw=0.5)
        ax.set_ylabel("energy (Wh per round)")
        ax.set_xlabel(f"local time ({tz})")
        ax.set_title(f"{name}: community energy, all households together, episode {episode}")
        ax.legend(loc="best", fontsize=8)
        fig.autofmt_xdate()
        _caption(fig, f"Sum over every household of the energy traded in the market and with the grid "
                      f"({_per(rounds, n)}); sales to the grid drawn below zero.")
        figures.append(_save(fig, out / "energy.png", plt))

        # batteries
        soc = con.execute(
            "SELECT d.round, d.participant, d.battery_stored_wh / p.battery_capacity_wh AS soc FROM deliveries d "
            "JOIN participants p USING (participant) WHERE d.episode = ? AND p.battery_capacity_wh > 0 "
            "ORDER BY d.round", [episode]).df()
        if len(soc):
            wide = soc.pivot(index="round", columns="participant", values="soc")
            fig, ax = plt.subplots(figsize=(10, 4))
            w = _binned(wide.reset_index(), list(wide.columns))
            t, tz = _times(con, w["round"])
            values = w[list(wide.columns)].to_numpy()
            if values.shape[1] <= 12:
                names = con.execute("SELECT participant, participant_id FROM participants").df().set_index("participant")["participant_id"]
                for j, col in enumerate(wide.columns):
                    ax.plot(t, values[:, j] * 100, lw=1, ls=("-", "--", ":", "-.")[j // 10 % 4],
                            label=str(names.get(col, col)))
                ax.legend(loc="best", fontsize=7, ncol=2)
            else:
                lo, med, hi = np.percentile(values, [10, 50, 90], axis=1)
                ax.fill_between(t, lo * 100, hi * 100, alpha=0.3, label="10-90 % of batteries")
                ax.plot(t, med * 100, label="median")
                ax.legend(loc="best", fontsize=8)
            ax.set_ylim(0, 100)
            ax.set_ylabel("state of charge (% of capacity)")
            ax.set_xlabel(f"local time ({tz})")
            ax.set_title(f"{name}: battery state of charge, episode {episode}")
            fig.autofmt_xdate()
            _caption(fig, "Energy stored in each battery at the end of each round, as a share of its capacity"
                          + ("." if values.shape[1] <= 12 else "; the median and the 10-90 % band across batteries."))
            figures.append(_save(fig, out / "battery_soc.png", plt))

        # bills
        summary_path = run_dir / "summary.json"
        if summary_path.exists():
            summary = json.loads(summary_path.read_text())
            parts = summary.get("participants", {})
            if parts:
                ids = list(parts)
                net = np.array([parts[i]["net_cost"] for i in ids])
                base = np.array([parts[i]["grid_only_cost"] for i in ids])
                fig, ax = plt.subplots(figsize=(max(6, min(16, 0.5 * len(ids) + 3)), 4))
                if len(ids) <= 40:
                    x = np.arange(len(ids))
                    ax.bar(x - 0.2, base, 0.4, label="grid only", color="tab:gray")
                    ax.bar(x + 0.2, net, 0.4, label="with the market", color="tab:blue")
                    ax.set_xticks(x, ids, rotation=60, ha="right", fontsize=7)
                else:
                    ax.scatter(base, net, s=6)
                    lim = [min(base.min(), net.min()), max(base.max(), net.max())]
                    ax.plot(lim, lim, color="black", lw=0.5, label="no change")
                    ax.set_xlabel("grid-only bill ($)")
                ax.axhline(0, color="black", lw=0.5)
                ax.set_ylabel("bill with the market ($, negative = earned)" if len(ids) > 40 else "bill ($, negative = earned)")
                ax.set_title(f"{name}: bills over episode {summary.get('episode', episode)}")
                ax.legend(loc="best", fontsize=8)
                _caption(fig, "Each household's bill with the market (market and grid trades) against the bill it "
                              "would have paid with the grid alone, its battery on self-consumption.")
                figures.append(_save(fig, out / "bills.png", plt))
    finally:
        con.close()
    return figures


def _save(fig, path: Path, plt) -> Path:
    fig.tight_layout(rect=(0, 0.05, 1, 1))  # room for the caption line
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
