"""Log.append_batches on large batches: the CRC check, what a refused append leaves, readers.

The fast path (``fastcrc`` when installed, MADV_RANDOM on the index maps, fewer steps per append)
must not change what is validated or what a failed append leaves behind.
"""

from __future__ import annotations

import os
import threading

import crc32c
import numpy as np
import pytest

from logstore import Log, LogConfig
from logstore import batch as batch_format
from logstore.errors import CorruptBatchError

MiB = 1024 * 1024


def big_batch(seed: int = 1, batch_bytes: int = MiB, record_bytes: int = 4000, ts: int = 1_000) -> bytes:
    count = batch_bytes // (record_bytes + 16)
    blob = np.random.default_rng(seed).integers(0, 256, size=count * record_bytes, dtype=np.uint8).tobytes()
    values = [blob[i * record_bytes : (i + 1) * record_bytes] for i in range(count)]
    return batch_format.encode(values, timestamps_ms=ts)


def config(**kw) -> LogConfig:
    return LogConfig(durability="none", max_batch_bytes=4 * MiB, **kw)


def snapshot(log: Log) -> dict:
    """Everything a refused append must leave as it was: offsets, sizes, files on disk."""
    files = {}
    for name in sorted(os.listdir(log.directory)):
        with open(os.path.join(log.directory, name), "rb") as f:
            files[name] = f.read()
    return {
        "log_end_offset": log.log_end_offset,
        "size": log.size_bytes,
        "segments": [(s.base_offset, s.size, s.next_offset) for s in log.segments],
        "max_timestamp": log.active_segment.max_timestamp,
        "offset_index": log.active_segment.offset_index.entries,
        "time_index": log.active_segment.time_index.entries,
        "files": files,
    }


def corrupt(batch: bytes, where: int) -> bytes:
    damaged = bytearray(batch)
    damaged[where] ^= 0x40
    return bytes(damaged)


