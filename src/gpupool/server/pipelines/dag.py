"""Pure rules of a pipeline definition: parameters, references, dependencies, order, and
template rendering. No I/O, no clock.

Templates are ``${{ params.NAME }}``, ``${{ steps.STEP.outputs.NAME }}`` (a value),
``${{ steps.STEP.files.NAME }}`` (the stored path of a file) and, in HTTP headers only,
``${{ secrets.NAME }}``. A reference to a step implies a dependency on it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from gpupool.schemas.pipelines import ParamSpec, PipelineSpec, StepSpec

TEMPLATE = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")
HTTP_OUTPUTS = ("status", "body")


class PipelineInvalid(ValueError):
    """The definition (or its parameters) breaks a rule; ``problems`` name each place."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Plan:
    """A valid definition: resolved parameters, each step's dependencies, a topological
    order (ties keep the definition's order)."""

    params: dict[str, Any]
    depends_on: dict[str, list[str]]
    order: list[str]


def step_outputs(step: StepSpec) -> list[str]:
    """The value outputs other steps may reference."""
    return list(HTTP_OUTPUTS) if step.kind == "http" else list(step.outputs)


def template_fields(step: StepSpec) -> Iterator[tuple[str, str]]:
    """Every templated string of a step with its location (``command[1]``, ``env.X``...)."""
    if isinstance(step.command, str):
        yield "command", step.command
    elif step.command is not None:
        for i, arg in enumerate(step.command):
            yield f"command[{i}]", arg
    for key, value in step.env.items():
        yield f"env.{key}", value
    for key, value in step.inputs.items():
        yield f"inputs.{key}", value
    if step.workdir is not None:
        yield "workdir", step.workdir
    for key, value in step.with_.items():
        yield from _nested(f"with.{key}", value)
    if step.http is not None:
        yield "http.url", step.http.url
        for key, value in step.http.headers.items():
            yield f"http.headers.{key}", value
        yield from _nested("http.body", step.http.body)


def _nested(where: str, value: Any) -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        yield where, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _nested(f"{where}.{key}", item)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _nested(f"{where}[{i}]", item)


def references(text: str) -> list[str]:
    """The expressions inside ``${{ ... }}`` of ``text``."""
    return TEMPLATE.findall(text)


def resolve_params(spec: PipelineSpec, given: Mapping[str, Any], problems: list[str]) -> dict[
    str, Any
]:
    """Given parameters over defaults, typed; problems name unknown, missing or bad ones."""
    declared = spec.param_specs()
    result: dict[str, Any] = {}
    for name in given:
        if name not in declared:
            known = ", ".join(sorted(declared)) or "none"
            problems.append(f"params.{name}: not a parameter of {spec.name} (declared: {known})")
    for name, pspec in declared.items():
        if name in given:
            value = given[name]
        elif pspec.default is not None:
            value = pspec.default
        else:
            problems.append(f"params.{name}: required (no default), give it with the run")
            continue
        try:
            result[name] = coerce(value, pspec)
        except ValueError as exc:
            problems.append(f"params.{name}: {exc}")
    return result


