"""The TC market as modules on the fabric (``market.type: tc``): the TC market module prices each horizon from
predicted powerflow by exchanging schedules and plans with the participants module; the market bills at the
published schedule. Checked by hand, against the same households' grid-only run, by pinned prices (recorded
when an independent array co-simulation gave the very same schedule), and on a real feeder."""

from __future__ import annotations

import hashlib
import json

import duckdb
import numpy as np
import pytest

pytest.importorskip("opendssdirect")

from test_tc import COMMUNITY, FEEDER  # noqa: E402  (a congested 8-house community on a 100 kVA transformer)

from trexsim import TrexsimError, parse_config  # noqa: E402
from trexsim.fabric import topics  # noqa: E402
from trexsim.simulation import Simulation  # noqa: E402
from trexsim.tc.households import whole_wh  # noqa: E402

ROUNDS = 144  # one day of 10-minute rounds


def tc_config(**tc) -> dict:
    cfg = json.loads(json.dumps(COMMUNITY))
    for spec in cfg["participants"].values():
        spec["trader"] = {"type": "grid_only"}
    cfg["market"]["type"] = "tc"
    # the pinned schedules are the perfect forecast's (what the array co-simulation computed)
    cfg["tc"] = {"feeder": FEEDER, "forecast": {"type": "perfect"}, **tc}
    return cfg


def table(run_dir, sql):
    con = duckdb.connect(str(run_dir / "run.duckdb"), read_only=True)
    try:
        return con.execute(sql).fetchnumpy()
    finally:
        con.close()


@pytest.fixture(scope="module")
def day(tmp_path_factory):
    """One day under TC with the default settings (day-ahead hourly schedule, 4 passes), and the same households'
    grid-only run (their loads are the forecast TC moves load from)."""
    out = tmp_path_factory.mktemp("tc-module")
    config = parse_config(tc_config())
    sim = Simulation(config, out / "run")
    messages = []
    for topic in (topics.TC_SCHEDULE, topics.TC_PLAN, topics.GRID_PRICES):
        sim.fabric.subscribe(topic, lambda m, t=topic: messages.append((t, m)))
    result = sim.run(plots=False)
    grid_cfg = tc_config()
    grid_cfg["market"]["type"] = "alex"
    grid_only = Simulation(parse_config(grid_cfg), out / "grid-only").run(plots=False)
    return result, grid_only, messages


def price_digest(prices: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(prices, dtype=np.float64).tobytes()).hexdigest()[:16]


def test_the_schedule_is_pinned(day):
    """The published prices, pinned: recorded when the array co-simulation that ``trexsim compare`` used before
    it ran these modules (``run_tc``, removed) gave bit for bit the same schedule from its own loop."""
    result, _, _ = day
    rounds = table(result.out_dir, "SELECT grid_buy_price, grid_sell_price FROM rounds ORDER BY round")
    assert price_digest(rounds["grid_buy_price"]) == "6220395c1d02d1c2"
    assert rounds["grid_buy_price"].max() == pytest.approx(0.41913177469571367, abs=1e-12)
    assert rounds["grid_buy_price"].sum() == pytest.approx(32.002973587574324, abs=1e-9)
    assert np.all(rounds["grid_sell_price"] == 0.069)


def test_messages_of_the_tc_loop(day):
    result, _, messages = day
    kinds = [(t, getattr(m, "iteration", None), getattr(m, "final", None)) for t, m in messages]
    # 4 passes and the published schedule, each answered by the (one) participants module, then the grid price
    expected = []
    for it in range(5):
        expected += [(topics.TC_SCHEDULE, it, it == 4), (topics.TC_PLAN, it, None)]
    assert kinds == expected + [(topics.GRID_PRICES, None, None)]
    schedule = messages[8][1]
    assert schedule.first_round == 0 and len(schedule.buy_price) == ROUNDS
    assert np.array_equal(messages[-1][1].buy_price, schedule.buy_price)
    plan = messages[1][1]
    assert plan.participant.tolist() == list(range(8)) and plan.net_wh.shape == (ROUNDS * 8,)
    summary = result.summary["tc"]
    assert summary["horizons"] == 1 and summary["price_intervals"] == 24
    assert summary["powerflow_solves_for_prices"] == 24 * 5


