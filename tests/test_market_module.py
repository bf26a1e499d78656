"""The market module over the fabric: the timeline of a round, order intake and rejections, pools."""

import duckdb
import numpy as np
import pytest

from trexsim import parse_config
from trexsim.fabric import topics
from trexsim.fabric.messages import ASK, BID, DISPATCH, NON_DISPATCH, Orders
from trexsim.simulation import Simulation


def grid_only(cfg):
    for p in cfg["participants"].values():
        p["trader"] = {"type": "grid_only"}
    return cfg


class Log:
    """A module that listens to everything and can send orders of its own (a rogue participant)."""

    def __init__(self, fabric):
        self.fabric = fabric
        self.cleared, self.delivered, self.rejected = [], [], []
        self.send: dict[int, list[Orders]] = {}
        fabric.subscribe(topics.CLEARED, self.cleared.append)
        fabric.subscribe(topics.DELIVERED, self.delivered.append)
        fabric.subscribe(topics.REJECTED, self.rejected.append)
        fabric.subscribe(topics.ROUND_START, self.on_round_start)

    def on_round_start(self, msg):
        for orders in self.send.get(msg.round, []):
            self.fabric.publish(topics.ORDERS, orders)


def orders(rnd, delivery, participant, side, pool, price, qty, ids=None, episode=0):
    n = len(participant)
    return Orders(episode, rnd, delivery, np.array(participant), np.array(side), np.array(pool),
                  np.array(price, dtype=float), np.array(qty), np.arange(100, 100 + n) if ids is None else np.array(ids))


def run_rounds(sim, n):
    sim.begin_episode(0)
    for _ in range(n):
        assert sim.step()


def make(tmp_path, cfg, **market):
    cfg["market"].update(market)
    cfg["study"]["days"] = 10 / 1440  # 10 rounds
    sim = Simulation(parse_config(cfg), tmp_path / "run")
    return sim, Log(sim.fabric)


def test_order_in_round_t_is_cleared_at_its_end_and_delivered_in_t_plus_1(tmp_path, two_houses):
    sim, log = make(tmp_path, grid_only(two_houses))
    # buyer (0) bids 300 Wh, seller (1) asks 200 Wh, placed in round 3 for round 4
    log.send[3] = [orders(3, 4, [0, 1], [BID, ASK], [NON_DISPATCH, NON_DISPATCH], [0.12, 0.10], [300, 200])]
    run_rounds(sim, 6)
    cleared = [c for c in log.cleared if len(c.quantity_wh)]
    assert len(cleared) == 1
    c = cleared[0]
    assert (c.round, c.delivery_round) == (3, 4)
    assert c.quantity_wh.tolist() == [200] and c.buyer.tolist() == [0] and c.seller.tolist() == [1]
    delivered = {d.round: d for d in log.delivered}
    assert delivered[4].bought_wh.tolist() == [200, 0] and delivered[4].sold_wh.tolist() == [0, 200]
    assert delivered[3].bought_wh.tolist() == [0, 0] and delivered[5].bought_wh.tolist() == [0, 0]
    # round 4: buyer used 1000 Wh, 200 from the seller, 800 from the grid; seller exported 400 of its 600
    assert delivered[4].grid_import_wh.tolist() == [800, 0]
    assert delivered[4].grid_export_wh.tolist() == [0, 400]
    assert delivered[4].market_cost_usd[0] == pytest.approx(200 * 0.11 / 1000)


@pytest.mark.parametrize("close_steps", [1, 2, 3])
def test_orders_for_past_or_too_near_rounds_are_rejected(tmp_path, two_houses, close_steps):
    sim, log = make(tmp_path, grid_only(two_houses), close_steps=close_steps)
    k = 4
    log.send[k] = [orders(k, d, [0], [BID], [NON_DISPATCH], [0.12], [100], ids=[d + 10]) for d in range(k - 1, k + close_steps + 1)]
    run_rounds(sim, 8)
    rejected = {int(r.order_id[0]): r.reason[0] for r in log.rejected}
    assert rejected == {d + 10: "delivery_too_near" for d in range(k - 1, k + close_steps)}


def test_order_far_ahead_waits_until_its_round_clears(tmp_path, two_houses):
    sim, log = make(tmp_path, grid_only(two_houses))
    log.send[1] = [orders(1, 6, [0, 1], [BID, ASK], [NON_DISPATCH] * 2, [0.12, 0.10], [50, 50])]
    run_rounds(sim, 8)
    c = [c for c in log.cleared if len(c.quantity_wh)]
    assert [(x.round, x.delivery_round) for x in c] == [(5, 6)]
    assert not log.rejected


