"""The core benchmark (`make run`): logstore beside the machine's limits and its peers, in one run.

Every figure is printed next to a baseline measured in the same run on the same disk, and the
ratio between them; on a shared, noisy machine only the ratios mean much. Writes
``bench-results/<timestamp>/results.json``. Exits non-zero only if a scenario fails, never because
a number is low.

    python bench/run_core.py [--data DIR] [--quick] [--full]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sqlite3
import struct
import sys
import time
import traceback

import numpy as np

import logstore
from logstore import Log, LogConfig
from logstore import batch as batch_format
from logstore.index import OffsetIndex, TimeIndex

MiB = 1024 * 1024


def best_of(runs: int, fn):
    """Run ``fn`` (returning (units, seconds)) ``runs`` times; keep the fastest rate."""
    best = 0.0
    for _ in range(runs):
        units, seconds = fn()
        best = max(best, units / seconds)
    return best


def side_by_side(runs: int, *fns) -> list[float]:
    """Alternate the measurements (a, b, a, b, ...) so a noisy neighbour or the kernel's dirty
    page writeback hits both alike; keep each one's fastest rate."""
    best = [0.0] * len(fns)
    for _ in range(runs):
        for i, fn in enumerate(fns):
            units, seconds = fn()
            best[i] = max(best[i], units / seconds)
    return best


def fresh(path: str) -> str:
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    return path


def make_values(count: int, size: int) -> list[bytes]:
    rng = np.random.default_rng(7)
    blob = rng.integers(0, 256, size=count * size, dtype=np.uint8).tobytes()
    return [blob[i * size : (i + 1) * size] for i in range(count)]


# --- baselines ----------------------------------------------------------------------------------


