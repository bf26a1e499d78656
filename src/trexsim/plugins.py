"""Plug-ins: packages outside trexsim that add settlement mechanisms through entry points.

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

Traders and devices will get groups of their own (``trexsim.traders``, ``trexsim.devices``).
"""

from __future__ import annotations

import threading
from importlib import metadata
from types import ModuleType

from trexsim.errors import TrexsimError

MECHANISMS_GROUP = "trexsim.mechanisms"


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


def load_mechanism_entry_point(ep: metadata.EntryPoint) -> list[str]:
    """Load one entry point and register what it names; returns the mechanism names it provides.

    Raises :class:`PluginError` if it cannot be imported, names something that is not a mechanism
    class or a module, or registers no mechanism (or a name another class already holds).
    """
    from trexsim.engine import mechanisms as registry

    where = describe(ep)
    try:
        obj = ep.load()
    except Exception as exc:  # anything an import can raise: name the plug-in, keep the cause
        raise PluginError(f"{where} could not be loaded: {type(exc).__name__}: {exc}") from exc
    if isinstance(obj, type) and issubclass(obj, registry.Mechanism):
        try:
            registry.register_mechanism(obj)
        except ValueError as exc:
            raise PluginError(f"{where}: {exc}") from exc
        names = [obj.name]
    elif isinstance(obj, ModuleType):
        names = registry.mechanisms_defined_in(obj.__name__)
        if not names:
            raise PluginError(f"{where}: the module {obj.__name__} registered no settlement mechanism "
                              "(decorate a Mechanism subclass with @register_mechanism, or name the class)")
    else:
        raise PluginError(f"{where} names {obj!r}, which is neither a Mechanism subclass nor a module")
    for name in names:
        _origins[name] = where
    return names


def load_mechanism_plugins() -> None:
    """Load every mechanism plug-in once; re-raise the first failure on every later call."""
    if _state["loaded"] and not _error:
        return
    with _lock:
        if _error:
            raise _error[0]
        if _state["loaded"] or _state["loading"]:  # a plug-in asking the registry while it is imported
            return
        _state["loading"] = True
        try:
            for ep in mechanism_entry_points():
                load_mechanism_entry_point(ep)
        except PluginError as exc:
            _error.append(exc)
            raise
        finally:
            _state["loading"] = False
            _state["loaded"] = True


def mechanism_origin(name: str) -> str:
    """Where a registered mechanism comes from: ``built-in``, a plug-in's entry point, or the module that
    registered it at run time."""
    from trexsim.engine import mechanisms as registry

    mechanism = registry.get_mechanism(name)
    if name in _origins:
        return _origins[name]
    module = type(mechanism).__module__
    return "built-in" if module == registry.__name__ else f"registered at run time by {module}"
