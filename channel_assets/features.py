"""Group ``features``: DuckDB SQL feature tables and MiniLM text embeddings.

Each asset's key is the table name in schema ``features``; the SQL lives in
``warehouse/sql/<asset key>.sql``.
"""

import dagster as dg

from channel_assets.executor import priority
from channel_assets.metadata import column_schema, table_metadata
from resources.warehouse import DuckDBWarehouse, PublishedTables
from warehouse import embeddings, features

# what each feature table reads (drives lineage in the UI and automation)
FEATURE_DEPS: dict[str, list[str]] = {
    "post_trajectories": ["raw_posts", "raw_post_snapshots"],
    "post_features": ["raw_posts", "raw_post_snapshots", "raw_channel_daily"],
    "channel_daily_features": ["raw_channel_daily", "post_features"],
    "user_behavior_features": ["raw_interactions", "raw_posts"],
    "posting_slot_features": ["post_features"],
    "channel_metrics": ["raw_channels", "raw_channel_daily", "raw_posts", "post_features"],
    "trending_posts": ["post_features"],
}

# every feature table is also published as Parquet: the API and analysts read those
# while a run holds the warehouse file
PUBLISHED_FEATURES = features.FEATURE_TABLES

# A feature table is only worth rebuilding once its inputs changed and passed their
# blocking checks; new landing data flows through without anyone clicking.
FEATURE_AUTOMATION = dg.AutomationCondition.eager() & (
    dg.AutomationCondition.all_deps_blocking_checks_passed()
)


def _feature_asset(name: str) -> dg.AssetsDefinition:
    @dg.asset(
        name=name,
        group_name="features",
        deps=FEATURE_DEPS[name],
        pool="duckdb",
        kinds={"duckdb", "sql"},
        op_tags=priority(name),
        description=(features.sql_for(name).strip().splitlines() or [""])[0].lstrip("- ")
        or f"features.{name}",
        metadata={
            "dagster/column_schema": column_schema(features.TABLE_DESCRIPTIONS.get(name, {})),
            "dagster/table_name": f"features.{name}",
            "sql_file": f"warehouse/sql/{name}.sql",
        },
        automation_condition=FEATURE_AUTOMATION,
    )
    def _asset(context: dg.AssetExecutionContext, warehouse: DuckDBWarehouse, published: PublishedTables):
        with warehouse.connect() as conn:
            rows = features.build_feature_table(conn, name)
            context.log.info(f"features.{name}: {rows} rows")
            meta = table_metadata(conn, f"features.{name}")
            if name in PUBLISHED_FEATURES:
                meta["published_parquet"] = dg.MetadataValue.path(published.publish(conn, "features", name))
            return dg.MaterializeResult(metadata=meta)

    return _asset


feature_table_assets = [_feature_asset(name) for name in features.FEATURE_TABLES]


@dg.asset(
    group_name="features",
    deps=["raw_posts"],
    # not in the duckdb pool: it holds the file for two short moments (read what is
    # missing, write the vectors), not while MiniLM runs; the warehouse resource's lock
    # retry covers a writer that is busy then. The feature SQL runs meanwhile.
    kinds={"duckdb", "pytorch"},
    op_tags=priority("post_text_embeddings"),
    metadata={
        "dagster/column_schema": column_schema(embeddings.DESCRIPTIONS),
        "dagster/table_name": "features.post_text_embeddings",
    },
    automation_condition=FEATURE_AUTOMATION,
)
def post_text_embeddings(
    context: dg.AssetExecutionContext, warehouse: DuckDBWarehouse, published: PublishedTables
):
    """all-MiniLM-L6-v2 sentence embeddings of post texts, keyed by text hash (incremental).

    The same MiniLM pass fills the text models' token cache (``embeddings.embed_texts``),
    and no warehouse connection is held while MiniLM runs: read the missing texts,
    close, encode, reopen to write.
    """

    def progress(done: int, total: int) -> None:
        context.log.info(f"embedded {done}/{total} texts")

    with warehouse.connect() as conn:
        todo = embeddings.missing_texts(conn)
    rows = embeddings.embed_texts(todo, progress=progress)
    with warehouse.connect() as conn:
        added = embeddings.write_embeddings(conn, rows)
        meta = table_metadata(conn, "features.post_text_embeddings")
        meta["published_parquet"] = dg.MetadataValue.path(
            published.publish(conn, "features", "post_text_embeddings")
        )
    meta["texts_embedded_this_run"] = dg.MetadataValue.int(added)
    return dg.MaterializeResult(metadata=meta)


feature_assets = [*feature_table_assets, post_text_embeddings]