def test_ledger_bills_at_the_published_schedule_and_balances(day):
    result, _, _ = day
    sched = table(result.out_dir, "SELECT first_round, tou_buy_price, congestion, price FROM tc_schedule ORDER BY first_round")
    assert sched["first_round"].tolist() == list(range(0, ROUNDS, 6))
    assert np.allclose(sched["price"], sched["tou_buy_price"] + sched["congestion"], atol=1e-12)
    assert np.all(sched["congestion"] >= 0) and sched["congestion"].max() > 0.05
    rounds = table(result.out_dir, "SELECT grid_buy_price FROM rounds ORDER BY round")["grid_buy_price"]
    assert np.array_equal(rounds, np.repeat(sched["price"], 6))
    d = table(result.out_dir, "SELECT round, grid_import_wh, grid_export_wh, grid_cost_usd, grid_revenue_usd FROM deliveries ORDER BY round, participant")
    price = rounds[d["round"]]
    assert np.allclose(d["grid_cost_usd"], d["grid_import_wh"] * price / 1000, rtol=1e-12, atol=1e-12)
    assert np.allclose(d["grid_revenue_usd"], d["grid_export_wh"] * 0.069 / 1000, rtol=1e-12, atol=1e-12)
    checks = result.summary["conservation"]
    assert checks["max_energy_error_wh"] == 0 and checks["max_money_error_usd"] < 1e-9


def test_households_keep_their_energy_and_device_limits(day):
    result, grid_only, _ = day
    base_load = table(grid_only.out_dir, "SELECT load_wh FROM deliveries ORDER BY round, participant")["load_wh"]
    base_load = base_load.reshape(ROUNDS, -1)
    d = table(result.out_dir, "SELECT participant, load_wh, battery_charge_wh, battery_discharge_wh, battery_stored_wh "
                              "FROM deliveries ORDER BY round, participant")
    load = d["load_wh"].reshape(ROUNDS, -1)
    # the flexible share moves within its 6-hour windows: each window's consumption is the forecast's (to a Wh)
    for w0 in range(0, ROUNDS, 36):
        assert np.abs(load[w0:w0 + 36].sum(axis=0) - base_load[w0:w0 + 36].sum(axis=0)).max() <= 1
    assert not np.array_equal(load, base_load)     # something moved
    charge = d["battery_charge_wh"].reshape(ROUNDS, -1)
    discharge = d["battery_discharge_wh"].reshape(ROUNDS, -1)
    stored = d["battery_stored_wh"].reshape(ROUNDS, -1)
    limit_wh = 5000 * 600 / 3600                                      # 5 kW for 10 minutes
    assert charge.max() <= limit_wh and discharge.max() <= limit_wh
    assert np.all((charge == 0) | (discharge == 0))
    assert stored.min() >= 0 and stored.max() <= 13500
    assert charge[:, :4].sum() > 0 and charge[:, 4:].sum() == 0       # only the 4 'pro' households have batteries


def test_identical_seeds_identical_ledgers(tmp_path):
    def digest(run_dir):
        h = hashlib.sha256()
        for sql in ("SELECT * FROM deliveries ORDER BY round, participant", "SELECT * FROM rounds ORDER BY round",
                    "SELECT * FROM tc_schedule ORDER BY first_round"):
            for col in table(run_dir, sql).values():
                h.update(np.ascontiguousarray(col).tobytes() if col.dtype != object else repr(col.tolist()).encode())
        return h.hexdigest()

    cfg = tc_config(iterations=2)
    cfg["study"]["days"] = 0.5
    a = Simulation(parse_config(cfg), tmp_path / "a").run(plots=False).out_dir
    b = Simulation(parse_config(cfg), tmp_path / "b").run(plots=False).out_dir
    assert digest(a) == digest(b)


