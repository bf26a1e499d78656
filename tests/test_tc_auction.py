"""The TC double auction (``tc.market: double_auction``): the clearing worked by hand on a 3-device case, its
properties (hypothesis), the households' bids and what they do under the cleared price by hand, and runs on the
bundled congested example (money and energy balance, the peak against grid only, config errors by key)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trexsim.devices.battery import BatteryBank
from trexsim.tc.auction import bid_share, clear_tc_auction, follow_cleared, household_bids, urgency

# three devices: a flexible load bidding at the tariff, one bidding 0.40 $/kWh, a battery offering at 0.25
PRICE = np.array([0.10, 0.40, 0.25])
WH = np.array([3000.0, 2000.0, -1500.0])
CAPACITY_WH, BASE, CAP = 10000.0, 0.10, 1.0


@pytest.mark.parametrize("unresponsive, price, fill, cleared, demand", [
    # uncongested: the tariff, everything bought; the battery offering at 0.25 is not called
    (2000, 0.10, 1.0, [3000, 2000, 0], 7000),
    # at the tariff 6000 + 3000 + 2000 = 11000 > 10000: the marginal bid, at the tariff itself, gets 2/3
    (6000, 0.10, 2 / 3, [2000, 2000, 0], 10000),
    # at the tariff 8500 + 2000 (+ 3000) > 10000; at 0.25 the battery comes in: 8500 + 2000 - 1500 = 9000 fits
    (8500, 0.25, 1.0, [0, 2000, -1500], 9000),
    # at 0.25: 10500 + 2000 - 1500 = 11000 > 10000; at 0.40 the 2000 Wh bid is marginal: (10000 - 9000) / 2000
    (10500, 0.40, 0.5, [0, 1000, -1500], 10000),
    # unresponsive demand beyond the capacity even at the cap: served at the cap, every responsive bid out
    (13000, 1.0, 1.0, [0, 0, -1500], 11500),
])
def test_clearing_by_hand(unresponsive, price, fill, cleared, demand):
    r = clear_tc_auction(unresponsive, PRICE, WH, CAPACITY_WH, BASE, CAP)
    assert r.price_per_kwh == pytest.approx(price)
    assert r.fill == pytest.approx(fill)
    assert r.cleared_wh == pytest.approx(np.array(cleared, dtype=float))
    assert r.demand_wh == pytest.approx(demand)
    assert r.congested == (unresponsive > 2000)


def test_clearing_refuses_bad_bids():
    with pytest.raises(ValueError, match="cap"):
        clear_tc_auction(0, PRICE, WH, CAPACITY_WH, 0.5, 0.4)
    with pytest.raises(ValueError, match="finite"):
        clear_tc_auction(0, np.array([np.nan]), np.array([1.0]), CAPACITY_WH, BASE, CAP)
    with pytest.raises(ValueError, match="same length"):
        clear_tc_auction(0, PRICE, WH[:2], CAPACITY_WH, BASE, CAP)


bids = st.lists(st.tuples(st.floats(0.0, 1.5), st.floats(-5000, 5000).filter(lambda x: abs(x) > 1e-3)),
                max_size=12)


@settings(max_examples=300, deadline=None)
@given(bids, st.floats(-5000, 20000), st.floats(0, 20000), st.floats(0.01, 0.5))
def test_clearing_properties(rows, unresponsive, capacity, base):
    price = np.array([r[0] for r in rows])
    wh = np.array([r[1] for r in rows])
    r = clear_tc_auction(unresponsive, price, wh, capacity, base, 1.0)
    p = r.price_per_kwh
    assert base - 1e-12 <= p <= 1.0
    buy, sell = wh > 0, wh < 0
    # every buy bid clears by its price: whole above, the common fill at it, nothing below; sells from their price
    assert np.all((r.cleared_wh[buy] >= -1e-9) & (r.cleared_wh[buy] <= wh[buy] + 1e-9))
    assert np.all(r.cleared_wh[buy & (price > p + 1e-9)] == wh[buy & (price > p + 1e-9)])
    assert np.all(r.cleared_wh[buy & (price < p - 1e-9)] == 0)
    assert np.all(r.cleared_wh[sell] == np.where(price[sell] <= p + 1e-9, wh[sell], 0))
    assert r.cleared_wh == pytest.approx(np.where(buy, bid_share(price, p, r.fill) * wh, r.cleared_wh))
    # below the cap the cleared demand fits the capacity
    if p < 1.0 - 1e-9:
        assert r.demand_wh <= capacity + 1e-6
    # the lowest price that fits: one notch lower would not (or the tariff itself)
    if p > base + 1e-9:
        lower = clear_tc_auction(unresponsive, price, wh, capacity + 1e9, base, 1.0)
        assert lower.price_per_kwh == pytest.approx(base) and lower.fill == 1.0
    # more capacity never raises the price
    assert clear_tc_auction(unresponsive, price, wh, capacity + 1000, base, 1.0).price_per_kwh <= p + 1e-12


def test_urgency_by_hand():
    # 6-round windows of 2-round intervals: positions 0, 1/2, 1 (the last interval: must run anyway)
    assert [urgency(r, 6, 2) for r in (0, 2, 4, 6, 8)] == [0.0, 0.5, 1.0, 0.0, 0.5]
    assert urgency(0, 2, 2) == 1.0  # a window of one interval: no flexibility


def _bank():
    bank = BatteryBank(2, 3600)
    bank.configure(0, 10000, 10000, 10000, 0.9, 0.0, 0.4, True)   # 10 kWh / 10 kW, 4 kWh stored; household 1: none
    return bank


def _bids():
    """Two households, a two-round (hourly) interval: worked in the test below."""
    load = np.array([[2000.0, 1000.0], [2000.0, 3000.0]])
    gen = np.array([[3000.0, 0.0], [0.0, 0.0]])
    bank = _bank()
    return household_bids(load, gen, 0.25, 1000.0, np.array([500.0, 0.0]), False, 1, 0.5, bank.stored_wh, bank,
                          np.array([True, False]), np.array([True, False]), np.array([0.10, 0.10, 0.20, 0.40]),
                          0.10, 1.0), load, gen


def test_household_bids_by_hand():
    b, _, _ = _bids()
    # flexible: backlog + 0.25 x load = [500 + 1000, 0 + 1000]; all fits the later interval at 1 kW x 2 h, so
    # nothing must run; each bids what it has (<= max(1 kW x 2 h, F)) at 0.10 + (1.0 - 0.10) x 0.5
    assert b.flexible_wh.tolist() == [1500, 1000] and b.flexible_must_wh.tolist() == [0, 0]
    assert b.flexible_price == pytest.approx(0.55)
    # inflexible net: household 0 -1500 then +1500 (imports 1500, surplus 1500); household 1 750 + 2250
    # battery 0: room min(2 x 10 kWh, (10 - 4) / 0.9) = 6666.7; stores the 1500 surplus; n_dis = ceil(9/10) = 1
    # -> p_dis = the highest expected price 0.40; n_ch = ceil(11.1/10) = 2 -> p_ch = 0.10 < 0.40 x 0.81
    assert b.reacting.tolist() == [True, False]
    assert b.offer_wh.tolist() == [1500, 0] and b.offer_price[0] == pytest.approx(0.40)
    assert b.charge_wh[0] == pytest.approx(6000 / 0.9 - 1500) and b.charge_wh[1] == 0
    assert b.charge_price[0] == pytest.approx(0.10)
    # unresponsive: imports - surplus + stored surplus
    assert b.unresponsive_wh == pytest.approx([1500, 3000])
    participant, price, wh = b.rows(np.array([7, 8]))
    assert participant.tolist() == [7, 8, 7, 7]
    assert price == pytest.approx([0.55, 0.55, 0.40, 0.10])
    assert wh == pytest.approx([1500, 1000, -1500, 6000 / 0.9 - 1500])


def test_no_price_signal_means_self_consumption():
    load = np.array([[2000.0, 1000.0], [2000.0, 3000.0]])
    gen = np.array([[3000.0, 0.0], [0.0, 0.0]])
    bank = _bank()
    b = household_bids(load, gen, 0.0, 0.0, np.zeros(2), False, 1, 0.0, bank.stored_wh, bank, np.array([True, False]),
                       np.array([True, False]), np.full(4, 0.1449), 0.1449, 1.0)
    assert not b.reacting.any() and b.offer_wh.sum() == 0 and b.charge_wh.sum() == 0
    # household 0: imports 2000 - 0 covered from the 3600 Wh deliverable, surplus 1000 stored: net 0
    assert b.unresponsive_wh == pytest.approx([0, 4000])


@pytest.mark.parametrize("capacity, price, loads, setpoint, following, backlog", [
    # p* = 0.55 with fill 0.8: the flexible loads run 1200 and 800 of their 1500 and 1000, evenly
    (5000, 0.55, [[2100, 1150], [2100, 2650]], None, [False, False], [300, 200]),
    # p* = 0.40: every flexible bid and the battery's offer (self-consumption on the meter)
    (6000, 0.40, [[2250, 1250], [2250, 2750]], None, [False, False], [0, 0]),
    # uncongested: the tariff; the battery holds (offer not called), stores surplus and charges its bid
    (20000, 0.10, [[2250, 1250], [2250, 2750]], [[3333, 0], [2583, 0]], [True, False], [0, 0]),
])
def test_following_what_cleared_by_hand(capacity, price, loads, setpoint, following, backlog):
    b, load, gen = _bids()
    participant, bid_price, wh = b.rows(np.array([0, 1]))
    r = clear_tc_auction(b.unresponsive_wh.sum(), bid_price, wh, capacity, 0.10, 1.0)
    assert r.price_per_kwh == pytest.approx(price)
    metered, sp, follow, left = follow_cleared(b, r.price_per_kwh, r.fill, 0.25, load, gen, np.array([500.0, 0.0]))
    assert metered.tolist() == loads
    assert follow.tolist() == following
    assert left == pytest.approx(backlog)
    if setpoint is not None:
        assert sp[:, 0].tolist() == [row[0] for row in setpoint]
    # the window's energy is kept: what ran plus what is left is the backlog plus the real flexible energy
    ran = metered.sum(axis=0) - 0.75 * load.sum(axis=0)
    assert ran + left == pytest.approx(np.array([500.0, 0.0]) + 0.25 * load.sum(axis=0), abs=1)


def test_a_must_run_interval_runs_everything():
    load = np.array([[2000.0, 1000.0]])
    bank = BatteryBank(2, 3600)
    b = household_bids(load, np.zeros_like(load), 0.5, 100.0, np.array([3000.0, 0.0]), True, 0, 1.0,
                       bank.stored_wh, bank, np.zeros(2, bool), np.zeros(2, bool), np.zeros(0), 0.1, 1.0)
    assert b.flexible_wh.tolist() == [0, 0] and b.flexible_must_wh.tolist() == [4000, 500]
    assert b.unresponsive_wh == pytest.approx([5000, 1000])
    metered, _, _, left = follow_cleared(b, 1.0, 0.0, 0.5, load, np.zeros_like(load), np.array([3000.0, 0.0]))
    assert metered.tolist() == [[5000, 1000]] and left.tolist() == [0, 0]


# -- runs ------------------------------------------------------------------------------------------------------
pytest.importorskip("opendssdirect")


def _example(days: int, **tc):
    import pyjson5

    from trexsim.cli import _example_path

    cfg = pyjson5.loads(_example_path("tc").read_text())
    cfg["study"]["days"] = days
    cfg["tc"].update(tc)
    return cfg


def test_the_auction_on_the_bundled_example_balances_and_lowers_the_peak(tmp_path):
    """Three days of the bundled congested example: grid only against the double auction (persistence: day 1's
    batteries see no expected congestion and run self-consumption; later days expect yesterday's)."""
    import duckdb

    from trexsim import parse_config
    from trexsim.simulation import Simulation

    grid = _example(3)
    grid["market"].pop("type")
    grid.pop("tc")
    grid_only = Simulation(parse_config(grid), tmp_path / "grid").run(plots=False)
    auction = Simulation(parse_config(_example(3, market="double_auction", refund="equal")),
                         tmp_path / "auction").run(plots=False)
    s = auction.summary["tc"]
    assert s["auction"]["intervals"] == 72 and s["auction"]["congested"] > 0
    assert s["auction"]["capacity_kw"] == pytest.approx(89.606, abs=0.01)   # 100 kVA at its rating, calibrated
    peak_grid = grid_only.summary["powerflow"]["max_transformer_loading_pct"]
    peak_auction = auction.summary["powerflow"]["max_transformer_loading_pct"]
    assert peak_grid == pytest.approx(185.2, abs=0.1)
    assert peak_auction == pytest.approx(176.7, abs=0.1)     # docs/powerflow.md, "The TC double auction"
    assert (auction.summary["powerflow"]["hours_over_limit"]
            < grid_only.summary["powerflow"]["hours_over_limit"])
    con = duckdb.connect(str(auction.database), read_only=True)
    try:
        # every round is billed at the cleared price: the tariff, or the clearing price above it
        prices = con.execute("SELECT r.grid_buy_price, t.price FROM rounds r JOIN tc_schedule t ON r.episode = t.episode "
                             "AND r.round >= t.first_round AND r.round < t.first_round + 6").fetchall()
        assert prices and all(a == pytest.approx(b) for a, b in prices)
        refunds = con.execute("SELECT sum(congestion_paid_usd), sum(refund_usd) FROM tc_congestion").fetchone()
    finally:
        con.close()
    assert refunds[0] > 0 and refunds[1] == pytest.approx(refunds[0])   # revenue neutral
    # the households' energy is kept: each one's consumption over the run is grid only's, to the Wh
    for pid, p in auction.summary["participants"].items():
        assert abs(p["load_wh"] - grid_only.summary["participants"][pid]["load_wh"]) <= 1, pid


def test_same_seed_same_auction(tmp_path):
    from trexsim import parse_config
    from trexsim.simulation import Simulation

    a = Simulation(parse_config(_example(1, market="double_auction")), tmp_path / "a").run(plots=False).summary
    b = Simulation(parse_config(_example(1, market="double_auction")), tmp_path / "b").run(plots=False).summary
    assert json.dumps(a["participants"], sort_keys=True) == json.dumps(b["participants"], sort_keys=True)
    assert a["tc"]["auction"] == b["tc"]["auction"]


@pytest.mark.parametrize("tc, key", [
    ({"market": "double_auction", "price_interval_s": 7200}, "tc.price_interval_s"),
    ({"market": "double_auction", "price_cap_per_kwh": 0.1}, "tc.price_cap_per_kwh"),
    ({"market": "double_auction", "price_interval_s": 3000}, "tc.flexible_load.window_h"),
    ({"market": "double_auction", "capacity_kw": -1}, "tc.capacity_kw"),
])
def test_auction_settings_errors_name_the_key(tmp_path, tc, key):
    from trexsim import TrexsimError, parse_config
    from trexsim.simulation import Simulation

    with pytest.raises(TrexsimError, match=key.replace(".", r"\.")):
        Simulation(parse_config(_example(1, **tc)), tmp_path / "x").run(plots=False)


class _LoopbackTransport:
    """A transport that keeps what the protocol sends (the gate needs no broker to be tested)."""

    @staticmethod
    def make(participant_ids):
        from trexsim.fabric.protocol import NetworkFabric

        class Loopback(NetworkFabric):
            def _transmit(self, topic, payload):
                self.sent.append(topic)

            def close(self):
                pass

        fabric = Loopback.__new__(Loopback)
        fabric._init_state("coordinator", None, None, "ns", 1.0, 1.0, 1 << 20, None, participant_ids, 0)
        fabric.sent = []
        return fabric


@pytest.mark.parametrize("bids, reason", [
    (None, None),                                                                   # bids for its own household
    (([1], [0.2], [100.0]), "participant_not_sender"),                             # for the neighbour's
    (([0], [float("nan")], [100.0]), "malformed"),                                 # a price that is not a number
    (([0, 0, 0, 0], [0.2] * 4, [1.0] * 4), "malformed"),                           # more than 3 bids a household
    (([0], [0.2, 0.3], [1.0]), "malformed"),                                       # rows of different lengths
])
def test_the_gate_checks_a_households_bids(bids, reason):
    from trexsim.fabric.messages import TCPlan
    from trexsim.fabric.protocol import _ENCODER, _Envelope

    fabric = _LoopbackTransport.make(["h0", "h1"])
    heard = []
    fabric.subscribe("tc/plan", heard.append)
    who, price, wh = bids if bids is not None else ([0], [0.2], [100.0])
    plan = TCPlan(0, 0, 0, np.array([0]), np.array([50.0]), np.array(who), np.array(price), np.array(wh))
    fabric._receive("ns/p/h0/tc_plan", _ENCODER.encode(_Envelope("h0-x", 1, plan)))
    if reason is None:
        assert fabric.rejected == 0 and len(heard) == 1
    else:
        assert fabric.rejected == 1 and fabric.last_rejection.startswith(reason) and not heard
        assert fabric.sent == ["ns/p/h0/settlements"]   # the sender is told why


def test_on_the_european_lv_feeder_the_capacity_is_where_the_powerflow_still_solves(tmp_path):
    """Long LV cables: uniform demand collapses the voltage before the 800 kVA transformer is full, so the
    rescaling falls back to bisection between the last demand that solved and the first that did not. The
    55 real-sized households (peak 59 kW) never reach it: every interval clears at the tariff."""
    import pyjson5

    from trexsim import parse_config
    from trexsim.cli import _example_path
    from trexsim.simulation import Simulation

    cfg = pyjson5.loads(_example_path("tc-european-lv").read_text())
    cfg["tc"].update(market="double_auction")
    s = Simulation(parse_config(cfg), tmp_path / "eulv").run(plots=False).summary["tc"]
    assert 300 < s["auction"]["capacity_kw"] < 800 and s["auction"]["congested"] == 0
    assert s["max_congestion"] == 0 and s["auction"]["max_demand_kw"] < s["auction"]["capacity_kw"] / 5


@pytest.mark.parametrize("net, bids, reason", [
    ([50.0], ([0], [0.2], [100.0]), None),                        # well within what the household can draw
    ([50.0], ([0, 0], [0.2, 0.3], [6_000.0, 6_001.0]), "plan_out_of_range"),   # over the interval's 12,000 Wh
    ([50.0], ([0], [0.2], [-5.0]), "plan_out_of_range"),          # a negative bid energy
    ([30_000.0], ([0], [0.2], [100.0]), "plan_out_of_range"),     # a net energy the meter cannot carry
])
def test_the_gate_bounds_a_households_bids_by_its_meter_limits(net, bids, reason):
    """With the households' limits known (``trexsim.node.meter_limits``, set where the market runs), a TC plan
    may not ask for more than the household's meter can take over the auction's interval: here 6 rounds of at most
    1,500 Wh load and 500 Wh battery charge (12,000 Wh of bids), 2,500 Wh of net energy a round."""
    from trexsim.fabric.messages import TCPlan
    from trexsim.fabric.protocol import _ENCODER, _Envelope

    fabric = _LoopbackTransport.make(["h0", "h1"])
    fabric._gate.limits = {"load_wh": np.array([1500.0, 1500.0]), "battery_charge_wh": np.array([500.0, 0.0]),
                           "grid_only_net_wh": np.array([2500.0, 2500.0])}
    fabric._gate.plan_rounds = 6
    heard = []
    fabric.subscribe("tc/plan", heard.append)
    who, price, wh = bids
    plan = TCPlan(0, 0, 0, np.array([0]), np.array(net), np.array(who), np.array(price), np.array(wh))
    fabric._receive("ns/p/h0/tc_plan", _ENCODER.encode(_Envelope("h0-x", 1, plan)))
    if reason is None:
        assert fabric.rejected == 0 and len(heard) == 1
    else:
        assert fabric.rejected == 1 and fabric.last_rejection.startswith(reason) and not heard


def test_the_market_process_knows_the_auctions_interval():
    from trexsim import parse_config
    from trexsim.node import configure_market_fabric

    cfg = parse_config({"study": {"name": "x", "days": 1, "interval_s": 600},
                        "market": {"type": "tc", "grid": {"buy_price": 0.1449, "sell_price": 0.069}},
                        "tc": {"market": "double_auction", "price_interval_s": 1800},
                        "participants": {"h": {"count": 2, "profile": {"type": "flat", "load_w": 500}}}})
    fabric = _LoopbackTransport.make(["h-1", "h-2"])
    configure_market_fabric(fabric, cfg)
    assert fabric._gate.plan_rounds == 3 and fabric._gate.limits["load_wh"].shape == (2,)


def test_the_auctions_capacity_can_hold_the_voltage_limit(tmp_path):
    """``tc.capacity_limits: "loading_and_voltage"``: on the European LV feeder the lowest voltage reaches EN
    50160's 0.9 p.u. long before the transformer's rating, so the calibrated capacity is the demand (alike in every
    household) at which the lowest checked bus sits at 0.9 p.u.: far below the loading's, and at it the voltage
    holds within the bisection's tolerance while a little more demand breaks it."""
    import pyjson5

    from trexsim import parse_config
    from trexsim.cli import _example_path
    from trexsim.modules.tc import TCMarketModule
    from trexsim.tc.response import lowest_voltage_pu

    data = pyjson5.loads(_example_path("tc-european-lv").read_text())
    data["tc"].update(market="double_auction")
    cfg = parse_config(data)
    ids = [pid for pid, _ in cfg.expanded_participants()]
    loading = TCMarketModule(_NoFabric(), cfg, ids, out_dir=tmp_path / "a").capacity_kw
    data["tc"]["capacity_limits"] = "loading_and_voltage"
    cfg = parse_config(data)
    tc = TCMarketModule(_NoFabric(), cfg, ids, out_dir=tmp_path / "b")
    assert cfg.powerflow.limits.v_min_pu == 0.9 and tc.capacity_kw < 0.8 * loading

    def lowest(total_kw):
        net = np.full(tc.n, total_kw / tc.n * 1000.0 * tc.interval_s / 3600.0)
        return lowest_voltage_pu(tc.engine, tc.mapping, net, tc.interval_s, tc.pf_import, tc.pf_export, tc.checked_nodes)

    assert 0.9 <= lowest(tc.capacity_kw) < 0.905
    assert lowest(tc.capacity_kw * 1.01) < 0.9


class _NoFabric:
    def subscribe(self, *args):
        pass

    def publish(self, *args):
        pass


def test_compare_hands_the_configs_voltage_limit_to_its_tc_leg():
    """``trexsim compare`` runs its legs without the powerflow section (it replays them on the feeder after), so
    its TC leg gets the section's lowest voltage as ``tc.v_min_pu``: the auction's capacity keeps the config's
    limit, not the 0.95 default."""
    import pyjson5

    from trexsim import parse_config
    from trexsim.cli import _example_path
    from trexsim.modules.tc import tc_v_min_pu
    from trexsim.tc.compare import _variant

    data = pyjson5.loads(_example_path("tc-european-lv").read_text())
    data["tc"].update(market="double_auction", capacity_limits="loading_and_voltage")
    cfg = parse_config(data)
    assert tc_v_min_pu(cfg) == 0.9
    tc_leg = _variant(cfg, "tc")
    assert tc_leg.powerflow is None and tc_v_min_pu(tc_leg) == 0.9
    data.pop("powerflow")
    assert tc_v_min_pu(parse_config(data)) == 0.95


@pytest.mark.parametrize("tc, key", [
    ({"capacity_limits": "loading_and_voltage"}, "capacity_limits"),                       # a schedule market
    ({"market": "double_auction", "capacity_kw": 50, "capacity_limits": "loading_and_voltage"}, "capacity_limits"),
    ({"market": "double_auction", "v_min_pu": 0.9}, "v_min_pu"),                          # without the option
])
def test_voltage_capacity_settings_no_driver_reads_are_refused(tc, key):
    from trexsim import parse_config
    from trexsim.errors import ConfigError

    with pytest.raises(ConfigError, match=key):
        parse_config({"study": {"name": "x", "days": 1, "interval_s": 600},
                      "market": {"type": "tc", "grid": {"buy_price": 0.1449, "sell_price": 0.069}}, "tc": tc,
                      "participants": {"h": {"count": 2, "profile": {"type": "flat", "load_w": 500}}}})
