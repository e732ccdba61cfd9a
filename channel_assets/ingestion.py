"""Group ``ingestion``: raw tables (and the synthetic ground truth) from the data source."""

import dagster as dg

from channel_assets.metadata import column_schema, table_metadata
from resources.data_source import ChannelDataSource, SourceLoad
from resources.telegram_collector import TelegramCollector
from resources.warehouse import DuckDBWarehouse, PublishedTables
from warehouse.schema import RAW_DESCRIPTIONS, RAW_TABLES

TRUTH_TABLES = ("channels", "slot_effects", "topics", "posts", "users")
PUBLISHED_RAW = ("channels", "posts", "interactions")  # what the API reads besides features

RAW_SPECS = [
    dg.AssetSpec(
        f"raw_{table}",
        group_name="ingestion",
        description=f"raw.{table}: {', '.join(RAW_TABLES[table][0])} (key: "
        f"{', '.join(RAW_TABLES[table][1])}).",
        metadata={
            "dagster/column_schema": column_schema(RAW_DESCRIPTIONS[table], RAW_TABLES[table][0]),
            "dagster/table_name": f"raw.{table}",
        },
        kinds={"duckdb"},
    )
    for table in RAW_TABLES
]
TRUTH_SPECS = [
    dg.AssetSpec(
        f"truth_{table}",
        group_name="truth",
        description=f"truth.{table}: ground truth of the synthetic world, for evaluation only "
        "(empty for real sources).",
        metadata={"dagster/table_name": f"truth.{table}"},
        kinds={"duckdb"},
    )
    for table in TRUTH_TABLES
]


@dg.multi_asset(specs=RAW_SPECS + TRUTH_SPECS, pool="duckdb")
def raw_tables(
    context: dg.AssetExecutionContext,
    warehouse: DuckDBWarehouse,
    data_source: ChannelDataSource,
    telegram: TelegramCollector,
    published: PublishedTables,
):
    """Load every raw table from the configured source as one idempotent upsert transaction."""
    context.log.info(f"loading source={data_source.source} size={data_source.size}")
    collected = None
    if data_source.source == "telegram":
        # network first, warehouse after: DuckDB's single writer slot is not held
        # through Telegram's rate-limit waits
        collected = telegram.collect(warehouse)
        if collected.errors and len(collected.errors) == len(telegram.channels):
            raise dg.Failure(f"every channel failed: {collected.errors}")
    with warehouse.connect() as conn:
        if collected is not None:
            load = SourceLoad(source="telegram", as_of=data_source.as_of(), details=collected.as_metadata())
        else:
            load = data_source.load(conn)
        for table in RAW_TABLES:
            name = f"raw.{table}"
            meta = table_metadata(conn, name)
            meta["source"] = dg.MetadataValue.text(load.source)
            meta["rows_in_this_load"] = dg.MetadataValue.int(load.rows_loaded.get(name, 0))
            if load.source in ("landing", "telegram"):
                meta["rows_quarantined"] = dg.MetadataValue.int(load.rows_quarantined.get(name, 0))
                meta["landing_report"] = dg.MetadataValue.json(load.details)
            if name in load.notes:
                meta["note"] = dg.MetadataValue.text(load.notes[name])
            if table in PUBLISHED_RAW:
                meta["published_parquet"] = dg.MetadataValue.path(published.publish(conn, "raw", table))
            yield dg.MaterializeResult(asset_key=f"raw_{table}", metadata=meta)
        for table in TRUTH_TABLES:
            name = f"truth.{table}"
            meta = table_metadata(conn, name)
            if load.source != "synthetic":
                meta["note"] = dg.MetadataValue.text("ground truth exists only for the synthetic source")
            yield dg.MaterializeResult(asset_key=f"truth_{table}", metadata=meta)
