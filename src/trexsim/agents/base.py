"""The trader interface: a population of agents is one object holding arrays.

A participant module calls :meth:`TraderPopulation.act` once a round with what its members
can observe (their own forecasts and battery, the grid's prices, public market results) and
gets back one batch of orders. It never sees another participant's state. Settlements and
delivery outcomes come back through :meth:`on_cleared` and :meth:`on_delivered`, so a
learning population can compute rewards; an RL environment can drive the same round loop
step by step from outside.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from trexsim.fabric.messages import Cleared, Delivered


@dataclass(frozen=True)
class TraderObservation:
    """What the members see when placing orders for ``delivery_round`` (arrays per member)."""

    episode: int
    round: int
    delivery_round: int
    forecast_load_wh: np.ndarray
    forecast_generation_wh: np.ndarray
    planned_battery_wh: np.ndarray  # planned battery energy at the meter, + charge / - discharge
    planned_net_wh: np.ndarray  # forecast net energy after the planned battery, + import
    spare_discharge_wh: np.ndarray  # battery energy it could still deliver in that round
    grid_buy_price: float
    grid_sell_price: float


@dataclass(frozen=True)
class OrderBatch:
    """Orders of a population; ``member`` indexes the population's members."""

    member: np.ndarray
    side: np.ndarray
    pool: np.ndarray
    price: np.ndarray
    quantity_wh: np.ndarray

    @staticmethod
    def empty() -> "OrderBatch":
        z = np.zeros(0, dtype=np.int64)
        return OrderBatch(z, z.copy(), z.copy(), np.zeros(0), z.copy())


class TraderPopulation(ABC):
    """All participants that use one trader type, as arrays of parameters."""

    kind: str = ""

    def __init__(self, members: np.ndarray, specs: list, rng: np.random.Generator):
        self.members = np.asarray(members, dtype=np.int64)
        self.specs = specs
        self.rng = rng

    @abstractmethod
    def act(self, obs: TraderObservation) -> OrderBatch:
        """Orders for ``obs.delivery_round``."""

    def on_cleared(self, msg: Cleared) -> None:
        """The market's settlements (public message; a member only uses its own rows)."""

    def on_delivered(self, msg: Delivered) -> None:
        """The delivery outcome of a round, for rewards."""

    def reset(self, episode: int) -> None:
        """Called at the start of every episode."""

    def set_participant_ids(self, ids: list[str]) -> None:
        """The members' participant ids, in ``members`` order (for files a population writes)."""
        self._ids = list(ids)

    def save(self, out_dir) -> list:
        """Write what the population learned into ``out_dir``; return the paths written."""
        return []


_KINDS = {"grid_only": "grid_only", "baseline_agent": "grid_only", "fixed_price": "fixed_price",
          "basic_trader": "fixed_price", "q_learning": "q_learning", "qlearn_bandit": "q_learning",
          "external": "external"}


def population_kinds(specs: list) -> list[str]:
    """The populations a list of trader configs makes, in build order (first appearance)."""
    return list(dict.fromkeys(_KINDS[spec.type] for spec in specs))


def build_trader_populations(specs: list, rng_for: "callable") -> list[TraderPopulation]:
    """Group participants by trader type into populations.

    ``specs[i]`` is participant i's trader config; ``rng_for(kind)`` gives each population
    its own generator spawned from the study seed.
    """
    from trexsim.agents.baselines import FixedPriceTraders, GridOnlyTraders

    classes = {"grid_only": GridOnlyTraders, "baseline_agent": GridOnlyTraders,
               "fixed_price": FixedPriceTraders, "basic_trader": FixedPriceTraders}
    if any(spec.type in ("q_learning", "qlearn_bandit") for spec in specs):
        from trexsim.agents.qlearning import QLearningTraders

        classes.update({"q_learning": QLearningTraders, "qlearn_bandit": QLearningTraders})
    if any(spec.type == "external" for spec in specs):
        from trexsim.agents.external import ExternalTraders

        classes["external"] = ExternalTraders
    groups: dict[type, list[int]] = {}
    for i, spec in enumerate(specs):
        groups.setdefault(classes[spec.type], []).append(i)
    out = []
    for cls, idx in groups.items():
        out.append(cls(np.asarray(idx, dtype=np.int64), [specs[i] for i in idx], rng_for(cls.kind)))
    return out
