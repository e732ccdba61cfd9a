"""One picture per forecast table, drawn from the frame the scorer wrote.

What a channel owner would look at first: growth fans, a weekday × hour schedule
heatmap, segment sizes and profiles, predicted vs observed engagement. Each title
says who served the rows (``source``: the champion model or the baseline and why),
so a picture never passes a baseline off as a model. Plain matplotlib, no Dagster:
the forecast assets embed these in their metadata and ``warehouse.exports`` writes
them per channel.

``history`` reads what some pictures compare against (observed outcomes) from the
warehouse; a table that is missing there only leaves that comparison out.
"""

from __future__ import annotations

import duckdb
import matplotlib
import numpy as np
import pandas as pd

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from nn_models import plots  # noqa: E402

COLORS = {"model": "tab:blue", "baseline": "tab:orange"}
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
PROFILE_COLUMNS = (
    "n_interactions",
    "n_channels",
    "active_days",
    "share_reaction",
    "share_reply",
    "share_forward",
    "median_delay_hours",
)


def served_label(frame: pd.DataFrame) -> str:
    """``model vN``, ``baseline (reason)`` or both with row counts, from ``source``."""
    if frame.empty:
        return "no rows"
    if "source" not in frame.columns:
        return "served by: unknown (no source column)"
    counts = frame["source"].astype(str).value_counts()
    labels = []
    for source in sorted(counts.index):
        rows = frame[frame["source"].astype(str) == source]
        if source == "model":
            versions = ", ".join(sorted(rows["model_version"].astype(str).unique()))
            text = f"model v{versions}"
        else:
            reasons = rows["fallback_reason"].dropna().astype(str).unique()
            reason = reasons[0] if len(reasons) else "no reason given"
            text = f"baseline ({reason[:70]}{'…' if len(reason) > 70 else ''})"
        labels.append(text if len(counts) == 1 else f"{text}: {counts[source]} rows")
    return "served by " + "; ".join(labels)


def _source_of(rows: pd.DataFrame) -> str:
    """The one source of a group of rows (``mixed`` when both served it)."""
    sources = rows["source"].astype(str).unique() if "source" in rows.columns else []
    return str(sources[0]) if len(sources) == 1 else "mixed"


def _frame(conn: duckdb.DuckDBPyConnection, sql: str, params: list) -> pd.DataFrame | None:
    try:
        return conn.execute(sql, params).fetchdf()
    except duckdb.CatalogException:
        return None


def history(
    conn: duckdb.DuckDBPyConnection, table: str, channel_id: int | None = None
) -> dict[str, pd.DataFrame]:
    """Observed outcomes a table's picture compares against (optionally for one channel)."""
    where = "" if channel_id is None else " AND channel_id = ?"
    params = [] if channel_id is None else [int(channel_id)]
    out: dict[str, pd.DataFrame | None] = {}
    if table == "posting_schedule_recommendations":
        out["slots"] = _frame(
            conn,
            f"""
            SELECT channel_id, weekday, hour, avg(view_percentile_48h) AS observed, count(*) AS posts
            FROM features.post_features WHERE view_percentile_48h IS NOT NULL{where}
            GROUP BY ALL""",
            params,
        )
    elif table == "post_engagement_forecasts":
        out["observed"] = _frame(
            conn,
            f"""
            SELECT channel_id, post_id, published_at, views_48h AS observed_views_48h
            FROM features.post_features WHERE views_48h IS NOT NULL{where}""",
            params,
        )
    elif table == "channel_growth_forecasts":
        out["daily"] = _frame(
            conn,
            f"""
            SELECT channel_id, day, subscribers FROM features.channel_daily_features
            WHERE subscribers IS NOT NULL{where} ORDER BY day""",
            params,
        )
    elif table == "user_segments" and channel_id is None:
        cols = ", ".join(PROFILE_COLUMNS)
        out["profiles"] = _frame(conn, f"SELECT user_id, {cols} FROM features.user_behavior_features", [])
    return {k: v for k, v in out.items() if v is not None}


def _growth(frame: pd.DataFrame, extra: dict, fig) -> None:
    last = frame.sort_values("horizon_days").groupby("channel_id").tail(1)
    largest = last.nlargest(4, "subscribers_p50")["channel_id"].tolist()
    daily = extra.get("daily")
    cols = 1 if len(largest) == 1 else 2
    n_rows = (len(largest) + cols - 1) // cols
    for i, channel in enumerate(largest):
        # one panel each: channels differ by orders of magnitude, a shared axis hides fans
        ax = fig.add_subplot(n_rows, cols, i + 1)
        rows = frame[frame["channel_id"] == channel].sort_values("forecast_date")
        color = COLORS.get(_source_of(rows), "tab:gray")
        if daily is not None:
            past = daily[daily["channel_id"] == channel].tail(60)
            ax.plot(past["day"], past["subscribers"], color="k", lw=1, label="observed")
        ax.plot(rows["forecast_date"], rows["subscribers_p50"], color=color, label="p50")
        ax.fill_between(
            rows["forecast_date"],
            rows["subscribers_p10"],
            rows["subscribers_p90"],
            color=color,
            alpha=0.3,
            label="p10–p90",
        )
        ax.set_title(f"channel {channel} ({_source_of(rows)})", fontsize=8)
        ax.tick_params(labelsize=6)
        ax.tick_params(axis="x", rotation=30)
        if i == 0:
            ax.legend(fontsize=6)
    fig.suptitle(f"growth forecast (subscribers), largest channels\n{served_label(frame)}", fontsize=8)