def raw_sequential_write(directory: str, total_bytes: int) -> tuple[int, float]:
    chunk = os.urandom(MiB)
    path = os.path.join(fresh(directory), "raw")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    start = time.perf_counter()
    for _ in range(total_bytes // MiB):
        os.write(fd, chunk)
    seconds = time.perf_counter() - start
    os.close(fd)
    return total_bytes, seconds


def raw_sequential_read(directory: str) -> tuple[int, float]:
    path = os.path.join(directory, "raw")
    fd = os.open(path, os.O_RDONLY)
    total = 0
    start = time.perf_counter()
    while True:
        data = os.read(fd, MiB)
        if not data:
            break
        total += len(data)
    seconds = time.perf_counter() - start
    os.close(fd)
    return total, seconds


def naive_framed_append(directory: str, batches: list[list[bytes]]) -> tuple[int, float]:
    """Length prefix per record, one os.write per batch of records: the simplest durable-ish log."""
    path = os.path.join(fresh(directory), "naive")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    pack = struct.Struct(">I").pack
    count = 0
    start = time.perf_counter()
    for values in batches:
        os.write(fd, b"".join([pack(len(v)) + v for v in values]))
        count += len(values)
    seconds = time.perf_counter() - start
    os.close(fd)
    return count, seconds


def lmdb_append(directory: str, batches: list[list[bytes]]):
    import lmdb

    env = lmdb.open(fresh(directory), map_size=8 << 30, sync=False, metasync=False, writemap=True)
    count = 0
    start = time.perf_counter()
    key = 0
    for values in batches:
        items = [(struct.pack(">Q", key + i), v) for i, v in enumerate(values)]
        key += len(values)
        with env.begin(write=True) as txn:
            txn.cursor().putmulti(items, append=True)
        count += len(values)
    seconds = time.perf_counter() - start
    return env, (count, seconds)


def lmdb_read(env) -> tuple[int, float]:
    count = 0
    start = time.perf_counter()
    with env.begin() as txn:
        for _key, _value in txn.cursor():
            count += 1
    return count, time.perf_counter() - start


def sqlite_wal_append(directory: str, batches: list[list[bytes]]) -> tuple[int, float]:
    path = os.path.join(fresh(directory), "db.sqlite")
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=OFF")
    db.execute("CREATE TABLE log (offset INTEGER PRIMARY KEY, value BLOB)")
    count = 0
    start = time.perf_counter()
    for values in batches:
        db.executemany("INSERT INTO log (offset, value) VALUES (?, ?)", ((count + i, v) for i, v in enumerate(values)))
        db.commit()
        count += len(values)
    seconds = time.perf_counter() - start
    db.close()
    return count, seconds


# --- logstore -----------------------------------------------------------------------------------

CONFIG = LogConfig(durability="none")


def logstore_append(directory: str, batches: list[list[bytes]]) -> tuple[int, float]:
    with Log(fresh(directory), CONFIG) as log:
        count = 0
        start = time.perf_counter()
        for values in batches:
            log.append(values, timestamps_ms=1_700_000_000_000)
            count += len(values)
        seconds = time.perf_counter() - start
    return count, seconds


def logstore_read(directory: str, columns: bool) -> tuple[int, float]:
    """Read everything back: as Record tuples (``read``) or as value/key lists (``read_columns``)."""
    with Log(directory, CONFIG) as log:
        count = 0
        offset = 0
        end = log.log_end_offset
        start = time.perf_counter()
        while offset < end:
            if columns:
                got = log.read_columns(offset, max_bytes=4 * MiB)
                count += len(got.values)
                offset = int(got.offsets[-1]) + 1
            else:
                records = log.read(offset, max_bytes=4 * MiB)
                count += len(records)
                offset = records[-1].offset + 1
        return count, time.perf_counter() - start


def logstore_append_batches(directory: str, batch: bytes, total_bytes: int) -> tuple[int, float]:
    with Log(fresh(directory), CONFIG.replace(max_batch_bytes=2 * MiB)) as log:
        written = 0
        start = time.perf_counter()
        while written < total_bytes:
            log.append_batches(batch)
            written += len(batch)
        seconds = time.perf_counter() - start
    return written, seconds


def index_lookups(directory: str, entries: int) -> dict:
    fresh(directory)
    offsets = np.arange(entries, dtype=np.int64) * 10
    index = OffsetIndex(os.path.join(directory, "i.index"), 0, max_index_bytes=entries * 8 + 8)
    times = TimeIndex(os.path.join(directory, "i.timeindex"), 0, max_index_bytes=entries * 12 + 24)
    for i in range(entries):
        index.append(int(offsets[i]), i * 4096 % (2**31))
        times.append(1_000_000 + i, int(offsets[i]))
    rng = np.random.default_rng(1)
    targets = rng.integers(0, entries * 10, size=20000).tolist()
    start = time.perf_counter()
    for t in targets:
        index.floor(t)
    offset_us = (time.perf_counter() - start) / len(targets) * 1e6
    ts_targets = (1_000_000 + rng.integers(0, entries, size=20000)).tolist()
    start = time.perf_counter()
    for t in ts_targets:
        times.floor(t)
    time_us = (time.perf_counter() - start) / len(ts_targets) * 1e6
    index.close()
    times.close()
    return {"offset_lookup_us": offset_us, "time_lookup_us": time_us, "entries": entries}


def open_many_segments(directory: str, count: int) -> dict:
    """A log with ``count`` sealed segments, closed cleanly, then reopened."""
    fresh(directory)
    config = LogConfig(durability="none", segment_bytes=1024, index_interval_bytes=4096)
    with Log(directory, config) as log:
        values = [b"x" * 400]
        for _ in range(count * 2):
            log.append(values, timestamps_ms=1)
        segments = len(log.segments)
    start = time.perf_counter()
    with Log(directory, config) as log:
        opened = time.perf_counter() - start
        assert len(log.segments) == segments and log.was_clean_shutdown
    return {"segments": segments, "open_seconds": opened}


def recovery(directory: str, total_bytes: int, batch: bytes) -> dict:
    """An unflushed tail of ``total_bytes`` in the active segment, then an unclean reopen."""
    fresh(directory)
    config = LogConfig(durability="none", segment_bytes=min(total_bytes + 4 * MiB, 2**31 - 1), max_batch_bytes=2 * MiB)
    log = Log(directory, config)
    written = 0
    while written < total_bytes:
        log.append_batches(batch)
        written += len(batch)
    # crash: no close, no checkpoint, no clean marker
    log._closed = True
    for segment in log._segments:
        segment._file.close()
    del log
    start = time.perf_counter()
    with Log(directory, config) as log:
        seconds = time.perf_counter() - start
        assert not log.was_clean_shutdown and log.active_segment.size == written
    return {"bytes": written, "seconds": seconds, "GB_per_s": written / seconds / 1e9}


# --- driver -------------------------------------------------------------------------------------


def machine_facts(data: str) -> dict:
    def version(name):
        try:
            from importlib.metadata import version as v

            return v(name)
        except Exception:
            return None

    fs = None
    try:
        with open("/proc/mounts") as f:
            mounts = [line.split() for line in f]
        real = os.path.realpath(data)
        best = max((m for m in mounts if real.startswith(m[1])), key=lambda m: len(m[1]), default=None)
        fs = best[2] if best else None
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "filesystem": fs,
        "logstore": logstore.__version__,
        "numpy": np.__version__,
        "lmdb": version("lmdb"),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data", help="scratch directory for the benchmark files")
    parser.add_argument("--quick", action="store_true", help="smaller sizes (about a minute)")
    parser.add_argument("--out", default="bench-results")
    args = parser.parse_args(argv)
    quick = args.quick
    data = os.path.abspath(os.path.join(args.data, "bench"))
    os.makedirs(data, exist_ok=True)
    records_total = 200_000 if quick else 1_000_000
    batch_records = 1000
    values = make_values(batch_records, 100)
    batches = [values] * (records_total // batch_records)
    runs = 2 if quick else 3
    write_bytes = (256 if quick else 1024) * MiB
    results: dict = {"machine": machine_facts(data), "quick": quick, "figures": {}}
    figures = results["figures"]
    failures = []

    def scenario(name, fn):
        print(f"  running {name} ...", flush=True)
        try:
            fn()
        except Exception:
            failures.append(name)
            traceback.print_exc()

    def appends():
        naive, ours = side_by_side(
            runs,
            lambda: naive_framed_append(os.path.join(data, "naive"), batches),
            lambda: logstore_append(os.path.join(data, "log"), batches),
        )
        figures["naive_append_rps"] = naive
        figures["logstore_append_rps"] = ours
        figures["sqlite_wal_append_rps"] = best_of(1, lambda: sqlite_wal_append(os.path.join(data, "sqlite"), batches))

    def reads():
        figures["logstore_read_rps"] = best_of(runs, lambda: logstore_read(os.path.join(data, "log"), True))
        figures["logstore_read_records_rps"] = best_of(runs, lambda: logstore_read(os.path.join(data, "log"), False))

    def lmdb():
        try:
            import lmdb  # noqa: F401
        except ImportError:
            results["skipped"] = results.get("skipped", []) + ["lmdb (pip install logstore[bench])"]
            return
        best_append = 0.0
        env = None
        for _ in range(runs):
            env, (count, seconds) = lmdb_append(os.path.join(data, "lmdb"), batches)
            best_append = max(best_append, count / seconds)
        figures["lmdb_append_rps"] = best_append
        figures["lmdb_read_rps"] = best_of(runs, lambda: lmdb_read(env))
        env.close()

    def big_batches():
        batch = batch_format.encode([os.urandom(1000)] * 1040, timestamps_ms=1)  # about 1 MiB
        raw_write, ours = side_by_side(
            runs,
            lambda: raw_sequential_write(os.path.join(data, "raw"), write_bytes),
            lambda: logstore_append_batches(os.path.join(data, "big"), batch, write_bytes),
        )
        figures["raw_write_MBps"] = raw_write / 1e6
        figures["logstore_append_batches_MBps"] = ours / 1e6
        figures["raw_read_MBps"] = best_of(runs, lambda: raw_sequential_read(os.path.join(data, "raw"))) / 1e6

    def lookups():
        figures.update(index_lookups(os.path.join(data, "index"), 200_000 if quick else 1_000_000))

    def many_segments():
        figures.update(open_many_segments(os.path.join(data, "many"), 2_000 if quick else 10_000))

    def recover():
        batch = batch_format.encode([os.urandom(1000)] * 1040, timestamps_ms=1)
        result = recovery(os.path.join(data, "recovery"), (256 if quick else 1024) * MiB, batch)
        figures["recovery_GBps"] = result["GB_per_s"]
        figures["recovery_bytes"] = result["bytes"]

    print(f"logstore core benchmark ({'quick' if quick else 'full'}) in {data}")
    print("machine: " + ", ".join(f"{k}={v}" for k, v in results["machine"].items()))
    for name, fn in [
        ("append: naive / logstore / sqlite", appends),
        ("read back", reads),
        ("lmdb", lmdb),
        ("append pre-encoded 1 MiB batches", big_batches),
        ("index lookups", lookups),
        ("open with many sealed segments", many_segments),
        ("unclean recovery", recover),
    ]:
        scenario(name, fn)

    def ratio(a, b):
        return figures[a] / figures[b] if a in figures and b in figures and figures[b] else None

    results["ratios"] = {
        "append_vs_naive": ratio("logstore_append_rps", "naive_append_rps"),
        "append_vs_lmdb": ratio("logstore_append_rps", "lmdb_append_rps"),
        "read_vs_lmdb": ratio("logstore_read_rps", "lmdb_read_rps"),
        "read_records_vs_lmdb": ratio("logstore_read_records_rps", "lmdb_read_rps"),
        "append_batches_vs_raw_write": ratio("logstore_append_batches_MBps", "raw_write_MBps"),
        "recovery_vs_raw_read": (figures["recovery_GBps"] * 1000 / figures["raw_read_MBps"])
        if "recovery_GBps" in figures and "raw_read_MBps" in figures
        else None,
    }
    rows = [
        ("append 100 B records (rec/s)", "logstore_append_rps", "naive_append_rps", "append_vs_naive", ">= 0.7"),
        ("  vs LMDB putmulti (rec/s)", "logstore_append_rps", "lmdb_append_rps", "append_vs_lmdb", ">= 1.0"),
        ("  SQLite WAL (rec/s)", "sqlite_wal_append_rps", None, None, ""),
        ("read back, read_columns (rec/s)", "logstore_read_rps", "lmdb_read_rps", "read_vs_lmdb", ">= 1.0"),
        ("read back, read -> Record (rec/s)", "logstore_read_records_rps", "lmdb_read_rps", "read_records_vs_lmdb", ""),
        ("append 1 MiB batches (MB/s)", "logstore_append_batches_MBps", "raw_write_MBps", "append_batches_vs_raw_write", ">= 0.8"),
        ("offset lookup (us)", "offset_lookup_us", None, None, "<= 5"),
        ("time lookup (us)", "time_lookup_us", None, None, "<= 5"),
        ("open sealed segments (s)", "open_seconds", None, None, "<= 1"),
        ("unclean recovery (GB/s)", "recovery_GBps", None, "recovery_vs_raw_read", ">= 1"),
    ]
    print()
    print(f"{'figure':34} {'logstore':>14} {'baseline':>14} {'ratio':>7}  target")
    for label, key, base, ratio_key, target in rows:
        value = figures.get(key)
        base_value = figures.get(base) if base else None
        r = results["ratios"].get(ratio_key) if ratio_key else None
        def fmt(x):
            return (f"{x:,.2f}" if x is not None and x < 100 else (f"{x:,.0f}" if x is not None else "-"))
        print(f"{label:34} {fmt(value):>14} {fmt(base_value):>14} {(f'{r:.2f}') if r else '-':>7}  {target}")
    if "segments" in figures:
        print(f"(opened {figures['segments']} sealed segments; recovery scanned {figures.get('recovery_bytes', 0) / MiB:.0f} MiB)")
    for skipped in results.get("skipped", []):
        print(f"skipped: {skipped}")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = os.path.join(args.out, stamp)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    print(f"\nresults: {os.path.join(out, 'results.json')}")
    shutil.rmtree(data, ignore_errors=True)
    if failures:
        print("failed scenarios: " + ", ".join(failures), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
