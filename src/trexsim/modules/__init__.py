"""Modules: controller, grid, market, participants. They talk only through a fabric."""
