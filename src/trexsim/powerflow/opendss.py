"""The powerflow engine on OpenDSS, through OpenDSSDirect.py (which carries the DSS C-API engine).

Each engine has its own DSS context (``opendssdirect.NewContext()``), so engines do not share state.
Results are read with the vectorised API extensions (``Circuit.AllBusMagPu``, ``PDElements.AllPctNorm``).

Two ways to give OpenDSS the loads of a series of rounds (``solve_series``), measured by
``python -m trexsim.powerflow.bench``:

- ``setters``: per round, ``Loads.Idx`` / ``Loads.kW`` / ``Loads.kvar`` for each load whose power changed,
  then a snapshot solve. Works on any circuit and is what ``set_loads`` does.
- ``loadshape``: every driven load follows its own LoadShape holding the whole series (actual kW and
  kvar, set once as arrays); OpenDSS then steps through it in yearly mode, one ``Solve`` per round.
  About 1.6x faster, but yearly mode also moves anything else in the circuit that has a shape or a
  time-based control, so ``auto`` uses it only on plain circuits (source, lines, transformers, loads,
  capacitors, reactors, meters; no undriven load with a shape) such as the generated feeder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from trexsim.powerflow.engine import Layout, PowerflowEngine, Snapshot
from trexsim.powerflow.errors import PowerflowError, import_opendss

# constant-power loads keep their power between these voltages (OpenDSS' defaults, 0.95 and 1.05, would
# turn a metered power into a constant impedance exactly where the violations are)
LOAD_VMIN_PU = 0.7
LOAD_VMAX_PU = 1.3
# element classes that behave the same in snapshot and yearly mode when nothing gives them a shape
PLAIN_CLASSES = {"vsource", "line", "transformer", "load", "capacitor", "reactor", "energymeter", "monitor"}
SHAPE_HOURS = 1.0  # the series' LoadShapes advance one (notional) hour per round: whole-number lookups


def _message(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    keep = [line for line in lines if not line.startswith(("Error Description", "Probable Cause"))]
    return " ".join(keep[:4]) if keep else str(exc)


class OpenDSSEngine(PowerflowEngine):
    name = "opendss"

    def __init__(self, tolerance: float = 1e-6):
        odd = import_opendss()
        self.tolerance = tolerance
        self._odd = odd
        self._dss = odd.NewContext()
        self.version = f"OpenDSSDirect.py {getattr(odd, '__version__', '?')}"
        self._layout: Layout | None = None
        self._element_select = np.zeros(0, dtype=np.int64)
        self._load_idx: list[int] = []
        self._last_p = np.zeros(0)
        self._last_q = np.zeros(0)
        self._path: Path | None = None
        self._plain_classes = False
        self._plain = False
        self._shapes: list[str] = []

    # -- circuit -------------------------------------------------------------------------------------------
    def load_circuit(self, path: str | Path) -> Layout:
        path = Path(path)
        if not path.is_file():
            raise PowerflowError(f"{path}: no such circuit file")
        d = self._dss
        cwd = os.getcwd()  # OpenDSS may change the working directory to the circuit's
        try:
            d.Text.Command("clear")
            d.Text.Command(f'redirect "{path.resolve()}"')
        except self._odd.DSSException as exc:
            raise PowerflowError(f"{path}: OpenDSS could not read the circuit: {_message(exc)}") from None
        finally:
            os.chdir(cwd)
        if d.Basic.NumCircuits() < 1 or not d.Circuit.Name():
            raise PowerflowError(f"{path}: defines no circuit (it needs a 'New Circuit.<name> ...' line)")
        load_names = [n.lower() for n in d.Loads.AllNames()]
        if not d.Loads.Count():
            raise PowerflowError(f"{path}: the circuit has no Load elements for the participants to drive")
        try:
            # OpenDSS' default tolerance (1e-4 p.u.) leaves up to ~1e-4 of the load's power unbalanced;
            # 1e-6 costs about one more iteration per solve
            d.Text.Command(f"set mode=snapshot tolerance={self.tolerance:g}")
            d.Solution.Solve()
        except self._odd.DSSException as exc:
            raise PowerflowError(f"{path}: OpenDSS could not solve the circuit as given: {_message(exc)}") from None
        if not d.Solution.Converged():
            raise PowerflowError(f"{path}: the circuit as given does not converge (check its source, voltage "
                                 f"bases and loads)")
        self._path = path
        self._layout = self._read_layout(path, load_names)
        classes = {name.split(".", 1)[0].lower() for name in d.Circuit.AllElementNames()}
        self._plain_classes = classes <= PLAIN_CLASSES
        self._plain = False
        self._shapes = []
        return self._layout

    def _read_layout(self, path: Path, load_names: list[str]) -> Layout:
        d = self._dss
        bus_names = [b.lower() for b in d.Circuit.AllBusNames()]
        kv_base = np.zeros(len(bus_names))
        for i in range(len(bus_names)):
            d.Circuit.SetActiveBusi(i)
            kv_base[i] = d.Bus.kVBase()
        if not np.any(kv_base > 0):
            raise PowerflowError(f"{path}: no bus has a voltage base, so nothing can be given in p.u.: add "
                                 f"'Set VoltageBases=[...]' and 'CalcVoltageBases' to the circuit")
        node_names = [n.lower() for n in d.Circuit.AllNodeNames()]
        bus_index = {b: i for i, b in enumerate(bus_names)}
        node_bus = np.array([bus_index[n.rsplit(".", 1)[0]] for n in node_names], dtype=np.int64)
        node_number = np.array([int(n.rsplit(".", 1)[1]) for n in node_names], dtype=np.int64)
        base_pu = np.asarray(d.Circuit.AllBusMagPu(), dtype=float)
        # phase conductors are nodes 1-3 by OpenDSS convention; 4+ are neutrals; a dead node is not checked
        checked = (kv_base[node_bus] > 0) & (node_number >= 1) & (node_number <= 3) & (base_pu > 0.1)
        names, kinds, ratings, select = [], [], [], []
        for i, full in enumerate(d.PDElements.AllNames()):
            cls = full.split(".", 1)[0].lower()
            if cls not in ("line", "transformer"):
                continue
            d.Circuit.SetActiveElement(full)
            names.append(f"{cls.capitalize()}.{full.split('.', 1)[1].lower()}")
            kinds.append(cls)
            ratings.append(d.CktElement.NormalAmps())
            select.append(i)
        self._element_select = np.array(select, dtype=np.int64)
        return Layout(bus_names=bus_names, bus_kv_base=kv_base, node_names=node_names, node_bus=node_bus,
                      node_checked=checked, element_names=names, element_kind=kinds,
                      element_rating_a=np.array(ratings, dtype=float), load_names=load_names)

    # -- loads ---------------------------------------------------------------------------------------------
    def bind_loads(self, names: Sequence[str]) -> None:
        if self._layout is None:
            raise PowerflowError("load a circuit before binding loads")
        index = {n: i + 1 for i, n in enumerate(self._layout.load_names)}  # OpenDSS indices are 1-based
        missing = [n for n in names if n.lower() not in index]
        if missing:
            raise PowerflowError(f"{self._path}: no Load named {', '.join(missing)} in the circuit")
        loads = self._dss.Loads
        self._load_idx = [index[n.lower()] for n in names]
        for i in self._load_idx:
            loads.Idx(i)
            loads.Model(1)
            loads.Vminpu(LOAD_VMIN_PU)
            loads.Vmaxpu(LOAD_VMAX_PU)
        self._last_p = np.full(len(names), np.nan)
        self._last_q = np.full(len(names), np.nan)
        # plain: no undriven load follows a shape of its own (yearly mode would move it)
        bound = set(self._load_idx)
        shaped = False
        for i in range(1, len(self._layout.load_names) + 1):
            if i not in bound:
                loads.Idx(i)
                shaped |= any(s and s.lower() != "default" for s in (loads.Yearly(), loads.Daily(), loads.Duty()))
        self._plain = self._plain_classes and not shaped

    def set_loads(self, p_w: np.ndarray, q_var: np.ndarray) -> None:
        p_w = np.asarray(p_w, dtype=float)
        q_var = np.asarray(q_var, dtype=float)
        changed = np.flatnonzero((p_w != self._last_p) | (q_var != self._last_q))
        if changed.size == 0:
            return
        loads = self._dss.Loads
        set_idx, set_kw, set_kvar = loads.Idx, loads.kW, loads.kvar
        idx = self._load_idx
        for j, p, q in zip(changed.tolist(), (p_w[changed] * 1e-3).tolist(), (q_var[changed] * 1e-3).tolist()):
            set_idx(idx[j])
            set_kw(p)
            set_kvar(q)  # after kW: setting kW rescales kvar by the load's present power factor
        self._last_p[changed] = p_w[changed]
        self._last_q[changed] = q_var[changed]

    # -- solve ---------------------------------------------------------------------------------------------
    def solve(self) -> bool:
        try:
            self._dss.Solution.Solve()
        except self._odd.DSSException:
            return False
        return bool(self._dss.Solution.Converged())

    def results(self) -> Snapshot:
        d = self._dss
        node_pu = np.asarray(d.Circuit.AllBusMagPu(), dtype=float)
        loading = np.asarray(d.PDElements.AllPctNorm(), dtype=float)[self._element_select]
        losses = d.Circuit.Losses()
        total = d.Circuit.TotalPower()  # kW, kvar into the circuit are negative
        return Snapshot(converged=bool(d.Solution.Converged()), node_pu=node_pu, loading_pct=loading,
                        losses_w=float(losses[0]), source_p_w=-1e3 * float(total[0]),
                        source_q_var=-1e3 * float(total[1]))

    def series_method(self, method: str = "auto") -> str:
        """The method ``solve_series`` uses: 'loadshape' or 'setters' ('auto': loadshape on plain circuits)."""
        if method not in ("auto", "setters", "loadshape"):
            raise PowerflowError(f"unknown load method {method!r}; choose auto, setters or loadshape")
        if method == "auto":
            return "loadshape" if self._plain else "setters"
        return method

    def solve_series(self, p_w: np.ndarray, q_var: np.ndarray, method: str = "auto") -> Iterator[Snapshot]:
        if self.series_method(method) == "setters":
            yield from super().solve_series(p_w, q_var)
            return
        d = self._dss
        n = len(p_w)
        if n == 0:
            return
        loads, shapes = d.Loads, d.LoadShape
        p_kw = np.ascontiguousarray(np.asarray(p_w, dtype=float).T * 1e-3)
        q_kvar = np.ascontiguousarray(np.asarray(q_var, dtype=float).T * 1e-3)
        for j, idx in enumerate(self._load_idx):
            if j == len(self._shapes):
                name = f"trexsim_series_{j}"
                d.Text.Command(f"new loadshape.{name} npts=1 sinterval={3600 * SHAPE_HOURS:g} useactual=yes")
                self._shapes.append(name)
                loads.Idx(idx)
                loads.Yearly(name)
            shapes.Name(self._shapes[j])
            shapes.Npts(n)
            shapes.PMult(p_kw[j])
            shapes.QMult(q_kvar[j])
        d.Text.Command(f"set mode=yearly number=1 stepsize={SHAPE_HOURS:g}h")
        d.Solution.Hour(0)
        d.Solution.Seconds(0)
        solve, converged, results = d.Solution.Solve, d.Solution.Converged, self.results
        try:
            for _ in range(n):
                try:
                    solve()
                    ok = bool(converged())
                except self._odd.DSSException:
                    ok = False
                snap = results()
                yield snap if ok else Snapshot(False, snap.node_pu, snap.loading_pct, snap.losses_w,
                                               snap.source_p_w, snap.source_q_var)
        finally:
            d.Text.Command("set mode=snapshot")

    # -- direct access, for tests and benchmarks ------------------------------------------------------------
    @property
    def dss(self):
        """The engine's OpenDSSDirect.py context (for inspection; the replay does not need it)."""
        return self._dss
