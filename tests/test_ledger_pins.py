"""Pinned ledgers: every row of a few varied runs, hashed.

A rewrite of the round (or of any rule) that changes a single number, anywhere, fails here at
once. When a change is *meant* to change results, re-pin deliberately: run
``TREXSIM_PRINT_PINS=1 python -m pytest tests/test_ledger_pins.py -s`` and say in the commit
which rule changed and why.
"""

from __future__ import annotations

import copy
import hashlib
import os

import duckdb
import pytest

from trexsim.config.loader import parse_config
from trexsim.simulation import Simulation

# the columns hashed: the rules' outputs (columns added later get their own tests, so that a new
# record does not re-pin every ledger)
TABLES = {
    "orders": "episode, round, delivery_round, order_id, participant, side, pool, price, quantity_wh",
    "rejections": "episode, round, delivery_round, order_id, participant, side, pool, price, quantity_wh, reason",
    "settlements": "episode, round, delivery_round, pool, buyer, seller, quantity_wh, buyer_price, seller_price, "
                   "bid_id, ask_id",
    "delivery_rows": "episode, round, participant, load_wh, generation_wh, battery_charge_wh, battery_discharge_wh, "
                     "battery_stored_wh, bought_wh, sold_wh, grid_import_wh, grid_export_wh, market_cost_usd, "
                     "market_revenue_usd, grid_only_net_wh",
    "rounds": "episode, round, start_utc_s, grid_buy_price, grid_sell_price, market_wh, grid_import_wh, "
              "grid_export_wh, auctioneer_surplus_usd",
}

_PROSUMER = {"profile": {"type": "realistic", "annual_load_kwh": 5500, "pv_capacity_kw": 7.0},
             "storage": {"capacity_wh": 13500, "power_w": 5000, "efficiency": 0.95, "initial_soc": 0.5},
             "trader": {"type": "fixed_price", "bid_price": 0.12, "ask_price": 0.10}}
_CONSUMER = {"profile": {"type": "realistic", "annual_load_kwh": 4500, "pv_capacity_kw": 0},
             "trader": {"type": "fixed_price", "bid_price": 0.12, "ask_price": 0.10}}


def _study(name, seed, days=1, episodes=1):
    return {"name": name, "start_datetime": "2021-07-01 00:00:00", "timezone": "America/Edmonton", "days": days,
            "episodes": episodes, "seed": seed, "interval_s": 60}


def _community(settlement="average_price", close_steps=1, battery_ask=None, tie_break="submission", prices=None,
               dispatch_bids=False):
    prosumer = copy.deepcopy(_PROSUMER) | {"count": 6}
    consumer = copy.deepcopy(_CONSUMER) | {"count": 4}
    if dispatch_bids:
        consumer["trader"]["bid_pool"] = "dispatch"
    if prices is not None:  # (bid, ask) of every trader
        for group in (prosumer, consumer):
            group["trader"]["bid_price"], group["trader"]["ask_price"] = prices
    if battery_ask is not None:
        prosumer["trader"]["battery_ask_price"] = battery_ask
    return {"market": {"settlement": settlement, "close_steps": close_steps, "tie_break": tie_break,
                       "grid": {"buy_price": 0.1449, "sell_price": 0.069}},
            "participants": {"prosumer": prosumer, "consumer": consumer}}


CONFIGS = {
    # the default example's community, one day, M1
    "m1-community": {"study": _study("m1", 42)} | _community(),
    # M3 with batteries selling spare discharge, orders two rounds ahead
    "m3-battery-close2": {"study": _study("m3", 5)} | _community("exact_price", 2, battery_ask=0.11),
    # M2 over a time-of-use tariff, close_steps 3
    "m2-tou-close3": {"study": _study("m2", 9)} | _community("exact_match", 3, prices=(0.11, 0.11)) | {
        "market": {"settlement": "exact_match", "close_steps": 3, "tie_break": "submission",
                   "grid": {"buy_price": 0.1449, "sell_price": 0.069,
                            "tou": [{"hours": [17, 18, 19, 20], "buy_price": 0.30, "sell_price": 0.05}]}}},
    # the default tie-break (a fresh random order each round), and pro rata shares
    "m1-community-random": {"study": _study("m1r", 42)} | _community(tie_break="random"),
    # SBBA: one price a round and a seller lottery drawn from the seed
    "sbba-community-random": {"study": _study("sbba", 42)} | _community("sbba", tie_break="random"),
    "m3-battery-close2-pro-rata": {"study": _study("m3p", 5)} | _community("exact_price", 2, battery_ask=0.11,
                                                                            tie_break="pro_rata"),
    # consumers buy battery energy in the dispatchable pool, orders two rounds ahead
    "m1-battery-dispatch-close2": {"study": _study("m1d", 5)} | _community("average_price", 2, battery_ask=0.11,
                                                                            tie_break="random", dispatch_bids=True),
    # learning traders, two short episodes
    "m1-qlearning": {"study": _study("ql", 3, days=1, episodes=2),
                     "market": {"settlement": "average_price", "close_steps": 1, "tie_break": "submission",
                                "grid": {"buy_price": 0.1449, "sell_price": 0.069}},
                     "participants": {
                         "buyer": {"count": 3, "profile": {"type": "flat", "load_w": 30000},
                                   "trader": {"type": "q_learning"}},
                         "seller": {"count": 3, "profile": {"type": "flat", "generation_w": 24000},
                                    "trader": {"type": "q_learning"}}}},
}

