"""Compaction throughput and memory: one pass over a log of ``BENCH_COMPACTION_RECORDS`` records
(default 1,000,000; the issue's figure is 10,000,000) whose keys are 10% unique.

Run with ``pytest bench/test_bench_compaction.py --benchmark-only``. Records: keys drawn
uniformly from ``records / 10`` keys, 1000 records a batch, uncompressed, 64 MiB segments, all
sealed (the active segment is never cleaned). Two layouts: ``fixed`` (13-byte keys, 100-byte
values: every record the same size, which the cleaner's record walk turns into a few numpy calls
a batch) and ``varied`` (5 to 11-byte keys, 50 to 149-byte values: the walk steps record by
record in Python). Every round cleans a fresh copy of that log (the copy is not timed) with
``BENCH_COMPACTION_BUDGET_MB`` of memory (default 64).

``extra_info``: ``MB_per_s`` (input bytes: the segments the pass rewrote, per second),
``records_per_s``, and ``peak_bytes`` -- the largest amount the pass allocated at once, Python
objects and numpy arrays together (``tracemalloc``, measured in a separate untimed run, because
tracing slows allocation down) -- next to ``budget_bytes``, which the peak must stay within.
Kafka logs the same figure per pass ("N MB of log processed in S seconds (X MB/sec)").
"""

from __future__ import annotations

import os
import shutil
import time
import tracemalloc

import numpy as np
import pytest

from logstore import Log, LogConfig
from logstore.cleaner import CleanerCheckpoint, clean_log

RECORDS = int(os.environ.get("BENCH_COMPACTION_RECORDS", "1000000"))
BUDGET = int(os.environ.get("BENCH_COMPACTION_BUDGET_MB", "64")) << 20
BATCH = 1000
NOW = 1_800_000_000_000
CONFIG = LogConfig(segment_bytes=64 << 20, cleanup_policy="compact", durability="none")


@pytest.fixture(scope="module", params=["fixed", "varied"])
def template(request, tmp_path_factory):
    directory = tmp_path_factory.mktemp("compaction") / request.param
    rng = np.random.default_rng(1)
    unique = max(RECORDS // 10, 1)
    if request.param == "fixed":
        key_format, values = b"key-%09d", [bytes(range(100))] * BATCH
    else:
        key_format, values = b"key-%d", [bytes(range(50 + i % 100)) for i in range(BATCH)]
    with Log(directory, CONFIG) as log:
        for i in range(RECORDS // BATCH):
            keys = [key_format % k for k in rng.integers(0, unique, BATCH).tolist()]
            log.append(values, keys=keys, timestamps_ms=NOW + i)
        log.roll()
        size = sum(s.size for s in log.segments)
    return directory, size


def fresh_copy(template, name):
    directory, _size = template
    target = directory.parent / name
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(directory, target)
    return Log(target, CONFIG)


def run_pass(log):
    return clean_log(log, now_ms=NOW + RECORDS, memory_budget_bytes=BUDGET, checkpoint=CleanerCheckpoint())


@pytest.mark.benchmark(group="compaction")
def test_compaction_pass(benchmark, template):
    _directory, size = template
    results = []

    def setup():
        return (fresh_copy(template, f"round-{len(results)}"),), {}

    def clean(log):
        started = time.perf_counter()
        result = run_pass(log)
        results.append((result, time.perf_counter() - started))
        log.close()

    benchmark.pedantic(clean, setup=setup, rounds=3 if RECORDS <= 2_000_000 else 1, iterations=1)
    best = min(seconds for _r, seconds in results)
    result = results[0][0]
    assert result.status == "cleaned" and not result.map_full
    assert result.bytes_read == size and result.records_read == RECORDS
    assert result.records_kept <= RECORDS // 10

    log = fresh_copy(template, "traced")
    tracemalloc.start()
    try:
        traced = run_pass(log)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        log.close()
    assert traced.status == "cleaned"
    benchmark.extra_info.update(
        records=RECORDS,
        input_MB=size / 1e6,
        MB_per_s=size / 1e6 / best,
        records_per_s=RECORDS / best,
        keys=result.keys_mapped,
        output_MB=result.bytes_written / 1e6,
        peak_bytes=peak,
        budget_bytes=BUDGET,
    )
    print(f"\ncompaction ({template[0].name}): {RECORDS} records, {size / 1e6:.0f} MB in {best:.2f} s: {size / 1e6 / best:.0f} MB/s, "
          f"{RECORDS / best / 1e6:.2f} M records/s; peak {peak / 2**20:.1f} MiB of a {BUDGET >> 20} MiB budget")
    assert peak <= BUDGET
