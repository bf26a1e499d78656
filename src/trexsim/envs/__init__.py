"""RL environments over the ALEX market (optional extra: ``pip install "trexsim[rl]"``).

``parallel_env(config)`` is a PettingZoo ParallelEnv whose agents are the participants with an
``external`` trader; ``gym_env(config, agent=ID)`` is a single-agent Gymnasium env;
``vector_env(config, num_envs=N)`` steps N independent copies of the community as one batch of
arrays. Each step is one market round, run by the engine's compiled kernels (``backend="compiled"``)
or by the ordinary simulation (``backend="simulation"``); ``"auto"`` picks the compiled one when the
config allows. ``config`` is a SimulationConfig, a dict, or a path to a config file. Every env takes
``history=k`` (default 1): each observation is then the agent's last ``k`` observations stacked,
oldest first, zeros before the episode's first. See docs/envs.md.
"""

from __future__ import annotations

from pathlib import Path

from trexsim.config import load_config, parse_config
from trexsim.config.schema import SimulationConfig

__all__ = ["gym_env", "gym_vector_env", "parallel_env", "vector_env"]


def _config(config) -> SimulationConfig:
    if isinstance(config, SimulationConfig):
        return config
    if isinstance(config, dict):
        return parse_config(config)
    return load_config(Path(config))


def parallel_env(config, out_dir=None, backend: str = "auto", history: int = 1):
    """A PettingZoo ParallelEnv (``trexsim_alex_v0``) for the config's external agents.

    ``out_dir``: keep the run database there (uses the simulation backend). ``history``: stack
    each agent's last ``history`` observations (oldest first, zero-padded at the episode start).
    """
    from trexsim.envs.parallel import TrexParallelEnv

    return TrexParallelEnv(_config(config), out_dir, backend, history)


def gym_env(config, agent: str | None = None, out_dir=None, backend: str = "auto", history: int = 1):
    """A Gymnasium env for one external agent (``agent``; optional if there is only one)."""
    from trexsim.envs.gym import TrexGymEnv

    return TrexGymEnv(_config(config), agent, out_dir, backend, history)


def vector_env(config, num_envs: int = 8, backend: str = "auto", reseed: bool = True, history: int = 1):
    """``num_envs`` copies of the community stepped as one batch (:class:`~trexsim.envs.vector.TrexVectorEnv`).

    Copy ``i`` uses seed ``s + i`` (``s``: ``reset(seed=...)`` or the config's seed); actions
    ``(num_envs, n_agents, 5)``; observations ``(num_envs, n_agents, 13 * history)``; same-step
    auto-reset (the history restarts with each episode).
    ``.as_gymnasium(agent=None)`` gives a ``gymnasium.vector.VectorEnv`` view for one learner.
    """
    from trexsim.envs.vector import TrexVectorEnv

    return TrexVectorEnv(_config(config), num_envs, backend, reseed, history)


def gym_vector_env(config, num_envs: int = 1, agent: str | None = None, backend: str = "auto", reseed: bool = True,
                   history: int = 1, autoreset_mode: str = "next_step"):
    """``num_envs`` copies for one learner ``agent`` (optional if there is only one) as a
    ``gymnasium.vector.VectorEnv``; what ``gymnasium.make_vec`` builds. Auto-reset ``next_step`` by default
    (Gymnasium's, which its vector wrappers need), or ``same_step``."""
    vec = vector_env(config, num_envs, backend, reseed, history)
    if agent is None:
        if len(vec.agents) != 1:
            raise ValueError(f"several external agents {vec.agents}: name the learner with agent=")
        agent = vec.agents[0]
    return vec.as_gymnasium(agent, autoreset_mode)


try:  # register with Gymnasium when it is installed: gymnasium.make("trexsim/ALEX-v0", config=..., agent=...),
    # gymnasium.make_vec("trexsim/ALEX-v0", num_envs=N, config=..., agent=...)
    import gymnasium

    if "trexsim/ALEX-v0" not in gymnasium.registry:
        gymnasium.register(id="trexsim/ALEX-v0", entry_point="trexsim.envs:gym_env",
                           vector_entry_point="trexsim.envs:gym_vector_env")
except ImportError:  # pragma: no cover - the rl extra is not installed
    pass
