"""Where raw data comes from: the embedded synthetic world or a landing folder.

The resource only decides *which* source and *with what settings*; the work is in
``warehouse.synthetic`` and ``warehouse.landing`` so it runs without Dagster too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import dagster as dg
import duckdb

from warehouse import desktop_export, landing, synthetic
from warehouse.schema import RAW_TABLES
from warehouse.upsert import table_count, upsert_frame


@dataclass
class SourceLoad:
    """What one load did, per table, for asset metadata."""

    source: str
    as_of: datetime
    rows_loaded: dict[str, int] = field(default_factory=dict)
    rows_quarantined: dict[str, int] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    details: dict = field(default_factory=dict)


EXPORT_TABLES = ("channels", "posts", "post_snapshots")  # what a Desktop export can fill


class ChannelDataSource(dg.ConfigurableResource):
    """``synthetic`` (seeded generator, writes ``truth.*`` too), ``landing`` (user files and
    Telegram Desktop exports) or ``telegram`` (live collector, see ``TelegramCollector``)."""

    source: str = "synthetic"
    size: str = "demo"
    seed: int = 42
    landing_dir: str = "data/landing"

    def synthetic_config(self) -> synthetic.SyntheticConfig:
        return synthetic.config_for(self.size, seed=self.seed)

    def as_of(self) -> datetime:
        """The source's clock: the synthetic world's end, or now for real data (naive UTC)."""
        if self.source == "synthetic":
            return self.synthetic_config().end
        return datetime.now(UTC).replace(tzinfo=None)

    def load(self, conn: duckdb.DuckDBPyConnection) -> SourceLoad:
        """Load every raw table in one transaction; a failure leaves the warehouse unchanged."""
        if self.source == "synthetic":
            return self._load_synthetic(conn)
        if self.source == "landing":
            return self._load_landing(conn)
        if self.source == "telegram":
            raise ValueError(
                "the telegram source is collected by the TelegramCollector resource "
                "(raw_tables asset), not loaded from here"
            )
        raise ValueError(f"unknown source {self.source!r}: expected synthetic, landing or telegram")

    def _load_synthetic(self, conn: duckdb.DuckDBPyConnection) -> SourceLoad:
        world = synthetic.generate(self.synthetic_config())
        out = SourceLoad(source="synthetic", as_of=self.synthetic_config().end)
        conn.execute("BEGIN TRANSACTION")
        try:
            for name, frame in world.tables().items():
                upsert_frame(conn, name, frame)
                out.rows_loaded[name] = len(frame)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return out

    def _load_landing(self, conn: duckdb.DuckDBPyConnection) -> SourceLoad:
        # the clock bounds plausible times: more than a day after it is quarantined
        report = landing.load_landing(conn, self.landing_dir, clock=self.as_of())
        exports = [
            desktop_export.load_desktop_export(conn, path)
            for path in desktop_export.find_exports(self.landing_dir)
        ]
        out = SourceLoad(source="landing", as_of=self.as_of(), details=report.as_metadata())
        for table in RAW_TABLES:
            name = f"raw.{table}"
            loaded = report.tables.get(table)
            out.rows_loaded[name] = loaded.rows_loaded if loaded else 0
            out.rows_quarantined[name] = loaded.rows_quarantined if loaded else 0
            if table in report.missing_tables and not (exports and table in EXPORT_TABLES):
                out.notes[name] = (
                    f"no landing file for {table} in {self.landing_dir}; "
                    f"table holds {table_count(conn, name)} rows from earlier loads"
                )
        if exports:
            out.details["desktop_exports"] = [e.as_metadata() for e in exports]
            for e in exports:
                out.rows_loaded["raw.posts"] += e.posts_loaded
                out.rows_loaded["raw.post_snapshots"] += e.snapshots_loaded
                out.rows_quarantined["raw.posts"] += e.posts_quarantined + (e.file_rejected is not None)
                out.rows_quarantined["raw.post_snapshots"] += e.snapshots_quarantined
            out.notes["raw.post_snapshots"] = desktop_export.LIMITATIONS
        return out
