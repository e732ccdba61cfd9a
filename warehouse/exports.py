"""Per-channel exports for owners who want files: forecast CSVs and PNG charts.

Written under ``<data_dir>/exports/<channel_id>/``: one CSV per forecast table that
has rows for the channel, ``growth_forecast.png`` (subscriber history with the
p10–p90 forecast band) and ``engagement_by_hour.png`` (mean within-channel view
percentile and post count per UTC hour), and ``<table>.png`` for each forecast table
with rows for the channel: the picture its forecast asset shows
(``nn_models.forecasts.pictures``), which says whether the model or the baseline served it.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from nn_models.forecasts import pictures  # noqa: E402

CHANNEL_TABLES = (
    "post_engagement_forecasts",
    "channel_growth_forecasts",
    "post_viral_scores",
    "content_patterns",
    "posting_schedule_recommendations",
    "content_recommendations",
    "channel_insights",
)


def _frame(conn, sql: str, params: list):
    try:
        return conn.execute(sql, params).fetchdf()
    except duckdb.CatalogException:
        return None


def _growth_png(conn, channel_id: int, path: Path) -> bool:
    history = _frame(
        conn,
        "SELECT day, subscribers FROM features.channel_daily_features WHERE channel_id = ? ORDER BY day",
        [channel_id],
    )
    if history is None or history.empty:
        return False
    forecast = _frame(
        conn,
        "SELECT forecast_date, subscribers_p10, subscribers_p50, "
        "subscribers_p90 FROM forecasts.channel_growth_forecasts "
        "WHERE channel_id = ? ORDER BY horizon_days",
        [channel_id],
    )
    fig, ax = plt.subplots(figsize=(7, 3.5))
    recent = history.tail(90)
    ax.plot(recent["day"], recent["subscribers"], label="subscribers")
    if forecast is not None and not forecast.empty:
        ax.plot(forecast["forecast_date"], forecast["subscribers_p50"], label="forecast p50")
        ax.fill_between(
            forecast["forecast_date"],
            forecast["subscribers_p10"],
            forecast["subscribers_p90"],
            alpha=0.3,
            label="p10–p90",
        )
    else:
        ax.set_title("no growth forecast (no champion): history only", fontsize=9)
    ax.set_ylabel("subscribers")
    ax.legend(fontsize=8)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def _engagement_png(conn, channel_id: int, path: Path) -> bool:
    by_hour = _frame(
        conn,
        """
        SELECT hour, avg(view_percentile_48h) AS mean_percentile, count(*) AS posts
        FROM features.post_features WHERE channel_id = ? AND view_percentile_48h IS NOT NULL
        GROUP BY hour ORDER BY hour""",
        [channel_id],
    )
    if by_hour is None or by_hour.empty:
        return False
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.bar(by_hour["hour"], by_hour["mean_percentile"], color="tab:blue")
    ax.axhline(0.5, color="k", lw=0.8, ls=":")
    ax.set_xlabel("publish hour (UTC)")
    ax.set_ylabel("mean view percentile at 48 h")
    ax2 = ax.twinx()
    ax2.plot(by_hour["hour"], by_hour["posts"], "o-", color="tab:orange", ms=3)
    ax2.set_ylabel("posts")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def export_channel(conn: duckdb.DuckDBPyConnection, channel_id: int, root: Path) -> list[str]:
    """Write one channel's files; returns their paths."""
    folder = root / str(channel_id)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for table in CHANNEL_TABLES:
        frame = _frame(conn, f"SELECT * FROM forecasts.{table} WHERE channel_id = ?", [channel_id])
        if frame is not None and not frame.empty:
            path = folder / f"{table}.csv"
            frame.to_csv(path, index=False)
            written.append(str(path))
            # the forecast asset's picture, for this channel (says model or baseline)
            png = pictures.png(table, frame, pictures.history(conn, table, channel_id), dpi=100)
            if png is not None:
                path = folder / f"{table}.png"
                path.write_bytes(png)
                written.append(str(path))
    for name, draw in (("growth_forecast.png", _growth_png), ("engagement_by_hour.png", _engagement_png)):
        if draw(conn, channel_id, folder / name):
            written.append(str(folder / name))
    return written


def export_all(conn: duckdb.DuckDBPyConnection, root: Path) -> dict[int, list[str]]:
    channels = conn.execute("SELECT channel_id FROM features.channel_metrics ORDER BY 1").fetchall()
    return {int(c): export_channel(conn, int(c), root) for (c,) in channels}
