"""Per-round reduction of solved snapshots: what the live powerflow module records for each round.

``RoundReducer(layout, limits).reduce(node_pu, loading_pct, converged)`` turns a chunk of solved rounds
(node voltages and element loadings as arrays, rounds x nodes / elements) into per-round columns (lowest
and highest bus voltage and where, most loaded transformer and line, violation counts) and the list of
violations, with the same rules as the replay (``replay_ledger``): a bus is the min / max over its
checked phase nodes; a bus violates a voltage limit if any of its nodes does; an element is overloaded
above ``limits.max_loading_pct``. A round that did not converge has NaN values and no violations.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np

from trexsim.powerflow.engine import Layout

KINDS = ("undervoltage", "overvoltage", "overload")  # the order violations are listed in


@dataclass
class Reduced:
    """A chunk of solved rounds, reduced. Arrays have one entry per round of the chunk."""

    v_min_pu: np.ndarray
    v_min_bus: np.ndarray        # bus name (object array; None where not converged)
    v_max_pu: np.ndarray
    v_max_bus: np.ndarray
    transformer_loading_pct: np.ndarray
    line_loading_pct: np.ndarray
    max_line: np.ndarray         # element name of the most loaded line
    buses_under: np.ndarray
    buses_over: np.ndarray
    elements_over: np.ndarray
    transformers_over: np.ndarray
    bus_min: np.ndarray | None   # (rounds, buses) lowest node voltage per bus, p.u. (None: not kept)
    bus_max: np.ndarray | None   # (rounds, buses)
    # violations: row in the chunk, kind, object name, value, limit
    viol_row: np.ndarray
    viol_kind: np.ndarray
    viol_object: np.ndarray
    viol_value: np.ndarray
    viol_limit: np.ndarray

    def without_detail(self) -> "Reduced":
        """The same without the per-bus arrays (what a solver process sends back when no detail is recorded)."""
        return replace(self, bus_min=None, bus_max=None)

    @classmethod
    def concat(cls, parts: list["Reduced"]) -> "Reduced":
        """Consecutive chunks as one, exactly what reducing them at once gives: violation rows renumbered and
        ordered as ``reduce`` orders them (by kind, then round, then bus or element); per-bus arrays only if every
        part has them."""
        offsets = np.cumsum([0] + [len(p.v_min_pu) for p in parts])
        values = {}
        for f in fields(cls):
            items = [getattr(p, f.name) for p in parts]
            if f.name == "viol_row":
                values[f.name] = np.concatenate([rows + off for rows, off in zip(items, offsets)]).astype(np.int64)
            elif any(x is None for x in items):
                values[f.name] = None
            else:
                values[f.name] = np.concatenate(items)
        rank = np.zeros(len(values["viol_kind"]), dtype=np.int64)
        for i, kind in enumerate(KINDS):
            rank[values["viol_kind"] == kind] = i
        order = np.argsort(rank, kind="stable")
        for name in ("viol_row", "viol_kind", "viol_object", "viol_value", "viol_limit"):
            values[name] = values[name][order]
        return cls(**values)


class RoundReducer:
    """Reduces solved snapshots of one loaded circuit (see the module doc)."""

    def __init__(self, layout: Layout, limits):
        self.layout = layout
        self.limits = limits
        node_sel = np.flatnonzero(layout.node_checked)
        order = np.argsort(layout.node_bus[node_sel], kind="stable")
        self.node_sel = node_sel[order]
        bus_of = layout.node_bus[self.node_sel]
        self.starts = np.flatnonzero(np.r_[True, bus_of[1:] != bus_of[:-1]]) if bus_of.size else np.zeros(0, np.int64)
        self.bus_ids = bus_of[self.starts] if bus_of.size else np.zeros(0, np.int64)
        # every bus with the same number of checked nodes (three-phase feeders): min / max over a reshape, faster
        sizes = np.diff(np.r_[self.starts, len(self.node_sel)])
        self.nodes_per_bus = int(sizes[0]) if sizes.size and np.all(sizes == sizes[0]) else 0
        self.bus_names = np.array([layout.bus_names[b] for b in self.bus_ids], dtype=object)
        kinds = np.array(layout.element_kind)
        self.trafo_cols = np.flatnonzero(kinds == "transformer")
        self.line_cols = np.flatnonzero(kinds == "line")
        self.element_names = np.array(layout.element_names, dtype=object)

    def reduce(self, node_pu: np.ndarray, loading_pct: np.ndarray, converged: np.ndarray) -> Reduced:
        n = len(converged)
        lim = self.limits
        ok = np.asarray(converged, dtype=bool)
        rows = np.arange(n)
        B, E = len(self.bus_ids), len(self.element_names)
        v = node_pu[:, self.node_sel]
        if B:
            if self.nodes_per_bus:
                v = v.reshape(n, B, self.nodes_per_bus)
                bmin, bmax = v.min(axis=2), v.max(axis=2)
            else:
                bmin = np.minimum.reduceat(v, self.starts, axis=1)
                bmax = np.maximum.reduceat(v, self.starts, axis=1)
            bmin[~ok] = np.nan  # a round that did not converge has no voltages
            bmax[~ok] = np.nan
            i_min = np.where(ok[:, None], bmin, np.inf).argmin(axis=1)
            i_max = np.where(ok[:, None], bmax, -np.inf).argmax(axis=1)
            v_min = np.where(ok, bmin[rows, i_min], np.nan)
            v_max = np.where(ok, bmax[rows, i_max], np.nan)
            v_min_bus = np.where(ok, self.bus_names[i_min], None)
            v_max_bus = np.where(ok, self.bus_names[i_max], None)
            with np.errstate(invalid="ignore"):
                under = bmin < lim.v_min_pu
                over = bmax > lim.v_max_pu
        else:
            bmin = bmax = np.zeros((n, 0))
            v_min = v_max = np.full(n, np.nan)
            v_min_bus = v_max_bus = np.full(n, None, dtype=object)
            under = over = np.zeros((n, 0), dtype=bool)
        load = np.where(ok[:, None], loading_pct, np.nan)
        trafo = load[:, self.trafo_cols].max(axis=1) if len(self.trafo_cols) else np.full(n, np.nan)
        if len(self.line_cols):
            lc = np.where(ok[:, None], load[:, self.line_cols], -np.inf)
            j = lc.argmax(axis=1)
            line = np.where(ok, lc[rows, j], np.nan)
            max_line = np.where(ok, self.element_names[self.line_cols[j]], None)
        else:
            line, max_line = np.full(n, np.nan), np.full(n, None, dtype=object)
        with np.errstate(invalid="ignore"):
            overload = load > lim.max_loading_pct if E else np.zeros((n, 0), dtype=bool)
        parts = []
        for kind, mask, values, limit, names in (("undervoltage", under, bmin, lim.v_min_pu, self.bus_names),
                                                 ("overvoltage", over, bmax, lim.v_max_pu, self.bus_names),
                                                 ("overload", overload, load, lim.max_loading_pct, self.element_names)):
            rr, cc = np.nonzero(mask)
            parts.append((rr, np.full(len(rr), kind, dtype=object), names[cc] if len(cc) else np.zeros(0, object),
                          values[rr, cc], np.full(len(rr), float(limit))))
        return Reduced(
            v_min_pu=v_min, v_min_bus=v_min_bus, v_max_pu=v_max, v_max_bus=v_max_bus,
            transformer_loading_pct=trafo, line_loading_pct=line, max_line=max_line,
            buses_under=under.sum(axis=1), buses_over=over.sum(axis=1), elements_over=overload.sum(axis=1),
            transformers_over=overload[:, self.trafo_cols].sum(axis=1) if len(self.trafo_cols) else np.zeros(n, int),
            bus_min=bmin, bus_max=bmax,
            viol_row=np.concatenate([p[0] for p in parts]).astype(np.int64),
            viol_kind=np.concatenate([p[1] for p in parts]),
            viol_object=np.concatenate([p[2] for p in parts]),
            viol_value=np.concatenate([p[3] for p in parts]).astype(float),
            viol_limit=np.concatenate([p[4] for p in parts]),
        )
