"""Retention: the pure plan (table of scenarios) and the Log mechanism that carries it out."""

from __future__ import annotations

import os
import threading

import pytest

from logstore import Log, LogConfig, OffsetOutOfRangeError
from logstore.background import enforce_retention
from logstore.retention import SegmentInfo, plan_retention

DAY = 24 * 3600 * 1000
NOW = 1_800_000_000_000


def seg(base, next_offset, size=100, ts=NOW - 10 * DAY, mtime=None):
    # by default the file was last written when its newest record was stamped
    return SegmentInfo(base, next_offset, size, ts, ts if mtime is None else mtime)


def plan(segments, **kw):
    kw.setdefault("now_ms", NOW)
    kw.setdefault("retention_ms", None)
    kw.setdefault("retention_bytes", None)
    kw.setdefault("log_start_offset", 0)
    kw.setdefault("high_watermark", segments[-1].next_offset if segments else 0)
    return plan_retention(segments, **kw)


def test_no_limits_delete_nothing():
    assert plan([seg(0, 10), seg(10, 20)]).empty
    assert plan([]).empty


def test_time_limit_deletes_an_old_prefix_only():
    segments = [seg(0, 10), seg(10, 20, ts=NOW), seg(20, 30), seg(30, 40, ts=NOW)]
    result = plan(segments, retention_ms=DAY)
    assert result.base_offsets == (0,) and result.reasons == ("retention_ms",)  # stops at the young one
    assert not result.includes_active


def test_time_limit_includes_the_active_segment_when_due():
    result = plan([seg(0, 10), seg(10, 20)], retention_ms=DAY)
    assert result.base_offsets == (0, 10) and result.includes_active


def test_empty_active_segment_is_never_deleted():
    result = plan([seg(0, 10), seg(10, 10, size=0)], retention_ms=DAY)
    assert result.base_offsets == (0,) and not result.includes_active


def test_future_timestamp_does_not_pin_segments():
    future = NOW + 365 * DAY
    segments = [seg(0, 10, ts=future, mtime=NOW - 10 * DAY), seg(10, 20), seg(20, 30, ts=NOW)]
    result = plan(segments, retention_ms=DAY)
    assert result.base_offsets == (0, 10)  # the file time caps the bad timestamp


def test_size_limit_never_dips_below_the_limit():
    segments = [seg(0, 10, 100), seg(10, 20, 100), seg(20, 30, 100), seg(30, 40, 50)]
    assert plan(segments, retention_bytes=250).base_offsets == (0,)  # 350 -> 250
    assert plan(segments, retention_bytes=251).empty  # deleting 100 would dip to 250 < 251
    assert plan(segments, retention_bytes=249).base_offsets == (0,)  # 250; one more would be 150
    assert plan(segments, retention_bytes=150).base_offsets == (0, 10)
    assert plan(segments, retention_bytes=350).empty
    assert plan(segments, retention_bytes=0).base_offsets == (0, 10, 20, 30)


def test_log_start_offset_breach_and_high_watermark():
    segments = [seg(0, 10), seg(10, 20), seg(20, 30)]
    assert plan(segments, log_start_offset=20).base_offsets == (0, 10)
    assert plan(segments, log_start_offset=19).base_offsets == (0,)
    assert plan(segments, retention_ms=DAY, high_watermark=15).base_offsets == (0,)


def test_reasons_are_given_per_segment():
    segments = [seg(0, 10, 100), seg(10, 20, 100), seg(20, 30, 100, ts=NOW)]
    result = plan(segments, log_start_offset=10, retention_bytes=100, retention_ms=DAY)
    assert result.base_offsets == (0, 10)
    assert result.reasons == ("log_start_offset", "retention_bytes")


# --- the mechanism --------------------------------------------------------------------------------


class Clock:
    def __init__(self):
        self.now_ms = NOW

    def __call__(self):
        return self.now_ms


def filled(directory, clock, batches=60, **changes):
    config = LogConfig(
        segment_bytes=2048, index_interval_bytes=256, durability="none", file_delete_delay_ms=1000, **changes
    )
    log = Log(directory, config, clock_ms=clock)
    for i in range(batches):
        log.append([b"%05d" % i + b"x" * 100], timestamps_ms=clock.now_ms - 10 * DAY + i)
    return log


