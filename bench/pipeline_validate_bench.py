"""CPU seconds to validate a pipeline definition (``POST /api/v1/pipelines/validate`` does
nothing else), before and after the fix of hostile-input item 9.

Shapes: ``all-to-all`` (step i ``depends_on`` every earlier step: n(n-1)/2 edges, the steps
listed last first) and ``chain`` (step i depends on step i-1), at 100, 250 and 500 steps
(the schema's limit per level); plus one hostile template (``${{`` and a run of spaces in a
command). "before" is ``OldValidate`` below, a REFERENCE COPY of the code as it was (not
used by gpupool); "after" is ``gpupool.server.pipelines.dag.validate``. Both give the same
plan. The definitions are parsed once, outside the timing.

    .venv/bin/python bench/pipeline_validate_bench.py [--repeat 5] [--skip-before-500]

writes bench/results/pipeline_validate.md and .json.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from _common import RESULTS, machine
from gpupool.schemas.pipelines import PipelineSpec, StepSpec
from gpupool.server.pipelines import dag

# -- REFERENCE: the code before the fix (dag.py as it was), for the "before" column only ----
# The dependency loop of validate (list membership), _order/_cycle (list membership, one
# pass over every step per wave) and the backtracking TEMPLATE regex. Parameter and nested
# checks, identical before and after, are left out of both columns' difference.

OLD_TEMPLATE = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")


def old_references(text: str) -> list[str]:
    return OLD_TEMPLATE.findall(text)


def old_validate(spec: PipelineSpec, params: Mapping[str, Any]) -> dag.Plan:
    problems: list[str] = []
    resolved = dag.resolve_params(spec, params, problems)
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
        for loc, text in dag.template_fields(step):
            for expr in old_references(text):
                target = old_check_ref(expr, steps, spec, step, loc, problems)
                if target is not None and target not in found:
                    found.append(target)
        deps[step.name] = found
    order = old_order(deps, [s.name for s in spec.steps], problems)
    if problems:
        raise dag.PipelineInvalid(problems)
    return dag.Plan(resolved, deps, order)


def old_check_ref(expr: str, steps: Mapping[str, StepSpec], spec: PipelineSpec,
                  step: StepSpec, loc: str, problems: list[str]) -> str | None:
    where = f"steps.{step.name}.{loc}"
    parts = expr.split(".")
    if parts[0] == "params" and len(parts) == 2:
        if parts[1] not in spec.params:
            known = ", ".join(sorted(spec.params)) or "none"
            problems.append(f"{where}: unknown parameter {parts[1]!r} (declared: {known})")
        return None
    if parts[0] == "steps" and len(parts) >= 4 and parts[2] in ("outputs", "files"):
        name, what, key = parts[1], parts[2], ".".join(parts[3:])
        target = steps.get(name)
        if target is None:
            problems.append(f"{where}: no step named {name!r}")
            return None
        declared = dag.step_outputs(target) if what == "outputs" else list(target.files)
        if key not in declared:
            problems.append(f"{where}: step {name!r} declares no {what[:-1]} {key!r}")
            return None
        return name
    problems.append(f"{where}: unknown reference ${{{{ {expr} }}}}")
    return None


def old_order(deps: Mapping[str, list[str]], names: list[str], problems: list[str]
              ) -> list[str]:
    done: list[str] = []
    left = [n for n in names if n in deps]
    while left:
        ready = [n for n in left if all(d in done or d not in deps for d in deps[n])]
        if not ready:
            problems.append(f"dependency cycle: {' → '.join(old_cycle(deps, left))}")
            return done
        done.extend(ready)
        left = [n for n in left if n not in ready]
    return done


def old_cycle(deps: Mapping[str, list[str]], left: list[str]) -> list[str]:
    path: list[str] = []
    node = left[0]
    while node not in path:
        path.append(node)
        node = next(d for d in deps[node] if d in left)
    return [*path[path.index(node):], node]

# -- end of the reference copy --------------------------------------------------------------


def definition(shape: str, n: int) -> PipelineSpec:
    steps: list[dict[str, Any]] = []
    for i in range(n):
        step: dict[str, Any] = {"name": f"s{i}", "kind": "shell", "command": "true"}
        if shape == "all-to-all":
            step["depends_on"] = [f"s{j}" for j in range(i)]
        elif shape == "chain" and i:
            step["depends_on"] = [f"s{i - 1}"]
        elif shape.startswith("template"):
            step["command"] = "echo ${{" + " " * int(shape.split()[-1])
        steps.append(step)
    return PipelineSpec.model_validate({"name": "bench", "steps": steps[::-1]})


def cpu_seconds(fn: Callable[[], object], repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs of the new code per case")
    parser.add_argument("--skip-before-500", action="store_true",
                        help="skip the old code at 500 all-to-all (about 40 s)")
    args = parser.parse_args()
    cases = [(shape, n) for shape in ("all-to-all", "chain") for n in (100, 250, 500)]
    cases.append(("template ${{ + spaces 2000", 1))
    rows = []
    for shape, n in cases:
        spec = definition(shape, n)
        after_plan = dag.validate(spec, {})
        after = cpu_seconds(lambda s=spec: dag.validate(s, {}), args.repeat)
        slow = (shape == "all-to-all" and n == 500) or shape.startswith("template")
        before: list[float] | None = None
        if not (args.skip_before_500 and shape == "all-to-all" and n == 500):
            runs = 1 if slow else min(args.repeat, 3)
            before = cpu_seconds(lambda s=spec: old_validate(s, {}), runs)
            assert old_validate(spec, {}) == after_plan, "before and after disagree"
        edges = sum(len(d) for d in after_plan.depends_on.values())
        row = {"shape": shape, "steps": n, "edges": edges,
               "before_s": statistics.median(before) if before else None,
               "before_runs": len(before) if before else 0,
               "after_s": statistics.median(after), "after_runs": len(after)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    write(rows)


def write(rows: list[dict[str, Any]]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    meta = {"machine": machine(), "measure": "time.process_time() of one validate call, "
            "median of the runs", "rows": rows}
    (RESULTS / "pipeline_validate.json").write_text(json.dumps(meta, indent=2) + "\n")
    lines = [
        "# Pipeline validation: CPU seconds per definition (hostile input, item 9)",
        "",
        "`bench/pipeline_validate_bench.py`; one `validate` call (what POST "
        "/api/v1/pipelines/validate does after parsing), CPU seconds, median of the runs. "
        "*before*: a reference copy of the old code in the bench; *after*: "
        "`gpupool.server.pipelines.dag.validate`. Same plan from both.",
        f"Machine: {meta['machine']}.",
        "",
        "| shape | steps | edges | before (s) | after (s) | speed-up |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        before = "not run" if r["before_s"] is None else f"{r['before_s']:.4f}"
        ratio = "" if r["before_s"] is None else f"{r['before_s'] / max(r['after_s'], 1e-6):,.0f}×"
        lines.append(f"| {r['shape']} | {r['steps']} | {r['edges']:,} | {before} | "
                     f"{r['after_s']:.4f} | {ratio} |")
    (RESULTS / "pipeline_validate.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
