"""The live powerflow module: solves the feeder with the participants' metered net loads as the run goes.

Enabled by a ``powerflow`` section in the simulation config (docs/powerflow.md). It only listens:

- ``market/meter`` (``MeterReadings``, one message per participant module): the round's net energy per
  participant, ``load - generation + battery charge - battery discharge`` Wh (positive = import);
- ``sim/round_end``: every ``every``-th round (0, k, 2k, ...) it keeps that energy; every ``BATCH`` such rounds
  the batch goes to the solver, which turns it into average powers ``P = net_wh * 3600 / interval_s`` W (reactive
  power from the power factors), solves one snapshot per round, in order (``engine.solve_arrays``: LoadShapes on
  plain circuits such as the generated feeder, else setting each load), and reduces each round where it solved
  it (``RoundReducer``, the replay's rules: lowest and highest bus, most loaded transformer and line,
  violations). The solver is the round loop's own thread (``solver: inline``) or a process of its own beside
  it (``process``; ``auto``, the default, where the machine gives the run a second core); either way only a few
  numbers per round come back (every bus voltage and element loading only with ``detail``);
- every ``CHUNK`` solved rounds, and at ``sim/episode_end`` / ``sim/end``, it appends them to the run's DuckDB:
  ``powerflow_rounds``, ``powerflow_violations``, ``powerflow_episodes`` and, with ``detail``,
  ``powerflow_bus_voltages`` and ``powerflow_element_loading``.

The same feeder, mapping, limits and power factors replayed afterwards (``trexsim powerflow RUN_DIR``)
give the same numbers (tested), to OpenDSS' solution tolerance.
"""

from __future__ import annotations

import json
import os
import time
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from trexsim.config.schema import PowerflowConfig
from trexsim.fabric import topics
from trexsim.fabric.messages import EpisodeEnd, EpisodeStart, MeterReadings, RoundEnd, RoundStart, merge_meter_readings

CHUNK = 1440  # solved rounds written at a time
BATCH = 60    # solved rounds handed to the solver at a time
MAX_PENDING = 4  # batches queued for the solver process before the round loop waits for it


@dataclass
class _Solved:
    """A batch of solved rounds, reduced where it was solved: what the solver hands back (a few numbers per round;
    every bus voltage and element loading only with ``detail``)."""

    converged: np.ndarray      # (rounds,)
    scalars: np.ndarray        # (rounds, 4): net_load_w, source_p_w, source_q_var, losses_w
    reduced: Any               # trexsim.powerflow.reduce.Reduced (bus_min / bus_max only with detail)
    loading: np.ndarray | None  # (rounds, elements) with detail
    solve_s: float


class _Solver:
    """Solves and reduces a batch of rounds: the module's own engine (inline) or, in a solver process, the copy of
    it that the fork made (circuit loaded, loads bound)."""

    def __init__(self, engine, reducer, mapping, interval_s: int, pf_import: float, pf_export: float, detail: bool):
        from trexsim.powerflow.replay import net_powers

        self.engine, self.reducer, self.mapping = engine, reducer, mapping
        self.interval_s, self.pf_import, self.pf_export, self.detail = interval_s, pf_import, pf_export, detail
        self._net_powers = net_powers

    def __call__(self, net_wh: np.ndarray) -> _Solved:
        """``net_wh``: (rounds, participants) metered net energy, Wh."""
        t0 = time.perf_counter()
        p, q = self._net_powers(net_wh, self.interval_s, self.pf_import, self.pf_export)
        p_load, q_load = self.mapping.expand(p), self.mapping.expand(q)
        if hasattr(self.engine, "solve_arrays"):
            ok, node_pu, loading, sc = self.engine.solve_arrays(p_load, q_load, "auto")
        else:  # another engine: its snapshots, one by one
            snaps = list(self.engine.solve_series(p_load, q_load, "auto"))
            ok = np.array([s.converged for s in snaps], dtype=bool)
            node_pu = np.array([s.node_pu for s in snaps])
            loading = np.array([s.loading_pct for s in snaps])
            sc = np.array([(s.source_p_w, s.source_q_var, s.losses_w) for s in snaps]).reshape(-1, 3)
        reduced = self.reducer.reduce(node_pu, loading, ok)
        scalars = np.column_stack([p.sum(axis=1), sc])
        if not self.detail:
            reduced, loading = reduced.without_detail(), None
        return _Solved(ok, scalars, reduced, loading, time.perf_counter() - t0)


# the solver process's solver (set when the process starts: inherited from the fork, never pickled)
_WORKER: dict[str, _Solver] = {}


def _worker_init(solver: _Solver) -> None:
    _WORKER["solver"] = solver


def _worker_solve(net_wh: np.ndarray) -> _Solved:
    return _WORKER["solver"](net_wh)


def _worker_ready() -> bool:
    return True


class _Inline:
    """An executor that runs each job at once, in the calling thread, on the module's own engine."""

    def __init__(self, solver: _Solver):
        self.solver = solver

    def submit(self, net_wh: np.ndarray) -> Future:
        future: Future = Future()
        try:
            future.set_result(self.solver(net_wh))
        except BaseException as exc:  # handed to whoever reads the result, as a pool would
            future.set_exception(exc)
        return future

    def shutdown(self, wait: bool = True) -> None:
        pass


