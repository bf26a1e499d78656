"""Data fabrics: how modules exchange messages (in-process by default)."""

from trexsim.fabric.inprocess import InProcessFabric

__all__ = ["InProcessFabric"]