def _example(name, **changes):
    """A bundled example as a dict, with top-level sections updated by ``changes``."""
    from importlib import resources

    import pyjson5

    data = pyjson5.decode((resources.files("trexsim.config") / "examples" / f"{name}.json").read_text())
    for key, value in changes.items():
        data[key] = data.get(key, {}) | value
    return data


# the bundled examples (the community shortened to one day; TC needs the powerflow extra)
CONFIGS["example-two-houses"] = _example("two-houses", market={"tie_break": "submission"})
CONFIGS["example-community"] = _example("community", study={"days": 1})
CONFIGS["example-tc"] = _example("tc")   # its households plan with yesterday's profiles (the default forecast)
CONFIGS["example-tc-perfect"] = _example("tc")
CONFIGS["example-tc-perfect"]["tc"]["forecast"] = {"type": "perfect"}   # the pin from before forecasts existed
# two street markets under a community market (M1 streets, M3 community), realistic households
CONFIGS["example-two-streets"] = _example("two-streets")
# M3 learners over two episodes with orders two rounds ahead, the default tie rule
CONFIGS["m3-qlearning-close2"] = copy.deepcopy(CONFIGS["m1-qlearning"]) | {
    "market": {"settlement": "exact_price", "close_steps": 2, "grid": {"buy_price": 0.1449, "sell_price": 0.069}}}

PINS = {
    "m1-community": "40e6fc7c1dd56730",
    "m3-battery-close2": "8f416d90addae8bd",
    "m2-tou-close3": "39ccf3b00304fae5",
    "m1-qlearning": "a6fc0ab36f2186dd",
    "m1-community-random": "a425d4aa823d6fb9",
    "m3-battery-close2-pro-rata": "59776645290363fa",
    "sbba-community-random": "60ded8ccf1a437b7",  # (the lottery became counter-based, compiled with SBBA)
    "m1-battery-dispatch-close2": "00048fa8261f3907",
    "example-two-houses": "34e0a04a68373c06",
    "example-community": "a425d4aa823d6fb9",
    "example-tc": "460b957c77d3d92f",
    "example-tc-perfect": "32838a302e2b4bdf",
    "m3-qlearning-close2": "7acb0e3d692e1021",
    "example-two-streets": "ff279708ba584ae7",
}


# with several markets, the market of every order, rejection and contract too
MARKET_TABLES = {name: cols + ", market" for name, cols in TABLES.items() if name in ("orders", "rejections", "settlements")}
TC_TABLES = {"tc_schedule": "episode, horizon_first_round, first_round, start_utc_s, tou_buy_price, congestion, price, "
                            "sell_price, predicted_transformer_loading_pct, predicted_voltage_deviation_pu"}


def ledger_hash(db_path, tables=TABLES) -> str:
    """SHA-256 over every row of the ledger tables, each table in a fixed order."""
    digest = hashlib.sha256()
    con = duckdb.connect(str(db_path), read_only=True)
    try:
        for table, cols in tables.items():
            rows = con.execute(f"SELECT {cols} FROM {table} ORDER BY {cols}").fetchall()
            digest.update(table.encode())
            for row in rows:
                # floats to 12 significant digits: a changed rule fails, the last bits of a float library on
                # another CPU do not
                digest.update(repr(tuple(f"{v:.12g}" if isinstance(v, float) else v for v in row)).encode())
    finally:
        con.close()
    return digest.hexdigest()[:16]


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_ledger_is_pinned(name, tmp_path):
    if name.startswith("example-tc"):
        pytest.importorskip("opendssdirect", reason="the TC example needs the powerflow extra (pip install 'trexsim[powerflow]')")
    config = parse_config(CONFIGS[name])
    result = Simulation(config, tmp_path / name).run(plots=False)
    got = ledger_hash(result.database, TABLES | (TC_TABLES if name.startswith("example-tc") else {})
                      | (MARKET_TABLES if config.markets is not None else {}))
    if os.environ.get("TREXSIM_PRINT_PINS"):
        print(f"\n    {name!r}: {got!r},")
    assert PINS[name] is not None, f"{name}: no pin yet (got {got})"
    assert got == PINS[name], f"{name}: the ledger changed ({got} != pinned {PINS[name]})"
