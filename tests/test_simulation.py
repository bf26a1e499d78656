"""Whole runs: hand-computed results, conservation, determinism, records."""

import hashlib
import json

import duckdb
import numpy as np
import pytest

from trexsim import parse_config
from trexsim.simulation import Simulation

ROUNDS = 1440


def run(cfg, path, **kw):
    return Simulation(parse_config(cfg), path).run(plots=kw.get("plots", False))


def test_two_houses_average_price_by_hand(tmp_path, two_houses):
    res = run(two_houses, tmp_path / "r")
    s = res.summary
    buyer, seller = s["participants"]["buyer"], s["participants"]["seller"]
    # round 0 has no contracts (nothing could be ordered for it); rounds 1..1439 each settle 600 Wh at 0.11
    assert s["market"]["settled_wh"] == 600 * (ROUNDS - 1)
    assert s["market"]["mean_settlement_price"] == pytest.approx(0.11)
    assert buyer["market_bought_wh"] == 600 * (ROUNDS - 1)
    assert buyer["grid_bought_wh"] == 1000 + 400 * (ROUNDS - 1)
    assert seller["grid_sold_wh"] == 600
    assert buyer["net_cost"] == pytest.approx(0.1449 + (ROUNDS - 1) * (0.6 * 0.11 + 0.4 * 0.1449), abs=1e-6)
    assert seller["net_cost"] == pytest.approx(-(0.6 * 0.069) - (ROUNDS - 1) * 0.6 * 0.11, abs=1e-6)
    assert buyer["grid_only_cost"] == pytest.approx(ROUNDS * 1.0 * 0.1449, abs=1e-6)
    assert seller["grid_only_cost"] == pytest.approx(-ROUNDS * 0.6 * 0.069, abs=1e-6)
    assert s["market"]["auctioneer_surplus"] == 0
    assert s["conservation"] == {"max_energy_error_wh": 0, "max_money_error_usd": 0.0, "checked_every_round": True}
    # community saving = traded kWh x (grid buy - grid sell), whatever the price (peers.md TV6)
    saving = s["market"]["total_grid_only_cost"] - s["market"]["total_net_cost"]
    assert saving == pytest.approx(0.6 * (ROUNDS - 1) * (0.1449 - 0.069), abs=1e-6)
    on_disk = json.loads((res.out_dir / "summary.json").read_text())
    assert on_disk["market"] == s["market"]


def test_two_houses_exact_price_surplus(tmp_path, two_houses):
    two_houses["market"]["settlement"] = "exact_price"
    s = run(two_houses, tmp_path / "r").summary
    assert s["market"]["settled_wh"] == 600 * (ROUNDS - 1)
    assert s["market"]["auctioneer_surplus"] == pytest.approx((ROUNDS - 1) * 0.6 * 0.02, abs=1e-6)
    assert s["market"]["mean_buyer_price"] == pytest.approx(0.12)
    assert s["market"]["mean_seller_price"] == pytest.approx(0.10)


def test_two_houses_exact_match_settles_nothing(tmp_path, two_houses):
    two_houses["market"]["settlement"] = "exact_match"
    s = run(two_houses, tmp_path / "r").summary
    assert s["market"]["settled_wh"] == 0
    assert s["participants"]["buyer"]["net_cost"] == pytest.approx(s["participants"]["buyer"]["grid_only_cost"])


def test_database_holds_every_record(tmp_path, two_houses):
    two_houses["study"]["days"] = 10 / 1440
    res = run(two_houses, tmp_path / "r")
    con = duckdb.connect(str(res.database), read_only=True)
    count = lambda q: con.execute(q).fetchone()[0]  # noqa: E731
    assert count("SELECT count(*) FROM orders") == 2 * 9  # one bid and one ask for rounds 1..9
    assert count("SELECT count(*) FROM settlements") == 9
    assert count("SELECT count(*) FROM deliveries") == 2 * 10
    assert count("SELECT count(*) FROM rounds") == 10
    assert count("SELECT status FROM runs") == "finished"
    assert con.execute("SELECT sum(quantity_wh) FROM trades WHERE buyer_id = 'buyer' AND seller_id = 'seller'").fetchone()[0] == 5400
    row = con.execute("SELECT load_wh, bought_wh, grid_import_wh, net_cost_usd FROM deliveries "
                      "WHERE round = 5 AND participant = 0").fetchone()
    assert row[:3] == (1000, 600, 400) and row[3] == pytest.approx(0.6 * 0.11 + 0.4 * 0.1449)
    # per-round energy balance recomputed from the records
    bad = count("SELECT count(*) FROM (SELECT round, sum(load_wh + battery_charge_wh - generation_wh - battery_discharge_wh "
                "- grid_import_wh + grid_export_wh) AS e FROM deliveries GROUP BY round) WHERE e <> 0")
    assert bad == 0
    # each round's row: its grid prices, and totals that agree with the settlements and deliveries
    rows = con.execute("SELECT round, start_utc_s, grid_buy_price, grid_sell_price, market_wh, grid_import_wh, "
                       "grid_export_wh, auctioneer_surplus_usd FROM rounds ORDER BY round").fetchall()
    assert rows[0] == (0, rows[0][1], 0.1449, 0.069, 0, 1000, 600, 0.0)
    assert rows[5] == (5, rows[0][1] + 5 * 60, 0.1449, 0.069, 600, 400, 0, 0.0)