class _Process:
    """A solver process of its own, forked with the module's engine in it (circuit loaded, loads bound)."""

    def __init__(self, solver: _Solver):
        import multiprocessing

        self._pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("fork"),
                                         initializer=_worker_init, initargs=(solver,))
        self._pool.submit(_worker_ready)  # forks now, not in the middle of the round loop

    def submit(self, net_wh: np.ndarray) -> Future:
        return self._pool.submit(_worker_solve, net_wh)

    def shutdown(self, wait: bool = True) -> None:
        self._pool.shutdown(wait=wait)


def solver_kind(solver: str) -> str:
    """Where the solves run for ``powerflow.solver``: 'process' needs the fork start method (Linux, macOS) and
    pays only with a second CPU core for it; 'auto' is 'process' where both hold, else 'inline'."""
    import multiprocessing

    can_fork = "fork" in multiprocessing.get_all_start_methods()
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS
        cores = os.cpu_count() or 1
    if solver == "auto":
        return "process" if can_fork and cores > 1 else "inline"
    return "process" if solver == "process" and can_fork else "inline"


def _feeder_argument(feeder):
    from trexsim.powerflow.feeder import FeederSpec

    from trexsim.powerflow.builtin import is_builtin

    if isinstance(feeder, dict):
        return FeederSpec.from_dict(feeder, "powerflow.feeder")
    if is_builtin(feeder):
        return str(feeder)
    return None if feeder is None else Path(feeder)


class PowerflowModule:
    def __init__(self, fabric, config: PowerflowConfig, participant_ids: list[str], interval_s: int,
                 rounds_per_episode: int, con=None, out_dir: str | Path = "."):
        """``con``: a DuckDB connection to the run's database (None: keep only the per-episode summaries).
        A generated feeder is written to ``out_dir/powerflow/feeder.dss`` (with ``mapping.json``)."""
        from trexsim.powerflow.engine import create_engine
        from trexsim.powerflow.errors import PowerflowError
        from trexsim.powerflow.reduce import RoundReducer
        from trexsim.powerflow.replay import Limits, load_feeder

        self.config = config
        self.ids = list(participant_ids)
        self.n = len(self.ids)
        self.interval_s = int(interval_s)
        self.rounds = int(rounds_per_episode)
        self.every = int(config.every)
        self.con = con
        self.limits = Limits(config.limits.v_min_pu, config.limits.v_max_pu, config.limits.max_loading_pct)
        folder = Path(out_dir) / "powerflow"
        folder.mkdir(parents=True, exist_ok=True)
        self.engine = create_engine(config.engine)
        from trexsim.powerflow.builtin import is_builtin

        if isinstance(config.feeder, str) and not is_builtin(config.feeder) and not Path(config.feeder).is_file():
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
        self._done: list[tuple[np.ndarray, _Solved]] = []  # solved batches not yet written, with their keys
        self._fill = 0                                      # rounds in them
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
        (``process``: forked now, while the run's threads are idle, with a copy of the loaded engine; it solves and
        reduces each batch and sends back a few numbers per round). ``auto``: a process where there is a second
        core. Not in a thread of this process: OpenDSSDirect.py disposes of a DSS context whenever Python's
        garbage collector frees it, and a context freed while another thread solves crashed the process."""
        cfg = self.config
        work = _Solver(self.engine, self.reducer, self.mapping, self.interval_s, cfg.pf_import, cfg.pf_export,
                       cfg.detail)
        self.solver = solver_kind(solver)
        self._pool = _Process(work) if self.solver == "process" else _Inline(work)

    # ------------------------------------------------------------------ handlers
    def on_episode_start(self, msg: EpisodeStart) -> None:
        self.episode = msg.episode
        self.rounds = msg.rounds
        self._done, self._fill = [], 0
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
        """Hand the batch to the solver (a copy: the buffer is refilled at once); store what it has done."""
        n = self._batch_fill
        if n == 0:
            return
        self._batch_fill = 0
        job = self._pool.submit(self._batch_net[:n].copy())
        self._pending.append((job, self._batch_keys[:n].copy()))
        self._collect(block=len(self._pending) > MAX_PENDING)

    def _collect(self, block: bool = False) -> None:
        """Keep finished batches in order (all of them, and the oldest one at least if ``block``); write every
        ``CHUNK`` rounds."""
        while self._pending and (block or self._pending[0][0].done()):
            job, keys = self._pending.popleft()
            block = False
            solved = job.result()  # a solver error is raised here
            self.solve_s += solved.solve_s
            self._done.append((keys, solved))
            self._fill += len(keys)
            if self._fill >= CHUNK:
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
        """Write the solved batches held (their rounds, violations and, with detail, every bus and element)."""
        if not self._done:
            return
        done, self._done, self._fill = self._done, [], 0
        from trexsim.powerflow.reduce import Reduced

        r = Reduced.concat([s.reduced for _, s in done])
        keys = np.concatenate([k for k, _ in done])
        ok = np.concatenate([s.converged for _, s in done])
        sc = np.concatenate([s.scalars for _, s in done])
        sc[~ok, 1:] = np.nan  # the metered net load (column 0) is known whether or not the solve converged
        n = len(keys)
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
            loading = np.concatenate([s.loading for _, s in done])
            B, E = r.bus_min.shape[1], loading.shape[1]
            rr = keys[:, 0].astype(np.int32)
            self._append("powerflow_bus_voltages", pa.table({
                "episode": np.full(n * B, self.episode, dtype=np.int32), "round": np.repeat(rr, B),
                "bus": pa.array(np.tile(self.reducer.bus_names, n).tolist(), type=pa.string()),
                "v_min_pu": r.bus_min.ravel(), "v_max_pu": r.bus_max.ravel()}))
            load = np.where(ok[:, None], loading, np.nan)
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
