"""The powerflow package's error, and the one place that imports OpenDSSDirect.py."""

from __future__ import annotations

from trexsim.errors import TrexsimError

INSTALL_HINT = "pip install 'trexsim[powerflow]' (or pip install 'opendssdirect.py>=0.9')"


class PowerflowError(TrexsimError):
    """A feeder, a mapping, a run or the powerflow engine cannot be used as given (the message says which)."""


def import_opendss():
    """Return the ``opendssdirect`` module, or raise a PowerflowError saying how to install it.

    Core trexsim never imports OpenDSSDirect.py: only the OpenDSS engine calls this, when it is created.
    """
    try:
        import opendssdirect
    except ImportError as exc:
        raise PowerflowError(
            f"the powerflow needs OpenDSSDirect.py, which is not installed: install trexsim[powerflow], "
            f"i.e. {INSTALL_HINT}") from exc
    return opendssdirect
