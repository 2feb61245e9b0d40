"""Log: append, read, slices, roll, timestamps, truncation, durability modes, concurrency."""

from __future__ import annotations

import os
import threading

import pytest

from logstore import (
    EARLIEST,
    LATEST,
    MAX_TIMESTAMP,
    CorruptBatchError,
    Log,
    LogClosedError,
    LogConfig,
    OffsetOutOfRangeError,
    RecordTooLargeError,
)
from logstore import batch as batch_format
from logstore.files import segment_prefix


class FakeClock:
    def __init__(self, now_ms: int = 1_700_000_000_000):
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms


def small(**changes) -> LogConfig:
    base = dict(segment_bytes=4096, index_interval_bytes=256, durability="none")
    base.update(changes)
    return LogConfig(**base)


def values_of(records):
    return [r.value for r in records]


def test_empty_log_edges(tmp_path):
    with Log(tmp_path / "p", small()) as log:
        assert (log.log_start_offset, log.log_end_offset) == (0, 0)
        assert log.read(0) == []
        assert log.read_slice(0).size == 0
        with pytest.raises(OffsetOutOfRangeError) as info:
            log.read(1)
        assert (info.value.offset, info.value.log_start_offset, info.value.log_end_offset) == (1, 0, 0)
        assert log.offset_for_timestamp(0) is None
        assert log.offset_for_timestamp(LATEST).offset == 0
        assert log.offset_for_timestamp(MAX_TIMESTAMP) is None
    assert sorted(os.listdir(tmp_path / "p")) == sorted(
        [".clean_shutdown", "logstore.checkpoint", segment_prefix(0) + ".log", segment_prefix(0) + ".index",
         segment_prefix(0) + ".timeindex"]
    )


def test_append_and_read_back_everything(tmp_path):
    with Log(tmp_path / "p", small()) as log:
        info = log.append([b"a", None, b"c"], keys=[b"k1", b"k2", None], timestamps_ms=[10, 20, 15],
                          headers=[[("h", b"v")], [], [("x", None)]])
        assert (info.base_offset, info.last_offset, info.max_timestamp_ms, info.record_count) == (0, 2, 20, 3)
        info = log.append([b"d"], timestamps_ms=30)
        assert (info.base_offset, info.last_offset) == (3, 3)
        records = log.read(0)
        assert [(r.offset, r.timestamp_ms, r.key, r.value) for r in records] == [
            (0, 10, b"k1", b"a"), (1, 20, b"k2", None), (2, 15, None, b"c"), (3, 30, None, b"d")
        ]
        assert records[0].headers == (("h", b"v"),) and records[2].headers == (("x", None),)
        # reading from the middle of a batch skips the records before the offset
        assert [r.offset for r in log.read(1)] == [1, 2, 3]
        assert log.read(4) == []


def test_append_rejects_bad_arguments(tmp_path):
    with Log(tmp_path / "p", small()) as log:
        with pytest.raises(ValueError):
            log.append([])
        with pytest.raises(TypeError):
            log.append(["not bytes"])
        with pytest.raises(RecordTooLargeError):
            log.append([b"x" * 5000])
        with pytest.raises(TypeError):
            log.read("0")
        assert log.log_end_offset == 0 and log.active_segment.size == 0


def test_append_batches_assigns_offsets_without_decoding(tmp_path):
    encoded = batch_format.encode([b"a", b"b"], base_offset=777, timestamps_ms=5) + batch_format.encode(
        [b"c"], base_offset=0, timestamps_ms=6, compression=batch_format.Compression.GZIP
    )
    with Log(tmp_path / "p", small()) as log:
        log.append([b"first"], timestamps_ms=1)
        info = log.append_batches(encoded)
        assert (info.base_offset, info.last_offset, info.record_count) == (1, 3, 3)
        raw = log.active_segment.read(0, log.active_segment.size)
        headers = list(batch_format.iter_batches(raw))
        assert [h.base_offset for _p, h in headers] == [0, 1, 3]
        for position, _h in headers:
            batch_format.validate(raw, position)  # CRC still valid after the base offset rewrite
        assert values_of(log.read(0)) == [b"first", b"a", b"b", b"c"]