def age_files(directory, ms):
    for name in os.listdir(directory):
        path = os.path.join(directory, name)
        os.utime(path, (ms / 1000, ms / 1000))


def test_retention_by_time_removes_old_segments_and_raises_log_start(tmp_path):
    clock = Clock()
    with filled(tmp_path / "p", clock, retention_ms=DAY) as log:
        age_files(tmp_path / "p", clock.now_ms - 5 * DAY)
        segments_before = len(log.segments)
        assert segments_before > 3
        deleted = enforce_retention(log, clock.now_ms)
        assert deleted == segments_before  # everything is old: the active segment too (rolled first)
        assert len(log.segments) == 1 and log.active_segment.size == 0
        assert log.log_start_offset == log.log_end_offset == 60
        with pytest.raises(OffsetOutOfRangeError):
            log.read(0)
        assert any(n.endswith(".deleted") for n in os.listdir(tmp_path / "p"))
        clock.now_ms += 1001
        log.purge_deleted()
        assert not any(n.endswith(".deleted") for n in os.listdir(tmp_path / "p"))
        log.append([b"new"])
        assert log.read(60)[0].value == b"new"
    with Log(tmp_path / "p", log.config) as log:
        assert log.log_start_offset == 60 and log.log_end_offset == 61


def test_retention_by_size(tmp_path):
    clock = Clock()
    with filled(tmp_path / "p", clock, retention_bytes=4096, retention_ms=None) as log:
        total = sum(s.size for s in log.segments)
        enforce_retention(log, clock.now_ms)
        remaining = sum(s.size for s in log.segments)
        assert 4096 <= remaining < 4096 + 2048
        assert remaining < total
        first = log.log_start_offset
        assert first == log.segments[0].base_offset > 0
        assert [r.value[:5] for r in log.read(first, max_bytes=10**6)] == [b"%05d" % i for i in range(first, 60)]


def test_delete_records(tmp_path):
    clock = Clock()
    with filled(tmp_path / "p", clock) as log:
        assert log.delete_records(25) == 25
        assert log.log_start_offset == 25
        with pytest.raises(OffsetOutOfRangeError):
            log.read(24)
        assert log.read(25)[0].value[:5] == b"00025"
        assert all(s.next_offset > 25 for s in log.segments)
        assert log.delete_records(10) == 25  # lower: no change
        with pytest.raises(OffsetOutOfRangeError):
            log.delete_records(61)
        assert log.offset_for_timestamp(-2).offset == 25
    with Log(tmp_path / "p", log.config) as log:
        assert log.log_start_offset == 25


def test_a_reader_holding_a_slice_of_a_deleted_segment_reads_it_all(tmp_path):
    clock = Clock()
    with filled(tmp_path / "p", clock, retention_ms=DAY) as log:
        piece = log.read_slice(0, max_bytes=10**6)
        expected = piece.read()
        age_files(tmp_path / "p", clock.now_ms - 5 * DAY)
        enforce_retention(log, clock.now_ms)
        clock.now_ms += 10_000
        log.purge_deleted()
        assert not os.path.exists(piece.path)
        assert os.pread(piece.fd, piece.size, piece.position) == expected


def test_retention_while_readers_and_writers_run(tmp_path):
    clock = Clock()
    errors = []
    stop = threading.Event()
    log = filled(tmp_path / "p", clock, retention_bytes=6000, retention_ms=None, batches=10)

    def reader():
        while not stop.is_set():
            try:
                start = log.log_start_offset
                records = log.read(start, max_bytes=10**6)
                for r in records:
                    assert r.value[:5] == b"%05d" % r.offset
            except OffsetOutOfRangeError:
                pass  # retention raised the start between the two calls: allowed
            except Exception as error:  # noqa: BLE001
                errors.append(error)
                return

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for i in range(10, 400):
        log.append([b"%05d" % i + b"x" * 100])
        if i % 20 == 0:
            enforce_retention(log, clock.now_ms)
            log.purge_deleted(clock.now_ms + 10**6)
    stop.set()
    for t in threads:
        t.join()
    log.close()
    assert not errors, errors[0]
    assert log.log_start_offset > 0
