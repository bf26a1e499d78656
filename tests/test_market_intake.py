"""Market intake holes that used to pass silently: late orders, truncated indices, unbounded sizes,
and the records that let a user rebuild the tie rule from the ``orders`` table alone."""

from __future__ import annotations

import copy

import duckdb
import numpy as np
import pytest

from trexsim import parse_config
from trexsim.engine.matching import match_book
from trexsim.errors import ConfigError
from trexsim.fabric import topics
from trexsim.fabric.messages import ASK, BID, NON_DISPATCH, Orders
from trexsim.simulation import Simulation

from test_market_module import Log, grid_only, make, orders, run_rounds


def _rows(sim, sql):
    """Query the run's database (closing the recorder first, so that every row is in)."""
    if sim.recorder.con is not None and not getattr(sim, "_closed_for_test", False):
        sim.recorder.close()
        sim._closed_for_test = True
    con = duckdb.connect(str(sim.db_path), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


@pytest.mark.parametrize("close_steps", [1, 3])
def test_an_order_after_its_round_was_cleared_is_rejected_and_recorded(tmp_path, two_houses, close_steps):
    sim, log = make(tmp_path, grid_only(two_houses), close_steps=close_steps)
    late = []

    def after_clearing(msg):
        # the market cleared delivery round msg.delivery_round at the end of round msg.round; this order
        # for it arrives after that, before the next round starts
        if msg.round == 2:
            late.append(orders(2, msg.delivery_round, [0, 1], [BID, ASK], [NON_DISPATCH] * 2, [0.12, 0.10], [300, 200]))
            sim.fabric.publish(topics.ORDERS, late[-1])

    sim.fabric.subscribe(topics.CLEARED, after_clearing)
    run_rounds(sim, 6)
    assert late
    assert [r.reason for r in log.rejected] == [["delivery_too_near", "delivery_too_near"]]
    assert _rows(sim, "SELECT count(*) FROM orders") == [(0,)]
    assert _rows(sim, "SELECT round, delivery_round, participant, reason FROM rejections ORDER BY participant") == [
        (2, 2 + close_steps, 0, "delivery_too_near"), (2, 2 + close_steps, 1, "delivery_too_near")]
    # an order in time for the same round is still taken
    sim2, log2 = make(tmp_path / "b", grid_only(copy.deepcopy(two_houses)), close_steps=close_steps)
    log2.send[2] = [orders(2, 2 + close_steps, [0, 1], [BID, ASK], [NON_DISPATCH] * 2, [0.12, 0.10], [300, 200])]
    run_rounds(sim2, 6)
    assert not log2.rejected and _rows(sim2, "SELECT sum(quantity_wh) FROM settlements") == [(200,)]


def test_non_integer_indices_and_ids_are_rejected_not_truncated(tmp_path, two_houses):
    sim, log = make(tmp_path, grid_only(two_houses))
    bad = Orders(0, 3, 4, np.array([0.5, 0.0, 1.0, 1.0, 0.0, 1.0]), np.array([0.0, 0.7, 1.0, 1.0, 0.0, 1.0]),
                 np.array([0.0, 0.0, 0.5, 0.0, 0.0, 0.0]), np.full(6, 0.11), np.full(6, 100.0),
                 np.array([1.0, 2.0, 3.0, 4.5, 5.0, 6.0]))
    log.send[3] = [bad]
    run_rounds(sim, 6)
    assert log.rejected[0].reason == ["unknown_participant", "bad_side", "bad_pool", "bad_order_id"]
    # participant 0.5 is not recorded as participant 0
    assert _rows(sim, "SELECT participant, side, pool, order_id, reason FROM rejections ORDER BY order_id") == [
        (-1, 0, 0, 1, "unknown_participant"), (0, -1, 0, 2, "bad_side"), (1, 1, -1, 3, "bad_pool"),
        (1, 1, 0, 4, "bad_order_id")]
    # the two valid orders (ids 5 and 6) were booked as whole numbers and traded
    assert _rows(sim, "SELECT order_id, participant, side FROM orders ORDER BY order_id") == [(5, 0, "bid"), (6, 1, "ask")]
    assert _rows(sim, "SELECT bid_id, ask_id, quantity_wh FROM settlements") == [(5, 6, 100)]


@pytest.mark.parametrize("key,value", [("max_order_wh", 10**19), ("max_order_wh", 2 * 10**9), ("max_price", 1e6),
                                       ("price_tick", 0.0), ("price_tick", 1e-300), ("allowed_prices", [])])
def test_market_bounds_are_checked_by_the_schema(two_houses, key, value):
    two_houses["market"][key] = value
    with pytest.raises(ConfigError, match=rf"market\.{key}"):
        parse_config(two_houses)


def test_the_largest_allowed_order_is_booked_exactly(tmp_path, two_houses):
    sim, log = make(tmp_path, grid_only(two_houses), max_order_wh=1_000_000_000, max_price=1000.0)
    log.send[3] = [orders(3, 4, [0, 1], [BID, ASK], [NON_DISPATCH] * 2, [1000.0, 1000.0], [1_000_000_000, 1_000_000_000])]
    run_rounds(sim, 6)
    assert not log.rejected
    assert _rows(sim, "SELECT quantity_wh FROM orders") == [(1_000_000_000,), (1_000_000_000,)]
    assert _rows(sim, "SELECT quantity_wh, buyer_price FROM settlements") == [(1_000_000_000, 1000.0)]
    cost = _rows(sim, "SELECT market_cost_usd FROM deliveries WHERE round = 4 AND participant = 0")[0][0]
    assert cost == 1e9  # $1e9 exactly: 1e9 Wh at 1000 $/kWh


def _random_community(tmp_path, tie_break):
    cfg = {"study": {"name": "rebuild", "days": 120 / 1440, "seed": 5},
           "market": {"settlement": "average_price", "close_steps": 2, "tie_break": tie_break},
           "participants": {
               "pv": {"count": 5, "profile": {"type": "realistic", "pv_capacity_kw": 7},
                      "storage": {"capacity_wh": 8000, "power_w": 4000},
                      "trader": {"type": "fixed_price", "bid_price": 0.12, "ask_price": 0.10, "battery_ask_price": 0.10}},
               "home": {"count": 5, "profile": {"type": "realistic", "pv_capacity_kw": 0},
                        "trader": {"type": "fixed_price", "bid_price": 0.12, "ask_price": 0.10}}}}
    cfg["study"]["start_datetime"] = "2021-07-01 11:00:00"
    return Simulation(parse_config(cfg), tmp_path / tie_break).run(plots=False)


@pytest.mark.parametrize("tie_break", ["random", "submission"])
def test_the_matching_order_can_be_rebuilt_from_the_orders_table(tmp_path, tie_break):
    result = _random_community(tmp_path, tie_break)
    con = duckdb.connect(str(result.database), read_only=True)
    books = con.execute("SELECT delivery_round, round, tie_rank, batch_position, participant, "
                        "CAST(side = 'ask' AS INTEGER) AS side, CAST(pool = 'dispatch' AS INTEGER) AS pool, price, "
                        "quantity_wh, order_id FROM orders "
                        "ORDER BY delivery_round, round, tie_rank, batch_position").fetchnumpy()
    settlements = con.execute("SELECT delivery_round, bid_id, ask_id, quantity_wh FROM settlements").fetchall()
    con.close()
    rebuilt = []
    ties_seen = 0
    for d in np.unique(books["delivery_round"]):
        sel = books["delivery_round"] == d
        part = books["participant"][sel].astype(np.int64)
        side = books["side"][sel].astype(np.int64)
        pool = books["pool"][sel].astype(np.int64)
        price = books["price"][sel]
        ids = books["order_id"][sel]
        ties_seen += int(np.unique(price[side == 1]).size < (side == 1).sum())
        # ALEX matching of the book in the recorded order (ties kept as given) gives the market's matches
        bi, ai, q, _ = match_book(part, side, pool, price, books["quantity_wh"][sel].astype(np.int64))
        rebuilt += [(int(d), int(ids[b]), int(ids[a]), int(x)) for b, a, x in zip(bi, ai, q)]
    assert ties_seen > 50  # the rebuilt books are full of ties, so their order matters
    assert sorted(rebuilt) == sorted(settlements) and len(settlements) > 100


@pytest.mark.parametrize("path,value", [(("profile", "load_w"), 1e12), (("profile", "generation_scale"), 1e6),
                                        (("trader", "max_quantity_wh"), 10**19)])
def test_participant_sizes_are_bounded(two_houses, path, value):
    spec = two_houses["participants"]["buyer"]
    if path[0] == "trader":
        spec["trader"] = {"type": "external", "max_quantity_wh": value}
    else:
        spec[path[0]][path[1]] = value
    with pytest.raises(ConfigError, match=rf"participants\.buyer\.{path[0]}(\.[a-z_]+)?\.{path[1]}"):
        parse_config(two_houses)
