"""Profile store: load and generation of every participant, in Wh per round, read in chunks.

A :class:`ProfileSource` serves one kind of profile (flat, realistic, file) for a group
of participants. :class:`ProfileSet` stacks the groups into arrays of shape
``(n_rounds, n_participants)`` and hands them out a chunk at a time, so a year of
1,000 households is never held at once.

Sign convention: both load and generation are non-negative energies; the meter's net
energy is ``load - generation`` (positive = import).
"""

from __future__ import annotations

import zlib
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
import pandas as pd

from trexsim.config.schema import FlatProfile, ProfileConfig


@dataclass(frozen=True)
class Clock:
    """Round k covers ``[start_utc_s + k * interval_s, start_utc_s + (k + 1) * interval_s)``."""

    start_utc_s: int
    interval_s: int
    rounds_per_episode: int
    timezone: str

    def round_start_s(self, round_index):
        """Start of round ``round_index`` [s since the Unix epoch, UTC]."""
        return self.start_utc_s + round_index * self.interval_s

    def timestamps_utc(self, start_round: int, n_rounds: int) -> pd.DatetimeIndex:
        """Start of each round as a tz-aware UTC index."""
        starts = self.start_utc_s + (start_round + np.arange(n_rounds, dtype=np.int64)) * self.interval_s
        return pd.DatetimeIndex(pd.to_datetime(starts, unit="s", utc=True))

    def timestamps_local(self, start_round: int, n_rounds: int) -> pd.DatetimeIndex:
        return self.timestamps_utc(start_round, n_rounds).tz_convert(self.timezone)


def participant_seed(seed: int, participant_id: str) -> np.random.SeedSequence:
    """A participant's own seed sequence: depends on the study seed and its id, not its position."""
    return np.random.SeedSequence(entropy=seed, spawn_key=(zlib.crc32(participant_id.encode("utf-8")),))


class ProfileSource(ABC):
    """Load and generation of a group of participants sharing one kind of profile."""

    def __init__(self, participant_ids: list[str], specs: list[ProfileConfig], clock: Clock, seed: int):
        self.participant_ids = list(participant_ids)
        self.specs = list(specs)
        self.clock = clock
        self.seed = seed

    @abstractmethod
    def energy_wh(self, start_round: int, n_rounds: int) -> tuple[np.ndarray, np.ndarray]:
        """``(load_wh, generation_wh)``: float64 arrays ``(n_rounds, n_members)``, >= 0, already scaled."""

    def check_coverage(self, n_rounds: int) -> None:
        """Raise (a :class:`~trexsim.errors.ConfigError` naming the member and the time) if rounds
        0..n_rounds-1 cannot all be served; a generated profile covers any span."""

    def whole_wh(self, start_round: int, n_rounds: int) -> tuple[np.ndarray, np.ndarray]:
        """``(load_wh, generation_wh)`` in whole Wh: int64 ``(n_rounds, n_members)``.

        Here each round rounded on its own (half to even); a source whose energy comes in
        coarser intervals than rounds (imported files) overrides this to round its running
        sum instead, so that no energy is lost or made up.
        """
        load, gen = self.energy_wh(start_round, n_rounds)
        return np.rint(load).astype(np.int64), np.rint(gen).astype(np.int64)


class FlatProfiles(ProfileSource):
    """Constant power: ``energy_wh = power_w * interval_s / 3600`` every round."""

    def energy_wh(self, start_round: int, n_rounds: int) -> tuple[np.ndarray, np.ndarray]:
        hours = self.clock.interval_s / 3600.0
        load = np.array([s.load_w * s.load_scale * hours for s in self.specs])
        gen = np.array([s.generation_w * s.generation_scale * hours for s in self.specs])
        return np.broadcast_to(load, (n_rounds, load.size)).copy(), np.broadcast_to(gen, (n_rounds, gen.size)).copy()


def _source_class(kind: str) -> type[ProfileSource]:
    if kind == "flat":
        return FlatProfiles
    if kind == "realistic":
        from trexsim.data.realistic import RealisticProfiles

        return RealisticProfiles
    if kind == "file":
        from trexsim.data.importer import FileProfiles

        return FileProfiles
    raise ValueError(f"unknown profile type {kind!r}")


