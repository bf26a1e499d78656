"""Several markets: two street markets and a community market above them, worked by hand.

Every round each street clears its own book; what a street leaves unmatched goes up to the community
market for the same delivery round; the grid takes what is left after that (docs/configuration.md,
"Several markets").
"""

from __future__ import annotations

import copy

import duckdb
import numpy as np
import pytest

from trexsim import parse_config
from trexsim.errors import ConfigError
from trexsim.fabric import topics
from trexsim.fabric.messages import Orders
from trexsim.simulation import Simulation
from test_mqtt_fabric import broker, run_here_and_in_processes  # noqa: F401 - broker is a fixture

ROUNDS = 10


def _flat(load_wh=0, generation_wh=0):
    # 60 s rounds: W = Wh per round x 60
    return {"type": "flat", "load_w": load_wh * 60, "generation_w": generation_wh * 60}


def _trader(ask=0.08):
    return {"type": "fixed_price", "bid_price": 0.12, "ask_price": ask}


TREE = {
    "study": {"name": "tree", "start_datetime": "2021-07-01 00:00:00", "timezone": "America/Edmonton",
              "days": ROUNDS / 1440, "seed": 3, "interval_s": 60},
    "markets": [
        {"id": "street-a", "members": ["a-seller", "a-buyer"], "parent": "community", "settlement": "average_price",
         "tie_break": "submission"},
        {"id": "street-b", "members": ["b-buyer", "b-seller"], "parent": "community", "settlement": "average_price",
         "tie_break": "submission"},
        {"id": "community", "settlement": "exact_price", "tie_break": "submission"},
    ],
    "grid": {"buy_price": 0.1449, "sell_price": 0.069},
    "participants": {
        "a-seller": {"profile": _flat(generation_wh=3000), "trader": _trader()},
        "a-buyer": {"profile": _flat(load_wh=1000), "trader": _trader()},
        "b-buyer": {"profile": _flat(load_wh=4000), "trader": _trader()},
        "b-seller": {"profile": _flat(generation_wh=500), "trader": _trader()},
        # in no street: its home is the community market (open to everyone)
        "c-seller": {"profile": _flat(generation_wh=1000), "trader": _trader(ask=0.09)},
    },
    "records": {"plots": False},
}
A_SELLER, A_BUYER, B_BUYER, B_SELLER, C_SELLER = range(5)


def _run(tmp_path, cfg=TREE):
    sim = Simulation(parse_config(copy.deepcopy(cfg)), tmp_path / "run")
    return sim, sim.run(plots=False)


def test_two_streets_and_a_community_by_hand(tmp_path):
    sim, res = _run(tmp_path)
    con = duckdb.connect(str(res.database), read_only=True)
    markets = con.execute("SELECT market, market_id, settlement, parent, members FROM markets ORDER BY market").fetchall()
    assert markets == [(0, "street-a", "average_price", "community", 2), (1, "street-b", "average_price", "community", 2),
                       (2, "community", "exact_price", None, 5)]
    rows = con.execute("SELECT delivery_round, market, seller, buyer, quantity_wh, buyer_price, seller_price "
                       "FROM settlements ORDER BY delivery_round, market, seller").fetchall()
    # every delivery round 1..9: the streets match within themselves at the mean of bid and ask (M1); street
    # a's seller has 2000 Wh left and street b's buyer 3500 Wh; the community (M3) matches them, then the
    # community's own seller's 1000 Wh, each at its own prices
    per_round = [(0, A_SELLER, A_BUYER, 1000, 0.10, 0.10), (1, B_SELLER, B_BUYER, 500, 0.10, 0.10),
                 (2, A_SELLER, B_BUYER, 2000, 0.12, 0.08), (2, C_SELLER, B_BUYER, 1000, 0.12, 0.09)]
    assert [(*r[1:5], round(r[5], 12), round(r[6], 12)) for r in rows] == per_round * (ROUNDS - 1)
    assert [r[0] for r in rows] == [d for d in range(1, ROUNDS) for _ in per_round]
    # the community booked the streets' leftovers under their original order ids, for the same delivery round
    up = con.execute("SELECT round, delivery_round, participant, side, quantity_wh FROM orders WHERE market = 2 "
                     "AND participant <> 4 ORDER BY delivery_round, participant").fetchall()
    assert up == [(d - 1, d, p, side, q) for d in range(1, ROUNDS) for p, side, q in
                  ((A_SELLER, "ask", 2000), (B_BUYER, "bid", 3500))]
    same_ids = con.execute("SELECT count(*) FROM orders c JOIN orders s USING (order_id, participant, delivery_round) "
                           "WHERE c.market = 2 AND s.market < 2").fetchone()[0]
    assert same_ids == 2 * (ROUNDS - 1)
    con.close()

    s = res.summary
    p = s["participants"]
    traded = ROUNDS - 1  # round 0 has no contracts: everyone with the grid
    assert p["a-seller"]["net_cost"] == pytest.approx(-3.0 * 0.069 - traded * (0.10 + 0.16), abs=1e-9)
    assert p["a-buyer"]["net_cost"] == pytest.approx(1.0 * 0.1449 + traded * 0.10, abs=1e-9)
    # b-buyer: 500 Wh in its street at 0.10, 3000 Wh in the community at 0.12, 500 Wh from the grid
    assert p["b-buyer"]["net_cost"] == pytest.approx(4.0 * 0.1449 + traded * (0.05 + 0.36 + 0.5 * 0.1449), abs=1e-9)
    assert p["b-buyer"]["grid_bought_wh"] == 4000 + traded * 500
    assert p["b-seller"]["net_cost"] == pytest.approx(-0.5 * 0.069 - traded * 0.05, abs=1e-9)
    assert p["c-seller"]["net_cost"] == pytest.approx(-1.0 * 0.069 - traded * 0.09, abs=1e-9)
    # the community market keeps M3's spread: 2000 Wh x 0.04 + 1000 Wh x 0.03 a round
    assert s["market"]["auctioneer_surplus"] == pytest.approx(traded * 0.11, abs=1e-9)
    assert s["market"]["settled_wh"] == traded * 4500
    assert {k: (v["settled_wh"], v["contracts"]) for k, v in s["markets"].items()} == {
        "street-a": (traded * 1000, traded), "street-b": (traded * 500, traded), "community": (traded * 3000, 2 * traded)}
    assert s["conservation"]["max_energy_error_wh"] == 0 and s["conservation"]["max_money_error_usd"] < 1e-12
    # the money adds up: the participants' bills are what the grid was paid plus the auctioneer's surplus
    bills = sum(v["net_cost"] for v in p.values())
    grid = sum(v["grid_bought_wh"] * 0.1449 - v["grid_sold_wh"] * 0.069 for v in p.values()) / 1000
    assert bills == pytest.approx(grid + s["market"]["auctioneer_surplus"], abs=1e-9)


