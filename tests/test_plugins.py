"""Mechanism plug-ins through entry points: loaded before the registry answers, and a broken one is an
error naming its entry point and package, never a silent skip.

The plug-ins here are real installed distributions: a ``*.dist-info`` folder (METADATA and
entry_points.txt) and their modules in a temporary folder on the path, found by importlib.metadata
as pip's installs are.
"""

import json
import os
import subprocess
import sys
import textwrap
from importlib import metadata

import pytest

from trexsim.engine import get_mechanism, registered_mechanisms
from trexsim.engine.mechanisms import PairwiseMechanism, register_mechanism
from trexsim.plugins import MECHANISMS_GROUP, PluginError, load_mechanism_entry_point, mechanism_origin


def install(root, dist, entry_points, modules=None, version="0.1"):
    """Write a distribution ``dist`` with ``entry_points`` ({name: value}) and ``modules`` ({file: source})."""
    info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    lines = [f"[{MECHANISMS_GROUP}]"] + [f"{k} = {v}" for k, v in entry_points.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    for name, source in (modules or {}).items():
        (root / name).write_text(textwrap.dedent(source))
    return [ep for d in metadata.distributions(path=[str(root)]) for ep in d.entry_points if ep.group == MECHANISMS_GROUP]


def test_built_ins_say_where_they_come_from():
    assert {"average_price", "exact_match", "exact_price"} <= set(registered_mechanisms())
    assert mechanism_origin("average_price") == "built-in"


def test_a_plugin_that_cannot_be_imported_names_its_entry_point_and_package(tmp_path):
    (ep,) = install(tmp_path, "broken-plugin", {"broken": "no_such_module_xyz:Thing"})
    with pytest.raises(PluginError) as err:
        load_mechanism_entry_point(ep)
    assert str(err.value) == ("entry point 'broken = no_such_module_xyz:Thing' (group trexsim.mechanisms) of package "
                              "broken-plugin 0.1 could not be loaded: ModuleNotFoundError: No module named "
                              "'no_such_module_xyz'")
    assert isinstance(err.value.__cause__, ModuleNotFoundError)


def test_trexsim_validate_and_run_stop_on_a_broken_plugin(tmp_path, two_houses):
    install(tmp_path / "site", "broken-plugin", {"broken": "broken_plugin_mod:Mechanism"},
            {"broken_plugin_mod.py": "raise RuntimeError('the plug-in needs a licence file')\n"})
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(two_houses))  # a built-in mechanism: a broken plug-in is still reported
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site"), "COLUMNS": "300"}
    for command in (["validate", str(cfg)], ["run", str(cfg), "--out", str(tmp_path / "out")]):
        r = subprocess.run([sys.executable, "-m", "trexsim", *command], capture_output=True, text=True, env=env,
                           timeout=120)
        assert r.returncode == 2, r.stdout + r.stderr
        text = " ".join((r.stdout + r.stderr).split())
        assert ("error: entry point 'broken = broken_plugin_mod:Mechanism' (group trexsim.mechanisms) of package "
                "broken-plugin 0.1 could not be loaded: RuntimeError: the plug-in needs a licence file") in text
        assert "Traceback" not in text
    assert not (tmp_path / "out").exists()


def test_a_module_entry_point_registers_on_import(tmp_path, monkeypatch):
    source = """
    from trexsim.engine.mechanisms import PairwiseMechanism, register_mechanism

    @register_mechanism
    class BuyerPrice(PairwiseMechanism):
        name = "test_plugin_buyer_price"

        def settlement_prices(self, bid_price, ask_price):
            return bid_price, bid_price.copy()
    """
    (ep,) = install(tmp_path, "module-plugin", {"whole_module": "trexsim_test_module_plugin"},
                    {"trexsim_test_module_plugin.py": source})
    monkeypatch.syspath_prepend(str(tmp_path))
    assert load_mechanism_entry_point(ep) == ["test_plugin_buyer_price"]
    assert mechanism_origin("test_plugin_buyer_price").startswith("entry point 'whole_module = trexsim_test_module_plugin'")
    m = get_mechanism("test_plugin_buyer_price").clear([0], [0.12], [1000], [1], [0.10], [600])
    assert m.quantity_wh.tolist() == [600] and m.seller_price.tolist() == [0.12]


