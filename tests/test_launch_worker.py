"""Launching off the loop: a node that takes long to start a process delays only its own
job; the loop's steps go on (and other jobs start) meanwhile."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from fake_executor import ScriptedExecutor
from gpupool.executors.base import Handle, LaunchSpec
from gpupool.schemas.jobs import JobSpec, Phase
from inprocess import phase_of
from pool_twin import TeamDef, Twin


class SlowNodeExecutor(ScriptedExecutor):
    """Launches on node n0 block until ``release`` is set (a node that hangs)."""

    release: threading.Event

    def launch(self, spec: LaunchSpec) -> Handle:
        if spec.node == "n0":
            assert self.release.wait(timeout=60), "the test never released the slow node"
        return super().launch(spec)


def test_a_slow_launch_does_not_hold_up_the_loop(tmp_path: Path) -> None:
    twin = Twin(tmp_path, nodes=2, cards=1, teams=[TeamDef("a", 2, 0)])
    executor = SlowNodeExecutor(twin.clock)
    executor.release = threading.Event()
    c = twin.controller
    c.executor = c.launcher.executor = executor
    c.placing.worker.close()
    from gpupool.server.launch_worker import LaunchWorker
    c.placing.worker = LaunchWorker(c.placing._start, lambda: None, threads=2)
    try:
        slow = twin.submit("a", JobSpec(command=["true"], gpus=1))
        c.step()  # placed on n0 (bestfit, first node): its launch hangs
        assert phase_of(twin.db, slow) == Phase.STARTING.value
        fast = twin.submit("a", JobSpec(command=["true"], gpus=1))
        c.step()  # the loop is not blocked: the second job is placed on n1 and launched
        for _ in range(200):
            c.step()
            if phase_of(twin.db, fast) == Phase.RUNNING.value:
                break
            threading.Event().wait(0.01)
        assert phase_of(twin.db, fast) == Phase.RUNNING.value
        assert phase_of(twin.db, slow) == Phase.STARTING.value  # still launching
        twin.cancel(slow)  # cancelled while launching: stopped once its process exists
        c.step()
        executor.release.set()
        for _ in range(200):
            c.step()
            if phase_of(twin.db, slow) == Phase.CANCELLED.value:
                break
            threading.Event().wait(0.01)
        assert phase_of(twin.db, slow) == Phase.CANCELLED.value
    finally:
        executor.release.set()
        c.stop()