def test_without_the_community_the_leftovers_go_to_the_grid(tmp_path):
    cfg = copy.deepcopy(TREE)
    for m in cfg["markets"][:2]:
        m.pop("parent")
    cfg["markets"][2]["members"] = ["c-seller"]
    s = _run(tmp_path, cfg)[1].summary
    traded = ROUNDS - 1
    assert s["markets"]["community"]["settled_wh"] == 0  # c-seller has nobody to sell to
    assert s["participants"]["b-buyer"]["grid_bought_wh"] == 4000 + traded * 3500
    assert s["participants"]["a-seller"]["grid_sold_wh"] == 3000 + traded * 2000


def test_orders_for_another_market_are_refused_with_a_reason(tmp_path):
    sim = Simulation(parse_config(copy.deepcopy(TREE)), tmp_path / "run")
    refused = []
    sim.fabric.subscribe(topics.REJECTED, lambda m: refused.append((m.market, list(m.participant), m.reason)))

    def inject(msg):
        one = lambda v: np.array([v], dtype=np.int64)  # noqa: E731
        if msg.round == 2:
            for market, who in (("street-a", B_BUYER), ("no-such-market", A_BUYER), ("", A_BUYER)):
                sim.fabric.publish(topics.ORDERS, Orders(0, 2, 3, one(who), one(0), one(0), np.array([0.12]), one(100),
                                                         one(10**12 + who), market=market))
            # a participant cannot pose as a street handing its leftovers up
            sim.fabric.publish(topics.ORDERS, Orders(0, 2, 3, one(A_BUYER), one(0), one(0), np.array([0.12]), one(100),
                                                     one(10**12), market="community", from_market="street-z"))

    sim.fabric.subscribe(topics.ROUND_START, inject)
    res = sim.run(plots=False)
    assert refused == [("street-a", [B_BUYER], ["not_a_member"]), ("street-a", [A_BUYER], ["unknown_market"]),
                       ("street-a", [A_BUYER], ["unknown_market"]), ("community", [A_BUYER], ["unknown_market"])]
    assert res.summary["market"]["rejected_orders"] == 4
    # the market went on: the ledger of every other order is as without them
    assert res.summary["market"]["settled_wh"] == (ROUNDS - 1) * 4500


def test_the_same_seed_gives_the_same_ledger(tmp_path):
    def ledger(path):
        cfg = copy.deepcopy(TREE)
        for m in cfg["markets"]:
            m["tie_break"] = "random"
        sim = Simulation(parse_config(cfg), path)
        res = sim.run(plots=False)
        con = duckdb.connect(str(res.database), read_only=True)
        out = con.execute("SELECT * FROM settlements ORDER BY ALL").fetchall()
        con.close()
        return out

    assert ledger(tmp_path / "one") == ledger(tmp_path / "two")


