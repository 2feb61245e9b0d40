"""Log.read_slice against a reference that walks every batch header (the index jump must agree)."""

from __future__ import annotations

import os
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logstore import Log, LogConfig, batch


def reference_slice(log: Log, offset: int, max_bytes: int, max_offset: int | None):
    """(path, position, size) by walking every header of the segment from the start."""
    end = log.log_end_offset if max_offset is None else min(max_offset, log.log_end_offset)
    if offset >= end:
        return None
    for segment in log.segments:
        with open(segment.log_path, "rb") as f:
            data = f.read(segment.size)
        batches = list(batch.iter_batches(data))
        for k, (position, header) in enumerate(batches):
            if header.last_offset < offset or header.base_offset >= end:
                continue
            size = header.size
            for _p, later in batches[k + 1 :]:
                if later.base_offset >= end or size + later.size > max_bytes:
                    break
                size += later.size
            return segment.log_path, position, size
    return None


def build(tmp_path, batch_records: list[int], value_bytes: int, index_interval_bytes: int, segment_bytes: int) -> Log:
    log = Log(tmp_path / "log", LogConfig(durability="none", index_interval_bytes=index_interval_bytes,
                                          segment_bytes=segment_bytes))
    rng = random.Random(len(batch_records))
    for n in batch_records:
        log.append([rng.randbytes(value_bytes) for _ in range(n)], timestamps_ms=1)
    return log


def check(log: Log, offset: int, max_bytes: int, max_offset: int | None) -> None:
    got = log.read_slice(offset, max_bytes=max_bytes, max_offset=max_offset)
    want = reference_slice(log, offset, max_bytes, max_offset)
    if want is None:
        assert got.size == 0
    else:
        assert (got.path, got.position, got.size) == want, (offset, max_bytes, max_offset)


@pytest.mark.parametrize("value_bytes,interval", [(10, 64), (200, 4096), (5000, 4096), (5000, 1)])
def test_read_slice_matches_a_full_header_walk(tmp_path, value_bytes, interval):
    rng = random.Random(value_bytes + interval)
    sizes = [rng.randint(1, 30) for _ in range(120)]
    with build(tmp_path, sizes, value_bytes, interval, segment_bytes=2 * 1024 * 1024) as log:
        end = log.log_end_offset
        for _ in range(300):
            offset = rng.randrange(end)
            max_bytes = rng.choice([1, 100, 1000, 10_000, 100_000, 10**6, 10**8])
            max_offset = rng.choice([None, None, offset + 1, offset + rng.randint(1, 200), end])
            check(log, offset, max_bytes, max_offset)


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 20), min_size=1, max_size=40),
    value_bytes=st.sampled_from([1, 50, 3000]),
    interval=st.sampled_from([1, 100, 4096]),
    probes=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 200_000), st.integers(0, 50)), max_size=10),
)
def test_property_read_slice(tmp_path_factory, sizes, value_bytes, interval, probes):
    tmp_path = tmp_path_factory.mktemp("slice")
    with build(tmp_path, sizes, value_bytes, interval, segment_bytes=64 * 1024) as log:
        end = log.log_end_offset
        for where, max_bytes, extra in probes:
            offset = int(where * end)
            check(log, offset, max_bytes, offset + extra if extra else None)


def test_damaged_index_entry_is_not_trusted(tmp_path):
    """A sealed index entry that keeps order but points inside a batch: no jump, same slice."""
    sizes = [5] * 40
    with build(tmp_path, sizes, 300, 1, segment_bytes=10**6) as log:
        log.roll()
        log.append([b"x"], timestamps_ms=1)
        segment = log.segments[0]
        entries = segment.offset_index.entries
        path = segment.index_path
    # move entry 20's position 7 bytes forward (still between its neighbours)
    with open(path, "r+b") as f:
        f.seek(20 * 8 + 4)
        position = int.from_bytes(f.read(4), "big")
        f.seek(20 * 8 + 4)
        f.write((position + 7).to_bytes(4, "big"))
    assert entries > 25
    with Log(tmp_path / "log", LogConfig(durability="none", index_interval_bytes=1)) as log:
        for offset in range(0, 100, 7):
            for max_bytes in range(1000, 70_000, 500):  # limits all along the damaged batch
                check(log, offset, max_bytes, None)


