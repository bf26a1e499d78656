"""Assemble a simulation from a config and run it in process.

>>> sim = Simulation(load_config("examples/two-houses.json"), out_dir="runs/two-houses")
>>> result = sim.run()
>>> result.summary["market"]["settled_wh"]

The modules (controller, grid, market, participants, recorder) are wired to one
in-process fabric; each gets its own random generator spawned from ``study.seed``.
``Simulation.step()`` runs one round, so an outside driver (an RL environment) can step it.
"""

from __future__ import annotations

import datetime as _dt
import gc
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import msgspec
import numpy as np

from trexsim import __version__
from trexsim.config.schema import SimulationConfig, TCConfig
from trexsim.errors import TrexsimError
from trexsim.data.profiles import Clock, ProfileSet
from trexsim.fabric.inprocess import InProcessFabric
from trexsim.modules.controller import Controller
from trexsim.modules.delivery import ImbalanceSettlement
from trexsim.modules.grid import Grid
from trexsim.modules.market import Market, OrdersRouter
from trexsim.modules.participants import Participants
from trexsim.records.summary import build_summary
from trexsim.records.writer import Recorder
from trexsim.seeding import participants_rng, run_id_rng


def home_market_ids(config: SimulationConfig) -> list[str] | None:
    """Each participant's home market id (where its trader's orders go); None with one market (orders name none)."""
    markets = config.market_list()
    if len(markets) == 1:
        return None
    return [markets[i].id for i in config.home_markets()]


@dataclass
class RunResult:
    out_dir: Path
    database: Path
    summary: dict
    figures: list[Path]


