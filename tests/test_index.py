"""Unit tests of logstore.index: formats on disk, lookups, lifecycle, crash leftovers, concurrency."""

from __future__ import annotations

import os
import random
import struct
import sys
import threading

import numpy as np
import pytest

from logstore.errors import CorruptIndexError
from logstore.index import OffsetIndex, TimeIndex

BASE = 1000
U32_MAX = 2**32 - 1


def offset_entries(n: int) -> list[tuple[int, int]]:
    """n valid offset-index entries: offsets BASE+1, BASE+3, ...; positions 7, 10, 13, ..."""
    return [(BASE + 2 * i + 1, 3 * i + 7) for i in range(n)]


def time_entries(n: int) -> list[tuple[int, int]]:
    """n valid time-index entries: timestamps 10, 20, ...; offsets BASE, BASE+1, BASE+1, BASE+2, ..."""
    return [(10 * (i + 1), BASE + (i + 1) // 2) for i in range(n)]


def filled(cls, path, entries, **kwargs):
    index = cls(str(path), BASE, **kwargs)
    for entry in entries:
        index.append(*entry)
    return index


# Both kinds share their lifecycle; each row: class, entry maker, empty floor result, file suffix.
KINDS = [
    pytest.param(OffsetIndex, offset_entries, (BASE, 0), id="offset"),
    pytest.param(TimeIndex, time_entries, (-1, BASE), id="time"),
]


# --- empty indexes ------------------------------------------------------------------------------


@pytest.mark.parametrize("cls, make, empty", KINDS)
@pytest.mark.parametrize("writable", [True, False])
def test_empty_index_lookups(tmp_path, cls, make, empty, writable):
    index = cls(str(tmp_path / "x"), BASE, max_index_bytes=1200, writable=writable)
    assert index.entries == 0
    for target in (-1, 0, BASE, BASE + 1, 2**63 - 1):
        assert index.floor(target) == empty
    with pytest.raises(IndexError):
        index.entry(0)
    assert [a.tolist() for a in index.to_arrays()] == [[], []]
    index.sanity_check()
    if cls is OffsetIndex:
        assert index.last_offset == BASE
    else:
        assert index.last_entry == (-1, BASE)


def test_sealed_index_constructor_does_not_touch_the_file(tmp_path):
    path = tmp_path / "later.index"
    index = OffsetIndex(str(path), BASE, writable=False)  # no such file yet: must not fail
    assert not path.exists()
    with open(path, "wb") as file:  # created after construction: the first read must see it
        file.write(struct.pack(">II", 5, 40))
    assert index.floor(BASE + 9) == (BASE + 5, 40)
    assert not index.writable
    OffsetIndex(str(tmp_path / "no-such-dir" / "x.index"), 0, writable=False)  # not even a stat


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="needs /proc/self/maps")
def test_sealed_index_holds_no_mmap(tmp_path):
    path = str(tmp_path / "sealed.index")
    filled(OffsetIndex, path, offset_entries(50), max_index_bytes=800).close()
    sealed = OffsetIndex(path, BASE, writable=False)
    assert sealed.floor(BASE + 20) == (BASE + 19, 34)
    with open("/proc/self/maps") as maps:
        assert path not in maps.read()
    writable = OffsetIndex(path, BASE, max_index_bytes=800)
    with open("/proc/self/maps") as maps:
        assert path in maps.read()  # the check above can fail
    writable.close()


# --- offset index -------------------------------------------------------------------------------


def test_offset_appends_and_floors(tmp_path):
    index = filled(OffsetIndex, tmp_path / "a.index", [(BASE, 0), (BASE + 10, 100), (BASE + 20, 100)])
    assert index.entries == 3 and index.last_offset == BASE + 20
    expected = {
        BASE - 1: (BASE, 0),  # below the segment: scan from the start
        BASE: (BASE, 0),
        BASE + 9: (BASE, 0),
        BASE + 10: (BASE + 10, 100),
        BASE + 19: (BASE + 10, 100),
        BASE + 20: (BASE + 20, 100),
        BASE + U32_MAX + 5: (BASE + 20, 100),
    }
    for target, answer in expected.items():
        assert index.floor(target) == answer, target
    assert [index.entry(n) for n in range(3)] == [(BASE, 0), (BASE + 10, 100), (BASE + 20, 100)]
    with pytest.raises(IndexError):
        index.entry(3)
    with pytest.raises(IndexError):
        index.entry(-1)
    offsets, positions = index.to_arrays()
    assert offsets.dtype == positions.dtype == np.int64
    assert offsets.tolist() == [BASE, BASE + 10, BASE + 20] and positions.tolist() == [0, 100, 100]


def test_offset_first_entry_above_target(tmp_path):
    index = filled(OffsetIndex, tmp_path / "a.index", [(BASE + 5, 64)])
    assert index.floor(BASE + 4) == (BASE, 0)
    assert index.floor(BASE + 5) == (BASE + 5, 64)


def test_offset_append_refuses_bad_entries(tmp_path):
    index = filled(OffsetIndex, tmp_path / "a.index", [(BASE + 10, 100)])
    bad = [
        (BASE + 10, 200),  # offset not increasing
        (BASE + 9, 200),
        (BASE + 11, 99),  # position decreasing
        (BASE + 11, U32_MAX + 1),  # position does not fit
        (BASE + 11, -1),
    ]
    for offset, position in bad:
        with pytest.raises(ValueError):
            index.append(offset, position)
    assert index.entries == 1
    index.append(BASE + 11, 100)  # equal positions are fine
    assert index.entries == 2


def test_offset_relative_overflow_is_refused(tmp_path):
    index = OffsetIndex(str(tmp_path / "a.index"), BASE, max_index_bytes=80)
    with pytest.raises(ValueError, match=r"offset 999 .*-1"):
        index.append(BASE - 1, 0)
    assert not index.can_append(BASE - 1)
    too_far = BASE + U32_MAX + 1
    assert not index.can_append(too_far)
    with pytest.raises(ValueError, match=rf"{too_far}.*{BASE}.*{U32_MAX + 1}"):
        index.append(too_far, 0)
    assert index.can_append(BASE + U32_MAX)
    index.append(BASE + U32_MAX, 0)
    assert index.floor(BASE + U32_MAX - 1) == (BASE, 0)
    assert index.floor(BASE + U32_MAX) == (BASE + U32_MAX, 0)
    assert index.floor(2**70) == (BASE + U32_MAX, 0)
    assert index.to_arrays()[0].tolist() == [BASE + U32_MAX]


def test_offset_full_index(tmp_path):
    index = filled(OffsetIndex, tmp_path / "a.index", offset_entries(4), max_index_bytes=8 * 4 + 7)
    assert index.max_entries == 4 and index.is_full
    assert not index.can_append(BASE + 100)
    with pytest.raises(ValueError, match="full"):
        index.append(BASE + 100, 1000)
    assert os.path.getsize(index.path) == 32  # rounded down to whole entries


# --- time index ---------------------------------------------------------------------------------


def test_time_appends_skip_and_floor(tmp_path):
    index = TimeIndex(str(tmp_path / "a.timeindex"), BASE, max_index_bytes=1200)
    assert index.append(100, BASE + 5) is True
    assert index.append(100, BASE + 6) is False  # not a new maximum: skipped
    assert index.append(50, BASE + 7) is False
    assert index.append(200, BASE + 7) is True
    assert index.append(300, BASE + 7) is True  # the same offset again is allowed
    assert index.entries == 3 and index.last_entry == (300, BASE + 7)
    with pytest.raises(ValueError, match="below the last"):
        index.append(400, BASE + 6)
    with pytest.raises(ValueError):
        index.append(400, BASE - 1)
    with pytest.raises(ValueError):
        index.append(400, BASE + U32_MAX + 1)
    assert index.entries == 3
    expected = {-5: (-1, BASE), 99: (-1, BASE), 100: (100, BASE + 5), 199: (100, BASE + 5),
                250: (200, BASE + 7), 300: (300, BASE + 7), 2**64: (300, BASE + 7), -(2**64): (-1, BASE)}
    for target, answer in expected.items():
        assert index.floor(target) == answer, target
    timestamps, offsets = index.to_arrays()
    assert timestamps.dtype == offsets.dtype == np.int64
    assert timestamps.tolist() == [100, 200, 300] and offsets.tolist() == [BASE + 5, BASE + 7, BASE + 7]


def test_time_last_slot_is_reserved_for_the_final_entry(tmp_path):
    index = TimeIndex(str(tmp_path / "a.timeindex"), BASE, max_index_bytes=12 * 4)
    for timestamp in (1, 2, 3):
        assert not index.is_full
        index.append(timestamp, BASE)
    assert index.is_full and index.entries == 3
    with pytest.raises(ValueError, match="full"):
        index.append(4, BASE)
    assert index.append(3, BASE) is False  # nothing to append: no error even when full
    assert index.append(4, BASE + 1, final=True) is True
    with pytest.raises(ValueError, match="full"):
        index.append(5, BASE + 1, final=True)
    assert index.entries == 4


def test_time_index_needs_two_slots(tmp_path):
    with pytest.raises(ValueError):
        TimeIndex(str(tmp_path / "a.timeindex"), BASE, max_index_bytes=12)


# --- truncation ---------------------------------------------------------------------------------


def test_offset_truncate_to(tmp_path):
    index = filled(OffsetIndex, tmp_path / "a.index", offset_entries(10), max_index_bytes=800)
    index.truncate_to(BASE + U32_MAX + 10)  # beyond every entry: nothing dropped
    assert index.entries == 10
    index.truncate_to(BASE + 7)  # drops the entry at BASE+7 and above
    assert index.entries == 3 and index.last_offset == BASE + 5
    index.truncate_to(BASE + 6)
    assert index.entries == 3
    assert index.floor(BASE + 100) == (BASE + 5, 13)
    index.append(BASE + 6, 13)  # appending continues after the cut
    assert index.floor(BASE + 100) == (BASE + 6, 13)
    index.truncate_to(BASE)
    assert index.entries == 0 and index.floor(BASE + 100) == (BASE, 0)


def test_time_truncate_to(tmp_path):
    index = filled(TimeIndex, tmp_path / "a.timeindex", time_entries(6), max_index_bytes=1200)
    # offsets BASE, BASE+1, BASE+1, BASE+2, BASE+2, BASE+3
    index.truncate_to(BASE + 2)
    assert index.entries == 3 and index.last_entry == (30, BASE + 1)
    assert index.floor(10**9) == (30, BASE + 1)
    index.truncate_to(BASE - 5)
    assert index.entries == 0 and index.last_entry == (-1, BASE)


@pytest.mark.parametrize("cls, make, empty", KINDS)
def test_truncated_entries_are_zeroed_on_disk(tmp_path, cls, make, empty):
    # Without zeroing, the dropped entries would survive in the preallocated area and a crash would
    # bring them back in order, looking valid. Zeroed, they are a detectable zero tail.
    path = tmp_path / "a"
    index = filled(cls, path, make(10), max_index_bytes=1200)
    index.flush()  # every entry in the file
    cut = index.entry(4)[1] if cls is TimeIndex else index.entry(4)[0]
    index.truncate_to(cut)
    kept = index.entries
    index.close(trim=False)  # a crash: nothing trimmed
    reopened = cls(str(path), BASE, writable=False)
    with pytest.raises(CorruptIndexError) as caught:
        reopened.sanity_check()
    assert caught.value.position == kept * cls.ENTRY_BYTES


@pytest.mark.parametrize("cls, make, empty", KINDS)
def test_reset(tmp_path, cls, make, empty):
    index = filled(cls, tmp_path / "a", make(10), max_index_bytes=1200)
    index.reset()
    assert index.entries == 0 and index.floor(2**62) == empty
    assert os.path.getsize(index.path) == 1200 // cls.ENTRY_BYTES * cls.ENTRY_BYTES
    with open(index.path, "rb") as file:
        assert file.read() == bytes(os.path.getsize(index.path))
    for entry in make(3):
        index.append(*entry)
    assert [index.entry(n) for n in range(3)] == make(3)


# --- trim, reopen, close -----------------------------------------------------------------------


@pytest.mark.parametrize("cls, make, empty", KINDS)
def test_trim_then_reopen_read_only(tmp_path, cls, make, empty):
    path = tmp_path / "a"
    index = filled(cls, path, make(20), max_index_bytes=1200)
    assert os.path.getsize(path) == 1200 // cls.ENTRY_BYTES * cls.ENTRY_BYTES
    before = [a.tolist() for a in index.to_arrays()]
    index.trim()
    assert os.path.getsize(path) == 20 * cls.ENTRY_BYTES
    assert [a.tolist() for a in index.to_arrays()] == before  # still readable after trim
    assert not index.writable
    with pytest.raises(ValueError):
        index.append(*make(21)[-1])
    index.flush()  # makes the trim durable; works without a map
    index.close()
    sealed = cls(str(path), BASE, writable=False)
    assert [a.tolist() for a in sealed.to_arrays()] == before
    assert [sealed.entry(n) for n in range(20)] == make(20)
    sealed.sanity_check()
    with pytest.raises(ValueError):
        sealed.append(*make(21)[-1])
    with pytest.raises(ValueError):
        sealed.truncate_to(BASE)
    sealed.trim()  # nothing to trim: no-op
    assert os.path.getsize(path) == 20 * cls.ENTRY_BYTES


@pytest.mark.parametrize("cls, make, empty", KINDS)
def test_reopen_writable_after_trim_preallocates_and_keeps_entries(tmp_path, cls, make, empty):
    path = tmp_path / "a"
    filled(cls, path, make(20), max_index_bytes=1200).close()
    assert os.path.getsize(path) == 20 * cls.ENTRY_BYTES
    index = cls(str(path), BASE, max_index_bytes=1200)
    assert os.path.getsize(path) == 1200 // cls.ENTRY_BYTES * cls.ENTRY_BYTES
    assert index.entries == 20 and [index.entry(n) for n in range(20)] == make(20)
    index.sanity_check()
    for entry in make(25)[20:]:
        index.append(*entry)
    index.close()
    assert os.path.getsize(path) == 25 * cls.ENTRY_BYTES
    assert [cls(str(path), BASE, writable=False).entry(n) for n in range(25)] == make(25)


def test_reopen_writable_larger_than_configured_keeps_entries(tmp_path):
    path = tmp_path / "a.index"
    filled(OffsetIndex, path, offset_entries(20), max_index_bytes=800).close()
    index = OffsetIndex(str(path), BASE, max_index_bytes=80)  # config shrank to 10 entries
    assert index.entries == 20 and index.max_entries == 20 and index.is_full
    assert index.floor(BASE + 100) == offset_entries(20)[-1]


@pytest.mark.parametrize("cls, make, empty", KINDS)
def test_close_is_idempotent_and_final(tmp_path, cls, make, empty):
    index = filled(cls, tmp_path / "a", make(3), max_index_bytes=1200)
    index.close()
    index.close()
    assert index.closed
    for use in (lambda: index.floor(BASE), lambda: index.entries, lambda: index.append(*make(4)[-1]),
                index.flush, index.trim, index.sanity_check):
        with pytest.raises(ValueError, match="closed"):
            use()
    sealed = cls(str(tmp_path / "a"), BASE, writable=False)
    sealed.close()
    sealed.close()
    with pytest.raises(ValueError, match="closed"):
        sealed.floor(BASE)


def test_context_manager_closes(tmp_path):
    with OffsetIndex(str(tmp_path / "a.index"), BASE, max_index_bytes=800) as index:
        index.append(BASE + 1, 0)
    assert index.closed and os.path.getsize(index.path) == 8


@pytest.mark.parametrize("cls, make, empty", KINDS)
def test_rename_keeps_working(tmp_path, cls, make, empty):
    index = filled(cls, tmp_path / "a", make(3), max_index_bytes=1200)
    index.rename(str(tmp_path / "a.swap"))
    assert index.path == str(tmp_path / "a.swap") and not (tmp_path / "a").exists()
    for entry in make(5)[3:]:
        index.append(*entry)
    index.flush()
    index.close()
    assert os.path.getsize(tmp_path / "a.swap") == 5 * cls.ENTRY_BYTES
    sealed = cls(str(tmp_path / "a.swap"), BASE, writable=False)
    sealed.rename(str(tmp_path / "a.deleted"))  # before loading: only the path changes
    assert [sealed.entry(n) for n in range(5)] == make(5)
    missing = cls(str(tmp_path / "none"), BASE, writable=False)
    missing.rename(str(tmp_path / "none.deleted"))  # a missing sealed file is an empty index
    assert missing.entries == 0


# --- crash leftovers and sanity_check ----------------------------------------------------------


@pytest.mark.parametrize("cls, make, empty", KINDS)
@pytest.mark.parametrize("writable", [True, False])
def test_zero_tail_after_crash_fails_sanity_check(tmp_path, cls, make, empty, writable):
    path = tmp_path / "a"
    index = filled(cls, path, make(7), max_index_bytes=1200)
    index.flush()
    index.close(trim=False)  # what a crash leaves: the preallocated length
    reopened = cls(str(path), BASE, max_index_bytes=1200, writable=writable)
    assert reopened.entries == 1200 // cls.ENTRY_BYTES  # Kafka's rule: the whole file counts
    with pytest.raises(CorruptIndexError) as caught:
        reopened.sanity_check()
    assert caught.value.path == str(path)
    assert caught.value.position == 7 * cls.ENTRY_BYTES
    assert "zero tail" in str(caught.value)


@pytest.mark.parametrize("cls, make, empty", KINDS)
def test_zero_tail_of_an_empty_index(tmp_path, cls, make, empty):
    index = cls(str(tmp_path / "a"), BASE, max_index_bytes=1200)
    index.close(trim=False)
    with pytest.raises(CorruptIndexError) as caught:
        cls(str(tmp_path / "a"), BASE, writable=False).sanity_check()
    assert caught.value.position == cls.ENTRY_BYTES  # slot 0 alone is a plausible entry


@pytest.mark.parametrize("cls, make, empty", KINDS)
@pytest.mark.parametrize("writable", [True, False])
def test_wrong_length_file_fails_sanity_check(tmp_path, cls, make, empty, writable):
    path = tmp_path / "a"
    filled(cls, path, make(5), max_index_bytes=1200).close()
    with open(path, "ab") as file:
        file.write(b"\x01\x02\x03")  # a torn entry
    index = cls(str(path), BASE, max_index_bytes=1200, writable=writable)
    assert index.entries == 5
    with pytest.raises(CorruptIndexError) as caught:
        index.sanity_check()
    assert caught.value.position == 5 * cls.ENTRY_BYTES and "multiple" in str(caught.value)


def test_offset_sanity_check_finds_decreasing_positions(tmp_path):
    path = tmp_path / "a.index"
    path.write_bytes(struct.pack(">IIIIII", 1, 100, 2, 200, 3, 150))
    with pytest.raises(CorruptIndexError, match="position 150") as caught:
        OffsetIndex(str(path), BASE, writable=False).sanity_check()
    assert caught.value.position == 16


def test_time_sanity_check_finds_decreasing_offsets(tmp_path):
    path = tmp_path / "a.timeindex"
    path.write_bytes(struct.pack(">qIqIqI", 10, 5, 20, 6, 30, 4))
    with pytest.raises(CorruptIndexError, match="relative offset 4") as caught:
        TimeIndex(str(path), BASE, writable=False).sanity_check()
    assert caught.value.position == 24


# --- the bytes on disk --------------------------------------------------------------------------


def test_offset_index_bytes_are_big_endian(tmp_path):
    path = tmp_path / "a.index"
    entries = [(BASE, 0), (BASE + 0x01020304, 0x0A0B0C0D), (BASE + U32_MAX, U32_MAX)]
    expected = b"".join(struct.pack(">II", offset - BASE, position) for offset, position in entries)
    index = filled(OffsetIndex, path, entries, max_index_bytes=800)
    index.flush()
    with open(path, "rb") as file:  # while mapped: the prefix, then the zeroed preallocation
        data = file.read()
    assert data[: len(expected)] == expected and data[len(expected):] == bytes(800 - len(expected))
    index.close()
    assert path.read_bytes() == expected
    assert expected[8:16] == b"\x01\x02\x03\x04\x0a\x0b\x0c\x0d"


def test_time_index_bytes_are_big_endian(tmp_path):
    path = tmp_path / "a.timeindex"
    entries = [(0, BASE), (0x0102030405060708, BASE + 0x0A0B0C0D), (2**63 - 1, BASE + U32_MAX)]
    expected = b"".join(struct.pack(">qI", timestamp, offset - BASE) for timestamp, offset in entries)
    index = filled(TimeIndex, path, entries, max_index_bytes=1200)
    index.flush()
    with open(path, "rb") as file:
        assert file.read(len(expected)) == expected
    index.close()
    assert path.read_bytes() == expected
    assert expected[12:24] == b"\x01\x02\x03\x04\x05\x06\x07\x08\x0a\x0b\x0c\x0d"


# --- one writer, lock-free readers -------------------------------------------------------------


@pytest.fixture
def busy_switching():
    """Make the interpreter switch threads often so readers interleave with the writer."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    yield
    sys.setswitchinterval(old)


@pytest.mark.parametrize("count", [200_000])
def test_concurrent_floor_during_appends(tmp_path, busy_switching, count):
    # entry i: offset BASE + 2i + 1, position 3i + 7. Zeros are never a valid entry, so a reader
    # that saw a half-written entry (or stale mirror) would notice.
    index = OffsetIndex(str(tmp_path / "a.index"), BASE, max_index_bytes=8 * count)
    done = threading.Event()
    errors: list[str] = []
    lookups = [0]

    def reader(seed: int) -> None:
        rng = random.Random(seed)
        while True:
            finished = done.is_set()
            visible = index.entries  # every one of these must be found by the floor below
            target = rng.randrange(BASE - 2, BASE + 2 * count + 3)
            offset, position = index.floor(target)
            lookups[0] += 1
            expected_min = min(visible - 1, (target - BASE - 1) // 2)  # slot the floor must reach
            if (offset, position) == (BASE, 0):
                if expected_min >= 0:
                    errors.append(f"floor({target}) = none, but entry {expected_min} was visible")
            else:
                slot, odd = divmod(offset - BASE - 1, 2)
                if odd or position != 3 * slot + 7 or offset > target or slot < expected_min:
                    errors.append(f"floor({target}) = {(offset, position)} with {visible} visible")
            if errors or finished:
                return

    readers = [threading.Thread(target=reader, args=(seed,)) for seed in (1, 2)]
    for thread in readers:
        thread.start()
    try:
        for i in range(count):
            index.append(BASE + 2 * i + 1, 3 * i + 7)
    finally:
        done.set()
        for thread in readers:
            thread.join()
    assert not errors, errors[:5]
    assert lookups[0] > 0
    assert index.entries == count and index.floor(BASE + 2 * count) == (BASE + 2 * count - 1, 3 * count + 4)
    index.close()


def test_concurrent_time_floor_during_appends(tmp_path, busy_switching):
    count = 50_000
    index = TimeIndex(str(tmp_path / "a.timeindex"), BASE, max_index_bytes=12 * (count + 1))
    done = threading.Event()
    errors: list[str] = []

    def reader() -> None:
        rng = random.Random(3)
        while not errors:
            finished = done.is_set()
            visible = index.entries
            target = rng.randrange(0, 5 * count + 10)
            timestamp, offset = index.floor(target)
            expected_min = min(visible - 1, (target - 5) // 5)  # entry i: timestamp 5i + 5
            if timestamp == -1:
                if offset != BASE or expected_min >= 0:
                    errors.append(f"floor({target}) = none with {visible} visible")
            else:
                slot, rest = divmod(timestamp - 5, 5)
                if rest or offset != BASE + slot or timestamp > target or slot < expected_min:
                    errors.append(f"floor({target}) = {(timestamp, offset)} with {visible} visible")
            if finished:
                return

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(count):
            index.append(5 * i + 5, BASE + i)
    finally:
        done.set()
        thread.join()
    assert not errors, errors[:5]
    index.close()


def _file_rows(cls, path) -> list[tuple[int, ...]]:
    """The non-zero entries in an index file, as written (big-endian)."""
    data = open(path, "rb").read()
    rows = [cls._ROW.unpack_from(data, at) for at in range(0, len(data) - cls.ENTRY_BYTES + 1, cls.ENTRY_BYTES)]
    return [row for row in rows if any(row)]


@pytest.mark.parametrize("cls, make, empty", KINDS)
def test_rows_reach_the_file_in_blocks_and_on_flush_trim_close(tmp_path, cls, make, empty):
    from logstore.index.mmap_array import STORE_EVERY_ENTRIES as block

    path = tmp_path / "a"
    entries = make(2 * block + 5)
    index = cls(str(path), BASE, max_index_bytes=64 * 1024)
    for n, entry in enumerate(entries, 1):
        index.append(*entry)
        assert index.entries == n and index.entry(n - 1) == entry  # lookups see every entry at once
    # the file holds whole blocks so far, and nothing but a prefix of the entries
    on_file = _file_rows(cls, path)
    assert len(on_file) == 2 * block
    index.flush()
    assert len(_file_rows(cls, path)) == len(entries)
    index.append(*make(2 * block + 6)[-1])
    index.trim()  # (on roll) stores the last row too
    assert len(_file_rows(cls, path)) == len(entries) + 1
    reopened = cls(str(path), BASE, writable=False)
    reopened.sanity_check()
    assert [reopened.entry(i) for i in range(reopened.entries)] == [index.entry(i) for i in range(index.entries)]


@pytest.mark.parametrize("cls, make, empty", KINDS)
def test_crash_with_rows_not_stored_leaves_a_valid_prefix(tmp_path, cls, make, empty):
    from logstore.index.mmap_array import STORE_EVERY_ENTRIES as block

    path = tmp_path / "a"
    entries = make(block + 3)
    index = filled(cls, path, entries, max_index_bytes=64 * 1024)
    index.close(trim=False)  # a crash: the last 3 rows never reached the map
    reopened = cls(str(path), BASE, writable=False)
    with pytest.raises(CorruptIndexError) as caught:  # the preallocated zero tail shows
        reopened.sanity_check()
    assert caught.value.position == block * cls.ENTRY_BYTES
    rows = _file_rows(cls, path)
    assert rows == [_file_layout(cls, entry) for entry in entries[:block]]


def _file_layout(cls, entry):
    """An entry as its row is stored: relative offsets in the file."""
    if cls is TimeIndex:
        return (entry[0], entry[1] - BASE)
    return (entry[0] - BASE, entry[1])


@pytest.mark.parametrize("cls, make, empty", KINDS)
def test_rows_appended_after_a_truncation_reach_the_file(tmp_path, cls, make, empty):
    from logstore.index.mmap_array import STORE_EVERY_ENTRIES as block

    path = tmp_path / "a"
    entries = make(2 * block)
    index = filled(cls, path, entries, max_index_bytes=64 * 1024)  # all stored
    index.truncate_entries(3)
    for entry in entries[3 : block + 3]:  # a whole block again after the cut
        index.append(*entry)
    assert _file_rows(cls, path) == [_file_layout(cls, entry) for entry in entries[: block + 3]]
    index.truncate_entries(2)
    index.flush()
    assert _file_rows(cls, path) == [_file_layout(cls, entry) for entry in entries[:2]]
