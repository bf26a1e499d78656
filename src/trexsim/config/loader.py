"""Load a JSON (with ``//`` comments) config and report every problem with its key path."""

from __future__ import annotations

import json
import re
import typing
from pathlib import Path
from typing import Any

import pyjson5
from pydantic import BaseModel, ValidationError

from trexsim.config.schema import SimulationConfig
from trexsim.errors import ConfigError

_UNION_TAGS = {"flat", "realistic", "file", "grid_only", "baseline_agent", "fixed_price", "basic_trader", "q_learning",
               "qlearn_bandit", "external"}


def _union_tags() -> set[str]:
    """The discriminator values pydantic puts in an error's location: profile types, every trader and device
    type (plug-ins' included)."""
    from trexsim.agents.base import _KIND_OF_TYPE
    from trexsim.devices import DEVICE_KINDS

    return _UNION_TAGS | set(_KIND_OF_TYPE) | set(DEVICE_KINDS)


def _key_path(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for i, item in enumerate(loc):
        # pydantic puts the discriminator's value in the location of a tagged union member
        in_union = i > 0 and (loc[i - 1] in ("profile", "trader") or (i > 1 and loc[i - 2] == "devices"
                                                                     and isinstance(loc[i - 1], int)))
        if isinstance(item, str) and in_union and item in _union_tags():
            continue
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts)


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """Every pydantic model inside an annotation (Optional, Union, dict values, Annotated)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    out: list[type[BaseModel]] = []
    for arg in typing.get_args(annotation):
        out.extend(_models_in(arg))
    return out


def _field_at(loc: tuple[Any, ...]):
    """The FieldInfo a pydantic error location points at, or None."""
    models: list[type[BaseModel]] = [SimulationConfig]
    field = None
    for item in loc:
        if not isinstance(item, str):
            continue
        hits = [m for m in models if item in m.model_fields]
        if hits:
            field = hits[0].model_fields[item]
            models = _models_in(field.annotation)
            continue
        tagged = [m for m in models if "type" in m.model_fields and item in typing.get_args(m.model_fields["type"].annotation)]
        if tagged:
            models = tagged[:1]
        # otherwise a dict key such as a participant id: stay on the same models
    return field


def _interval(field) -> str | None:
    lo = hi = None
    lo_open = hi_open = True
    for meta in getattr(field, "metadata", []):
        for name in ("gt", "ge", "lt", "le"):
            value = getattr(meta, name, None)
            if value is None:
                continue
            if name in ("gt", "ge"):
                lo, lo_open = value, name == "gt"
            else:
                hi, hi_open = value, name == "lt"
    if lo is None or hi is None:
        return None
    return f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"


def _message(err: dict[str, Any]) -> str:
    kind = err.get("type", "")
    ctx = err.get("ctx") or {}
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        interval = _interval(_field_at(tuple(err["loc"])))
        if interval:
            return f"must be in {interval}"
    if kind == "extra_forbidden":
        return "unknown key (check its spelling in docs/configuration.md)"
    if kind == "missing":
        return "required key is missing"
    for name, op in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
        if name in ctx:
            return f"must be {op} {ctx[name]:g}"
    if kind == "union_tag_invalid":
        return f"unknown type {ctx.get('tag')!r}; expected one of {ctx.get('expected_tags')}"
    if kind == "union_tag_not_found":
        return "missing 'type' key"
    msg = str(err.get("msg", "invalid"))
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix):]
    return msg[:1].lower() + msg[1:] if msg else msg


def parse_config(data: Any, source: str | None = None) -> SimulationConfig:
    """Validate a config already decoded to Python objects; raise ConfigError naming every key."""
    if not isinstance(data, dict):
        raise ConfigError([("", "a config must be a JSON object with study, market and participants")], source)
    try:
        return SimulationConfig.model_validate(data)
    except ValidationError as exc:
        problems = [(_key_path(tuple(e["loc"])), _message(e)) for e in exc.errors()]
        raise ConfigError(problems, source) from None


def read_config_text(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([("", f"config file not found: {path}")], str(path)) from None
    except OSError as exc:
        raise ConfigError([("", f"cannot read config: {exc}")], str(path)) from None
    try:
        return pyjson5.decode(text)
    except Exception as exc:  # pyjson5 raises its own hierarchy; report it as a config problem
        message = getattr(exc, "message", None) or str(exc)
        where = re.search(r"near (\d+)", message)
        detail = _plain_json_error(re.sub(r" near \d+", "", message))
        if where:
            offset = max(0, int(where.group(1)) - 1)  # pyjson5 reports the position after the character
            line = text.count("\n", 0, offset) + 1
            start = text.rfind("\n", 0, offset) + 1
            column = offset - start + 1
            end = text.find("\n", start)
            shown = text[start:end if end >= 0 else len(text)].replace("\t", " ")
            message = (f"line {line}, column {column}: {detail}\n"
                       f"    {line} | {shown[:200]}\n    {' ' * len(str(line))} | {' ' * (column - 1)}^")
        else:
            message = detail
        raise ConfigError([("", f"not valid JSON: {message}")], str(path)) from None


_JSON_TOKENS = {"comma": "','", "colon": "':'", "IdentifierStart": "a key", "IdentifierPart": "a key",
                "string": "string", "ValueStart": "a value"}


def _plain_json_error(message: str) -> str:
    """pyjson5's message in plain words: ``Expected b'comma' or U+007d, found U+0022`` becomes
    ``expected ',' or '}', found '"' (is a comma missing before it?)``."""
    def char(m: re.Match) -> str:
        c = chr(int(m.group(1), 16))
        return repr(c) if c.isprintable() and c != " " else f"U+{m.group(1).upper()}"

    text = re.sub(r"U\+([0-9A-Fa-f]{4,6})", char, message)
    text = re.sub(r"b'(\w+)'", lambda m: _JSON_TOKENS.get(m.group(1), m.group(1)), text)
    text = text.replace("Extra data", "unexpected text after the end of the document:")
    text = text.replace("Unclosed string starting", "a string that is never closed (a missing '\"'?)")
    text = text.replace("Unclosed object starting", "an object ('{') that is never closed (a missing '}'?)")
    text = text.replace("Unclosed array starting", "an array ('[') that is never closed (a missing ']'?)")
    text = text.replace("Unexpected end of file", "the file ends too early (a missing '}' or ']'?)")
    if text.startswith("Expected"):
        text = "e" + text[1:]
        if re.search(r"expected ','.*found", text):
            text += " (is a comma missing before it?)"
        elif "expected a key, found ','" in text:
            text += " (a comma too many?)"
    return text


def load_config(path: str | Path) -> SimulationConfig:
    """Read, decode (JSON5: comments allowed) and validate a config file.

    Relative paths in it (``file`` profiles, Q-tables, the powerflow and TC feeders and mappings) are taken
    relative to the config file's folder.
    """
    path = Path(path)
    data = read_config_text(path)
    config = parse_config(data, str(path))
    missing = []
    for pid, spec in config.participants.items():
        if spec.profile.type == "file":
            if not Path(spec.profile.path).is_absolute():
                spec.profile.path = str((path.parent / spec.profile.path).resolve())
            if not Path(spec.profile.path).exists():
                missing.append((f"participants.{pid}.profile.path", f"file not found: {spec.profile.path}"))
        q_table = getattr(spec.trader, "q_table", None)
        if q_table:
            if not Path(q_table).is_absolute():
                spec.trader.q_table = q_table = str((path.parent / q_table).resolve())
            if not Path(q_table).exists():
                missing.append((f"participants.{pid}.trader.q_table", f"file not found: {q_table}"))
    for section, pf in (("powerflow", config.powerflow), ("tc", config.tc)):
        if pf is None:
            continue
        for key in ("feeder", "mapping"):
            value = getattr(pf, key)
            if key == "feeder" and isinstance(value, str) and value.strip().lower().startswith("builtin:"):
                continue  # a built-in feeder (trexsim.powerflow.builtin), checked by the schema
            if isinstance(value, str) and not Path(value).is_absolute():
                setattr(pf, key, str((path.parent / value).resolve()))
            value = getattr(pf, key)
            if isinstance(value, str) and not Path(value).exists():
                missing.append((f"{section}.{key}", f"file not found: {value}"))
    if missing:
        raise ConfigError(missing, str(path))
    return config


def validate_config_file(path: str | Path) -> list[tuple[str, str]]:
    """Every problem of a config file as (key path, message); empty when valid."""
    try:
        load_config(path)
    except ConfigError as exc:
        return exc.problems
    return []


def config_to_json(config: SimulationConfig) -> str:
    return json.dumps(config.model_dump(mode="json", by_alias=False), indent=2)
