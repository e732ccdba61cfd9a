"""The REST API and DeepLearningService on tiny data: ONNX champions, cache, fallback, errors.

One engagement model is trained and registered for real (tiny profile) and given the
``champion`` alias by the test (a promotion); the other models have no champion, so
their endpoints exercise the strongest-baseline and traditional fallbacks.
"""

from __future__ import annotations

import time

import duckdb
import pytest
import torch
from fastapi.testclient import TestClient
from mlflow import MlflowClient

from api.app import create_app
from nn_models.device import choose_device
from nn_models.pipeline import train_and_register
from nn_models.service import DeepLearningService
from nn_models.task import PROFILES
from nn_models.tasks.engagement import EngagementTask
from warehouse import features, synthetic
from warehouse.publish import publish_table
from warehouse.schema import ensure_schema
from warehouse.upsert import upsert_frame

ENGAGEMENT = "channel_pulse_engagement"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("api")
    conn = duckdb.connect(str(root / "warehouse.duckdb"))
    ensure_schema(conn)
    world = synthetic.generate(synthetic.config_for("tiny", seed=42))
    for name, frame in world.tables().items():
        upsert_frame(conn, name, frame)
    for name in features.FEATURE_TABLES:
        features.build_feature_table(conn, name)
    published = str(root / "published")
    for table in ("channels", "posts", "interactions"):
        publish_table(conn, published, "raw", table)
    for table in features.FEATURE_TABLES:
        publish_table(conn, published, "features", table)
    stores = {
        "tracking_uri": f"sqlite:///{root / 'mlflow.db'}",
        "artifact_root": str(root / "artifacts"),
        "optuna_uri": f"sqlite:///{root / 'optuna.db'}",
    }
    torch.set_num_threads(1)
    report = train_and_register(
        EngagementTask(), conn, choice=choose_device("cpu", 1), profile=PROFILES["tiny"], seed=1, **stores
    )
    assert report.status == "registered", report.reason
    client = MlflowClient(stores["tracking_uri"], registry_uri=stores["tracking_uri"])
    client.set_registered_model_alias(ENGAGEMENT, "champion", report.version)
    post = conn.execute(
        "SELECT channel_id, post_id FROM features.post_features "
        "WHERE views_3h IS NOT NULL ORDER BY post_id LIMIT 1"
    ).fetchall()[0]
    conn.close()
    service = DeepLearningService(stores["tracking_uri"], published, refresh_seconds=0.0)
    return {
        "root": root,
        "stores": stores,
        "service": service,
        "client": client,
        "channel": int(post[0]),
        "post": int(post[1]),
        "version": report.version,
    }


@pytest.fixture(scope="module")
def api(env):
    return TestClient(create_app(env["service"]), raise_server_exceptions=False)


def test_health_and_models_show_the_onnx_champion(api, env):
    health = api.get("/health").json()
    assert health["champions"]["engagement"] == env["version"]
    assert health["champions"]["growth"] is None
    models = api.get("/models").json()
    assert models["engagement"]["backend"] == "onnx", models["engagement"]["backend_reason"]
    assert "accuracy_3h" in models["engagement"]["holdout_metrics"]


def test_engagement_prediction_for_a_post_and_a_draft(api, env):
    channel = env["channel"]
    by_post = api.post(f"/channels/{channel}/engagement", json={"post_id": env["post"]})
    assert by_post.status_code == 200, by_post.text
    body = by_post.json()
    assert 0.0 <= body["engagement_score"] <= 1.0
    draft = api.post(
        f"/channels/{channel}/engagement",
        json={
            "media_type": "photo",
            "text_length": 120,
            "snapshots": [
                {"minutes": 15, "views": 100},
                {"minutes": 60, "views": 260},
                {"minutes": 180, "views": 500, "forwards": 4},
            ],
        },
    )
    assert draft.status_code == 200, draft.text
    assert 0.0 <= draft.json()["engagement_score"] <= 1.0


