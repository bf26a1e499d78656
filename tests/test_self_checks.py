"""The market's self-checks can fail: deliberately broken mechanisms stop the run with the round
and the rule; budget-balanced mechanisms keep exactly 0; the checks recompute, not restate."""

from __future__ import annotations

import json
from typing import ClassVar

import duckdb
import numpy as np
import pytest

from trexsim import parse_config
from trexsim.engine.checks import DELIVERY_RULES, auctioneer_surplus_usd, check_delivery
from trexsim.engine.matching import Matches
from trexsim.engine.mechanisms import PairwiseMechanism, register_mechanism
from trexsim.errors import ConservationError
from trexsim.simulation import Simulation


@register_mechanism
class _PaysSellersNaN(PairwiseMechanism):
    name = "test_broken_nan_seller"

    def settlement_prices(self, bid_price, ask_price):
        return (bid_price + ask_price) / 2, np.full(bid_price.size, np.nan)


@register_mechanism
class _ChargesAboveTheBid(PairwiseMechanism):
    name = "test_broken_above_bid"
    budget_balance: ClassVar[str] = "weak"

    def settlement_prices(self, bid_price, ask_price):
        return bid_price + 0.01, ask_price


@register_mechanism
class _ClaimsStrongBalance(PairwiseMechanism):
    name = "test_broken_claims_strong"  # M3's prices, declared strongly budget balanced

    def settlement_prices(self, bid_price, ask_price):
        return bid_price, ask_price


@register_mechanism
class _PaysSellersMore(PairwiseMechanism):
    name = "test_broken_negative_surplus"
    budget_balance: ClassVar[str] = "weak"

    def settlement_prices(self, bid_price, ask_price):
        return ask_price, bid_price  # the buyer pays the ask, the seller receives the bid: the auctioneer pays


@register_mechanism
class _Overfills(PairwiseMechanism):
    name = "test_broken_overfill"

    def settlement_prices(self, bid_price, ask_price):
        mid = (bid_price + ask_price) / 2
        return mid, mid

    def clear_book(self, participant, side, pool, price, quantity_wh, n_pools=2):
        m, pools = super().clear_book(participant, side, pool, price, quantity_wh, n_pools)
        return Matches(m.bid_index, m.ask_index, m.quantity_wh * 2, m.buyer_price, m.seller_price), pools


def _config(settlement, days=30 / 1440):
    return parse_config({
        "study": {"name": "checks", "days": days, "seed": 3, "start_datetime": "2021-07-01 11:00:00"},
        "market": {"settlement": settlement},
        "participants": {
            "buyer": {"count": 2, "profile": {"type": "flat", "load_w": 30000},
                      "trader": {"type": "fixed_price", "bid_price": 0.12, "ask_price": 0.10}},
            "seller": {"count": 2, "profile": {"type": "flat", "generation_w": 18000},
                       "trader": {"type": "fixed_price", "bid_price": 0.12, "ask_price": 0.10}}}})


@pytest.mark.parametrize("settlement,rule", [
    ("test_broken_nan_seller", "settlement prices must be finite"),
    ("test_broken_above_bid", "a buyer never pays more than its bid"),
    ("test_broken_claims_strong", "strong budget balance: the buyer's price equals the seller's price"),
    ("test_broken_negative_surplus", "weak budget balance: the buyer's price is at least the seller's price"),
    ("test_broken_overfill", "an order is never filled beyond its quantity"),
])
def test_a_broken_mechanism_stops_the_run_naming_the_round_and_the_rule(tmp_path, settlement, rule):
    sim = Simulation(_config(settlement), tmp_path / "run")
    with pytest.raises(ConservationError) as err:
        sim.run(plots=False)
    message = str(err.value)
    # the first book is cleared at the end of round 0, for delivery round 1
    assert "episode 0, round 0 (clearing delivery round 1)" in message and repr(settlement) in message
    assert f"broken rule: {rule}" in message
    con = duckdb.connect(str(sim.db_path), read_only=True)
    try:  # what was recorded before the fault is kept, and the run says it failed
        assert con.execute("SELECT status FROM runs").fetchone() == ("failed",)
        assert con.execute("SELECT count(*) FROM orders").fetchone()[0] == 4
    finally:
        con.close()


