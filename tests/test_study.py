"""The settlement-mechanism study: outcomes asserted where they are robust, and its outputs."""

import json

import pytest
from typer.testing import CliRunner

from trexsim.cli import app
from trexsim.studies.settlement import (Scenario, SettlementStudy, matches_paper, run_cell, run_study, verdict,
                                       weighted_median)

LOW, HIGH = 0.07 + 0.07 / 3, 0.14 - 0.07 / 3  # the lower and upper thirds of the 0.07-0.14 window


def test_weighted_median():
    assert weighted_median([1.0, 2.0, 3.0], [1, 1, 5]) == 3.0
    assert weighted_median([1.0, 2.0, 3.0], [5, 1, 1]) == 1.0
    assert weighted_median([1.0, 2.0], [0, 0]) is None


@pytest.mark.parametrize("seed", [0, 1])
def test_m3_over_supply_drives_asks_low_and_bids_follow(seed):
    study = SettlementStudy(episodes=30, days=2, anneal_episodes=0, greedy_episodes=0, final_episodes=5)
    m = run_cell(study, "exact_price", "over_supply", seed).medians()
    assert m["ask"] < LOW and m["bid"] < LOW


def test_m3_over_demand_drives_bids_high():
    # demand-side learning is slow (every bid's reward is negative: the grid covers most demand), so this
    # cell trains for the paper's full 100 episodes of 14 days (2 million rounds, a few seconds compiled)
    study = SettlementStudy(anneal_episodes=0, greedy_episodes=0)
    m = run_cell(study, "exact_price", "over_demand", 0).medians()
    assert m["bid"] > HIGH and m["ask"] > HIGH


def test_cells_are_reproducible_and_seeds_differ():
    study = SettlementStudy(episodes=3, days=0.25, anneal_episodes=0, greedy_episodes=0, final_episodes=2)
    a = run_cell(study, "average_price", "balanced", 5)
    b = run_cell(study, "average_price", "balanced", 5)
    c = run_cell(study, "average_price", "balanced", 6)
    assert (a.bid_wh == b.bid_wh).all() and a.settled_per_episode_wh == b.settled_per_episode_wh
    assert not (a.bid_wh == c.bid_wh).all()


def test_study_outputs_and_command(tmp_path):
    config = tmp_path / "study.json"
    config.write_text(json.dumps({
        "name": "tiny", "mechanisms": ["average_price", "exact_price"],
        "scenarios": {"balanced": {"seller_wh": 83, "buyer_wh": 83}},
        "episodes": 3, "days": 0.1, "anneal_episodes": 2, "greedy_episodes": 1, "final_episodes": 2,
    }))
    r = CliRunner().invoke(app, ["study", "settlement", str(config), "--out", str(tmp_path / "out"), "--workers", "1",
                                 "--seeds", "2"])
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "out" / "results.json").read_text())
    assert len(report["cells"]) == 4
    assert report["robustness"]["exact_price/balanced"].startswith(("0/2 seeds match the paper", "1/2 seeds match", "2/2 seeds match"))
    m3 = [c for c in report["cells"] if c["mechanism"] == "exact_price"][0]
    assert m3["greedy_median_bid"] is not None
    # every cell's metrics over its two seeds, with a bootstrap interval that holds the seeds' mean
    shares = [c["settled_share"] for c in report["cells"] if c["mechanism"] == "exact_price"]
    stat = report["statistics"]["exact_price/balanced"]["settled_share"]
    assert stat["seeds"] == 2 and stat["mean"] == pytest.approx(sum(shares) / 2, abs=1e-6)
    assert min(shares) - 1e-9 <= stat["ci95"][0] <= stat["mean"] <= stat["ci95"][1] <= max(shares) + 1e-9
    assert "95 % percentile bootstrap" in (tmp_path / "out" / "results.md").read_text()
    names = sorted(p.name for p in (tmp_path / "out").glob("*.png"))
    assert names == ["concentration_average_price.png", "concentration_exact_price.png", "greedy_average_price.png",
                     "greedy_exact_price.png", "learning_curves.png"]
    bad = tmp_path / "bad.json"
    bad.write_text('{"episodes": 0}')
    r = CliRunner().invoke(app, ["study", "settlement", str(bad), "--out", str(tmp_path / "o2")])
    assert r.exit_code == 2 and "episodes" in r.output