def test_several_horizons_are_priced_ahead_of_trading(tmp_path):
    """6-hour horizons with close_steps 2: the first is priced at the episode's start, each later one at the
    end of round first - 3, so traders of round first - 2 already see it; prices pinned (as above)."""
    cfg = tc_config(horizon_h=6, iterations=3)
    cfg["market"]["close_steps"] = 2
    config = parse_config(cfg)
    sim = Simulation(config, tmp_path / "run")
    seen = []   # (round the controller is in, first round of the published schedule)
    sim.fabric.subscribe(topics.ROUND_END, lambda m: seen.append(("end", m.round)))
    sim.fabric.subscribe(topics.GRID_PRICES, lambda m: seen.append(("prices", m.first_round)))
    result = sim.run(plots=False)
    published = [(seen[i - 1] if i else None, s[1]) for i, s in enumerate(seen) if s[0] == "prices"]
    assert published == [(None, 0), (("end", 33), 36), (("end", 69), 72), (("end", 105), 108)]
    assert result.summary["tc"]["horizons"] == 4
    rounds = table(result.out_dir, "SELECT grid_buy_price FROM rounds ORDER BY round")["grid_buy_price"]
    assert price_digest(rounds) == "a3d630c050cf597c"
    assert rounds.max() == pytest.approx(0.560275421011364, abs=1e-12)


def test_tc_run_with_live_powerflow_lowers_the_peak(tmp_path):
    """The same community, grid only vs TC, each with the live powerflow module on the same feeder."""
    peaks = {}
    for mode in ("grid_only", "tc"):
        cfg = tc_config(iterations=4)
        if mode == "grid_only":
            cfg["market"]["type"] = "alex"
        cfg["powerflow"] = {"feeder": FEEDER}
        peaks[mode] = Simulation(parse_config(cfg), tmp_path / mode).run(plots=False).summary["powerflow"]
    assert peaks["grid_only"]["max_transformer_loading_pct"] > 100
    assert peaks["tc"]["max_transformer_loading_pct"] < 0.95 * peaks["grid_only"]["max_transformer_loading_pct"]
    assert peaks["tc"]["hours_over_limit"] < peaks["grid_only"]["hours_over_limit"]


def test_whole_wh_keeps_running_sums():
    energy = np.array([[0.4, 10.0], [0.4, 0.5], [0.4, 0.5], [1.8, 0.0]])
    out = whole_wh(energy)
    assert out[:, 0].tolist() == [0, 1, 0, 2] and out[:, 1].tolist() == [10, 0, 1, 0]
    assert np.all(np.abs(np.cumsum(out, axis=0) - np.cumsum(energy, axis=0)) <= 0.5)


def test_tc_market_runs_only_in_the_coordinator(tmp_path):
    class MarketProcessFabric:  # the check reads the fabric's role before any use of it
        role = "market"

    with pytest.raises(TrexsimError, match="runs in the coordinator"):
        Simulation(parse_config(tc_config()), tmp_path, fabric=MarketProcessFabric())


def test_tc_settings_errors_name_the_key(tmp_path):
    with pytest.raises(TrexsimError, match="tc.horizon_h"):
        Simulation(parse_config(tc_config(horizon_h=0.1)), tmp_path)   # 6 minutes: not whole 10-minute rounds
    with pytest.raises(Exception, match="tc.feeder"):
        parse_config(tc_config(feeder={"transformer_kv": 100}))


