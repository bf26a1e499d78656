"""Deep-RL training (issue 7): the training config, the evaluation's numbers, a short PPO run.

The config and evaluation tests need only the core and Gymnasium; the PPO run needs the rl extra's
torch and Stable-Baselines3 and is skipped without them.
"""

import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from trexsim.cli import app
from trexsim.config import parse_config
from trexsim.errors import ConfigError
from trexsim.training import load_training_config, parse_training_config

runner = CliRunner()

BUY, SELL = 0.1449, 0.069
VALUE = (BUY + SELL) / 2  # the default $/kWh of a battery's end-of-day energy


def community(learner_profile=None, interval_s=900):
    """The learner (external trader and battery) among four fixed-price neighbours."""
    return {
        "study": {"name": "t", "start_datetime": "2021-06-01 00:00:00", "days": 1, "seed": 3, "interval_s": interval_s},
        "market": {"grid": {"buy_price": BUY, "sell_price": SELL}},
        "participants": {
            "learner": {"profile": learner_profile or {"type": "realistic", "pv_capacity_kw": 7.0, "annual_load_kwh": 5500},
                        "storage": {"capacity_wh": 13500, "power_w": 5000, "efficiency": 0.95, "initial_soc": 0.5,
                                    "policy": "external"},
                        "trader": {"type": "external", "min_price": 0.05, "max_price": 0.17, "max_quantity_wh": 2000,
                                   "reward": "savings"}},
            "pv": {"count": 2, "profile": {"type": "realistic", "pv_capacity_kw": 5.0},
                   "storage": {"capacity_wh": 13500, "power_w": 5000},
                   "trader": {"type": "fixed_price", "bid_price": 0.12, "ask_price": 0.10}},
            "home": {"count": 2, "profile": {"type": "realistic", "pv_capacity_kw": 0},
                     "trader": {"type": "fixed_price", "bid_price": 0.12, "ask_price": 0.10}},
        },
    }


def training(sim=None, **over):
    cfg = {"name": "t", "simulation": sim if sim is not None else community(), "learner": "learner",
           "total_timesteps": 2048, "seed": 1, "train_dates": {"start": "2021-06-01", "end": "2021-06-05"},
           "eval": {"days": ["2021-06-03"]},
           "ppo": {"n_steps": 512, "batch_size": 128, "n_epochs": 2, "net_arch": [32, 32], "log_std_init": -0.5},
           "checkpoint_every_steps": 1024}
    cfg.update(over)
    return cfg


def problems(data, **kwargs):
    with pytest.raises(ConfigError) as err:
        parse_training_config(data, **kwargs)
    return err.value.problems


# ------------------------------------------------------------------ the training config
def test_config_errors_name_their_keys():
    bad = training(total_timesteps=0, algorithm="dqn")
    bad["ppo"].update(learning_rate=0, lr=0.1, net_arch=[64, 0], initial_action=[0, 2])
    bad["eval"]["days"] = ["2021-06-31"]
    bad["seeds"] = 3
    assert sorted(problems(bad)) == sorted([
        ("total_timesteps", "must be >= 1"),
        ("algorithm", "input should be 'ppo'"),
        ("ppo.learning_rate", "must be > 0"),
        ("ppo.lr", "unknown key (check its spelling in docs/training.md)"),
        ("ppo.net_arch", "every layer width must be in [1, 4096]"),
        ("ppo.initial_action", "every value must be in [-1, 1]"),
        ("eval.days", "'2021-06-31' is not a date like '2021-07-01'"),
        ("seeds", "unknown key (check its spelling in docs/training.md)"),
    ])
    missing = training()
    del missing["learner"], missing["eval"]
    assert sorted(problems(missing)) == [("eval", "required key is missing"), ("learner", "required key is missing")]