@pytest.mark.parametrize(("change", "message"), [
    (lambda c: c.update(market={"settlement": "average_price"}), "either 'market'"),
    (lambda c: c["markets"][0]["members"].append("nobody"), "markets[0] ('street-a').members: 'nobody'"),
    (lambda c: c["markets"][0].update(parent="nowhere"), "markets[0] ('street-a').parent: no market"),
    (lambda c: c["markets"][2].update(parent="street-a"), "form a loop"),
    (lambda c: c["markets"][1].update(id="street-a"), "two markets have this id"),
    (lambda c: c["markets"][1].update(grid={"buy_price": 0.2}), "markets[1] ('street-b').grid"),
    (lambda c: c["markets"][2].update(close_steps=2), "markets[2] ('community').close_steps"),
    (lambda c: c["markets"][2].update(members=["a-seller"]), "'c-seller' trade in no market"),
    (lambda c: c["markets"][2].update(type="tc"), "markets[2] ('community').type"),
    (lambda c: c["markets"][0].update(id="street/a"), "markets[0] ('street/a').id"),
])
def test_a_bad_market_tree_is_refused_naming_the_key(change, message):
    cfg = copy.deepcopy(TREE)
    change(cfg)
    with pytest.raises(ConfigError) as info:
        parse_config(cfg)
    assert message in str(info.value)


def test_one_market_records_index_zero(tmp_path, two_houses):
    res = Simulation(parse_config(two_houses | {"study": two_houses["study"] | {"days": 5 / 1440}}), tmp_path / "r").run(plots=False)
    con = duckdb.connect(str(res.database), read_only=True)
    assert con.execute("SELECT market_id, members FROM markets").fetchall() == [("alex", 2)]
    assert con.execute("SELECT DISTINCT market FROM settlements").fetchall() == [(0,)]
    assert con.execute("SELECT DISTINCT market FROM orders").fetchall() == [(0,)]
    con.close()
    assert "markets" not in res.summary


def test_the_tree_over_mqtt_with_participant_processes_gives_the_same_ledger(tmp_path, broker):  # noqa: F811
    cfg = copy.deepcopy(TREE)
    cfg["study"]["days"] = 20 / 1440
    local = run_here_and_in_processes(cfg, tmp_path, broker)

    def book(db):
        con = duckdb.connect(str(db), read_only=True)
        rows = [con.execute(f"SELECT {cols} FROM {table} ORDER BY ALL").fetchall() for table, cols in (
            # (order ids differ: each participant process numbers its own from its first household's place)
            ("settlements", "market, delivery_round, pool, buyer, seller, quantity_wh, buyer_price, seller_price"),
            ("orders", "market, round, delivery_round, participant, side, price, quantity_wh"),
            ("deliveries", "* EXCLUDE (episode)"))]
        con.close()
        return rows

    net = book(tmp_path / "net" / "run.duckdb")
    assert len(net[0]) == 4 * 19 and net == book(local.database)


def test_a_participant_process_cannot_pose_as_a_street_market(broker):  # noqa: F811
    from trexsim.fabric.mqtt import MqttFabric, _Gate

    fabric = MqttFabric(broker, namespace="gate-markets", role="coordinator")
    refused = []
    fabric._refuse = lambda account, reason, detail, message=None: refused.append(reason)
    gate = _Gate(fabric, [pid for pid, _ in parse_config(copy.deepcopy(TREE)).expanded_participants()])
    one = lambda v: np.array([v], dtype=np.int64)  # noqa: E731
    forged = Orders(0, 0, 1, one(A_SELLER), one(1), one(0), np.array([0.01]), one(10**6), one(1),
                    market="community", from_market="street-a")
    assert gate.admit("a-seller", forged) is None and refused == ["not_a_market"]
    fabric.close()


def test_a_config_with_markets_reads_back_from_its_own_dump():
    config = parse_config(copy.deepcopy(TREE))
    again = parse_config(config.model_dump(mode="json"))
    assert again.market_list() == config.market_list() and again.home_markets() == config.home_markets()
    assert [m.grid.buy_price for m in again.market_list()] == [0.1449] * 3


def test_trexsim_run_prints_each_market(tmp_path):
    import json

    from typer.testing import CliRunner

    from trexsim.cli import app

    path = tmp_path / "tree.json"
    path.write_text(json.dumps(TREE))
    r = CliRunner().invoke(app, ["run", str(path), "--out", str(tmp_path / "out"), "--no-plots", "--no-report"])
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())
    assert "street-a (average_price -> community): 9.0 kWh, 9 contracts, buyers 0.1000 $/kWh" in text
    assert "community (exact_price): 27.0 kWh, 18 contracts, buyers 0.1200 $/kWh" in text
    assert "3 markets" in text


