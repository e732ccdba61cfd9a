"""Data-quality asset checks on the raw tables (DESIGN §3, group ``ingestion``).

Integrity checks block downstream features in the same run (ERROR severity);
freshness only warns, because old-but-valid data is still worth analysing. The rules
run in one step (``raw_data_checks``); each is a plain function of a connection.
"""

import dagster as dg
import duckdb

from channel_assets.executor import priority
from resources.data_source import ChannelDataSource
from resources.warehouse import DuckDBWarehouse
from warehouse import quality
from warehouse.schema import RAW_TABLES

FRESHNESS_HOURS = 36.0


def _result(rule: quality.RuleResult, asset: str, name: str) -> dg.AssetCheckResult:
    """A blocking result; when it fails it names the offending rows and the fix."""
    metadata = {
        "violations": dg.MetadataValue.int(rule.violations),
        "examples": dg.MetadataValue.json(rule.examples),
    }
    description = None
    if not rule.passed:
        metadata |= {
            "offending_rows": dg.MetadataValue.json(rule.examples),
            "list_all_rows": dg.MetadataValue.md(f"```sql\n{rule.query}\n```"),
            "fix": dg.MetadataValue.text(rule.fix),
        }
        description = (
            f"{rule.violations} offending row(s), the first {len(rule.examples)} in "
            f"offending_rows. Fix: {rule.fix}"
        )
    return dg.AssetCheckResult(
        asset_key=asset,
        check_name=name,
        passed=rule.passed,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata=metadata,
        description=description,
    )


def counters_non_negative(conn: duckdb.DuckDBPyConnection) -> dg.AssetCheckResult:
    """views, forwards, replies and reactions are never negative."""
    return _result(quality.negative_counters(conn), "raw_post_snapshots", "counters_non_negative")


def counters_non_decreasing(conn: duckdb.DuckDBPyConnection) -> dg.AssetCheckResult:
    """Cumulative counters never go down between consecutive snapshots of a post."""
    return _result(quality.decreasing_counters(conn), "raw_post_snapshots", "counters_non_decreasing")


def no_snapshot_before_post(conn: duckdb.DuckDBPyConnection) -> dg.AssetCheckResult:
    """A post cannot be observed before it was published."""
    return _result(quality.snapshots_before_post(conn), "raw_post_snapshots", "no_snapshot_before_post")


def snapshots_fresh(conn: duckdb.DuckDBPyConnection, as_of) -> dg.AssetCheckResult:
    """The newest snapshot is at most 36 h older than the source's clock (warning only)."""
    lag = quality.staleness_hours(conn, as_of)
    latest = quality.latest_observation(conn)
    return dg.AssetCheckResult(
        asset_key="raw_post_snapshots",
        check_name="snapshots_fresh",
        passed=lag is not None and lag <= FRESHNESS_HOURS,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "latest_observed_at": dg.MetadataValue.text(str(latest)),
            "source_clock": dg.MetadataValue.text(str(as_of)),
            "staleness_hours": dg.MetadataValue.float(float(lag) if lag is not None else -1.0),
            "threshold_hours": dg.MetadataValue.float(FRESHNESS_HOURS),
        },
    )


def _spec(asset: str, name: str, description: str, blocking: bool = True, **kw) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(name, asset=asset, blocking=blocking, description=description, **kw)


INGESTION_CHECK_SPECS = [
    *(
        _spec(
            f"raw_{table}",
            "keys_unique",
            f"No duplicate ({', '.join(RAW_TABLES[table][1])}) in raw.{table}.",
        )
        for table in RAW_TABLES
    ),
    _spec("raw_post_snapshots", "counters_non_negative", counters_non_negative.__doc__),
    _spec("raw_post_snapshots", "counters_non_decreasing", counters_non_decreasing.__doc__),
    _spec(
        "raw_post_snapshots",
        "no_snapshot_before_post",
        no_snapshot_before_post.__doc__,
        additional_deps=["raw_posts"],
    ),
    _spec("raw_post_snapshots", "snapshots_fresh", snapshots_fresh.__doc__, blocking=False),
]


# one step for every rule: each step is a process, and the rules together take a second
@dg.multi_asset_check(
    specs=INGESTION_CHECK_SPECS, name="raw_data_checks", op_tags=priority("raw_data_checks")
)
def raw_data_checks(warehouse: DuckDBWarehouse, data_source: ChannelDataSource):
    as_of = data_source.as_of()
    with warehouse.connect(read_only=True) as conn:
        for table in RAW_TABLES:
            yield _result(quality.duplicate_keys(conn, table), f"raw_{table}", "keys_unique")
        yield counters_non_negative(conn)
        yield counters_non_decreasing(conn)
        yield no_snapshot_before_post(conn)
        yield snapshots_fresh(conn, as_of)


ingestion_checks = [raw_data_checks]