def test_study_in_parallel_processes_equals_serial(tmp_path):
    study = SettlementStudy(mechanisms=["exact_match"], episodes=2, days=0.1, anneal_episodes=0, greedy_episodes=0,
                            final_episodes=1)
    serial = run_study(study, tmp_path / "a", workers=1)
    parallel = run_study(study, tmp_path / "b", workers=2)
    assert [r.settled_per_episode_wh for r in serial] == [r.settled_per_episode_wh for r in parallel]


def _netns_available() -> bool:
    import shutil
    import subprocess

    if shutil.which("ip") is None:
        return False
    probe = subprocess.run(["ip", "netns", "add", "trexsim-probe"], capture_output=True)
    if probe.returncode:
        return False
    subprocess.run(["ip", "netns", "del", "trexsim-probe"], capture_output=True)
    return True


@pytest.mark.skipif(not _netns_available(), reason="needs `ip netns` (root) to give Ray a loopback-only network")
def test_study_on_a_local_ray_instance_bound_to_loopback(tmp_path):
    """``--cluster local`` runs the same cells on Ray; Ray runs in a network namespace whose only
    interface is loopback, so it can listen on nothing but 127.0.0.1."""
    import os
    import subprocess
    import sys

    pytest.importorskip("ray", reason="the cluster extra (ray) is not installed")
    config = tmp_path / "study.json"
    config.write_text(json.dumps({"name": "ray", "mechanisms": ["exact_price"],
                                  "scenarios": {"balanced": {"seller_wh": 83, "buyer_wh": 83},
                                                "over_supply": {"seller_wh": 167, "buyer_wh": 17}},
                                  "episodes": 2, "days": 0.1, "anneal_episodes": 0, "greedy_episodes": 0,
                                  "final_episodes": 1}))
    ns = f"trexsim-ray-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"], check=True)
        env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
        r = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-m", "trexsim", "study", "settlement", str(config),
                            "--cluster", "local", "--workers", "2", "--seeds", "1", "--out", str(tmp_path / "ray")],
                           capture_output=True, text=True, env=env, timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    on_ray = json.loads((tmp_path / "ray" / "results.json").read_text())
    serial = run_study(SettlementStudy.model_validate(json.loads(config.read_text())), tmp_path / "serial", workers=1)
    assert [c["settled_wh_last_episode"] for c in on_ray["cells"]] == [r.settled_per_episode_wh[-1] for r in serial]


