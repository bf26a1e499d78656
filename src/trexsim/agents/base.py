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


@dataclass(frozen=True)
class TraderKind:
    """One kind of trader and what can run it: the registry every driver's gate reads, so that no
    driver silently runs a trader it does not implement (it falls back, or refuses naming it)."""

    name: str  # the population's kind
    config_types: tuple[str, ...]  # the ``trader.type`` values that select it
    population: str  # "module:Class" of its TraderPopulation, imported when a run has one
    compiled_env: bool  # the compiled RL env's round kernel (trexsim.envs._kernels) implements it
    study_fast_path: bool  # the settlement study's compiled market (trexsim.studies.fast_market) implements it


TRADER_KINDS: dict[str, TraderKind] = {k.name: k for k in (
    TraderKind("grid_only", ("grid_only", "baseline_agent"), "trexsim.agents.baselines:GridOnlyTraders", True, False),
    TraderKind("fixed_price", ("fixed_price", "basic_trader"), "trexsim.agents.baselines:FixedPriceTraders", True, False),
    TraderKind("q_learning", ("q_learning", "qlearn_bandit"), "trexsim.agents.qlearning:QLearningTraders", False, True),
    TraderKind("external", ("external",), "trexsim.agents.external:ExternalTraders", True, False),
)}
_KIND_OF_TYPE = {t: k for k in TRADER_KINDS.values() for t in k.config_types}


def register_trader(population: type["TraderPopulation"]) -> type["TraderPopulation"]:
    """Register a trader kind from outside trexsim (a plug-in; usable as a class decorator).

    ``population`` is a :class:`TraderPopulation` subclass with ``kind`` (the kind's name) and
    ``config_model``: a :class:`trexsim.config.schema.TraderSettings` subclass whose ``type`` field is a
    ``Literal`` of the ``trader.type`` values that select it. No compiled driver implements a plug-in
    trader: the RL env runs it on its simulation backend (``backend="auto"``), and a driver asked for a
    compiled path refuses naming it.
    """
    from trexsim.config.schema import TraderSettings, add_trader_config
    from trexsim.plugins import kind_and_settings

    name, model, types = kind_and_settings(population, TraderPopulation, TraderSettings, "trader")
    if not types or not all(isinstance(t, str) and t for t in types):
        raise ValueError(f"{model.__qualname__}.type must be a Literal of the trader.type names, e.g. "
                         f"type: Literal[{name!r}]")
    where = f"{population.__module__}:{population.__qualname__}"
    if name in TRADER_KINDS:
        if TRADER_KINDS[name].population == where:
            return population
        raise ValueError(f"trader kind {name!r} is already registered ({TRADER_KINDS[name].population})")
    taken = sorted(t for t in types if t in _KIND_OF_TYPE)
    if taken:
        raise ValueError(f"trader.type {taken[0]!r} already selects the {_KIND_OF_TYPE[taken[0]].name!r} trader")
    kind = TraderKind(name, tuple(types), where, compiled_env=False, study_fast_path=False)
    TRADER_KINDS[name] = kind
    _KIND_OF_TYPE.update({t: kind for t in types})
    add_trader_config(model)
    return population


def trader_kind(config_type: str) -> TraderKind:
    """The registered kind of a ``trader.type``."""
    if config_type not in _KIND_OF_TYPE:
        from trexsim.plugins import load_trader_plugins

        load_trader_plugins()
    try:
        return _KIND_OF_TYPE[config_type]
    except KeyError:
        raise KeyError(f"unknown trader type {config_type!r}; registered: {', '.join(sorted(_KIND_OF_TYPE))}") from None


def population_kinds(specs: list) -> list[str]:
    """The populations a list of trader configs makes, in build order (first appearance)."""
    return list(dict.fromkeys(trader_kind(spec.type).name for spec in specs))


def build_trader_populations(specs: list, rng_for: "callable") -> list[TraderPopulation]:
    """Group participants by trader kind into populations (in order of first appearance).

    ``specs[i]`` is participant i's trader config; ``rng_for(kind)`` gives each population
    its own generator spawned from the study seed.
    """
    import importlib

    groups: dict[str, list[int]] = {}
    for i, spec in enumerate(specs):
        groups.setdefault(trader_kind(spec.type).name, []).append(i)
    out = []
    for kind, idx in groups.items():
        module, name = TRADER_KINDS[kind].population.split(":")
        cls = getattr(importlib.import_module(module), name)
        out.append(cls(np.asarray(idx, dtype=np.int64), [specs[i] for i in idx], rng_for(cls.kind)))
    return out
