"""The run database's schema, defined up front in one place. Batches are appended; the
schema is never altered at run time. Energies in whole Wh, prices in $/kWh, money in $.
Codes: side 'bid'/'ask'; pool 'non_dispatch'/'dispatch'."""

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
    "rounds": """
        episode INTEGER, round INTEGER, start_utc_s BIGINT, grid_buy_price DOUBLE, grid_sell_price DOUBLE,
        market_wh BIGINT, grid_import_wh BIGINT, grid_export_wh BIGINT, auctioneer_surplus_usd DOUBLE""",
    "orders": """
        episode INTEGER, round INTEGER, delivery_round INTEGER, order_id BIGINT, participant INTEGER,
        side order_side, pool energy_pool, price DOUBLE, quantity_wh BIGINT""",
    "rejections": """
        episode INTEGER, round INTEGER, delivery_round INTEGER, order_id BIGINT, participant BIGINT,
        side BIGINT, pool BIGINT, price DOUBLE, quantity_wh DOUBLE, reason VARCHAR""",
    "settlements": """
        episode INTEGER, round INTEGER, delivery_round INTEGER, pool energy_pool, buyer INTEGER, seller INTEGER,
        quantity_wh BIGINT, buyer_price DOUBLE, seller_price DOUBLE, bid_id BIGINT, ask_id BIGINT""",
    "deliveries": """
        episode INTEGER, round INTEGER, participant INTEGER,
        load_wh BIGINT, generation_wh BIGINT, battery_charge_wh BIGINT, battery_discharge_wh BIGINT,
        battery_stored_wh DOUBLE, net_meter_wh BIGINT, bought_wh BIGINT, sold_wh BIGINT,
        grid_import_wh BIGINT, grid_export_wh BIGINT, shortfall_wh BIGINT, unused_wh BIGINT,
        battery_cover_wh BIGINT, market_cost_usd DOUBLE, market_revenue_usd DOUBLE,
        grid_cost_usd DOUBLE, grid_revenue_usd DOUBLE, net_cost_usd DOUBLE, grid_only_cost_usd DOUBLE""",
}

# convenience views over the tables (names a user looks for)
VIEWS: dict[str, str] = {
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

DELIVERY_COLUMNS = [c.split()[0] for c in TABLES["deliveries"].replace("\n", " ").split(",") if c.strip()]
