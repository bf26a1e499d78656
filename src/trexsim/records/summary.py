"""summary.json: per participant and market totals of a run (the last episode, plus every episode's market)."""

from __future__ import annotations

import math

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