def coerce(value: Any, pspec: ParamSpec) -> Any:
    """``value`` as the parameter's type; ValueError saying what was expected."""
    kind = pspec.type
    if kind == "json":
        return value
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ValueError(f"expected a bool (true/false), got {value!r}")
    if kind == "int":
        if isinstance(value, bool):
            raise ValueError(f"expected an int, got {value!r}")
        try:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        except (TypeError, ValueError):
            raise ValueError(f"expected an int, got {value!r}") from None
    if kind == "float":
        if isinstance(value, bool):
            raise ValueError(f"expected a number, got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"expected a number, got {value!r}") from None
        if not math.isfinite(number):
            raise ValueError(f"expected a finite number, got {value!r}")
        return number
    if isinstance(value, dict | list):
        raise ValueError(f"expected a string, got {type(value).__name__}")
    return _text(value)


def validate(spec: PipelineSpec, params: Mapping[str, Any], where: str = "") -> Plan:
    """The plan of a valid definition; PipelineInvalid naming every problem otherwise.

    Checks: unique step names; ``depends_on`` and template references name existing steps,
    declared outputs/files and declared parameters; no cycles; nested definitions (their
    ``with`` must give their required parameters); pipeline outputs reference real outputs.
    """
    problems: list[str] = []
    resolved = resolve_params(spec, params, problems)
    steps: dict[str, StepSpec] = {}
    for step in spec.steps:
        if step.name in steps:
            problems.append(f"steps.{step.name}: two steps have this name")
        steps[step.name] = step
    deps: dict[str, list[str]] = {}
    for step in spec.steps:
        found: list[str] = []
        for dep in step.depends_on:
            if dep not in steps:
                problems.append(f"steps.{step.name}.depends_on: no step named {dep!r}")
            elif dep not in found:
                found.append(dep)
        for loc, text in template_fields(step):
            for expr in references(text):
                target = _check_ref(expr, steps, spec, step, loc, problems)
                if target is not None and target not in found:
                    found.append(target)
        deps[step.name] = found
        _check_step(step, problems)
    for key, text in spec.outputs.items():
        for expr in references(text):
            _check_ref(expr, steps, spec, None, f"outputs.{key}", problems)
    order = _order(deps, [s.name for s in spec.steps], problems)
    if problems:
        raise PipelineInvalid([f"{where}{p}" for p in problems])
    return Plan(resolved, deps, order)


def _check_step(step: StepSpec, problems: list[str]) -> None:
    where = f"steps.{step.name}"
    if step.kind == "http":
        extra = [o for o in step.outputs if o not in HTTP_OUTPUTS]
        if extra or step.files:
            problems.append(f"{where}.outputs: an http step's outputs are status and body only")
    if step.kind == "pipeline" and step.pipeline is not None:
        child = step.pipeline
        declared = child.param_specs()
        for key in step.outputs:
            if key not in child.outputs:
                problems.append(f"{where}.outputs: {key!r} is not an output of {child.name}")
        if step.files:
            problems.append(f"{where}.files: a nested pipeline passes values only")
        # Templated values are known only at run time: check the rest with a typed stand-in.
        child_params = {
            k: _placeholder(declared[k]) if k in declared and _templated(v) else v
            for k, v in step.with_.items()
        }
        try:
            validate(child, child_params, where=f"{where}.pipeline.")
        except PipelineInvalid as exc:
            problems.extend(exc.problems)


def _placeholder(pspec: ParamSpec) -> Any:
    return {"int": 0, "float": 0.0, "bool": False, "json": None}.get(pspec.type, "")


def _templated(value: Any) -> bool:
    return isinstance(value, str) and TEMPLATE.search(value) is not None


def _check_ref(
    expr: str,
    steps: Mapping[str, StepSpec],
    spec: PipelineSpec,
    step: StepSpec | None,
    loc: str,
    problems: list[str],
) -> str | None:
    """Check one reference; return the step it depends on (None: not a step reference)."""
    where = f"steps.{step.name}.{loc}" if step is not None else loc
    parts = expr.split(".")
    if parts[0] == "params" and len(parts) == 2:
        if parts[1] not in spec.params:
            known = ", ".join(sorted(spec.params)) or "none"
            problems.append(f"{where}: unknown parameter {parts[1]!r} (declared: {known})")
        return None
    if parts[0] == "secrets" and len(parts) == 2:
        if not loc.startswith("http.headers."):
            problems.append(f"{where}: secrets are injected with `secrets:` (env or file); "
                            "${{ secrets.X }} is allowed in http.headers only")
        return None
    if parts[0] == "steps" and len(parts) >= 4 and parts[2] in ("outputs", "files"):
        name, what, key = parts[1], parts[2], ".".join(parts[3:])
        target = steps.get(name)
        if target is None:
            problems.append(f"{where}: no step named {name!r}")
            return None
        if step is not None and name == step.name:
            problems.append(f"{where}: a step cannot use its own outputs (cycle {name} → {name})")
            return None
        declared = step_outputs(target) if what == "outputs" else list(target.files)
        if key not in declared:
            have = ", ".join(declared) or "none"
            problems.append(f"{where}: step {name!r} declares no {what[:-1]} {key!r} "
                            f"(declared {what}: {have})")
            return None
        return name
    problems.append(f"{where}: unknown reference ${{{{ {expr} }}}} (use params.X, "
                    "steps.S.outputs.X or steps.S.files.X)")
    return None


def _order(deps: Mapping[str, list[str]], names: list[str], problems: list[str]) -> list[str]:
    """Kahn's order; a cycle is reported as ``a → b → a``."""
    done: list[str] = []
    left = [n for n in names if n in deps]
    while left:
        ready = [n for n in left if all(d in done or d not in deps for d in deps[n])]
        if not ready:
            problems.append(f"dependency cycle: {' → '.join(_cycle(deps, left))}")
            return done
        done.extend(ready)
        left = [n for n in left if n not in ready]
    return done


def _cycle(deps: Mapping[str, list[str]], left: list[str]) -> list[str]:
    path: list[str] = []
    node = left[0]
    while node not in path:
        path.append(node)
        node = next(d for d in deps[node] if d in left)
    return [*path[path.index(node):], node]


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value)
    return "" if value is None else str(value)


def render(text: str, values: Mapping[str, Any]) -> str:
    """``text`` with every ``${{ expr }}`` replaced by ``values[expr]`` as text (JSON for
    lists and dicts); KeyError for an expression without a value."""
    return TEMPLATE.sub(lambda m: _text(values[m.group(1)]), text)


def render_any(value: Any, values: Mapping[str, Any]) -> Any:
    """``render`` applied to every string inside lists and dicts."""
    if isinstance(value, str):
        return render(value, values)
    if isinstance(value, dict):
        return {k: render_any(v, values) for k, v in value.items()}
    if isinstance(value, list):
        return [render_any(v, values) for v in value]
    return value
