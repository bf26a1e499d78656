"""The example trader plug-in (examples/trexsim-zic): zero-intelligence constrained traders found through
their entry point, their orders worked by hand, their config errors named by key, and run by ``trexsim run``
and an RL env; plus the registry's own refusals."""

import json
import os
import subprocess
import sys
from importlib import metadata

import duckdb
import numpy as np
import pytest

pytest.importorskip("trexsim_zic", reason="the example trader plug-in is not installed: pip install "
                                          "./examples/trexsim-zic (.ci/run installs it)")
from trexsim_zic import ZIConstrainedTraders  # noqa: E402

from trexsim import parse_config  # noqa: E402
from trexsim.agents.base import TraderObservation, TraderPopulation, register_trader, trader_kind  # noqa: E402
from trexsim.errors import ConfigError  # noqa: E402
from trexsim.plugins import PluginError, load_trader_entry_point, trader_origin  # noqa: E402


def households(**zic):
    """A buyer needing 1,000 Wh a round and a seller with 600 Wh to spare (1-minute rounds), both ZI-C."""
    return {
        "study": {"name": "zic", "days": 30 / 1440, "seed": 11, "start_datetime": "2021-07-01 12:00:00"},
        "market": {"grid": {"buy_price": 0.1449, "sell_price": 0.069}},
        "participants": {
            "buyer": {"profile": {"type": "flat", "load_w": 60_000}, "trader": {"type": "zi_constrained", **zic}},
            "seller": {"profile": {"type": "flat", "generation_w": 36_000}, "trader": {"type": "zi_constrained", **zic}},
        },
    }


def test_found_through_its_entry_point():
    kind = trader_kind("zi_constrained")
    assert kind.population == "trexsim_zic:ZIConstrainedTraders"
    assert (kind.compiled_env, kind.study_fast_path) == (False, False)   # no compiled driver implements it
    assert trader_origin("zi_constrained") == ("entry point 'zi_constrained = trexsim_zic:ZIConstrainedTraders' "
                                               "(group trexsim.traders) of package trexsim-zic 0.1.0")
    assert trader_origin("fixed_price") == "built-in"


def test_orders_by_hand():
    specs = [parse_config(households()).participants["buyer"].trader] * 3
    pop = ZIConstrainedTraders(np.arange(3), specs, np.random.default_rng(0))
    u = np.random.default_rng(0).random(3)   # the population's own draws, one per member
    obs = TraderObservation(0, 0, 1, np.zeros(3), np.zeros(3), np.zeros(3), np.array([500, -300, 0]), np.zeros(3),
                            grid_buy_price=0.20, grid_sell_price=0.05)
    batch = pop.act(obs)
    assert batch.member.tolist() == [0, 1]               # member 2 has nothing to trade
    assert batch.side.tolist() == [0, 1] and batch.pool.tolist() == [0, 0] and batch.quantity_wh.tolist() == [500, 300]
    # a bid between the grid's sell price (the default floor) and its value, the grid's buy price; an ask
    # between its cost, the grid's sell price, and the default ceiling, the grid's buy price
    assert batch.price.tolist() == pytest.approx([0.05 + u[0] * 0.15, 0.05 + u[1] * 0.15])
    # a floor above the value is clipped to it (never a bid above what the grid would charge)
    high = parse_config(households(price_floor=0.5)).participants["buyer"].trader
    pop = ZIConstrainedTraders(np.arange(1), [high], np.random.default_rng(0))
    assert pop.act(TraderObservation(0, 0, 1, *[np.zeros(1)] * 3, np.array([100]), np.zeros(1), 0.20, 0.05)
                   ).price.tolist() == [0.20]


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError) as info:
        parse_config(households(price_floor=-1, spread=2))
    problems = dict(info.value.problems)
    assert problems["participants.buyer.trader.price_floor"] == "must be in [0, 10]"
    assert problems["participants.buyer.trader.spread"].startswith("unknown key")
    with pytest.raises(ConfigError) as info:
        parse_config(households(price_floor=0.3, price_ceiling=0.1))
    assert dict(info.value.problems)["participants.buyer.trader"] == "price_floor (0.3) is above price_ceiling (0.1)"
    bad = households()
    bad["participants"]["buyer"]["trader"] = {"type": "zi_constrainted"}
    with pytest.raises(ConfigError) as info:
        parse_config(bad)
    message = dict(info.value.problems)["participants.buyer.trader"]
    assert "unknown type 'zi_constrainted'" in message and "'zi_constrained'" in message


