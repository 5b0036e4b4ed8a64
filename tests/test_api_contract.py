"""The OpenAPI document tells the truth about error answers (issue "hostile input", item 10):
every error body is ``{"detail": str}`` (422 included), each operation documents 401 (but
public routes) and 422, and an API path called with a method it does not serve answers the
API's own 405 (``Allow`` listing the route's methods, JSON body), not the console's. Bounds
of optional numbers are real JSON Schema keywords, a body that is not UTF-8 is a 422 like any
malformed JSON, and the simulator's policies and seeds are documented as the server checks
them (findings of the schemathesis runs of test_api_fuzz.py).

Tier: in-process, over HTTP (``inproc_http.served``: the real app, controller and SQLite of
``inprocess_api.InProcessServer``, served by uvicorn from a thread on 127.0.0.1): every
answer checked here is the app's own, and uvicorn still carries them; no `gpupool up`
process is needed."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from inproc_http import Served, served
from inprocess_api import InProcessServer

PUBLIC = {"/healthz"}
METHODS = {"get", "put", "post", "delete", "patch", "head", "options"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with served(InProcessServer(tmp_path_factory.mktemp("contract"), nodes=1, cards=1)) as s:
        yield s


@pytest.fixture(scope="module")
def spec(server: Served) -> dict[str, Any]:
    answer = httpx.get(server.url + "/openapi.json", timeout=30)
    assert answer.status_code == 200
    document: dict[str, Any] = answer.json()
    return document


def _resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref is None:
        return schema
    found: dict[str, Any] = spec
    for part in ref.removeprefix("#/").split("/"):
        found = found[part]
    return found


def _error_schema(spec: dict[str, Any], path: str, method: str, code: int) -> dict[str, Any]:
    response = spec["paths"][path][method]["responses"][str(code)]
    return _resolve(spec, response["content"]["application/json"]["schema"])


def _operations(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                yield path, method, operation


def test_405_on_an_api_path_lists_the_routes_methods(server: Served) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        for method, path, allow in [
            ("DELETE", "/api/v1/jobs", "GET, POST"),
            ("PUT", "/api/v1/jobs/1", "GET"),
            ("GET", "/api/v1/jobs/1/cancel", "POST"),
            ("POST", "/api/v1/secrets/abc", "DELETE, PUT"),
            ("POST", "/healthz", "GET"),
        ]:
            answer = c.request(method, path, headers={"Authorization": f"Bearer {server.token}"})
            assert answer.status_code == 405, (method, path, answer.text)
            assert answer.headers["allow"] == allow, (method, path)
            assert answer.headers["content-type"].startswith("application/json")
            assert isinstance(answer.json()["detail"], str)
        # The console still answers its own paths.
        assert c.get("/").status_code == 200


def test_422_body_matches_the_documented_schema(server: Served, spec: dict[str, Any]) -> None:
    schema = _error_schema(spec, "/api/v1/jobs", "post", 422)
    assert schema["properties"]["detail"]["type"] == "string"
    assert schema["required"] == ["detail"]
    with server.client() as c:
        for answer in (
            c.post("/jobs", json={"gpus": "many"}),
            c.get("/jobs", params={"limit": 0}),
            c.post("/jobs", content=b"{not json", headers={"Content-Type": "application/json"}),
        ):
            assert answer.status_code == 422, answer.text
            body = answer.json()
            assert set(body) == set(schema["properties"]), body
            assert isinstance(body["detail"], str), body
    # FastAPI's array model is documented nowhere.
    assert "HTTPValidationError" not in spec.get("components", {}).get("schemas", {})


def test_every_operation_documents_its_errors(spec: dict[str, Any]) -> None:
    seen = 0
    for path, method, operation in _operations(spec):
        seen += 1
        codes = set(operation["responses"])
        if path not in PUBLIC:
            assert "401" in codes, (method, path)
        if "requestBody" in operation or operation.get("parameters"):
            assert "422" in codes, (method, path)
        for code in codes:
            if code.startswith(("4", "5")):
                detail = _error_schema(spec, path, method, int(code))["properties"]["detail"]
                assert detail["type"] == "string", (method, path, code)
    assert seen > 30
    assert "413" in spec["paths"]["/api/v1/sim/traces/{name}"]["put"]["responses"]
    assert "403" in spec["paths"]["/api/v1/users"]["post"]["responses"]


def _raw_bounds(node: Any, where: str = "") -> Iterator[str]:
    """Where ``node`` holds pydantic's own bound names (``ge``, ``le``, ``gt``, ``lt``) as
    schema keywords: JSON Schema ignores them, so the bound is not documented at all."""
    if isinstance(node, dict):
        for key in ("ge", "le", "gt", "lt"):
            if isinstance(node.get(key), int | float) and not isinstance(node[key], bool):
                yield f"{where}/{key}"
        for key, value in node.items():
            yield from _raw_bounds(value, f"{where}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _raw_bounds(value, f"{where}/{index}")


def test_every_bound_is_a_json_schema_keyword(spec: dict[str, Any]) -> None:
    """Optional numbers (``X | None``) show minimum/maximum, not pydantic's ``ge``/``le``."""
    assert list(_raw_bounds(spec)) == []
    schemas = spec["components"]["schemas"]
    quota = schemas["TeamUpdate"]["properties"]["quota_gpus"]["anyOf"][0]
    assert (quota["minimum"], quota["maximum"]) == (0, 100000)
    assert schemas["TokenCreate"]["properties"]["expires_in_s"]["anyOf"][0]["exclusiveMinimum"] == 0


def test_sim_policies_and_seeds_are_documented(server: Served, spec: dict[str, Any]) -> None:
    """The policies a run may name are the server's own list; a seed numpy refuses (negative)
    is refused at once (422), not accepted and failed later."""
    from gpupool.plugins.profiles import POLICIES

    request = spec["components"]["schemas"]["SimRunCreate"]["properties"]
    assert request["policies"]["items"]["enum"] == list(POLICIES)
    assert request["seeds"]["items"]["minimum"] == 0
    with server.client() as c:
        answer = c.post("/sim/runs", json={"seeds": [-1]})
        assert answer.status_code == 422 and "seeds.0" in answer.json()["detail"], answer.text


def test_a_body_that_is_not_utf8_is_a_documented_422(server: Served) -> None:
    """Not FastAPI's bare 400 "There was an error parsing the body", documented nowhere."""
    with server.client() as c:
        for path in ("/teams", "/jobs", "/tokens"):
            answer = c.post(path, content=b'{"name": "\xe9"}',
                            headers={"Content-Type": "application/json"})
            assert answer.status_code == 422, (path, answer.text)
            assert answer.json() == {"detail": "body: not valid UTF-8"}
