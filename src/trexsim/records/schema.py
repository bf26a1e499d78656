"""The run database's schema, defined up front in one place. Batches are appended.
Energies in whole Wh, prices in $/kWh, money in $. Codes: side 'bid'/'ask'; pool 'non_dispatch'/'dispatch'.

Energies of one participant in one round are stored as INTEGER (up to 2.1 GWh): half the bytes of
BIGINT for DuckDB to compress, which is most of what a full-records run costs. Should a run ever
exceed that, the recorder widens the affected table's ``WIDENABLE`` columns to BIGINT and goes on.
Sums over participants or rounds (``rounds``; any query) are BIGINT.

Per participant and round, the meter and the settlement are stored in ``delivery_rows``; the
``deliveries`` view adds the columns that follow from stored ones by the delivery rule and the
round's grid prices (see ``DERIVED``), so they cost neither ingest time nor disk.
"""

# enumerations, created before the tables
TYPES: dict[str, str] = {
    "order_side": "ENUM ('bid', 'ask')",
    "energy_pool": "ENUM ('non_dispatch', 'dispatch')",
}

TABLES: dict[str, str] = {
    "runs": """
        run_id VARCHAR, name VARCHAR, seed BIGINT, settlement VARCHAR, close_steps INTEGER,
        interval_s INTEGER, start_utc_s BIGINT, rounds_per_episode INTEGER, episodes INTEGER,
        timezone VARCHAR, trexsim_version VARCHAR, config_json VARCHAR,
        started_utc TIMESTAMP, finished_utc TIMESTAMP, status VARCHAR""",
    "participants": """
        participant INTEGER, participant_id VARCHAR, trader VARCHAR, profile VARCHAR,
        battery_capacity_wh DOUBLE""",
    # the markets of the run: ``market`` is the index the orders, rejections and settlements tables carry
    "markets": """
        market SMALLINT, market_id VARCHAR, settlement VARCHAR, parent VARCHAR, members INTEGER""",
    "rounds": """
        episode INTEGER, round INTEGER, start_utc_s BIGINT, grid_buy_price DOUBLE, grid_sell_price DOUBLE,
        market_wh BIGINT, grid_import_wh BIGINT, grid_export_wh BIGINT, auctioneer_surplus_usd DOUBLE""",
    "orders": """
        episode INTEGER, round INTEGER, delivery_round INTEGER, order_id BIGINT, participant INTEGER,
        side order_side, pool energy_pool, price DOUBLE, quantity_wh INTEGER, tie_rank INTEGER,
        batch_position INTEGER, market SMALLINT""",
    "rejections": """
        episode INTEGER, round INTEGER, delivery_round INTEGER, order_id BIGINT, participant BIGINT,
        side BIGINT, pool BIGINT, price DOUBLE, quantity_wh DOUBLE, reason VARCHAR, market SMALLINT""",
    "settlements": """
        episode INTEGER, round INTEGER, delivery_round INTEGER, pool energy_pool, buyer INTEGER, seller INTEGER,
        quantity_wh INTEGER, buyer_price DOUBLE, seller_price DOUBLE, bid_id BIGINT, ask_id BIGINT, market SMALLINT""",
    "delivery_rows": """
        episode INTEGER, round INTEGER, participant INTEGER,
        load_wh INTEGER, generation_wh INTEGER, battery_charge_wh INTEGER, battery_discharge_wh INTEGER,
        battery_stored_wh DOUBLE, bought_wh INTEGER, sold_wh INTEGER,
        grid_import_wh INTEGER, grid_export_wh INTEGER, market_cost_usd DOUBLE, market_revenue_usd DOUBLE,
        grid_only_net_wh INTEGER""",
    # written by the live powerflow module (trexsim.modules.powerflow) when the config has a ``powerflow``
    # section; empty otherwise. One row per solved round; voltages p.u., loadings % of rating, powers W.
    "powerflow_rounds": """
        episode INTEGER, round INTEGER, start_utc_s BIGINT, rounds_represented INTEGER, net_load_w DOUBLE,
        source_p_w DOUBLE, source_q_var DOUBLE, losses_w DOUBLE, v_min_pu DOUBLE, v_min_bus VARCHAR,
        v_max_pu DOUBLE, v_max_bus VARCHAR, transformer_loading_pct DOUBLE, line_loading_pct DOUBLE,
        max_line VARCHAR, buses_under INTEGER, buses_over INTEGER, elements_over INTEGER, converged BOOLEAN""",
    "powerflow_violations": """
        episode INTEGER, round INTEGER, kind VARCHAR, object VARCHAR, value DOUBLE, "limit" DOUBLE""",
    "powerflow_bus_voltages": """
        episode INTEGER, round INTEGER, bus VARCHAR, v_min_pu DOUBLE, v_max_pu DOUBLE""",
    "powerflow_element_loading": """
        episode INTEGER, round INTEGER, element VARCHAR, loading_pct DOUBLE""",
    # written by the TC market module (trexsim.modules.tc) in a ``market.type: tc`` run: one row per price
    # interval of every published schedule; prices $/kWh, predicted loading % of rating, deviation p.u.;
    # implied_price: what the published schedule's own prediction prices the interval at (equal: in phase)
    "tc_schedule": """
        episode INTEGER, horizon_first_round INTEGER, first_round INTEGER, start_utc_s BIGINT,
        tou_buy_price DOUBLE, congestion DOUBLE, price DOUBLE, sell_price DOUBLE,
        predicted_transformer_loading_pct DOUBLE, predicted_voltage_deviation_pu DOUBLE, implied_price DOUBLE""",
    # written by the TC market module at each episode's end: every household's congestion payment (its imports
    # times the TC price above the tariff, $) and what tc.refund returns to it
    "tc_congestion": """
        episode INTEGER, participant INTEGER, imports_wh BIGINT, congestion_paid_usd DOUBLE, refund_usd DOUBLE""",
    "powerflow_episodes": """
        episode INTEGER, feeder VARCHAR, solved_rounds INTEGER, not_converged INTEGER, min_voltage_pu DOUBLE,
        max_voltage_pu DOUBLE, max_transformer_loading_pct DOUBLE, max_line_loading_pct DOUBLE, losses_kwh DOUBLE,
        hours_over_limit DOUBLE, violations BIGINT, solve_s DOUBLE""",
}