def top_slot_agreement(frame: pd.DataFrame, slots: pd.DataFrame) -> tuple[float, int]:
    """Share of channels whose recommended top slot is their best observed slot, and n."""
    top = frame[frame["rank"] == frame.groupby("channel_id")["rank"].transform("min")]
    top = top.drop_duplicates("channel_id")[["channel_id", "weekday", "hour"]]
    best = slots.sort_values(["observed", "posts"], ascending=False).drop_duplicates("channel_id")
    both = top.merge(best[["channel_id", "weekday", "hour"]], on="channel_id", suffixes=("", "_observed"))
    if both.empty:
        return float("nan"), 0
    agree = (both["weekday"] == both["weekday_observed"]) & (both["hour"] == both["hour_observed"])
    return float(agree.mean()), len(both)


def _schedule(frame: pd.DataFrame, extra: dict, fig) -> None:
    channel = frame["channel_id"].value_counts().index[0]
    rows = frame[frame["channel_id"] == channel]
    grid = np.full((7, 24), np.nan)
    grid[rows["weekday"].astype(int), rows["hour"].astype(int)] = rows["expected_engagement"]
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(grid, aspect="auto", cmap="viridis")
    fig.colorbar(image, ax=ax, label="expected engagement")
    ax.set_yticks(range(7), WEEKDAYS)
    ax.set_xticks(range(0, 24, 3))
    ax.set_xlabel("hour (UTC)")
    best = rows.nsmallest(1, "rank")
    ax.plot(best["hour"], best["weekday"], "r*", ms=12, label="top slot")
    ax.legend(fontsize=7, loc="upper right")
    note = ""
    if "slots" in extra:
        share, n = top_slot_agreement(frame, extra["slots"])
        if n:
            note = f"\ntop slot agrees with history for {share:.0%} of {n} channels"
    fig.suptitle(f"schedule, channel {channel} ({_source_of(rows)}){note}\n{served_label(frame)}", fontsize=8)


def _segments(frame: pd.DataFrame, extra: dict, fig) -> None:
    sizes = frame.groupby(["segment_id", "segment_label"]).size().reset_index(name="users")
    ax = fig.add_subplot(1, 2, 1)
    labels = [
        f"{s}: {str(lab)[:18]}" for s, lab in zip(sizes["segment_id"], sizes["segment_label"], strict=True)
    ]
    ax.barh(labels, sizes["users"], color=COLORS.get(_source_of(frame), "tab:gray"))
    ax.set_xlabel("users")
    ax.tick_params(axis="y", labelsize=7)
    ax2 = fig.add_subplot(1, 2, 2)
    profiles = extra.get("profiles")
    if profiles is not None and not profiles.empty:
        joined = frame[["user_id", "segment_id"]].merge(profiles, on="user_id")
        mean = joined.groupby("segment_id")[list(PROFILE_COLUMNS)].mean()
        spread = (mean - mean.min()) / (mean.max() - mean.min()).replace(0, 1)
        image = ax2.imshow(spread.to_numpy(dtype=float), aspect="auto", cmap="magma")
        ax2.set_xticks(range(len(PROFILE_COLUMNS)), PROFILE_COLUMNS, rotation=60, fontsize=6)
        ax2.set_yticks(range(len(mean)), [str(s) for s in mean.index])
        ax2.set_title("profile (scaled mean per segment)", fontsize=8)
        fig.colorbar(image, ax=ax2)
    else:
        ax2.hist(frame["distance"].dropna(), bins=30)
        ax2.set_xlabel("distance to segment centre")
    fig.suptitle(f"user segments\n{served_label(frame)}", fontsize=8)


