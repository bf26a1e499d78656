"""A run's report: one self-contained HTML file with interactive charts, opened offline in any browser.

``trexsim report RUN_DIR [RUN_DIR ...]`` writes it (``trexsim run`` too, unless ``--no-report``). Several
runs are shown side by side, one column each, every chart of a row on the same axes.

Every number is aggregated in DuckDB before it reaches the page: a run's last episode is cut into at
most :data:`MAX_BINS` time bins (a round, 5 min, 15 min, an hour, a day or a week each, the shortest
that fits), so a year of a thousand households is a few hundred kilobytes of data. With more than
:data:`MAX_LINES` households, per-household series are shown as the 10th, 50th and 90th percentile
across households instead of one line each. The charting library (plotly.js, cartesian bundle, MIT
license) is embedded in the file; the page loads nothing from the network.

Units: power in kW (energy of a bin divided by its duration), energy in kWh, prices in $/kWh, money in $.
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from trexsim.errors import TrexsimError

MAX_BINS = 2000  # time bins per series at most
MAX_LINES = 12  # households drawn one line each; more are drawn as percentile bands
MAX_BARS = 60  # households drawn one bar each; more are drawn as a scatter
MAX_MATRIX = 40  # households per side of the who-traded-with-whom matrix (the most active ones)
BIN_CHOICES_S = (300, 900, 3600, 86400, 604800)
COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]


@dataclass
class Chart:
    """One chart of one run: plotly traces and layout, plus what it shows."""

    traces: list[dict]
    layout: dict
    share_x: bool = True  # side by side, the runs' x axes get one range too (False for categories of each run)
    height_px: int | None = None  # None: from the number of lines in the legend


@dataclass
class Section:
    key: str
    title: str
    caption: str
    charts: dict[int, Chart] = field(default_factory=dict)  # run index -> chart (a run may lack one)


def _bin_seconds(interval_s: int, rounds: int) -> int:
    """The shortest bin (a multiple of the round) that cuts ``rounds`` rounds into at most MAX_BINS bins."""
    if rounds <= MAX_BINS:
        return interval_s
    for choice in BIN_CHOICES_S:
        bin_s = max(interval_s, (choice // interval_s) * interval_s)
        if rounds * interval_s / bin_s <= MAX_BINS:
            return bin_s
    return interval_s * math.ceil(rounds / MAX_BINS)


def _label(seconds: int) -> str:
    names = {60: "minute", 300: "5 min", 900: "15 min", 3600: "hour", 86400: "day", 604800: "week"}
    return names.get(seconds, f"{seconds / 60:g} min")


def _num(values, digits: int = 6) -> list:
    """A JSON-ready list: floats with ``digits`` significant digits, NaN as null."""
    arr = np.asarray(values, dtype=float)
    out = []
    for v in arr.tolist():
        if v != v or v in (math.inf, -math.inf):
            out.append(None)
        elif v == 0:
            out.append(0)
        else:
            out.append(float(f"{v:.{digits}g}"))
    return out


def _sql_path(path: Path) -> str:
    return path.resolve().as_posix().replace("'", "''")


class _Run:
    """The aggregates of one run's last episode, read from its database."""

    def __init__(self, run_dir: Path):
        self.dir = run_dir
        path = run_dir / "run.duckdb"
        if not path.exists():
            raise TrexsimError(f"{run_dir}: no run database (run.duckdb) here; give the --out folder of 'trexsim run'")
        self.con = duckdb.connect(str(path), read_only=True)
        meta = self.con.execute("SELECT name, settlement, interval_s, start_utc_s, rounds_per_episode, episodes, timezone, "
                                "status, seed FROM runs LIMIT 1").fetchone()
        if meta is None:
            raise TrexsimError(f"{run_dir}: the run database has no run in it")
        (self.name, self.settlement, self.interval_s, self.start_utc_s, self.rounds, self.episodes, self.timezone,
         self.status, self.seed) = meta
        self.tables = {r[0] for r in self.con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        self.episode = self.con.execute("SELECT max(episode) FROM rounds").fetchone()[0]
        self.participants = self.con.execute(
            "SELECT participant, participant_id, battery_capacity_wh FROM participants ORDER BY participant").df()
        self.ids = dict(zip(self.participants["participant"], self.participants["participant_id"]))
        self.bin_s = _bin_seconds(self.interval_s, self.rounds)
        self.bin_rounds = self.bin_s // self.interval_s
        self.title = f"{self.name} ({self.settlement})"
        self._powerflow_sources()

    def _powerflow_sources(self) -> None:
        """Views ``pf_rounds`` and ``pf_violations``: the live powerflow's tables, or else what ``trexsim
        powerflow RUN_DIR`` replayed from the run into RUN_DIR/powerflow (the same columns, as Parquet)."""
        replay = self.dir / "powerflow"
        if self.has("powerflow_rounds"):
            self.con.execute("CREATE OR REPLACE TEMP VIEW pf_rounds AS SELECT * FROM powerflow_rounds")
            if "powerflow_violations" in self.tables:
                self.con.execute("CREATE OR REPLACE TEMP VIEW pf_violations AS SELECT * FROM powerflow_violations")
        elif (replay / "rounds.parquet").exists():
            self.con.execute(f"CREATE OR REPLACE TEMP VIEW pf_rounds AS SELECT * FROM read_parquet('{_sql_path(replay / 'rounds.parquet')}')")
            if (replay / "violations.parquet").exists():
                # the replay's violations carry no episode: it replays one episode, the one in its rounds
                self.con.execute("CREATE OR REPLACE TEMP VIEW pf_violations AS SELECT e.episode, v.* FROM "
                                 f"read_parquet('{_sql_path(replay / 'violations.parquet')}') v, "
                                 "(SELECT max(episode) AS episode FROM pf_rounds) e")
        else:
            return
        self.tables |= {"pf_rounds"} | ({"pf_violations"} if self.con.execute(
            "SELECT count(*) FROM duckdb_views() WHERE view_name = 'pf_violations'").fetchone()[0] else set())

    def has(self, table: str) -> bool:
        return table in self.tables and self.con.execute(
            f"SELECT count(*) > 0 FROM {table} WHERE episode = ?", [self.episode]).fetchone()[0]

    def times(self, bins) -> list[str]:
        """Local start time of each bin, as text plotly reads as a date."""
        seconds = self.start_utc_s + np.asarray(bins, dtype=np.int64) * self.bin_s
        t = pd.to_datetime(seconds, unit="s", utc=True).tz_convert(self.timezone).tz_localize(None)
        return [s.isoformat(sep=" ") for s in t]

    def q(self, sql: str, *params) -> pd.DataFrame:
        return self.con.execute(sql, [self.episode, *params]).df()

    def close(self) -> None:
        self.con.close()


def _per_household(run: _Run) -> None:
    """One pass over the deliveries: per household and bin, into a temporary table the charts read."""
    run.con.execute("CREATE OR REPLACE TEMP TABLE hh AS SELECT round // $b AS bin, participant, "
                    "sum(load_wh) AS load_wh, sum(generation_wh) AS generation_wh, "
                    "sum(grid_import_wh) AS grid_import_wh, sum(grid_export_wh) AS grid_export_wh, "
                    "sum(bought_wh) AS bought_wh, sum(sold_wh) AS sold_wh, avg(battery_stored_wh) AS stored_wh, "
                    "sum(net_cost_usd) AS net_cost_usd, sum(grid_only_cost_usd) AS grid_only_cost_usd "
                    "FROM deliveries WHERE episode = $e GROUP BY ALL", {"b": run.bin_rounds, "e": run.episode})


def _lines_or_bands(run: _Run, column: str, scale: float, name: str, color: str, who: list[int] | None = None) -> list[dict]:
    """One line per household (few), else the 10-50-90 % band across households, of ``column`` * scale."""
    members = who if who is not None else list(run.ids)
    if len(members) <= MAX_LINES:
        df = run.con.execute(f"SELECT bin, participant, {column} * {scale} AS v FROM hh "
                             f"WHERE participant IN ({','.join(map(str, members)) or 'NULL'}) ORDER BY bin").df()
        traces = []
        for j, p in enumerate(members):
            part = df[df["participant"] == p]
            traces.append({"type": "scatter", "mode": "lines", "name": f"{run.ids[p]} {name}", "x": run.times(part["bin"]),
                           "y": _num(part["v"]), "line": {"width": 1.2, "color": COLORS[j % len(COLORS)],
                                                          "dash": "dot" if name == "PV" else "solid"},
                           "legendgroup": str(run.ids[p])})
        return traces
    df = run.con.execute(f"SELECT bin, quantile_cont({column} * {scale}, [0.1, 0.5, 0.9]) AS q FROM hh "
                         f"WHERE participant IN ({','.join(map(str, members))}) GROUP BY bin ORDER BY bin").df()
    x = run.times(df["bin"])
    q = np.array(df["q"].tolist(), dtype=float).reshape(-1, 3)
    return [{"type": "scatter", "mode": "lines", "x": x, "y": _num(q[:, 0]), "line": {"width": 0, "color": color},
             "name": f"{name}: 10 %", "showlegend": False, "hoverinfo": "x+y"},
            {"type": "scatter", "mode": "lines", "x": x, "y": _num(q[:, 2]), "line": {"width": 0, "color": color},
             "fill": "tonexty", "fillcolor": color + "40", "name": f"{name}: 10-90 % of households"},
            {"type": "scatter", "mode": "lines", "x": x, "y": _num(q[:, 1]), "line": {"width": 1.5, "color": color},
             "name": f"{name}: median household"}]


def _time_layout(run: _Run, y_title: str, **extra) -> dict:
    layout = {"xaxis": {"title": {"text": f"local time ({run.timezone})"}, "type": "date"},
              "yaxis": {"title": {"text": y_title}}, "hovermode": "x unified"}
    layout.update(extra)
    return layout


def _sections(run: _Run) -> dict[str, Chart]:
    charts: dict[str, Chart] = {}
    if run.episode is None:
        return charts
    per = _label(run.bin_s)
    hours = run.bin_s / 3600.0
    _per_household(run)

    # community totals of the input
    tot = run.con.execute("SELECT bin, sum(load_wh) AS load, sum(generation_wh) AS pv, sum(grid_import_wh) AS imp, "
                          "sum(grid_export_wh) AS exp FROM hh GROUP BY bin ORDER BY bin").df()
    x = run.times(tot["bin"])
    kw = 1.0 / (1000.0 * hours)
    charts["community"] = Chart([
        {"type": "scatter", "mode": "lines", "name": "load", "x": x, "y": _num(tot["load"] * kw), "line": {"color": COLORS[3]}},
        {"type": "scatter", "mode": "lines", "name": "PV generation", "x": x, "y": _num(tot["pv"] * kw),
         "line": {"color": COLORS[8]}, "fill": "tozeroy", "fillcolor": "#bcbd2230"},
        {"type": "scatter", "mode": "lines", "name": "bought from the grid", "x": x, "y": _num(tot["imp"] * kw),
         "line": {"color": COLORS[0], "dash": "dash", "width": 1}},
        {"type": "scatter", "mode": "lines", "name": "sold to the grid", "x": x, "y": _num(tot["exp"] * kw),
         "line": {"color": COLORS[2], "dash": "dash", "width": 1}},
    ], _time_layout(run, f"community total, kW (mean per {per})"))

    charts["households"] = Chart(
        _lines_or_bands(run, "load_wh", kw, "load", COLORS[3]) + _lines_or_bands(run, "generation_wh", kw, "PV", COLORS[8]),
        _time_layout(run, f"per household, kW (mean per {per})"))

    # prices: grid, settlement, bids and asks
    grid = run.q(f"SELECT round // {run.bin_rounds} AS bin, avg(grid_buy_price) AS buy, avg(grid_sell_price) AS sell "
                 "FROM rounds WHERE episode = ? GROUP BY bin ORDER BY bin")
    traces = [{"type": "scatter", "mode": "lines", "line": {"shape": "hv", "color": COLORS[3]}, "name": "grid buy price",
               "x": run.times(grid["bin"]), "y": _num(grid["buy"])},
              {"type": "scatter", "mode": "lines", "line": {"shape": "hv", "color": COLORS[2]}, "name": "grid sell price",
               "x": run.times(grid["bin"]), "y": _num(grid["sell"])}]
    if run.has("orders"):
        book = run.q(f"SELECT delivery_round // {run.bin_rounds} AS bin, "
                     "sum(price * quantity_wh) FILTER (side = 'bid') / sum(quantity_wh) FILTER (side = 'bid') AS bid, "
                     "sum(price * quantity_wh) FILTER (side = 'ask') / sum(quantity_wh) FILTER (side = 'ask') AS ask "
                     "FROM orders WHERE episode = ? AND quantity_wh > 0 GROUP BY bin ORDER BY bin")
        bx = run.times(book["bin"])
        traces += [{"type": "scatter", "mode": "lines", "name": "mean bid price", "x": bx, "y": _num(book["bid"]),
                    "line": {"color": COLORS[9], "width": 1}},
                   {"type": "scatter", "mode": "lines", "name": "mean ask price", "x": bx,
                    "y": _num(book["ask"]), "line": {"color": COLORS[1], "width": 1}}]
    if run.has("settlements"):
        st = run.q(f"SELECT delivery_round // {run.bin_rounds} AS bin, sum(quantity_wh * buyer_price) / sum(quantity_wh) AS b, "
                   "sum(quantity_wh * seller_price) / sum(quantity_wh) AS s FROM settlements WHERE episode = ? "
                   "AND quantity_wh > 0 GROUP BY bin ORDER BY bin")
        sx = run.times(st["bin"])
        if np.allclose(st["b"], st["s"]):
            traces.append({"type": "scatter", "mode": "markers", "name": "settlement price", "x": sx, "y": _num(st["b"]),
                           "marker": {"size": 4, "color": COLORS[4]}})
        else:
            traces += [{"type": "scatter", "mode": "markers", "name": "price paid by buyers", "x": sx, "y": _num(st["b"]),
                        "marker": {"size": 4, "color": COLORS[4], "symbol": "triangle-up"}},
                       {"type": "scatter", "mode": "markers", "name": "price received by sellers", "x": sx,
                        "y": _num(st["s"]), "marker": {"size": 4, "color": COLORS[5], "symbol": "triangle-down"}}]
    charts["prices"] = Chart(traces, _time_layout(run, f"$/kWh (quantity-weighted mean per {per})"))

    # energy traded per pool
    if run.has("settlements"):
        pools = run.q(f"SELECT delivery_round // {run.bin_rounds} AS bin, CAST(pool AS VARCHAR) AS pool, "
                      "sum(quantity_wh) / 1000.0 AS kwh FROM settlements WHERE episode = ? GROUP BY ALL ORDER BY bin")
        traces = []
        for j, (pool, part) in enumerate(pools.groupby("pool", sort=True)):
            traces.append({"type": "bar", "name": pool.replace("_", "-"), "x": run.times(part["bin"]), "y": _num(part["kwh"]),
                           "marker": {"color": COLORS[j]}})
        charts["traded"] = Chart(traces, _time_layout(run, f"kWh traded per {per}", barmode="stack", bargap=0))

    # bills and shares of the market
    bills = run.con.execute("SELECT participant, sum(net_cost_usd) AS net, sum(grid_only_cost_usd) AS base, "
                            "sum(bought_wh) AS bought, sum(sold_wh) AS sold FROM hh GROUP BY participant "
                            "ORDER BY participant").df()
    names = [str(run.ids[p]) for p in bills["participant"]]
    traded = float(bills["bought"].sum())
    share = (bills["bought"] + bills["sold"]) / (2 * traded) * 100 if traded else bills["bought"] * 0.0
    if len(bills) <= MAX_BARS:
        charts["bills"] = Chart([
            {"type": "bar", "name": "grid-only bill", "x": names, "y": _num(bills["base"]), "marker": {"color": "#999999"}},
            {"type": "bar", "name": "bill with the market", "x": names, "y": _num(bills["net"]), "marker": {"color": COLORS[0]},
             "customdata": _num(share, 4), "hovertemplate": "%{x}: %{y:.2f} $ (share of trades %{customdata:.1f} %)"},
        ], {"barmode": "group", "xaxis": {"title": {"text": "household"}, "type": "category"},
            "yaxis": {"title": {"text": "bill over the episode, $ (negative: earned)"}}}, share_x=False)
        charts["shares"] = Chart([
            {"type": "bar", "name": "bought", "x": names, "y": _num(bills["bought"] / traded * 100 if traded else share),
             "marker": {"color": COLORS[0]}},
            {"type": "bar", "name": "sold", "x": names, "y": _num(bills["sold"] / traded * 100 if traded else share),
             "marker": {"color": COLORS[1]}},
        ], {"barmode": "group", "xaxis": {"title": {"text": "household"}, "type": "category"},
            "yaxis": {"title": {"text": "% of the energy traded in the market"}}}, share_x=False)
    else:
        lim = [float(min(bills["base"].min(), bills["net"].min())), float(max(bills["base"].max(), bills["net"].max()))]
        charts["bills"] = Chart([
            {"type": "scatter", "mode": "markers", "name": "households", "x": _num(bills["base"]), "y": _num(bills["net"]),
             "text": names, "customdata": _num(share, 4), "marker": {"size": 5, "color": COLORS[0], "opacity": 0.7},
             "hovertemplate": "%{text}: grid only %{x:.2f} $, with the market %{y:.2f} $ (%{customdata:.1f} % of trades)"},
            {"type": "scatter", "mode": "lines", "name": "no change", "x": lim, "y": lim, "line": {"color": "black", "width": 1}},
        ], {"xaxis": {"title": {"text": "grid-only bill, $"}}, "yaxis": {"title": {"text": "bill with the market, $"}}})
        charts["shares"] = Chart([
            {"type": "histogram", "name": "households", "x": _num(share, 4), "marker": {"color": COLORS[0]}},
        ], {"xaxis": {"title": {"text": "share of the market's trades, % (bought + sold)"}},
            "yaxis": {"title": {"text": "households"}}})

    # who traded with whom
    if run.has("settlements"):
        pairs = run.q("SELECT seller, buyer, sum(quantity_wh) / 1000.0 AS kwh FROM settlements WHERE episode = ? GROUP BY ALL")
        # the sellers that sold most and the buyers that bought most
        sellers = sorted(pairs.groupby("seller")["kwh"].sum().sort_values(ascending=False).index[:MAX_MATRIX])
        buyers = sorted(pairs.groupby("buyer")["kwh"].sum().sort_values(ascending=False).index[:MAX_MATRIX])
        z = np.full((len(sellers), len(buyers)), np.nan)
        si, bi = {s: i for i, s in enumerate(sellers)}, {b: i for i, b in enumerate(buyers)}
        for s, b, k in pairs[["seller", "buyer", "kwh"]].itertuples(index=False):
            if s in si and b in bi:
                z[si[s], bi[b]] = k
        charts["matrix"] = Chart([
            {"type": "heatmap", "x": [str(run.ids[b]) for b in buyers], "y": [str(run.ids[s]) for s in sellers],
             "z": [_num(row) for row in z], "colorscale": "Blues", "reversescale": True, "colorbar": {"title": {"text": "kWh"}},
             "hovertemplate": "%{y} sold %{z:.2f} kWh to %{x}<extra></extra>"},
        ], {"xaxis": {"title": {"text": "buyer"}, "type": "category"}, "yaxis": {"title": {"text": "seller"}, "type": "category"}},
            share_x=False, height_px=max(360, 160 + 16 * len(sellers)))

    # batteries
    with_battery = [int(p) for p, c in zip(run.participants["participant"], run.participants["battery_capacity_wh"]) if c > 0]
    if with_battery:
        cap = dict(zip(run.participants["participant"], run.participants["battery_capacity_wh"]))
        run.con.execute("CREATE OR REPLACE TEMP TABLE cap AS SELECT * FROM (VALUES " +
                        ", ".join(f"({p}, {float(cap[p])})" for p in with_battery) + ") t(participant, capacity_wh)")
        run.con.execute("CREATE OR REPLACE TEMP TABLE hh AS SELECT hh.*, hh.stored_wh / cap.capacity_wh * 100 AS soc_pct "
                        "FROM hh LEFT JOIN cap USING (participant)")
        traces = _lines_or_bands(run, "soc_pct", 1.0, "state of charge", COLORS[4], who=with_battery)
        charts["battery"] = Chart(traces, _time_layout(run, f"state of charge, % (mean per {per})",
                                                       yaxis={"title": {"text": f"state of charge, % (mean per {per})"},
                                                              "range": [0, 100]}))

    # rejections
    if run.has("rejections"):
        rej = run.q("SELECT reason, count(*) AS n FROM rejections WHERE episode = ? GROUP BY reason ORDER BY n DESC")
        charts["rejections"] = Chart([{"type": "bar", "x": list(rej["reason"]), "y": [int(n) for n in rej["n"]],
                                       "marker": {"color": COLORS[3]}, "name": "orders"}],
                                     {"xaxis": {"title": {"text": "reason"}, "type": "category"},
                                      "yaxis": {"title": {"text": "rejected orders"}}}, share_x=False)

    # powerflow
    if run.has("pf_rounds"):
        pf = run.q(f"SELECT round // {run.bin_rounds} AS bin, min(v_min_pu) AS vmin, max(v_max_pu) AS vmax, "
                   "max(transformer_loading_pct) AS tr, max(line_loading_pct) AS line FROM pf_rounds "
                   "WHERE episode = ? GROUP BY bin ORDER BY bin")
        px = run.times(pf["bin"])
        charts["voltage"] = Chart([
            {"type": "scatter", "mode": "lines", "name": "lowest bus voltage", "x": px, "y": _num(pf["vmin"]),
             "line": {"color": COLORS[0]}},
            {"type": "scatter", "mode": "lines", "name": "highest bus voltage (envelope shaded)", "x": px,
             "y": _num(pf["vmax"]), "line": {"color": COLORS[3]}, "fill": "tonexty", "fillcolor": "#1f77b422"},
        ], _time_layout(run, f"voltage, p.u. (envelope per {per})"))
        charts["loading"] = Chart([
            {"type": "scatter", "mode": "lines", "name": "transformer", "x": px, "y": _num(pf["tr"]), "line": {"color": COLORS[1]}},
            {"type": "scatter", "mode": "lines", "name": "most loaded line", "x": px, "y": _num(pf["line"]),
             "line": {"color": COLORS[5], "dash": "dot"}},
        ], _time_layout(run, f"loading, % of rating (peak per {per})"))
        if run.has("pf_violations"):
            v = run.q("SELECT kind, count(*) AS n FROM pf_violations WHERE episode = ? GROUP BY kind ORDER BY n DESC")
            charts["violations"] = Chart([{"type": "bar", "x": list(v["kind"]), "y": [int(n) for n in v["n"]],
                                           "marker": {"color": COLORS[3]}, "name": "violations"}],
                                         {"xaxis": {"title": {"text": "kind"}, "type": "category"},
                                          "yaxis": {"title": {"text": "violations (element-rounds)"}}}, share_x=False)

    # TC schedule: for each price interval, the latest schedule published for it
    if run.has("tc_schedule"):
        tc = run.q("SELECT first_round, arg_max(price, horizon_first_round) AS price, "
                   "arg_max(tou_buy_price, horizon_first_round) AS tou, arg_max(sell_price, horizon_first_round) AS sell, "
                   "arg_max(predicted_transformer_loading_pct, horizon_first_round) AS loading "
                   "FROM tc_schedule WHERE episode = ? GROUP BY first_round ORDER BY first_round")
        seconds = run.start_utc_s + tc["first_round"].to_numpy(dtype=np.int64) * run.interval_s
        tx = [s.isoformat(sep=" ") for s in pd.to_datetime(seconds, unit="s", utc=True).tz_convert(run.timezone).tz_localize(None)]
        charts["tc"] = Chart([
            {"type": "scatter", "mode": "lines", "line": {"shape": "hv", "color": COLORS[3]}, "name": "TC buy price", "x": tx,
             "y": _num(tc["price"])},
            {"type": "scatter", "mode": "lines", "line": {"shape": "hv", "color": "#999999", "dash": "dash"},
             "name": "time-of-use buy price", "x": tx, "y": _num(tc["tou"])},
            {"type": "scatter", "mode": "lines", "line": {"shape": "hv", "color": COLORS[2]}, "name": "sell price", "x": tx,
             "y": _num(tc["sell"])},
            {"type": "scatter", "mode": "lines", "line": {"shape": "hv", "color": COLORS[1], "dash": "dot"},
             "name": "predicted transformer loading", "x": tx, "y": _num(tc["loading"]), "yaxis": "y2"},
        ], _time_layout(run, "$/kWh", yaxis2={"title": {"text": "% of rating"}, "overlaying": "y", "side": "right"}))
    return charts


SECTIONS: list[tuple[str, str, str]] = [
    ("community", "Community load and PV", "The input: the community's total load and PV generation, and what it bought "
     "from and sold to the grid, as mean power over each time bin."),
    ("households", "Load and PV per household", "Each household's load (solid) and PV generation (dotted), as mean power "
     "over each time bin; with many households, the median and the 10-90 % band across households."),
    ("prices", "Settlement prices against the grid's prices", "Quantity-weighted mean price of the energy settled for "
     "delivery in each bin (markers), the grid's buy and sell prices (steps), and the mean bid and ask prices of the "
     "orders (the gap between them is the bid/ask spread)."),
    ("traded", "Energy traded in the market", "Energy settled in the market for delivery in each bin, stacked by pool."),
    ("bills", "Bills: with the market against grid only", "Each household's bill over the episode with the market, "
                                                           "against the bill it would have paid trading only with the grid "
                                                           "(negative: it earned money)."),
    ("shares", "Shares of the market's trades", "Each household's share of the energy bought and sold in the market."),
    ("matrix", "Who traded with whom", "Energy each seller (row) sold to each buyer (column) over the episode; with many "
                                       f"households, the {MAX_MATRIX} sellers that sold most and the {MAX_MATRIX} buyers "
                                       "that bought most."),
    ("battery", "Battery state of charge", "State of charge of each battery, mean over each bin; with many batteries, "
                                           "the median and the 10-90 % band."),
    ("rejections", "Rejected orders by reason", "Orders the market refused, counted by the reason it gave."),
    ("voltage", "Powerflow: voltage envelope", "Lowest and highest bus voltage of the feeder in each bin (p.u.)."),
    ("loading", "Powerflow: transformer and line loading", "Peak loading of the transformer and of the most loaded line "
                                                           "in each bin, % of rating."),
    ("violations", "Powerflow: limit violations", "Element-rounds outside a voltage or loading limit, by kind."),
    ("tc", "Transactive control schedule", "The buy price the TC market published for each interval (its latest "
                                           "schedule), against the time-of-use price, with the loading it predicted."),
]


def _share_axes(charts: list[Chart]) -> None:
    """Give the charts of one row the same y range (and x range where ``share_x``), so runs compare at a glance."""
    if len(charts) < 2:
        return
    heat = [t for c in charts for t in c.traces if t.get("type") == "heatmap"]
    if heat:  # one colour scale for every run's matrix
        values = [v for t in heat for row in t["z"] for v in row if v is not None]
        for t in heat:
            t["zmin"], t["zmax"] = (0, max(values)) if values else (0, 1)
    for axis, key in (("yaxis", "y"), ("xaxis", "x")):
        if axis == "xaxis" and not all(c.share_x for c in charts):
            continue
        if any(t.get("type") in ("heatmap", "histogram") or t.get("yaxis") == "y2" for c in charts for t in c.traces):
            continue
        values: list = []
        for c in charts:
            for t in c.traces:
                values += [v for v in t.get(key, []) if v is not None]
        if not values:
            continue
        if all(isinstance(v, (int, float)) for v in values):
            lo, hi = min(values), max(values)
            if any(t.get("type") == "bar" for c in charts for t in c.traces):
                lo, hi = min(lo, 0), max(hi, 0)
                if any(c.layout.get("barmode") == "stack" for c in charts):
                    continue  # stacked bars: the sum, not each value, sets the range; leave it to plotly
            pad = (hi - lo) * 0.05 or 1.0
            rng = [lo - pad, hi + pad]
        elif all(isinstance(v, str) for v in values) and all(c.layout.get(axis, {}).get("type") == "date" for c in charts):
            spans = []
            for c in charts:
                xs = [v for t in c.traces for v in t.get(key, []) if v is not None]
                spans.append((min(xs), max(xs)) if xs else None)
            if any(sp is None for sp in spans) or max(a for a, _ in spans) > min(b for _, b in spans):
                continue  # runs over different periods: each keeps its own time axis
            rng = [min(values), max(values)]
        else:
            continue
        for c in charts:
            c.layout.setdefault(axis, {}).setdefault("range", rng)


def _summary_rows(run: _Run) -> list[tuple[str, str]]:
    if run.episode is None:
        return [("status", str(run.status)), ("episodes recorded", "0")]
    people = len(run.ids)
    tot = run.con.execute("SELECT sum(load_wh), sum(generation_wh), sum(bought_wh), sum(grid_import_wh), "
                          "sum(grid_export_wh), sum(net_cost_usd), sum(grid_only_cost_usd) FROM hh").fetchone()
    load, pv, bought, imp, exp, net, base = [0 if v is None else v for v in tot]
    price = run.q("SELECT sum(quantity_wh * buyer_price) / nullif(sum(quantity_wh), 0) FROM settlements WHERE episode = ?")
    price = price.iloc[0, 0] if len(price) else None
    rejected = run.q("SELECT count(*) FROM rejections WHERE episode = ?").iloc[0, 0] if "rejections" in run.tables else 0
    days = run.rounds * run.interval_s / 86400
    return [("settlement mechanism", str(run.settlement)), ("households", f"{people:,}"),
            ("episode shown", f"{run.episode} of {run.episodes} ({days:g} day(s), {run.rounds:,} rounds of {run.interval_s} s)"),
            ("seed", str(run.seed)), ("status", str(run.status)),
            ("load / PV", f"{load / 1000:,.1f} / {pv / 1000:,.1f} kWh"),
            ("traded in the market", f"{bought / 1000:,.1f} kWh"),
            ("mean settlement price", "-" if price is None or price != price else f"{price:.4f} $/kWh"),
            ("from / to the grid", f"{imp / 1000:,.1f} / {exp / 1000:,.1f} kWh"),
            ("community bill", f"{net:,.2f} $ (grid only {base:,.2f} $)"),
            ("rejected orders", f"{int(rejected):,}"), ("charts binned per", _label(run.bin_s))]


def _plotly_js() -> str:
    return resources.files("trexsim.records").joinpath("vendor", "plotly-cartesian.min.js").read_text(encoding="utf-8")


_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1600px;padding:0 1.5em 3em;
color:#222}h1{font-size:1.5em;margin:1em 0 .2em}h2{font-size:1.15em;margin:1.8em 0 .2em}p.caption{margin:.2em 0 .6em;
color:#555;max-width:70em}.row{display:grid;gap:1em;grid-template-columns:repeat(var(--cols),minmax(0,1fr))}
.chart{height:360px;border:1px solid #e4e4e4;border-radius:4px}.missing{height:360px;display:flex;align-items:center;
justify-content:center;color:#888;border:1px dashed #ccc;border-radius:4px}table{border-collapse:collapse;margin:.5em 0}
td,th{padding:.25em .8em;border-bottom:1px solid #eee;text-align:left}th{background:#f6f6f6}
nav a{margin-right:1em}.runname{font-weight:600;text-align:center;margin:.2em 0}#errors{color:#b00}
footer{margin-top:3em;color:#777;font-size:.85em}
"""

_SCRIPT = """
(function () {
  var report = JSON.parse(document.getElementById('report-data').textContent);
  var charts = report.charts, drawn = 0, failed = 0;
  document.body.dataset.chartsTotal = charts.length;
  function done() {
    if (drawn + failed === charts.length) document.body.dataset.chartsDrawn = drawn;
  }
  function fail(id, err) {
    failed += 1;
    var box = document.getElementById('errors');
    box.textContent += 'chart ' + id + ' failed: ' + err + '\\n';
    console.error('chart ' + id + ' failed: ' + err);
    done();
  }
  var config = {responsive: true, displaylogo: false};
  charts.forEach(function (c) {
    var el = document.getElementById(c.id);
    var layout = Object.assign({margin: {l: 60, r: 20, t: 10, b: 50}, legend: {orientation: 'h', x: 0, y: -0.22, yanchor: 'top'},
                                font: {size: 11}}, c.layout);
    Object.keys(layout).concat(['xaxis', 'yaxis']).forEach(function (a) {  // long labels push the margins, not cut
      if (/^[xy]axis[0-9]*$/.test(a)) layout[a] = Object.assign({automargin: true}, layout[a] || {});
    });
    try {
      Plotly.newPlot(el, c.traces, layout, config).then(function () {
        el.dataset.drawn = '1'; drawn += 1; done();
      }, function (err) { fail(c.id, err); });
    } catch (err) { fail(c.id, err); }
  });
  if (!charts.length) document.body.dataset.chartsDrawn = 0;
})();
"""


def write_report(run_dirs: list[str | Path] | str | Path, out: str | Path | None = None,
                 labels: list[str] | None = None) -> Path:
    """Write the HTML report of one run (default ``RUN_DIR/report.html``) or of several side by side
    (default ``report.html`` in the current folder); return its path.

    Parameters
    ----------
    run_dirs : path or list of paths
        The output folders of ``trexsim run`` (each with its ``run.duckdb``).
    out : path, optional
        The HTML file to write.
    labels : list of str, optional
        A heading for each run (default: its study name and settlement mechanism).
    """
    if isinstance(run_dirs, (str, Path)):
        run_dirs = [run_dirs]
    dirs = [Path(d) for d in run_dirs]
    if not dirs:
        raise TrexsimError("give at least one run folder")
    out = Path(out) if out is not None else (dirs[0] / "report.html" if len(dirs) == 1 else Path("report.html"))
    runs = [_Run(d) for d in dirs]
    for run, label in zip(runs, labels or []):
        run.title = label
    try:
        per_run = [_sections(r) for r in runs]
        summaries = [_summary_rows(r) for r in runs]
    finally:
        for r in runs:
            r.close()
    sections = []
    for key, title, caption in SECTIONS:
        section = Section(key, title, caption, {i: c[key] for i, c in enumerate(per_run) if key in c})
        if section.charts:
            _share_axes(list(section.charts.values()))
            sections.append(section)
    page = _page(runs, summaries, sections)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out


def _page(runs: list[_Run], summaries: list[list[tuple[str, str]]], sections: list[Section]) -> str:
    from trexsim import __version__

    esc = html.escape
    cols = len(runs)
    title = " vs ".join(r.title for r in runs)
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>trexsim report: {esc(title)}</title>",
             f"<meta name='viewport' content='width=device-width, initial-scale=1'><style>{_STYLE}</style></head>",
             f"<body><h1>trexsim report: {esc(title)}</h1>"]
    parts.append("<nav>" + "".join(f"<a href='#{s.key}'>{esc(s.title)}</a>" for s in sections) + "</nav>")
    parts.append("<h2>Summary</h2><table><tr><th></th>" + "".join(f"<th>{esc(r.title)}<br><small>{esc(str(r.dir))}</small></th>"
                                                                  for r in runs) + "</tr>")
    labels = []
    for rows in summaries:
        labels += [k for k, _ in rows if k not in labels]
    for label in labels:
        parts.append(f"<tr><td>{esc(label)}</td>" + "".join(f"<td>{esc(dict(rows).get(label, '-'))}</td>" for rows in summaries)
                     + "</tr>")
    parts.append("</table><pre id='errors'></pre>")
    charts = []
    for s in sections:
        parts.append(f"<h2 id='{s.key}'>{esc(s.title)}</h2><p class='caption'>{esc(s.caption)}</p>"
                     f"<div class='row' style='--cols:{cols}'>")
        for i, run in enumerate(runs):
            parts.append("<div>")
            if cols > 1:
                parts.append(f"<div class='runname'>{esc(run.title)}</div>")
            chart = s.charts.get(i)
            if chart is None:
                parts.append("<div class='missing'>not in this run</div>")
            else:
                cid = f"chart-{s.key}-{i}"
                parts.append(f"<div class='chart' id='{cid}'></div>")
                named = sum(1 for t in chart.traces if t.get("showlegend", True) and t.get("type") != "heatmap")
                per_row = max(2, 6 // cols)  # legend entries in a row of the legend below the plot
                height = chart.height_px or 360 + 22 * max(0, -(-named // per_row) - 1)
                parts[-1] = f"<div class='chart' id='{cid}' style='height:{height}px'></div>"
                charts.append({"id": cid, "traces": chart.traces, "layout": chart.layout})
            parts.append("</div>")
        parts.append("</div>")
    data = json.dumps({"charts": charts}, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")
    parts.append(f"<footer>written by trexsim {esc(__version__)}; charts by plotly.js (MIT license), embedded: this file "
                 "needs no network.</footer>")
    parts.append(f"<script type='application/json' id='report-data'>{data}</script>")
    parts.append(f"<script>{_plotly_js()}</script><script>{_SCRIPT}</script></body></html>")
    return "".join(parts)
