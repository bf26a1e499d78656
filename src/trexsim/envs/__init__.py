"""RL environments over the ALEX market (optional extra: ``pip install "trexsim[rl]"``).

``parallel_env(config)`` is a PettingZoo ParallelEnv whose agents are the participants with an
``external`` trader; ``gym_env(config, agent=ID)`` is a single-agent Gymnasium env. Both drive
the ordinary simulation one market round per step. ``config`` is a SimulationConfig, a dict, or a
path to a config file. See docs/envs.md.
"""

from __future__ import annotations

from pathlib import Path

from trexsim.config import load_config, parse_config
from trexsim.config.schema import SimulationConfig

__all__ = ["gym_env", "parallel_env"]


def _config(config) -> SimulationConfig:
    if isinstance(config, SimulationConfig):
        return config
    if isinstance(config, dict):
        return parse_config(config)
    return load_config(Path(config))


def parallel_env(config, out_dir=None):
    """A PettingZoo ParallelEnv (``trexsim_alex_v0``) for the config's external agents."""
    from trexsim.envs.parallel import TrexParallelEnv

    return TrexParallelEnv(_config(config), out_dir)


def gym_env(config, agent: str | None = None, out_dir=None):
    """A Gymnasium env for one external agent (``agent``; optional if there is only one)."""
    from trexsim.envs.gym import TrexGymEnv

    return TrexGymEnv(_config(config), agent, out_dir)


try:  # register with Gymnasium when it is installed: gymnasium.make("trexsim/ALEX-v0", config=..., agent=...)
    import gymnasium

    if "trexsim/ALEX-v0" not in gymnasium.registry:
        gymnasium.register(id="trexsim/ALEX-v0", entry_point="trexsim.envs:gym_env")
except ImportError:  # pragma: no cover - the rl extra is not installed
    pass