class Simulation:
    def __init__(self, config: SimulationConfig, out_dir: str | Path | None = None, fabric=None,
                 local_participants: bool = True):
        """``local_participants=False``: the participants run as separate module processes on a
        networked fabric (``trexsim node participants``); this process holds the others."""
        self.config = config
        study = config.study
        self.out_dir = Path(out_dir) if out_dir is not None else Path("runs") / study.name
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.db_path = self.out_dir / "run.duckdb"
        if self.db_path.exists():
            self.db_path.unlink()
        wal = self.db_path.with_suffix(".duckdb.wal")
        if wal.exists():
            wal.unlink()
        members = config.expanded_participants()
        self.participant_ids = [pid for pid, _ in members]
        specs = [spec for _, spec in members]
        self.clock = Clock(study.start_utc_s, study.interval_s, study.rounds_per_episode, study.timezone)
        self.fabric = fabric if fabric is not None else InProcessFabric()
        rounds = study.rounds_per_episode
        tc_market = config.market.type == "tc"
        if tc_market and getattr(self.fabric, "role", "coordinator") != "coordinator":
            raise TrexsimError("market.type 'tc': on a networked fabric the TC market runs in the coordinator "
                               "(trexsim run --fabric ... [--participant-processes K]), not in a separate "
                               f"{getattr(self.fabric, 'role', '?')} process")
        # subscription order is delivery order: the market reads orders before the recorder does
        # (a TC run's grid prices come from the TC market module instead of the tariff)
        self.grid = None if tc_market else Grid(self.fabric, config.market.grid, study.timezone)
        markets = config.market_list()
        market_ids = [m.id for m in markets]
        member_lists = config.market_members()
        router = OrdersRouter() if len(markets) > 1 else None
        self.markets = [
            Market(self.fabric, m, len(specs), rounds, study.seed, members=np.asarray(members, dtype=np.int64),
                   market_ids=market_ids, children=[c for c in markets if c.parent == m.id], router=router)
            for m, members in zip(markets, member_lists)]
        self.market = self.markets[0]
        self.delivery = ImbalanceSettlement(self.fabric, len(specs), rounds)
        self.profiles = ProfileSet.of_participants(self.participant_ids, specs, self.clock, study.seed,
                                                   chunk_rounds=min(1440, rounds))
        self.profiles.check_coverage(rounds)
        self.participants = Participants(self.fabric, self.participant_ids, specs, self.profiles, study.interval_s,
                                         rounds, config.market.close_steps, participants_rng(study.seed),
                                         tc=(config.tc or TCConfig()) if tc_market else None,
                                         home_market=home_market_ids(config)) if local_participants else None
        self.recorder = Recorder(self.fabric, self.db_path, len(specs), config.records.level, config.records.batch_rounds,
                                 market_ids=market_ids)
        self.powerflow = None
        if config.powerflow is not None:  # the live powerflow (OpenDSS, imported only here); docs/powerflow.md
            from trexsim.modules.powerflow import PowerflowModule

            self.powerflow = PowerflowModule(self.fabric, config.powerflow, self.participant_ids, study.interval_s,
                                             rounds, self.recorder.cursor(), self.out_dir)
        self.tc_market = None
        if tc_market:  # the TC market (OpenDSS, imported only here); docs/powerflow.md
            from trexsim.modules.tc import TCMarketModule

            self.tc_market = TCMarketModule(self.fabric, config, self.participant_ids, self.recorder.cursor(), self.out_dir)
        self.controller = Controller(self.fabric, self.participant_ids, study.start_utc_s, study.interval_s, rounds,
                                     study.episodes, config.market.close_steps)
        self.run_id = uuid.UUID(int=int(run_id_rng(study.seed).integers(0, 2**63)) << 64 | study.seed).hex[:16]
        self._write_meta(specs)

    def _write_meta(self, specs) -> None:
        study = self.config.study
        self.recorder.write_meta(
            {"run_id": self.run_id, "name": study.name, "seed": study.seed, "settlement": self._settlement_label(),
             "close_steps": self.config.market.close_steps, "interval_s": study.interval_s, "start_utc_s": study.start_utc_s,
             "rounds_per_episode": study.rounds_per_episode, "episodes": study.episodes, "timezone": study.timezone,
             "trexsim_version": __version__, "config_json": self.config.model_dump_json(),
             "started_utc": _dt.datetime.now(_dt.timezone.utc).replace(tzinfo=None), "finished_utc": None, "status": "running"},
            {"participant": list(range(len(specs))), "participant_id": self.participant_ids,
             "trader": [s.trader.type for s in specs], "profile": [s.profile.type for s in specs],
             "battery_capacity_wh": [s.storage.capacity_wh if s.storage else 0.0 for s in specs]},
            {"market": list(range(len(self.markets))), "market_id": [m.id for m in self.markets],
             "settlement": [m.config.settlement for m in self.markets], "parent": [m.parent for m in self.markets],
             "members": [len(members) for members in self.config.market_members()]},
        )

    def _settlement_label(self) -> str:
        """The mechanism of the run: the market's, or 'K markets' (each market's is in the markets table)."""
        if len(self.markets) == 1:
            return self.config.market.settlement
        return f"{len(self.markets)} markets"

    @property
    def total_rounds(self) -> int:
        return self.config.study.rounds_per_episode * self.config.study.episodes

    # -- driving the round loop from outside (an RL environment, a test) ------------------
    def begin_episode(self, episode: int) -> None:
        """Start ``episode`` (announcing the roster first, on episode 0)."""
        if episode == 0:
            self.controller.announce()
        self.controller.start_episode(episode)

    def step(self) -> bool:
        """Run one round of the current episode; False when the episode has no rounds left."""
        return self.controller.step()

    def end_episode(self) -> None:
        self.controller.end_episode()

    def run(self, on_round: Callable[[int, int], None] | None = None, plots: bool | None = None) -> RunResult:
        """Run every episode; write the database, summary.json and (unless disabled) the figures."""
        status = "failed"
        # the imports leave ~200k long-lived objects; freezing them spares the round loop full GC passes
        gc.freeze()
        try:
            self.controller.run(on_round)
            status = "finished"
            for population in (self.participants.traders if self.participants is not None else []):
                population.save(self.out_dir)
        finally:
            self.recorder.flush()
            self.recorder.finish_meta(status)
            if status != "finished":
                self.recorder.close()
        summary = self.write_summary()
        self.recorder.close()
        figures: list[Path] = []
        if plots if plots is not None else self.config.records.plots:
            from trexsim.records.plots import plot_run

            figures = plot_run(self.out_dir)
        return RunResult(self.out_dir, self.db_path, summary, figures)

    def write_summary(self) -> dict:
        study = self.config.study
        summary = build_summary(
            self.recorder.totals, self.participant_ids,
            {"name": study.name, "seed": study.seed, "settlement": self._settlement_label(),
             "start_datetime": study.start_datetime, "timezone": study.timezone, "days": study.days,
             "episodes": study.episodes, "interval_s": study.interval_s, "participants": len(self.participant_ids),
             "run_id": self.run_id},
            {"max_energy_error_wh": int(self.delivery.max_energy_error_wh),
             "max_money_error_usd": float(self.delivery.max_money_error_usd), "checked_every_round": True},
            {"database": str(self.db_path), "figures": str(self.out_dir / "figures")},
        )
        if len(self.markets) > 1:  # each market's contracts over every episode
            summary["markets"] = {}
            for i, m in enumerate(self.markets):
                wh, contracts, value = self.recorder.totals.by_market.get(i, [0, 0, 0.0])
                summary["markets"][m.id] = {
                    "settlement": m.config.settlement, "parent": m.parent, "members": int(m.member_count),
                    "settled_wh": int(wh), "contracts": int(contracts),
                    "mean_buyer_price": (value / wh * 1000.0) if wh else None}
        net = self.recorder.totals.community_net_wh.get(summary.get("episode", 0))
        if net is not None and len(net[0]):  # the last episode's net-load metrics (records.summary.community_metrics)
            from trexsim.records.summary import community_metrics

            study = self.config.study
            summary["community"] = community_metrics(np.frombuffer(net[0], dtype=np.int64),
                                                     np.frombuffer(net[1], dtype=np.int64), study.start_utc_s,
                                                     study.interval_s, study.timezone)
        if self.powerflow is not None:
            summary["powerflow"] = self.powerflow.summary()
        if self.tc_market is not None:
            summary["tc"] = self.tc_market.summary()
        (self.out_dir / "summary.json").write_bytes(msgspec.json.format(msgspec.json.encode(summary), indent=2))
        return summary


def run_config(config: SimulationConfig, out_dir: str | Path | None = None, **kwargs) -> RunResult:
    return Simulation(config, out_dir).run(**kwargs)