def test_config_checks_between_keys_and_the_community():
    sim = community()
    sim["participants"]["learner"]["storage"]["efficiency"] = 1.5
    assert problems(training(sim)) == [("simulation.participants.learner.storage.efficiency", "must be in (0, 1]")]
    sim = community()
    sim["participants"]["learner"]["trader"] = {"type": "fixed_price"}
    sim["participants"]["learner"]["storage"]["policy"] = "self_consumption"
    bad = training(sim)
    bad["ppo"]["batch_size"] = 1024
    bad["eval"]["rule_trader"] = {"type": "fixed_price", "bid_price": -1}
    assert sorted(problems(bad)) == [
        ("eval.rule_trader.bid_price", "must be in (0, 10]"),
        ("learner", "participant 'learner' needs trader type 'external' (it has 'fixed_price')"),
        ("ppo.batch_size", "must not exceed n_steps x n_envs = 512"),
    ]
    assert problems(training(learner="nobody"))[0][1].startswith("'nobody' is not a participant of the simulation")
    everything_held_out = training(train_dates={"start": "2021-06-03", "end": "2021-06-03"})
    assert problems(everything_held_out) == [("train_dates", "no training date left once the held-out eval.days are taken out")]


def test_training_dates_leave_out_the_held_out_days(tmp_path):
    cfg = parse_training_config(training())
    assert [d.isoformat() for d in cfg.train_start_dates()] == ["2021-06-01", "2021-06-02", "2021-06-04", "2021-06-05"]
    sim = community()
    sim["study"]["days"] = 2  # a 2-day episode from 06-02 would cover the held-out 06-03
    cfg = parse_training_config(training(sim))
    assert [d.isoformat() for d in cfg.train_start_dates()] == ["2021-06-01", "2021-06-05"]
    # a file: the simulation path is relative to the training config, with // comments
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "community.json").write_text(json.dumps(community()))
    data = training("sub/community.json")
    (tmp_path / "train.json").write_text("// a comment\n" + json.dumps(data))
    cfg = load_training_config(tmp_path / "train.json")
    assert cfg.simulation_config.participants["learner"].trader.type == "external"
    assert abs(cfg.energy_value - VALUE) < 1e-12
    bad = dict(data, simulation="missing.json")
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(ConfigError) as err:
        load_training_config(tmp_path / "bad.json")
    assert err.value.problems[0][1].startswith("config file not found")


def test_cli_reports_a_bad_training_config(tmp_path):
    bad = training()
    bad["ppo"]["gamma"] = 2
    (tmp_path / "t.json").write_text(json.dumps(bad))
    r = runner.invoke(app, ["train", str(tmp_path / "t.json")])
    assert r.exit_code == 2
    assert "ppo.gamma" in r.output and "must be <= 1" in r.output and "Traceback" not in r.output


