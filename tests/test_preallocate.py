"""Disk blocks reserved ahead of the active segment (``preallocate_bytes``), and a failed write.

Reservation must be invisible: file sizes, bytes, reads and recovery are exactly as without it;
what it reserved is given back when the segment rolls, the log closes or recovery runs. Where the
file system cannot reserve, appends carry on without it. A write that fails leaves no index entry
behind and publishes nothing.
"""

from __future__ import annotations

import errno
import os

import pytest

from logstore import Log, LogConfig, files
from logstore import segment as segment_module
from logstore.errors import ConfigError

MiB = 1024 * 1024
VALUE = bytes(range(256)) * 4  # 1 KiB


def config(**changes) -> LogConfig:
    base = dict(durability="none", segment_bytes=64 * MiB, index_interval_bytes=4096)
    base.update(changes)
    return LogConfig(**base)


def allocated_bytes(path) -> int:
    return os.stat(path).st_blocks * 512


def file_can_reserve(tmp_path) -> bool:
    fd = os.open(tmp_path / "probe", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        return files.reserve_blocks(fd, 0, MiB)
    finally:
        os.close(fd)
        os.unlink(tmp_path / "probe")




def fill(log: Log, batches: int, records: int = 256) -> list[bytes]:
    values = []
    for b in range(batches):
        batch = [VALUE[: 100 + (b + r) % 900] for r in range(records)]
        log.append(batch, timestamps_ms=1_000 + b)
        values.extend(batch)
    return values


def read_values(log: Log) -> list[bytes]:
    return [record.value for record in log.read(log.log_start_offset, max_bytes=1 << 30)]


def test_reserve_blocks_keeps_the_size(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"x" * 1000)
    fd = os.open(path, os.O_RDWR)
    try:
        reserved = files.reserve_blocks(fd, 1000, 4 * MiB)
        assert os.fstat(fd).st_size == 1000
        assert os.pread(fd, 10, 4000) == b""
        if reserved:
            assert allocated_bytes(path) >= 4 * MiB
            files.release_reserved_blocks(fd, 1000)
            assert allocated_bytes(path) < MiB
        assert path.read_bytes() == b"x" * 1000
    finally:
        os.close(fd)
    with pytest.raises(ValueError):
        files.reserve_blocks(0, -1, 10)


def test_appends_reserve_ahead_and_roll_and_close_give_it_back(tmp_path):
    if not file_can_reserve(tmp_path):
        pytest.skip("this file system cannot reserve blocks (fallocate KEEP_SIZE)")
    log = Log(tmp_path / "log", config(segment_bytes=2 * MiB))
    values = fill(log, 8)  # ~0.6 MiB: one segment, appends close together
    active = log.segments[-1]
    size = os.path.getsize(active.log_path)
    assert size == active.size  # the file size is exactly the bytes written
    assert allocated_bytes(active.log_path) > size + 64 * 1024  # blocks reserved past the end
    log.roll()  # well before segment_bytes: most of the reservation is unused
    values += fill(log, 60)  # and rolls at 2 MiB
    assert len(log.segments) > 2
    for sealed in log.segments[:-1]:
        assert os.path.getsize(sealed.log_path) == sealed.size
        assert allocated_bytes(sealed.log_path) < sealed.size + 64 * 1024, "a rolled segment kept its reservation"
    last = log.segments[-1].log_path
    log.close()
    assert allocated_bytes(last) < os.path.getsize(last) + 64 * 1024, "close kept the reservation"
    with Log(tmp_path / "log", config(segment_bytes=2 * MiB)) as reopened:
        assert reopened.was_clean_shutdown
        assert read_values(reopened) == values


def test_reservation_never_exceeds_the_limit(tmp_path):
    if not file_can_reserve(tmp_path):
        pytest.skip("this file system cannot reserve blocks (fallocate KEEP_SIZE)")
    with Log(tmp_path / "log", config(preallocate_bytes=256 * 1024)) as log:
        fill(log, 20)
        active = log.segments[-1]
        # at most one write (~256 KiB) and the limit past the end, plus file-system slack
        assert allocated_bytes(active.log_path) <= active.size + 256 * 1024 + 300 * 1024


def test_zero_turns_reservation_off(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(segment_module, "reserve_blocks", lambda *a: calls.append(a) or True)
    with Log(tmp_path / "log", config(preallocate_bytes=0)) as log:
        fill(log, 5)
    assert calls == []
    with Log(tmp_path / "log2", config()) as log:
        fill(log, 5)
    assert calls, "the default reserves"


def test_a_file_system_that_cannot_reserve_is_asked_once_per_segment(tmp_path, monkeypatch):
    calls = []

    def refuse(fd, position, length):
        calls.append((position, length))
        return False

    monkeypatch.setattr(segment_module, "reserve_blocks", refuse)
    with Log(tmp_path / "log", config()) as log:
        values = fill(log, 10)
        assert read_values(log) == values
    assert len(calls) == 1


def test_recovery_gives_back_a_crashed_writers_reservation(tmp_path):
    if not file_can_reserve(tmp_path):
        pytest.skip("this file system cannot reserve blocks (fallocate KEEP_SIZE)")
    from test_recovery import crash

    log = Log(tmp_path / "log", config())
    values = fill(log, 4)
    log.sync()
    path = log.segments[-1].log_path
    fd = os.open(path, os.O_RDWR)
    try:  # as a writer killed right after reserving a large step
        assert files.reserve_blocks(fd, os.fstat(fd).st_size, 16 * MiB)
    finally:
        os.close(fd)
    crash(log)
    assert allocated_bytes(path) > os.path.getsize(path) + 8 * MiB
    with Log(tmp_path / "log", config()) as reopened:
        assert not reopened.was_clean_shutdown
        assert read_values(reopened) == values
        assert allocated_bytes(path) < os.path.getsize(path) + 64 * 1024


@pytest.mark.parametrize("how", ["append", "append_batches"])
def test_a_failed_write_leaves_no_index_entry_and_publishes_nothing(tmp_path, monkeypatch, how):
    log = Log(tmp_path / "log", config(index_interval_bytes=0))
    values = fill(log, 3)
    active = log.segments[-1]
    before = (log.log_end_offset, active.size, active.offset_index.entries, active.time_index.entries,
              os.path.getsize(active.log_path))
    real = segment_module._pwritev_all

    def fail(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(segment_module, "_pwritev_all", fail)
    batch = [b"late-%d" % i for i in range(50)]
    with pytest.raises(OSError):
        if how == "append":
            log.append(batch, timestamps_ms=9_999)
        else:
            from logstore import batch as batch_format

            log.append_batches(batch_format.encode(batch, timestamps_ms=9_999))
    after = (log.log_end_offset, active.size, active.offset_index.entries, active.time_index.entries,
             os.path.getsize(active.log_path))
    assert after == before
    active.offset_index.sanity_check()
    active.time_index.sanity_check()
    monkeypatch.setattr(segment_module, "_pwritev_all", real)
    log.append(batch, timestamps_ms=9_999)  # the next write goes where the failed one would have
    assert read_values(log) == values + batch
    assert log.offset_for_timestamp(9_999).offset == len(values)
    log.close()
    with Log(tmp_path / "log", config(index_interval_bytes=0)) as reopened:
        assert read_values(reopened) == values + batch


def test_preallocate_bytes_is_validated():
    with pytest.raises(ConfigError, match="preallocate_bytes"):
        LogConfig(preallocate_bytes=-1)
    with pytest.raises(ConfigError, match="preallocate_bytes"):
        LogConfig(preallocate_bytes=1.5)
    assert LogConfig(preallocate_bytes=0).preallocate_bytes == 0
