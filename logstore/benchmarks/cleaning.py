"""The compaction scenario: one cleaner pass (:func:`logstore.cleaner.clean_log`) over a log in
which 9 of every 10 records have been overwritten by a later record with the same key.

Baselines, each over the same sealed segments and each ending with an fsync, as the cleaner's
rewrite does: copying the segment files (read + write + fsync of the same bytes: the limit of a
rewrite), and the compaction a user would write on the public API without the cleaner (read
everything with ``read_columns``, keep the last value of each key in a dict, append the survivors
to a new log). Every round works on a fresh copy of the same dirty log (the copy is not timed).

The scenario runs only when ``logstore.cleaner`` can be imported and has ``clean_log``; otherwise
it is reported as skipped with the reason.
"""

from __future__ import annotations

import os
import shutil
import time

from .. import Log, LogConfig
from . import baselines as base
from .runner import MiB, Run, alternate, scenario
from .scenarios import BATCH_TARGET_BYTES, TIMESTAMP_MS, make_batches, records_per_batch

OVERWRITES = 10  #: each key is written this many times; the cleaner keeps the last one


def find_cleaner():
    """``logstore.cleaner.clean_log`` and ``CleanerCheckpoint``, or ``(None, reason)``."""
    try:
        from .. import cleaner
    except ImportError as error:
        return None, f"logstore.cleaner is not available ({error})"
    missing = [name for name in ("clean_log", "CleanerCheckpoint") if not hasattr(cleaner, name)]
    if missing:
        return None, f"logstore.cleaner has no {', '.join(missing)}"
    return cleaner, None


def dirty_log(directory: str, record_bytes: int, total_bytes: int) -> tuple[LogConfig, int]:
    """A compacted log of ``total_bytes`` of values, all in sealed segments; returns its config
    and the number of distinct keys."""
    # about 8 segments, each holding at least two whole batches
    segment_bytes = max(total_bytes // 8, 2 * BATCH_TARGET_BYTES + 64 * 1024)
    config = LogConfig(durability="none", cleanup_policy="compact", segment_bytes=segment_bytes, retention_ms=None)
    records = max(OVERWRITES, total_bytes // record_bytes)
    batches = make_batches(record_bytes, records)
    distinct = max(1, records // OVERWRITES)
    offset = 0
    with Log(base.fresh(directory), config) as log:
        for values in batches:
            keys = [b"key-%09d" % ((offset + i) % distinct) for i in range(len(values))]
            log.append(values, keys=keys, timestamps_ms=TIMESTAMP_MS)
            offset += len(values)
        log.roll()  # everything written is sealed: the cleaner never touches the active segment
    return config, distinct


def _copy(pristine: str, scratch: str) -> None:
    shutil.rmtree(scratch, ignore_errors=True)
    shutil.copytree(pristine, scratch)


def logstore_clean(cleaner, pristine: str, scratch: str, config: LogConfig) -> tuple[int, float]:
    """One ``clean_log`` pass over a fresh copy; returns ``(bytes read by the pass, seconds)``."""
    _copy(pristine, scratch)
    with Log(scratch, config) as log:
        checkpoint = cleaner.CleanerCheckpoint()
        start = time.perf_counter()
        result = cleaner.clean_log(log, now_ms=TIMESTAMP_MS + 1000, checkpoint=checkpoint)
        seconds = time.perf_counter() - start
    if result.status != "cleaned":
        raise AssertionError(f"the cleaner did not clean: {result}")
    return result.bytes_read, seconds


def copy_segments(pristine: str, scratch: str) -> tuple[int, float]:
    """Read every ``.log`` file and write a copy of it, fsynced: the limit of a rewrite."""
    base.fresh(scratch)
    buffer = bytearray(MiB)
    total = 0
    start = time.perf_counter()
    for name in sorted(os.listdir(pristine)):
        if not name.endswith(".log"):
            continue
        with open(os.path.join(pristine, name), "rb", buffering=0) as src, \
                open(os.path.join(scratch, name), "wb", buffering=0) as dst:
            while n := src.readinto(buffer):
                dst.write(memoryview(buffer)[:n])
                total += n
            os.fsync(dst.fileno())
    return total, time.perf_counter() - start


def dict_compaction(pristine: str, scratch: str, config: LogConfig) -> tuple[int, float]:
    """What a user would write: read all, keep the last value per key, append them to a new log."""
    _copy(pristine, os.path.join(scratch, "in"))
    with Log(os.path.join(scratch, "in"), config) as log:
        total = log.size_bytes
        start = time.perf_counter()
        latest: dict[bytes, bytes] = {}
        offset = log.log_start_offset
        while offset < log.log_end_offset:
            columns = log.read_columns(offset, max_bytes=4 * MiB)
            latest.update(zip(columns.keys, columns.values, strict=True))
            offset = int(columns.offsets[-1]) + 1
        with Log(base.fresh(os.path.join(scratch, "out")), config) as out:
            keys, values = list(latest), list(latest.values())
            step = records_per_batch(len(values[0])) if values else 1
            for i in range(0, len(keys), step):
                out.append(values[i : i + step], keys=keys[i : i + step], timestamps_ms=TIMESTAMP_MS)
            out.sync()
        seconds = time.perf_counter() - start
    return total, seconds


@scenario("compaction", "one cleaner pass (logstore.cleaner.clean_log) vs copying the segments, a dict rewrite",
          steps=lambda p: len(p.record_bytes) * p.rounds * 3)
def compaction_scenario(run: Run) -> None:
    cleaner, reason = find_cleaner()
    if cleaner is None:
        run.skip("*", reason)
        return
    for size in run.params.record_bytes:
        _compaction_size(run, cleaner, size)


_LABELS = {"logstore": ("logstore clean_log pass", "logstore"),
           "copy_segments": ("copy the segments + fsync (limit)", "limit"),
           "dict_rewrite": ("dict rewrite via the public API", "peer")}


def _compaction_size(run: Run, cleaner, size: int) -> None:
    pristine = run.path("pristine")
    config, distinct = dirty_log(pristine, size, run.params.compaction_bytes)
    rates = alternate(run, {
        "logstore": lambda: logstore_clean(cleaner, pristine, run.path("scratch"), config),
        "copy_segments": lambda: copy_segments(pristine, run.path("copy")),
        "dict_rewrite": lambda: dict_compaction(pristine, run.path("dict"), config),
    }, detail=f"{size} B")
    ids = {}
    for name, samples in rates.items():
        label, kind = _LABELS[name]
        scaled = [r / 1e6 for r in samples]
        ids[name] = run.figure(name, max(scaled), "MB/s", label=label, kind=kind, record_bytes=size,
                               samples=scaled, distinct_keys=distinct, overwrites_per_key=OVERWRITES)
    for other in ("copy_segments", "dict_rewrite"):
        run.compare(ids["logstore"], ids.get(other, ""))
