"""The GPU board's history (server/metrics/gpu_board.py): per GPU, the mean utilisation of
each 5-minute bucket of the last 6 hours, whatever the sample interval; buckets without a
sample are None; older buckets fall off."""

from __future__ import annotations

import pytest

from gpupool.server.metrics.gpu_board import BUCKET_S, HISTORY_BUCKETS, Board, GpuBoard


def sample(board: GpuBoard, at: float, *utils: float) -> None:
    board.publish(Board(tuple(("n0", i, u, 0) for i, u in enumerate(utils)), (), at))


def test_each_bucket_is_the_mean_of_its_samples_and_gaps_are_none() -> None:
    board = GpuBoard()
    t0 = 1_000_000 * BUCKET_S  # a bucket's start
    for k in range(10):  # ten samples 10 s apart in the first bucket: 0.0 … 0.9
        sample(board, t0 + 10 * k, k / 10, 1.0)
    sample(board, t0 + 2 * BUCKET_S + 5, 0.5, 0.25)  # two buckets later; the one between empty
    starts, rows = board.history(t0 + 2 * BUCKET_S + 30)
    assert len(starts) == HISTORY_BUCKETS and starts[-1] == t0 + 2 * BUCKET_S
    first, second = rows
    assert first[:2] == ("n0", 0) and second[:2] == ("n0", 1)
    assert first[2][-3] == pytest.approx(0.45) and first[2][-2] is None
    assert first[2][-1] == 0.5 and second[2][-3] == 1.0 and second[2][-1] == 0.25
    assert all(u is None for u in first[2][:-3])


def test_history_keeps_six_hours() -> None:
    board = GpuBoard()
    for k in range(HISTORY_BUCKETS + 10):
        sample(board, k * BUCKET_S, 0.1)
    starts, [(_, _, utils)] = board.history((HISTORY_BUCKETS + 9) * BUCKET_S)
    assert starts[0] == 10 * BUCKET_S and utils == [pytest.approx(0.1)] * HISTORY_BUCKETS
