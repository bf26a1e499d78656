"""summary.json: per participant and market totals of a run (the last episode, plus every episode's market)."""

from __future__ import annotations

import math

import numpy as np

from trexsim.records.writer import Totals


def _r(x: float, nd: int = 6) -> float:
    return float(round(float(x), nd)) + 0.0  # + 0.0: never -0.0


def episode_summary(totals: Totals, episode: int, participant_ids: list[str]) -> dict:
    t = totals.by_episode[episode]
    net_cost = t["market_cost_usd"] - t["market_revenue_usd"] + t["grid_cost_usd"] - t["grid_revenue_usd"]
    participants = {}
    for i, pid in enumerate(participant_ids):
        participants[pid] = {
            "market_bought_wh": int(t["bought_wh"][i]),
            "market_sold_wh": int(t["sold_wh"][i]),
            "grid_bought_wh": int(t["grid_import_wh"][i]),
            "grid_sold_wh": int(t["grid_export_wh"][i]),
            "net_cost": _r(net_cost[i]),
            "grid_only_cost": _r(t["grid_only_cost_usd"][i]),
            "savings": _r(t["grid_only_cost_usd"][i] - net_cost[i]),
            "load_wh": int(t["load_wh"][i]),
            "generation_wh": int(t["generation_wh"][i]),
            "shortfall_wh": int(t["shortfall_wh"][i]),
            "unused_wh": int(t["unused_wh"][i]),
            "battery_cover_wh": int(t["battery_cover_wh"][i]),
        }
    settled = totals.settled_wh[episode]
    mean_buyer = totals.settled_value_usd[episode] * 1000.0 / settled if settled else math.nan
    mean_seller = totals.settled_seller_value_usd[episode] * 1000.0 / settled if settled else math.nan
    market = {
        "settled_wh": int(settled),
        "auctioneer_surplus": _r(totals.surplus_usd[episode]),
        "mean_settlement_price": None if not settled else _r((mean_buyer + mean_seller) / 2.0),
        "mean_buyer_price": None if not settled else _r(mean_buyer),
        "mean_seller_price": None if not settled else _r(mean_seller),
        "grid_bought_wh": int(t["grid_import_wh"].sum()),
        "grid_sold_wh": int(t["grid_export_wh"].sum()),
        "total_net_cost": _r(net_cost.sum()),
        "total_grid_only_cost": _r(t["grid_only_cost_usd"].sum()),
        "rejected_orders": int(totals.rejections.get(episode, 0)),
    }
    return {"market": market, "participants": participants}


def build_summary(totals: Totals, participant_ids: list[str], study: dict, conservation: dict, paths: dict) -> dict:
    episodes = sorted(totals.by_episode)
    last = episodes[-1] if episodes else 0
    summary = {"study": study, "episode": last}
    summary.update(episode_summary(totals, last, participant_ids) if episodes else {"market": {}, "participants": {}})
    summary["episodes"] = [{"episode": e, **episode_summary(totals, e, participant_ids)["market"]} for e in episodes]
    summary["conservation"] = conservation
    summary["outputs"] = paths
    return summary


__all__ = ["build_summary", "episode_summary"]


def community_metrics(rounds, net_wh, start_utc_s: int, interval_s: int, timezone: str) -> dict | None:
    """The community's net-load metrics of an episode, as the ALEX community studies report them (May and
    Musilek, IEEE Access 2024): from the community's net metered energy per round (``net_wh``, + import,
    the sum over its households: trades inside the community cancel), on hourly mean powers (rounds
    longer than an hour: per round), in the study's local time.

    - ``avg_daily_import_kwh`` / ``avg_daily_export_kwh``: per local day, the energy of the hours the
      community imports (exports) on net, averaged over the days;
    - ``avg_daily_peak_kw`` / ``avg_daily_valley_kw``: each day's highest (lowest) hourly net power, averaged;
    - ``peak_kw`` / ``valley_kw``: the highest and lowest over the episode;
    - ``ramping_kw``: the mean absolute change of the net power between consecutive hours;
    - ``one_minus_daily_load_factor`` / ``one_minus_monthly_load_factor``: the mean over days (months) of
      ``1 - mean / max`` of the hourly net power, over the days (months) whose peak is an import (> 0).
    """
    import pandas as pd

    rounds = np.asarray(rounds, dtype=np.int64)
    if rounds.size == 0:
        return None
    utc_s = start_utc_s + rounds * interval_s
    order = np.argsort(utc_s, kind="stable")
    utc_s, values = utc_s[order], np.asarray(net_wh, dtype=np.float64)[order]
    local = pd.to_datetime(utc_s, unit="s", utc=True).tz_convert(timezone)
    if interval_s <= 3600:
        # the local hour each round falls in, keyed by that hour's UTC start: the two 01:00 hours of a
        # fall-back night stay two hours (flooring the local times cannot tell them apart)
        offset_s = np.asarray((local.tz_localize(None) - local.tz_convert(None)).total_seconds(), dtype=np.int64)
        sums = pd.Series(values).groupby(utc_s - (utc_s + offset_s) % 3600).sum()
        hourly_kw = pd.Series(sums.to_numpy() / 1000.0,                         # kWh in an hour = mean kW
                              index=pd.to_datetime(sums.index.to_numpy(), unit="s", utc=True).tz_convert(timezone))
        step_h = 1.0
    else:
        hourly_kw = pd.Series(values / 1000.0 / (interval_s / 3600.0), index=local)
        step_h = interval_s / 3600.0
    day = hourly_kw.index.normalize().tz_localize(None)
    month = hourly_kw.index.tz_localize(None).to_period("M")
    imports = (hourly_kw.clip(lower=0) * step_h).groupby(day).sum()
    exports = ((-hourly_kw).clip(lower=0) * step_h).groupby(day).sum()
    daily_max, daily_min = hourly_kw.groupby(day).max(), hourly_kw.groupby(day).min()

    def one_minus_load_factor(groups):
        mean, peak = hourly_kw.groupby(groups).mean(), hourly_kw.groupby(groups).max()
        ok = peak > 0
        return float((1.0 - mean[ok] / peak[ok]).mean()) if ok.any() else None

    ramps = np.abs(np.diff(hourly_kw.to_numpy()))
    return {
        "basis": "hourly" if interval_s <= 3600 else f"{interval_s} s rounds",
        "days": int(imports.size),
        "avg_daily_import_kwh": _r(imports.mean()), "avg_daily_export_kwh": _r(exports.mean()),
        "avg_daily_peak_kw": _r(daily_max.mean()), "avg_daily_valley_kw": _r(daily_min.mean()),
        "peak_kw": _r(hourly_kw.max()), "valley_kw": _r(hourly_kw.min()),
        "ramping_kw": _r(ramps.mean()) if ramps.size else None,
        "one_minus_daily_load_factor": None if (v := one_minus_load_factor(day)) is None else _r(v),
        "one_minus_monthly_load_factor": None if (v := one_minus_load_factor(month)) is None else _r(v),
    }