def test_with_one_market_orders_naming_another_are_refused(tmp_path, two_houses):
    cfg = two_houses | {"study": two_houses["study"] | {"days": 4 / 1440}}
    sim = Simulation(parse_config(cfg), tmp_path / "r")
    refused = []
    sim.fabric.subscribe(topics.REJECTED, lambda m: refused.append((m.market, m.reason)))
    one = lambda v: np.array([v], dtype=np.int64)  # noqa: E731
    sim.fabric.subscribe(topics.ROUND_START, lambda msg: msg.round == 1 and sim.fabric.publish(topics.ORDERS, Orders(
        0, 1, 2, one(0), one(0), one(0), np.array([0.12]), one(100), one(10**12), market="elsewhere")))
    sim.run(plots=False)
    assert refused == [("alex", ["unknown_market"])]


def test_an_rl_env_over_several_markets_runs_them_all_or_refuses():
    from trexsim.envs import parallel_env, vector_env

    cfg = copy.deepcopy(TREE)
    cfg["participants"]["b-buyer"]["trader"] = {"type": "external", "max_price": 0.5, "max_quantity_wh": 5000}
    config = parse_config(cfg)
    with pytest.raises(ValueError, match="markets: 3 markets"):
        vector_env(config, num_envs=1, backend="compiled")
    assert vector_env(config, num_envs=1).backend == "simulation"
    env = parallel_env(config)
    env.reset(seed=1)
    bought = []
    env._sim.fabric.subscribe(topics.CLEARED, lambda m: bought.append((m.market, int(m.quantity_wh[m.buyer == B_BUYER].sum()))))
    for _ in range(3):  # [bid price, bid Wh, ask price, ask Wh, battery]: a bid of 5000 Wh at 0.5 $/kWh, no ask
        env.step({"b-buyer": np.array([1.0, 1.0, -1.0, -1.0, 0.0])})
    env.close()
    assert ("street-b", 500) in bought and ("community", 3000) in bought


def test_three_levels_streets_community_and_city(tmp_path):
    cfg = copy.deepcopy(TREE)
    cfg["markets"][2].update(members=["a-seller", "a-buyer", "b-buyer", "b-seller"], parent="city")
    cfg["markets"].append({"id": "city", "settlement": "average_price", "tie_break": "submission"})  # c-seller's home
    sim, res = _run(tmp_path, cfg)
    con = duckdb.connect(str(res.database), read_only=True)
    rows = con.execute("SELECT m.market_id, seller, buyer, quantity_wh, buyer_price, seller_price FROM settlements "
                       "JOIN markets m USING (market) WHERE delivery_round = 5 ORDER BY market, seller").fetchall()
    con.close()
    # the community matches the streets' leftovers (2000 Wh at M3's prices) and hands b-buyer's last 1500 Wh bid
    # up to the city, where c-seller's 1000 Wh ask at 0.09 meets it at (0.12 + 0.09) / 2 (M1)
    assert [(*r[:4], round(r[4], 12), round(r[5], 12)) for r in rows] == [
        ("street-a", A_SELLER, A_BUYER, 1000, 0.10, 0.10), ("street-b", B_SELLER, B_BUYER, 500, 0.10, 0.10),
        ("community", A_SELLER, B_BUYER, 2000, 0.12, 0.08), ("city", C_SELLER, B_BUYER, 1000, 0.105, 0.105)]
    traded = ROUNDS - 1
    assert res.summary["participants"]["b-buyer"]["grid_bought_wh"] == 4000 + traded * 500
    assert res.summary["market"]["auctioneer_surplus"] == pytest.approx(traded * 0.08, abs=1e-9)


def test_a_stricter_parent_checks_the_leftovers_it_is_handed(tmp_path):
    cfg = copy.deepcopy(TREE)
    cfg["markets"][2]["max_price"] = 0.11  # the streets' bids at 0.12 are too dear for the community
    sim, res = _run(tmp_path, cfg)
    con = duckdb.connect(str(res.database), read_only=True)
    refused = con.execute("SELECT market, participant, reason, count(*) FROM rejections GROUP BY ALL").fetchall()
    con.close()
    assert refused == [(2, B_BUYER, "price_out_of_range", ROUNDS - 1)]
    # the community market matches nothing: its only buyer's leftover was refused, its sellers export
    assert res.summary["markets"]["community"]["settled_wh"] == 0
    assert res.summary["participants"]["b-buyer"]["grid_bought_wh"] == 4000 + (ROUNDS - 1) * 3500
