"""The compiled study market and the general simulation give identical settlements and Q-tables."""

import numpy as np
import pytest

from trexsim import parse_config
from trexsim.fabric import topics
from trexsim.simulation import Simulation
from trexsim.studies.fast_market import FastMarket, fast_path_supported


def bandit_config(settlement, close_steps=1, seller_wh=167, buyer_wh=17, episodes=3, rounds=90, seed=11,
                  tie_break="random", credit="order", policy="epsilon_greedy"):
    trader = {"type": "q_learning", "prices": {"min_price": 0.07, "max_price": 0.14, "count": 100},
              "learning_rate": 0.1, "discount_factor": 0.98, "exploration": 0.1, "credit": credit, "policy": policy,
              "anneal": {"learning_rate": 0.98, "exploration": 0.98, "after_episode": 1}}
    participants = {}
    for i in range(2):
        participants[f"seller{i}"] = {"profile": {"type": "flat", "generation_w": seller_wh * 60}, "trader": trader}
        participants[f"buyer{i}"] = {"profile": {"type": "flat", "load_w": buyer_wh * 60}, "trader": trader}
    return parse_config({"study": {"name": "fast", "days": rounds / 1440, "episodes": episodes, "seed": seed},
                         "market": {"settlement": settlement, "close_steps": close_steps, "tie_break": tie_break},
                         "participants": participants, "records": {"level": "summary", "plots": False}})


@pytest.mark.parametrize("settlement", ["average_price", "exact_match", "exact_price", "k_double_auction", "sbba"])
@pytest.mark.parametrize("close_steps,tie_break,credit,policy", [
    (1, "random", "order", "epsilon_greedy"), (2, "random", "order", "epsilon_greedy"),
    (1, "pro_rata", "order", "epsilon_greedy"), (2, "submission", "order", "epsilon_greedy"),
    (1, "random", "next_action", "epsilon_greedy"), (2, "random", "next_action", "epsilon_greedy"),
    (1, "random", "order", "ucb1")])
def test_same_settlements_and_tables_as_the_general_loop(tmp_path, settlement, close_steps, tie_break, credit, policy):
    config = bandit_config(settlement, close_steps, seller_wh=83, buyer_wh=60, tie_break=tie_break, credit=credit,
                           policy=policy)
    assert fast_path_supported(config) is None
    sim = Simulation(config, tmp_path / "run")
    settled = {}

    def on_cleared(msg):
        settled[msg.episode] = settled.get(msg.episode, 0) + int(msg.quantity_wh.sum())

    sim.fabric.subscribe(topics.CLEARED, on_cleared)
    sim.run(plots=False)
    general = sim.participants.traders[0]

    fast = FastMarket(config)
    traces = [fast.run_episode(e) for e in range(config.study.episodes)]
    assert [t.settled_total_wh for t in traces] == [settled.get(e, 0) for e in range(config.study.episodes)]
    assert np.array_equal(fast.population.q_bid, general.q_bid)
    assert np.array_equal(fast.population.q_ask, general.q_ask)
    assert np.count_nonzero(general.q_bid) > 0  # the comparison is not between two untouched tables
    assert np.array_equal(fast.population.n_bid, general.n_bid) and np.array_equal(fast.population.n_ask, general.n_ask)
    assert (general.n_bid.sum() > 0) == (policy == "ucb1")


def test_unsupported_configs_are_named(two_houses):
    reason = fast_path_supported(parse_config(two_houses))
    assert reason == "participant buyer is not a q_learning trader"


def test_next_action_credit_updates_other_actions_and_must_be_one_rule(tmp_path):
    """credit 'next_action' (the original TREX-Core agent's) learns different tables from the same draws;
    a run whose q_learning traders disagree on the rule is refused."""
    from trexsim.errors import TrexsimError

    tables = {}
    for credit in ("order", "next_action"):
        fast = FastMarket(bandit_config("average_price", seller_wh=83, buyer_wh=60, credit=credit))
        traces = [fast.run_episode(e) for e in range(3)]
        tables[credit] = fast.population.q_bid.copy()
        assert sum(t.settled_total_wh for t in traces) > 0
    assert not np.array_equal(tables["order"], tables["next_action"])
    mixed = bandit_config("average_price").model_dump(mode="json", by_alias=True)
    mixed["participants"]["buyer0"]["trader"]["credit"] = "next_action"
    with pytest.raises(TrexsimError, match="the same credit rule"):
        Simulation(parse_config(mixed), tmp_path / "mixed")
