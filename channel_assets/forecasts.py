"""Group ``forecasts``: what analysts query, scored from ``champion`` versions only.

A version that failed its gates never holds the ``champion`` alias, so it can never
reach these tables — in this run or any later one. Each table is also published as
Parquet (``warehouse.publish``) so readers never wait on a writing run.

The champions are looked up before the warehouse is touched: when the registry cannot
be read (``RegistryUnavailable``, e.g. a locked SQLite registry) the step retries and
then fails, and the table and its Parquet copy stay as they were — an outage is never
mistaken for "no champion" and scored from baselines over yesterday's forecasts.
"""

from datetime import UTC, datetime

import dagster as dg

from channel_assets.metadata import image, served_by, table_metadata
from nn_models.champions import load_champion
from nn_models.forecasts import FORECASTS, get_scorer, pictures
from nn_models.registry import RegistryUnavailable
from resources.mlflow_tracking import MlflowTracking
from resources.warehouse import DuckDBWarehouse, PublishedTables
from warehouse.forecast_tables import write_forecast

# A registry outage (e.g. SQLite "database is locked") is usually over in seconds:
# retry the step, then fail it with the registry's error.
REGISTRY_RETRIES = 3
REGISTRY_RETRY_SECONDS = 20

FEATURE_INPUTS: dict[str, list[str]] = {
    "post_engagement_forecasts": ["post_trajectories", "post_features"],
    "channel_growth_forecasts": ["channel_daily_features"],
    "post_viral_scores": ["post_features", "post_text_embeddings"],
    "content_patterns": ["post_features", "post_text_embeddings"],
    "user_segments": ["user_behavior_features"],
    "posting_schedule_recommendations": ["post_features", "posting_slot_features"],
    "content_recommendations": [
        "post_features",
        "post_text_embeddings",
        "posting_slot_features",
        "posting_schedule_recommendations",
    ],
    "channel_insights": [
        "channel_metrics",
        "post_engagement_forecasts",
        "channel_growth_forecasts",
        "post_viral_scores",
        "user_segments",
        "posting_schedule_recommendations",
        "content_recommendations",
    ],
}


def _forecast_asset(table: str) -> dg.AssetsDefinition:
    _, needs = FORECASTS[table]

    @dg.asset(
        name=table,
        group_name="forecasts",
        deps=[f"{name}_model" for name in needs] + FEATURE_INPUTS[table],
        pool="duckdb",
        kinds={"duckdb", "pytorch"},
        description=f"forecasts.{table}, scored from the champion of: {', '.join(needs)}.",
        metadata={"dagster/table_name": f"forecasts.{table}"},
        automation_condition=dg.AutomationCondition.all_deps_blocking_checks_passed()
        & dg.AutomationCondition.eager(),
    )
    def _asset(
        context: dg.AssetExecutionContext,
        warehouse: DuckDBWarehouse,
        mlflow_tracking: MlflowTracking,
        published: PublishedTables,
    ) -> dg.MaterializeResult:
        try:
            champions = {name: load_champion(mlflow_tracking.tracking_uri, name) for name in needs}
        except RegistryUnavailable as exc:
            context.log.warning(f"forecasts.{table} left unchanged: {exc}")
            raise dg.RetryRequested(
                max_retries=REGISTRY_RETRIES, seconds_to_wait=REGISTRY_RETRY_SECONDS
            ) from exc
        scored_at = datetime.now(UTC).replace(tzinfo=None)
        with warehouse.connect() as conn:
            result = get_scorer(table)(conn, champions, scored_at)
            rows = write_forecast(conn, table, result.frame)
            path = published.publish(conn, "forecasts", table)
            meta = table_metadata(conn, f"forecasts.{table}")
            extra = pictures.history(conn, table)
        # drawn after the warehouse is closed: a picture needs no lock
        picture = pictures.png(table, result.frame, extra)
        context.log.info(f"forecasts.{table}: {rows} rows from {result.models or 'no champion'}")
        meta.update(
            {
                "champions": dg.MetadataValue.json(
                    {n: (f"v{m.version} ({m.backend})" if m else None) for n, m in champions.items()}
                ),
                "published_parquet": dg.MetadataValue.path(path),
                "served_by": dg.MetadataValue.text(served_by(result.frame)),
                **{f"note/{k}": dg.MetadataValue.text(v) for k, v in result.notes.items()},
            }
        )
        if picture is not None:
            meta["picture"] = image(table, picture, pictures.served_label(result.frame))
        return dg.MaterializeResult(metadata=meta)

    return _asset


forecast_assets = [_forecast_asset(table) for table in FORECASTS]
