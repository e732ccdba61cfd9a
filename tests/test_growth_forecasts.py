"""Growth forecasts on short histories: every channel with 28 days of subscriber counts is
forecast — by the champion where it can read the channel, else by the strongest baseline
with ``source = 'baseline'`` and a ``fallback_reason`` — and the per-request functions
answer without a model."""

from __future__ import annotations

import dataclasses
from datetime import datetime

import duckdb
import numpy as np
import pytest
import torch

from nn_models import baselines_growth as B
from nn_models.champions import LoadedModel
from nn_models.forecasts import growth as gro
from nn_models.models.growth import GrowthForecaster
from nn_models.service import InvalidInput
from nn_models.tasks.growth import DAILY_SQL, MIN_HISTORY_DAYS, channel_series
from warehouse import features, synthetic
from warehouse.schema import ensure_schema
from warehouse.upsert import upsert_frame

SCORED_AT = datetime(2026, 11, 1, 6, 0)
DAYS = 36  # a 28-40 day world
SHORT = 1002  # this channel keeps only its last 30 days
TOO_SHORT = 1003  # ... and this one its last 20


@pytest.fixture(scope="module")
def conn():
    conn = duckdb.connect()
    ensure_schema(conn)
    config = dataclasses.replace(synthetic.config_for("tiny", seed=11), n_days=DAYS)
    world = synthetic.generate(config)
    for name in ("raw.channels", "raw.posts", "raw.post_snapshots", "raw.channel_daily"):
        upsert_frame(conn, name, world.tables()[name])
    features.build_feature_table(conn, "channel_daily_features")
    for channel, keep in ((SHORT, 30), (TOO_SHORT, 20)):
        conn.execute(
            """
            DELETE FROM features.channel_daily_features WHERE channel_id = ? AND day <= (
                SELECT max(day) FROM features.channel_daily_features WHERE channel_id = ?) - ?
            """,
            [channel, channel, keep],
        )
    yield conn
    conn.close()


def _champion(conn, history_days: int) -> LoadedModel:
    torch.manual_seed(0)
    module = GrowthForecaster(history_days=history_days, hidden=16, dense=16)
    series = channel_series(conn.execute(DAILY_SQL).fetchdf())
    windows = [f.to_numpy()[-history_days:] for f in series.values() if len(f) >= history_days]
    module.set_normalisation(torch.as_tensor(np.stack(windows), dtype=torch.float32))
    return LoadedModel(
        task="growth",
        registered_model="channel_pulse_growth",
        version="7",
        module=module.eval(),
        tags={"metric.mase": "0.9"},
    )


def _lengths(conn) -> dict[int, int]:
    return {c: len(f) for c, f in channel_series(conn.execute(DAILY_SQL).fetchdf()).items()}


def test_without_a_champion_every_channel_with_28_days_is_filled_by_the_baseline(conn):
    lengths = _lengths(conn)
    assert lengths[SHORT] == 30 and lengths[TOO_SHORT] == 20
    result = gro.score(conn, {"growth": None}, SCORED_AT)
    frame = result.frame
    served = {c for c, n in lengths.items() if n >= MIN_HISTORY_DAYS}
    assert set(frame["channel_id"]) == served and TOO_SHORT not in served
    assert len(frame) == len(served) * 30
    assert set(frame["source"]) == {"baseline"} and set(frame["model_version"]) == {"none"}
    assert frame["fallback_reason"].str.contains("no champion for growth").all()
    choice = gro.fit_baseline(
        {c: f for c, f in channel_series(conn.execute(DAILY_SQL).fetchdf()).items() if c in served}
    )
    assert set(frame["model_name"]) == {f"baseline:{choice.name}"}
    assert frame["fallback_reason"].str.contains(f"strongest baseline {choice.name}").all()
    assert str(TOO_SHORT) in result.notes["too_short"] and "28 days" in result.notes["too_short"]
    assert (frame.subscribers_p10 < frame.subscribers_p50).all()
    assert (frame.subscribers_p50 < frame.subscribers_p90).all()
    # the band comes from measured errors: as wide as the validation z-values say
    part = frame[frame.channel_id == SHORT].sort_values("horizon_days")
    history = channel_series(conn.execute(DAILY_SQL).fetchdf())[SHORT]["subscribers"].to_numpy()
    scale = B.channel_scale(history)
    z10, z90 = choice.z[choice.name]
    h = np.arange(1, 31) ** choice.band_power
    np.testing.assert_allclose(
        np.log(part.subscribers_p90 / part.subscribers_p50), z90 * scale * h, rtol=1e-9
    )
    np.testing.assert_allclose(
        np.log(part.subscribers_p10 / part.subscribers_p50), z10 * scale * h, rtol=1e-9
    )


