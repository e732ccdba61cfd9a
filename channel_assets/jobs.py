"""Jobs: what a click, a sensor or a schedule materializes."""

from __future__ import annotations

import dagster as dg

ingestion_job = dg.define_asset_job(
    "ingestion_job",
    selection=dg.AssetSelection.groups("ingestion", "truth", "features"),
    description="Load raw data from the configured source and rebuild the feature tables.",
)

everything_job = dg.define_asset_job(
    "everything_job",
    selection=dg.AssetSelection.all(),
    description="Materialize the whole graph (what `make run` does).",
)