@pytest.mark.parametrize("damage", ["previous batch", "inside the batch"])
def test_a_lookup_never_trusts_an_entry_its_header_disagrees_with(tmp_path, damage):
    """Every batch indexed; one sealed entry keeps order but points at the batch before its own
    (a valid header with another last offset) or inside its batch: every offset still finds its
    own batch, through the slice and through decoded reads."""
    sizes = [3, 5, 2, 7, 4] * 6
    with build(tmp_path, sizes, 40, 1, segment_bytes=10**6) as log:
        log.roll()
        log.append([b"x"], timestamps_ms=1)
        segment = log.segments[0]
        assert segment.offset_index.entries == len(sizes) - 1
        path = segment.index_path
        end = segment.next_offset
    with open(path, "r+b") as f:
        f.seek(12 * 8 + 4)
        position = int.from_bytes(f.read(4), "big")
        f.seek(11 * 8 + 4)
        previous = int.from_bytes(f.read(4), "big")
        f.seek(12 * 8 + 4)
        f.write((previous if damage == "previous batch" else position + 7).to_bytes(4, "big"))
    with Log(tmp_path / "log", LogConfig(durability="none", index_interval_bytes=1)) as log:
        for offset in range(end):
            check(log, offset, 1, None)
            check(log, offset, 10**6, None)
            assert log.read(offset, max_bytes=1)[0].offset <= offset
            assert [r.offset for r in log.read(offset, max_bytes=1) if r.offset >= offset][0] == offset


def test_slice_reads_no_record_bytes_of_big_batches(tmp_path, monkeypatch, count_preads):
    """Finding the end of a slice of big batches reads headers, not records."""
    with build(tmp_path, [40] * 30, 1000, 4096, segment_bytes=10**8) as log:
        read = count_preads
        read.clear()
        region = log.read_slice(0, max_bytes=10**6)
        monkeypatch.undo()
        assert region.size > 20 * 40 * 1000
        assert sum(read) < 8192, read  # (one index interval to find the first batch, then headers)


def test_reads_during_appends_see_whole_correct_records(tmp_path):
    """A writer appends equally sized batches (the template decode and the index jump both apply)
    while a reader checks read_columns and read_slice against the values' own offsets."""
    import threading
    import time

    def value(offset: int) -> bytes:
        return offset.to_bytes(8, "big") * 12

    config = LogConfig(durability="none", segment_bytes=256 * 1024, index_interval_bytes=1024)
    problems: list[str] = []
    with Log(tmp_path / "log", config) as log:
        stop = threading.Event()

        def writer():
            offset = 0
            while not stop.is_set() and offset < 200_000:
                log.append([value(o) for o in range(offset, offset + 250)], timestamps_ms=offset)
                offset += 250

        thread = threading.Thread(target=writer)
        thread.start()
        rng = random.Random(9)
        deadline = time.monotonic() + 2.0
        reads = 0
        try:
            while time.monotonic() < deadline:
                end = log.log_end_offset
                if end == 0:
                    continue
                offset = rng.randrange(end)
                columns = log.read_columns(offset, max_bytes=rng.choice([10_000, 300_000]))
                offsets = columns.offsets.tolist()
                if offsets[0] != offset or offsets != list(range(offset, offset + len(offsets))):
                    problems.append(f"offsets from {offset}: {offsets[:3]}...")
                if columns.values != [value(o) for o in offsets]:
                    problems.append(f"values from {offset}")
                region = log.read_slice(offset, max_bytes=rng.choice([5_000, 100_000]))
                data = os.pread(region.fd, region.size, region.position)
                expected = None
                for _p, header in batch.iter_batches(data):
                    if expected is not None and header.base_offset != expected:
                        problems.append(f"slice from {offset}: gap at {header.base_offset}")
                    expected = header.next_offset
                reads += 1
        finally:
            stop.set()
            thread.join(30)
    assert reads > 20
    assert problems == []
