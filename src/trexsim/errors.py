"""One root exception for everything trexsim reports to a user.

Every message says *where* the problem is: a key path in a config
(``participants.H3.storage.efficiency``), a file, row and column in a profile
file (``profiles.csv:1432:consumption_wh``) or a field of a message.
"""

from __future__ import annotations


class TrexsimError(Exception):
    """Root of every error trexsim raises on purpose."""


class ConfigError(TrexsimError):
    """A simulation config is invalid. ``problems`` lists every ``(key path, message)``."""

    def __init__(self, problems: list[tuple[str, str]], source: str | None = None):
        self.problems = list(problems)
        self.source = source
        head = f"{source}: " if source else ""
        lines = [f"{path}: {msg}" if path else msg for path, msg in self.problems]
        super().__init__(head + "invalid config\n  " + "\n  ".join(lines))


class ProfileError(TrexsimError):
    """Profile data is missing or malformed (names file, row and column where known)."""


class MessageError(TrexsimError):
    """A message on the fabric is malformed or out of range."""


class ConservationError(TrexsimError):
    """Energy or money did not balance in a round: always a bug in trexsim."""
