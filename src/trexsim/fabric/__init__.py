"""Data fabrics: how modules exchange messages (in-process by default)."""

from __future__ import annotations

from trexsim.fabric.inprocess import InProcessFabric

__all__ = ["InProcessFabric", "open_fabric"]


def open_fabric(url: str, **kwargs):
    """A networked fabric for ``url``: ``mqtt://`` / ``mqtts://`` -> MqttFabric, ``socketio://`` -> SocketIOFabric.

    Keyword arguments are the fabric's constructor's: ``namespace``, ``role`` (coordinator,
    controller, market, participants), ``account``, ``username``, ``password``, ``participant_ids``,
    ``timeout_s``, ``barrier_timeout_s``, ``ca_file``, ``roster_size``.
    """
    from trexsim.errors import TrexsimError

    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme in ("mqtt", "mqtts"):
        from trexsim.fabric.mqtt import MqttFabric

        return MqttFabric(url, **kwargs)
    if scheme in ("socketio", "socketios"):
        from trexsim.fabric.socketio import SocketIOFabric

        return SocketIOFabric(url, **kwargs)
    raise TrexsimError(f"fabric URL {url!r}: expected mqtt://HOST:PORT, mqtts://HOST:PORT or socketio://HOST:PORT")
