"""Stable-Baselines3 on trexsim's batched env: a ``VecEnv`` over :func:`trexsim.envs.vector_env`.

SB3 trains on a ``VecEnv``; wrapping single envs in its ``DummyVecEnv`` steps them one by one in Python.
:func:`sb3_vec_env` hands SB3 the compiled batch instead: one call a round for every copy.

- ``agent=None``: every (copy, agent) pair is one of SB3's environments (``num_envs = copies x agents``),
  one shared policy for all the community's learners; ``agent=ID``: one environment per copy, that agent
  learning, the other external agents placing nothing.
- SB3's conventions: ``reset()`` returns the observations only (seeds through ``seed()``, else the env
  continues its own seed sequence: :meth:`trexsim.envs.vector.TrexVectorEnv.reset`); ``step_wait`` returns
  ``dones = terminated | truncated``, and at an episode's end every environment's ``infos[i]`` holds
  ``terminal_observation`` (the observation the episode ended with, the returned one being the next
  episode's first) and ``TimeLimit.truncated``. Every other info of the vector env is split per environment.

Needs ``trexsim[rl]`` (stable-baselines3).
"""

from __future__ import annotations

import numpy as np


def sb3_vec_env(config, num_envs: int = 1, agent: str | None = None, backend: str = "auto", reseed: bool = True,
                history: int = 1):
    """``num_envs`` copies of the community as a Stable-Baselines3 ``VecEnv`` (module docstring)."""
    from trexsim.envs import vector_env

    view = vector_env(config, num_envs, backend, reseed, history).as_gymnasium(agent)
    return _vec_env_class()(view)


def _vec_env_class():
    from stable_baselines3.common.vec_env import VecEnv

    class TrexSB3VecEnv(VecEnv):
        """A ``gymnasium.vector.VectorEnv`` view of trexsim's vector env, as SB3's ``VecEnv``."""

        def __init__(self, view):
            self.view = view
            super().__init__(view.num_envs, view.single_observation_space, view.single_action_space)
            self._actions = None

        def reset(self):
            seeds = [s for s in self._seeds if s is not None]
            obs, _ = self.view.reset(seed=seeds[0] if seeds else None)
            self._reset_seeds()
            return obs

        def step_async(self, actions) -> None:
            self._actions = np.asarray(actions)

        def step_wait(self):
            obs, rewards, terms, truncs, infos = self.view.step(self._actions)
            dones = np.logical_or(terms, truncs)
            per_env = [{} for _ in range(self.num_envs)]
            for key, value in infos.items():
                if key.startswith("_") or key in ("final_obs", "final_seeds"):
                    continue
                if isinstance(value, np.ndarray) and value.ndim >= 1 and value.shape[0] == self.num_envs:
                    for i in range(self.num_envs):
                        per_env[i][key] = value[i]
                else:
                    for i in range(self.num_envs):
                        per_env[i][key] = value
            if dones.any():
                final = infos["final_obs"]
                for i in np.flatnonzero(dones):
                    per_env[i]["terminal_observation"] = final[i]
                    per_env[i]["TimeLimit.truncated"] = bool(truncs[i] and not terms[i])
            return obs, rewards.astype(np.float32), dones, per_env

        def close(self) -> None:
            self.view.close()

        def _indices(self, indices):
            if indices is None:
                return range(self.num_envs)
            return [indices] if isinstance(indices, int) else indices

        def get_attr(self, attr_name, indices=None):
            return [getattr(self.view, attr_name) for _ in self._indices(indices)]

        def set_attr(self, attr_name, value, indices=None) -> None:
            setattr(self.view, attr_name, value)

        def env_method(self, method_name, *method_args, indices=None, **method_kwargs):
            method = getattr(self.view, method_name)
            return [method(*method_args, **method_kwargs) for _ in self._indices(indices)]

        def env_is_wrapped(self, wrapper_class, indices=None):
            return [False for _ in self._indices(indices)]

    return TrexSB3VecEnv


__all__ = ["sb3_vec_env"]