def test_the_bundled_tc_example_runs_from_the_command_line(tmp_path):
    from typer.testing import CliRunner

    from trexsim.cli import app

    out = tmp_path / "tc"
    r = CliRunner().invoke(app, ["run", "--example", "tc", "--out", str(out), "--no-plots", "--quiet"])
    assert r.exit_code == 0, r.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["tc"]["max_congestion"] > 0 and summary["powerflow"]["solved_rounds"] == ROUNDS
    r = CliRunner().invoke(app, ["export", str(out)])
    assert r.exit_code == 0 and (out / "export" / "tc_schedule.parquet").exists(), r.output


# -- forecasts (tc.forecast) -------------------------------------------------------------------------------------
def test_forecasts_by_hand():
    from trexsim.config.schema import ForecastConfig
    from trexsim.data.profiles import Clock, ProfileSet
    from trexsim.tc.forecast import forecast_wh

    config = parse_config(tc_config())
    s = config.study
    members = config.expanded_participants()
    clock = Clock(s.start_utc_s, s.interval_s, s.rounds_per_episode, s.timezone)
    profiles = ProfileSet([p for p, _ in members], [m.profile for _, m in members], clock, s.seed)
    every = np.arange(8)
    real = profiles.energy_wh(36, 12)
    perfect = forecast_wh(profiles, ForecastConfig(type="perfect"), 36, 12, 600, s.seed, every)
    assert all(np.array_equal(a, b) for a, b in zip(perfect, real))
    # persistence: the same rounds a day (144 rounds of 10 minutes) and a week earlier
    for days in (1, 7):
        got = forecast_wh(profiles, ForecastConfig(type="persistence", lag_days=days), 36, 12, 600, s.seed, every)
        want = profiles.energy_wh(36 - 144 * days, 12)
        assert all(np.array_equal(a, b) for a, b in zip(got, want))
    # noisy: zero error is the profile; otherwise the stated error, the same however households are split
    zero = forecast_wh(profiles, ForecastConfig(type="noisy", error_pct=0), 36, 12, 600, s.seed, every)
    assert all(np.array_equal(a, b) for a, b in zip(zero, real))
    noisy = ForecastConfig(type="noisy", error_pct=20)
    load, _ = forecast_wh(profiles, noisy, 36, 12, 600, s.seed, every)
    ratio = load / real[0]
    assert 0.1 < ratio.std() < 0.3 and abs(ratio.mean() - 1) < 0.1 and load.min() >= 0
    again, _ = forecast_wh(profiles, noisy, 36, 12, 600, s.seed, every)
    assert np.array_equal(load, again)

    class Part:  # the households 4..7 alone, as a participants process holding only them would see them
        def energy_wh(self, first, n):
            a, b = profiles.energy_wh(first, n)
            return a[:, 4:], b[:, 4:]

    part, _ = forecast_wh(Part(), noisy, 36, 12, 600, s.seed, every[4:])
    assert np.array_equal(part, load[:, 4:])


def test_forecast_errors_name_the_key(tmp_path):
    with pytest.raises(TrexsimError, match=r"tc.forecast.lag_days: 8.64 s is not a whole number \(>= 1\) of the study's 600 s rounds"):
        Simulation(parse_config(tc_config(forecast={"type": "persistence", "lag_days": 0.0001})), tmp_path)
    with pytest.raises(Exception, match="tc.forecast.error_pct"):
        parse_config(tc_config(forecast={"type": "noisy", "error_pct": 150}))