def test_core_does_not_import_torch_and_train_says_how_to_install_it(tmp_path):
    code = ("import sys, trexsim, trexsim.training, trexsim.cli; "
            "print(sorted(m for m in ('torch', 'stable_baselines3', 'tensorboard') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    (tmp_path / "t.json").write_text(json.dumps(training()))
    hide_torch = ("import sys; sys.modules['torch'] = None; from trexsim.cli import app; "
                  f"app(['train', {str(tmp_path / 't.json')!r}])")
    r = subprocess.run([sys.executable, "-c", hide_torch], capture_output=True, text=True)
    assert r.returncode == 2
    assert "pip install 'trexsim[rl]'" in r.stderr and "Traceback" not in r.stderr


# ------------------------------------------------------------------ the evaluation's numbers
# the tests below drive the Gymnasium env; the config tests above need only the core
needs_gym = pytest.mark.skipif(importlib.util.find_spec("gymnasium") is None,
                               reason="the rl extra (gymnasium, pettingzoo) is not installed")
if importlib.util.find_spec("gymnasium") is not None:
    from trexsim.training.env import DatedEnv
    from trexsim.training.evaluate import baseline_config, metrics, run_agent, run_rule


@needs_gym
def test_rule_and_grid_only_bills_equal_a_trexsim_run(tmp_path):
    """The baselines are plain simulations: their bills are what `trexsim run` prints for the household."""
    sim = parse_config(community())
    for trader in ({"type": "fixed_price", "bid_price": 0.12, "ask_price": 0.10}, {"type": "grid_only"}):
        trace = run_rule(sim, "learner", "2021-06-03", trader)
        cfg = baseline_config(sim, "learner", trader).model_dump(mode="json")
        cfg["study"]["start_datetime"] = "2021-06-03 00:00:00"
        (tmp_path / "c.json").write_text(json.dumps(cfg))
        r = runner.invoke(app, ["run", str(tmp_path / "c.json"), "--out", str(tmp_path / "run"), "--quiet"])
        assert r.exit_code == 0, r.output
        summary = json.loads((tmp_path / "run" / "summary.json").read_text())["participants"]["learner"]
        m = metrics(trace)
        assert m["bill_usd"] == pytest.approx(summary["net_cost"], abs=1e-6)
        assert (m["grid_import_wh"], m["grid_export_wh"], m["market_sold_wh"], m["load_wh"]) == (
            summary["grid_bought_wh"], summary["grid_sold_wh"], summary["market_sold_wh"], summary["load_wh"])
        assert m["battery_cycles"] > 0.2  # a 7 kW PV day moves the self-consumption battery
    # the rule sells its surplus to the neighbours at (0.12 + 0.10) / 2, so it is cheaper than grid-only
    assert metrics(run_rule(sim, "learner", "2021-06-03", {"type": "fixed_price"}))["bill_usd"] < \
        metrics(run_rule(sim, "learner", "2021-06-03", {"type": "grid_only"}))["bill_usd"]


@needs_gym
def test_agent_numbers_worked_by_hand():
    """A flat 4 kW load (1000 Wh per 15-minute round) and no PV: scripted actions, hand-worked results."""
    sim = parse_config(community({"type": "flat", "load_w": 4000}))
    hold = run_agent(sim, "learner", "2021-06-03", lambda obs: np.array([0, -1, 0, -1, 0], np.float32))
    m = metrics(hold)
    # 96 rounds x 1000 Wh imported at 0.1449 $/kWh; nothing local, the battery idle
    assert (m["bill_usd"], m["self_sufficiency"], m["battery_cycles"], m["grid_import_wh"]) == (pytest.approx(13.9104, abs=1e-9), 0.0, 0.0, 96_000)
    keep = (1 - 0.02) ** (900 / 2_592_000)  # self-discharge per round
    end = 6750 * keep**96
    assert hold.stored_wh[-1] == pytest.approx(end, abs=0.01)
    assert m["bill_adjusted_usd"] == pytest.approx(13.9104 - (end - 6750) * VALUE / 1000, abs=1e-6)

    drain = run_agent(sim, "learner", "2021-06-03", lambda obs: np.array([0, -1, 0, -1, -1], np.float32))
    m = metrics(drain)
    # from round 1 on it discharges at 5 kW = 1250 Wh a round at the meter (round 0 had no action) until
    # empty: 6750 Wh stored x 0.95 reach the meter, less the little self-discharge
    assert drain.battery_discharge_wh[0] == 0 and list(drain.battery_discharge_wh[1:6]) == [1250] * 5
    assert m["battery_charge_wh"] == 0 and 6400 <= m["battery_discharge_wh"] <= 6412
    assert m["battery_cycles"] == pytest.approx(m["battery_discharge_wh"] / 27_000, abs=1e-6)
    # the meter identity the evaluation relies on agrees with the battery's own stored energy, round by round
    stored = np.concatenate([[6750.0], drain.stored_wh])
    expected = stored[:-1] * keep + 0.95 * drain.battery_charge_wh - drain.battery_discharge_wh / 0.95
    assert np.abs(expected - stored[1:]).max() < 0.6  # the set-point and meter are whole Wh
    # 1000 Wh of the 1250 cover the load; 250 Wh are exported at 0.069 in each full round
    assert m["grid_export_wh"] == 5 * 250 + max(0, m["battery_discharge_wh"] - 5 * 1250 - 1000)
    assert m["self_sufficiency"] == pytest.approx(1 - m["grid_import_wh"] / 96_000, abs=1e-6)
    assert m["grid_import_wh"] == 96_000 - (m["battery_discharge_wh"] - m["grid_export_wh"])


@needs_gym
def test_dated_env_draws_training_days_and_values_the_battery_left():
    import datetime as dt

    sim = parse_config(community({"type": "flat", "load_w": 4000}))
    dates = [dt.date(2021, 6, d) for d in (1, 2, 4, 5)]

    def days(seed):
        env = DatedEnv(sim, "learner", dates)
        out = [env.reset(seed=seed)[1]["date"]] + [env.reset()[1]["date"] for _ in range(5)]
        env.close()
        return out

    first = days(7)
    assert first == days(7) and set(first) <= {d.isoformat() for d in dates} and len(set(first)) > 1
    env = DatedEnv(sim, "learner", dates)
    env.reset(seed=0)
    hold = np.array([0, -1, 0, -1, 0], np.float32)
    done, rewards = False, []
    while not done:
        obs, reward, term, trunc, info = env.step(hold)
        rewards.append(reward)
        done = term or trunc
    env.close()
    end = 6750 * ((1 - 0.02) ** (900 / 2_592_000)) ** 96
    assert info["terminal_energy_value_usd"] == pytest.approx((end - 6750) * VALUE / 1000, abs=1e-6)
    # savings reward: the grid-only household (battery on self-consumption, discharging into the flat load) minus this one
    assert sum(rewards[:-1]) < 0


@needs_gym
def test_residual_orders_with_fixed_prices_and_a_held_battery_is_the_fixed_price_trader(tmp_path):
    """action 'residual': quantities are the forecast residual after the battery, as the fixed_price trader's.

    With the prices at 0.12 / 0.10 and the battery held, the agent must get exactly the bill of the same
    household with a fixed_price trader and an idle battery.
    """
    from trexsim.simulation import Simulation
    from trexsim.training.env import ResidualOrders, config_on_date

    sim = parse_config(community())
    idle = community()
    idle["participants"]["learner"]["storage"]["policy"] = "idle"
    idle["participants"]["learner"]["trader"] = {"type": "fixed_price", "bid_price": 0.12, "ask_price": 0.10}
    summary = Simulation(config_on_date(parse_config(idle), "2021-06-03"), tmp_path).run(plots=False).summary
    expected = summary["participants"]["learner"]
    price = lambda p: 2 * (p - 0.05) / (0.17 - 0.05) - 1  # noqa: E731 - the learner's price range
    trace = run_agent(sim, "learner", "2021-06-03", lambda obs: np.array([price(0.12), price(0.10), 0.0], np.float32),
                      wrap=lambda env: ResidualOrders(env, sim, "learner"))
    m = metrics(trace)
    assert expected["market_sold_wh"] > 2000 and expected["grid_bought_wh"] > 1000  # it trades and imports
    assert m["bill_usd"] == pytest.approx(expected["net_cost"], abs=1e-9)
    assert (m["market_sold_wh"], m["market_bought_wh"], m["grid_import_wh"], m["grid_export_wh"]) == (
        expected["market_sold_wh"], expected["market_bought_wh"], expected["grid_bought_wh"], expected["grid_sold_wh"])
    assert m["battery_cycles"] == 0.0
    # the wrapper's action space, and its width checked in the training config
    assert ResidualOrders(DatedEnv(sim, "learner", [parse_training_config(training()).train_start_dates()[0]]), sim,
                          "learner").action_space.shape == (3,)
    bad = training(action="residual")
    bad["ppo"]["initial_action"] = [0, -1, 0, -1, 0]
    assert problems(bad) == [("ppo.initial_action", "must be 3 values with action 'residual': bid price, ask price, battery set-point")]
    assert problems(training(warm_start={"rounds": 100})) == [
        ("warm_start", "needs action 'residual' (the rule is written as a residual action)")]


# ------------------------------------------------------------------ a short PPO run
@needs_gym
def test_ppo_smoke_run_writes_checkpoints_tensorboard_and_report(tmp_path):
    pytest.importorskip("torch", reason="the rl extra's torch is not installed (pip install 'trexsim[rl]')")
    pytest.importorskip("stable_baselines3", reason="the rl extra's stable-baselines3 is not installed (pip install 'trexsim[rl]')")
    pytest.importorskip("tensorboard", reason="the rl extra's tensorboard is not installed (pip install 'trexsim[rl]')")
    from stable_baselines3 import PPO

    (tmp_path / "t.json").write_text(json.dumps(training()))
    out = tmp_path / "out"
    r = runner.invoke(app, ["train", str(tmp_path / "t.json"), "--out", str(out), "--timesteps", "2048"])
    assert r.exit_code == 0, r.output
    assert "held-out days after 2,048 steps" in r.output
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "ppo_1024_steps.zip", "ppo_2048_steps.zip", "ppo_vecnormalize_1024_steps.pkl", "ppo_vecnormalize_2048_steps.pkl"]
    assert (out / "vecnormalize.pkl").exists()
    assert list((out / "tensorboard").glob("PPO_1/events.out.tfevents.*"))
    assert (out / "monitor" / "env0.monitor.csv").read_text().count("\n") >= 2 + 20  # 2048 steps = 21 days of 96 rounds
    report = json.loads((out / "report.json").read_text())
    assert report["timesteps"] == 2048 and report["days"] == ["2021-06-03"]
    assert set(report["totals"]) == {"grid_only", "rule", "agent"}
    assert report["verdict"]["agent_beats_rule"] == (report["totals"]["agent"]["bill_adjusted_usd"] < report["totals"]["rule"]["bill_adjusted_usd"])
    sim = parse_config(community())
    rule = metrics(run_rule(sim, "learner", "2021-06-03", {"type": "fixed_price", "bid_price": 0.12, "ask_price": 0.10}))
    assert report["totals"]["rule"] == rule
    assert {p.name for p in (out / "figures").iterdir()} == {"bills.png", "soc.png", "learning_curve.png"}
    model = PPO.load(out / "model.zip", device="cpu")
    action, _ = model.predict(np.zeros(13, np.float32), deterministic=True)
    assert action.shape == (5,)
    # evaluating the saved model again gives the same report
    r = runner.invoke(app, ["train", str(tmp_path / "t.json"), "--out", str(out), "--eval-only"])
    assert r.exit_code == 0, r.output
    again = json.loads((out / "report.json").read_text())
    assert again["totals"] == report["totals"] and again["train_seconds"] == report["train_seconds"]