def test_append_batches_refuses_damage_and_writes_nothing(tmp_path):
    good = bytearray(batch_format.encode([b"a"], timestamps_ms=5))
    with Log(tmp_path / "p", small()) as log:
        flipped = bytearray(good)
        flipped[-1] ^= 0x01
        with pytest.raises(CorruptBatchError):
            log.append_batches(flipped)
        with pytest.raises(CorruptBatchError):
            log.append_batches(good + good[:30])  # trailing partial batch
        with pytest.raises(ValueError):
            log.append_batches(b"")
        assert log.log_end_offset == 0 and log.active_segment.size == 0
        log.append_batches(good)
        assert log.log_end_offset == 1


def test_rolls_on_size_and_reads_across_segments(tmp_path):
    with Log(tmp_path / "p", small()) as log:
        for i in range(200):
            log.append([b"%05d" % i + b"x" * 95], timestamps_ms=1000 + i)
        assert len(log.segments) > 3
        assert all(s.size <= 4096 for s in log.segments)
        assert [s.base_offset for s in log.segments] == sorted(s.base_offset for s in log.segments)
        got = []
        offset = 0
        while offset < log.log_end_offset:
            records = log.read(offset, max_bytes=1000)
            assert records, offset
            got.extend(records)
            offset = records[-1].offset + 1
        assert [r.offset for r in got] == list(range(200))
        assert [r.value[:5] for r in got] == [b"%05d" % i for i in range(200)]
    with Log(tmp_path / "p", small()) as log:
        assert log.was_clean_shutdown
        assert log.log_end_offset == 200
        assert [r.offset for r in log.read(150, max_bytes=10**6)] == list(range(150, 200))
        log.append([b"more"])
        assert log.read(200)[0].value == b"more"


def test_roll_on_segment_ms_by_append_and_by_timer(tmp_path):
    clock = FakeClock()
    with Log(tmp_path / "p", small(segment_ms=1000), clock_ms=clock) as log:
        log.append([b"a"])
        clock.now_ms += 500
        log.append([b"b"])
        assert len(log.segments) == 1
        clock.now_ms += 600
        log.append([b"c"])  # the active segment is 1100 ms old: roll first
        assert [s.base_offset for s in log.segments] == [0, 2]
        clock.now_ms += 1001
        assert log.maybe_roll() is True  # an idle log rolls by the timer
        assert [s.base_offset for s in log.segments] == [0, 2, 3]
        assert log.maybe_roll() is False  # an empty active segment never rolls
        assert values_of(log.read(0)) == [b"a", b"b", b"c"]


def test_roll_on_index_full(tmp_path):
    config = small(segment_bytes=10**6, index_interval_bytes=0, segment_index_bytes=48)
    with Log(tmp_path / "p", config) as log:
        for i in range(40):
            log.append([b"v%d" % i])
        assert len(log.segments) > 3
        assert values_of(log.read(0, max_bytes=10**6)) == [b"v%d" % i for i in range(40)]


def test_read_slice_starts_at_containing_batch_and_honours_limits(tmp_path):
    with Log(tmp_path / "p", small(segment_bytes=10**6)) as log:
        for i in range(10):
            log.append([b"%d-%d" % (i, j) for j in range(3)], timestamps_ms=i)
        one = log.read_slice(4, max_bytes=1)  # KIP-74: at least the whole first batch
        batches = list(batch_format.iter_batches(one.read()))
        assert len(batches) == 1 and batches[0][1].base_offset == 3
        assert one.size == batches[0][1].size
        segment = log.active_segment
        assert one.read() == segment.read(one.position, one.size)
        everything = log.read_slice(0, max_bytes=10**6)
        assert everything.size == segment.size
        capped = log.read_slice(0, max_bytes=10**6, max_offset=6)
        headers = [h for _p, h in batch_format.iter_batches(capped.read())]
        assert [h.base_offset for h in headers] == [0, 3]
        assert log.read_slice(30).size == 0


def test_read_is_bounded_by_max_offset(tmp_path):
    with Log(tmp_path / "p", small()) as log:
        log.append([b"a", b"b", b"c"])
        log.append([b"d"])
        assert [r.offset for r in log.read(0, max_offset=2)] == [0, 1]
        assert log.read(3, max_offset=3) == []