@pytest.mark.parametrize("where", ["first_byte_under_crc", "middle", "last"])
def test_bad_crc_in_large_batch_leaves_log_unchanged(tmp_path, where):
    good = big_batch()
    position = {"first_byte_under_crc": batch_format.CRC_START, "middle": len(good) // 2, "last": len(good) - 1}
    with Log(tmp_path / "p", config()) as log:
        for _ in range(3):
            log.append_batches(good)
        before = snapshot(log)
        with pytest.raises(CorruptBatchError, match="CRC-32C mismatch"):
            log.append_batches(corrupt(good, position[where]))
        assert snapshot(log) == before
        info = log.append_batches(good)  # the log goes on at the same offsets
        assert info.base_offset == before["log_end_offset"]
        assert log.log_end_offset == before["log_end_offset"] + info.record_count


def test_bad_crc_in_second_batch_writes_neither(tmp_path):
    good = big_batch(batch_bytes=MiB // 2)
    with Log(tmp_path / "p", config()) as log:
        log.append_batches(good)
        before = snapshot(log)
        with pytest.raises(CorruptBatchError) as raised:
            log.append_batches(good + corrupt(good, len(good) - 10))
        assert raised.value.position == len(good)
        assert snapshot(log) == before


def test_bad_crc_on_a_roll_leaves_the_log_unrolled(tmp_path):
    good = big_batch(batch_bytes=MiB // 2)
    with Log(tmp_path / "p", config(segment_bytes=len(good) + 100)) as log:
        log.append_batches(good)  # the next batch does not fit: it would roll
        before = snapshot(log)
        with pytest.raises(CorruptBatchError):
            log.append_batches(corrupt(good, 100))
        assert snapshot(log) == before and len(log.segments) == 1
        log.append_batches(good)
        assert len(log.segments) == 2


def test_bad_crc_after_crash_reopen_and_recovery(tmp_path):
    good = big_batch()
    log = Log(tmp_path / "p", config())
    log.append_batches(good)
    with pytest.raises(CorruptBatchError):
        log.append_batches(corrupt(good, 5000))
    end = log.log_end_offset
    # no close: reopening recovers; the refused batch left nothing to recover or to cut
    reopened = Log(tmp_path / "p", config())
    try:
        assert reopened.log_end_offset == end
        assert reopened.recovered_bytes_truncated == 0
        assert reopened.size_bytes == len(good)
    finally:
        reopened.close()
        log.close()


def test_written_batches_carry_new_offsets_and_valid_crcs(tmp_path):
    batches = [big_batch(seed=i, batch_bytes=MiB // 2, ts=1_000 + i) for i in range(4)]
    with Log(tmp_path / "p", config()) as log:
        log.append_batches(batches[0])
        log.append_batches(b"".join(batches[1:]))
        segment = log.active_segment
        raw = segment.read(0, segment.size)
    headers = list(batch_format.iter_batches(raw))  # validates every CRC
    assert len(headers) == 4
    offsets = [h.base_offset for _p, h in headers]
    counts = [h.last_offset_delta + 1 for _p, h in headers]
    assert offsets == [sum(counts[:i]) for i in range(4)]
    for (position, header), original in zip(headers, batches, strict=True):
        assert raw[position + 8 : position + header.size] == original[8:]


def test_fast_crc_agrees_with_crc32c():
    rng = np.random.default_rng(3)
    data = rng.integers(0, 256, size=3 * MiB + 17, dtype=np.uint8).tobytes()
    view = memoryview(data)
    for start, end in [(0, 0), (0, 1), (5, 70), (1, MiB), (3, 3 * MiB + 17), (4096, 4096 + 61)]:
        assert batch_format.crc32c_oneshot(view[start:end]) == crc32c.crc32c(view[start:end])
    assert batch_format.crc32c_oneshot(bytearray(data[:1000])) == crc32c.crc32c(data[:1000])


def test_validate_refuses_a_crc_off_by_one_bit_everywhere():
    good = big_batch(batch_bytes=64 * 1024)
    batch_format.validate(good)
    for where in range(batch_format.CRC_START, len(good), 997):
        with pytest.raises(CorruptBatchError):
            batch_format.validate(corrupt(good, where))


def test_readers_never_see_a_refused_batch(tmp_path):
    """A reader polling the log while good and damaged batches are appended only ever finds
    contiguous, CRC-valid batches, and exactly the good ones."""
    good = [big_batch(seed=i, batch_bytes=256 * 1024, ts=1_000 + i) for i in range(3)]
    stop = threading.Event()
    problems: list[str] = []
    seen_end = [0]

    with Log(tmp_path / "p", config(segment_bytes=4 * MiB)) as log:

        def reader():
            while not stop.is_set() or seen_end[0] < log.log_end_offset:
                for segment in log.segments:
                    size = segment.size
                    try:
                        raw = segment.read(0, size)
                    except Exception as error:  # noqa: BLE001 - a segment deleted under us is fine here
                        problems.append(f"read: {error!r}")
                        continue
                    expected = segment.base_offset
                    try:
                        for _position, header in batch_format.iter_batches(raw):
                            if header.base_offset != expected:
                                problems.append(f"offset {header.base_offset}, expected {expected}")
                            expected = header.next_offset
                    except CorruptBatchError as error:
                        problems.append(f"corrupt: {error}")
                    seen_end[0] = max(seen_end[0], expected)

        thread = threading.Thread(target=reader)
        thread.start()
        appended = 0
        try:
            for i in range(60):
                batch = good[i % 3]
                if i % 2:
                    with pytest.raises(CorruptBatchError):
                        log.append_batches(corrupt(batch, len(batch) // 3 + i))
                else:
                    appended += log.append_batches(batch).record_count
        finally:
            stop.set()
            thread.join(timeout=60)
        assert not thread.is_alive()
        assert problems == []
        assert log.log_end_offset == appended == seen_end[0]
        total = sum(len(good[i % 3]) for i in range(0, 60, 2))
        assert log.size_bytes == total


def test_index_maps_advised_random_still_work(tmp_path):
    with Log(tmp_path / "p", config()) as log:  # writable maps get MADV_RANDOM and still work
        for _ in range(3):
            log.append_batches(big_batch(batch_bytes=MiB // 4))
        assert log.active_segment.offset_index.entries == 2
        assert log.read(0)
    with Log(tmp_path / "p", config()) as log:
        assert log.active_segment.offset_index.entries == 2
        assert log.read_slice(log.log_end_offset - 1).size > 0


def test_validate_falls_back_to_crc32c_without_fastcrc(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "fastcrc.crc32", None)  # import fails as if not installed
    assert batch_format._whole_crc32c() is batch_format.crc32c
