"""The live powerflow module: solves the feeder with the participants' metered net loads as the run goes.

Enabled by a ``powerflow`` section in the simulation config (docs/powerflow.md). It only listens:

- ``market/meter`` (``MeterReadings``, one message per participant module): the round's net energy per
  participant, ``load - generation + battery charge - battery discharge`` Wh (positive = import);
- ``sim/round_end``: every ``every``-th round (0, k, 2k, ...) it turns that energy into an average power
  ``P = net_wh * 3600 / interval_s`` W (reactive power from the power factors). Batches of ``BATCH`` such
  rounds are solved, one snapshot per round, in order (``engine.solve_series``: LoadShapes on plain
  circuits such as the generated feeder, else setting each load): in the round loop's thread, or with
  ``solver: process`` in a process of its own, beside the round loop; node voltages and loadings are kept;
- ``sim/episode_end`` / ``sim/end``: reduces what it holds (``RoundReducer``, the replay's rules) and
  appends it to the run's DuckDB: ``powerflow_rounds``, ``powerflow_violations``, ``powerflow_episodes``
  and, with ``detail``, ``powerflow_bus_voltages`` and ``powerflow_element_loading``. Solved rounds are
  also reduced and written every ``CHUNK`` of them, so a long episode is never held as node voltages.

The same feeder, mapping, limits and power factors replayed afterwards (``trexsim powerflow RUN_DIR``)
give the same numbers (tested), to OpenDSS' solution tolerance.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from trexsim.config.schema import PowerflowConfig
from trexsim.fabric import topics
from trexsim.fabric.messages import EpisodeEnd, EpisodeStart, MeterReadings, RoundEnd, RoundStart, merge_meter_readings

CHUNK = 1440  # solved rounds reduced and written at a time
BATCH = 60    # solved rounds handed to the solver at a time
MAX_PENDING = 4  # batches queued for the solver process before the round loop waits for it


# the solver process's engine
_WORKER = threading.local()


class _Inline:
    """An executor that runs each job at once, in the calling thread, on the module's own engine."""

    def __init__(self, engine):
        self.engine = engine

    def submit(self, fn, *args) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, engine=self.engine) if fn is _solve_arrays else fn(*args))
        except BaseException as exc:  # handed to whoever reads the result, as a pool would
            future.set_exception(exc)
        return future

    def shutdown(self, wait: bool = True) -> None:
        pass


def _worker_init(engine_name: str, circuit: str, load_names: list[str]) -> None:
    from trexsim.powerflow.engine import create_engine

    engine = create_engine(engine_name)
    engine.load_circuit(circuit)
    engine.bind_loads(load_names)
    _WORKER.engine = engine


def _worker_ready() -> bool:
    return True


def _solve_arrays(p_load: np.ndarray, q_load: np.ndarray, engine=None):
    """Solve one snapshot per row, in order; (converged, node p.u., loading %, [source P, Q, losses], seconds).
    ``engine``: the module's own (inline), else the solver process's."""
    t0 = time.perf_counter()
    engine = engine if engine is not None else _WORKER.engine
    n = len(p_load)
    converged = np.zeros(n, dtype=bool)
    scalars = np.zeros((n, 3))
    node_pu = loading = None
    for j, snap in enumerate(engine.solve_series(p_load, q_load, "auto")):
        if node_pu is None:
            node_pu = np.empty((n, snap.node_pu.size))
            loading = np.empty((n, snap.loading_pct.size))
        converged[j] = snap.converged
        node_pu[j] = snap.node_pu
        loading[j] = snap.loading_pct
        scalars[j] = (snap.source_p_w, snap.source_q_var, snap.losses_w)
    return converged, node_pu, loading, scalars, time.perf_counter() - t0


def _feeder_argument(feeder):
    from trexsim.powerflow.feeder import FeederSpec

    if isinstance(feeder, dict):
        return FeederSpec.from_dict(feeder, "powerflow.feeder")
    return None if feeder is None else Path(feeder)