def test_tc_with_imperfect_forecasts_on_the_bundled_example(tmp_path):
    """The bundled congested example (8 heavy households, 100 kVA), measured by its live powerflow module:
    grid only peaks at 152.6 %; TC planned with a perfect forecast at 136.1 %, with yesterday's profiles
    (the default) at 139.3 %, with a 10 % noisy forecast at 127.9 % (the price iteration does not converge:
    issue 15, so a worse forecast can land on a better schedule). Yesterday's profiles spend more hours over
    a limit than grid only (5.8 h against 5.3 h): TC lowers the peak, not every hour."""
    import pyjson5

    from trexsim.cli import _example_path

    base = pyjson5.decode(open(_example_path("tc")).read())
    result = {}
    for name, forecast in (("grid only", None), ("perfect", {"type": "perfect"}), ("yesterday", None),
                           ("noisy", {"type": "noisy", "error_pct": 10})):
        cfg = json.loads(json.dumps(base))
        if name == "grid only":
            cfg["market"]["type"] = "alex"
        elif forecast is not None:
            cfg["tc"]["forecast"] = forecast
        pf = Simulation(parse_config(cfg), tmp_path / name.replace(" ", "-")).run(plots=False).summary["powerflow"]
        result[name] = (pf["max_transformer_loading_pct"], pf["hours_over_limit"])
    grid = result["grid only"][0]
    assert grid == pytest.approx(152.6, abs=0.1)
    assert result["perfect"][0] == pytest.approx(136.1, abs=0.1)
    assert result["yesterday"][0] == pytest.approx(139.3, abs=0.1) and result["yesterday"][0] < 0.95 * grid
    assert result["noisy"][0] == pytest.approx(127.9, abs=0.1) and result["noisy"][0] < 0.9 * grid
    assert result["yesterday"][1] > result["grid only"][1]


# -- the congestion rent and its refund (tc.refund) -------------------------------------------------------------
def test_congestion_refund_by_hand():
    from trexsim.modules.tc import congestion_refund_usd

    paid, imports = np.array([1.0, 2.0, 3.0]), np.array([100, 0, 300])
    assert congestion_refund_usd(paid, imports, "none").tolist() == [0, 0, 0]
    assert congestion_refund_usd(paid, imports, "equal").tolist() == [2, 2, 2]
    assert congestion_refund_usd(paid, imports, "by_import").tolist() == [1.5, 0, 4.5]
    assert congestion_refund_usd(paid, np.zeros(3), "by_import").tolist() == [2, 2, 2]   # nobody imported


@pytest.mark.parametrize("rule", ["none", "by_import"])
def test_the_congestion_rent_is_accounted_and_refunded_revenue_neutral(tmp_path, rule):
    cfg = tc_config(iterations=2, refund=rule)
    cfg["study"]["days"] = 0.5
    result = Simulation(parse_config(cfg), tmp_path / rule).run(plots=False)
    rows = table(result.out_dir, "SELECT participant, imports_wh, congestion_paid_usd, refund_usd FROM tc_congestion "
                                 "ORDER BY participant")
    # each household's payment by hand from the ledger: its imports times the price above the flat tariff
    by_hand = table(result.out_dir, "SELECT d.participant, sum(d.grid_import_wh) AS imports, "
                                    "sum(d.grid_import_wh * (r.grid_buy_price - 0.1449)) / 1000 AS paid "
                                    "FROM deliveries d JOIN rounds r USING (episode, round) GROUP BY d.participant "
                                    "ORDER BY d.participant")
    assert rows["imports_wh"].tolist() == by_hand["imports"].tolist()
    assert rows["congestion_paid_usd"] == pytest.approx(by_hand["paid"], abs=1e-9)
    rent = rows["congestion_paid_usd"].sum()
    assert rent > 1                                               # the feeder is congested: there is a rent
    congestion = result.summary["tc"]["congestion"]
    assert congestion["rent_usd"] == pytest.approx(rent) and congestion["refund"] == rule
    if rule == "none":
        assert np.all(rows["refund_usd"] == 0) and congestion["refunded_usd"] == 0
    else:  # revenue neutral: all of it back, in proportion to imports
        assert rows["refund_usd"].sum() == pytest.approx(rent, rel=1e-12)
        assert rows["refund_usd"] == pytest.approx(rent * rows["imports_wh"] / rows["imports_wh"].sum())
        assert congestion["participants"]["pro-1"]["refund_usd"] == pytest.approx(rows["refund_usd"][0])


