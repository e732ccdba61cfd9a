"""The Dagster graph end to end on tiny data: assets, checks, idempotence, definitions."""

from __future__ import annotations

import dagster as dg
import duckdb

from channel_assets.definitions import build_definitions, build_resources
from channel_assets.features import feature_assets
from channel_assets.ingestion import raw_tables
from channel_assets.ingestion_checks import INGESTION_CHECK_SPECS, ingestion_checks

DATA_ASSETS = [raw_tables, *feature_assets, *ingestion_checks]


def _counts(path) -> dict[str, int]:
    conn = duckdb.connect(str(path), read_only=True)
    tables = conn.execute(
        "SELECT schema_name || '.' || table_name FROM duckdb_tables() "
        "WHERE schema_name IN ('raw', 'truth', 'features')"
    ).fetchall()
    counts = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0] for (t,) in tables}
    conn.close()
    return counts


def test_definitions_load_with_every_group(tiny_settings):
    defs = build_definitions(tiny_settings)
    graph = defs.resolve_asset_graph()
    groups = {graph.get(key).group_name for key in graph.get_all_asset_keys()}
    assert {"ingestion", "truth", "features", "models"} <= groups
    assert defs.resolve_sensor_def("landing_sensor") is not None
    assert defs.resolve_job_def("everything_job") is not None


def test_ingestion_and_features_materialize_and_rerun_changes_nothing(tiny_settings):
    resources = build_resources(tiny_settings)
    result = dg.materialize(DATA_ASSETS, resources=resources)
    assert result.success
    checks = result.get_asset_check_evaluations()
    assert len(checks) == len(INGESTION_CHECK_SPECS)
    assert all(c.passed for c in checks), [(c.check_name, c.metadata) for c in checks if not c.passed]
    first = _counts(tiny_settings.warehouse_path)
    for table in (
        "raw.channels",
        "raw.posts",
        "raw.post_snapshots",
        "raw.channel_daily",
        "raw.interactions",
        "truth.channels",
        "truth.users",
        "features.post_features",
        "features.channel_metrics",
        "features.post_text_embeddings",
    ):
        assert first[table] > 0, table
    raw_meta = result.asset_materializations_for_node("raw_tables")
    assert any("dagster/row_count" in m.metadata for m in raw_meta)

    again = dg.materialize(DATA_ASSETS, resources=resources)
    assert again.success
    assert _counts(tiny_settings.warehouse_path) == first
    embeds = [m for m in again.asset_materializations_for_node("post_text_embeddings")]
    assert embeds[0].metadata["texts_embedded_this_run"].value == 0


def test_no_model_or_forecast_depends_on_ground_truth(tiny_settings):
    """Real data has no truth.* tables: no model or forecast may need one, even upstream."""
    graph = build_definitions(tiny_settings).resolve_asset_graph()
    truth = {k for k in graph.get_all_asset_keys() if graph.get(k).group_name == "truth"}
    assert truth, "the synthetic source still writes its truth tables (as an extra report)"
    for key in graph.get_all_asset_keys():
        if graph.get(key).group_name in ("models", "forecasts"):
            upstream = graph.upstream_key_iterator(key)
            assert not truth & set(upstream), key.to_user_string()