def test_offset_for_timestamp_follows_list_offsets(tmp_path):
    with Log(tmp_path / "p", small(segment_bytes=600)) as log:
        log.append([b"a", b"b"], timestamps_ms=[100, 300])
        log.append([b"c"], timestamps_ms=200)  # out of order CreateTime
        for i in range(20):
            log.append([b"x" * 50], timestamps_ms=1000 + 10 * i)
        assert len(log.segments) > 1
        assert log.offset_for_timestamp(EARLIEST) == (0, -1)
        assert log.offset_for_timestamp(LATEST) == (log.log_end_offset, -1)
        assert log.offset_for_timestamp(0) == (0, 100)
        assert log.offset_for_timestamp(150) == (1, 300)  # first record with ts >= 150
        assert log.offset_for_timestamp(1000) == (3, 1000)
        assert log.offset_for_timestamp(1105) == (14, 1110)
        assert log.offset_for_timestamp(1190) == (22, 1190)
        assert log.offset_for_timestamp(1191) is None
        assert log.offset_for_timestamp(MAX_TIMESTAMP) == (22, 1190)
        with pytest.raises(ValueError):
            log.offset_for_timestamp(-7)


def test_truncate_is_batch_granular_and_survives_reopen(tmp_path):
    with Log(tmp_path / "p", small()) as log:
        for i in range(100):
            log.append([b"%d" % i, b"%d'" % i], timestamps_ms=i)
        assert log.truncate(151) == 150  # inside the batch [150, 151]: the batch goes
        assert log.log_end_offset == 150
        assert log.read(148)[-1].offset == 149
        assert log.truncate(37) == 36
        assert log.durable_offset == 36
        log.append([b"new"], timestamps_ms=5)
        assert [r.value for r in log.read(35)] == [b"17'", b"new"]
        assert log.truncate(1000) == 37  # past the end: no-op
    with Log(tmp_path / "p", small()) as log:
        assert log.log_end_offset == 37
        assert log.read(36)[0].value == b"new"


def test_truncate_below_start_empties_the_log(tmp_path):
    with Log(tmp_path / "p", small()) as log:
        for _ in range(50):
            log.append([b"x" * 100])
        assert log.truncate(0) == 0
        assert len(log.segments) == 1 and log.log_end_offset == 0 and log.read(0) == []
        log.append([b"again"])
        assert values_of(log.read(0)) == [b"again"]


def test_durability_modes(tmp_path):
    with Log(tmp_path / "a", small(durability="append")) as log:
        for i in range(5):
            log.append([b"x"])
            assert log.durable_offset == log.log_end_offset == i + 1
    clock = FakeClock()
    with Log(tmp_path / "i", small(durability="interval", flush_ms=1000), clock_ms=clock) as log:
        log.append([b"x"])
        assert log.durable_offset == 0
        clock.now_ms += 1001
        log.append([b"y"])
        assert log.durable_offset == 2
    with Log(tmp_path / "m", small(durability="interval", flush_ms=10**9, flush_messages=3)) as log:
        log.append([b"x", b"y"])
        assert log.durable_offset == 0
        log.append([b"z"])
        assert log.durable_offset == 3
    with Log(tmp_path / "n", small(durability="none")) as log:
        log.append([b"x"])
        assert log.durable_offset == 0
        assert log.sync() == 1 == log.durable_offset