def test_fallback_insights_without_champions_say_why(api, env):
    response = api.get(f"/channels/{env['channel']}/insights")
    assert response.status_code == 200, response.text
    doc = response.json()
    assert doc["traditional"]["subscribers"] > 0
    # no forecast table is published in this fixture: every neural part is missing, said so
    assert "no forecast rows for" in doc["fallback_reason"]
    assert "growth" in doc["fallback_reason"]
    assert doc["confidence"]["overall"] == 0.0


@pytest.mark.parametrize("path", ["growth", "user-segments", "posting-schedule"])
def test_missing_champion_is_answered_by_the_baseline(api, env, path):
    response = api.get(f"/channels/{env['channel']}/{path}")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["source"] == "baseline"
    assert "champion" in body["fallback_reason"]


@pytest.mark.parametrize(
    "method,path,body",
    [
        ("get", "/channels/999999/insights", None),
        ("get", "/channels/999999/growth", None),
        ("post", "/channels/999999/engagement", {"post_id": 1}),
    ],
)
def test_unknown_channel_is_404(api, method, path, body):
    response = getattr(api, method)(path, **({"json": body} if body is not None else {}))
    assert response.status_code == 404, response.text


@pytest.mark.parametrize(
    "method,path,kwargs",
    [
        ("get", "/channels/abc/insights", {}),
        ("get", "/channels/-5/insights", {}),
        ("get", "/channels/1/growth?prediction_days=0", {}),
        ("get", "/channels/1/growth?prediction_days=31", {}),
        ("post", "/channels/1/engagement", {"content": b"{not json"}),
        ("post", "/channels/1/engagement", {"json": {"snapshots": "many"}}),
        ("post", "/channels/1/engagement", {"json": {"unexpected": 1}}),
        ("post", "/channels/1/engagement", {"json": {"snapshots": [{"minutes": -1, "views": 3}]}}),
        ("post", "/viral-potential", {"json": {"text": "x" * 20_000}}),
        ("post", "/channels/1/growth/what-if", {"json": {"posts_per_day": -1}}),
        ("post", "/channels/1/content-patterns", {"json": {"texts": ["a"] * 1000}}),
    ],
)
def test_bad_input_is_422(api, method, path, kwargs):
    response = getattr(api, method)(path, **kwargs)
    assert response.status_code == 422, response.text


def _draft(**changes) -> dict:
    body = {"snapshots": [{"minutes": 15, "views": 100}, {"minutes": 60, "views": 260}]}
    body.update(changes)
    return body


def _snapshot(**changes) -> dict:
    return _draft(snapshots=[{"minutes": 15, "views": 100, **changes}])


BAD_VALUES = {
    # not finite: Python's json reads NaN/Infinity; the 422 answer must still render
    "nan posts_per_day": ("growth/what-if", b'{"posts_per_day": NaN}'),
    "infinite minutes": ("engagement", b'{"snapshots": [{"minutes": Infinity, "views": 1}]}'),
    "-infinite posts_per_day": ("growth/what-if", b'{"posts_per_day": -Infinity}'),
    # a lone surrogate is valid JSON but cannot be encoded as text
    "surrogate in viral text": ("/viral-potential", b'{"text": "ab\\ud800cd"}'),
    "surrogate in texts": ("content-patterns", b'{"texts": ["ok", "\\udfff"]}'),
    "surrogate as a field name": ("growth/what-if", b'{"posts_per_day": 1, "\\ud800": 1}'),
    # numbers out of any plausible range
    "400-digit views": ("engagement", _snapshot(views=10**400)),
    "1e30 views": ("engagement", _snapshot(views=1e30)),
    "views above 1e9": ("engagement", _snapshot(views=10**9 + 1)),
    "huge post_id": ("engagement", {"post_id": 10**30}),
    "published 0001-01-01": ("engagement", _draft(published_at="0001-01-01T00:00:00")),
    "published 9999-12-31": ("engagement", _draft(published_at="9999-12-31T23:59:59")),
    "published before Telegram": ("/viral-potential", {"text": "x", "published_at": "2001-01-01T00:00:00Z"}),
    "not a time": ("/viral-potential", {"text": "x", "published_at": "yesterday"}),
    # strict types: no coercion of booleans or strings into numbers
    "true as views": ("engagement", _snapshot(views=True)),
    "'5' as views": ("engagement", _snapshot(views="5")),
    "'5' as posts_per_day": ("growth/what-if", {"posts_per_day": "5"}),
    "true as prediction_days": ("growth/what-if", {"posts_per_day": 1, "prediction_days": True}),
    "float as prediction_days": ("growth/what-if", {"posts_per_day": 1, "prediction_days": 5.0}),
    "'1' as channel_id": ("/viral-potential", {"text": "x", "channel_id": "1"}),
    # the service's own limits, stated by the schema
    "51 texts": ("content-patterns", {"texts": ["a"] * 51}),
    "text over 10,000 characters": ("/viral-potential", {"text": "x" * 10_001}),
}


