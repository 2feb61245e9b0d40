"""The storage scenarios: append, read back, lookups, open, unclean recovery.

Each ``logstore_*`` function below measures logstore alone and returns ``(units, seconds)`` for
the timed part, like the functions of :mod:`.baselines`; ``bench/test_bench_log.py`` runs them
under pytest-benchmark. The scenario functions (registered with :func:`~.runner.scenario`) run
them in alternation with their baselines and record figures and ratios.

Logs are opened with ``durability="none"`` (no fsync), as every baseline runs without fsync.
"""

from __future__ import annotations

import bisect
import os
import shutil
import statistics
import subprocess
import sys
import time

import numpy as np

from .. import Log, LogConfig
from .. import batch as batch_format
from . import baselines as base
from .runner import MiB, Run, alternate, scenario

CONFIG = LogConfig(durability="none")
BATCH_TARGET_BYTES = 512 * 1024  #: records per append call: about this many payload bytes (<= 1000)
TIMESTAMP_MS = 1_700_000_000_000


def records_per_batch(record_bytes: int) -> int:
    return max(1, min(1000, BATCH_TARGET_BYTES // record_bytes))


def make_batches(record_bytes: int, records: int) -> list[list[bytes]]:
    """``records`` random values of ``record_bytes`` in batches (one batch's list reused: the
    bytes are incompressible and no subject compresses, so repeating them changes nothing)."""
    per_batch = min(records, records_per_batch(record_bytes))
    blob = np.random.default_rng(7).integers(0, 256, size=per_batch * record_bytes, dtype=np.uint8).tobytes()
    values = [blob[i * record_bytes : (i + 1) * record_bytes] for i in range(per_batch)]
    return [values] * max(1, records // per_batch)


def payload_bytes(batches: list[list[bytes]]) -> int:
    return sum(sum(map(len, values)) for values in batches)


# --- logstore, measured alone --------------------------------------------------------------------


def logstore_append(directory: str, batches: list[list[bytes]], config: LogConfig = CONFIG) -> tuple[int, float]:
    """``Log.append`` of each batch of values into a new log; returns ``(payload_bytes, seconds)``."""
    with Log(base.fresh(directory), config) as log:
        start = time.perf_counter()
        for values in batches:
            log.append(values, timestamps_ms=TIMESTAMP_MS)
        seconds = time.perf_counter() - start
    return payload_bytes(batches), seconds


def logstore_read(directory: str, *, columns: bool, max_bytes: int | None = 4 * MiB) -> tuple[int, float]:
    """Read the whole log back with ``read_columns`` (values as lists) or ``read`` (Record
    tuples), ``max_bytes`` per call (None: the API's default, 1 MiB, as Kafka's
    ``max.partition.fetch.bytes``); returns ``(payload_bytes, seconds)``."""
    limit = {} if max_bytes is None else {"max_bytes": max_bytes}
    total = 0
    with Log(directory, CONFIG) as log:
        offset, end = log.log_start_offset, log.log_end_offset
        start = time.perf_counter()
        while offset < end:
            if columns:
                got = log.read_columns(offset, **limit)
                total += sum(map(len, got.values))
                offset = int(got.offsets[-1]) + 1
            else:
                records = log.read(offset, **limit)
                total += sum(len(r.value) for r in records)
                offset = records[-1].offset + 1
        seconds = time.perf_counter() - start
    return total, seconds


def logstore_append_batches(directory: str, batch: bytes, count: int) -> tuple[int, float]:
    """``Log.append_batches`` of the same pre-encoded batch ``count`` times; ``(bytes, seconds)``."""
    with Log(base.fresh(directory), CONFIG.replace(max_batch_bytes=2 * MiB)) as log:
        start = time.perf_counter()
        for _ in range(count):
            log.append_batches(batch)
        seconds = time.perf_counter() - start
    return len(batch) * count, seconds


def logstore_open(directory: str, config: LogConfig) -> tuple[int, float]:
    """Open (not close) an existing log cleanly closed before; returns ``(segments, seconds)``."""
    start = time.perf_counter()
    log = Log(directory, config)
    seconds = time.perf_counter() - start
    segments = len(log.segments)
    log.close()
    return segments, seconds


def write_many_segments(directory: str, segments: int) -> LogConfig:
    """A log of ``segments`` small sealed segments (two 400-byte records each), closed cleanly."""
    config = LogConfig(durability="none", segment_bytes=1024, index_interval_bytes=4096)
    with Log(base.fresh(directory), config) as log:
        values = [b"x" * 400]
        for _ in range(segments * 2):
            log.append(values, timestamps_ms=1)
    return config


def stat_segment_files(directory: str) -> tuple[int, float]:
    """The floor under opening: list the directory and ``stat`` every file; ``(segments, s)``."""
    start = time.perf_counter()
    files = 0
    for entry in os.scandir(directory):
        entry.stat()
        files += entry.name.endswith(".log")
    return files, time.perf_counter() - start


_CRASH = r"""
import os, sys
from logstore import Log, LogConfig
directory, total, batch = sys.argv[1], int(sys.argv[2]), bytes.fromhex(sys.stdin.read())
config = LogConfig(durability="none", segment_bytes=int(sys.argv[3]), max_batch_bytes=2 << 20)
log = Log(directory, config)
written = 0
while written < total:
    log.append_batches(batch)
    written += len(batch)
os._exit(0)  # no close, no checkpoint, no clean-shutdown marker: the next open recovers
"""


def crashed_log(directory: str, tail_bytes: int, batch: bytes) -> LogConfig:
    """Write ``tail_bytes`` of batches in a child process that then exits without closing."""
    segment_bytes = min(tail_bytes + 4 * MiB, 2**31 - 1)
    subprocess.run([sys.executable, "-c", _CRASH, base.fresh(directory), str(tail_bytes), str(segment_bytes)],
                   input=batch.hex(), text=True, check=True, timeout=300)
    return LogConfig(durability="none", segment_bytes=segment_bytes, max_batch_bytes=2 * MiB)


def logstore_recover(crashed: str, scratch: str, config: LogConfig) -> tuple[int, float]:
    """Copy the crashed log (untimed), then time its unclean open; ``(log bytes, seconds)``."""
    shutil.rmtree(scratch, ignore_errors=True)
    shutil.copytree(crashed, scratch)
    start = time.perf_counter()
    log = Log(scratch, config)
    seconds = time.perf_counter() - start
    try:
        if log.was_clean_shutdown:
            raise AssertionError("the crashed log opened as cleanly closed: recovery was not measured")
        return log.size_bytes, seconds
    finally:
        log.close()


def one_mib_batch(record_bytes: int = 1000) -> bytes:
    """One batch of about 1 MiB of random values."""
    count = max(1, MiB // (record_bytes + 12))
    values = make_batches(record_bytes, count)[0]
    return batch_format.encode(values, timestamps_ms=TIMESTAMP_MS)


# --- scenarios -----------------------------------------------------------------------------------

_SUBJECTS = {  # subject -> (label, kind)
    "logstore": ("logstore Log.append", "logstore"),
    "raw_write": ("raw sequential write (limit)", "limit"),
    "naive": ("naive length-prefixed file", "peer"),
    "lmdb": ("LMDB putmulti(append)", "peer"),
    "sqlite": ("SQLite WAL executemany", "peer"),
}


def _record(run: Run, rates: dict, labels: dict, unit: str, scale: float, record_bytes=None, *,
            pick=max, **extra) -> dict:
    """One figure per subject: ``pick`` (the best, or ``statistics.median``) of its samples."""
    ids = {}
    for name, samples in rates.items():
        label, kind = labels[name]
        rates_scaled = [r * scale for r in samples]
        ids[name] = run.figure(name, pick(rates_scaled), unit, label=label, kind=kind, record_bytes=record_bytes,
                               samples=rates_scaled, **extra)
    return ids


@scenario("append", "append Python records (Log.append) vs raw write, a naive file, LMDB, SQLite",
          steps=lambda p: len(p.record_bytes) * p.rounds * 5)
def append_scenario(run: Run) -> None:
    lmdb = run.optional_module("lmdb", "lmdb")
    for size in run.params.record_bytes:
        _append_size(run, size, lmdb is not None)


def _append_size(run: Run, size: int, with_lmdb: bool) -> None:
    batches = make_batches(size, run.params.records_for(size))
    chunks = [b"".join(batches[0])] * len(batches)
    subjects = {
        "logstore": lambda: logstore_append(run.path("log"), batches),
        "raw_write": lambda: base.raw_write(run.path("raw"), chunks),
        "naive": lambda: base.naive_append(run.path("naive"), batches),
        "sqlite": lambda: base.sqlite_append(run.path("sqlite"), batches),
    }
    if with_lmdb:
        subjects["lmdb"] = lambda: base.lmdb_append(run.path("lmdb"), batches)
    rates = alternate(run, subjects, detail=f"{size} B")
    ids = _record(run, rates, _SUBJECTS, "MB/s", 1e-6, size, records=len(batches) * len(batches[0]),
                  records_per_append=len(batches[0]))
    for other in ("raw_write", "naive", "lmdb", "sqlite"):
        run.compare(ids["logstore"], ids.get(other, ""))


def append_batch(record_bytes: int = 1000, batch_bytes: int = MiB) -> bytes:
    """One batch of about ``batch_bytes`` of random values, for ``append_batches``.

    (:func:`one_mib_batch` goes through :func:`make_batches`, which caps a batch at
    ``BATCH_TARGET_BYTES`` of payload, so its batch is about 517 KiB, not 1 MiB.)
    """
    count = max(1, batch_bytes // (record_bytes + 12))
    blob = np.random.default_rng(7).integers(0, 256, size=count * record_bytes, dtype=np.uint8).tobytes()
    values = [blob[i * record_bytes : (i + 1) * record_bytes] for i in range(count)]
    return batch_format.encode(values, timestamps_ms=TIMESTAMP_MS)


_APPEND_BATCHES_PASSES_PER_ROUND = 5


@scenario("append_batches", "append pre-encoded 1 MiB batches (Log.append_batches) vs raw write",
          steps=lambda p: p.rounds * _APPEND_BATCHES_PASSES_PER_ROUND * 2)
def append_batches_scenario(run: Run) -> None:
    """Medians over rounds x 5 short passes (64 MiB: ~15 ms each): on this shared VM one pass of
    either subject now and then runs 10-15% fast, which decides a best-of figure; the median of
    15 passes moved by about 1% between runs where the best-of ratio moved by 10%."""
    batch = append_batch()
    count = max(1, run.params.bytes_per_size // len(batch))
    rates = alternate(run, {
        "logstore": lambda: logstore_append_batches(run.path("log"), batch, count),
        "raw_write": lambda: base.raw_write(run.path("raw"), [batch] * count),
    }, rounds=run.params.rounds * _APPEND_BATCHES_PASSES_PER_ROUND)
    ids = _record(run, rates, {"logstore": ("logstore Log.append_batches", "logstore"),
                               "raw_write": ("raw sequential write (limit)", "limit")},
                  "MB/s", 1e-6, pick=statistics.median, batch_bytes=len(batch), batches=count,
                  statistic="median")
    run.compare(ids["logstore"], ids["raw_write"])


@scenario("read", "sequential read back vs raw read, a naive file, LMDB, SQLite",
          steps=lambda p: len(p.record_bytes) * p.rounds * 7)
def read_scenario(run: Run) -> None:
    """logstore reads 4 MiB per call, and once more with the API's default ``max_bytes`` (1 MiB,
    as a Kafka consumer's ``max.partition.fetch.bytes``). Which is faster depends on the record
    size: with 100 B records a 4 MiB call returns ~40k objects, more than the CPU caches hold
    while the consumer touches them and frees them, and 1 MiB calls run ~10% faster; with 1 KiB
    and 10 KiB records the fixed cost per call dominates and 4 MiB calls run 40-60% faster."""
    lmdb = run.optional_module("lmdb", "lmdb")
    for size in run.params.record_bytes:
        _read_size(run, size, lmdb is not None)


_READ_SUBJECTS = {
    "logstore": ("logstore read_columns", "logstore"),
    "logstore_records": ("logstore read -> Record", "logstore"),
    "logstore_1mib": ("logstore read_columns, 1 MiB per call (default)", "logstore"),
    "raw_read": ("raw sequential read (limit)", "limit"),
    "naive": ("naive length-prefixed file", "peer"),
    "lmdb": ("LMDB cursor", "peer"),
    "sqlite": ("SQLite SELECT", "peer"),
}


def _read_size(run: Run, size: int, with_lmdb: bool) -> None:
    batches = make_batches(size, run.params.records_for(size))
    logstore_append(run.path("log"), batches)
    base.raw_write(run.path("raw"), [b"".join(batches[0])] * len(batches))
    base.naive_append(run.path("naive"), batches)
    base.sqlite_append(run.path("sqlite"), batches)
    subjects = {
        "logstore": lambda: logstore_read(run.path("log"), columns=True),
        "logstore_records": lambda: logstore_read(run.path("log"), columns=False),
        "logstore_1mib": lambda: logstore_read(run.path("log"), columns=True, max_bytes=None),
        "raw_read": lambda: base.raw_read(run.path("raw", "raw")),
        "naive": lambda: base.naive_read(run.path("naive")),
        "sqlite": lambda: base.sqlite_read(run.path("sqlite")),
    }
    if with_lmdb:
        base.lmdb_append(run.path("lmdb"), batches)
        subjects["lmdb"] = lambda: base.lmdb_read(run.path("lmdb"))
    rates = alternate(run, subjects, detail=f"{size} B")
    ids = _record(run, rates, _READ_SUBJECTS, "MB/s", 1e-6, size, records=len(batches) * len(batches[0]))
    for other in ("raw_read", "naive", "lmdb", "sqlite"):
        run.compare(ids["logstore"], ids.get(other, ""))
    for mine in ("logstore_records", "logstore_1mib"):
        for other in ("raw_read", "lmdb"):
            run.compare(ids[mine], ids.get(other, ""))


@scenario("lookup", "offset and time lookups vs bisect in memory, LMDB get, SQLite index",
          steps=lambda p: p.rounds * 7)
def lookup_scenario(run: Run) -> None:
    params = run.params
    per_batch = 100
    batches = make_batches(100, params.lookup_records)
    batches = [values[:per_batch] for values in batches for _ in range(len(values) // per_batch)]
    timestamps = [TIMESTAMP_MS + 10 * i for i in range(len(batches))]
    config = LogConfig(durability="none", segment_bytes=max(64 * 1024, params.lookup_records * 120 // 8))
    with Log(base.fresh(run.path("log")), config) as log:
        for values, ts in zip(batches, timestamps, strict=True):
            log.append(values, timestamps_ms=ts)
        segments = len(log.segments)
    base.sqlite_append(run.path("sqlite"), batches, timestamps)
    lmdb = run.optional_module("lmdb", "lmdb")
    if lmdb:
        base.lmdb_append(run.path("lmdb"), batches)
    records = len(batches) * per_batch
    rng = np.random.default_rng(1)
    offsets = rng.integers(0, records, size=params.lookups).tolist()
    times = (TIMESTAMP_MS + rng.integers(0, 10 * len(batches), size=params.lookups)).tolist()
    batch_bases = list(range(0, records, per_batch))

    def bisect_floor(keys, sorted_list):
        start = time.perf_counter()
        for key in keys:
            bisect.bisect_right(sorted_list, key)
        return len(keys), time.perf_counter() - start

    def logstore_lookups(method, keys, **kwargs):
        with Log(run.path("log"), config) as log:
            call = getattr(log, method)
            start = time.perf_counter()
            for key in keys:
                call(key, **kwargs)
            return len(keys), time.perf_counter() - start

    offset_subjects = {
        "logstore": lambda: logstore_lookups("read_slice", offsets, max_bytes=1),
        "bisect": lambda: bisect_floor(offsets, batch_bases),
        "sqlite": lambda: base.sqlite_lookups(run.path("sqlite"), "SELECT value FROM log WHERE offset = ?", offsets),
    }
    if lmdb:
        offset_subjects["lmdb"] = lambda: base.lmdb_gets(run.path("lmdb"), offsets)
    time_subjects = {
        "logstore": lambda: logstore_lookups("offset_for_timestamp", times),
        "bisect": lambda: bisect_floor(times, timestamps),
        "sqlite": lambda: base.sqlite_lookups(
            run.path("sqlite"), "SELECT offset FROM log WHERE ts >= ? ORDER BY ts LIMIT 1", times),
    }
    for metric, subjects, labels in (
        ("offset", offset_subjects, {"logstore": ("logstore read_slice(offset)", "logstore"),
                                     "bisect": ("bisect on an in-memory list (limit)", "limit"),
                                     "lmdb": ("LMDB get(key)", "peer"),
                                     "sqlite": ("SQLite primary key", "peer")}),
        ("time", time_subjects, {"logstore": ("logstore offset_for_timestamp", "logstore"),
                                 "bisect": ("bisect on an in-memory list (limit)", "limit"),
                                 "sqlite": ("SQLite index on ts", "peer")}),
    ):
        rates = alternate(run, subjects, detail=metric)
        ids = {}
        for name, samples in rates.items():
            label, kind = labels[name]
            ids[name] = run.figure(name, max(samples), "lookups/s", label=label, kind=kind, metric=metric,
                                   samples=samples, us_per_lookup=1e6 / max(samples), records=records,
                                   segments=segments)
        for other in ("bisect", "lmdb", "sqlite"):
            run.compare(ids["logstore"], ids.get(other, ""))


@scenario("open", "open a log of many sealed segments after a clean close vs stat of its files",
          steps=lambda p: p.rounds * 2)
def open_scenario(run: Run) -> None:
    config = write_many_segments(run.path("log"), run.params.open_segments)
    rates = alternate(run, {
        "logstore": lambda: logstore_open(run.path("log"), config),
        "stat_files": lambda: stat_segment_files(run.path("log")),
    })
    ids = _record(run, rates, {"logstore": ("logstore Log() open", "logstore"),
                               "stat_files": ("list + stat the files (limit)", "limit")},
                  "segments/s", 1.0, segments=run.params.open_segments)
    run.compare(ids["logstore"], ids["stat_files"])


@scenario("recovery", "unclean recovery of an unflushed tail vs raw read of the same file",
          steps=lambda p: p.rounds * 2)
def recovery_scenario(run: Run) -> None:
    config = crashed_log(run.path("crashed"), run.params.tail_bytes, one_mib_batch())
    segment = max(name for name in os.listdir(run.path("crashed")) if name.endswith(".log"))
    rates = alternate(run, {
        "logstore": lambda: logstore_recover(run.path("crashed"), run.path("scratch"), config),
        "raw_read": lambda: base.raw_read(run.path("crashed", segment)),
    })
    ids = _record(run, rates, {"logstore": ("logstore unclean open (recovery)", "logstore"),
                               "raw_read": ("raw sequential read (limit)", "limit")},
                  "MB/s", 1e-6, tail_bytes=run.params.tail_bytes)
    run.compare(ids["logstore"], ids["raw_read"])