def ledger_hash(db):
    con = duckdb.connect(str(db), read_only=True)
    h = hashlib.sha256()
    for table, key in [("orders", "episode, round, order_id"), ("settlements", "episode, delivery_round, bid_id, ask_id"),
                       ("deliveries", "episode, round, participant")]:
        for row in con.execute(f"SELECT * FROM {table} ORDER BY {key}").fetchall():
            h.update(repr(row).encode())
    con.close()
    return h.hexdigest()


def community(days=0.25, seed=3, settlement="average_price"):
    return {
        "study": {"name": "c", "days": days, "seed": seed, "start_datetime": "2021-06-21 00:00:00"},
        "market": {"settlement": settlement},
        "participants": {
            "pro": {"count": 3, "profile": {"type": "realistic", "pv_capacity_kw": 6},
                    "storage": {"capacity_wh": 10000, "power_w": 4000},
                    "trader": {"type": "fixed_price", "bid_price": 0.12, "ask_price": 0.10}},
            "con": {"count": 2, "profile": {"type": "realistic", "pv_capacity_kw": 0},
                    "trader": {"type": "fixed_price", "bid_price": 0.12, "ask_price": 0.10}},
            "base": {"profile": {"type": "realistic", "pv_capacity_kw": 4}, "storage": {"capacity_wh": 5000},
                     "trader": {"type": "grid_only"}},
        },
    }


def test_same_seed_same_ledger_and_different_seed_different_ledger(tmp_path):
    a = run(community(), tmp_path / "a")
    b = run(community(), tmp_path / "b")
    c = run(community(seed=4), tmp_path / "c")
    assert ledger_hash(a.database) == ledger_hash(b.database)
    assert ledger_hash(a.database) != ledger_hash(c.database)
    assert a.summary["participants"] == b.summary["participants"]


def test_realistic_community_conserves_and_trades(tmp_path):
    res = run(community(days=1), tmp_path / "r", plots=True)
    s = res.summary
    assert s["conservation"]["max_energy_error_wh"] == 0
    assert s["market"]["settled_wh"] > 0
    # the grid-only household never trades; its bill is its grid-only bill
    base = s["participants"]["base"]
    assert base["market_bought_wh"] == base["market_sold_wh"] == 0
    assert base["net_cost"] == pytest.approx(base["grid_only_cost"], abs=1e-9)
    # with perfect forecasts and self-consumption batteries, nobody falls short of what it sold
    assert all(p["shortfall_wh"] == 0 for p in s["participants"].values())
    # trading at 0.11 between 0.069 and 0.1449 leaves every trader no worse off than grid-only
    for pid, p in s["participants"].items():
        assert p["net_cost"] <= p["grid_only_cost"] + 1e-9, pid
    names = sorted(f.name for f in res.figures)
    assert names == ["battery_soc.png", "bills.png", "energy.png", "prices.png"]
    con = duckdb.connect(str(res.database), read_only=True)
    soc = con.execute("SELECT min(soc), max(soc) FROM battery_states").fetchone()
    assert 0 <= soc[0] <= soc[1] <= 1


def test_episodes_repeat_the_same_period(tmp_path, two_houses):
    two_houses["study"].update({"days": 30 / 1440, "episodes": 3})
    s = run(two_houses, tmp_path / "r").summary
    assert [e["settled_wh"] for e in s["episodes"]] == [600 * 29] * 3
    assert s["episode"] == 2


def test_a_crash_mid_run_keeps_what_was_recorded(tmp_path, two_houses):
    from trexsim.fabric import topics

    two_houses["study"]["days"] = 2
    two_houses["records"] = {"batch_rounds": 500}
    sim = Simulation(parse_config(two_houses), tmp_path / "r")

    def explode(msg):
        if msg.round == 1700:
            raise RuntimeError("a module failed")

    sim.fabric.subscribe(topics.ROUND_START, explode)
    with pytest.raises(RuntimeError, match="a module failed"):
        sim.run(plots=False)
    con = duckdb.connect(str(sim.db_path), read_only=True)
    assert con.execute("SELECT status FROM runs").fetchone()[0] == "failed"
    # rounds 0..1699 were delivered before the failure; every one of them is in the database
    assert con.execute("SELECT count(*), max(round) FROM rounds").fetchone() == (1700, 1699)
    assert con.execute("SELECT count(*) FROM deliveries").fetchone()[0] == 2 * 1700