@pytest.mark.parametrize("case", sorted(BAD_VALUES))
def test_implausible_or_mistyped_values_are_422_with_a_reason(api, env, case):
    """Each of these answered 503 (the server failed on it) or 200 (coerced, or taken at
    face value: 1e30 views gave 3.4e30 predicted views) before the schema was strict."""
    path, body = BAD_VALUES[case]
    url = path if path.startswith("/") else f"/channels/{env['channel']}/{path}"
    kwargs = (
        {"content": body, "headers": {"content-type": "application/json"}}
        if isinstance(body, bytes)
        else {"json": body}
    )
    response = api.post(url, **kwargs)
    assert response.status_code == 422, (case, response.status_code, response.text[:300])
    problem = response.json()
    assert isinstance(problem["detail"], str) and problem["detail"], problem


def test_semantically_bad_engagement_request_is_422(api, env):
    response = api.post(f"/channels/{env['channel']}/engagement", json={})
    assert response.status_code == 422
    decreasing = api.post(
        f"/channels/{env['channel']}/engagement",
        json={"snapshots": [{"minutes": 15, "views": 100}, {"minutes": 30, "views": 50}]},
    )
    assert decreasing.status_code == 422


def test_cache_hits_and_invalidation_on_a_new_champion(env):
    service, client = env["service"], env["client"]
    request = {"post_id": env["post"]}
    first = service.predict_engagement_neural(env["channel"], request)
    hits = service.stats["hits"]
    again = service.predict_engagement_neural(env["channel"], request)
    assert again == first and service.stats["hits"] == hits + 1
    # a new version is promoted: the cached answer is not served for it
    torch.set_num_threads(1)
    conn = duckdb.connect(str(env["root"] / "warehouse.duckdb"), read_only=True)
    report = train_and_register(
        EngagementTask(),
        conn,
        choice=choose_device("cpu", 1),
        profile=PROFILES["tiny"],
        seed=2,
        **env["stores"],
    )
    conn.close()
    client.set_registered_model_alias(ENGAGEMENT, "champion", report.version)
    misses = service.stats["misses"]
    fresh = service.predict_engagement_neural(env["channel"], request)
    assert service.stats["misses"] == misses + 1
    assert fresh["model"]["version"] == report.version != first["model"]["version"]
    client.set_registered_model_alias(ENGAGEMENT, "champion", env["version"])


def _random_json(rng, depth: int = 0):
    kind = rng.integers(0, 7 if depth < 2 else 5)
    if kind == 0:
        return int(rng.integers(-(2**63), 2**63 - 1))
    if kind == 1:
        return float(rng.normal() * 10 ** rng.integers(0, 30))
    if kind == 2:
        return "".join(chr(int(c)) for c in rng.integers(1, 0x2FFF, size=rng.integers(0, 40)))
    if kind == 3:
        return bool(rng.integers(0, 2))
    if kind == 4:
        return None
    if kind == 5:
        return [_random_json(rng, depth + 1) for _ in range(rng.integers(0, 5))]
    keys = [
        "post_id",
        "snapshots",
        "text",
        "channel_id",
        "minutes",
        "views",
        "media_type",
        "posts_per_day",
        "texts",
        "published_at",
        "x",
    ]
    return {str(rng.choice(keys)): _random_json(rng, depth + 1) for _ in range(rng.integers(0, 5))}