def test_each_kind_of_bad_order_is_rejected_and_the_market_goes_on(tmp_path, two_houses):
    sim, log = make(tmp_path, two_houses)
    bad = [
        (0, BID, NON_DISPATCH, 0.12, 10.5, "quantity_not_integer"),
        (0, BID, NON_DISPATCH, 0.12, -5, "quantity_not_positive"),
        (0, BID, NON_DISPATCH, 0.12, 0, "quantity_not_positive"),
        (0, BID, NON_DISPATCH, 0.12, float("nan"), "quantity_not_finite"),
        (0, BID, NON_DISPATCH, 0.12, 1e12, "quantity_too_large"),
        (0, BID, NON_DISPATCH, float("nan"), 10, "price_not_finite"),
        (0, BID, NON_DISPATCH, -0.5, 10, "price_out_of_range"),
        (0, BID, NON_DISPATCH, 1e6, 10, "price_out_of_range"),
        (7, BID, NON_DISPATCH, 0.12, 10, "unknown_participant"),
        (-1, BID, NON_DISPATCH, 0.12, 10, "unknown_participant"),
        (0, 5, NON_DISPATCH, 0.12, 10, "bad_side"),
        (0, BID, 9, 0.12, 10, "bad_pool"),
        (1, ASK, NON_DISPATCH, 0.10, 20, ""),  # a good order in the same batch is kept
    ]
    cols = list(zip(*bad))
    msg = Orders(0, 2, 3, np.array(cols[0]), np.array(cols[1]), np.array(cols[2]), np.array(cols[3], dtype=float),
                 np.array(cols[4], dtype=float), np.arange(len(bad)) + 1000)
    stale = orders(1, 3, [0], [BID], [NON_DISPATCH], [0.12], [10], ids=[2000])  # placed "in round 1", sent in round 2
    malformed = Orders(0, 2, 3, np.array([0, 1]), np.array([BID]), np.array([0]), np.array([0.1]), np.array([1]), np.array([3000]))
    log.send[2] = [msg, stale, malformed]
    run_rounds(sim, 10)
    reasons = {}
    for r in log.rejected:
        for oid, reason in zip(r.order_id.tolist(), r.reason):
            reasons[oid] = reason
    expected = {1000 + i: b[5] for i, b in enumerate(bad) if b[5]}
    assert {k: reasons[k] for k in expected} == expected
    assert 1000 + len(bad) - 1 not in reasons
    assert reasons[2000] == "wrong_round"
    assert reasons[3000] == "malformed"
    # the market kept clearing: the good ask of 20 Wh traded on top of the regular 600 Wh
    round3 = [d for d in log.delivered if d.round == 3][0]
    assert round3.sold_wh.tolist() == [0, 620]
    sim.recorder.close()
    con = duckdb.connect(str(sim.db_path), read_only=True)
    recorded = dict(con.execute("SELECT order_id, reason FROM rejections").fetchall())
    assert recorded[1000] == "quantity_not_integer" and recorded[2000] == "wrong_round"
    # only accepted orders are in the book's table, at their booked prices
    booked = con.execute("SELECT order_id, side, quantity_wh FROM orders WHERE round = 2 AND order_id >= 1000").fetchall()
    assert booked == [(1000 + len(bad) - 1, "ask", 20)]


def test_the_two_pools_clear_separately(tmp_path, two_houses):
    sim, log = make(tmp_path, grid_only(two_houses))
    # a bid in the non-dispatchable pool never meets a dispatchable (battery) ask, even at a good price
    log.send[2] = [orders(2, 3, [0, 1], [BID, ASK], [NON_DISPATCH, DISPATCH], [0.14, 0.08], [100, 100])]
    # the same buyer bidding in the dispatchable pool does meet it; each pool at its own price
    log.send[4] = [orders(4, 5, [0, 1, 0, 1], [BID, ASK, BID, ASK], [DISPATCH, DISPATCH, NON_DISPATCH, NON_DISPATCH],
                          [0.14, 0.13, 0.12, 0.10], [100, 100, 50, 50])]
    run_rounds(sim, 8)
    c = [c for c in log.cleared if len(c.quantity_wh)]
    assert [x.delivery_round for x in c] == [5]
    assert c[0].pool.tolist() == [DISPATCH, NON_DISPATCH]
    assert c[0].quantity_wh.tolist() == [100, 50]
    assert c[0].buyer_price.tolist() == pytest.approx([0.135, 0.11])


