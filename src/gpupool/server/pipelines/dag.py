"""Pure rules of a pipeline definition: parameters, references, dependencies and order
(templates are scanned and rendered by :mod:`gpupool.server.pipelines.templates`, re-exported
here). No I/O, no clock.

Templates are ``${{ params.NAME }}``, ``${{ steps.STEP.outputs.NAME }}`` (a value),
``${{ steps.STEP.files.NAME }}`` (the stored path of a file) and, in HTTP headers only,
``${{ secrets.NAME }}``. A reference to a step implies a dependency on it.

Validation is linear in the size of the definition (steps, dependencies, references), and
that size is bounded (``MAX_STEPS``, ``MAX_EDGES``, ``MAX_DEPTH``, checked before anything
else), so one request cannot hold the server's CPU: it is hostile input.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from gpupool.schemas.pipelines import ParamSpec, PipelineSpec, StepSpec
from gpupool.server.pipelines.templates import (
    TEMPLATE,
    as_text,
    references,
    render,
    render_any,
    scan,
)

__all__ = ["TEMPLATE", "PipelineInvalid", "Plan", "references", "render", "render_any",
           "validate"]

HTTP_OUTPUTS = ("status", "body")
MAX_STEPS = 1000
"""Steps of a definition, nested pipelines' steps included (the schema allows 500 a level)."""
MAX_EDGES = 250_000
"""``depends_on`` entries plus step references (``${{ steps.S... }}``), nested ones included:
room for 500 steps each depending on every earlier one (124,750), duplicates counted."""
MAX_DEPTH = 16
"""Levels of nested pipelines."""
MAX_PROBLEMS = 200
"""Problems named in one answer; the rest are counted."""
MAX_NAMES = 20
"""Declared names listed in one problem (``declared: a, b, ...``)."""


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


def resolve_params(spec: PipelineSpec, given: Mapping[str, Any], problems: list[str]) -> dict[
    str, Any
]:
    """Given parameters over defaults, typed; problems name unknown, missing or bad ones."""
    declared = spec.param_specs()
    result: dict[str, Any] = {}
    known = ""
    for name in given:
        if name not in declared:
            known = known or _listing(sorted(declared))
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
    return as_text(value)


def validate(spec: PipelineSpec, params: Mapping[str, Any], where: str = "") -> Plan:
    """The plan of a valid definition; PipelineInvalid naming every problem otherwise (the
    first ``MAX_PROBLEMS`` of them, then how many more).

    Checks: size (``MAX_STEPS``, ``MAX_EDGES``, ``MAX_DEPTH``: an oversized definition gets
    that one problem, nothing else is looked at); unique step names; ``depends_on`` and
    template references name existing steps, declared outputs/files and declared
    parameters; no cycles; nested definitions (their ``with`` must give their required
    parameters); pipeline outputs reference real outputs.
    """
    too_big = _size_problem(spec)
    if too_big is not None:
        raise PipelineInvalid([f"{where}{too_big}"])
    try:
        return _validate(spec, params, where)
    except PipelineInvalid as exc:
        if len(exc.problems) <= MAX_PROBLEMS:
            raise
        more = len(exc.problems) - MAX_PROBLEMS
        raise PipelineInvalid([*exc.problems[:MAX_PROBLEMS],
                               f"... and {more} more problems"]) from None


def _size_problem(spec: PipelineSpec) -> str | None:
    """Why the definition is too big to check, or None. Iterative: no recursion limit."""
    steps = edges = 0
    stack: list[tuple[PipelineSpec, int]] = [(spec, 1)]
    while stack:
        current, depth = stack.pop()
        if depth > MAX_DEPTH:
            return f"pipelines nested more than {MAX_DEPTH} levels deep"
        steps += len(current.steps)
        if steps > MAX_STEPS:
            return f"more than {MAX_STEPS} steps (nested pipelines' steps included)"
        for text in current.outputs.values():
            edges += _step_refs(text)
        for step in current.steps:
            edges += len(step.depends_on)
            for _, text in template_fields(step):
                edges += _step_refs(text)
            if step.pipeline is not None:
                stack.append((step.pipeline, depth + 1))
        if edges > MAX_EDGES:
            return (f"more than {MAX_EDGES} dependencies (depends_on entries and "
                    "${{ steps... }} references, nested pipelines' included)")
    return None


def _step_refs(text: str) -> int:
    return sum(1 for expr in references(text) if expr.startswith("steps."))


def _validate(spec: PipelineSpec, params: Mapping[str, Any], where: str) -> Plan:
    problems: list[str] = []
    resolved = resolve_params(spec, params, problems)
    steps: dict[str, StepSpec] = {}
    for step in spec.steps:
        if step.name in steps:
            problems.append(f"steps.{step.name}: two steps have this name")
        steps[step.name] = step
    names = _Declared(spec, steps)
    deps: dict[str, list[str]] = {}
    for step in spec.steps:
        found: dict[str, None] = {}  # insertion-ordered set: first mention first
        for dep in step.depends_on:
            if dep not in steps:
                problems.append(f"steps.{step.name}.depends_on: no step named {dep!r}")
            else:
                found[dep] = None
        for loc, text in template_fields(step):
            for expr in references(text):
                target = _check_ref(expr, names, step, loc, problems)
                if target is not None:
                    found[target] = None
        deps[step.name] = list(found)
        _check_step(step, problems)
    for key, text in spec.outputs.items():
        for expr in references(text):
            _check_ref(expr, names, None, f"outputs.{key}", problems)
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
            _validate(child, child_params, where=f"{where}.pipeline.")
        except PipelineInvalid as exc:
            problems.extend(exc.problems)