def test_fuzzed_requests_never_get_a_500(api, env):
    """Seeded random bodies and ids on every endpoint: answered 200/404/422, never 5xx."""
    import numpy as np

    rng = np.random.default_rng(7)
    channel = env["channel"]
    posts = [
        f"/channels/{channel}/engagement",
        f"/channels/{channel}/growth/what-if",
        f"/channels/{channel}/content-patterns",
        "/viral-potential",
    ]
    gets = ["insights", "growth", "user-segments", "posting-schedule", "content-recommendations"]
    statuses = []
    for i in range(150):
        path = posts[i % len(posts)]
        if rng.random() < 0.2:
            response = api.post(path, content=bytes(rng.integers(0, 256, size=64, dtype=np.uint8)))
        else:
            response = api.post(path, json=_random_json(rng))
        statuses.append(response.status_code)
        ident = rng.choice(
            [str(channel), str(int(rng.integers(-(10**12), 10**12))), "nan", "1e9", "%00", "0x10", str(2**70)]
        )
        statuses.append(api.get(f"/channels/{ident}/{gets[i % len(gets)]}").status_code)
    assert 500 not in statuses
    # tables are published: 503 ("nothing to answer from yet") would be a bug here too
    assert set(statuses) <= {200, 404, 422}, sorted(set(statuses))
    assert statuses.count(422) > 50


def test_champion_sensor_requests_forecasts_when_an_alias_moves(env):
    import dagster as dg

    from channel_assets.sensors import champion_sensor
    from resources.mlflow_tracking import MlflowTracking

    tracking = MlflowTracking(
        tracking_uri=env["stores"]["tracking_uri"],
        artifact_root=env["stores"]["artifact_root"],
        optuna_uri=env["stores"]["optuna_uri"],
    )
    first = champion_sensor(dg.build_sensor_context(resources={"mlflow_tracking": tracking}))
    assert len(first.run_requests) == 1  # a champion exists and was never seen
    again = champion_sensor(
        dg.build_sensor_context(cursor=first.cursor, resources={"mlflow_tracking": tracking})
    )
    assert isinstance(again, dg.SkipReason)


# ------------------------------------------------------------------ bugs, connections, health


class _BuggyService(DeepLearningService):
    """The real service with one method that has a bug (what a crash looks like)."""

    def forecast_growth_lstm(self, channel_id: int, prediction_days: int = 30) -> dict:
        self.require_channel(channel_id)
        return {"ratio": 1 / (prediction_days - prediction_days)}  # ZeroDivisionError


def _buggy(env) -> DeepLearningService:
    return _BuggyService(env["stores"]["tracking_uri"], env["service"].published_root, refresh_seconds=60.0)


def test_a_bug_is_500_with_an_error_id_and_its_traceback_in_the_log(env, caplog):
    client = TestClient(create_app(_buggy(env)), raise_server_exceptions=False)
    with caplog.at_level("ERROR", logger="api.app"):
        response = client.get(f"/channels/{env['channel']}/growth")
    assert response.status_code == 500, response.text
    problem = response.json()
    assert problem["error_id"] and problem["error_id"] in problem["detail"]
    logged = [r for r in caplog.records if problem["error_id"] in r.getMessage()]
    assert logged and logged[0].exc_info[0] is ZeroDivisionError  # the traceback is logged