def test_budget_balanced_mechanisms_keep_exactly_zero(tmp_path):
    for settlement in ("average_price", "exact_match"):
        cfg = _config(settlement, days=200 / 1440)
        if settlement == "exact_match":
            for p in cfg.participants.values():
                p.trader.bid_price = p.trader.ask_price = 0.1107
        # uneven quantities so that money per pair has many digits
        cfg.participants["buyer"].profile.load_w = 31337
        result = Simulation(cfg, tmp_path / settlement).run(plots=False)
        con = duckdb.connect(str(result.database), read_only=True)
        surplus = [r[0] for r in con.execute("SELECT auctioneer_surplus_usd FROM rounds").fetchall()]
        settled = con.execute("SELECT sum(quantity_wh) FROM settlements").fetchone()[0]
        con.close()
        assert settled > 10_000 and all(s == 0.0 and np.copysign(1, s) == 1 for s in surplus)
        text = (result.out_dir / "summary.json").read_text()
        assert json.loads(text)["market"]["auctioneer_surplus"] == 0.0 and "-0.0" not in text


def test_exact_price_surplus_is_the_sum_of_price_gaps(tmp_path):
    result = Simulation(_config("exact_price", days=100 / 1440), tmp_path / "m3").run(plots=False)
    con = duckdb.connect(str(result.database), read_only=True)
    per_round = con.execute("""SELECT r.round, r.auctioneer_surplus_usd,
        coalesce((SELECT sum(s.quantity_wh * (s.buyer_price - s.seller_price) / 1000.0) FROM settlements s
                  WHERE s.delivery_round = r.round), 0) FROM rounds r ORDER BY r.round""").fetchall()
    con.close()
    assert all(abs(a - b) < 1e-12 and a >= 0 for _, a, b in per_round)
    # 2 buyers x 500 Wh against 2 sellers x 300 Wh a round at 0.12 / 0.10: 600 Wh x 0.02 $/kWh = $0.012
    assert per_round[5][1] == pytest.approx(0.012, abs=1e-15)
    assert auctioneer_surplus_usd(np.array([100, 50]), np.array([0.11, 0.2]), np.array([0.11, 0.2])) == 0.0


def _delivery(**changes):
    """A consistent round of two participants, with ``changes`` applied."""
    d = dict(load=[500, 0], gen=[0, 300], charge=[0, 0], discharge=[0, 0], bought=[300, 0], sold=[0, 300],
             cost=[0.033, 0.0], revenue=[0.0, 0.033], imp=[200, 0], exp=[0, 0], grid_cost=[0.2 * 0.14, 0.0],
             grid_revenue=[0.0, 0.0])
    d.update(changes)
    a = {k: np.array(v) for k, v in d.items()}
    return check_delivery((a["load"], a["gen"], a["charge"], a["discharge"]), (a["bought"], a["sold"], a["cost"], a["revenue"]),
                          (a["imp"], a["exp"], a["grid_cost"], a["grid_revenue"]), (0.14, 0.06), 0.0)


def test_delivery_checks_recompute_each_quantity():
    assert _delivery() == (0, -1)
    rule = lambda r: DELIVERY_RULES.index(r)  # noqa: E731
    assert _delivery(imp=[201, 0]) == (rule("per participant: metered net energy = bought - sold + grid import - grid export"), 0)
    assert _delivery(grid_cost=[0.029, 0.0]) == (rule("grid cost = grid import x grid buy price"), 0)
    assert _delivery(exp=[0, 5], grid_revenue=[0, 0.0003], gen=[0, 305]) == (0, -1)
    assert _delivery(exp=[0, 5], gen=[0, 305]) == (rule("grid revenue = grid export x grid sell price"), 1)
    assert _delivery(revenue=[0.0, 0.032]) == (rule("buyers paid what sellers received plus the auctioneer's surplus"), -1)
    assert _delivery(revenue=[0.0, np.nan]) == (rule("market money must be finite"), 1)
    assert _delivery(gen=[0, -1]) == (rule("meter readings must be non-negative"), 1)
    assert _delivery(bought=[300, 0], sold=[0, 299], gen=[0, 299]) == (rule("energy bought in the market equals energy sold"), -1)