def test_deliveries_view_gives_exactly_what_the_market_settled(tmp_path):
    """Shortfall, unused energy, battery cover and the grid bills are derived in the ``deliveries``
    view from stored columns; every value must equal the one the market computed and published."""
    from trexsim.fabric import topics

    trader = {"type": "fixed_price", "bid_price": 0.12, "ask_price": 0.10}
    cfg = {
        "study": {"name": "view", "start_datetime": "2021-07-01 06:00:00", "timezone": "America/Edmonton",
                  "days": 0.25, "seed": 3, "interval_s": 300},
        "market": {"type": "alex", "settlement": "exact_price", "close_steps": 2,
                   "grid": {"buy_price": 0.1449, "sell_price": 0.069,
                            "tou": [{"hours": list(range(12, 24)), "buy_price": 0.2, "sell_price": 0.05}]}},
        "participants": {
            # external traders that order random quantities: they fall short and leave energy unused
            "pros": {"count": 3, "profile": {"type": "realistic", "annual_load_kwh": 5000, "pv_capacity_kw": 8},
                     "storage": {"capacity_wh": 1500, "power_w": 1000, "efficiency": 0.9, "initial_soc": 0.5},
                     "trader": {"type": "external"}},
            "cons": {"count": 3, "profile": {"type": "realistic", "annual_load_kwh": 6000, "pv_capacity_kw": 0},
                     "trader": trader},
        },
    }
    sim = Simulation(parse_config(cfg), tmp_path / "r")
    published = []
    sim.fabric.subscribe(topics.DELIVERED, published.append)
    (external,) = [pop for pop in sim.participants.traders if pop.kind == "external"]
    rng = np.random.default_rng(0)

    def act(*_):
        external.set_actions(np.full(3, 0.13), rng.integers(0, 400, 3), np.full(3, 0.09), rng.integers(0, 400, 3),
                             np.zeros(3))

    act()
    sim.run(on_round=act, plots=False)
    con = duckdb.connect(str(sim.db_path), read_only=True)
    names = ["net_meter_wh", "bought_wh", "sold_wh", "grid_import_wh", "grid_export_wh", "shortfall_wh", "unused_wh",
             "battery_cover_wh", "market_cost_usd", "market_revenue_usd", "grid_cost_usd", "grid_revenue_usd",
             "grid_only_cost_usd"]
    stored = con.execute(f"SELECT round, participant, {', '.join(names)} FROM deliveries ORDER BY round, participant").fetchall()
    assert len(stored) == len(published) * 6
    nonzero = dict.fromkeys(names, 0)
    for msg in published:
        for p in range(6):
            row = stored[msg.round * 6 + p]
            assert row[:2] == (msg.round, p)
            for name, value in zip(names, row[2:]):
                assert value == getattr(msg, name)[p], (name, msg.round, p)  # exact, not approximate
                nonzero[name] += value != 0
    # the scenario exercises every derived column
    assert all(nonzero[n] > 0 for n in names), str(nonzero)


def test_a_cleared_naming_a_participant_outside_the_roster_is_an_error_naming_it(tmp_path, two_houses):
    """The households total every market's contracts in a compiled call; a ``Cleared`` whose match names an index
    outside the roster (a broken or forged market message) stops with an error saying so, never writes past the
    totals, and what was recorded before stays."""
    from trexsim.fabric import topics
    from trexsim.fabric.messages import Cleared

    two_houses["study"]["days"] = 30 / 1440
    sim = Simulation(parse_config(two_houses), tmp_path / "r")

    def forge(msg):
        if msg.round == 10:
            i = np.array([0], dtype=np.int64)
            sim.fabric.publish(topics.CLEARED, Cleared(msg.episode, msg.round, msg.delivery_round, i * 0, i, i + 2, i + 5,
                                                       np.full(1, 0.1), np.full(1, 0.1), i, i, market=sim.config.market.id))

    sim.fabric.subscribe(topics.ROUND_START, forge)
    with pytest.raises(ValueError, match="outside the roster of 2"):
        sim.run(plots=False)
    con = duckdb.connect(str(sim.db_path), read_only=True)
    assert con.execute("SELECT status FROM runs").fetchone()[0] == "failed"


def test_imbalance_settlement_refuses_a_cleared_outside_the_roster():
    """The delivery module totals every market's contracts in compiled code, which checks no index: a ``Cleared``
    naming a participant outside the roster, or with columns of different lengths, is an error naming the market
    and the round, and adds nothing."""
    from trexsim.fabric.messages import Cleared
    from trexsim.modules.delivery import _Contracts

    c = _Contracts(2)
    i = np.array([0], dtype=np.int64)
    good = Cleared(0, 0, 1, i, i, i + 1, i + 5, np.full(1, 0.1), np.full(1, 0.1), i, i, market="m")
    c.add(good)
    assert c.bought_wh.tolist() == [5, 0] and c.sold_wh.tolist() == [0, 5]
    for bad in (Cleared(0, 0, 1, i, i, i + 2, i + 5, np.full(1, 0.1), np.full(1, 0.1), i, i, market="m"),
                Cleared(0, 0, 1, i, i - 1, i, i + 5, np.full(1, 0.1), np.full(1, 0.1), i, i, market="m"),
                Cleared(0, 0, 1, i, i, i + 1, i + 5, np.zeros(0), np.full(1, 0.1), i, i, market="m")):
        with pytest.raises(ValueError, match="market 'm', delivery round 1"):
            c.add(bad)
    assert c.bought_wh.tolist() == [5, 0] and c.sold_wh.tolist() == [0, 5]
