"""Plug-ins: packages outside trexsim that add settlement mechanisms and traders through entry points.

A package registers a mechanism in its ``pyproject.toml``::

    [project.entry-points."trexsim.mechanisms"]
    mcafee = "trexsim_mcafee:McAfee"

The entry point names either a :class:`~trexsim.engine.mechanisms.Mechanism` subclass (registered
here under its ``name``) or a module that registers its mechanisms on import with
:func:`~trexsim.engine.mechanisms.register_mechanism`. By convention the entry point's name is the
mechanism's name.

Every entry point of the group is loaded once, lazily: the first time the registry answers
(:func:`~trexsim.engine.mechanisms.get_mechanism`,
:func:`~trexsim.engine.mechanisms.registered_mechanisms`, and so before a config's
``market.settlement`` is validated). A plug-in that cannot be loaded stops with a
:class:`PluginError` naming the entry point and its package, every time the registry is asked,
never a silent skip: a config that names the mechanism would otherwise fail later with "unknown
mechanism", and one that does not would run without saying that an installed plug-in is broken.

Traders come the same way, in the group ``trexsim.traders``::

    [project.entry-points."trexsim.traders"]
    zi_constrained = "trexsim_zic:ZIConstrainedTraders"

naming a :class:`~trexsim.agents.base.TraderPopulation` subclass with a ``config_model`` (registered by
:func:`~trexsim.agents.base.register_trader`) or a module that registers its traders on import. They
are loaded before the first config is validated (a participant's ``trader.type`` may name them), with
the same errors.

Devices come in the group ``trexsim.devices``::

    [project.entry-points."trexsim.devices"]
    pool_pump = "trexsim_poolpump:PoolPump"

naming a :class:`~trexsim.devices.ScheduledDevice` subclass with a ``config_model`` (registered by
:func:`~trexsim.devices.register_device`) or a module that registers its devices on import; loaded, like
traders, before the first config is validated (a participant's ``devices`` may name them).
"""

from __future__ import annotations

import threading
from importlib import metadata
from types import ModuleType

from trexsim.errors import TrexsimError

MECHANISMS_GROUP = "trexsim.mechanisms"
TRADERS_GROUP = "trexsim.traders"
DEVICES_GROUP = "trexsim.devices"


class PluginError(TrexsimError):
    """An installed plug-in could not be loaded or registered (names the entry point and package)."""


_lock = threading.RLock()
_state = {"loaded": False, "loading": False}
_error: list[PluginError] = []
_origins: dict[str, str] = {}  # mechanism name -> where a plug-in mechanism came from


def describe(ep: metadata.EntryPoint) -> str:
    """``entry point 'mcafee = trexsim_mcafee:McAfee' (group trexsim.mechanisms) of package trexsim-mcafee 0.1.0``."""
    dist = getattr(ep, "dist", None)
    package = f"{dist.metadata['Name']} {dist.version}" if dist is not None else "(unknown package)"
    return f"entry point '{ep.name} = {ep.value}' (group {ep.group}) of package {package}"


def mechanism_entry_points() -> list[metadata.EntryPoint]:
    """The installed entry points of :data:`MECHANISMS_GROUP`, sorted by name (a stable load order)."""
    return sorted(metadata.entry_points(group=MECHANISMS_GROUP), key=lambda ep: (ep.name, ep.value))


def _load_entry_point(ep: metadata.EntryPoint, base: type, register, defined_in, what: str, hint: str) -> list[str]:
    """Load one entry point: a ``base`` subclass is registered by ``register`` (which returns its name), a
    module must have registered something on import (``defined_in(module name)`` lists it)."""
    where = describe(ep)
    try:
        obj = ep.load()
    except Exception as exc:  # anything an import can raise: name the plug-in, keep the cause
        raise PluginError(f"{where} could not be loaded: {type(exc).__name__}: {exc}") from exc
    if isinstance(obj, type) and issubclass(obj, base):
        try:
            names = [register(obj)]
        except (TypeError, ValueError) as exc:
            raise PluginError(f"{where}: {exc}") from exc
    elif isinstance(obj, ModuleType):
        names = defined_in(obj.__name__)
        if not names:
            raise PluginError(f"{where}: the module {obj.__name__} registered no {what} ({hint})")
    else:
        raise PluginError(f"{where} names {obj!r}, which is neither a {base.__name__} subclass nor a module")
    return names


def load_mechanism_entry_point(ep: metadata.EntryPoint) -> list[str]:
    """Load one entry point and register what it names; returns the mechanism names it provides.

    Raises :class:`PluginError` if it cannot be imported, names something that is not a mechanism
    class or a module, or registers no mechanism (or a name another class already holds).
    """
    from trexsim.engine import mechanisms as registry

    def register(cls):
        registry.register_mechanism(cls)
        return cls.name

    names = _load_entry_point(ep, registry.Mechanism, register, registry.mechanisms_defined_in,
                              "settlement mechanism",
                              "decorate a Mechanism subclass with @register_mechanism, or name the class")
    for name in names:
        _origins[name] = describe(ep)
    return names


