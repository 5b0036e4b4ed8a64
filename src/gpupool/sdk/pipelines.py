"""Pipelines in the SDK: ``Client().pipelines`` (blocking).

    with Client() as gp:
        run = gp.pipelines.run("examples/pipelines/five_steps.yaml", params={"rows": 50})
        run = gp.pipelines.wait(run.id)
        print(run.state, run.steps[-1].outputs)

A definition is a PipelineSpec, a mapping, or the path of a YAML file. A definition that
breaks the field contract raises pydantic's ValidationError before any request; the
server's graph checks (cycles, references, params) come back as ApiError(422).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import yaml
from pydantic import BaseModel, TypeAdapter

from gpupool.schemas.pipelines import (
    PipelineLogs,
    PipelineSpec,
    RunCreate,
    RunState,
    RunUpdate,
    RunView,
    ScheduleSpec,
    ScheduleView,
    SecretPut,
    SecretView,
    ValidateRequest,
    ValidateView,
)
from gpupool.sdk import _paging
from gpupool.sdk._wire import API, Call

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)
Definition = PipelineSpec | Mapping[str, Any] | str | Path


def load_definition(definition: Definition) -> PipelineSpec:
    """A PipelineSpec from a spec, a mapping or a YAML file (ValueError for a bad file)."""
    if isinstance(definition, PipelineSpec):
        return definition
    if isinstance(definition, str | Path):
        path = Path(definition)
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise ValueError(f"{path}: cannot read the pipeline: {exc}") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path}: a pipeline is a YAML mapping with name and steps")
        return PipelineSpec.model_validate(data)
    return PipelineSpec.model_validate(dict(definition))


def _body(model: BaseModel) -> Any:
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


def _one(model: type[M]) -> Callable[[Any], M]:
    return model.model_validate


def _many(model: type[M]) -> Callable[[Any], list[M]]:
    adapter: TypeAdapter[list[M]] = TypeAdapter(list[model])  # type: ignore[valid-type]
    return adapter.validate_python


def _none(_data: Any) -> None:
    return None


class Pipelines:
    """Pipeline runs, schedules and secrets; ``do`` sends one call (the client's)."""

    def __init__(self, do: Callable[[Call[Any]], Any]) -> None:
        self._do = do

    def validate(self, definition: Definition, params: Mapping[str, Any] | None = None
                 ) -> ValidateView:
        """The step order and dependencies of a valid definition; ApiError(422) naming
        every problem otherwise. Nothing runs."""
        body = ValidateRequest(definition=load_definition(definition), params=dict(params or {}))
        result: ValidateView = self._do(Call("POST", f"{API}/pipelines/validate",
                                             _one(ValidateView), body=_body(body)))
        return result

    def run(self, definition: Definition, params: Mapping[str, Any] | None = None,
            priority: int = 0, trigger: str = "api") -> RunView:
        """Queue a run (``trigger``: api or manual)."""
        body = RunCreate(definition=load_definition(definition), params=dict(params or {}),
                         priority=priority, trigger=trigger)  # type: ignore[arg-type]
        result: RunView = self._do(Call("POST", f"{API}/pipeline-runs", _one(RunView),
                                        body=_body(body)))
        return result

    def runs(self, state: RunState | str | None = None, name: str | None = None,
             limit: int | None = 100) -> list[RunView]:
        """The newest ``limit`` runs visible to the caller (every one when None), newest
        first, without their steps."""
        params: dict[str, str | list[str]] = {}
        if state is not None:
            params["state"] = RunState(state).value
        if name is not None:
            params["name"] = name
        return _paging.collect(self._do, f"{API}/pipeline-runs", RunView, params, limit)

    def get(self, run_id: str | int) -> RunView:
        """One run with its steps (states, outputs, stored file paths)."""
        result: RunView = self._do(Call("GET", f"{API}/pipeline-runs/{int(run_id)}",
                                        _one(RunView)))
        return result

    def wait(self, run_id: str | int, timeout: float | None = None, poll: float = 0.3
             ) -> RunView:
        """The run once final; TimeoutError after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            view = self.get(run_id)
            if view.state.final:
                return view
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"pipeline run {run_id} is still {view.state.value} "
                                   f"after {timeout:g} s")
            time.sleep(poll)

    def set_priority(self, run_id: str | int, priority: int) -> RunView:
        """Change the priority of a queued run (ApiError 409 once it started)."""
        body = RunUpdate(priority=priority)
        result: RunView = self._do(Call("PATCH", f"{API}/pipeline-runs/{int(run_id)}",
                                        _one(RunView), body=_body(body)))
        return result

    def cancel(self, run_id: str | int) -> RunView:
        result: RunView = self._do(Call("POST", f"{API}/pipeline-runs/{int(run_id)}/cancel",
                                        _one(RunView)))
        return result

    def retry(self, run_id: str | int) -> RunView:
        """Re-run a failed run from its failed steps, reusing the others' outputs."""
        result: RunView = self._do(Call("POST", f"{API}/pipeline-runs/{int(run_id)}/retry",
                                        _one(RunView)))
        return result

    def logs(self, run_id: str | int, step: str | None = None) -> PipelineLogs:
        """Step logs (all steps when ``step`` is None), secrets masked."""
        params = {"step": step} if step else {}
        result: PipelineLogs = self._do(Call("GET", f"{API}/pipeline-runs/{int(run_id)}/logs",
                                             _one(PipelineLogs), params=params))
        return result

    def schedule(self, spec: ScheduleSpec | Mapping[str, Any]) -> ScheduleView:
        """Create or replace the cron schedule named like its definition."""
        if not isinstance(spec, ScheduleSpec):
            spec = ScheduleSpec.model_validate(dict(spec))
        result: ScheduleView = self._do(Call("PUT", f"{API}/pipeline-schedules",
                                             _one(ScheduleView), body=_body(spec)))
        return result

    def schedules(self) -> list[ScheduleView]:
        result: list[ScheduleView] = self._do(Call("GET", f"{API}/pipeline-schedules",
                                                   _many(ScheduleView)))
        return result

    def delete_schedule(self, name: str) -> None:
        self._do(Call("DELETE", f"{API}/pipeline-schedules/{quote(name, safe='')}", _none))

    def set_secret(self, name: str, value: str) -> SecretView:
        """Store a team secret (encrypted at rest; never returned)."""
        body = SecretPut(value=value)
        result: SecretView = self._do(Call("PUT", f"{API}/secrets/{quote(name, safe='')}",
                                           _one(SecretView), body=_body(body)))
        return result

    def secrets(self) -> list[SecretView]:
        """The team's secret names (never values)."""
        result: list[SecretView] = self._do(Call("GET", f"{API}/secrets", _many(SecretView)))
        return result

    def delete_secret(self, name: str) -> None:
        self._do(Call("DELETE", f"{API}/secrets/{quote(name, safe='')}", _none))
