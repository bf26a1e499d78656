"""Figures of a powerflow replay, in ``<report folder>/figures``:

- ``voltage_envelope.png``: the lowest and highest bus voltage of each solved round, with the limits
- ``transformer_loading.png``: the most loaded transformer's loading (% of rating) and the lines' maximum
- ``violations.png``: buses under / over the voltage limits and overloaded elements per round, and the
  hours over limits of the worst buses and elements
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

MAX_POINTS = 5000  # longer series are binned (min of minima, max of maxima) so figures stay readable


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _bins(n: int) -> np.ndarray | None:
    if n <= MAX_POINTS:
        return None
    step = int(np.ceil(n / MAX_POINTS))
    return np.arange(0, n, step)


def _reduce(values: np.ndarray, starts: np.ndarray | None, how) -> np.ndarray:
    if starts is None:
        return values
    with np.errstate(invalid="ignore"):
        return how.reduceat(values, starts)


def plot_report(out_dir: Path, series: dict, summary: dict, limits) -> list[Path]:
    plt = _plt()
    fig_dir = Path(out_dir) / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    times = pd.DatetimeIndex(series["times"])
    pr = series["per_round"]
    starts = _bins(len(times))
    t = times if starts is None else times[starts]
    xlabel = f"local time ({summary.get('timezone') or 'UTC'})"
    title = f"{summary['run_name']}, episode {summary['episode']}"
    figures: list[Path] = []

    # voltage envelope
    fig, ax = plt.subplots(figsize=(10, 4))
    vmin = _reduce(pr["v_min_pu"], starts, np.fmin)
    vmax = _reduce(pr["v_max_pu"], starts, np.fmax)
    ax.fill_between(t, vmin, vmax, step="post", color="tab:blue", alpha=0.25, label="range over buses")
    ax.step(t, vmin, where="post", color="tab:blue", lw=1, label="lowest bus")
    ax.step(t, vmax, where="post", color="tab:orange", lw=1, label="highest bus")
    for lim, name in ((limits.v_min_pu, "limits"), (limits.v_max_pu, None)):
        ax.axhline(lim, color="tab:red", ls="--", lw=1, label=name)
    ax.set_ylabel("voltage (p.u.)")
    ax.set_xlabel(xlabel)
    ax.set_title(f"Bus voltage envelope: {title}")
    ax.legend(loc="best", fontsize=8)
    fig.autofmt_xdate()
    fig.tight_layout()
    figures.append(fig_dir / "voltage_envelope.png")
    fig.savefig(figures[-1], dpi=110)
    plt.close(fig)

    # transformer loading
    fig, ax = plt.subplots(figsize=(10, 4))
    trafos = series["transformers"]
    label = trafos[0] if len(trafos) == 1 else f"most loaded of {len(trafos)} transformers"
    if trafos:
        ax.step(t, _reduce(pr["transformer_loading_pct"], starts, np.fmax), where="post", color="tab:purple",
                label=label)
    if np.any(np.isfinite(pr["line_loading_pct"])):
        ax.step(t, _reduce(pr["line_loading_pct"], starts, np.fmax), where="post", color="tab:gray", lw=0.8,
                label="most loaded line")
    ax.axhline(limits.max_loading_pct, color="tab:red", ls="--", lw=1, label="limit")
    ax.set_ylabel("loading (% of rating)")
    ax.set_ylim(bottom=0)
    ax.set_xlabel(xlabel)
    ax.set_title(f"Transformer loading: {title}")
    ax.legend(loc="best", fontsize=8)
    fig.autofmt_xdate()
    fig.tight_layout()
    figures.append(fig_dir / "transformer_loading.png")
    fig.savefig(figures[-1], dpi=110)
    plt.close(fig)

    # violations
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(10, 6.5), gridspec_kw={"height_ratios": [1.2, 1]})
    for key, color, name in (("n_under", "tab:blue", "buses under v_min"), ("n_over", "tab:orange", "buses over v_max"),
                             ("n_overload", "tab:red", "elements over loading limit")):
        ax1.step(t, _reduce(series[key].astype(float), starts, np.fmax), where="post", color=color, label=name)
    ax1.set_ylabel("count per round")
    ax1.set_xlabel(xlabel)
    ax1.set_title(f"Violations: {title} ({summary['violations']['total']} in all, "
                  f"{summary['hours_over_limit']['any']:.2f} h over limits)")
    ax1.legend(loc="best", fontsize=8)
    buses = pq.read_table(Path(out_dir) / "buses.parquet").to_pandas()
    elements = pq.read_table(Path(out_dir) / "elements.parquet").to_pandas()
    worst = pd.concat([
        pd.DataFrame({"name": buses["bus"], "hours": buses["hours_under"] + buses["hours_over"], "kind": "voltage"}),
        pd.DataFrame({"name": elements["element"], "hours": elements["hours_over"], "kind": "loading"}),
    ])
    worst = worst[worst["hours"] > 0].sort_values("hours", ascending=False).head(20)
    if len(worst):
        colors = np.where(worst["kind"] == "voltage", "tab:blue", "tab:red")
        ax2.barh(worst["name"][::-1], worst["hours"][::-1], color=colors[::-1])
        ax2.set_xlabel("hours over limits (blue: voltage, red: loading)")
        ax2.tick_params(axis="y", labelsize=7)
    else:
        ax2.text(0.5, 0.5, "no violations", ha="center", va="center", transform=ax2.transAxes)
        ax2.set_axis_off()
    fig.tight_layout()
    figures.append(fig_dir / "violations.png")
    fig.savefig(figures[-1], dpi=110)
    plt.close(fig)
    return figures
