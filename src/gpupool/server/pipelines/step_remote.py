"""Job steps on nodes of other machines (a Ray pool): nothing of the server's disk is there,
so what a step reads and writes travels with it.

- Its inputs: every file of an earlier step that its command or environment names (a path
  under the pipelines' ``files/``) is packed, with empty ``outputs/`` and ``outputs/files/``
  folders, into a code archive of the run's team (``services/code_store.keep``); the node
  unpacks it into the attempt's own directory, which is the job's working directory, and
  each such path in the command and environment becomes ``inputs/<step>/<name>``
  (relative to it). ``$GPUPOOL_OUTPUTS`` is ``outputs``, which the executor makes absolute
  against that directory.
- Its outputs: the job declares ``artifacts: [outputs/]``; once it succeeded and its node
  sent them back (server/artifacts.py), they are unpacked into the attempt's outputs folder
  on the server, where the engine collects them as for a local step.

Not passed to such nodes yet: secrets (the step is refused, saying so) and a step's own
``workdir`` (refused too: it runs in its shipped directory).
"""

from __future__ import annotations

import io
import shutil
import tarfile
from pathlib import Path

from gpupool.executors.code_unpack import UnsafeArchive, unpack
from gpupool.server.artifacts import ArtifactStore
from gpupool.server.db.database import Database
from gpupool.server.pipelines.steps import RUNNING, Attempt, Status
from gpupool.server.services import code_store

OUTPUTS = "outputs"


class RemoteFiles:
    """Ships job steps' files to and from nodes of other machines (see the module)."""

    def __init__(self, db: Database, home: Path, files_root: Path,
                 artifacts: ArtifactStore) -> None:
        self.db = db
        self.home = home
        self.files_root = files_root
        self.artifacts = artifacts

    def ship(self, attempt: Attempt) -> str:
        """Pack the attempt's inputs (rewriting ``attempt.argv`` and ``attempt.env`` in
        place) and store the archive for its team; the archive's digest. ValueError for a
        step that cannot run on such a node."""
        if attempt.step.secrets:
            raise ValueError("secrets are not passed to Ray nodes yet: run this step on a "
                             "server without --ray")
        if attempt.step.workdir:
            raise ValueError("workdir: on Ray nodes a job step runs in its own directory, "
                             "where its inputs are")
        root = str(self.files_root) + "/"
        shipped: dict[str, str] = {}

        def swap(text: str) -> str:
            for word in {w for w in text.replace("=", " ").split() if w.startswith(root)}:
                rel = word[len(root):].split("/", 1)[1] if "/" in word[len(root):] else ""
                if not rel or ".." in rel.split("/") or not Path(word).is_file():
                    continue
                shipped[word] = f"inputs/{rel}"
                text = text.replace(word, shipped[word])
            return text

        attempt.argv = [swap(a) for a in attempt.argv]
        attempt.env = {k: swap(v) for k, v in attempt.env.items()}
        attempt.env["GPUPOOL_OUTPUTS"] = OUTPUTS
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w:gz") as tar:
            for folder in (OUTPUTS, f"{OUTPUTS}/files"):
                info = tarfile.TarInfo(folder)
                info.type, info.mode = tarfile.DIRTYPE, 0o700
                tar.addfile(info)
            for path, rel in sorted(shipped.items()):
                tar.add(path, arcname=rel, recursive=False)
        return code_store.keep(self.db, self.home, attempt.principal.team_id,
                               attempt.principal.user_id, raw.getvalue())

    def fetch_outputs(self, attempt: Attempt, job_id: int, team_id: int) -> Status | None:
        """None once the job's outputs are in the attempt's outputs folder; RUNNING while
        its node is still sending them; a failed Status when they cannot be had."""
        entries = self.artifacts.manifests(team_id, job_id)
        if not entries or entries[-1].get("status") == "collecting":
            return RUNNING
        last = entries[-1]
        if last.get("status") != "kept":
            return Status("failed", "error", f"its outputs did not come back from its node: "
                                             f"{last.get('status')}")
        archive = self.artifacts.archive(team_id, job_id, int(last["attempt"]))
        staging = attempt.outputs_dir.parent / f".{OUTPUTS}-from-node"
        try:
            with tarfile.open(archive, mode="r:gz") as tar:
                unpack(tar, str(staging))
            returned = staging / OUTPUTS
            if returned.is_dir():
                for item in returned.iterdir():
                    item.replace(attempt.outputs_dir / item.name)
        except (UnsafeArchive, tarfile.TarError, OSError) as exc:
            return Status("failed", "error", f"its outputs could not be unpacked: {exc}")
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return None
