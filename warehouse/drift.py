"""Feature drift between what the champion was trained on and what arrives now (Evidently).

Evidently's ``DataDriftPreset`` picks a test per column (K-S / chi² for small
samples, normed Wasserstein / Jensen-Shannon for large ones) and reports the share
of drifted columns; we keep its HTML report and turn its numbers into a decision.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import duckdb
import pandas as pd

os.environ.setdefault("DO_NOT_TRACK", "1")  # Evidently telemetry off: no network at run time

# Post-level inputs of the models, as early-life features (known 3 h after publishing).
FEATURES_SQL = """
SELECT published_at,
       ln(1 + views_1h) AS log_views_1h,
       ln(1 + views_3h) AS log_views_3h,
       reach_3h,
       forwards_3h / nullif(views_3h, 0) AS forward_rate_3h,
       reactions_3h / nullif(views_3h, 0) AS reaction_rate_3h,
       ln(1 + text_length) AS log_text_length,
       hour::DOUBLE AS hour,
       media_type
FROM features.post_features
WHERE views_3h IS NOT NULL
"""
NUMERIC = [
    "log_views_1h",
    "log_views_3h",
    "reach_3h",
    "forward_rate_3h",
    "reaction_rate_3h",
    "log_text_length",
    "hour",
]
CATEGORICAL = ["media_type"]


@dataclass
class DriftResult:
    dataset_drift: bool
    drifted_share: float
    drift_share_threshold: float
    columns: dict[str, dict] = field(default_factory=dict)
    reference_rows: int = 0
    current_rows: int = 0
    windows: dict[str, str] = field(default_factory=dict)
    html: str = ""

    def summary(self) -> dict:
        return {
            "dataset_drift": self.dataset_drift,
            "drifted_share": round(self.drifted_share, 4),
            "drift_share_threshold": self.drift_share_threshold,
            "reference_rows": self.reference_rows,
            "current_rows": self.current_rows,
            **self.windows,
        }


def drift_windows(
    conn: duckdb.DuckDBPyConnection, reference_until: datetime | None, recent_days: int = 14
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, str]]:
    """Reference = up to 90 days before the champion's training cutoff; current = last days."""
    frame = conn.execute(FEATURES_SQL).fetchdf()
    if frame.empty:
        return frame, frame, {}
    latest = frame["published_at"].max()
    current_from = latest - timedelta(days=recent_days)
    until = min(reference_until or current_from, current_from)
    since = until - timedelta(days=90)
    ref = frame[(frame["published_at"] >= since) & (frame["published_at"] < until)]
    cur = frame[frame["published_at"] >= current_from]
    windows = {
        "reference_from": str(since),
        "reference_until": str(until),
        "current_from": str(current_from),
        "current_until": str(latest),
    }
    return ref.drop(columns="published_at"), cur.drop(columns="published_at"), windows


def _column_drift(metric_name: str, value: float) -> tuple[str, dict] | None:
    match = re.match(r"ValueDrift\(column=(.+?),method=(.+?),threshold=([0-9.eE+-]+)\)", metric_name)
    if not match:
        return None
    column, method, threshold = match.group(1), match.group(2), float(match.group(3))
    p_value = "p_value" in method or "test" in method.lower()
    drifted = value < threshold if p_value else value >= threshold
    return column, {"method": method, "score": float(value), "threshold": threshold, "drifted": bool(drifted)}


def detect_drift(reference: pd.DataFrame, current: pd.DataFrame, drift_share: float = 0.5) -> DriftResult:
    """Run Evidently's data-drift preset; dataset drift when ≥ ``drift_share`` columns drift."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(numerical_columns=NUMERIC, categorical_columns=CATEGORICAL)
    snapshot = Report([DataDriftPreset(drift_share=drift_share)]).run(
        Dataset.from_pandas(current, data_definition=definition),
        Dataset.from_pandas(reference, data_definition=definition),
    )
    result = DriftResult(False, 0.0, drift_share, reference_rows=len(reference), current_rows=len(current))
    for metric in snapshot.dict()["metrics"]:
        name, value = metric["metric_name"], metric["value"]
        if name.startswith("DriftedColumnsCount"):
            result.drifted_share = float(value["share"])
        elif (parsed := _column_drift(name, value)) is not None:
            result.columns[parsed[0]] = parsed[1]
    result.dataset_drift = result.drifted_share >= drift_share
    result.html = snapshot.get_html_str(as_iframe=False)
    return result