def _placeholder(pspec: ParamSpec) -> Any:
    return {"int": 0, "float": 0.0, "bool": False, "json": None}.get(pspec.type, "")


def _templated(value: Any) -> bool:
    return isinstance(value, str) and next(scan(value), None) is not None


class _Declared:
    """What references of one definition may name, each list built once (a reference is
    checked in O(1), whatever the number of parameters or outputs)."""

    def __init__(self, spec: PipelineSpec, steps: Mapping[str, StepSpec]) -> None:
        self.steps = steps
        self.params = set(spec.params)
        self._params_text: str | None = None
        self._spec = spec
        self._sets: dict[tuple[str, str], tuple[list[str], set[str]]] = {}
        self._texts: dict[tuple[str, str], str] = {}

    def params_text(self) -> str:
        if self._params_text is None:
            self._params_text = _listing(sorted(self._spec.params))
        return self._params_text

    def has(self, name: str, what: str, key: str) -> bool:
        found = self._sets.get((name, what))
        if found is None:
            target = self.steps[name]
            listed = step_outputs(target) if what == "outputs" else list(target.files)
            found = self._sets[name, what] = (listed, set(listed))
        return key in found[1]

    def text(self, name: str, what: str) -> str:
        """The declared outputs or files of a step, as a problem lists them (after has)."""
        text = self._texts.get((name, what))
        if text is None:
            text = self._texts[name, what] = _listing(self._sets[name, what][0])
        return text


def _listing(names: Iterable[str]) -> str:
    """``a, b, c``, the first MAX_NAMES of them, then how many in all; ``none`` if empty."""
    items = list(names)
    if len(items) > MAX_NAMES:
        return ", ".join(items[:MAX_NAMES]) + f", ... ({len(items)} in all)"
    return ", ".join(items) or "none"


def _check_ref(
    expr: str,
    names: _Declared,
    step: StepSpec | None,
    loc: str,
    problems: list[str],
) -> str | None:
    """Check one reference; return the step it depends on (None: not a step reference)."""
    where = f"steps.{step.name}.{loc}" if step is not None else loc
    parts = expr.split(".")
    if parts[0] == "params" and len(parts) == 2:
        if parts[1] not in names.params:
            known = names.params_text()
            problems.append(f"{where}: unknown parameter {parts[1]!r} (declared: {known})")
        return None
    if parts[0] == "secrets" and len(parts) == 2:
        if not loc.startswith("http.headers."):
            problems.append(f"{where}: secrets are injected with `secrets:` (env or file); "
                            "${{ secrets.X }} is allowed in http.headers only")
        return None
    if parts[0] == "steps" and len(parts) >= 4 and parts[2] in ("outputs", "files"):
        name, what, key = parts[1], parts[2], ".".join(parts[3:])
        if name not in names.steps:
            problems.append(f"{where}: no step named {name!r}")
            return None
        if step is not None and name == step.name:
            problems.append(f"{where}: a step cannot use its own outputs (cycle {name} → {name})")
            return None
        if not names.has(name, what, key):
            have = names.text(name, what)
            problems.append(f"{where}: step {name!r} declares no {what[:-1]} {key!r} "
                            f"(declared {what}: {have})")
            return None
        return name
    problems.append(f"{where}: unknown reference ${{{{ {expr} }}}} (use params.X, "
                    "steps.S.outputs.X or steps.S.files.X)")
    return None


def _order(deps: Mapping[str, list[str]], names: list[str], problems: list[str]) -> list[str]:
    """Kahn's order in waves: each wave is every step whose dependencies are all in earlier
    waves, in the definition's order. A cycle is reported as ``a → b → a``. O(V + E) (plus
    sorting each wave)."""
    index: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in deps:
            index.setdefault(name, i)
    waiting = dict.fromkeys(index, 0)
    users: dict[str, list[str]] = {name: [] for name in index}
    for name in index:
        for dep in dict.fromkeys(deps[name]):
            if dep in index:  # a name that is not a step is no dependency
                waiting[name] += 1
                users[dep].append(name)
    done: list[str] = []
    wave = [name for name in index if waiting[name] == 0]
    while wave:
        done.extend(wave)
        ready: list[str] = []
        for name in wave:
            for user in users[name]:
                waiting[user] -= 1
                if waiting[user] == 0:
                    ready.append(user)
        wave = sorted(ready, key=index.__getitem__)
    if len(done) < len(index):
        placed = set(done)
        left = [name for name in index if name not in placed]
        problems.append(f"dependency cycle: {' → '.join(_cycle(deps, left))}")
    return done


def _cycle(deps: Mapping[str, list[str]], left: list[str]) -> list[str]:
    """A cycle among ``left`` (steps that never became ready: each has a dependency among
    them), found from the first: follow each step's first such dependency until one
    repeats."""
    inside = set(left)
    path: list[str] = []
    at: dict[str, int] = {}
    node = left[0]
    while node not in at:
        at[node] = len(path)
        path.append(node)
        node = next(d for d in deps[node] if d in inside)
    return [*path[at[node]:], node]
