"""The FGD artifact's published results (``analysis_allo_discrete.csv``), for comparison.

The file holds, per (workload, policy, seed), the *allocated* GPU percent at each arrived
percent 0..130; unallocated = 100 - allocated.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from gpupool.sim.protocol import FloatArray
from gpupool.sim.trace import TraceError

ARTIFACT_POLICY_NAMES = {
    "01-Random": "random",
    "02-DotProd": "dotprod",
    "03-GpuClustering": "clustering",
    "04-GpuPacking": "packing",
    "05-BestFit": "bestfit",
    "06-FGD": "fgd",
}


def load_artifact_unallocated(path: str | Path) -> dict[tuple[str, str], dict[int, FloatArray]]:
    """{(workload, policy): {seed: unallocated % per arrived bucket 0..130}}.

    ``workload`` is the pod file's stem (``openb_pod_list_default``); ``policy`` uses
    gpupool's names (``fgd``, ``bestfit``, ...).
    """
    path = Path(path)
    result: dict[tuple[str, str], dict[int, FloatArray]] = {}
    try:
        with path.open(newline="") as handle:
            reader = csv.reader(handle)
            header = next(reader)
            first = header.index("0")
            for row_number, row in enumerate(reader, start=2):
                policy = ARTIFACT_POLICY_NAMES.get(row[1], row[1])
                try:
                    allocated = np.array([float(v) for v in row[first:]], dtype=np.float64)
                    seed = int(row[3])
                except ValueError as exc:
                    raise TraceError(str(path), row_number, None, f"not a number: {exc}") from None
                result.setdefault((row[0], policy), {})[seed] = 100.0 - allocated
    except OSError as exc:
        raise TraceError(str(path), None, None, f"cannot read: {exc.strerror}") from None
    except (StopIteration, ValueError):
        raise TraceError(str(path), 1, None, "not an artifact results file") from None
    return result
