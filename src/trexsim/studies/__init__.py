"""Reproducible experiments built on the simulation (e.g. the T-REX settlement-mechanism study)."""