# -- convergence of the schedule (tc.update, tc.tolerance) -------------------------------------------------------
def test_next_schedule_by_hand():
    from trexsim.tc.response import next_schedule

    base, s = np.array([0.1, 0.1]), np.array([0.2, 0.1])
    congestion = np.array([0.3, 0.0])          # this pass's prices: base + congestion = [0.4, 0.1]
    assert next_schedule(s, base, congestion, 0, 0.5).tolist() == pytest.approx([0.4, 0.1])       # the first pass
    assert next_schedule(s, base, congestion, 1, 0.5).tolist() == pytest.approx([0.3, 0.1])       # damped
    # averaging (successive averages): after pass 2 the mean of three passes, s + (new - s) / 3
    assert next_schedule(s, base, congestion, 2, 0.5, "averaging").tolist() == pytest.approx([0.2 + 0.2 / 3, 0.1])


def test_bisection_by_hand():
    """Each pass halves every interval's bracket: to the fixed point where F is continuous, to the jump where
    it is not (the residual then stays: no schedule is in phase with its own prediction there)."""
    from trexsim.tc.response import bisect_congestion

    def run(F, passes):
        low = high = None
        c = np.zeros(2)                                   # the first pass asks at the tariff
        for _ in range(passes):
            low, high, c = bisect_congestion(low, high, c, F(c))
        return low, high, c

    smooth = lambda c: np.maximum(np.array([0.3, 0.0]) - 2 * c, 0)   # noqa: E731  F(0) = 0.3: c* = 0.1; none: 0
    low, high, c = run(smooth, 1)
    assert low.tolist() == [0, 0] and high.tolist() == [0.3, 0] and c.tolist() == [0.15, 0]
    low, high, c = run(smooth, 2)                       # F(0.15) = 0 < 0.15: the fixed point is below
    assert high.tolist() == [0.15, 0] and c.tolist() == pytest.approx([0.075, 0])
    low, high, c = run(smooth, 21)
    assert (high - low).max() == pytest.approx(0.3 / 2 ** 20) and abs(c[0] - 0.1) <= 0.3 / 2 ** 20
    assert abs(smooth(c) - c).max() < 1e-6
    herd = lambda c: np.where(c < 0.05, 0.3, 0.0)       # noqa: E731  all-or-nothing: F jumps over c = F(c)
    low, high, c = run(herd, 30)
    assert c[0] == pytest.approx(0.05, abs=1e-8) and abs(herd(c) - c)[0] >= 0.05 - 1e-8


def test_adaptive_update_by_hand():
    """The adaptive update: a damped step from the best schedule so far, capped at 1 / (1 + L) with L the
    largest measured slope of F, and halved when a pass's gap rises. On a linear F falling with slope 4 the
    first step (damping 0.5) overshoots, is rejected, and the capped step 1 / 5 lands on the fixed point; on a
    coupled (two-interval) F it converges with the best gap never rising; on an all-or-nothing F it keeps the
    best gap and shrinks the step instead of oscillating."""
    from trexsim.tc.response import AdaptiveDamping, adaptive_schedule

    F = lambda p: 0.5 - 4 * p                            # noqa: E731  fixed point 0.1
    state = AdaptiveDamping(0.5)
    p = adaptive_schedule(state, np.array([0.0]), F(np.array([0.0])))
    assert p.tolist() == [0.25] and state.lipschitz == 0 and state.rejected == 0
    p = adaptive_schedule(state, p, F(p))                # gap -0.75 > 0.5: rejected, the step halves, L = 4
    assert state.rejected == 1 and state.lipschitz == pytest.approx(4) and state.step == 0.25
    assert state.used_step() == pytest.approx(0.2) and p.tolist() == pytest.approx([0.1])
    p = adaptive_schedule(state, p, F(p))
    assert abs(F(p) - p).max() < 1e-12

    J = np.array([[-3.0, -1.5], [-1.0, -2.0]])           # a dearer hour also lowers the next one's congestion
    coupled = lambda p: np.array([0.6, 0.4]) + J @ p     # noqa: E731
    state, p, best = AdaptiveDamping(0.5), np.zeros(2), []
    for _ in range(60):
        p = adaptive_schedule(state, p, coupled(p))
        best.append(np.abs(state.accepted_gap).max())
    assert abs(coupled(p) - p).max() < 1e-6 and all(b1 <= b0 for b0, b1 in zip(best, best[1:]))

    herd = lambda p: np.where(p < 0.05, 0.3, 0.0)       # noqa: E731  F jumps over p = F(p)
    state, p, best = AdaptiveDamping(0.5), np.zeros(1), []
    for _ in range(30):
        p = adaptive_schedule(state, p, herd(p))
        best.append(np.abs(state.accepted_gap).max())
    assert all(b1 <= b0 for b0, b1 in zip(best, best[1:])) and best[-1] >= 0.05 - 1e-9 and state.rejected > 5


