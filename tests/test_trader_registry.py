"""The trader registry every driver's gate reads (issue 14: no hand-kept list of what a driver runs)."""

import importlib
import typing

from trexsim.agents.base import TRADER_KINDS, trader_kind
from trexsim.config import schema


def test_every_configurable_trader_type_has_a_registered_kind_whose_population_exists():
    trader_models = [m for m in typing.get_args(schema.ParticipantConfig.model_fields["trader"].annotation)
                     if hasattr(m, "model_fields")]
    trader_types = {t for m in trader_models for t in typing.get_args(m.model_fields["type"].annotation)}
    assert trader_types, "no trader types found in the schema"
    for t in trader_types:
        kind = trader_kind(t)
        module, name = kind.population.split(":")
        cls = getattr(importlib.import_module(module), name)
        assert cls.kind == kind.name


def test_the_drivers_gates_follow_the_registry(monkeypatch):
    from dataclasses import replace

    from trexsim import parse_config
    from trexsim.envs._core import compiled_supported

    config = parse_config({
        "study": {"name": "t", "days": 1, "seed": 1},
        "participants": {"a": {"profile": {"type": "flat", "load_w": 500}, "trader": {"type": "external"}},
                         "b": {"profile": {"type": "flat", "generation_w": 900}, "trader": {"type": "fixed_price"}}},
    })
    assert compiled_supported(config) is None
    import trexsim.agents.base as base

    kinds = dict(base.TRADER_KINDS)
    kinds["fixed_price"] = replace(kinds["fixed_price"], compiled_env=False)
    monkeypatch.setattr(base, "_KIND_OF_TYPE", {t: k for k in kinds.values() for t in k.config_types})
    assert compiled_supported(config) == "participant b has a fixed_price trader"
    from trexsim.plugins import trader_origin

    assert {k for k in TRADER_KINDS if trader_origin(k) == "built-in"} == {"grid_only", "fixed_price", "q_learning",
                                                                           "external"}
