"""Data-quality asset checks on the raw tables (DESIGN §3, group ``ingestion``).

Integrity checks block downstream features in the same run (ERROR severity);
freshness only warns, because old-but-valid data is still worth analysing.
"""

import dagster as dg

from resources.data_source import ChannelDataSource
from resources.warehouse import DuckDBWarehouse
from warehouse import quality
from warehouse.schema import RAW_TABLES

FRESHNESS_HOURS = 36.0


def _result(rule: quality.RuleResult, **extra) -> dg.AssetCheckResult:
    """A blocking result; when it fails it names the offending rows and the fix."""
    metadata = {
        "violations": dg.MetadataValue.int(rule.violations),
        "examples": dg.MetadataValue.json(rule.examples),
        **extra,
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
        passed=rule.passed,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata=metadata,
        description=description,
    )


def _unique_keys_check(table: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=f"raw_{table}",
        name="keys_unique",
        blocking=True,
        description=f"No duplicate ({', '.join(RAW_TABLES[table][1])}) in raw.{table}.",
    )
    def _check(warehouse: DuckDBWarehouse) -> dg.AssetCheckResult:
        with warehouse.connect(read_only=True) as conn:
            return _result(quality.duplicate_keys(conn, table))

    return _check


unique_key_checks = [_unique_keys_check(table) for table in RAW_TABLES]


@dg.asset_check(asset="raw_post_snapshots", blocking=True)
def counters_non_negative(warehouse: DuckDBWarehouse) -> dg.AssetCheckResult:
    """views, forwards, replies and reactions are never negative."""
    with warehouse.connect(read_only=True) as conn:
        return _result(quality.negative_counters(conn))


@dg.asset_check(asset="raw_post_snapshots", blocking=True)
def counters_non_decreasing(warehouse: DuckDBWarehouse) -> dg.AssetCheckResult:
    """Cumulative counters never go down between consecutive snapshots of a post."""
    with warehouse.connect(read_only=True) as conn:
        return _result(quality.decreasing_counters(conn))


@dg.asset_check(asset="raw_post_snapshots", blocking=True, additional_deps=["raw_posts"])
def no_snapshot_before_post(warehouse: DuckDBWarehouse) -> dg.AssetCheckResult:
    """A post cannot be observed before it was published."""
    with warehouse.connect(read_only=True) as conn:
        return _result(quality.snapshots_before_post(conn))


@dg.asset_check(asset="raw_post_snapshots")
def snapshots_fresh(warehouse: DuckDBWarehouse, data_source: ChannelDataSource) -> dg.AssetCheckResult:
    """The newest snapshot is at most 36 h older than the source's clock (warning only)."""
    as_of = data_source.as_of()
    with warehouse.connect(read_only=True) as conn:
        lag = quality.staleness_hours(conn, as_of)
        latest = quality.latest_observation(conn)
    return dg.AssetCheckResult(
        passed=lag is not None and lag <= FRESHNESS_HOURS,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "latest_observed_at": dg.MetadataValue.text(str(latest)),
            "source_clock": dg.MetadataValue.text(str(as_of)),
            "staleness_hours": dg.MetadataValue.float(float(lag) if lag is not None else -1.0),
            "threshold_hours": dg.MetadataValue.float(FRESHNESS_HOURS),
        },
    )


ingestion_checks = [
    *unique_key_checks,
    counters_non_negative,
    counters_non_decreasing,
    no_snapshot_before_post,
    snapshots_fresh,
]
