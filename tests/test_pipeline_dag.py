"""The pure pipeline rules: validation (naming the problem), implied dependencies, order,
templates; and cron firings, catch-up after downtime and the concurrency policy, as pure
functions of (schedule, last firing, now, limit) on an injected clock."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from gpupool.schemas.pipelines import PipelineSpec
from gpupool.server.pipelines import cron
from gpupool.server.pipelines.dag import PipelineInvalid, render, validate


def spec(*steps: dict[str, Any], **extra: Any) -> PipelineSpec:
    return PipelineSpec.model_validate({"name": "p", "steps": list(steps), **extra})


def sh(name: str, command: str = "true", **extra: Any) -> dict[str, Any]:
    return {"name": name, "kind": "shell", "command": command, **extra}


def problems(definition: PipelineSpec, params: dict[str, Any] | None = None) -> str:
    with pytest.raises(PipelineInvalid) as caught:
        validate(definition, params or {})
    return str(caught.value)


def test_dependencies_are_implied_by_inputs_and_ordered() -> None:
    plan = validate(spec(
        sh("report", "echo ${{ steps.train.outputs.acc }} ${{ steps.prep.files.data }}"),
        sh("train", inputs={"DATA": "${{ steps.prep.files.data }}"}, outputs=["acc"]),
        sh("prep", files=["data"], depends_on=[]),
        sh("lint", depends_on=["prep"]),
    ), {})
    assert plan.depends_on == {"report": ["train", "prep"], "train": ["prep"], "prep": [],
                               "lint": ["prep"]}
    assert plan.order == ["prep", "train", "lint", "report"]


@pytest.mark.parametrize(("definition", "expected"), [
    (spec(sh("a", depends_on=["b"]), sh("b", depends_on=["c"]), sh("c", depends_on=["a"])),
     "dependency cycle: a → b → c → a"),
    (spec(sh("a", "echo ${{ steps.a.outputs.x }}", outputs=["x"])),
     "steps.a.command: a step cannot use its own outputs"),
    (spec(sh("a", depends_on=["nope"])), "steps.a.depends_on: no step named 'nope'"),
    (spec(sh("a", "echo ${{ steps.ghost.outputs.x }}")),
     "steps.a.command: no step named 'ghost'"),
    (spec(sh("a", outputs=["model"]), sh("b", "echo ${{ steps.a.outputs.modle }}")),
     "steps.b.command: step 'a' declares no output 'modle' (declared outputs: model)"),
    (spec(sh("a", files=["f"]), sh("b", inputs={"X": "${{ steps.a.files.g }}"})),
     "steps.b.inputs.X: step 'a' declares no file 'g' (declared files: f)"),
    (spec(sh("a", "echo ${{ params.lr }}")), "steps.a.command: unknown parameter 'lr'"),
    (spec(sh("a", "echo ${{ secrets.TOKEN }}")), "secrets are injected with `secrets:`"),
    (spec(sh("a", "echo ${{ env.HOME }}")), "unknown reference ${{ env.HOME }}"),
    (spec(sh("a"), sh("a")), "steps.a: two steps have this name"),
])
def test_invalid_definitions_are_rejected_naming_the_problem(
    definition: PipelineSpec, expected: str
) -> None:
    assert expected in problems(definition)


@pytest.mark.parametrize(("params", "given", "expected"), [
    ({"epochs": {"type": "int"}}, {}, "params.epochs: required (no default)"),
    ({"epochs": {"type": "int"}}, {"epochs": "many"}, "params.epochs: expected an int"),
    ({"lr": 0.1}, {"lr": "fast"}, "params.lr: expected a number"),
    ({"lr": 0.1}, {"lrr": 1}, "params.lrr: not a parameter of p (declared: lr)"),
    ({"on": {"type": "bool"}}, {"on": "maybe"}, "params.on: expected a bool"),
])
def test_bad_parameters_are_rejected(
    params: dict[str, Any], given: dict[str, Any], expected: str
) -> None:
    assert expected in problems(spec(sh("a"), params=params), given)


def test_parameters_are_typed_and_defaulted() -> None:
    definition = spec(sh("a", "echo ${{ params.n }} ${{ params.cfg }}"),
                      params={"n": {"type": "int", "default": 3}, "cfg": {"type": "json"},
                              "tag": "v1"})
    plan = validate(definition, {"n": "7", "cfg": {"a": [1]}})
    assert plan.params == {"n": 7, "cfg": {"a": [1]}, "tag": "v1"}
    values = {f"params.{k}": v for k, v in plan.params.items()}
    assert render("${{ params.n }} ${{params.cfg}} ${{ params.tag }}", values) == \
        '7 {"a": [1]} v1'


def test_nested_pipelines_are_checked_too() -> None:
    child = {"name": "child", "params": {"x": {"type": "int"}},
             "steps": [sh("inner", "echo ${{ params.x }}", outputs=["y"])],
             "outputs": {"y": "${{ steps.inner.outputs.y }}"}}
    ok = spec(sh("a", outputs=["n"]),
              {"name": "sub", "pipeline": child, "with": {"x": "${{ steps.a.outputs.n }}"},
               "outputs": ["y"]},
              sh("b", "echo ${{ steps.sub.outputs.y }}"))
    assert validate(ok, {}).depends_on == {"a": [], "sub": ["a"], "b": ["sub"]}
    missing = spec({"name": "sub", "pipeline": child})
    assert "steps.sub.pipeline.params.x: required" in problems(missing)
    bad_output = spec({"name": "sub", "pipeline": child, "with": {"x": 1}, "outputs": ["z"]})
    assert "steps.sub.outputs: 'z' is not an output of child" in problems(bad_output)


def test_field_shapes_are_checked_by_the_schema() -> None:
    with pytest.raises(ValidationError, match="give exactly one of command, http, pipeline"):
        spec({"name": "a"})
    with pytest.raises(ValidationError, match="retrys"):
        spec(sh("a", retrys=3))
    with pytest.raises(ValidationError, match="a shell step needs command, not http"):
        spec({"name": "a", "kind": "shell", "http": {"url": "http://x"}})


# -- cron: pure functions on an injected clock ---------------------------------------------


def ts(hour: int, minute: int, second: int = 0) -> float:
    return datetime(2030, 1, 1, hour, minute, second, tzinfo=UTC).timestamp()


def test_nothing_is_due_before_the_next_firing() -> None:
    assert cron.due("*/5 * * * *", ts(0, 0, 30), ts(0, 4, 59), 3) == cron.Due()


def test_a_firing_is_due_at_its_time_exactly_once() -> None:
    assert cron.due("*/5 * * * *", ts(0, 0, 30), ts(0, 5), 3).run == [ts(0, 5)]
    assert cron.due("*/5 * * * *", ts(0, 5), ts(0, 5, 10), 3).run == []


def test_downtime_catches_up_the_newest_missed_firings_up_to_the_limit() -> None:
    # last handled firing 00:00, server down until 01:02: 12 firings missed (00:05..01:00)
    due = cron.due("*/5 * * * *", ts(0, 0), ts(1, 2), 3)
    assert due.run == [ts(0, 50), ts(0, 55), ts(1, 0)]
    assert due.missed == 9
    only_latest = cron.due("*/5 * * * *", ts(0, 0), ts(1, 2), 1)
    assert only_latest.run == [ts(1, 0)] and only_latest.missed == 11
    everything = cron.due("*/5 * * * *", ts(0, 0), ts(1, 2), 100)
    assert len(everything.run) == 12 and everything.missed == 0


def test_concurrency_policies() -> None:
    firings = [ts(0, 50), ts(0, 55), ts(1, 0)]
    assert cron.decide(firings, active=1, policy="allow").start == firings
    forbid_busy = cron.decide(firings, active=1, policy="forbid")
    assert forbid_busy.start == [] and forbid_busy.skip == firings
    forbid_idle = cron.decide(firings, active=0, policy="forbid")
    assert forbid_idle.start == [ts(1, 0)] and forbid_idle.skip == firings[:2]
    replace = cron.decide(firings, active=2, policy="replace")
    assert replace.start == [ts(1, 0)] and replace.cancel_active
    assert not cron.decide(firings, active=0, policy="replace").cancel_active


@pytest.mark.parametrize("expr", ["* * * *", "61 * * * *", "every day"])
def test_bad_cron_expressions_are_named(expr: str) -> None:
    with pytest.raises(cron.CronInvalid, match="cron:"):
        cron.check(expr)