def test_the_keep_alive_connection_survives_every_error(env):
    """A real server (uvicorn) and one HTTP/1.1 connection: a bug (500), bad input (422,
    NaN), an unknown channel (404) and then a valid request all go over the same socket.
    Before, an unexpected error was re-raised after its answer and the server closed the
    connection, so the client's next request failed."""
    import http.client
    import threading

    import uvicorn

    server = uvicorn.Server(
        uvicorn.Config(
            create_app(_buggy(env)), host="127.0.0.1", port=0, log_level="critical", lifespan="off"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
            time.sleep(0.02)
        port = server.servers[0].sockets[0].getsockname()[1]
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        channel = env["channel"]
        sequence = [
            ("GET", f"/channels/{channel}/growth", None, 500),
            ("POST", f"/channels/{channel}/growth/what-if", b'{"posts_per_day": NaN}', 422),
            ("GET", f"/channels/{channel}/growth", None, 500),
            ("GET", "/channels/999999/insights", None, 404),
            ("GET", "/health", None, 200),
            ("POST", f"/channels/{channel}/engagement", b'{"post_id": %d}' % env["post"], 200),
        ]
        sockets, got = set(), []
        for method, path, body, _ in sequence:
            try:
                conn.request(
                    method, path, body=body, headers={"content-type": "application/json"} if body else {}
                )
                response = conn.getresponse()
                response.read()
                got.append(response.status)
                assert (response.getheader("connection") or "").lower() != "close"
                sockets.add(conn.sock.getsockname())
            except (http.client.HTTPException, OSError) as exc:  # the server hung up
                got.append(type(exc).__name__)
                conn.close()
        assert got == [status for *_, status in sequence]
        assert len(sockets) == 1, sockets  # one connection served all six
        conn.close()
    finally:
        server.should_exit = True
        thread.join(30)


def test_health_is_503_without_published_tables(env, tmp_path):
    service = DeepLearningService(
        env["stores"]["tracking_uri"], str(tmp_path / "nothing"), refresh_seconds=60.0
    )
    client = TestClient(create_app(service), raise_server_exceptions=False)
    response = client.get("/health")
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["status"] == "unavailable" and not body["tables"]
    assert "no published tables" in body["detail"]
    # a request for a channel says the same, with its reason
    answer = client.get("/channels/1/insights")
    assert answer.status_code == 503 and "no published tables" in answer.json()["detail"]


def test_health_is_ok_with_tables(api):
    body = api.get("/health").json()
    assert body["status"] == "ok" and body["tables"] and body["registry"] == "ok"


def test_the_cache_is_bounded_in_bytes_and_keys_do_not_hold_the_request(env):
    service = DeepLearningService(
        env["stores"]["tracking_uri"], env["service"].published_root, refresh_seconds=60.0, cache_bytes=50_000
    )
    answer = {"payload": "x" * 1_000}
    for i in range(200):
        assert service._cached("m", ("request", i), ("engagement",), lambda c: answer) == answer
    assert service._cache.currsize <= 50_000
    assert 10 <= len(service._cache) < 200  # bounded by bytes, not by entry count
    huge_request = ["y" * 10_000] * 50  # the largest texts request: 500 kB
    service._cached("patterns", (1, huge_request), ("content",), lambda c: answer)
    assert all(len(key) == 32 for key in service._cache)  # a digest, not the request
    hits = service.stats["hits"]
    service._cached("patterns", (1, huge_request), ("content",), lambda c: {"other": 1})
    assert service.stats["hits"] == hits + 1
    big = {"payload": "z" * 10_000}  # more than a tenth of the budget
    assert service._cached("m", "big", (), lambda c: big) == big
    assert service.stats["hits"] == hits + 1 and len(service._cache) <= 50


def test_openapi_documents_every_status_with_typed_models(api):
    from nn_models.forecasts.patterns import MAX_REQUEST_TEXTS
    from nn_models.forecasts.viral import MAX_TEXT_CHARS

    doc = api.get("/openapi.json").json()
    schemas = doc["components"]["schemas"]
    for path, methods in doc["paths"].items():
        for method, operation in methods.items():
            responses = operation["responses"]
            expected = {"200", "500", "503"} | (
                {"404", "422"} if "{channel_id}" in path or method == "post" else set()
            )
            assert expected <= set(responses), (method, path, sorted(responses))
            for status, response in responses.items():
                schema = response["content"]["application/json"]["schema"]
                typed = "$ref" in schema or isinstance(schema.get("additionalProperties"), dict)
                assert typed, (method, path, status, schema)  # not a bare "object"
    patterns = schemas["TextsRequest"]["properties"]["texts"]["anyOf"][0]
    assert patterns["maxItems"] == MAX_REQUEST_TEXTS  # the service takes 50
    assert patterns["items"]["maxLength"] == MAX_TEXT_CHARS
    assert schemas["ViralRequest"]["properties"]["text"]["maxLength"] == MAX_TEXT_CHARS
    assert schemas["Snapshot"]["properties"]["views"]["maximum"] == 10**9
    assert schemas["InvalidProblem"]["properties"]["detail"]["type"] == "string"
    assert "error_id" in schemas["ServerProblem"]["required"]