def test_a_quick_study_says_its_verdicts_mean_nothing(tmp_path):
    """--quick is a smoke run (12 episodes): its 'as in paper' column must come with a word that it cannot converge."""
    from typer.testing import CliRunner

    from trexsim.cli import app

    result = CliRunner().invoke(app, ["study", "settlement", "--quick", "--out", str(tmp_path / "q")],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "--quick: a smoke run of 12 episodes" in result.output and "gives no verdicts" in result.output
    assert "seeds match the paper" not in result.output
    rows = [line for line in result.output.splitlines() if line.lstrip("│ ").startswith(("M1", "M2", "M3"))]
    assert len(rows) == 9 and not any(line.rstrip(" │").endswith(("no", "yes")) for line in rows)
    table = (tmp_path / "q" / "results.md").read_text()      # results.md too: a smoke run, no verdicts
    assert "as in the paper (smoke run: no verdicts)" in table and all(
        line.endswith("| - |") for line in table.splitlines()[2:11])


def test_m3_settlements_are_kept_at_the_prices_paid_and_received():
    """M3 pays each side its own price: the cell keeps the energy at each bid price paid and each ask price
    received (what the figures draw), and every Wh settled is in both; M1 both sides pay the midpoint."""
    study = SettlementStudy(episodes=6, days=1, anneal_episodes=0, greedy_episodes=0, final_episodes=3)
    r = run_cell(study, "exact_price", "balanced", 0)
    assert r.buyer_price_wh.sum() == r.seller_price_wh.sum() == r.settled_wh.sum() > 0
    paid = (r.buyer_price_wh * r.prices).sum() / r.buyer_price_wh.sum()
    received = (r.seller_price_wh * r.prices).sum() / r.seller_price_wh.sum()
    import numpy as np

    half = np.linspace(r.prices[0], r.prices[-1], 2 * r.prices.size - 1)
    midpoint = (r.settled_wh * half).sum() / r.settled_wh.sum()
    assert paid > midpoint > received  # M3 keeps the spread; the midpoint is what nobody paid
    assert midpoint == pytest.approx((paid + received) / 2)
    # the cell's price metrics, from the prices each match paid and received (as booked: on the market's tick,
    # where the histograms hold the agents' own price grid: half a tick of 0.0001 $/kWh apart at most)
    m = r.price_metrics()
    assert m["mean_buyer_price"] == pytest.approx(paid, abs=5e-5) and m["mean_seller_price"] == pytest.approx(received, abs=5e-5)
    assert m["auctioneer_surplus_usd"] == pytest.approx((paid - received) * r.settled_wh.sum() / 1000 / 3, rel=1e-3)
    assert r.ce_range == (0.069, 0.1449) and m["ce_price_gap"] == pytest.approx(0.0)  # balanced: every price inside
    r = run_cell(study, "average_price", "over_supply", 0)
    m = r.price_metrics()
    assert r.ce_range == (0.069, 0.069) and m["auctioneer_surplus_usd"] == pytest.approx(0.0, abs=1e-12)
    # M1 pays both sides the midpoint, everything above the sell price: the gap is the mean price over it
    assert m["mean_buyer_price"] == pytest.approx(m["mean_seller_price"])
    assert m["ce_price_gap"] == pytest.approx(m["mean_buyer_price"] - 0.069)


def test_competitive_price_range_and_gap_by_hand():
    from trexsim.studies.fast_market import competitive_price_range, price_gap_per_kwh

    study = SettlementStudy()
    ranges = {s: competitive_price_range(study.cell_config("exact_price", s, 0)) for s in study.scenarios}
    assert ranges == {"over_supply": (0.069, 0.069), "over_demand": (0.1449, 0.1449), "balanced": (0.069, 0.1449)}
    assert [price_gap_per_kwh(p, 0.069, 0.1449) for p in (0.05, 0.1, 0.16)] == pytest.approx([0.019, 0.0, 0.0151])


def test_reproduction_md_holds_the_table_generated_from_the_committed_results():
    """REPRODUCTION.md's results table is results_table(docs/study/results.json), not typed by hand."""
    import json
    from pathlib import Path

    from trexsim.studies.settlement import results_table

    root = Path(__file__).resolve().parents[1]
    text = (root / "REPRODUCTION.md").read_text()
    for results in ("docs/study/results.json", "docs/study/next_action/results.json"):
        summary = json.loads((root / results).read_text())
        table = results_table(summary)
        assert table in text and table.count("\n") == 2 + 9
    assert summary["study"]["credit"] == "next_action"


def test_the_m2_verdict_is_judged_on_the_greedy_policy_and_can_fail():
    """'fails to converge' used to be 'settled share in training < 85 %', which epsilon 0.1 alone guarantees;
    it is now judged on the greedy episodes, so converged agents give 'no'."""
    import numpy as np

    from trexsim.studies.settlement import CellResult, matches_paper

    study = SettlementStudy()
    prices = np.linspace(0.07, 0.14, 100)
    cell = CellResult("exact_match", "balanced", 0, prices, np.ones(100), np.ones(100), np.ones(199),
                      training_share=0.6)
    cell.greedy_share = 1.0  # greedy bids and asks meet: converged
    assert matches_paper(cell, study) is False
    cell.greedy_share = 0.3  # they miss each other
    assert matches_paper(cell, study) is True


def test_bootstrap_intervals_by_hand():
    from trexsim.studies.settlement import bootstrap_ci

    assert bootstrap_ci([0.1]) is None and bootstrap_ci([None, 0.2]) is None   # one seed: no interval
    assert bootstrap_ci([0.1, 0.1, 0.1]) == {"mean": 0.1, "ci95": [0.1, 0.1], "seeds": 3}
    ci = bootstrap_ci([1.0, 2.0, 3.0, 4.0])
    # the resampled means of four seeds lie in [1, 4]; the 2.5 % and 97.5 % quantiles straddle 2.5, symmetric here
    assert ci["mean"] == 2.5 and 1.0 <= ci["ci95"][0] < 2.5 < ci["ci95"][1] <= 4.0
    assert ci["ci95"][0] + ci["ci95"][1] == pytest.approx(5.0, abs=0.13)
    assert bootstrap_ci([1.0, 2.0, 3.0, 4.0]) == ci                           # drawn from a fixed seed: it repeats


def test_sweep_scenarios_by_hand():
    from trexsim.studies.settlement import population_scenarios, ratio_scenarios

    r = ratio_scenarios()
    assert list(r) == ["ratio_10_1", "ratio_6_4", "ratio_5_5", "ratio_4_6", "ratio_1_10"]
    # 368 Wh a round split 10:1 between 2 sellers and 2 buyers: the paper's over-supply cell, 167 vs 17 Wh each
    assert (r["ratio_10_1"].seller_wh, r["ratio_10_1"].buyer_wh) == (167, 17)
    assert (r["ratio_6_4"].seller_wh, r["ratio_6_4"].buyer_wh) == (110, 74)      # 368 x 0.6 / 2 = 110.4
    assert (r["ratio_5_5"].seller_wh, r["ratio_5_5"].buyer_wh) == (92, 92)
    assert [s.balance for s in r.values()] == ["over_supply", "over_supply", "balanced", "over_demand", "over_demand"]
    p = population_scenarios()
    assert len(p) == 9 and (p["balanced_10x10"].sellers, p["balanced_10x10"].buyers) == (10, 10)
    assert p["over_supply_5x5"].supply_wh == 5 * 167 and p["over_supply_5x5"].balance == "over_supply"
    # within 10 %: balanced; beyond: not
    assert Scenario(seller_wh=100, buyer_wh=109).balance == "balanced"
    assert Scenario(seller_wh=100, buyer_wh=111).balance == "over_demand"


def test_a_cell_is_judged_by_its_supply_and_demand_not_its_name():
    """An over-supplied cell under another name gets the over-supply expectation (asks driven low)."""
    study = SettlementStudy(scenarios={"anything": Scenario(seller_wh=167, buyer_wh=17)})
    cell = type("Cell", (), {"mechanism": "exact_price", "scenario": "anything", "training_share": 1.0,
                             "greedy_share": None, "medians": lambda self, greedy=False: {
                                 "bid": 0.08, "ask": 0.07, "settlement": 0.075}})()
    expected, _ = verdict(cell, study)
    assert expected == "asks driven low, bids following"
    assert matches_paper(cell, study) is True
    cell.medians = lambda greedy=False: {"bid": 0.14, "ask": 0.14, "settlement": 0.14}
    assert matches_paper(cell, study) is False


def test_the_ratio_sweep_runs_from_the_command_line(tmp_path):
    from typer.testing import CliRunner

    from trexsim.cli import app

    config = tmp_path / "study.json"
    config.write_text(json.dumps({"name": "tiny", "mechanisms": ["exact_price"], "episodes": 2, "days": 0.05,
                                  "anneal_episodes": 1, "greedy_episodes": 1, "final_episodes": 1}))
    r = CliRunner().invoke(app, ["study", "settlement", str(config), "--sweep", "ratios", "--gamma", "0", "--seeds", "1",
                                 "--out", str(tmp_path / "out"), "--workers", "1"])
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "out" / "results.json").read_text())
    assert report["study"]["name"] == "tiny-ratios-gamma0" and report["study"]["learning"]["discount_factor"] == 0
    cells = {c["scenario"]: c for c in report["cells"]}
    assert list(cells) == ["ratio_10_1", "ratio_6_4", "ratio_5_5", "ratio_4_6", "ratio_1_10"]
    assert (cells["ratio_6_4"]["supply_wh"], cells["ratio_6_4"]["demand_wh"]) == (220, 148)
    assert [c["balance"] for c in cells.values()] == ["over_supply", "over_supply", "balanced", "over_demand",
                                                      "over_demand"]
    r = CliRunner().invoke(app, ["study", "settlement", str(config), "--sweep", "sizes", "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "--sweep" in r.output and "ratios" in r.output


def test_reproduction_md_holds_the_ratio_sweep_generated_from_its_results():
    from pathlib import Path

    from trexsim.studies.settlement import results_table

    root = Path(__file__).resolve().parents[1]
    summary = json.loads((root / "docs/study/ratios/results.json").read_text())
    table = results_table(summary)
    assert table in (root / "REPRODUCTION.md").read_text() and table.count("\n") == 2 + 15
    assert summary["study"]["name"].endswith("-ratios")


def test_reproduction_md_holds_the_ucb1_study_generated_from_its_results():
    from pathlib import Path

    from trexsim.studies.settlement import results_table

    root = Path(__file__).resolve().parents[1]
    summary = json.loads((root / "docs/study/ucb1/results.json").read_text())
    assert summary["study"]["learning"]["policy"] == "ucb1"
    table = results_table(summary)
    assert table in (root / "REPRODUCTION.md").read_text() and table.count("\n") == 2 + 9


def test_the_full_study_runs_ten_seeds_a_cell_by_default_and_a_smoke_run_one():
    assert SettlementStudy().seeds == 10 and SettlementStudy().quick_version().seeds == 1
    assert SettlementStudy(seeds=3).seeds == 3
    with pytest.raises(Exception, match="seeds"):
        SettlementStudy(seeds=0)


def test_price_entropy_and_the_converged_reference_by_hand():
    import math

    from trexsim.studies.settlement import converged_entropy_bits, entropy_bits

    assert entropy_bits([0, 500, 0]) == 0.0                     # every Wh at one price
    assert entropy_bits([3, 3]) == 1.0 and entropy_bits([1, 1, 1, 1]) == 2.0
    assert entropy_bits([2, 1, 1]) == pytest.approx(1.5)         # -(1/2 log 1/2 + 2 x 1/4 log 1/4)
    assert math.isnan(entropy_bits([0, 0]))
    # 2 agents, epsilon 0.1 over 100 prices: each greedy price holds 0.45 + 0.001, the other 98 prices 0.001 each
    want = -2 * 0.451 * math.log2(0.451) - 98 * 0.001 * math.log2(0.001)
    assert converged_entropy_bits(0.1, 100, 2) == pytest.approx(want) == pytest.approx(2.0129, abs=1e-4)
    assert converged_entropy_bits(0.0, 100, 2) == 1.0 and converged_entropy_bits(0.0, 100, 1) == 0.0
    assert converged_entropy_bits(1.0, 100, 2) == pytest.approx(math.log2(100))  # all exploration: uniform


def test_the_policy_verdict_can_pass_and_fail():
    import numpy as np

    from trexsim.studies.settlement import CellResult, policy_converged

    study = SettlementStudy()
    cell = CellResult("average_price", "balanced", 0, np.linspace(0.07, 0.14, 100), np.ones(100), np.ones(100),
                      np.ones(199))
    final = study.final_episodes
    wandering = [6.5] * (study.episodes - final)
    cell.bid_entropy_bits_per_episode = wandering + [2.3] * final   # 2.01 + 0.5 allowed
    cell.ask_entropy_bits_per_episode = wandering + [2.0] * final
    assert policy_converged(cell, study) is True                  # the wandering before the final episodes is not judged
    cell.bid_entropy_bits_per_episode = wandering + [2.3] * (final - 1) + [6.0]
    assert policy_converged(cell, study) is False                 # mean 2.67 > 2.51
    cell.ask_entropy_bits_per_episode = wandering + [float("nan")] * final
    assert policy_converged(cell, study) is None                  # the sellers placed nothing


def test_a_cell_records_learning_curves(tmp_path):
    """Every episode of a cell gives a point of each curve, and results.json carries them with the verdict."""
    import json

    from trexsim.studies.settlement import run_cell, write_report

    study = SettlementStudy(mechanisms=["sbba"], episodes=6, days=0.05, greedy_episodes=2, final_episodes=3,
                            scenarios={"over_supply": {"seller_wh": 167, "buyer_wh": 17}})
    r = run_cell(study, "sbba", "over_supply", 0)
    assert r.backend == "compiled"                                 # SBBA runs on the compiled study market
    assert len(r.greedy_change_per_episode) == len(r.bid_entropy_bits_per_episode) == 8
    assert r.greedy_change_per_episode[0] > 0                      # the first episode moves the untouched tables
    import numpy as np

    assert all(0.0 <= h <= np.log2(100) + 1e-9 for h in r.bid_entropy_bits_per_episode + r.ask_entropy_bits_per_episode)
    summary = write_report(study, [r], tmp_path)
    row = json.loads((tmp_path / "results.json").read_text())["cells"][0]
    assert row["policy_converged"] == r.policy_converged and len(row["learning_curve"]["settled_share"]) == 8
    assert (tmp_path / "learning_curves.png").stat().st_size > 10_000
    assert "policy stable" in (tmp_path / "results.md").read_text() and summary["cells"][0]["bid_entropy_bits"] >= 0


def test_reproduction_md_holds_the_all_mechanisms_study_generated_from_its_results():
    from pathlib import Path

    from trexsim.studies.settlement import results_table

    root = Path(__file__).resolve().parents[1]
    summary = json.loads((root / "docs/study/mechanisms/results.json").read_text())
    table = results_table(summary)
    assert table in (root / "REPRODUCTION.md").read_text() and table.count("\n") == 2 + 21
    assert all(c["backend"] == "compiled" for c in summary["cells"]) and len(summary["cells"]) == 210
    assert all(len(c["learning_curve"]["settled_share"]) == 120 or c["mechanism"] == "exact_price"
               for c in summary["cells"])


def test_a_k_double_auction_price_off_the_grid_is_kept_where_it_was_paid():
    """k = 0.3: one bid of 50 Wh at 0.1124 and one ask of 80 Wh at 0.0841 trade 50 Wh at
    0.3 x 0.1124 + 0.7 x 0.0841 = 0.09259 $/kWh, a price of neither the agents' grid (0.07 + i x 0.07/99)
    nor its half steps ((bid + ask) / 2 = 0.09825); the histogram of prices paid keeps the 50 Wh there."""
    import numpy as np

    from trexsim.engine.mechanisms import clear_round, get_mechanism, register_k_double_auction
    from trexsim.studies.fast_market import paid_price_bins, paid_price_centres, record_paid_prices

    grid = np.linspace(0.07, 0.14, 100)
    booked = np.round(grid / 1e-4) * 1e-4
    assert (booked[60], booked[20]) == pytest.approx((0.1124, 0.0841), abs=1e-12)
    name = register_k_double_auction(0.3)
    cleared = clear_round(get_mechanism(name), [0, 1], [0, 1], [0, 0], [booked[60], booked[20]], [50, 80], [0, 1],
                          [0, 0], 2)
    q, paid_usd, received_usd = cleared[3], cleared[4], cleared[5]
    assert q.tolist() == [50] and paid_usd[0] == received_usd[0] == pytest.approx(0.09259, abs=1e-12)
    low, bin_usd, bins = paid_price_bins(grid, 1e-4)
    paid, received = np.zeros(bins), np.zeros(bins)
    record_paid_prices(paid_usd, received_usd, q, q.size, low, bin_usd, paid, received)
    at = paid_price_centres(low, bin_usd, bins)
    assert np.array_equal(paid, received) and paid.sum() == 50
    assert at[paid > 0] == pytest.approx([0.09259], abs=1e-12)           # the price paid, to the bin's centre
    half = np.linspace(0.07, 0.14, 199)                                   # the old histogram's bins
    assert np.abs(half - 0.09259).min() > 3e-5 > 5 * bin_usd              # off the grid and its half steps
    assert paid[np.abs(at - (booked[60] + booked[20]) / 2) < bin_usd].sum() == 0  # nothing at the midpoint


def test_a_cell_keeps_every_wh_at_the_price_it_paid():
    """A k = 0.3 cell: the histograms of prices paid hold every Wh settled, and their mean is the mean price
    the matches paid (price_metrics, from the money): the bins are exact for k in steps of 0.05."""
    import numpy as np

    from trexsim.engine.mechanisms import register_k_double_auction

    name = register_k_double_auction(0.3)
    study = SettlementStudy(mechanisms=[name], episodes=3, days=0.1, greedy_episodes=1, final_episodes=2)
    r = run_cell(study, name, "balanced", 0)
    assert r.backend == "compiled" and r.paid_wh.sum() == r.received_wh.sum() == r.settled_wh.sum() > 0
    assert np.array_equal(r.paid_wh, r.received_wh)                         # one uniform price: both sides alike
    m = r.price_metrics()
    assert (r.paid_wh * r.paid_prices).sum() / r.paid_wh.sum() == pytest.approx(m["mean_buyer_price"], rel=1e-9)
    assert r.medians()["paid"] is not None and r.greedy_paid_wh.sum() >= 0
    e = run_cell(study.model_copy(update={"mechanisms": ["exact_price"]}), "exact_price", "balanced", 0)
    assert (e.paid_wh * e.paid_prices).sum() > (e.received_wh * e.paid_prices).sum()  # M3: buyers pay more


def test_as_in_the_paper_needs_a_stable_policy_and_can_fail_on_it():
    """M3 over-supply with asks low and bids following: 'as in the paper' only while the policy is stable; with
    the policy wandering the prices alone still match, and the report says so rather than 'as in the paper'."""
    import numpy as np

    from trexsim.studies.settlement import CellResult, matched_column, prices_match_paper, robustness, row_verdicts

    study = SettlementStudy()
    prices = np.linspace(0.07, 0.14, 100)
    low = np.zeros(100)
    low[5] = 1.0   # every order near 0.0735: the lower third
    cell = CellResult("exact_price", "over_supply", 0, prices, low, low, np.ones(199))
    cell.policy_converged = True
    assert prices_match_paper(cell, study) is True and matches_paper(cell, study) is True        # passes
    cell.policy_converged = False
    assert prices_match_paper(cell, study) is True and matches_paper(cell, study) is False       # fails on the policy
    assert verdict(cell, study)[1].endswith("policy not stable")
    cell.policy_converged = None                                                                  # not judged
    assert matches_paper(cell, study) is True
    # M2's claim is about convergence itself: judged on the greedy settled share, not on the entropy
    m2 = CellResult("exact_match", "balanced", 0, prices, low, low, np.ones(199), greedy_share=0.3,
                    policy_converged=True)
    assert matches_paper(m2, study) is True

    def row(seed, prices_ok, stable):
        return {"mechanism": "exact_price", "scenario": "over_supply", "seed": seed, "matches_paper": prices_ok,
                "policy_converged": stable}   # (results written before the verdicts were combined)

    rows = [row(0, True, True), row(1, True, False), row(2, False, False)]
    assert [row_verdicts(r) for r in rows] == [(True, True), (False, True), (False, False)]
    assert matched_column(rows) == "1/3 (prices 2/3, policy not stable)"
    assert robustness(rows) == {"exact_price/over_supply": "1/3 seeds match the paper (2/3 on prices alone; "
                                                           "the policy did not stabilise)"}
    assert matched_column([{**r, "policy_converged": True} for r in rows]) == "2/3"
    old = [{k: v for k, v in r.items() if k != "policy_converged"} for r in rows]   # older still: prices alone
    assert matched_column(old) == "2/3"