def test_a_champion_serves_what_it_can_read_and_the_baseline_the_rest(conn):
    champion = _champion(conn, 32)  # reads 32 days: the 30-day channel can't be
    frame = gro.score(conn, {"growth": champion}, SCORED_AT).frame
    by_source = frame.groupby("channel_id")["source"].agg(set)
    lengths = _lengths(conn)
    for channel, sources in by_source.items():
        assert sources == ({"model"} if lengths[channel] >= 32 else {"baseline"})
    short = frame[frame.channel_id == SHORT]
    assert short["fallback_reason"].str.contains("30 days.*reads the last 32").all()
    assert frame.loc[frame.source == "model", "fallback_reason"].isna().all()
    assert set(frame.loc[frame.source == "model", "model_version"]) == {"7"}
    # a 28-day window reads every channel that gets a forecast
    full = gro.score(conn, {"growth": _champion(conn, MIN_HISTORY_DAYS)}, SCORED_AT).frame
    assert set(full["source"]) == {"model"} and SHORT in set(full["channel_id"])


def test_per_request_functions_answer_without_a_model(conn):
    table = gro.score(conn, {"growth": None}, SCORED_AT).frame
    out = gro.forecast_channel(conn, None, SHORT, 10)
    assert out["source"] == "baseline" and "no champion for growth" in out["fallback_reason"]
    part = table[table.channel_id == SHORT].sort_values("horizon_days").head(10)
    assert [f["p50"] for f in out["forecast"]] == pytest.approx(part.subscribers_p50.tolist())
    assert [f["p90"] for f in out["forecast"]] == pytest.approx(part.subscribers_p90.tolist())
    assert out["model"]["name"].startswith("baseline:")
    assert set(out["holdout"]) == {f"validation_mase_{n}" for n in B.BASELINES}
    with pytest.raises(InvalidInput, match="needs at least 28"):
        gro.forecast_channel(conn, None, TOO_SHORT, 10)
    with pytest.raises(InvalidInput, match="prediction_days"):
        gro.forecast_channel(conn, None, SHORT, 31)
    what = gro.what_if(conn, None, SHORT, {"posts_per_day": 3.0, "prediction_days": 5})
    assert what["source"] == "baseline" and what["what_if"] is None
    assert what["baseline"] == out["forecast"][:5]
    assert "no input for posting" in what["explanation"]
    with pytest.raises(InvalidInput, match="posts_per_day"):
        gro.what_if(conn, None, SHORT, {"posts_per_day": -1})
    # with a champion the answer says so
    champion = _champion(conn, MIN_HISTORY_DAYS)
    by_model = gro.forecast_channel(conn, champion, SHORT, 10)
    assert by_model["source"] == "model" and by_model["fallback_reason"] is None
    assert gro.what_if(conn, champion, SHORT, {"posts_per_day": 3.0})["source"] == "model"


def test_a_champion_that_cannot_score_leaves_the_table_to_the_baseline(conn):
    champion = _champion(conn, MIN_HISTORY_DAYS)
    champion.module.head[0] = torch.nn.Linear(3, 16)  # inputs it was not built for
    result = gro.score(conn, {"growth": champion}, SCORED_AT)
    assert set(result.frame["source"]) == {"baseline"} and len(result.frame) == 2 * 30
    assert result.frame["fallback_reason"].str.contains("v7 could not score").all()
    assert "could not score" in result.notes["model_failed"]
