"""Pipeline validation on big and hostile definitions: linear work, bounded size, and the
same answers (order, cycles, problems) as on small ones. No timing asserts: a definition
that made the old code spin (500 steps each depending on all earlier ones) must simply come
back, and a template that made the regex backtrack must simply be scanned."""

from __future__ import annotations

from typing import Any

import pytest

from gpupool.schemas.pipelines import PipelineSpec
from gpupool.server.pipelines.dag import (
    MAX_DEPTH,
    MAX_EDGES,
    MAX_PROBLEMS,
    MAX_STEPS,
    TEMPLATE,
    PipelineInvalid,
    Plan,
    references,
    render,
    validate,
)


def spec(steps: list[dict[str, Any]], **extra: Any) -> PipelineSpec:
    return PipelineSpec.model_validate({"name": "p", "steps": steps, **extra})


def all_to_all(n: int, by: str = "depends_on") -> list[dict[str, Any]]:
    """Step i depends on every earlier step, by ``depends_on`` or by references; listed last
    first, so the definition's order is no topological order."""
    steps = []
    for i in range(n):
        step: dict[str, Any] = {"name": f"s{i}", "kind": "shell", "command": "true",
                                "outputs": ["x"]}
        if by == "depends_on":
            step["depends_on"] = [f"s{j}" for j in range(i)]
        elif i:
            step["command"] = " ".join(f"${{{{ steps.s{j}.outputs.x }}}}" for j in range(i))
        steps.append(step)
    return steps[::-1]


def assert_topological(plan: Plan) -> None:
    assert sorted(plan.order) == sorted(plan.depends_on)
    position = {name: i for i, name in enumerate(plan.order)}
    for name, deps in plan.depends_on.items():
        for dep in deps:
            assert position[dep] < position[name], f"{dep} must come before {name}"


def problems(definition: PipelineSpec, params: dict[str, Any] | None = None) -> list[str]:
    with pytest.raises(PipelineInvalid) as caught:
        validate(definition, params or {})
    return caught.value.problems


@pytest.mark.parametrize("by", ["depends_on", "references"])
def test_500_all_to_all_steps_validate_in_a_topological_order(by: str) -> None:
    plan = validate(spec(all_to_all(500, by)), {})
    assert plan.order == [f"s{i}" for i in range(500)]
    assert len(plan.depends_on["s499"]) == 499
    assert_topological(plan)


def test_waves_keep_the_definitions_order() -> None:
    """Each wave (steps whose dependencies are all in earlier waves) in definition order."""
    steps = [{"name": f"w{i}", "kind": "shell", "command": "true",
              "depends_on": [f"r{i % 3}"] if i % 2 else []} for i in range(400)]
    steps += [{"name": f"r{i}", "kind": "shell", "command": "true"} for i in range(3)]
    plan = validate(spec(steps), {})
    assert_topological(plan)
    evens = [f"w{i}" for i in range(0, 400, 2)]
    odds = [f"w{i}" for i in range(1, 400, 2)]
    assert plan.order == [*evens, "r0", "r1", "r2", *odds]


def test_a_cycle_in_a_big_graph_is_reported_naming_its_steps() -> None:
    steps = all_to_all(500)[::-1]  # s0 .. s499 again
    steps[100]["depends_on"] = [*steps[100]["depends_on"], "s400"]  # s100 → s400 → s100
    found = problems(spec(steps))
    assert found == ["dependency cycle: s100 → s400 → s100"]


def test_a_long_cycle_is_named_step_by_step() -> None:
    n = 499
    steps = [{"name": f"c{i}", "kind": "shell", "command": "true",
              "depends_on": [f"c{(i + 1) % n}"]} for i in range(n)]
    steps.append({"name": "after", "kind": "shell", "command": "true", "depends_on": ["c0"]})
    expected = " → ".join([*(f"c{i}" for i in range(n)), "c0"])
    assert problems(spec(steps)) == [f"dependency cycle: {expected}"]


def test_too_many_steps_with_nesting_are_refused_before_any_check() -> None:
    child = {"name": "child", "steps": [{"name": f"i{i}", "command": "true"}
                                        for i in range(300)]}
    steps = [{"name": f"n{i}", "pipeline": child} for i in range(4)]
    assert problems(spec(steps)) == [
        f"more than {MAX_STEPS} steps (nested pipelines' steps included)"]
    assert validate(spec(steps[:3]), {}).order == ["n0", "n1", "n2"]


def test_too_many_dependencies_are_refused() -> None:
    per_step = MAX_EDGES // 400 + 1
    steps = [{"name": "a", "command": "true"}]
    steps += [{"name": f"s{i}", "command": "true", "depends_on": ["a"] * per_step}
              for i in range(400)]
    assert problems(spec(steps))[0].startswith(f"more than {MAX_EDGES} dependencies")
    steps[1]["depends_on"] = ["a"]
    steps[1]["command"] = "echo " + "${{ steps.a.outputs.x }}" * per_step * 400
    assert problems(spec(steps))[0].startswith(f"more than {MAX_EDGES} dependencies")


def test_deep_nesting_is_refused() -> None:
    definition: dict[str, Any] = {"name": "leaf", "steps": [{"name": "x", "command": "true"}]}
    for level in range(MAX_DEPTH):
        definition = {"name": f"l{level}", "steps": [{"name": "x", "pipeline": definition}]}
    assert problems(PipelineSpec.model_validate(definition)) == [
        f"pipelines nested more than {MAX_DEPTH} levels deep"]


def test_many_problems_are_counted_past_the_first_ones() -> None:
    params = {f"p{i}": "" for i in range(1000)}
    command = " ".join(f"${{{{ params.q{i} }}}}" for i in range(1000))
    found = problems(spec([{"name": "a", "command": command}], params=params))
    assert len(found) == MAX_PROBLEMS + 1
    assert found[-1] == f"... and {1000 - MAX_PROBLEMS} more problems"
    assert found[0].startswith("steps.a.command: unknown parameter 'q0' (declared: p0, p1, ")
    assert found[0].endswith(", ... (1000 in all))")


@pytest.mark.parametrize(("text", "expected"), [
    ("${{" + " " * 20000, []),  # the regex: cubic (minutes)
    ("${{" * 20000, []),  # the regex: quadratic
    ("${{ a\n" * 5000 + "}}", ["a"]),  # only the last ${{ reaches the }} on its line
    ("${{ a }}" * 5000, ["a"] * 5000),
])
def test_hostile_templates_are_scanned_in_linear_time(text: str, expected: list[str]) -> None:
    assert references(text) == expected
    assert render(text, {"a": "A"}).count("A") == len(expected)


@pytest.mark.parametrize("text", [
    "x ${{  params.a  }} ${{ steps.b.outputs.c}}${{d}}} ${{\n e \n}} ${{ f\ng }} ${{ h }}",
    "${{${{ a }}", "${{ }}", "${{}}}", "${{ a }} }}", "$${{{ a }}}", "${{ a\u00a0}}",
])
def test_templates_are_read_as_the_pattern_reads_them(text: str) -> None:
    assert references(text) == TEMPLATE.findall(text)
    values = {expr: f"<{expr}>" for expr in references(text)}
    assert render(text, values) == TEMPLATE.sub(lambda m: values[m.group(1)], text)


def test_a_hostile_template_in_a_definition_is_plain_text() -> None:
    plan = validate(spec([{"name": "a", "command": "echo ${{" + " " * 50000}]), {})
    assert plan.order == ["a"]