class PowerflowModule:
    def __init__(self, fabric, config: PowerflowConfig, participant_ids: list[str], interval_s: int,
                 rounds_per_episode: int, con=None, out_dir: str | Path = "."):
        """``con``: a DuckDB connection to the run's database (None: keep only the per-episode summaries).
        A generated feeder is written to ``out_dir/powerflow/feeder.dss`` (with ``mapping.json``)."""
        from trexsim.powerflow.engine import create_engine
        from trexsim.powerflow.errors import PowerflowError
        from trexsim.powerflow.reduce import RoundReducer
        from trexsim.powerflow.replay import Limits, load_feeder, net_powers

        self.config = config
        self.ids = list(participant_ids)
        self.n = len(self.ids)
        self.interval_s = int(interval_s)
        self.rounds = int(rounds_per_episode)
        self.every = int(config.every)
        self.con = con
        self.limits = Limits(config.limits.v_min_pu, config.limits.v_max_pu, config.limits.max_loading_pct)
        self._net_powers = net_powers
        folder = Path(out_dir) / "powerflow"
        folder.mkdir(parents=True, exist_ok=True)
        self.engine = create_engine(config.engine)
        if isinstance(config.feeder, str) and not Path(config.feeder).is_file():
            raise PowerflowError(f"powerflow.feeder: no such file {config.feeder!r}")
        if isinstance(config.mapping, str) and not Path(config.mapping).is_file():
            raise PowerflowError(f"powerflow.mapping: no such file {config.mapping!r}")
        try:
            self.feeder_info, self.layout, self.mapping = load_feeder(
                _feeder_argument(config.feeder), config.mapping, self.ids, self.engine, folder)
        except PowerflowError as exc:
            raise PowerflowError(f"powerflow: {exc}") from None
        (folder / "mapping.json").write_text(json.dumps(self.mapping.table, indent=2) + "\n")
        self.engine.bind_loads(self.mapping.load_names)
        self.reducer = RoundReducer(self.layout, self.limits)
        n_nodes, n_el = len(self.layout.node_names), len(self.layout.element_names)
        self._node_pu = np.zeros((CHUNK, n_nodes))
        self._loading = np.zeros((CHUNK, n_el))
        self._scalars = np.zeros((CHUNK, 4))   # net_load_w, source_p_w, source_q_var, losses_w
        self._keys = np.zeros((CHUNK, 3), dtype=np.int64)  # round, start_utc_s, rounds represented
        self._converged = np.zeros(CHUNK, dtype=bool)
        self._fill = 0
        self._batch_net = np.zeros((BATCH, self.n))   # metered net energy per participant, Wh
        self._batch_keys = np.zeros((BATCH, 3), dtype=np.int64)  # round, start_utc_s, rounds represented
        self._batch_fill = 0
        self._pending: deque = deque()
        self._start_solver(config.solver)
        self._meter: list[MeterReadings] = []
        self._start_utc_s: dict[int, int] = {}
        self.episode = -1
        self._episode_rows: list[dict[str, np.ndarray]] = []
        self._violations = 0
        self.solve_s = 0.0
        self.summaries: dict[int, dict[str, Any]] = {}
        fabric.subscribe(topics.EPISODE_START, self.on_episode_start)
        fabric.subscribe(topics.ROUND_START, self.on_round_start)
        fabric.subscribe(topics.METER, self.on_meter)
        fabric.subscribe(topics.ROUND_END, self.on_round_end)
        fabric.subscribe(topics.EPISODE_END, self.on_episode_end)
        fabric.subscribe(topics.SIMULATION_END, self.on_simulation_end)

    def _start_solver(self, solver: str) -> None:
        """Where the solves run: in the round loop's thread (``inline``), or beside it in a process of its own
        (``process``: forked now, while the run's threads are idle; it loads the same circuit into its own
        OpenDSS). Not in a thread of this process: OpenDSSDirect.py disposes of a DSS context whenever Python's
        garbage collector frees it, and a context freed while another thread solves crashed the process."""
        if solver == "process":
            import multiprocessing

            if "fork" not in multiprocessing.get_all_start_methods():
                solver = "inline"
        if solver == "process":
            self._pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("fork"),
                                             initializer=_worker_init,
                                             initargs=(self.config.engine, self.feeder_info["path"], self.mapping.load_names))
            self._pool.submit(_worker_ready).result()  # start it now, not in the middle of the round loop
        else:
            self._pool = _Inline(self.engine)
        self.solver = solver

    # ------------------------------------------------------------------ handlers
    def on_episode_start(self, msg: EpisodeStart) -> None:
        self.episode = msg.episode
        self.rounds = msg.rounds
        self._fill = 0
        self._episode_rows = []
        self._violations = 0
        self._meter = []
        self.solve_s = 0.0

    def on_round_start(self, msg: RoundStart) -> None:
        if msg.round % self.every == 0:
            self._start_utc_s[msg.round] = msg.start_utc_s

    def on_meter(self, msg: MeterReadings) -> None:
        if msg.round % self.every:
            return
        if self._meter and (self._meter[0].episode, self._meter[0].round) != (msg.episode, msg.round):
            self._meter = []
        self._meter.append(msg)

    def on_round_end(self, msg: RoundEnd) -> None:
        k = msg.round
        if k % self.every:
            return
        parts = [m for m in self._meter if m.round == k and m.episode == msg.episode]
        self._meter = []
        if parts:
            m = merge_meter_readings(parts, self.n)
            net_wh = m.load_wh - m.generation_wh + m.battery_charge_wh - m.battery_discharge_wh
        else:  # no readings: nothing flowed (as the market settles it)
            net_wh = np.zeros(self.n, dtype=np.int64)
        b = self._batch_fill
        self._batch_net[b] = net_wh
        self._batch_keys[b] = (k, self._start_utc_s.pop(k, 0), min(self.every, self.rounds - k))
        self._batch_fill = b + 1
        if self._batch_fill == BATCH:
            self._submit()

    def _submit(self) -> None:
        """Hand the batch to the solver (copies: the buffers are refilled at once); store what it has done."""
        n = self._batch_fill
        if n == 0:
            return
        self._batch_fill = 0
        cfg = self.config
        p, q = self._net_powers(self._batch_net[:n], self.interval_s, cfg.pf_import, cfg.pf_export)
        job = self._pool.submit(_solve_arrays, self.mapping.expand(p), self.mapping.expand(q))
        self._pending.append((job, self._batch_keys[:n].copy(), p.sum(axis=1)))
        self._collect(block=len(self._pending) > MAX_PENDING)

    def _collect(self, block: bool = False) -> None:
        """Store finished batches in order (all of them, and the oldest one at least if ``block``)."""
        while self._pending and (block or self._pending[0][0].done()):
            job, keys, net_w = self._pending.popleft()
            block = False
            converged, node_pu, loading, scalars, solve_s = job.result()  # a solver error is raised here
            self.solve_s += solve_s
            done = 0
            while done < len(keys):
                i = self._fill
                m = min(len(keys) - done, CHUNK - i)
                rows = slice(done, done + m)
                self._converged[i:i + m] = converged[rows]
                self._node_pu[i:i + m] = node_pu[rows]
                self._loading[i:i + m] = loading[rows]
                self._scalars[i:i + m, 0] = net_w[rows]
                self._scalars[i:i + m, 1:] = scalars[rows]
                self._keys[i:i + m] = keys[rows]
                self._fill = i + m
                done += m
                if self._fill == CHUNK:
                    self._reduce_and_write()

    def _wait(self) -> None:
        """Everything submitted is solved, reduced and written."""
        self._submit()
        while self._pending:
            self._collect(block=True)

    def on_episode_end(self, msg: EpisodeEnd) -> None:
        self._wait()
        self._reduce_and_write()
        self._summarise()

    def on_simulation_end(self, msg) -> None:
        self._wait()
        self._reduce_and_write()
        self._pool.shutdown(wait=False)

    # ------------------------------------------------------------------ reducing and writing
    def _reduce_and_write(self) -> None:
        n = self._fill
        if n == 0:
            return
        self._fill = 0
        r = self.reducer.reduce(self._node_pu[:n], self._loading[:n], self._converged[:n])
        ok = self._converged[:n].copy()
        sc = np.where(ok[:, None], self._scalars[:n], np.nan)
        sc[:, 0] = self._scalars[:n, 0]  # the metered net load is known whether or not the solve converged
        keys = self._keys[:n].copy()
        ep = np.full(n, self.episode, dtype=np.int32)
        rounds = {
            "episode": ep, "round": keys[:, 0].astype(np.int32), "start_utc_s": keys[:, 1],
            "rounds_represented": keys[:, 2].astype(np.int32), "net_load_w": sc[:, 0], "source_p_w": sc[:, 1],
            "source_q_var": sc[:, 2], "losses_w": sc[:, 3], "v_min_pu": r.v_min_pu,
            "v_min_bus": pa.array(r.v_min_bus.tolist(), type=pa.string()), "v_max_pu": r.v_max_pu,
            "v_max_bus": pa.array(r.v_max_bus.tolist(), type=pa.string()),
            "transformer_loading_pct": r.transformer_loading_pct, "line_loading_pct": r.line_loading_pct,
            "max_line": pa.array(r.max_line.tolist(), type=pa.string()),
            "buses_under": r.buses_under.astype(np.int32), "buses_over": r.buses_over.astype(np.int32),
            "elements_over": r.elements_over.astype(np.int32), "converged": ok,
        }
        self._episode_rows.append({k: rounds[k] for k in ("rounds_represented", "losses_w", "v_min_pu", "v_max_pu",
                                                           "transformer_loading_pct", "line_loading_pct")}
                                  | {"any": (r.buses_under + r.buses_over + r.elements_over) > 0, "ok": ok})
        self._violations += len(r.viol_row)
        if self.con is None:
            return
        self._append("powerflow_rounds", pa.table(rounds))
        if len(r.viol_row):
            self._append("powerflow_violations", pa.table({
                "episode": np.full(len(r.viol_row), self.episode, dtype=np.int32),
                "round": keys[r.viol_row, 0].astype(np.int32),
                "kind": pa.array(r.viol_kind.tolist(), type=pa.string()),
                "object": pa.array(r.viol_object.tolist(), type=pa.string()),
                "value": r.viol_value, "limit": r.viol_limit}))
        if self.config.detail:
            B, E = r.bus_min.shape[1], self._loading.shape[1]
            rr = keys[:, 0].astype(np.int32)
            self._append("powerflow_bus_voltages", pa.table({
                "episode": np.full(n * B, self.episode, dtype=np.int32), "round": np.repeat(rr, B),
                "bus": pa.array(np.tile(self.reducer.bus_names, n).tolist(), type=pa.string()),
                "v_min_pu": r.bus_min.ravel(), "v_max_pu": r.bus_max.ravel()}))
            load = np.where(ok[:, None], self._loading[:n], np.nan)
            self._append("powerflow_element_loading", pa.table({
                "episode": np.full(n * E, self.episode, dtype=np.int32), "round": np.repeat(rr, E),
                "element": pa.array(np.tile(self.reducer.element_names, n).tolist(), type=pa.string()),
                "loading_pct": load.ravel()}))

    def _append(self, table: str, data: pa.Table) -> None:
        self.con.register("_trexsim_powerflow_rows", data)
        try:
            self.con.execute(f"INSERT INTO {table} SELECT * FROM _trexsim_powerflow_rows")
        finally:
            self.con.unregister("_trexsim_powerflow_rows")

    def _summarise(self) -> None:
        if not self._episode_rows:
            return
        cat = {k: np.concatenate([c[k] for c in self._episode_rows]) for k in self._episode_rows[0]}
        hours = cat["rounds_represented"] * self.interval_s / 3600.0

        def _extreme(values, fn):
            return float(fn(values)) if np.any(np.isfinite(values)) else None

        s = {
            "episode": self.episode, "feeder": json.dumps(self.feeder_info), "solved_rounds": int(len(hours)),
            "not_converged": int((~cat["ok"]).sum()),
            "min_voltage_pu": _extreme(cat["v_min_pu"], np.nanmin), "max_voltage_pu": _extreme(cat["v_max_pu"], np.nanmax),
            "max_transformer_loading_pct": _extreme(cat["transformer_loading_pct"], np.nanmax),
            "max_line_loading_pct": _extreme(cat["line_loading_pct"], np.nanmax),
            "losses_kwh": float(np.nansum(cat["losses_w"] * hours) / 1000.0),
            "hours_over_limit": float(hours[cat["any"]].sum()), "violations": int(self._violations),
            "solve_s": round(self.solve_s, 4),
        }
        self.summaries[self.episode] = s
        if self.con is not None:
            self._append("powerflow_episodes", pa.table({k: [v] for k, v in s.items()}))

    def summary(self) -> dict[str, Any]:
        """The last episode's summary (what ``powerflow_episodes`` holds), with the feeder as a dict."""
        if not self.summaries:
            return {}
        s = dict(self.summaries[max(self.summaries)])
        s["feeder"] = self.feeder_info
        s["limits"] = {"v_min_pu": self.limits.v_min_pu, "v_max_pu": self.limits.v_max_pu,
                       "max_loading_pct": self.limits.max_loading_pct}
        return s

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self.engine.close()