def _engagement(frame: pd.DataFrame, extra: dict, fig) -> None:
    ax = fig.add_subplot(1, 1, 1)
    observed = extra.get("observed")
    shown = 0
    if observed is not None and not observed.empty:
        keys = ["channel_id", "post_id"]
        # published_at from the observed side (the forecast frame may carry it too)
        joined = frame.drop(columns=["published_at"], errors="ignore").merge(
            observed[[*keys, "published_at", "observed_views_48h"]], on=keys
        )
        joined = joined.sort_values("published_at").tail(300)
        for source, rows in joined.groupby(joined["source"].astype(str)):
            ax.scatter(
                rows["observed_views_48h"].clip(lower=1),
                rows["predicted_views_48h"].clip(lower=1),
                s=6,
                alpha=0.6,
                color=COLORS.get(source, "tab:gray"),
                label=source,
            )
        shown = len(joined)
        if shown:
            lo = float(max(1.0, joined[["observed_views_48h", "predicted_views_48h"]].min().min()))
            hi = float(joined[["observed_views_48h", "predicted_views_48h"]].max().max())
            ax.plot([lo, hi], [lo, hi], "k:", lw=0.8)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("observed views at 48 h")
            ax.set_ylabel("predicted views at 48 h")
            ax.legend(fontsize=7)
    if not shown:
        # nothing observed yet for these posts: show what was predicted
        for source, rows in frame.groupby(frame["source"].astype(str)):
            ax.hist(
                rows["engagement_score"].dropna(),
                bins=20,
                alpha=0.6,
                color=COLORS.get(source, "tab:gray"),
                label=source,
            )
        ax.set_xlabel("engagement score (no observed 48 h views yet)")
        ax.legend(fontsize=7)
    fig.suptitle(
        f"engagement: predicted vs observed, latest {shown} scored posts\n{served_label(frame)}", fontsize=8
    )


def _histogram(column: str, title: str):
    def draw(frame: pd.DataFrame, extra: dict, fig) -> None:
        ax = fig.add_subplot(1, 1, 1)
        for source, rows in frame.groupby(frame["source"].astype(str)):
            ax.hist(
                rows[column].dropna().astype(float),
                bins=20,
                alpha=0.6,
                color=COLORS.get(source, "tab:gray"),
                label=source,
            )
        ax.set_xlabel(column)
        ax.set_ylabel("rows")
        ax.legend(fontsize=7)
        fig.suptitle(f"{title}\n{served_label(frame)}", fontsize=8)

    return draw


def _patterns(frame: pd.DataFrame, extra: dict, fig) -> None:
    ax = fig.add_subplot(1, 1, 1)
    top = frame.assign(size=frame["effect"].abs()).nlargest(12, "size").iloc[::-1]
    labels = [f"{str(p)[:28]} ({k})" for p, k in zip(top["pattern"], top["kind"], strict=True)]
    colors = [COLORS.get(str(s), "tab:gray") for s in top["source"]]
    ax.barh(labels, top["effect"], color=colors)
    ax.axvline(0, color="k", lw=0.8)
    ax.tick_params(axis="y", labelsize=6)
    ax.set_xlabel("effect")
    fig.suptitle(f"strongest content patterns\n{served_label(frame)}", fontsize=8)


def _recommendations(frame: pd.DataFrame, extra: dict, fig) -> None:
    ax = fig.add_subplot(1, 1, 1)
    by_rank = frame.groupby("rank")["expected_lift"].agg(["mean", "min", "max"])
    ax.bar(by_rank.index.astype(int), by_rank["mean"], color=COLORS.get(_source_of(frame), "tab:gray"))
    ax.errorbar(
        by_rank.index.astype(int),
        by_rank["mean"],
        yerr=[by_rank["mean"] - by_rank["min"], by_rank["max"] - by_rank["mean"]],
        fmt="none",
        ecolor="k",
        lw=0.8,
    )
    ax.set_xlabel("recommendation rank")
    ax.set_ylabel("expected lift (mean, range over channels)")
    fig.suptitle(f"content recommendations\n{served_label(frame)}", fontsize=8)


DRAW = {
    "channel_growth_forecasts": _growth,
    "posting_schedule_recommendations": _schedule,
    "user_segments": _segments,
    "post_engagement_forecasts": _engagement,
    "post_viral_scores": _histogram("viral_probability", "viral probability of scored posts"),
    "content_patterns": _patterns,
    "content_recommendations": _recommendations,
    "channel_insights": _histogram("confidence", "confidence of channel insights"),
}


def figure(table: str, frame: pd.DataFrame, extra: dict[str, pd.DataFrame] | None = None):
    """The table's picture as a matplotlib figure, or None when the frame has no rows."""
    if frame is None or frame.empty:
        return None
    fig = plt.figure(figsize=(7, 4))
    try:
        DRAW[table](frame, extra or {}, fig)
        fig.tight_layout()
    except BaseException:
        plt.close(fig)
        raise
    return fig


def png(
    table: str, frame: pd.DataFrame, extra: dict[str, pd.DataFrame] | None = None, dpi: int = plots.INLINE_DPI
) -> bytes | None:
    """The table's picture as small PNG bytes (None without rows)."""
    fig = figure(table, frame, extra)
    if fig is None:
        return None
    try:
        return plots.png_bytes(fig, dpi=dpi)
    finally:
        plt.close(fig)
