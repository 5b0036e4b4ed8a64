"""The work dir: the part of the server's files that workloads may reach.

The data dir (database, keys, tokens, logs, the supervisor's control files) is 0700 and the
server's alone. Workloads get their own tree, the work dir (``Settings.jobs_root``), owned
by the server and mode 0711 (others may pass through, never list):

``jobs/<job>/<attempt>[/rank<N>]``  the attempt's own directory, owned by the job's account,
                                   0700 (``$GPUPOOL_JOB_DIR``: its scratch space and outputs);
``shares/<job>/<attempt>/``        0755, the server's: ``limit`` (0644, the interposer's
                                   per-GPU limit, which the job can read but not change) and
                                   ``gpushare`` (the job's ledger, owned by the job's account);
``pipelines/<run>/<step>/<attempt>``  a pipeline step's own directory, as for jobs;
``envs/<job>``                      a notebook's own directory, owned by its account, 0700,
                                   kept across its attempts (removed when it is deleted);
``lib/``, ``bin/``                 0755: the interposer every account can load, the secret
                                   masking wrapper of pipeline steps, and ``python`` /
                                   ``python3`` links to an interpreter every account can run.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from gpupool.executors.interpreter import job_path, job_python, link_python, make_tree, publish
from gpupool.executors.local import make_passable
from gpupool.server.pipelines import masked_run

MASKED_RUN = "masked_run.py"


class Workspace:
    """Paths in the work dir ``root``; :meth:`prepare` creates it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.python = job_python()
        """The interpreter jobs get as ``python``."""

    @property
    def jobs(self) -> Path:
        return self.root / "jobs"

    @property
    def shares(self) -> Path:
        return self.root / "shares"

    @property
    def pipelines(self) -> Path:
        return self.root / "pipelines"

    @property
    def envs(self) -> Path:
        return self.root / "envs"

    def env_dir(self, job_id: int) -> Path:
        return self.envs / str(job_id)

    def drop_env_dir(self, job_id: int) -> None:
        shutil.rmtree(self.env_dir(job_id), ignore_errors=True)

    @property
    def bin(self) -> Path:
        return self.root / "bin"

    @property
    def lib(self) -> Path:
        return self.root / "lib"

    def job_dir(self, job_id: int, attempt: int, rank: int | None = None) -> Path:
        path = self.jobs / str(job_id) / str(attempt)
        return path if rank is None else path / f"rank{rank}"

    def share_dir(self, job_id: int, attempt: int) -> Path:
        return self.shares / str(job_id) / str(attempt)

    def hidden(self) -> list[str]:
        """What a sandbox empties (each workload gets its own parts bound back)."""
        return [str(self.jobs), str(self.shares), str(self.pipelines), str(self.envs)]

    def job_path(self) -> str:
        """Workloads' PATH (see :func:`~gpupool.executors.interpreter.job_path`), with
        ``bin/`` (``python``) before the system's directories."""
        return job_path(self.python, [str(self.bin)])

    def prepare(self, interposer: str | None) -> str | None:
        """Create the tree (idempotent) and return where the interposer is published for
        every account to load (None if there is none). Raises OSError."""
        make_tree(((self.root, 0o711), (self.jobs, 0o711), (self.shares, 0o711),
                   (self.pipelines, 0o711), (self.envs, 0o711), (self.bin, 0o755),
                   (self.lib, 0o755)))
        link_python(self.bin, self.python)
        publish(masked_run.__file__, self.lib / MASKED_RUN, 0o644)
        if interposer is None:
            return None
        return str(publish(interposer, self.lib / Path(interposer).name, 0o755))

    def masked_runner(self) -> list[str]:
        """How a workload's account starts ``masked_run`` (stdlib only: run isolated)."""
        return [self.python, "-I", str(self.lib / MASKED_RUN)]

    def new_share_dir(self, job_id: int, attempt: int) -> Path:
        """The attempt's share dir, created 0755 (the server's; entries are not the job's to
        replace)."""
        path = self.share_dir(job_id, attempt)
        make_passable(str(path.parent))
        path.mkdir(exist_ok=True)
        os.chmod(path, 0o755)
        return path

    def drop_share_dir(self, job_id: int, attempt: int) -> None:
        shutil.rmtree(self.share_dir(job_id, attempt), ignore_errors=True)

