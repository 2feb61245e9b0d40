"""Index benchmarks (pytest-benchmark). Run with ``pytest bench/test_bench_index.py --benchmark-only``.

One call of each benchmarked function is one lookup, so pytest-benchmark's "Mean" column is the
time per lookup. The 1M-entry files are written with numpy (not through 1M Python appends) and
then opened the two ways a segment opens them: writable (mmap + mirror) and sealed (lazy
``np.fromfile``). ``naive`` shows what the native mirror avoids: ``np.searchsorted`` straight on
the big-endian field of the file's records.
"""

from __future__ import annotations

import itertools
import os

import numpy as np
import pytest

from logstore.index import OffsetIndex, TimeIndex

N = 1_000_000
BASE = 5_000_000_000
TS0 = 1_700_000_000_000
OFFSET_STEP = 4  # an entry every 4 offsets
POSITION_STEP = 2048
TS_STEP = 10


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    directory = tmp_path_factory.mktemp("bench-index")
    slots = np.arange(N, dtype=np.int64)
    offsets = np.empty(N, OffsetIndex.DTYPE)
    offsets["relative_offset"] = slots * OFFSET_STEP + 3
    offsets["position"] = slots * POSITION_STEP
    times = np.empty(N, TimeIndex.DTYPE)
    times["timestamp_ms"] = TS0 + slots * TS_STEP
    times["relative_offset"] = slots * OFFSET_STEP + 3
    paths = {}
    for mode in ("writable", "sealed"):  # separate files: opening writable preallocates its file
        paths["offset", mode] = str(directory / f"{mode}.index")
        paths["time", mode] = str(directory / f"{mode}.timeindex")
        offsets.tofile(paths["offset", mode])
        times.tofile(paths["time", mode])
    return paths, offsets


@pytest.fixture(scope="module")
def indexes(files):
    paths, _ = files
    opened = {
        ("offset", "writable"): OffsetIndex(paths["offset", "writable"], BASE, max_index_bytes=10 * 1024 * 1024),
        ("offset", "sealed"): OffsetIndex(paths["offset", "sealed"], BASE, writable=False),
        ("time", "writable"): TimeIndex(paths["time", "writable"], BASE, max_index_bytes=16 * 1024 * 1024),
        ("time", "sealed"): TimeIndex(paths["time", "sealed"], BASE, writable=False),
    }
    for index in opened.values():
        assert index.entries == N  # also loads the sealed ones, outside the timed part
    yield opened
    for index in opened.values():
        index.close(trim=False)  # the writable ones keep their preallocation; the files are scratch


def cycling(values):
    return itertools.cycle(values.tolist()).__next__


@pytest.mark.parametrize("mode", ["writable", "sealed"])
def test_offset_floor_1m(benchmark, indexes, mode):
    index = indexes[("offset", mode)]
    next_target = cycling(np.random.default_rng(1).integers(BASE, BASE + N * OFFSET_STEP, 4096))
    benchmark.extra_info["entries"] = N
    result = benchmark(lambda: index.floor(next_target()))
    assert BASE <= result[0] < BASE + N * OFFSET_STEP


@pytest.mark.parametrize("mode", ["writable", "sealed"])
def test_time_floor_1m(benchmark, indexes, mode):
    index = indexes[("time", mode)]
    next_target = cycling(np.random.default_rng(2).integers(TS0, TS0 + N * TS_STEP, 4096))
    benchmark.extra_info["entries"] = N
    result = benchmark(lambda: index.floor(next_target()))
    assert TS0 <= result[0] < TS0 + N * TS_STEP


def test_offset_floor_1m_naive_big_endian_searchsorted(benchmark, files):
    """The baseline the mirror avoids: searching the file's strided big-endian field."""
    _, records = files
    field = records["relative_offset"]
    next_target = cycling(np.random.default_rng(3).integers(0, N * OFFSET_STEP, 64))
    benchmark.pedantic(lambda: int(field.searchsorted(np.uint32(next_target()), side="right")) - 1,
                       rounds=30, iterations=1)


def test_sealed_offset_index_first_load_1m(benchmark, files):
    """Constructing a sealed index and its first lookup (one ``np.fromfile`` of 8 MB)."""
    paths, _ = files

    def open_and_look_up():
        return OffsetIndex(paths["offset", "sealed"], BASE, writable=False).floor(BASE + 12345)

    benchmark.pedantic(open_and_look_up, rounds=10, iterations=1)


def test_construct_10k_sealed_offset_indexes(benchmark, tmp_path):
    """Opening 10,000 sealed segments' indexes must be path bookkeeping only (no open, no stat)."""
    specs = [(os.path.join(str(tmp_path), f"{base:020d}.index"), base) for base in range(0, 10_000 * 1000, 1000)]

    def construct():
        return [OffsetIndex(path, base, writable=False) for path, base in specs]

    built = benchmark(construct)
    assert len(built) == 10_000
    benchmark.extra_info["indexes_per_call"] = 10_000


def test_append_100k_offset_entries(benchmark, tmp_path):
    """Writer side: 100k appends to a preallocated, mapped index (per call: 100k appends)."""
    counter = itertools.count()

    def fresh():
        path = str(tmp_path / f"{next(counter)}.index")
        return (OffsetIndex(path, 0, max_index_bytes=8 * 100_000),), {}

    def append_all(index):
        for i in range(100_000):
            index.append(i, i * 64)
        index.close()

    benchmark.pedantic(append_all, setup=fresh, rounds=3, iterations=1)
