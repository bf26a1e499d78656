"""Simulation configs: schema, loading with key-path errors, examples."""

from trexsim.config.loader import load_config, parse_config, validate_config_file
from trexsim.config.schema import SimulationConfig

__all__ = ["SimulationConfig", "load_config", "parse_config", "validate_config_file"]
