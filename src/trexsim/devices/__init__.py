"""Devices behind a participant's meter."""
