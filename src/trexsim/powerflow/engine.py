"""The powerflow engine interface: what the replay needs from a solver, nothing more.

An engine loads a circuit, is told which of its loads trexsim drives, takes one snapshot of their
powers, solves and reports node voltages, branch loadings and losses. ``OpenDSSEngine``
(``trexsim.powerflow.opendss``) is the one implementation; another solver (pandapower, say) would
implement the same five abstract methods and the replay would not change. ``solve_series`` solves many
snapshots in a row; its default sets, solves and reads each one in turn, and an engine may override it
with something faster (OpenDSS does).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Iterator, Sequence

import numpy as np


@dataclass(frozen=True)
class Layout:
    """What a loaded circuit consists of, in the order the engine's results use."""

    bus_names: list[str]
    bus_kv_base: np.ndarray        # line-to-neutral base voltage per bus, kV (0: no base, not checked)
    node_names: list[str]          # e.g. 'h001.1'
    node_bus: np.ndarray           # index into bus_names for each node
    node_checked: np.ndarray       # bool: phase nodes with a base (neutrals and dead nodes are not checked)
    element_names: list[str]       # branch elements whose loading is reported, e.g. 'Line.main_1_1'
    element_kind: list[str]        # 'line' or 'transformer'
    element_rating_a: np.ndarray   # normal current rating the loading is a percentage of, A
    load_names: list[str]          # every load of the circuit


@dataclass(frozen=True)
class Snapshot:
    """One solved snapshot."""

    converged: bool
    node_pu: np.ndarray            # voltage magnitude per node, p.u. (Layout.node_names order)
    loading_pct: np.ndarray        # per element, % of its normal rating (Layout.element_names order)
    losses_w: float                # total active losses
    source_p_w: float              # active power drawn from the source (negative: backfeed)
    source_q_var: float


class PowerflowEngine(ABC):
    name: ClassVar[str]
    version: str = ""

    @abstractmethod
    def load_circuit(self, path: str | Path) -> Layout:
        """Load a circuit file, solve it once as given and return its layout."""

    @abstractmethod
    def bind_loads(self, names: Sequence[str]) -> None:
        """Name the loads that ``set_loads`` drives, in the order of its arrays (constant power)."""

    @abstractmethod
    def set_loads(self, p_w: np.ndarray, q_var: np.ndarray) -> None:
        """Set every bound load's active (W) and reactive (var) power; positive = consumption."""

    @abstractmethod
    def solve(self) -> bool:
        """Solve the snapshot; True if it converged."""

    @abstractmethod
    def results(self) -> Snapshot:
        """The last solution's voltages, loadings and losses."""

    def solve_series(self, p_w: np.ndarray, q_var: np.ndarray, method: str = "auto") -> Iterator[Snapshot]:
        """Solve one snapshot per row of ``p_w``/``q_var`` (rounds x bound loads), in order."""
        for p, q in zip(p_w, q_var):
            self.set_loads(p, q)
            self.solve()
            yield self.results()

    def close(self) -> None:  # pragma: no cover - engines with resources override it
        pass


def create_engine(name: str = "opendss") -> PowerflowEngine:
    """An engine by name ('opendss' is the only one so far)."""
    if name == "opendss":
        from trexsim.powerflow.opendss import OpenDSSEngine

        return OpenDSSEngine()
    from trexsim.powerflow.errors import PowerflowError

    raise PowerflowError(f"unknown powerflow engine {name!r}; available: opendss")
