"""Module processes of a networked run: ``trexsim node participants|participant|market|controller``.

``trexsim run CONFIG --fabric URL --participant-processes K`` runs the controller, grid, market and
recorder in one process (the coordinator) and starts K ``trexsim node participants`` processes, each
holding a contiguous group of the households. For a simulation across hosts, start the modules by
hand: ``node market`` (market, grid, recorder: writes the run's database), ``node participants`` /
``node participant`` anywhere, and ``node controller`` once they are up (docs/fabric.md).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from trexsim.config import load_config
from trexsim.config.schema import TCConfig
from trexsim.data.profiles import Clock, ProfileSet
from trexsim.errors import TrexsimError
from trexsim.fabric import topics
from trexsim.fabric.messages import MeterReadings
from trexsim.fabric.mqtt import participant_group  # noqa: F401 - part of this module's interface
from trexsim.seeding import participants_rng

PASSWORD_ENV = "TREXSIM_FABRIC_PASSWORD"


def fabric_options(config, fabric_url: str, *, role: str, account: str | None = None, namespace: str | None = None,
                   credentials: str | Path | None = None, password: str | None = None, **extra) -> dict:
    """Keyword arguments for :func:`trexsim.fabric.open_fabric`: namespace and credentials resolved.

    The password comes from ``password``, else the credentials file (``trexsim broker``), else
    ``$TREXSIM_FABRIC_PASSWORD``, else the URL (``mqtt://user:pass@host``); none means anonymous.
    """
    from trexsim.fabric.broker import account_password, default_namespace, load_credentials

    account = account or role
    ns = namespace
    ids = [pid for pid, _ in config.expanded_participants()]
    if role == "controller":  # which accounts may hold households (roles come from accounts, docs/fabric.md)
        extra.setdefault("participant_ids", ids)
    if credentials is not None:
        creds = load_credentials(credentials)
        ns = ns or creds.get("namespace")
        if password is None:
            password = account_password(creds, account, str(credentials))
        if role in ("market", "controller") and "accounts" not in extra:
            # who holds households: the participant accounts the operator made (trexsim broker writes one layout's)
            extra["accounts"] = [a for a in creds["accounts"] if a not in topics.MODULE_ACCOUNTS and a != "observer"]
    if password is None:
        password = os.environ.get(PASSWORD_ENV)
    options = {"namespace": ns or default_namespace(config.study.name), "role": role, "account": account, **extra}
    if password is not None:
        options["username"] = account
        options["password"] = password
    return options


def hold_participants(config, fabric, index: np.ndarray):
    """Participant module of the config's households at roster positions ``index``, on ``fabric``."""
    from trexsim.modules.participants import Participants

    study = config.study
    members = config.expanded_participants()
    ids = [members[i][0] for i in index]
    specs = [members[i][1] for i in index]
    clock = Clock(study.start_utc_s, study.interval_s, study.rounds_per_episode, study.timezone)
    profiles = ProfileSet.of_participants(ids, specs, clock, study.seed, chunk_rounds=min(1440, study.rounds_per_episode))
    # build the first chunk of profiles now, before joining: otherwise every process does it inside round 0
    # and the whole run waits for the slowest (seconds each, with many processes on few cores)
    profiles.round_wh(0)
    from trexsim.simulation import home_market_ids

    homes = home_market_ids(config)
    return Participants(fabric, ids, specs, profiles, study.interval_s, study.rounds_per_episode, config.market.close_steps,
                        participants_rng(study.seed), roster_index=np.asarray(index, dtype=np.int64), roster_size=len(members),
                        tc=(config.tc or TCConfig()) if config.market.type == "tc" else None,
                        home_market=None if homes is None else [homes[i] for i in index])


def participants_account(config, group: int, groups: int) -> tuple[str, np.ndarray]:
    """(account, roster indices) of group ``group`` of ``groups``: a household's own id when a group is one household."""
    ids = [pid for pid, _ in config.expanded_participants()]
    if not 0 <= group < groups:
        raise TrexsimError(f"--group {group} must be in 0 .. {groups - 1}")
    index = participant_group(len(ids), group, groups)
    if index.size == 1:
        return ids[int(index[0])], index
    if index.size == 0:
        raise TrexsimError(f"group {group} of {groups} holds no household ({len(ids)} in the config)")
    return topics.group_account(group, groups), index


def layout_accounts(config, groups: int) -> list[str]:
    """The participant accounts of households split into ``groups`` processes (0: none outside the coordinator)."""
    return [participants_account(config, g, groups)[0] for g in range(groups)]


# a household's stated ceiling: no meter reading may say it drew or produced more than 1 MW over a round (times
# its profile's load_scale / generation_scale when above 1; a flat profile's or a PV array's own power if higher)
METER_CEILING_W = 1_000_000.0


def meter_limits(config) -> dict[str, np.ndarray]:
    """Per household (roster order), the largest value each field of a meter reading may have in one round [Wh]:
    load and generation up to the stated ceiling (:data:`METER_CEILING_W`), battery charge and discharge up to its
    configured power over the round (none without a battery), its stored energy up to its capacity."""
    hours = config.study.interval_s / 3600.0
    members = config.expanded_participants()
    n = len(members)
    limits = {f: np.zeros(n) for f in ("load_wh", "generation_wh", "battery_charge_wh", "battery_discharge_wh",
                                       "battery_stored_wh", "grid_only_net_wh")}
    for i, (_, spec) in enumerate(members):
        p = spec.profile
        load_w = METER_CEILING_W * max(1.0, p.load_scale)
        gen_w = METER_CEILING_W * max(1.0, p.generation_scale)
        if p.type == "flat":
            load_w = max(load_w, 2.0 * p.load_w * p.load_scale)
            gen_w = max(gen_w, 2.0 * p.generation_w * p.generation_scale)
        elif p.type == "realistic":
            gen_w = max(gen_w, 2000.0 * p.pv_capacity_kw * p.generation_scale)
        for device in spec.devices:  # what a device draws or supplies at most comes on top of the profile's
            from trexsim.devices import device_class

            draw_w, supply_w = device_class(device.type).max_power_w(device)
            load_w += draw_w
            gen_w += supply_w
        limits["load_wh"][i] = np.ceil(load_w * hours)
        limits["generation_wh"][i] = np.ceil(gen_w * hours)
        if spec.storage is not None:
            limits["battery_charge_wh"][i] = np.ceil(spec.storage.charge_power_w * hours) + 1
            limits["battery_discharge_wh"][i] = np.ceil(spec.storage.discharge_power_w * hours) + 1
            limits["battery_stored_wh"][i] = spec.storage.capacity_wh * (1 + 1e-9) + 1e-6
    limits["grid_only_net_wh"] = (limits["load_wh"] + limits["generation_wh"] + limits["battery_charge_wh"]
                                  + limits["battery_discharge_wh"])
    return limits


def configure_market_fabric(fabric, config) -> None:
    """Where the market runs: settle absent households from their profiles, bound meter readings by their limits."""
    fabric.meter_fallback = profile_meter_fallback(config)
    if getattr(fabric, "_gate", None) is not None:
        fabric._gate.limits = meter_limits(config)
        if config.market.type == "tc":  # a TC double auction's bids are energies over one price interval
            from trexsim.config.schema import TCConfig

            interval_s = (config.tc or TCConfig()).price_interval_s
            fabric._gate.plan_rounds = max(1, interval_s // config.study.interval_s)


def participant_account(config, participant_id: str) -> tuple[str, np.ndarray]:
    ids = [pid for pid, _ in config.expanded_participants()]
    if participant_id not in ids:
        raise TrexsimError(f"no participant {participant_id!r} in the config (ids: {', '.join(ids[:10])}"
                           f"{' ...' if len(ids) > 10 else ''})")
    return participant_id, np.array([ids.index(participant_id)], dtype=np.int64)


def serve_participants(config_path: str | Path, fabric, group: int, groups: int) -> None:
    """Hold one group of the config's households on ``fabric`` until the simulation ends."""
    config = load_config(config_path)
    _, index = participants_account(config, group, groups)
    hold_participants(config, fabric, index)
    fabric.serve("participants")


def profile_meter_fallback(config):
    """For the market's process: meter readings of absent households from their profiles, battery idle."""
    study = config.study
    members = config.expanded_participants()
    clock = Clock(study.start_utc_s, study.interval_s, study.rounds_per_episode, study.timezone)
    cache: dict[tuple, ProfileSet] = {}

    def fallback(episode: int, round_index: int, missing: np.ndarray) -> MeterReadings:
        key = tuple(missing.tolist())
        profiles = cache.get(key)
        if profiles is None:
            if len(cache) > 8:
                cache.clear()
            profiles = cache[key] = ProfileSet.of_participants([members[i][0] for i in missing], [members[i][1] for i in missing],
                                                               clock, study.seed, chunk_rounds=min(1440, study.rounds_per_episode))
        load, gen = profiles.round_wh(round_index)
        zero = np.zeros(missing.size, dtype=np.int64)
        return MeterReadings(episode, round_index, missing.astype(np.int64), load, gen, zero, zero,
                             np.zeros(missing.size), load - gen)

    return fallback


def record_fabric_events(db_path: str | Path, events: list[dict]) -> None:
    """Write the barrier's events (late, left, joined, rejoined) to the run database's ``fabric_events`` table."""
    import duckdb

    con = duckdb.connect(str(db_path))
    try:
        con.execute("CREATE TABLE IF NOT EXISTS fabric_events (episode INTEGER, round INTEGER, event VARCHAR, "
                    "account VARCHAR, sender VARCHAR)")
        if events:
            con.executemany("INSERT INTO fabric_events VALUES (?, ?, ?, ?, ?)",
                            [(e["episode"], e["round"], e["event"], e["account"], e["sender"]) for e in events])
    finally:
        con.close()


# a networked run whose households were settled from their profiles (no valid meter reading: a process late,
# lost or paused) in more than this share of its household-rounds is degraded: exit status 3, summary.json's
# fabric.degraded, runs.status 'degraded', and a warning on the console
DEGRADED_SHARE = 0.01
DEGRADED_EXIT_STATUS = 3


def fabric_report(fabric, participant_ids: list[str], max_share: float = DEGRADED_SHARE) -> dict:
    """summary.json's ``fabric`` section: how much of the run was settled from profiles, the barrier's events."""
    from collections import Counter

    gate = getattr(fabric, "_gate", None)
    events = Counter(e["event"] for e in getattr(fabric, "events", []))
    report = {"events": dict(sorted(events.items())), "refused_messages": int(getattr(fabric, "rejected", 0))}
    if gate is None:
        return report
    fallback = gate.fallback_rounds
    total = int(gate.rounds) * int(gate.n)
    share = float(fallback.sum()) / total if total else 0.0
    worst = np.argsort(-fallback, kind="stable")[:10]
    degraded = share > max_share
    report.update({
        "degraded": bool(degraded),
        "status": "degraded" if degraded else "finished",
        "fallback_share": round(share, 6),
        "max_fallback_share": max_share,
        "fallback_household_rounds": int(fallback.sum()),
        "household_rounds": total,
        "most_settled_from_profiles": {participant_ids[i]: int(fallback[i]) for i in worst if fallback[i] > 0},
    })
    return report


def finish_networked_run(out_dir: str | Path, db_path: str | Path, summary: dict, fabric, participant_ids: list[str]) -> dict:
    """After a networked run: the barrier's events into ``fabric_events``, the ``fabric`` section into summary.json
    (and ``summary``), the runs table's status 'degraded' if so. Returns the section."""
    import duckdb
    import msgspec

    report = fabric_report(fabric, participant_ids)
    record_fabric_events(db_path, getattr(fabric, "events", []))
    summary["fabric"] = report
    (Path(out_dir) / "summary.json").write_bytes(msgspec.json.format(msgspec.json.encode(summary), indent=2))
    if report.get("degraded"):
        con = duckdb.connect(str(db_path))
        try:
            con.execute("UPDATE runs SET status = 'degraded'")
        finally:
            con.close()
    return report


def degraded_warning(report: dict) -> str | None:
    """The console's line for a degraded run (None if it is not)."""
    if not report.get("degraded"):
        return None
    worst = ", ".join(f"{pid} {k}" for pid, k in list(report["most_settled_from_profiles"].items())[:5])
    return (f"DEGRADED RUN: {report['fallback_share']:.1%} of household-rounds ({report['fallback_household_rounds']:,} of "
            f"{report['household_rounds']:,}) were settled from profiles, not meters (limit {report['max_fallback_share']:.0%}); "
            f"most: {worst}; fabric events {report['events']}. Its bills are not what the households did.")


def serve_market(config, fabric, out_dir: str | Path | None = None):
    """Market, grid and recorder in this process until the simulation ends; writes the run's results."""
    from trexsim.simulation import Simulation

    sim = Simulation(config, out_dir, fabric=fabric, local_participants=False)
    configure_market_fabric(fabric, config)
    status = "failed"
    try:
        fabric.serve("market")
        status = "finished"
    finally:
        sim.recorder.flush()
        sim.recorder.finish_meta(status)
        if status != "finished":
            sim.recorder.close()
            record_fabric_events(sim.db_path, getattr(fabric, "events", []))  # a failed run keeps its fabric events
    summary = sim.write_summary()
    sim.recorder.close()
    finish_networked_run(sim.out_dir, sim.db_path, summary, fabric, sim.participant_ids)
    return sim.out_dir, summary


def run_controller(config, fabric, expect: int, wait_s: float = 120.0) -> None:
    """Drive the rounds once ``expect`` module processes (the market and the participants) have joined."""
    from trexsim.modules.controller import Controller

    study = config.study
    ids = [pid for pid, _ in config.expanded_participants()]
    fabric.wait_for_hellos(expect, timeout_s=wait_s)
    if not any(h.role == "market" for h in fabric.hellos):
        raise TrexsimError("no market joined: start `trexsim node market` before the controller")
    Controller(fabric, ids, study.start_utc_s, study.interval_s, study.rounds_per_episode, study.episodes,
               config.market.close_steps).run()


def spawn_participant_nodes(config_path: str | Path, url: str, namespace: str, groups: int,
                            credentials: str | Path | None = None, timeout_s: float | None = None) -> list[subprocess.Popen]:
    """Start ``groups`` participant processes of this config on the broker at ``url``."""
    extra = ["--credentials", str(credentials)] if credentials is not None else []
    if timeout_s is not None:
        extra += ["--timeout", str(timeout_s)]
    return [subprocess.Popen([sys.executable, "-m", "trexsim", "node", "participants", str(config_path), "--fabric", url,
                              "--namespace", namespace, "--group", str(g), "--groups", str(groups), *extra])
            for g in range(groups)]
