"""Module processes of a networked run: ``trexsim node participants ...``.

The coordinating process (``trexsim run CONFIG --fabric URL --participant-processes K``) runs the
controller, grid, market and recorder; each node process holds a contiguous group of the
households and serves the bus until the simulation ends.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from trexsim.config import load_config
from trexsim.data.profiles import Clock, ProfileSet
from trexsim.modules.participants import Participants
from trexsim.seeding import participants_rng


def participant_group(n_participants: int, group: int, groups: int) -> np.ndarray:
    """Roster indices of group ``group`` of ``groups`` (contiguous blocks, as even as possible)."""
    return np.array_split(np.arange(n_participants, dtype=np.int64), groups)[group]


def serve_participants(config_path: str | Path, fabric, group: int, groups: int) -> None:
    """Hold one group of the config's households on ``fabric`` until the simulation ends."""
    config = load_config(config_path)
    study = config.study
    members = config.expanded_participants()
    index = participant_group(len(members), group, groups)
    ids = [members[i][0] for i in index]
    specs = [members[i][1] for i in index]
    clock = Clock(study.start_utc_s, study.interval_s, study.rounds_per_episode, study.timezone)
    profiles = ProfileSet(ids, [s.profile for s in specs], clock, study.seed, chunk_rounds=min(1440, study.rounds_per_episode))
    Participants(fabric, ids, specs, profiles, study.interval_s, study.rounds_per_episode, config.market.close_steps,
                 participants_rng(study.seed), roster_index=index, roster_size=len(members))
    fabric.serve(f"participants {group + 1}/{groups}")


def spawn_participant_nodes(config_path: str | Path, url: str, namespace: str, groups: int) -> list[subprocess.Popen]:
    """Start ``groups`` participant processes of this config on the broker at ``url``."""
    return [subprocess.Popen([sys.executable, "-m", "trexsim", "node", "participants", str(config_path), "--fabric", url,
                              "--namespace", namespace, "--group", str(g), "--groups", str(groups)])
            for g in range(groups)]
