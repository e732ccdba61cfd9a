"""schemathesis against the app, in-process (ASGI), with a bounded number of examples.

For every operation in /openapi.json, requests generated from the schema (valid ones,
on a real channel and on random ids) and requests that violate it are sent to the app;
each answer is checked for server errors (any 5xx), undocumented statuses, content type
and conformance to the documented response model, and a request that violates the
schema must be rejected (4xx). Seeded (``derandomize``), so a run is reproducible.
The summary line is what the README's reliability section quotes.
"""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from api.app import create_app
from tests.test_api import env  # noqa: F401  (the module's fixture: tiny warehouse + champion)

EXAMPLES = 15  # per operation and generation mode: 11 operations, 2-3 modes each
NO_INPUTS = {"/health", "/models"}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


def test_schemathesis_finds_no_server_error_and_no_schema_violation(env):  # noqa: F811
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(env["service"]))
    cases, statuses = 0, {}
    server_errors: list[str] = []
    violations: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        modes = [(GenerationMode.POSITIVE, None), (GenerationMode.NEGATIVE, None)]
        if "{channel_id}" in operation.path:  # valid requests on a channel that exists
            modes.append((GenerationMode.POSITIVE, {"channel_id": env["channel"]}))
        for mode, path_parameters in modes:
            strategy = operation.as_strategy(generation_mode=mode, path_parameters=path_parameters)

            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                derandomize=True,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(case=strategy)
            def run(case) -> None:
                nonlocal cases
                cases += 1
                response = case.call()
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                try:
                    case.validate_response(response, checks=CHECKS)
                except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 - all counted
                    where = f"{case.method} {case.formatted_path}: {exc}"[:600]
                    (server_errors if response.status_code >= 500 else violations).append(where)

            try:
                run()
            except Unsatisfiable:  # nothing to get wrong: an operation without inputs
                assert mode == GenerationMode.NEGATIVE and operation.path in NO_INPUTS, operation.path
    print(
        f"\nschemathesis: {cases} cases, {len(server_errors)} server errors, "
        f"{len(violations)} schema violations; statuses {dict(sorted(statuses.items()))}"
    )
    assert cases >= 200, cases
    assert server_errors == [], server_errors[:5]
    assert violations == [], violations[:5]
    assert statuses.get(200, 0) >= 20 and statuses.get(422, 0) >= 20, statuses
