"""The pure parts of GPU sampling, table-driven: host pids → attempts by process tree
(``executors.proc_tree.owners``), one NVML reading → per-attempt figures
(``server.gpu_figures``), the idle window, the tallies that become usage records, the
interposer-ledger fallback for memory NVML cannot tell, and the aggregate view of
``/metrics``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from gpupool.executors.nvml_sampler import CardReading, NvmlReading, ProcessReading
from gpupool.executors.proc_tree import Proc, owners, read_table
from gpupool.interposer import sharefile
from gpupool.server.gpu_figures import (
    Attempt,
    CardShare,
    IdleWindow,
    JobFigure,
    Tally,
    gpu_figures,
    job_figures,
)
from gpupool.server.gpu_watch import GpuWatch
from gpupool.server.metrics.collector import AggregateCollector

GIB = 1 << 30


def tree(*rows: tuple[int, int, int]) -> dict[int, Proc]:
    """``(pid, ppid, pgid)`` rows as a process table."""
    return {pid: Proc(ppid, pgid, 0) for pid, ppid, pgid in rows}


# -- pids → attempts -------------------------------------------------------------------

TABLE = tree(
    (1, 0, 1),
    (100, 1, 100),    # shim of job 7 (group leader)
    (101, 100, 100),  # its recorder
    (102, 101, 100),  # bwrap
    (103, 102, 100),  # the sandbox's init
    (104, 103, 100),  # the command (pid 2 in its namespace)
    (105, 104, 105),  # left the group with setsid, still below the shim
    (106, 1, 100),    # orphan reparented to init, still in the group
    (200, 1, 200),    # shim of job 8
    (201, 200, 200),
    (300, 1, 300),    # the server: nobody's
    (301, 300, 300),
)


@pytest.mark.parametrize(("pid", "job"), [
    (100, 7), (101, 7), (104, 7), (105, 7), (106, 7), (200, 8), (201, 8), (300, None),
    (301, None), (1, None),
])
def test_a_pid_belongs_to_the_attempt_whose_group_or_subtree_it_is_in(
        pid: int, job: int | None) -> None:
    assert owners(TABLE, {100: 7, 200: 8}).get(pid) == job


def test_ancestry_loops_and_missing_parents_end_the_walk() -> None:
    loop = tree((5, 6, 5), (6, 5, 6), (7, 99, 7))
    assert owners(loop, {100: 1}) == {}


def test_the_table_of_this_machine_has_this_process_under_its_parent() -> None:
    table = read_table()
    me = table[os.getpid()]
    assert me.ppid == os.getppid() and me.pgid == os.getpgrp() and me.start_time > 0
    assert owners(table, {os.getppid(): 1})[os.getpid()] == 1


# -- one reading → figures -------------------------------------------------------------


def card(index: int, util: float = 0.0, used: int = 0, per_process: bool = True
         ) -> CardReading:
    return CardReading(index, util, used, 80 * GIB, per_process)


def attempt(job: int, *cards: tuple[int, int], ledger: tuple[int, ...] | None = None
            ) -> Attempt:
    """An attempt holding ``(card, milli)`` shares (node n0, GPU index = card)."""
    return Attempt(job, 1, tuple(CardShare("n0", c, c, m) for c, m in cards), ledger)


def figure(figures: list[JobFigure], job: int) -> JobFigure:
    return next(f for f in figures if f.job_id == job)


def test_utilisation_is_the_processes_sm_share_of_the_allocation() -> None:
    reading = NvmlReading((card(0, 0.9, 10 * GIB), card(1, 0.5)), (
        ProcessReading(11, 0, 2 * GIB, 0.2),   # job 1, half of card 0
        ProcessReading(12, 0, 1 * GIB, 0.1),   # job 1 again
        ProcessReading(21, 0, 3 * GIB, 0.6),   # job 2, the other half
        ProcessReading(99, 0, 4 * GIB, 0.05),  # nobody's
        ProcessReading(31, 1, None, 0.5),      # job 3: memory not told, no ledger
    ))
    owner = {11: 1, 12: 1, 21: 2, 31: 3}
    figures = job_figures(reading, [attempt(1, (0, 500)), attempt(2, (0, 500)),
                                    attempt(3, (1, 1000))], owner)
    one, two, three = (figure(figures, j) for j in (1, 2, 3))
    assert one.utilization == pytest.approx(0.6) and one.memory_bytes == 3 * GIB
    assert two.utilization == 1.0  # 0.6 of the card is more than its half: capped
    assert three.utilization == 0.5 and three.memory_bytes is None


def test_without_per_process_utilisation_only_a_sole_holder_gets_the_cards() -> None:
    reading = NvmlReading((card(0, 0.8, per_process=False), card(1, 0.4, per_process=False)),
                          ())
    figures = job_figures(reading, [attempt(1, (0, 1000)), attempt(2, (1, 500)),
                                    attempt(3, (1, 500))], {})
    assert figure(figures, 1).utilization == 0.8
    assert figure(figures, 2).utilization is None  # card 1 is shared: unknown
    assert figure(figures, 1).memory_bytes == 0  # no process: nothing held


def test_an_unread_card_makes_the_attempt_unknown() -> None:
    reading = NvmlReading((card(0, 0.3),), ())
    (only,) = job_figures(reading, [attempt(1, (0, 1000), (1, 1000))], {})
    assert only.utilization is None and only.gpus == 2


def test_the_ledger_tells_memory_nvml_cannot() -> None:
    reading = NvmlReading((card(0),), (ProcessReading(11, 0, None, 0.0),))
    (only,) = job_figures(reading, [attempt(1, (0, 1000), ledger=(3 * GIB, GIB))], {11: 1})
    assert only.memory_bytes == 4 * GIB and only.card_memory_bytes == 3 * GIB


def test_gpu_rows_follow_each_nodes_physical_cards() -> None:
    reading = NvmlReading((card(0, 0.1, 1), card(2, 0.3, 3)), ())
    rows = gpu_figures(reading, {"h/A100": (0, 1), "h/T4": (2,)})
    assert [(r.node, r.gpu, r.utilization, r.memory_used_bytes) for r in rows] == [
        ("h/A100", 0, 0.1, 1), ("h/T4", 0, 0.3, 3)]  # card 1 was not read: left out


# -- the idle window -------------------------------------------------------------------


def test_idle_is_flagged_after_the_window_and_cleared_by_use() -> None:
    window = IdleWindow(10)
    key = (1, 1)
    for t, util in ((0, 0.01), (5, None), (9, 0.04)):
        window.observe(key, util, t)
        assert window.flagged_since(key, t) is None
    window.observe(key, 0.0, 10)
    assert window.flagged_since(key, 10) == 0
    window.observe(key, 0.05, 11)  # 5 % is not idle
    assert window.flagged_since(key, 30) is None
    window.observe(key, 0.0, 12)
    assert window.flagged_since(key, 21) is None and window.flagged_since(key, 22) == 12
    window.keep([])
    assert window.flagged_since(key, 100) is None


def test_an_idle_spell_resumes_after_a_restart() -> None:
    window = IdleWindow(10)
    window.resume((1, 1), 50.0)
    window.observe((1, 1), 0.0, 55)
    assert window.flagged_since((1, 1), 60) == 50.0


def test_the_window_must_be_positive() -> None:
    with pytest.raises(ValueError, match="idle_after_s"):
        IdleWindow(0)


# -- tallies ---------------------------------------------------------------------------


def test_used_gpu_seconds_count_utilisation_times_gpus_times_time() -> None:
    tally = Tally()
    half = JobFigure(1, 1, 2.0, 0.5, 3 * GIB, 2 * GIB)
    assert tally.add(half, 100.0, 10.0)  # the first sample starts the clock
    assert tally.used_gpu_s == 0 and tally.util_peak == 0.5 and tally.memory_peak_mib == 2048
    tally.add(half, 110.0, 10.0)
    assert tally.used_gpu_s == 10.0 and tally.measured_s == 10
    tally.add(JobFigure(1, 1, 2.0, 1.0, 0, 0), 200.0, 10.0)  # a 90 s pause counts 30 s
    assert tally.used_gpu_s == 70.0 and tally.measured_s == 40 and tally.util_peak == 1.0
    assert not tally.add(JobFigure(1, 1, 2.0, None, None, None), 210.0, 10.0)
    tally.add(JobFigure(1, 1, 2.0, 0.0, 0, 0), 215.0, 10.0)
    assert tally.used_gpu_s == 70.0 and tally.measured_s == 55


# -- the ledger, matched to the attempt's live processes -------------------------------


def test_only_ledger_records_of_the_attempts_live_processes_count(tmp_path: Path) -> None:
    path = sharefile.create(tmp_path / "job.share")
    table = read_table()
    me = os.getpid()
    data = bytearray(path.read_bytes())
    for slot, (pid, start, used) in enumerate(((me, table[me].start_time, 5 * GIB),
                                               (me, table[me].start_time + 1, GIB),  # reused
                                               (os.getppid(), 0, 2 * GIB))):  # not its own
        record = sharefile._RECORD.pack(pid, 0, start, used, *[0] * (sharefile.MAX_DEVS - 1))
        at = sharefile.HEADER_SIZE + slot * sharefile._RECORD.size
        data[at:at + len(record)] = record
    path.write_bytes(bytes(data))
    ledger = GpuWatch._ledger(path, [me], table)
    assert ledger is not None and ledger[0] == 5 * GIB and sum(ledger) == 5 * GIB
    assert GpuWatch._ledger(tmp_path / "none", [me], table) is None


# -- the aggregate view ----------------------------------------------------------------


class _Families:
    def collect(self):  # type: ignore[no-untyped-def]
        jobs = GaugeMetricFamily("gpupool_jobs", "", labels=["phase", "queue", "kind"])
        jobs.add_metric(["running", "ml", "job"], 2)
        jobs.add_metric(["running", "cv", "job"], 3)
        jobs.add_metric(["pending", "cv", "notebook"], 1)
        util = GaugeMetricFamily("gpupool_job_gpu_utilization_ratio", "", labels=["job", "team"])
        util.add_metric(["7", "ml"], 0.5)
        gpu = GaugeMetricFamily("gpupool_gpu_utilization_ratio", "", labels=["node", "gpu"])
        gpu.add_metric(["n0", "0"], 0.25)
        preempted = CounterMetricFamily("gpupool_preemptions", "", labels=["queue"])
        preempted.add_metric(["ml"], 1)
        yield from (jobs, util, gpu, preempted)


def test_the_aggregate_view_names_no_team_queue_or_job() -> None:
    out = {f.name: {tuple(sorted(s.labels.items())): s.value for s in f.samples}
           for f in AggregateCollector(_Families()).collect()}  # type: ignore[arg-type]
    assert out == {
        "gpupool_jobs": {(("kind", "job"), ("phase", "running")): 5,
                         (("kind", "notebook"), ("phase", "pending")): 1},
        "gpupool_gpu_utilization_ratio": {(("gpu", "0"), ("node", "n0")): 0.25},
    }