def test_trexsim_run_trades_by_the_zic_rule_and_repeats(tmp_path):
    cfg = tmp_path / "zic.json"
    cfg.write_text(json.dumps(households()))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    for out in ("a", "b"):
        r = subprocess.run([sys.executable, "-m", "trexsim", "run", str(cfg), "--out", str(tmp_path / out),
                            "--no-plots", "--no-report"], capture_output=True, text=True, env=env, timeout=180)
        assert r.returncode == 0, r.stdout + r.stderr
    con = duckdb.connect(str(tmp_path / "a" / "run.duckdb"), read_only=True)
    try:
        orders = con.execute("SELECT delivery_round, participant, side, price, quantity_wh FROM orders "
                             "ORDER BY delivery_round, participant").fetchall()
        settled = {d: (q, bp, sp) for d, q, bp, sp in con.execute(
            "SELECT delivery_round, quantity_wh, buyer_price, seller_price FROM settlements").fetchall()}
    finally:
        con.close()
    assert len(orders) == 2 * 29                     # one bid and one ask for each of delivery rounds 1..29
    trades = 0
    for d in range(1, 30):
        (_, buyer, bid_side, bid, bid_wh), (_, seller, ask_side, ask, ask_wh) = [o for o in orders if o[0] == d]
        assert (buyer, bid_side, bid_wh, seller, ask_side, ask_wh) == (0, "bid", 1000, 1, "ask", 600)
        assert 0.069 <= bid <= 0.1449 and 0.069 <= ask <= 0.1449   # ZI-C: inside the grid's spread
        # the market's rule by hand: the pair trades the seller's 600 Wh when the bid reaches the ask, at the
        # average of the two (the default settlement, M1)
        if bid >= ask:
            trades += 1
            assert settled[d] == (600, pytest.approx((bid + ask) / 2), pytest.approx((bid + ask) / 2))
        else:
            assert d not in settled
    assert 5 < trades < 29                           # random prices: some rounds trade, some do not
    a, b = (json.loads((tmp_path / out / "summary.json").read_text())["participants"] for out in ("a", "b"))
    assert a == b                                    # the same seed, the same bills


def test_an_rl_env_runs_it_on_the_simulation_backend():
    from trexsim.envs import parallel_env

    cfg = households()
    cfg["participants"]["agent"] = {"profile": {"type": "flat", "load_w": 30_000}, "trader": {"type": "external"}}
    env = parallel_env(cfg)
    assert env.backend == "simulation"
    obs, _ = env.reset(seed=0)
    while env.agents:
        obs, rewards, *_ = env.step({"agent": np.array([1.0, 1.0, -1, -1, 0], dtype=np.float32)})
    with pytest.raises(Exception, match="participant buyer has a zi_constrained trader"):
        parallel_env(cfg, backend="compiled")


def test_the_registry_refuses_what_it_cannot_run():
    class NoSettings(TraderPopulation):
        kind = "nothing"

        def act(self, obs):
            raise AssertionError

    with pytest.raises(ValueError, match="config_model must be a trexsim.config.schema.TraderSettings subclass"):
        register_trader(NoSettings)

    class Clash(ZIConstrainedTraders):
        kind = "clash"

    with pytest.raises(ValueError, match="trader.type 'zi_constrained' already selects the 'zi_constrained' trader"):
        register_trader(Clash)
    assert register_trader(ZIConstrainedTraders) is ZIConstrainedTraders   # registering it again: no change
    broken = metadata.EntryPoint("broken", "trexsim_no_such_module:Traders", "trexsim.traders")
    with pytest.raises(PluginError, match="entry point 'broken = trexsim_no_such_module:Traders' .* could not be loaded"):
        load_trader_entry_point(broken)