def test_entry_points_that_register_nothing_or_a_taken_name_are_errors(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    eps = install(tmp_path, "odd-plugin", {"empty": "trexsim_test_empty_mod", "number": "trexsim_test_empty_mod:VALUE",
                                           "taken": "trexsim_test_taken_mod"},
                  {"trexsim_test_empty_mod.py": "VALUE = 3\n",
                   "trexsim_test_taken_mod.py": """
                   from trexsim.engine.mechanisms import PairwiseMechanism, register_mechanism

                   @register_mechanism
                   class Midpoint(PairwiseMechanism):
                       name = "average_price"

                       def settlement_prices(self, bid_price, ask_price):
                           return bid_price, ask_price
                   """})
    errors = {}
    for ep in eps:
        with pytest.raises(PluginError) as err:
            load_mechanism_entry_point(ep)
        errors[ep.name] = str(err.value)
    assert errors["empty"].endswith("the module trexsim_test_empty_mod registered no settlement mechanism (decorate a "
                                    "Mechanism subclass with @register_mechanism, or name the class)")
    assert errors["number"].endswith("names 3, which is neither a Mechanism subclass nor a module")
    assert errors["taken"].endswith("could not be loaded: ValueError: settlement mechanism 'average_price' is already "
                                    "registered by trexsim.engine.mechanisms.AveragePrice; "
                                    "trexsim_test_taken_mod.Midpoint needs another name")
    assert type(get_mechanism("average_price")).__name__ == "AveragePrice"  # the built-in is untouched


def test_register_refuses_a_taken_name_or_an_unknown_budget_rule():
    with pytest.raises(ValueError, match="'exact_price' is already registered by trexsim.engine.mechanisms.ExactPrice"):
        @register_mechanism
        class _Impostor(PairwiseMechanism):
            name = "exact_price"

            def settlement_prices(self, bid_price, ask_price):
                return bid_price, ask_price

    with pytest.raises(ValueError, match="budget_balance must be 'strong' or 'weak', not 'none'"):
        @register_mechanism
        class _NoRule(PairwiseMechanism):
            name = "test_no_budget_rule"
            budget_balance = "none"

            def settlement_prices(self, bid_price, ask_price):
                return bid_price, ask_price
    assert "test_no_budget_rule" not in registered_mechanisms()


def test_a_subclass_of_a_built_in_with_its_own_prices_is_never_run_by_a_compiled_path(monkeypatch):
    """A plug-in deriving from AveragePrice but pricing every pair at the ask: the compiled env and the
    study's compiled market know only the built-in price rule, so they must refuse it (falling back to the
    general simulation), never clear it at the midpoint."""
    import numpy as np

    from trexsim import parse_config
    from trexsim.engine import mechanisms as mech
    from trexsim.envs._core import compiled_supported
    from trexsim.studies.fast_market import fast_path_supported
    from trexsim.studies.settlement import SettlementStudy

    monkeypatch.setattr(mech, "_REGISTRY", dict(mech._REGISTRY))

    @register_mechanism
    class AskPrice(mech.AveragePrice):
        name = "ask_price_test"

        def settlement_prices(self, bid_price, ask_price):
            ask = np.asarray(ask_price, dtype=np.float64)
            return ask, ask.copy()

    assert mech.compiled_price_rule(get_mechanism("ask_price_test")) is None
    study_cell = SettlementStudy().cell_config("average_price", "balanced", 0).model_dump(mode="json", by_alias=True)
    study_cell["market"]["settlement"] = "ask_price_test"
    assert "no compiled clearing" in fast_path_supported(parse_config(study_cell))
    env_config = parse_config({
        "study": {"name": "t", "days": 1, "seed": 1},
        "market": {"settlement": "ask_price_test"},
        "participants": {"a": {"profile": {"type": "flat", "load_w": 500, "generation_w": 0}, "trader": {"type": "external"}},
                         "b": {"profile": {"type": "flat", "load_w": 0, "generation_w": 900}, "trader": {"type": "external"}}},
    })
    assert "no compiled clearing" in compiled_supported(env_config)
