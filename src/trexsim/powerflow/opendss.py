"""The powerflow engine on OpenDSS, through OpenDSSDirect.py (which carries the DSS C-API engine).

Each engine has its own DSS context (a new one, like ``opendssdirect.NewContext()``), so engines do not share
state. Two ways to give OpenDSS the loads of a series of rounds (``solve_series`` / ``solve_arrays``),
measured by ``python -m trexsim.powerflow.bench``:

- ``setters``: per round, ``Loads.Idx`` / ``Loads.kW`` / ``Loads.kvar`` for each load whose power changed,
  then a snapshot solve, then OpenDSS' own reads (``Circuit.AllBusMagPu``, ``PDElements.AllPctNorm``,
  ``Circuit.Losses``). Works on any circuit and is what ``set_loads`` / ``solve`` / ``results`` do.
- ``loadshape``: every driven load follows its own LoadShape holding a block of rounds (actual kW and kvar,
  set once as arrays) in yearly mode, and OpenDSS solves a snapshot at each of its hours (``SolveSnap``;
  the same solution as yearly mode's own ``Solve``, without its time-stepping bookkeeping). About twice as
  fast, but yearly mode also moves anything else in the circuit that has a shape or a time-based control,
  so ``auto`` uses it only on plain circuits (source, lines, transformers, loads, capacitors, reactors,
  meters; no undriven load with a shape) such as the generated feeder.

Reading the results costs as much as solving unless it is done with arrays. The engine's DSS context returns
NumPy arrays (OpenDSSDirect.py's default, Python lists, took longer to convert than OpenDSS took to fill
them), and with LoadShapes on plain circuits one read per round, the complex node voltages
(``Circuit.AllBusVolts``), gives everything: voltage magnitudes in p.u., and the currents of every line and
transformer terminal as ``I = Yprim · V`` with each element's own primitive admittance matrix from OpenDSS
(``CktElement.YPrim``, read once), hence their loading (largest current of terminal 1 over the normal
rating, as ``PDElements.AllPctNorm``) and the losses (the sum of the power into every terminal, as
``Circuit.Losses``). This is OpenDSS' own arithmetic done for a block of rounds at once with sparse
matrices; the first solved round after ``bind_loads`` is checked against OpenDSS' own ``AllBusMagPu``,
``AllPctNorm`` and ``Losses`` (voltages and loadings agree to ~1e-14, losses to ~1e-8 relative), and a
circuit where they did not would go back to reading those.
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
BLOCK = 60  # rounds solved per LoadShape set-up in solve_series (measured fastest on 200 houses, against 15-240)


def _new_context(odd):
    """A DSS context of its own whose array getters return NumPy arrays (``OpenDSSDirect.NewContext`` makes one
    that returns lists, as its module-level API does; 1,206 node voltages: 6 µs as an array, 27 µs as a list).
    Falls back to ``NewContext`` if OpenDSSDirect.py's internals differ from 0.9's."""
    try:
        import dss as dss_py
        from opendssdirect.OpenDSSDirect import OpenDSSDirect

        api = odd.NewContext.__self__._api_util
        lib = api.lib_unpatched
        ctx = api.ffi.gc(lib.ctx_New(), lib.ctx_Dispose)
        new_api = dss_py.CffiApiUtil(api.ffi, lib, ctx)
        new_api._allow_complex = api._allow_complex
        return OpenDSSDirect(new_api, prefer_lists=False)
    except Exception:  # pragma: no cover - another OpenDSSDirect.py version: lists, converted below
        return odd.NewContext()


def _complex(values) -> np.ndarray:
    """OpenDSS' complex arrays come as interleaved (re, im) floats (or as complex, depending on its settings)."""
    a = np.asarray(values)
    return a if np.iscomplexobj(a) else np.ascontiguousarray(a, dtype=float).view(complex)