def test_group_commit_shares_fsyncs(tmp_path, monkeypatch):
    calls = []
    real_fsync = os.fsync

    def counting_fsync(fd):
        calls.append(fd)
        real_fsync(fd)

    with Log(tmp_path / "p", LogConfig(durability="append")) as log:
        monkeypatch.setattr(os, "fsync", counting_fsync)
        threads = [threading.Thread(target=lambda: [log.append([b"v"]) for _ in range(50)]) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        monkeypatch.setattr(os, "fsync", real_fsync)
        assert log.log_end_offset == 400 and log.durable_offset == 400
        # each append waited for an fsync that covered it, but appends shared them
        assert 0 < len(calls) < 400


def test_closed_log_refuses_use(tmp_path):
    log = Log(tmp_path / "p", small())
    log.close()
    log.close()  # idempotent
    with pytest.raises(LogClosedError):
        log.append([b"x"])
    with pytest.raises(LogClosedError):
        log.read(0)


def test_readers_never_see_partial_batches_while_writing_and_rolling(tmp_path):
    stop = threading.Event()
    errors = []
    with Log(tmp_path / "p", small(segment_bytes=2048)) as log:
        def reader():
            while not stop.is_set():
                try:
                    end = log.log_end_offset
                    offset = 0
                    while offset < end:
                        records = log.read(offset, max_bytes=4096)
                        for r in records:
                            assert r.offset == offset and r.value == b"%08d" % offset, (r, offset)
                            offset += 1
                        if not records:
                            break
                except Exception as error:  # noqa: BLE001 - surfaced by the assert below
                    errors.append(error)
                    return

        threads = [threading.Thread(target=reader) for _ in range(2)]
        for t in threads:
            t.start()
        for i in range(0, 3000, 3):
            log.append([b"%08d" % (i + j) for j in range(3)])
        stop.set()
        for t in threads:
            t.join()
        assert not errors, errors[0]
        assert len(log.segments) > 10


def test_wait_for_append_wakes(tmp_path):
    with Log(tmp_path / "p", small()) as log:
        assert log.wait_for_append(0, 0.01) is False
        timer = threading.Timer(0.05, lambda: log.append([b"x"]))
        timer.start()
        assert log.wait_for_append(0, 5.0) is True
        timer.join()


def test_wait_for_append_never_misses_a_racing_append(tmp_path):
    """An append racing a waiter's start (appends skip the condition when nobody waits) always
    wakes it: 150 rounds, each with the append at a random moment around the wait."""
    import random
    import time

    rng = random.Random(4)
    with Log(tmp_path / "p", small()) as log:
        for _ in range(150):
            end = log.log_end_offset
            woke: list[tuple[bool, float]] = []

            def waiter(end=end, woke=woke):
                start = time.monotonic()
                woke.append((log.wait_for_append(end, 5.0), time.monotonic() - start))

            thread = threading.Thread(target=waiter)
            thread.start()
            time.sleep(rng.choice([0, 0, 1e-5, 1e-4, 1e-3]))
            log.append([b"x"])
            thread.join(10)
            assert woke and woke[0][0] is True and woke[0][1] < 2.0, woke


def test_read_columns_matches_read(tmp_path):
    with Log(tmp_path / "p", small(segment_bytes=10**6)) as log:
        for i in range(20):
            log.append([b"%d-%d" % (i, j) for j in range(5)], keys=[b"k%d" % j for j in range(5)],
                       timestamps_ms=[i * 10 + j for j in range(5)])
        for start, stop in [(0, None), (7, None), (7, 53), (99, None), (100, None)]:
            records = log.read(start, max_bytes=10**6, max_offset=stop)
            columns = log.read_columns(start, max_bytes=10**6, max_offset=stop)
            assert columns.offsets.tolist() == [r.offset for r in records]
            assert columns.timestamps_ms.tolist() == [r.timestamp_ms for r in records]
            assert columns.values == [r.value for r in records]
            assert columns.keys == [r.key for r in records]


def test_compacted_log_refuses_keyless_records(tmp_path):
    from logstore import InvalidRecordError

    with Log(tmp_path / "p", small(cleanup_policy="compact")) as log:
        with pytest.raises(InvalidRecordError, match="needs a key"):
            log.append([b"v"])
        with pytest.raises(InvalidRecordError):
            log.append([b"v", b"w"], keys=[b"k", None])
        with pytest.raises(InvalidRecordError, match="without a key"):
            log.append_batches(batch_format.encode([b"v"], keys=[None], timestamps_ms=1))
        assert log.log_end_offset == 0
        log.append([b"v", None], keys=[b"k", b"k"])  # a tombstone has a key: fine
        log.append_batches(batch_format.encode([b"w"], keys=[b"j"], timestamps_ms=1))
        assert log.log_end_offset == 3


def test_append_records_takes_record_like_objects(tmp_path):
    from logstore import Record

    with Log(tmp_path / "p", small()) as log:
        info = log.append_records(
            [Record(99, 5, b"k", b"v", (("h", b"x"),)), Record(7, -1, None, None)]  # offsets ignored
        )
        assert (info.base_offset, info.last_offset) == (0, 1)
        first, second = log.read(0)
        assert (first.offset, first.timestamp_ms, first.key, first.value, first.headers) == (0, 5, b"k", b"v", (("h", b"x"),))
        assert (second.offset, second.key, second.value) == (1, None, None)
        assert second.timestamp_ms > 5  # a negative timestamp means "now", as Kafka's NO_TIMESTAMP
