"""Which circuit load(s) each participant of a run drives.

A mapping file is a JSON object (``//`` comments allowed): participant id -> load name, or a list of
load names that share the participant's power equally (a house modelled as three single-phase loads)::

    {
      "H1": "house_a",
      "H2": ["h2_phase_a", "h2_phase_b"]
    }

Load names are matched case-insensitively (OpenDSS lower-cases them); a ``Load.`` prefix is allowed.
Every participant of the run needs at least one load and every named load must exist. Several
participants may name the same load (a circuit's spot load standing for several households, as published
test feeders have): the load then carries the sum of their powers. One participant may not name a load
twice. Loads that no participant names stay as the circuit defines them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from trexsim.powerflow.errors import PowerflowError

SHOW = 10  # names listed in an error message before '...'


def _listing(names: Sequence[str]) -> str:
    names = list(names)
    head = ", ".join(names[:SHOW])
    return head + (f", ... ({len(names)} in all)" if len(names) > SHOW else "")


@dataclass(frozen=True)
class LoadMapping:
    """The resolved mapping: the bound loads (each once) and every (participant, load) pair with its share."""

    load_names: list[str]             # the bound loads, each once
    participant_of_load: np.ndarray   # per (participant, load) pair: index into the run's participants
    share: np.ndarray                 # per pair: the fraction of the participant's power on that load
    table: dict[str, list[str]]       # participant id -> load names (as written to mapping.json)
    load_of_pair: np.ndarray | None = None   # per pair: index into load_names (None: pair j is load j)

    def expand(self, per_participant: np.ndarray) -> np.ndarray:
        """(rounds, participants) -> (rounds, bound loads): each load the sum of its participants' shares."""
        pairs = per_participant[..., self.participant_of_load] * self.share
        if self.load_of_pair is None:
            return pairs
        out = np.zeros(pairs.shape[:-1] + (len(self.load_names),))
        np.add.at(out, (..., self.load_of_pair), pairs)
        return out


def read_mapping(mapping: str | Path | Mapping[str, Any]) -> tuple[dict[str, list[str]], str]:
    """The mapping as participant id -> [load names], and a name for messages."""
    if isinstance(mapping, Mapping):
        data, source = dict(mapping), "mapping"
    else:
        path = Path(mapping)
        source = str(path)
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise PowerflowError(f"{path}: no such mapping file") from None
        try:
            import pyjson5

            data = pyjson5.loads(text)
        except Exception as exc:  # pyjson5's decoder errors
            raise PowerflowError(f"{path}: not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise PowerflowError(f"{path}: a mapping is a JSON object of participant id -> load name(s)")
    table: dict[str, list[str]] = {}
    for pid, loads in data.items():
        names = [loads] if isinstance(loads, str) else loads
        if not isinstance(names, list) or not names or not all(isinstance(n, str) and n.strip() for n in names):
            raise PowerflowError(f"{source}: {pid}: must be a load name or a non-empty list of load names, "
                                 f"got {loads!r}")
        table[str(pid)] = [n.strip() for n in names]
    return table, source


def _normal(name: str) -> str:
    name = name.strip().lower()
    return name[5:] if name.startswith("load.") else name


def resolve_mapping(table: Mapping[str, list[str]], participant_ids: Sequence[str], circuit_loads: Sequence[str],
                    source: str = "mapping", circuit: str = "the circuit") -> LoadMapping:
    """Check ``table`` against the run's participants and the circuit's loads; every problem is listed."""
    problems = []
    known = set(participant_ids)
    unknown_participants = [p for p in table if p not in known]
    if unknown_participants:
        problems.append(f"participants not in the run: {_listing(unknown_participants)} "
                        f"(the run has {_listing(participant_ids)})")
    missing = [p for p in participant_ids if p not in table]
    if missing:
        problems.append(f"participants without a load: {_listing(missing)}")
    loads = {_normal(n) for n in circuit_loads}
    unknown_loads = [f"{n!r} (for {p})" for p, names in table.items() for n in names if _normal(n) not in loads]
    if unknown_loads:
        problems.append(f"loads not in {circuit}: {_listing(unknown_loads)}; its loads are "
                        f"{_listing(sorted(loads))}")
    for p, names in table.items():
        normal = [_normal(n) for n in names]
        for n in dict.fromkeys(n for n in normal if normal.count(n) > 1):
            problems.append(f"{p}: load {n!r} is named twice")
    if problems:
        raise PowerflowError(f"{source}: " + "; ".join(dict.fromkeys(problems)))
    index = {p: i for i, p in enumerate(participant_ids)}
    load_index: dict[str, int] = {}
    load_of_pair, owner_idx, share = [], [], []
    for p in participant_ids:
        names = table[p]
        for n in names:
            load_of_pair.append(load_index.setdefault(_normal(n), len(load_index)))
            owner_idx.append(index[p])
            share.append(1.0 / len(names))
    shared = len(load_index) < len(load_of_pair)   # some load carries several participants
    return LoadMapping(load_names=list(load_index), participant_of_load=np.array(owner_idx, dtype=np.int64),
                       share=np.array(share), table={p: [_normal(n) for n in table[p]] for p in participant_ids},
                       load_of_pair=np.array(load_of_pair, dtype=np.int64) if shared else None)


def default_mapping(participant_ids: Sequence[str], circuit_loads: Sequence[str], circuit: str) -> dict[str, list[str]]:
    """With no mapping file: participants drive loads of the same name, if every one has one."""
    loads = {_normal(n) for n in circuit_loads}
    missing = [p for p in participant_ids if _normal(p) not in loads]
    if missing:
        raise PowerflowError(
            f"{circuit}: give a mapping file (JSON: participant id -> load name): no load in the circuit is named "
            f"after participant(s) {_listing(missing)}; its loads are {_listing(sorted(loads))}")
    return {p: [_normal(p)] for p in participant_ids}