class ProfileSet:
    """All participants' profiles, served in chunks of whole rounds as integer Wh.

    Energies are whole watt-hours, since meters and orders count integer Wh (ALEX rule 7),
    from each source's :meth:`ProfileSource.whole_wh`: imported files round their running
    sum (each data interval's energy kept to the Wh), the built-in profiles each round
    (half to even).
    """

    def __init__(self, participant_ids: list[str], specs: list[ProfileConfig], clock: Clock, seed: int, chunk_rounds: int = 1440,
                 devices: list[list] | None = None):
        """``devices[i]``: participant i's device configs (``ParticipantConfig.devices``), whose energy is
        added to its load (what they draw) and generation (what they supply): see :mod:`trexsim.devices`."""
        self.participant_ids = list(participant_ids)
        self.devices = None
        if devices is not None and any(devices):
            from trexsim.devices import DeviceSet

            self.devices = DeviceSet(self.participant_ids, devices, clock, seed)
        self.clock = clock
        self.seed = int(seed)
        self.chunk_rounds = max(1, int(chunk_rounds))
        groups: dict[str, list[int]] = {}
        for i, spec in enumerate(specs):
            groups.setdefault(spec.type, []).append(i)
        self._groups: list[tuple[np.ndarray, ProfileSource]] = []
        for kind, idx in groups.items():
            cls = _source_class(kind)
            source = cls([participant_ids[i] for i in idx], [specs[i] for i in idx], clock, seed)
            self._groups.append((np.asarray(idx, dtype=np.int64), source))
        self._chunks: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    @property
    def n_participants(self) -> int:
        return len(self.participant_ids)

    def check_coverage(self, n_rounds: int) -> None:
        """Before a run starts: every source can serve its ``n_rounds`` rounds (a profile file that
        ends early is an error now, not after part of the run has been recorded)."""
        for _, source in self._groups:
            source.check_coverage(n_rounds)

    def energy_wh(self, start_round: int, n_rounds: int, responsive: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Integer Wh ``(load, generation)`` of shape ``(n_rounds, n_participants)``.

        ``responsive`` False leaves out the price-responsive devices' members (the TC households add their
        answer to the schedule instead: ``trexsim.devices.DeviceSet.respond_wh``); True counts them as scheduled."""
        n = self.n_participants
        if len(self._groups) == 1:  # one source for everyone, in order: no scatter needed
            load, gen = self._groups[0][1].whole_wh(start_round, n_rounds)
        else:
            load = np.zeros((n_rounds, n), dtype=np.int64)
            gen = np.zeros((n_rounds, n), dtype=np.int64)
            for idx, source in self._groups:
                load[:, idx], gen[:, idx] = source.whole_wh(start_round, n_rounds)
        if self.devices is not None:
            draw, supply = self.devices.energy_wh(start_round, n_rounds, responsive)
            load, gen = load + draw, gen + supply  # (new arrays: a source may keep what it returned)
        return load, gen

    @classmethod
    def of_participants(cls, participant_ids: list[str], specs: list, clock: Clock, seed: int,
                        chunk_rounds: int = 1440) -> "ProfileSet":
        """The profiles of participants (``ParticipantConfig``), devices included."""
        return cls(participant_ids, [s.profile for s in specs], clock, seed, chunk_rounds,
                   devices=[s.devices for s in specs])

    def round_wh(self, round_index: int) -> tuple[np.ndarray, np.ndarray]:
        """One round's ``(load_wh, generation_wh)`` rows, read through a cache of aligned chunks.

        Two chunks are kept, so reading round k and its delivery round k + close_steps
        across a chunk boundary does not reload either.
        """
        number, k = divmod(round_index, self.chunk_rounds)
        chunk = self._chunks.get(number)
        if chunk is None:
            start = number * self.chunk_rounds
            n_rounds = min(self.chunk_rounds, max(1, self.clock.rounds_per_episode - start))
            chunk = self.energy_wh(start, n_rounds)
            for old in [c for c in self._chunks if c < number - 1 or c > number + 1]:
                del self._chunks[old]
            if len(self._chunks) >= 2:
                del self._chunks[min(self._chunks)]
            self._chunks[number] = chunk
        return chunk[0][k], chunk[1][k]


__all__ = ["Clock", "FlatProfile", "FlatProfiles", "ProfileSet", "ProfileSource", "participant_seed"]