def _load_group(state: dict, errors: list, entry_points, load_one) -> bool:
    """Load every entry point of one group once (``state``: its flags, ``errors``: its first failure,
    re-raised on every later call); True when this call loaded something."""
    if state["loaded"] and not errors:
        return False
    with _lock:
        if errors:
            raise errors[0]
        if state["loaded"] or state["loading"]:  # a plug-in asking the registry while it is imported
            return False
        state["loading"] = True
        found = False
        try:
            for ep in entry_points():
                found |= bool(load_one(ep))
        except PluginError as exc:
            errors.append(exc)
            raise
        finally:
            state["loading"] = False
            state["loaded"] = True
        return found


def load_mechanism_plugins() -> None:
    """Load every mechanism plug-in once; re-raise the first failure on every later call."""
    _load_group(_state, _error, mechanism_entry_points, load_mechanism_entry_point)


def mechanism_origin(name: str) -> str:
    """Where a registered mechanism comes from: ``built-in``, a plug-in's entry point, or the module that
    registered it at run time."""
    from trexsim.engine import mechanisms as registry

    mechanism = registry.get_mechanism(name)
    if name in _origins:
        return _origins[name]
    module = type(mechanism).__module__
    return "built-in" if module == registry.__name__ else f"registered at run time by {module}"


_traders = {"loaded": False, "loading": False}
_trader_error: list[PluginError] = []


def trader_entry_points() -> list[metadata.EntryPoint]:
    """The installed entry points of :data:`TRADERS_GROUP`, sorted by name."""
    return sorted(metadata.entry_points(group=TRADERS_GROUP), key=lambda ep: (ep.name, ep.value))


def _load_kind_entry_point(ep: metadata.EntryPoint, what: str, base: type, register, kinds: dict, module_of,
                           hint: str) -> list[str]:
    """Load one entry point of a registry of kinds (traders, devices): register what it names with ``register``
    and note where each kind came from; returns the kinds it provides."""
    def register_kind(cls):
        register(cls)
        return cls.kind

    def defined_in(module: str) -> list[str]:
        return sorted(k for k, v in kinds.items() if module_of(v) == module or module_of(v).startswith(module + "."))

    names = _load_entry_point(ep, base, register_kind, defined_in, what, hint)
    for name in names:
        _origins[f"{what}:{name}"] = describe(ep)
    return names


def load_trader_entry_point(ep: metadata.EntryPoint) -> list[str]:
    """Load one trader entry point and register what it names; returns the trader kinds it provides."""
    from trexsim.agents import base

    return _load_kind_entry_point(ep, "trader", base.TraderPopulation, base.register_trader, base.TRADER_KINDS,
                                  lambda v: v.population.split(":")[0],
                                  "call register_trader with a TraderPopulation subclass, or name the class")


def load_trader_plugins() -> bool:
    """Load every trader plug-in once; re-raise the first failure on every later call. True when this call
    registered trader kinds (the config models were rebuilt)."""
    return _load_group(_traders, _trader_error, trader_entry_points, load_trader_entry_point)


def trader_origin(kind: str) -> str:
    """Where a registered trader kind comes from: ``built-in`` or a plug-in's entry point."""
    return _origins.get("trader:" + kind, "built-in")


_devices = {"loaded": False, "loading": False}
_device_error: list[PluginError] = []


def device_entry_points() -> list[metadata.EntryPoint]:
    """The installed entry points of :data:`DEVICES_GROUP`, sorted by name."""
    return sorted(metadata.entry_points(group=DEVICES_GROUP), key=lambda ep: (ep.name, ep.value))


def load_device_entry_point(ep: metadata.EntryPoint) -> list[str]:
    """Load one device entry point and register what it names; returns the device kinds it provides."""
    from trexsim import devices

    return _load_kind_entry_point(ep, "device", devices.ScheduledDevice, devices.register_device, devices.DEVICE_KINDS,
                                  lambda v: v.__module__,
                                  "call register_device with a ScheduledDevice subclass, or name the class")


def load_device_plugins() -> bool:
    """Load every device plug-in once; re-raise the first failure on every later call. True when this call
    registered device kinds (the config models were rebuilt)."""
    return _load_group(_devices, _device_error, device_entry_points, load_device_entry_point)


def device_origin(kind: str) -> str:
    """Where a registered device kind comes from: ``built-in`` or a plug-in's entry point."""
    return _origins.get("device:" + kind, "built-in")


def kind_and_settings(cls, base: type, settings_base: type, what: str) -> tuple[str, type, tuple]:
    """Check a class registered as a kind (a trader population, a device): a ``base`` subclass with a ``kind`` name
    and a ``config_model`` subclassing ``settings_base``; returns ``(kind, config model, its type literals)``.
    Errors say what is missing, for the plug-in's author."""
    import typing

    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise TypeError(f"{cls!r} is not a {base.__name__} subclass")
    name = getattr(cls, "kind", "")
    model = getattr(cls, "config_model", None)
    if not isinstance(name, str) or not name:
        raise ValueError(f"{cls.__qualname__} has no 'kind' (the {what} kind's name)")
    if not (isinstance(model, type) and issubclass(model, settings_base)):
        raise ValueError(f"{cls.__qualname__}.config_model must be a {settings_base.__module__}.{settings_base.__name__} "
                         f"subclass, not {model!r}")
    types = typing.get_args(model.model_fields["type"].annotation) if "type" in model.model_fields else ()
    return name, model, types