@needs_gym
def test_warm_start_clones_the_self_consumption_rule(tmp_path):
    """Fitted to 20 days of the rule (and PPO all but switched off), the policy runs the battery like the rule."""
    pytest.importorskip("torch", reason="the rl extra's torch is not installed (pip install 'trexsim[rl]')")
    pytest.importorskip("stable_baselines3", reason="the rl extra's stable-baselines3 is not installed (pip install 'trexsim[rl]')")
    from trexsim.training import train

    data = training(action="residual", warm_start={"rounds": 1920, "epochs": 20})
    data["ppo"].update(n_steps=512, batch_size=128, n_epochs=1, learning_rate=1e-6, log_std_init=-1.5)
    result = train(parse_training_config(data), out_dir=tmp_path, timesteps=512)
    assert result.report["warm_start"]["rounds"] == 1920 and result.report["warm_start"]["action_mse"] < 0.01
    t = result.report["totals"]
    # on the held-out day: it charges and discharges about as much as the rule (0.60 cycles), and is
    # much closer to the rule's bill than to grid-only's, as an untrained policy never is
    assert abs(t["agent"]["battery_cycles"] - t["rule"]["battery_cycles"]) < 0.05
    assert t["agent"]["self_sufficiency"] > 0.9
    assert t["agent"]["bill_adjusted_usd"] < t["grid_only"]["bill_adjusted_usd"]
    assert t["agent"]["bill_adjusted_usd"] < 0.9 * t["rule"]["bill_adjusted_usd"]  # bills are negative: within 10 %
