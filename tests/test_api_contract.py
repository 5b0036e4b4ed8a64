"""The OpenAPI document tells the truth about error answers (issue "hostile input", item 10):
every error body is ``{"detail": str}`` (422 included), each operation documents 401 (but
public routes) and 422, and an API path called with a method it does not serve answers the
API's own 405 (``Allow`` listing the route's methods, JSON body), not the console's."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from server_harness import Server, make_server

PUBLIC = {"/healthz"}
METHODS = {"get", "put", "post", "delete", "patch", "head", "options"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from make_server("sqlite", tmp_path_factory.mktemp("contract"), "1xA100-80GB")


@pytest.fixture(scope="module")
def spec(server: Server) -> dict[str, Any]:
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


def test_405_on_an_api_path_lists_the_routes_methods(server: Server) -> None:
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


def test_422_body_matches_the_documented_schema(server: Server, spec: dict[str, Any]) -> None:
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