def test_exact_match_with_allowed_prices_rejects_other_prices(tmp_path, two_houses):
    sim, log = make(tmp_path, grid_only(two_houses), settlement="exact_match", allowed_prices=[0.10, 0.11, 0.12])
    log.send[2] = [orders(2, 3, [0, 1, 0], [BID, ASK, BID], [0, 0, 0], [0.11, 0.11, 0.115], [100, 80, 5])]
    run_rounds(sim, 5)
    assert [r.reason for r in log.rejected] == [["price_not_allowed"]]
    c = [c for c in log.cleared if len(c.quantity_wh)][0]
    assert c.quantity_wh.tolist() == [80] and c.buyer_price.tolist() == pytest.approx([0.11])


@pytest.mark.parametrize("battery", [False, True])
def test_seller_shortfall_with_and_without_battery_cover(tmp_path, two_houses, battery):
    if battery:  # a full battery, so the seller's trader plans no charging and asks its whole 600 Wh
        two_houses["participants"]["seller"]["storage"] = {"capacity_wh": 10000, "power_w": 60000, "initial_soc": 1.0,
                                                           "efficiency": 1.0, "monthly_self_discharge": 0.0}
    sim, log = make(tmp_path, two_houses)
    # the seller (1) sells 100 Wh more than its PV will make for round 4
    log.send[3] = [orders(3, 4, [1], [ASK], [NON_DISPATCH], [0.10], [100], ids=[900])]
    run_rounds(sim, 6)
    d = {x.round: x for x in log.delivered}[4]
    assert d.sold_wh.tolist() == [0, 700] and d.bought_wh.tolist() == [700, 0]
    if battery:
        # rule 8: the seller's battery discharges the 100 Wh; nothing is bought from the grid
        assert (d.shortfall_wh[1], d.battery_cover_wh[1], d.grid_import_wh[1]) == (0, 100, 0)
    else:
        # rule 8: the seller pays the grid's buy price for the 100 Wh it did not deliver
        assert (d.shortfall_wh[1], d.battery_cover_wh[1], d.grid_import_wh[1]) == (100, 0, 100)
        assert d.grid_cost_usd[1] == pytest.approx(100 * 0.1449 / 1000)
    # the buyer got all it bought; it still pays for 700 Wh at the settlement price
    assert d.grid_import_wh[0] == 300
    assert d.market_cost_usd[0] == pytest.approx(700 * 0.11 / 1000)
    assert d.market_revenue_usd[1] == pytest.approx(700 * 0.11 / 1000)


def test_buyer_unused_energy_in_a_run(tmp_path, two_houses):
    two_houses["participants"]["seller"]["profile"]["generation_w"] = 120000  # 2000 Wh per round
    sim, log = make(tmp_path, two_houses)
    # the buyer (load 1000 Wh) buys 300 Wh more than it will use for round 4
    log.send[3] = [orders(3, 4, [0], [BID], [NON_DISPATCH], [0.13], [300], ids=[901])]
    run_rounds(sim, 6)
    d = {x.round: x for x in log.delivered}[4]
    assert d.bought_wh[0] == 1300 and d.unused_wh[0] == 300
    # rule 9: it pays the seller for all 1300 Wh; the unused 300 Wh are exported at the grid's sell price
    assert d.market_cost_usd[0] == pytest.approx((300 * 0.115 + 1000 * 0.11) / 1000)
    assert d.grid_export_wh[0] == 300 and d.grid_import_wh[0] == 0
    assert d.grid_revenue_usd[0] == pytest.approx(300 * 0.069 / 1000)
    # the seller delivered 1300 of its 2000 Wh; the other 700 go to the grid
    assert d.grid_export_wh[1] == 700 and d.shortfall_wh[1] == 0


def test_every_reason_the_market_can_give_is_documented():
    import re
    from pathlib import Path

    from trexsim.engine.intake import REASONS
    from trexsim.modules.market import _REASON_NAMES, REJECT_REASONS

    codes = {r for r in _REASON_NAMES if r} | {"malformed", "wrong_round", "delivery_too_near", "delivery_too_far",
                                               "delivery_after_episode", "unknown_market"}
    assert codes == set(REJECT_REASONS)
    assert set(REASONS[1:]) <= codes
    reference = (Path(__file__).resolve().parents[1] / "docs" / "configuration.md").read_text()
    assert not [c for c in codes if not re.search(rf"`{c}`", reference)]