def test_adaptive_update_converges_on_the_bundled_example(tmp_path):
    """Issue 15: on the bundled congested example (its feeder, 8 heavy households on 100 kVA) the devices'
    proportional responses (band 0.05 $/kWh) and the adaptive update reach a schedule within 0.005 $/kWh of
    its own prediction well within the passes allowed, with yesterday's profiles (the default forecast) and
    with a perfect one (19 and 21 passes when written); the live peak is then 141.6 % and 116.3 % (grid only:
    152.6 %). The same update over the all-or-nothing devices does not converge: F jumps."""
    import pyjson5

    from trexsim.cli import _example_path

    base = pyjson5.decode(open(_example_path("tc")).read())
    seen = {}
    for name, response, forecast in (("yesterday", "proportional", None), ("perfect", "proportional", "perfect"),
                                     ("threshold", "threshold", None)):
        cfg = json.loads(json.dumps(base))
        cfg["tc"].update({"response": response, "update": "adaptive", "iterations": 40, "tolerance": 0.005})
        if forecast:
            cfg["tc"]["forecast"] = {"type": forecast}
        seen[name] = Simulation(parse_config(cfg), tmp_path / name).run(plots=False).summary
    for name, peak in (("yesterday", 141.6), ("perfect", 116.3)):
        tc = seen[name]["tc"]
        (passes,) = tc["horizon_passes"]
        (adaptive,) = tc["adaptive"]
        assert passes < 40 and tc["max_residual_per_kwh"] <= 0.005, name
        assert adaptive["step"] <= 1 / (1 + adaptive["lipschitz"]) + 1e-12 and adaptive["lipschitz"] > 1
        assert seen[name]["powerflow"]["max_transformer_loading_pct"] == pytest.approx(peak, abs=0.1)
    assert seen["threshold"]["tc"]["horizon_passes"] == [40] and seen["threshold"]["tc"]["max_residual_per_kwh"] > 0.1


def test_bisection_brackets_the_schedule_on_the_congested_feeder(tmp_path):
    """On the congested feeder the bracket halves every pass and is reported; the residual stays large, so the
    run shows that this day's all-or-nothing devices have no schedule in phase with its own prediction."""
    cfg = tc_config(iterations=10, update="bisection")
    tc = Simulation(parse_config(cfg), tmp_path).run(plots=False).summary["tc"]
    sched = table(tmp_path, "SELECT price, tou_buy_price, congestion, implied_price FROM tc_schedule")
    assert tc["horizon_passes"] == [10]
    # every interval's first bracket is [0, F(0)] (F(0) < 0.5 $/kWh here: the tariff's predicted loading stays
    # below 160 %), halved by the 9 passes after it
    assert 0 <= tc["max_bracket_per_kwh"] <= 0.5 / 2 ** 9
    assert (sched["congestion"] >= 0).all() and np.allclose(sched["price"], sched["tou_buy_price"] + sched["congestion"])
    assert tc["max_residual_per_kwh"] == pytest.approx(np.abs(sched["implied_price"] - sched["price"]).max())
    cfg = tc_config(iterations=10, update="bisection", tolerance=0.01)      # stops once every bracket is narrower
    tc = Simulation(parse_config(cfg), tmp_path / "tol").run(plots=False).summary["tc"]
    assert tc["horizon_passes"][0] < 10 and tc["max_bracket_per_kwh"] <= 0.01


