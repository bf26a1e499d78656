"""trexsim: agent-based, model-free simulation of transactive energy systems (T-REX, ALEX)."""

__version__ = "0.2.0"

from trexsim.config import load_config, parse_config  # noqa: E402
from trexsim.errors import ConfigError, ProfileError, TrexsimError  # noqa: E402


def __getattr__(name):  # the simulation imports numba-compiled kernels: load it on first use
    if name in ("Simulation", "RunResult", "run_config"):
        from trexsim import simulation

        return getattr(simulation, name)
    raise AttributeError(name)


__all__ = ["ConfigError", "ProfileError", "RunResult", "Simulation", "TrexsimError", "load_config", "parse_config", "run_config"]