class _Branches:
    """Every power-delivery element's terminal currents from the node voltages, ``I = Yprim · V``, as one sparse
    matrix (rows: the terminal conductors of every element; columns: the nodes of ``AllBusVolts``); from them the
    reported elements' loading and the total losses, for a block of rounds at once."""

    def __init__(self, d, node_names: list[str], node_base_v: np.ndarray, select: np.ndarray,
                 rating_a: np.ndarray):
        from scipy import sparse

        node_index = {n: i for i, n in enumerate(node_names)}
        rows, cols, vals, row_node, first = [], [], [], [], []
        r0 = 0
        pd, el = d.PDElements, d.CktElement
        names = []
        more = pd.First()
        while more:
            names.append(pd.Name().lower())
            nc, nt, nph = el.NumConductors(), el.NumTerminals(), el.NumPhases()
            buses = [b.split(".", 1)[0].lower() for b in el.BusNames()]
            order = np.asarray(el.NodeOrder(), dtype=np.int64)
            m = nc * nt
            # node 0 is the ground: no voltage, so no column
            idx = np.array([-1 if order[k] == 0 else node_index[f"{buses[k // nc]}.{order[k]}"] for k in range(m)],
                           dtype=np.int64)
            y = _complex(el.YPrim()).reshape(m, m)
            i, j = np.nonzero((y != 0) & (idx >= 0)[None, :])
            rows.append(r0 + i)
            cols.append(idx[j])
            vals.append(y[i, j])
            row_node.append(idx)
            first.append((r0, nph))
            r0 += m
            more = pd.Next()
        # the elements in the order of PDElements.AllNames, which the layout's element columns index
        self.usable = bool(names) and names == [n.lower() for n in pd.AllNames()]
        if not self.usable:
            return
        rows, cols, vals = np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)
        n_nodes = len(node_names)
        y = sparse.csr_matrix((vals, (rows, cols)), shape=(r0 + 1, n_nodes))  # + a zero row
        # losses, the power into every terminal conductor summed: sum_r V_r conj(I_r) = v^T (S^T conj(Y)) conj(v),
        # S selecting each row's node voltage (none for the ground)
        row_node = np.concatenate(row_node)
        live = np.flatnonzero(row_node >= 0)
        pick = sparse.csr_matrix((np.ones(len(live)), (live, row_node[live])), shape=(r0 + 1, n_nodes))
        self.loss = (pick.T @ y.conj()).tocsr()
        # loading: the phase conductors of terminal 1 of each reported element (padded with the zero row)
        self.width = max([first[e][1] for e in select], default=1)
        phase_rows = np.full((len(select), self.width), r0, dtype=np.int64)
        for k, e in enumerate(select):
            r, nph = first[e]
            phase_rows[k, :nph] = np.arange(r, r + nph)
        self.terminal1 = y[phase_rows.ravel()].tocsr()
        with np.errstate(divide="ignore"):
            self.pct_per_a = np.where(rating_a > 0, 100.0 / rating_a, 0.0)[:, None]
        self.inv_base = (1.0 / node_base_v)[:, None]

    def compute(self, v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``v``: (nodes, rounds) complex node voltages -> node p.u. (rounds, nodes), element loading %
        (rounds, elements), losses W (rounds,)."""
        n = v.shape[1]
        amps = np.abs(self.terminal1 @ v).reshape(-1, self.width, n).max(axis=1)      # (elements, rounds)
        losses = np.einsum("ij,ij->j", v, self.loss @ v.conj()).real
        return (np.abs(v) * self.inv_base).T, (amps * self.pct_per_a).T, losses


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
        self._dss = _new_context(odd)
        self.version = f"OpenDSSDirect.py {getattr(odd, '__version__', '?')}"
        self._layout: Layout | None = None
        self._element_select = np.zeros(0, dtype=np.int64)
        self._load_idx: list[int] = []
        self._last_p = np.zeros(0)
        self._last_q = np.zeros(0)
        self._path: Path | None = None
        self._plain_classes = False
        self._plain = False
        self._shapes: list[int] = []  # index of each driven load's series LoadShape
        self._branches: _Branches | None = None
        self._branches_state = "none"   # unbuilt, built (not checked yet), checked, none (OpenDSS' own reads)

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
        # from the node voltages alone on plain circuits, whose elements' admittances never change
        # results from the node voltages on plain circuits, whose elements' admittances never change (built at the
        # first solve: a solver process builds its own, beside the round loop)
        self._branches = None
        self._branches_state = "unbuilt" if self._plain_classes else "none"
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
        if self._branches_state == "checked":
            self._branches_state = "built"
        # plain: no undriven load follows a shape of its own (yearly mode would move it)
        bound = set(self._load_idx)
        shaped = False
        for i in range(1, len(self._layout.load_names) + 1):
            if i not in bound:
                loads.Idx(i)
                shaped |= self._moves_in_yearly()
        self._plain = self._plain_classes and not shaped

    def _moves_in_yearly(self) -> bool:
        """Whether the active load would change in yearly mode: it has a shape, and either draws power (a shape
        multiplies it) or has a shape of actual values. A zero load on a shape of multipliers stays at zero (the
        built-in European LV feeder's loads no household drives)."""
        loads, shapes = self._dss.Loads, self._dss.LoadShape
        names = [s for s in (loads.Yearly(), loads.Daily(), loads.Duty()) if s and s.lower() != "default"]
        if not names:
            return False
        if loads.kW() != 0 or loads.kvar() != 0:
            return True
        for name in names:
            shapes.Name(name)
            if shapes.UseActual():
                return True
        return False

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
        ok = bool(d.Solution.Converged())
        total = np.asarray(d.Circuit.TotalPower(), dtype=float)  # kW, kvar into the circuit are negative
        # one snapshot: OpenDSS' own reads (the node-voltage route pays only for a batch of rounds at once)
        node_pu, loading, losses = self._read()
        return Snapshot(converged=ok, node_pu=node_pu, loading_pct=loading, losses_w=losses,
                        source_p_w=-1e3 * float(total[0]), source_q_var=-1e3 * float(total[1]))

    def _read(self) -> tuple[np.ndarray, np.ndarray, float]:
        """Node p.u., element loading % and losses W of the present solution, as OpenDSS reports them."""
        d = self._dss
        node_pu = np.asarray(d.Circuit.AllBusMagPu(), dtype=float)
        loading = np.asarray(d.PDElements.AllPctNorm(), dtype=float)[self._element_select]
        return node_pu, loading, float(np.asarray(d.Circuit.Losses(), dtype=float)[0])

    def _use_branches(self) -> bool:
        """Whether results come from the node voltages (``_Branches``; built at the first call)."""
        if self._branches_state == "unbuilt":
            lay = self._layout
            base = 1000.0 * lay.bus_kv_base[lay.node_bus]
            self._branches = _Branches(self._dss, lay.node_names, np.where(base > 0, base, 1.0), self._element_select,
                                       lay.element_rating_a)
            self._branches_state = "built" if self._branches.usable else "none"
        if self._branches_state == "none":
            self._branches = None
        return self._branches is not None

    def _check_branches(self, v: np.ndarray) -> bool:
        """The first solution after ``bind_loads`` (node voltages ``v``) is checked against OpenDSS' own
        ``AllBusMagPu``, ``AllPctNorm`` and ``Losses``; should they differ (on the circuits tried voltages and
        loadings agree to ~1e-14, losses to ~1e-8 relative: summed by node they lose a few digits to the
        cancellation of large currents), OpenDSS' own reads are used from then on. True: keep using the voltages."""
        if self._branches_state != "built":
            return self._branches_state == "checked"
        node_pu, loading, losses = self._branches.compute(v[:, None])
        own_pu, own_loading, own_losses = self._read()
        same = (np.allclose(node_pu[0], own_pu, rtol=1e-9, atol=1e-9)
                and np.allclose(loading[0], own_loading, rtol=1e-9, atol=1e-9)
                and np.isclose(losses[0], own_losses, rtol=1e-6, atol=1e-3))
        self._branches_state = "checked" if same else "none"
        if not same:
            self._branches = None
        return same

    def series_method(self, method: str = "auto") -> str:
        """The method ``solve_series`` uses: 'loadshape' or 'setters' ('auto': loadshape on plain circuits)."""
        if method not in ("auto", "setters", "loadshape"):
            raise PowerflowError(f"unknown load method {method!r}; choose auto, setters or loadshape")
        if method == "auto":
            return "loadshape" if self._plain else "setters"
        return method

    def solve_series(self, p_w: np.ndarray, q_var: np.ndarray, method: str = "auto") -> Iterator[Snapshot]:
        n = len(p_w)
        for b in range(0, n, BLOCK):
            ok, node_pu, loading, scalars = self.solve_arrays(p_w[b:b + BLOCK], q_var[b:b + BLOCK], method)
            for k in range(len(ok)):
                yield Snapshot(bool(ok[k]), node_pu[k], loading[k], float(scalars[k, 2]), float(scalars[k, 0]),
                               float(scalars[k, 1]))

    def solve_arrays(self, p_w: np.ndarray, q_var: np.ndarray, method: str = "auto"):
        """``solve_series`` as arrays: one snapshot per row of ``p_w``/``q_var`` (rounds x bound loads), in order;
        returns (converged (rounds,), node p.u. (rounds, nodes), loading % (rounds, elements), [source P W,
        source Q var, losses W] (rounds, 3)). Values of a round that did not converge are what OpenDSS left."""
        p_w = np.asarray(p_w, dtype=float)
        q_var = np.asarray(q_var, dtype=float)
        n = len(p_w)
        lay = self._layout
        ok = np.zeros(n, dtype=bool)
        scalars = np.zeros((n, 3))
        if n == 0 or self.series_method(method) == "setters":
            node_pu = np.empty((n, len(lay.node_names)))
            loading = np.empty((n, len(lay.element_names)))
            for k in range(n):
                self.set_loads(p_w[k], q_var[k])
                self.solve()
                snap = self.results()
                ok[k], node_pu[k], loading[k] = snap.converged, snap.node_pu, snap.loading_pct
                scalars[k] = (snap.source_p_w, snap.source_q_var, snap.losses_w)
            return ok, node_pu, loading, scalars
        d = self._dss
        loads, shapes = d.Loads, d.LoadShape
        p_kw = np.ascontiguousarray(p_w.T * 1e-3)
        q_kvar = np.ascontiguousarray(q_var.T * 1e-3)
        for j, idx in enumerate(self._load_idx):
            if j == len(self._shapes):
                name = f"trexsim_series_{j}"
                d.Text.Command(f"new loadshape.{name} npts=1 sinterval={3600 * SHAPE_HOURS:g} useactual=yes")
                shapes.Name(name)
                self._shapes.append(shapes.Idx())  # activated by index from now on: cheaper than by name
                loads.Idx(idx)
                loads.Yearly(name)
            shapes.Idx(self._shapes[j])
            if shapes.Npts() != n:
                shapes.Npts(n)
            shapes.PMult(p_kw[j])
            shapes.QMult(q_kvar[j])
        d.Text.Command(f"set mode=yearly number=1 stepsize={SHAPE_HOURS:g}h")
        sol, circuit = d.Solution, d.Circuit
        # round k is hour k + 1 of the shapes (what yearly mode's own Solve steps to); SolveSnap at that hour gives
        # the same solution as Solve without its time-stepping bookkeeping (monitors, meters, controls: a plain
        # circuit has none of these to update), ~60 µs a round less on 200 houses
        hour, solve, converged, total = sol.Hour, sol.SolveSnap, sol.Converged, circuit.TotalPower
        sol.Seconds(0)  # a snapshot solve does not advance the clock: every round sits on its whole hour
        fast = self._use_branches()
        if fast:
            volts = np.empty((len(lay.node_names), n), dtype=complex)
            all_volts = circuit.AllBusVolts
        else:
            node_pu = np.empty((n, len(lay.node_names)))
            loading = np.empty((n, len(lay.element_names)))
        try:
            for k in range(n):
                hour(k + 1)
                try:
                    solve()
                    ok[k] = converged()
                except self._odd.DSSException:
                    ok[k] = False
                scalars[k, :2] = total()[:2]
                if fast:
                    volts[:, k] = _complex(all_volts())
                    if k == 0 and not self._check_branches(volts[:, 0]):
                        fast = False
                        node_pu = np.empty((n, len(lay.node_names)))
                        loading = np.empty((n, len(lay.element_names)))
                if not fast:
                    node_pu[k], loading[k], scalars[k, 2] = self._read()
        finally:
            d.Text.Command("set mode=snapshot")
        scalars[:, :2] *= -1e3   # kW, kvar into the circuit are negative
        if fast:
            node_pu, loading, scalars[:, 2] = self._branches.compute(volts)
            node_pu, loading = np.ascontiguousarray(node_pu), np.ascontiguousarray(loading)
        return ok, node_pu, loading, scalars

    # -- direct access, for tests and benchmarks ------------------------------------------------------------
    @property
    def dss(self):
        """The engine's OpenDSSDirect.py context (for inspection; the replay does not need it)."""
        return self._dss