def test_proportional_devices_bring_the_schedule_nearer_its_own_prediction(tmp_path):
    """The devices' proportional responses make F continuous in the prices: bisected, the schedule's gap to its
    own prediction falls from 0.26 to 0.17 $/kWh on this feeder (measured when written), though not to a fixed
    point (the responses couple the intervals, which a per-interval bisection does not see)."""
    gaps = {}
    for response in ("threshold", "proportional"):
        cfg = tc_config(iterations=10, update="bisection", response=response)
        gaps[response] = Simulation(parse_config(cfg), tmp_path / response).run(plots=False).summary["tc"]["max_residual_per_kwh"]
    assert gaps["proportional"] < gaps["threshold"] - 0.05 and gaps["proportional"] > 0.01


def test_the_schedule_reports_how_far_it_is_from_its_own_prediction(day):
    """Every published interval records the price its own prediction implies; the gap is the fixed point's
    residual. On this congested feeder the default (4 damped passes) is far from a fixed point: the devices
    respond all-or-nothing, so the price iteration oscillates (issue 15 measured 0.24-0.31 $/kWh)."""
    result, _, _ = day
    sched = table(result.out_dir, "SELECT price, implied_price FROM tc_schedule ORDER BY first_round")
    gap = np.abs(sched["implied_price"] - sched["price"]).max()
    assert result.summary["tc"]["max_residual_per_kwh"] == pytest.approx(gap)
    assert gap > 0.1 and result.summary["tc"]["horizon_passes"] == [4]


def test_a_tolerance_stops_early_on_an_uncongested_feeder(tmp_path):
    """A 630 kVA transformer: the loading stays far below the threshold and only the far end's voltage adds
    a little, so the averaged schedule comes within the tolerance of its own prediction and stops before its
    8 passes."""
    cfg = tc_config(iterations=8, tolerance=0.005, update="averaging", feeder={"transformer_kva": 630})
    result = Simulation(parse_config(cfg), tmp_path).run(plots=False)
    tc = result.summary["tc"]
    (passes,) = tc["horizon_passes"]
    assert passes < 8 and tc["max_residual_per_kwh"] <= 0.005
    assert tc["powerflow_solves_for_prices"] == 24 * (passes + 1)   # every pass run, and the final one


def test_round_peak_prediction_sees_the_peak_an_hourly_mean_hides(tmp_path):
    """Hourly prices predicted on hourly mean powers under-predict the 10-minute peak (issue 15: 103 % against
    136 %); predicting every round and keeping each hour's worst predicts what the live powerflow then measures
    (perfect forecast). It does not lower the peak by itself: the price iteration still does not converge."""
    import pyjson5

    from trexsim.cli import _example_path

    base = pyjson5.decode(open(_example_path("tc")).read())
    seen = {}
    for predict in ("interval_mean", "round_peak"):
        cfg = json.loads(json.dumps(base))
        cfg["tc"].update({"predict": predict, "forecast": {"type": "perfect"}})
        s = Simulation(parse_config(cfg), tmp_path / predict).run(plots=False).summary
        seen[predict] = (s["tc"]["max_predicted_transformer_loading_pct"], s["powerflow"]["max_transformer_loading_pct"],
                         s["tc"]["powerflow_solves_for_prices"])
    predicted, measured, solves = seen["interval_mean"]
    assert predicted == pytest.approx(103.2, abs=0.1) and measured == pytest.approx(136.1, abs=0.1) and solves == 24 * 5
    predicted, measured, solves = seen["round_peak"]
    assert predicted == pytest.approx(measured, abs=0.5) and solves == 144 * 5   # a solve per 10-minute round
