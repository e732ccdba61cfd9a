"""Materialization metadata shared by the assets: row counts, previews, column schemas."""


import dagster as dg
import duckdb


def column_schema(descriptions: dict[str, str], types: dict[str, str] | None = None) -> dg.TableSchema:
    """A Dagster table schema from column descriptions (shown in the asset's Overview)."""
    types = types or {}
    return dg.TableSchema(
        columns=[
            dg.TableColumn(name=name, type=types.get(name, ""), description=desc)
            for name, desc in descriptions.items()
        ]
    )


def _markdown(frame) -> str:
    if frame.empty:
        return "_(no rows)_"
    cols = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in frame.astype(str).itertuples(index=False):
        lines.append("| " + " | ".join(v[:60].replace("|", "\\|") for v in row) + " |")
    return "\n".join(lines)


def table_metadata(conn: duckdb.DuckDBPyConnection, table: str, preview_rows: int = 5) -> dict:
    """Row count and a preview of ``schema.table`` for the materialization event."""
    rows = conn.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]
    preview = conn.execute(f"SELECT * FROM {table} LIMIT {int(preview_rows)}").fetchdf()
    return {
        "table": dg.MetadataValue.text(table),
        "dagster/row_count": dg.MetadataValue.int(int(rows)),
        "preview": dg.MetadataValue.md(_markdown(preview)),
    }
