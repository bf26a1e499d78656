"""The simulation controller: owns the clock, episodes and rounds."""

from __future__ import annotations

from typing import Callable

from trexsim.fabric import topics
from trexsim.fabric.messages import EpisodeEnd, EpisodeStart, Roster, RoundEnd, RoundStart, SimulationEnd


class Controller:
    """Drives episodes of ``rounds`` rounds of ``interval_s`` seconds from ``start_utc_s``.

    Round k of an episode covers ``[start + k*interval, start + (k+1)*interval)``; in it,
    participants place orders for delivery in round ``k + close_steps``.
    """

    def __init__(self, fabric, participant_ids: list[str], start_utc_s: int, interval_s: int, rounds: int, episodes: int, close_steps: int):
        self.fabric = fabric
        self.participant_ids = list(participant_ids)
        self.start_utc_s = int(start_utc_s)
        self.interval_s = int(interval_s)
        self.rounds = int(rounds)
        self.episodes = int(episodes)
        self.close_steps = int(close_steps)
        self.episode = -1
        self.round = -1

    def _send(self, topic: str, message) -> None:
        # every module finishes with a message (and everything it caused) before the next one
        self.fabric.publish(topic, message)
        self.fabric.settle()

    def announce(self) -> None:
        self._send(topics.ROSTER, Roster(self.participant_ids))

    def start_episode(self, episode: int) -> None:
        self.episode = episode
        self.round = 0
        self._send(topics.EPISODE_START, EpisodeStart(episode, self.start_utc_s, self.rounds, self.interval_s))

    def step(self) -> bool:
        """Run one round; False once the episode has no rounds left."""
        k = self.round
        if k >= self.rounds:
            return False
        send = self._send
        send(topics.ROUND_START, RoundStart(self.episode, k, self.start_utc_s + k * self.interval_s, self.interval_s, k + self.close_steps))
        send(topics.ROUND_END, RoundEnd(self.episode, k))
        self.round = k + 1
        return True

    def end_episode(self) -> None:
        self._send(topics.EPISODE_END, EpisodeEnd(self.episode))

    def run(self, on_round: Callable[[int, int], None] | None = None) -> None:
        """Every episode, every round, then SimulationEnd. If the run fails, a networked fabric tells the module
        processes (``abort``), so that none waits out its timeout."""
        try:
            self.announce()
            for episode in range(self.episodes):
                self.start_episode(episode)
                while self.step():
                    if on_round is not None:
                        on_round(episode, self.round)
                self.end_episode()
            self._send(topics.SIMULATION_END, SimulationEnd(self.episodes))
        except BaseException as exc:
            abort = getattr(self.fabric, "abort", None)
            if abort is not None:
                abort(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
            raise