# INTEGER energy columns the recorder widens to BIGINT if a value does not fit (see the module doc)
WIDENABLE: dict[str, list[str]] = {
    "orders": ["quantity_wh"],
    "settlements": ["quantity_wh"],
    "delivery_rows": ["load_wh", "generation_wh", "battery_charge_wh", "battery_discharge_wh", "bought_wh", "sold_wh",
                      "grid_import_wh", "grid_export_wh", "grid_only_net_wh"],
}

# columns of ``deliveries`` that are definitions, not records. Each is the delivery rule of
# :func:`trexsim.engine.delivery._settle` (or the grid-only bill) applied to stored columns and the
# round's grid prices (table ``rounds``), evaluated in doubles exactly as the kernel does, so the
# values are identical to the ones the market computed; storing them would cost ingest time and disk.
# ``d``: delivery_rows, ``r``: rounds. The imbalance with the grid is grid_import_wh - grid_export_wh.
DERIVED: dict[str, str] = {
    "net_meter_wh": "CAST(d.load_wh AS BIGINT) - d.generation_wh + d.battery_charge_wh - d.battery_discharge_wh",
    # sold energy not delivered, bought from the grid instead (paper rule 8)
    "shortfall_wh": "least(d.sold_wh, d.grid_import_wh)",
    # bought energy not used, exported to the grid (paper rule 9)
    "unused_wh": "least(d.bought_wh, d.grid_export_wh)",
    # shortfall there would have been without the battery's discharge, less the one there is
    "battery_cover_wh": ("least(d.sold_wh, greatest(CAST(d.grid_import_wh AS BIGINT) - d.grid_export_wh + d.battery_discharge_wh, 0))"
                         " - least(d.sold_wh, d.grid_import_wh)"),
    "grid_cost_usd": "d.grid_import_wh * (r.grid_buy_price / 1000.0)",
    "grid_revenue_usd": "d.grid_export_wh * (r.grid_sell_price / 1000.0)",
    "grid_only_cost_usd": ("CASE WHEN d.grid_only_net_wh > 0 THEN d.grid_only_net_wh * (r.grid_buy_price / 1000.0) "
                           "ELSE d.grid_only_net_wh * (r.grid_sell_price / 1000.0) END"),
}
_DELIVERY_COLUMNS = ", ".join(f"{expr} AS {name}" for name, expr in DERIVED.items() if name != "net_meter_wh")

# views, created in this order: ``deliveries`` first (the others read it), then conveniences
VIEWS: dict[str, str] = {
    "deliveries": f"""SELECT episode, round, participant, load_wh, generation_wh, battery_charge_wh,
        battery_discharge_wh, battery_stored_wh, net_meter_wh, bought_wh, sold_wh, grid_import_wh, grid_export_wh,
        shortfall_wh, unused_wh, battery_cover_wh, market_cost_usd, market_revenue_usd, grid_cost_usd,
        grid_revenue_usd, market_cost_usd - market_revenue_usd + grid_cost_usd - grid_revenue_usd AS net_cost_usd,
        grid_only_cost_usd, grid_only_net_wh
        FROM (SELECT d.*, {DERIVED["net_meter_wh"]} AS net_meter_wh, {_DELIVERY_COLUMNS}
              FROM delivery_rows d LEFT JOIN rounds r ON r.episode = d.episode AND r.round = d.round)""",
    "meter_readings": """SELECT d.episode, d.round, p.participant_id, d.load_wh, d.generation_wh,
        d.battery_charge_wh, d.battery_discharge_wh, d.net_meter_wh
        FROM deliveries d JOIN participants p USING (participant)""",
    "grid_trades": """SELECT d.episode, d.round, p.participant_id, d.grid_import_wh, d.grid_export_wh,
        d.grid_cost_usd, d.grid_revenue_usd FROM deliveries d JOIN participants p USING (participant)
        WHERE d.grid_import_wh > 0 OR d.grid_export_wh > 0""",
    "battery_states": """SELECT d.episode, d.round, p.participant_id, d.battery_charge_wh, d.battery_discharge_wh,
        d.battery_stored_wh, d.battery_stored_wh / p.battery_capacity_wh AS soc
        FROM deliveries d JOIN participants p USING (participant) WHERE p.battery_capacity_wh > 0""",
    "profits": """SELECT d.episode, d.round, p.participant_id, d.market_cost_usd, d.market_revenue_usd,
        d.grid_cost_usd, d.grid_revenue_usd, d.net_cost_usd, d.grid_only_cost_usd,
        -d.net_cost_usd AS profit_usd FROM deliveries d JOIN participants p USING (participant)""",
    "trades": """SELECT s.*, b.participant_id AS buyer_id, a.participant_id AS seller_id,
        r.start_utc_s AS delivery_start_utc_s
        FROM settlements s JOIN participants b ON b.participant = s.buyer
        JOIN participants a ON a.participant = s.seller
        JOIN rounds r ON r.episode = s.episode AND r.round = s.delivery_round""",
}

# what a user reads and ``trexsim export`` writes: every stored table, with ``deliveries`` in place of its rows
RECORDS: list[str] = ["runs", "participants", "rounds", "orders", "rejections", "settlements", "deliveries"]
