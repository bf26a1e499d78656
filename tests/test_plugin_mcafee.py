"""The example plug-in (examples/trexsim-mcafee): McAfee's trade reduction on hand-worked books, found
through its entry point, and run by ``trexsim run``, an RL env and the settlement study."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("trexsim_mcafee", reason="the example plug-in is not installed: pip install ./examples/trexsim-mcafee "
                                             "(.ci/run installs it)")
from trexsim_mcafee import efficient_units  # noqa: E402

from trexsim import parse_config  # noqa: E402
from trexsim.cli import app  # noqa: E402
from trexsim.engine import get_mechanism, registered_mechanisms  # noqa: E402
from trexsim.plugins import mechanism_origin  # noqa: E402


def clear(bids, asks):
    """bids/asks: (participant, price $/kWh, quantity Wh) in submission order -> [(bid, ask, Wh)], buyer $, seller $."""
    b = np.array(bids, dtype=float).reshape(-1, 3)
    a = np.array(asks, dtype=float).reshape(-1, 3)
    m = get_mechanism("mcafee").clear(b[:, 0].astype(int), b[:, 1], b[:, 2].astype(int), a[:, 0].astype(int), a[:, 1],
                                      a[:, 2].astype(int))
    pairs = list(zip(m.bid_index.tolist(), m.ask_index.tolist(), m.quantity_wh.tolist()))
    return pairs, sorted(set(m.buyer_price.tolist())), sorted(set(m.seller_price.tolist()))


def test_found_through_its_entry_point():
    assert "mcafee" in registered_mechanisms()
    assert mechanism_origin("mcafee") == ("entry point 'mcafee = trexsim_mcafee:McAfee' (group trexsim.mechanisms) "
                                          "of package trexsim-mcafee 0.1.0")
    assert get_mechanism("mcafee").budget_balance == "weak"


def test_unit_traders_p0_inside_all_k_trade_at_p0():
    # bids 0.20 0.18 0.15 0.10, asks 0.05 0.08 0.12 0.16, one Wh each (submitted out of order).
    # k = 3 (0.15 >= 0.12, 0.10 < 0.16); p0 = (0.10 + 0.16) / 2 = 0.13 lies in [a_3, b_3] = [0.12, 0.15]
    pairs, buyer, seller = clear([(2, 0.15, 1), (0, 0.20, 1), (3, 0.10, 1), (1, 0.18, 1)],
                                 [(6, 0.12, 1), (4, 0.05, 1), (7, 0.16, 1), (5, 0.08, 1)])
    assert pairs == [(1, 1, 1), (3, 3, 1), (0, 0, 1)]  # 0.20-0.05, 0.18-0.08, 0.15-0.12
    assert buyer == seller == [pytest.approx(0.13)]


def test_unit_traders_p0_outside_the_kth_pair_is_dropped():
    # the same book with the 4th ask at 0.22: p0 = (0.10 + 0.22) / 2 = 0.16 > b_3 = 0.15, so the
    # 0.15 bid and the 0.12 ask leave; the two others pay b_3 = 0.15 and receive a_3 = 0.12
    pairs, buyer, seller = clear([(2, 0.15, 1), (0, 0.20, 1), (3, 0.10, 1), (1, 0.18, 1)],
                                 [(6, 0.12, 1), (4, 0.05, 1), (7, 0.22, 1), (5, 0.08, 1)])
    assert pairs == [(1, 1, 1), (3, 3, 1)]
    assert buyer == [0.15] and seller == [0.12]  # the auctioneer keeps 2 Wh x 0.03 $/kWh


def test_multi_wh_p0_inside():
    # A 300 Wh @ 0.15, B 200 @ 0.11; C 300 @ 0.09, D 200 @ 0.14. Wh 1-300: 0.15 vs 0.09 trade; Wh 301:
    # 0.11 vs 0.14 does not, so k = 300 and p0 = (0.11 + 0.14) / 2 = 0.125 in [0.09, 0.15]
    pairs, buyer, seller = clear([(0, 0.15, 300), (1, 0.11, 200)], [(2, 0.09, 300), (3, 0.14, 200)])
    assert pairs == [(0, 0, 300)]
    assert buyer == seller == [pytest.approx(0.125)]


def test_multi_wh_reduction_drops_one_wh():
    # A 400 Wh @ 0.14, B 400 @ 0.12; C 500 @ 0.08, D 500 @ 0.13. Wh 1-400: 0.14 vs 0.08, Wh 401-500:
    # 0.12 vs 0.08, Wh 501: 0.12 vs 0.13 no: k = 500, b_k = 0.12 (B), a_k = 0.08 (C); b_501 = 0.12
    # (B's 101st Wh), a_501 = 0.13: p0 = 0.125 > b_k, so 499 Wh trade, buyers pay 0.12, sellers get 0.08
    assert efficient_units(np.array([0.14, 0.12]), np.array([400, 400]), np.array([0.08, 0.13]),
                           np.array([500, 500])) == (500, 0.12, 0.08, 0.12, 0.13)
    pairs, buyer, seller = clear([(0, 0.14, 400), (1, 0.12, 400)], [(2, 0.08, 500), (3, 0.13, 500)])
    assert pairs == [(0, 0, 400), (1, 0, 99)]
    assert buyer == [0.12] and seller == [0.08]  # auctioneer: 499 Wh x 0.04 $/kWh = 0.01996 $


def test_one_side_exhausted_reduces_the_two_houses():
    # the two houses: 1000 Wh bid at 0.12 against 600 Wh asked at 0.10: k = 600, no 601st ask Wh, so
    # p0 is undefined and the reduction applies: 599 Wh, the buyer pays 0.12, the seller gets 0.10
    pairs, buyer, seller = clear([(0, 0.12, 1000)], [(1, 0.10, 600)])
    assert pairs == [(0, 0, 599)] and buyer == [0.12] and seller == [0.10]
    assert clear([(0, 0.12, 1)], [(1, 0.10, 1)])[0] == []  # k = 1: nothing is left after the reduction
    assert clear([(0, 0.09, 100)], [(1, 0.10, 100)])[0] == []  # k = 0
    assert clear([(0, 0.20, 10**9)], [(1, 0.10, 10**9)])[0] == [(0, 0, 10**9 - 1)]  # curves are never expanded


def test_never_a_self_trade_even_when_it_costs_the_trade():
    # A bids 100 @ 0.20 and asks 100 @ 0.05; B bids 100 @ 0.08; C asks 100 @ 0.10. k = 100 (Wh 101:
    # 0.08 < 0.10), p0 = (0.08 + 0.10) / 2 = 0.09 in [0.05, 0.20]: the first 100 Wh of both curves are
    # A's own, and A never trades with itself, so nothing trades (ALEX's M1 would trade A with C)
    assert clear([(0, 0.20, 100), (1, 0.08, 100)], [(0, 0.05, 100), (2, 0.10, 100)])[0] == []
    # with C asking 0.04, C's Wh come first in the supply curve: Wh 1-100 pair 0.20 with 0.04, Wh 101-200
    # 0.08 (B) with 0.05 (A): k = 200, no 201st bid Wh, so the reduction: 199 Wh, buyers pay b_k = 0.08,
    # sellers get a_k = 0.05; A buys from C, B from A, and A's bid never meets A's ask
    pairs, buyer, seller = clear([(0, 0.20, 100), (1, 0.08, 100)], [(0, 0.05, 100), (2, 0.04, 100)])
    assert pairs == [(0, 1, 100), (1, 0, 99)] and buyer == [0.08] and seller == [0.05]


def _two_houses_mcafee(two_houses, rounds):
    two_houses["study"]["days"] = rounds / 1440
    two_houses["market"]["settlement"] = "mcafee"
    return two_houses


def test_trexsim_run_in_a_fresh_process(tmp_path, two_houses):
    # a new interpreter: the registry is empty until the entry point is loaded for the config's validation
    cfg = tmp_path / "mcafee.json"
    cfg.write_text(json.dumps(_two_houses_mcafee(two_houses, 30)))
    out = tmp_path / "out"
    env = {**os.environ, "COLUMNS": "200"}
    r = subprocess.run([sys.executable, "-m", "trexsim", "run", str(cfg), "--out", str(out), "--no-plots"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "settled 17,371 Wh" in r.stdout  # 29 delivery rounds x 599 Wh
    market = json.loads((out / "summary.json").read_text())["market"]
    assert market["settled_wh"] == 29 * 599
    assert market["auctioneer_surplus"] == pytest.approx(29 * 599 * (0.12 - 0.10) / 1000)  # 0.34742 $
    people = json.loads((out / "summary.json").read_text())["participants"]
    # the buyer: round 0 from the grid (1000 Wh x 0.1449), then 599 Wh x 0.12 + 401 Wh x 0.1449 a round
    assert people["buyer"]["net_cost"] == pytest.approx(0.1449 + 29 * (0.599 * 0.12 + 0.401 * 0.1449), abs=1e-6)
    # the seller: round 0 exports 600 Wh x 0.069; then 599 Wh x 0.10 and 1 Wh exported
    assert people["seller"]["net_cost"] == pytest.approx(-(0.6 * 0.069 + 29 * (0.599 * 0.10 + 0.001 * 0.069)), abs=1e-6)
    r = subprocess.run([sys.executable, "-m", "trexsim", "validate", str(cfg)], capture_output=True, text=True, env=env,
                       timeout=120)
    assert r.returncode == 0 and "valid" in r.stdout


def test_rl_envs_fall_back_to_the_simulation(two_houses):
    pytest.importorskip("pettingzoo", reason="the rl extra is not installed")
    from trexsim.envs import parallel_env, vector_env
    from trexsim.envs._core import compiled_supported

    config = _two_houses_mcafee(two_houses, 20)
    config["participants"]["buyer"]["trader"] = {"type": "external", "min_price": 0.0, "max_price": 0.24,
                                                 "max_quantity_wh": 2000}
    assert compiled_supported(parse_config(config)) == "settlement 'mcafee' has no compiled clearing"
    with pytest.raises(ValueError, match="settlement 'mcafee' has no compiled clearing"):
        parallel_env(config, backend="compiled")
    env = parallel_env(config)
    assert env.backend == "simulation"
    env.reset()
    action = {"buyer": np.array([0.0, 0.0, -1.0, -1.0, 0.0], dtype=np.float32)}  # bid 1000 Wh at 0.12 $/kWh
    rewards, bought = [], []
    while env.agents:
        _, r, _, _, info = env.step(action)
        rewards.append(r["buyer"])
        bought.append(info["buyer"]["bought_wh"])
    assert bought == [0] + [599] * 19
    assert rewards[0] == pytest.approx(-0.1449)
    assert rewards[1:] == pytest.approx([-(599 * 0.12 + 401 * 0.1449) / 1000] * 19)  # -0.1299849 $
    env.close()
    vec = vector_env(config, num_envs=2)
    assert vec.backend == "simulation"
    vec.reset(seed=0)
    actions = np.tile(action["buyer"], (2, 1, 1))
    vec.step(actions)
    _, rewards, _, _, infos = vec.step(actions)
    assert infos["bought_wh"].tolist() == [[599], [599]]
    assert rewards.ravel() == pytest.approx([-0.1299849] * 2)
    vec.close()


def test_a_small_settlement_study(tmp_path):
    from trexsim.simulation import Simulation
    from trexsim.studies.settlement import SettlementStudy

    spec = {"mechanisms": ["mcafee", "average_price"], "scenarios": {"balanced": {"seller_wh": 83, "buyer_wh": 83}},
            "episodes": 2, "days": 60 / 1440, "anneal_mechanisms": [], "final_episodes": 1, "seed": 3}
    path = tmp_path / "study.json"
    path.write_text(json.dumps(spec))
    r = CliRunner().invoke(app, ["study", "settlement", str(path), "--out", str(tmp_path / "out"), "--workers", "1",
                                 "--seeds", "1"])
    assert r.exit_code == 0, r.output
    assert "mcafee: on the general simulation: settlement 'mcafee' has no compiled clearing" in r.output
    cells = {c["mechanism"]: c for c in json.loads((tmp_path / "out" / "results.json").read_text())["cells"]}
    assert cells["mcafee"]["backend"] == "simulation: settlement 'mcafee' has no compiled clearing"
    assert cells["average_price"]["backend"] == "compiled"
    assert cells["mcafee"]["matches_paper"] is None and cells["mcafee"]["expected"].startswith("no expectation")
    assert isinstance(cells["average_price"]["matches_paper"], bool)
    # the general simulation keeps the prices actually paid too: McAfee's buyers pay at least what its sellers get
    assert cells["mcafee"]["median_paid"] >= cells["mcafee"]["median_received"] > 0
    # the study's cell is the plain run of its config: the same energy settled in the last episode
    study = SettlementStudy.model_validate(spec)
    run = Simulation(study.cell_config("mcafee", "balanced", 3), tmp_path / "cell").run(plots=False)
    assert cells["mcafee"]["settled_wh_last_episode"] == run.summary["market"]["settled_wh"] > 0
    assert (tmp_path / "out" / "concentration_mcafee.png").exists()
