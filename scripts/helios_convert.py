"""Convert a Helios / Acme job log into a gpupool workload CSV for ``gpupool sim --workload``.

Usage (from the repository):

    .venv/bin/python scripts/helios_convert.py cluster_log.csv venus.csv

Prints what was kept and skipped (see ``gpupool.sim.helios`` for the rules); exit code 2 and
one line naming the file, line and column when the input is not a job log. A script rather
than a ``gpupool sim`` subcommand: ``gpupool sim`` is one command with options, not a group.
"""

from __future__ import annotations

import argparse
import sys

from gpupool.sim.helios import convert_helios
from gpupool.sim.workload import WorkloadError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", help="the job log CSV (Helios cluster_log.csv or Acme format)")
    parser.add_argument("dst", help="the workload CSV to write")
    args = parser.parse_args(argv)
    try:
        summary = convert_helios(args.src, args.dst)
    except WorkloadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot write {args.dst}: {exc.strerror}", file=sys.stderr)
        return 2
    print(f"{summary.jobs} GPU jobs written to {args.dst}; skipped {summary.skipped_cpu} CPU "
          f"jobs and {summary.skipped_bad} unreadable rows")
    if summary.first_bad:
        print(f"first unreadable row: {summary.first_bad}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
