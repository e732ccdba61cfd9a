"""What every forecast scorer returns, and how the frame is stamped with its model versions."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import duckdb
import pandas as pd

from nn_models.champions import LoadedModel

Champions = dict[str, LoadedModel | None]
LINEAGE_COLUMNS = ("model_name", "model_version", "scored_at", "source", "fallback_reason")


@dataclass
class ForecastResult:
    """Rows for ``forecasts.<table>`` plus why some could not be computed."""

    frame: pd.DataFrame
    notes: dict[str, str] = field(default_factory=dict)  # e.g. {"skipped": "..."}
    models: dict[str, str] = field(default_factory=dict)  # registered name -> version


Scorer = Callable[[duckdb.DuckDBPyConnection, Champions, datetime], ForecastResult]


def stamp(
    frame: pd.DataFrame,
    model: LoadedModel | None,
    scored_at: datetime,
    model_name: str | None = None,
    *,
    fallback_reason: str | None = None,
) -> pd.DataFrame:
    """Add the lineage columns every forecast row carries.

    ``source`` is ``model`` when a champion scored the rows, else ``baseline``; a
    baseline row must say why it served (``fallback_reason``), so readers can tell.
    """
    if model is None and not fallback_reason:
        raise ValueError("rows served without a champion need a fallback_reason")
    out = frame.copy()
    # typed explicitly: on an empty frame object columns would reach DuckDB as NULL-typed
    out["model_name"] = pd.Series(
        model_name or (model.registered_model if model else "baseline"), index=out.index, dtype="string"
    )
    out["model_version"] = pd.Series(model.version if model else "none", index=out.index, dtype="string")
    out["scored_at"] = pd.Series(pd.Timestamp(scored_at), index=out.index, dtype="datetime64[us]")
    out["source"] = pd.Series("model" if model is not None else "baseline", index=out.index, dtype="string")
    out["fallback_reason"] = pd.Series(
        None if model is not None else fallback_reason, index=out.index, dtype="string"
    )
    return out


def missing_champion(table: str, names: tuple[str, ...], champions: Champions) -> str | None:
    """A reason when a needed champion is absent (no version has passed its gates)."""
    missing = [n for n in names if champions.get(n) is None]
    if not missing:
        return None
    return (
        f"{table}: no champion for {', '.join(missing)} — no version has passed its "
        "gates yet, so nothing is scored from it"
    )


def parse_channel_id(channel_id) -> int:
    """An integer channel id from a request, or ``InvalidInput`` (HTTP 422)."""
    from nn_models.service import InvalidInput

    if isinstance(channel_id, bool):
        raise InvalidInput(f"channel_id must be an integer, got {channel_id!r}")
    try:
        value = int(channel_id)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"channel_id must be an integer, got {channel_id!r}") from exc
    if isinstance(channel_id, float) and value != channel_id:
        raise InvalidInput(f"channel_id must be an integer, got {channel_id!r}")
    return value
