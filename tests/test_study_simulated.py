"""The settlement study on the general simulation (the backend of mechanisms without a compiled price
rule) gives the compiled study market's histograms exactly, for every built-in mechanism."""

import numpy as np
import pytest

from trexsim.studies.fast_market import FastMarket
from trexsim.studies.settlement import SettlementStudy, SimulatedMarket, cell_backend, matches_paper, run_cell


@pytest.mark.parametrize("mechanism", ["average_price", "exact_match", "exact_price", "k_double_auction_0", "sbba"])
def test_simulated_cells_give_the_compiled_traces(tmp_path, mechanism):
    study = SettlementStudy(episodes=3, days=90 / 1440, anneal_episodes=1, greedy_episodes=1, final_episodes=2)
    config = study.cell_config(mechanism, "balanced", 4)
    assert cell_backend(config) is None
    fast, simulated = FastMarket(config), SimulatedMarket(config, tmp_path)
    try:
        settled = 0
        for episode in range(config.study.episodes):
            a, b = fast.run_episode(episode), simulated.run_episode(episode)
            for name in ("bid_wh", "ask_wh", "settled_wh", "buyer_price_wh", "seller_price_wh", "paid_wh", "received_wh"):
                assert np.array_equal(getattr(a, name), getattr(b, name)), (episode, name)
            assert a.settled_total_wh == b.settled_total_wh
            for name in ("paid_usd", "received_usd", "paid_gap_usd", "received_gap_usd"):
                assert getattr(a, name) == pytest.approx(getattr(b, name), rel=1e-12, abs=1e-12), (episode, name)
            assert a.paid_wh.sum() == a.received_wh.sum() == a.settled_total_wh  # every Wh at the price it paid
            settled += a.settled_total_wh
        assert settled > 0 and a.bid_wh.sum() > 0  # (the last, greedy, episode may settle nothing)
        assert np.array_equal(fast.population.q_bid, simulated.population.q_bid)  # the same learning, too
    finally:
        simulated.close()


def test_a_subclass_that_changes_its_prices_is_not_run_on_the_compiled_market():
    from trexsim.engine.mechanisms import AveragePrice, register_mechanism

    @register_mechanism
    class _BuyerPaysBid(AveragePrice):  # a RulePricedMechanism whose prices are its own
        name = "test_study_buyer_pays_bid"

        def settlement_prices(self, bid_price, ask_price):
            return bid_price, bid_price.copy()

    study = SettlementStudy(mechanisms=["test_study_buyer_pays_bid"], episodes=1, days=20 / 1440, anneal_mechanisms=[])
    config = study.cell_config("test_study_buyer_pays_bid", "balanced", 0)
    assert cell_backend(config) == "settlement 'test_study_buyer_pays_bid' has no compiled clearing"
    cell = run_cell(study, "test_study_buyer_pays_bid", "balanced", 0)
    assert cell.backend == "simulation: settlement 'test_study_buyer_pays_bid' has no compiled clearing"
    assert matches_paper(cell, study) is None


def test_an_unknown_mechanism_is_named_when_the_study_is_read():
    with pytest.raises(ValueError, match="unknown settlement mechanism\\(s\\) 'no_such'"):
        SettlementStudy(mechanisms=["average_price", "no_such"])
