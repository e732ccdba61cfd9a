"""landing_sensor: new files start ingestion once; the cursor remembers what was seen."""

import json

import dagster as dg

from channel_assets.sensors import landing_sensor
from resources.data_source import ChannelDataSource


def _tick(folder, cursor=None):
    context = dg.build_sensor_context(
        cursor=cursor, resources={"data_source": ChannelDataSource(source="landing",
                                                                   landing_dir=str(folder))}
    )
    return landing_sensor(context)


def test_new_file_requests_one_run_and_advances_cursor(tmp_path):
    (tmp_path / "posts.csv").write_text("channel_id,post_id,published_at\n1,1,2026-01-01\n")
    (tmp_path / "notes.txt").write_text("ignored")
    result = _tick(tmp_path)
    assert isinstance(result, dg.SensorResult)
    assert len(result.run_requests) == 1
    cursor = json.loads(result.cursor)
    assert list(cursor) == [str(tmp_path / "posts.csv")]

    again = _tick(tmp_path, result.cursor)
    assert isinstance(again, dg.SkipReason)


def test_changed_or_added_file_requests_a_new_run_key(tmp_path):
    posts = tmp_path / "posts.csv"
    posts.write_text("channel_id,post_id,published_at\n1,1,2026-01-01\n")
    first = _tick(tmp_path)
    posts.write_text("channel_id,post_id,published_at\n1,1,2026-01-01\n1,2,2026-01-02\n")
    (tmp_path / "post_snapshots_2.parquet").write_bytes(b"not yet parsed by the sensor")
    second = _tick(tmp_path, first.cursor)
    assert len(second.run_requests) == 1
    assert second.run_requests[0].run_key != first.run_requests[0].run_key
    assert len(json.loads(second.cursor)) == 2


def test_missing_folder_skips(tmp_path):
    result = _tick(tmp_path / "absent")
    assert isinstance(result, dg.SkipReason)
