"""Config loading and validation: every problem reported with its key path."""

import json

import pytest

from trexsim import load_config, parse_config
from trexsim.config.schema import SimulationConfig
from trexsim.errors import ConfigError


def problems(data):
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return dict(info.value.problems)


def test_the_issue_config_is_accepted_as_it_stands(two_houses):
    cfg = parse_config(two_houses)
    assert cfg.study.rounds_per_episode == 1440
    assert cfg.market.settlement == "average_price" and cfg.market.close_steps == 1
    assert (cfg.market.grid.buy_price, cfg.market.grid.sell_price) == (0.1449, 0.069)
    assert cfg.participants["buyer"].profile.load_w == 60000
    # 2021-07-01 00:00 in Edmonton (MDT, UTC-6) is 06:00 UTC
    assert cfg.study.start_utc_s == 1625119200


def test_comments_are_allowed(tmp_path, two_houses):
    text = "// a comment\n" + json.dumps(two_houses, indent=1).replace('"days": 1,', '"days": 1, // one day')
    path = tmp_path / "c.json"
    path.write_text(text)
    assert load_config(path).study.days == 1


def test_every_problem_is_reported_with_its_key_path(two_houses):
    two_houses["participants"]["H3"] = {"profile": {"type": "flat", "load_w": 10},
                                        "storage": {"capacity_wh": 1000, "efficiency": 1.5}}
    two_houses["study"]["timezone"] = "Mars/Olympus"
    two_houses["market"]["settlement"] = "pay_as_clear"
    two_houses["market"]["grid"]["buy_pric"] = 0.2
    two_houses["participants"]["buyer"]["trader"]["bid_price"] = -1
    found = problems(two_houses)
    assert found["participants.H3.storage.efficiency"] == "must be in (0, 1]"
    assert "unknown timezone 'Mars/Olympus'" in found["study.timezone"]
    assert "unknown settlement mechanism 'pay_as_clear'" in found["market.settlement"]
    assert "exact_price" in found["market.settlement"]
    assert found["market.grid.buy_pric"].startswith("unknown key")
    assert found["participants.buyer.trader.bid_price"] == "must be in (0, 10]"


def test_unknown_profile_and_trader_types(two_houses):
    two_houses["participants"]["buyer"]["profile"]["type"] = "sine"
    two_houses["participants"]["seller"]["trader"] = {"type": "magic"}
    found = problems(two_houses)
    assert "unknown type 'sine'" in found["participants.buyer.profile"]
    assert "unknown type 'magic'" in found["participants.seller.trader"]


def test_missing_sections_and_bad_values(two_houses):
    assert "participants" in problems({"study": {}})
    two_houses["study"]["days"] = 0
    two_houses["study"]["start_datetime"] = "yesterday"
    found = problems(two_houses)
    assert found["study.days"] == "must be > 0"
    assert "not a date-time" in found["study.start_datetime"]


def test_grid_prices_trex_core_style_price_and_fee_ratio(two_houses):
    two_houses["market"]["grid"] = {"price": 0.069, "fee_ratio": 1.1}
    grid = parse_config(two_houses).market.grid
    assert (grid.buy_price, grid.sell_price) == (0.1449, 0.069)
    two_houses["market"]["grid"] = {"buy_price": 0.05, "sell_price": 0.10}
    assert "sell_price must not exceed buy_price" in problems(two_houses)["market.grid"]


def test_count_expands_participants(two_houses):
    two_houses["participants"]["buyer"]["count"] = 3
    ids = [pid for pid, _ in parse_config(two_houses).expanded_participants()]
    assert ids == ["buyer-1", "buyer-2", "buyer-3", "seller"]


def test_trex_core_aliases(two_houses):
    two_houses["participants"]["seller"]["storage"] = {"type": "Bess", "capacity": 7000, "power": 3300,
                                                       "efficiency": 0.95, "monthly_sdr": 0.05}
    two_houses["participants"]["seller"]["trader"] = {"type": "basic_trader", "bid_price": 0.14, "ask_price": 0.07}
    s = parse_config(two_houses).participants["seller"]
    assert (s.storage.capacity_wh, s.storage.charge_power_w, s.storage.discharge_power_w) == (7000, 3300, 3300)
    assert s.storage.monthly_self_discharge == 0.05


def test_missing_file_and_bad_json(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"study": {')
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config(bad)


def test_json_schema_is_exported():
    schema = SimulationConfig.model_json_schema()
    assert "participants" in schema["required"]
    assert "study" in schema["properties"]


def test_derived_and_tou_grid_prices_are_checked(two_houses):
    two_houses["market"]["grid"] = {"price": 5, "fee_ratio": 10}
    assert "works out to 55" in problems(two_houses)["market.grid"]
    two_houses["market"]["grid"] = {"fee_ratio": 1.1}
    assert "fee_ratio needs price" in problems(two_houses)["market.grid"]
    two_houses["market"]["grid"] = {"tou": [{"months": [7], "hours": [18], "buy_price": 0.1, "sell_price": 0.2}]}
    assert "sell_price must not exceed buy_price" in problems(two_houses)["market.grid.tou[0]"]


def test_trex_core_start_time_and_duplicate_ids(two_houses):
    two_houses["study"]["start_datetime"] = "2018-07-01 0:0:0"
    assert parse_config(two_houses).study.start_datetime == "2018-07-01 00:00:00"
    two_houses["participants"]["buyer"]["count"] = 2
    two_houses["participants"]["buyer-1"] = two_houses["participants"]["seller"]
    assert "appears twice" in problems(two_houses)[""]


def test_json_syntax_error_names_line_and_column(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"study": {"days": 1,\n  "seed": [1, 2,\n}')
    with pytest.raises(ConfigError, match="line 3, column 1"):
        load_config(bad)


def test_missing_profile_file_is_named(tmp_path, two_houses):
    two_houses["participants"]["buyer"]["profile"] = {"type": "file", "path": "nope.csv"}
    path = tmp_path / "c.json"
    path.write_text(json.dumps(two_houses))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems[0][0] == "participants.buyer.profile.path"


def test_powerflow_paths_are_relative_to_the_config_file(tmp_path, monkeypatch):
    import json

    cfg = {"study": {"name": "pf", "days": 1}, "market": {"type": "alex"},
           "participants": {"a": {"profile": {"type": "flat", "load_w": 100}}},
           "powerflow": {"feeder": "grid/feeder.dss", "mapping": "grid/map.json"}}
    folder = tmp_path / "study"
    (folder / "grid").mkdir(parents=True)
    (folder / "grid" / "feeder.dss").write_text("clear\n")
    (folder / "c.json").write_text(json.dumps(cfg))
    monkeypatch.chdir(tmp_path)  # run from elsewhere
    with pytest.raises(ConfigError) as err:
        load_config(folder / "c.json")
    assert [key for key, _ in err.value.problems] == ["powerflow.mapping"]
    (folder / "grid" / "map.json").write_text("{}")
    pf = load_config(folder / "c.json").powerflow
    assert pf.feeder == str(folder / "grid" / "feeder.dss") and pf.mapping == str(folder / "grid" / "map.json")
