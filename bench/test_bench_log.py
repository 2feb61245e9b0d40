"""pytest-benchmark versions of ``logstore bench``'s storage operations (``make bench``; compare
two commits with ``--benchmark-compare``).

Each benchmark times one operation (the set-up, such as a fresh directory or a copy of a crashed
log, runs in pytest-benchmark's untimed ``setup``), using the functions of
:mod:`logstore.benchmarks`. Each logstore benchmark has its baselines in the same group, run in
the same session: on a shared machine compare ratios within a group, not absolute times.
``extra_info["MB_per_s"]`` is the payload rate of the fastest round.
"""

from __future__ import annotations

import os
import shutil

import pytest

from logstore import Log, LogConfig
from logstore.benchmarks import baselines as base
from logstore.benchmarks import scenarios as sc
from logstore.benchmarks.cleaning import dirty_log, find_cleaner

SIZES = [100, 1024, 10240]
TOTAL_BYTES = 32 * base.MiB
ROUNDS = 3


def batches_for(size: int) -> list[list[bytes]]:
    return sc.make_batches(size, min(200_000, TOTAL_BYTES // size))


def measure(benchmark, fn, *, setup=None, payload_bytes: int | None = None):
    """Time ``fn`` (``setup`` untimed before each round); ``payload_bytes`` gives MB/s."""
    benchmark.pedantic(fn, setup=setup, rounds=ROUNDS, iterations=1, warmup_rounds=0)
    if payload_bytes is not None and benchmark.stats is not None:  # None with --benchmark-disable
        benchmark.extra_info["MB_per_s"] = round(payload_bytes / benchmark.stats.stats.min / 1e6, 1)


def fresh_dir(path: str):
    def setup():
        shutil.rmtree(path, ignore_errors=True)

    return setup


# --- append Python records ---------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("subject", ["logstore", "raw_write", "naive", "lmdb", "sqlite"])
def test_append(benchmark, tmp_path, subject, size):
    benchmark.group = f"append-{size}B"
    batches = batches_for(size)
    path = str(tmp_path / subject)
    if subject == "logstore":
        def fn():
            with Log(path, sc.CONFIG) as log:
                for values in batches:
                    log.append(values, timestamps_ms=sc.TIMESTAMP_MS)
    elif subject == "raw_write":
        chunks = [b"".join(batches[0])] * len(batches)

        def fn():
            base.raw_write(path, chunks)
    elif subject == "lmdb":
        pytest.importorskip("lmdb")

        def fn():
            base.lmdb_append(path, batches)
    else:
        fn = {"naive": lambda: base.naive_append(path, batches), "sqlite": lambda: base.sqlite_append(path, batches)}[subject]
    measure(benchmark, fn, setup=fresh_dir(path), payload_bytes=sc.payload_bytes(batches))


@pytest.mark.benchmark(group="append-batches-1MiB")
@pytest.mark.parametrize("subject", ["logstore", "raw_write"])
def test_append_batches(benchmark, tmp_path, subject):
    batch = sc.append_batch()
    count = TOTAL_BYTES // len(batch)
    path = str(tmp_path / subject)
    config = sc.CONFIG.replace(max_batch_bytes=2 * base.MiB)

    if subject == "raw_write":
        measure(benchmark, lambda: base.raw_write(path, [batch] * count), setup=fresh_dir(path),
                payload_bytes=len(batch) * count)
        return
    # as in the append_batches scenario, only the appends are timed: opening the log and closing
    # it (which fsyncs, while raw_write never does) happen in the untimed setup
    opened: list[Log] = []

    def setup():
        while opened:
            opened.pop().close()
        shutil.rmtree(path, ignore_errors=True)
        opened.append(Log(path, config))

    def logstore():
        log = opened[-1]
        for _ in range(count):
            log.append_batches(batch)

    try:
        measure(benchmark, logstore, setup=setup, payload_bytes=len(batch) * count)
    finally:
        while opened:
            opened.pop().close()


# --- read back ---------------------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("subject", ["logstore", "logstore_records", "raw_read", "naive", "lmdb", "sqlite"])
def test_read(benchmark, tmp_path, subject, size):
    benchmark.group = f"read-{size}B"
    batches = batches_for(size)
    path = str(tmp_path / subject)
    if subject.startswith("logstore"):
        sc.logstore_append(path, batches)
        fn = lambda: sc.logstore_read(path, columns=subject == "logstore")  # noqa: E731
    elif subject == "raw_read":
        base.raw_write(path, [b"".join(batches[0])] * len(batches))
        fn = lambda: base.raw_read(os.path.join(path, "raw"))  # noqa: E731
    elif subject == "lmdb":
        pytest.importorskip("lmdb")
        base.lmdb_append(path, batches)
        fn = lambda: base.lmdb_read(path)  # noqa: E731
    else:
        {"naive": base.naive_append, "sqlite": base.sqlite_append}[subject](path, batches)
        fn = {"naive": lambda: base.naive_read(path), "sqlite": lambda: base.sqlite_read(path)}[subject]
    measure(benchmark, fn, payload_bytes=sc.payload_bytes(batches))


# --- lookups, open, recovery, compaction --------------------------------------------------------


@pytest.fixture(scope="module")
def lookup_log(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("lookup") / "log")
    config = LogConfig(durability="none", segment_bytes=4 * base.MiB)
    values = sc.make_batches(100, 100)[0]
    with Log(path, config) as log:
        for i in range(2000):
            log.append(values, timestamps_ms=sc.TIMESTAMP_MS + 10 * i)
    log = Log(path, config)
    yield log
    log.close()


@pytest.mark.benchmark(group="lookup")
def test_offset_lookup(benchmark, lookup_log):
    offsets = iter(range(7, 10**9, 9973))
    benchmark(lambda: lookup_log.read_slice(next(offsets) % lookup_log.log_end_offset, max_bytes=1))


@pytest.mark.benchmark(group="lookup")
def test_time_lookup(benchmark, lookup_log):
    times = iter(range(3, 10**9, 7919))
    benchmark(lambda: lookup_log.offset_for_timestamp(sc.TIMESTAMP_MS + next(times) % 20_000))


@pytest.mark.benchmark(group="open-2000-sealed-segments")
@pytest.mark.parametrize("subject", ["logstore", "stat_files"])
def test_open_many_segments(benchmark, tmp_path, subject):
    path = str(tmp_path / "many")
    config = sc.write_many_segments(path, 2000)
    fn = (lambda: Log(path, config).close()) if subject == "logstore" else (lambda: sc.stat_segment_files(path))
    measure(benchmark, fn)


@pytest.mark.benchmark(group="recovery-64MiB")
@pytest.mark.parametrize("subject", ["logstore", "raw_read"])
def test_unclean_recovery(benchmark, tmp_path, subject):
    crashed, scratch = str(tmp_path / "crashed"), str(tmp_path / "scratch")
    config = sc.crashed_log(crashed, 64 * base.MiB, sc.one_mib_batch())
    segment = os.path.join(crashed, max(n for n in os.listdir(crashed) if n.endswith(".log")))
    size = os.path.getsize(segment)

    def copy():
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.copytree(crashed, scratch)

    def recover():
        with Log(scratch, config) as log:
            assert not log.was_clean_shutdown

    if subject == "logstore":
        measure(benchmark, recover, setup=copy, payload_bytes=size)
    else:
        measure(benchmark, lambda: base.raw_read(segment), payload_bytes=size)


@pytest.mark.benchmark(group="compaction-16MiB-1KiB")
def test_compaction_pass(benchmark, tmp_path):
    cleaner, reason = find_cleaner()
    if cleaner is None:
        pytest.skip(reason)
    pristine, scratch = str(tmp_path / "pristine"), str(tmp_path / "scratch")
    config, _distinct = dirty_log(pristine, 1024, 16 * base.MiB)
    state = {}

    def setup():
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.copytree(pristine, scratch)
        state["log"] = Log(scratch, config)

    def clean():
        try:
            result = cleaner.clean_log(state["log"], now_ms=sc.TIMESTAMP_MS + 1000, checkpoint=cleaner.CleanerCheckpoint())
            assert result.status == "cleaned", result
        finally:
            state["log"].close()

    measure(benchmark, clean, setup=setup)
