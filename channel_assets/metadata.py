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


def image_markdown(name: str, png: bytes, caption: str = "") -> str:
    """Markdown showing a PNG inline (a data URL): the UI cannot open ``file://`` links."""
    import base64

    encoded = base64.b64encode(png).decode("ascii")
    text = f"![{name}](data:image/png;base64,{encoded})"
    return f"{text}\n\n{caption}" if caption else text


def image(name: str, png: bytes, caption: str = "") -> dg.MetadataValue:
    """An inline picture for the asset's metadata."""
    return dg.MetadataValue.md(image_markdown(name, png, caption))


def served_by(frame) -> str:
    """Who served a forecast frame's rows: the model, the baseline and why (``source`` column)."""
    if frame is None or frame.empty or "source" not in frame.columns:
        return "no rows"
    parts = []
    for source, rows in frame.groupby(frame["source"].astype(str), sort=True):
        text = f"{source}: {len(rows)} rows"
        if source == "model" and "model_version" in rows.columns:
            versions = sorted(rows["model_version"].astype(str).unique())
            text += f" (version {', '.join(versions)})"
        if source != "model" and "fallback_reason" in rows.columns:
            reasons = sorted(rows["fallback_reason"].dropna().astype(str).unique())
            if reasons:
                text += f" — {'; '.join(reasons)}"
        parts.append(text)
    return "; ".join(parts)
