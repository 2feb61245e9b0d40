"""pytest-benchmark versions of the core scenarios (``make bench``; compare two commits with
``--benchmark-compare``). Each logstore figure has its baseline in the same module, run in the
same session: compare the ratio, not the absolute numbers (shared machine)."""

from __future__ import annotations

import os

import pytest
import run_core as core

from logstore import Log, LogConfig
from logstore import batch as batch_format

RECORDS = 100_000
VALUES = core.make_values(1000, 100)
BATCHES = [VALUES] * (RECORDS // 1000)
BIG_BATCH = batch_format.encode([os.urandom(1000)] * 1040, timestamps_ms=1)
WRITE_BYTES = 64 * core.MiB


def rate(benchmark, fn, unit):
    result = {}

    def run():
        result["units"], result["seconds"] = fn()

    benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=1)
    benchmark.extra_info[unit] = result["units"] / result["seconds"]


@pytest.mark.benchmark(group="append-100B")
def test_naive_framed_append(benchmark, tmp_path):
    rate(benchmark, lambda: core.naive_framed_append(str(tmp_path / "n"), BATCHES), "records_per_s")


@pytest.mark.benchmark(group="append-100B")
def test_logstore_append(benchmark, tmp_path):
    rate(benchmark, lambda: core.logstore_append(str(tmp_path / "l"), BATCHES), "records_per_s")


@pytest.mark.benchmark(group="append-100B")
def test_lmdb_append(benchmark, tmp_path):
    pytest.importorskip("lmdb")
    rate(benchmark, lambda: core.lmdb_append(str(tmp_path / "m"), BATCHES)[1], "records_per_s")


@pytest.mark.benchmark(group="read-100B")
def test_logstore_read_columns(benchmark, tmp_path):
    core.logstore_append(str(tmp_path / "l"), BATCHES)
    rate(benchmark, lambda: core.logstore_read(str(tmp_path / "l"), True), "records_per_s")


@pytest.mark.benchmark(group="read-100B")
def test_logstore_read_records(benchmark, tmp_path):
    core.logstore_append(str(tmp_path / "l"), BATCHES)
    rate(benchmark, lambda: core.logstore_read(str(tmp_path / "l"), False), "records_per_s")


@pytest.mark.benchmark(group="read-100B")
def test_lmdb_read(benchmark, tmp_path):
    pytest.importorskip("lmdb")
    env, _ = core.lmdb_append(str(tmp_path / "m"), BATCHES)
    rate(benchmark, lambda: core.lmdb_read(env), "records_per_s")


@pytest.mark.benchmark(group="append-1MiB-batches")
def test_raw_sequential_write(benchmark, tmp_path):
    rate(benchmark, lambda: core.raw_sequential_write(str(tmp_path / "r"), WRITE_BYTES), "bytes_per_s")


@pytest.mark.benchmark(group="append-1MiB-batches")
def test_logstore_append_batches(benchmark, tmp_path):
    rate(benchmark, lambda: core.logstore_append_batches(str(tmp_path / "b"), BIG_BATCH, WRITE_BYTES), "bytes_per_s")


@pytest.mark.benchmark(group="recovery")
def test_unclean_recovery(benchmark, tmp_path):
    result = {}

    def run():
        result.update(core.recovery(str(tmp_path / "rec"), WRITE_BYTES, BIG_BATCH))

    benchmark.pedantic(run, rounds=2, iterations=1)
    benchmark.extra_info["GB_per_s"] = result["GB_per_s"]


@pytest.mark.benchmark(group="open")
def test_open_with_many_sealed_segments(benchmark, tmp_path):
    directory = tmp_path / "many"
    core.open_many_segments(str(directory), 2000)
    config = LogConfig(durability="none", segment_bytes=1024, index_interval_bytes=4096)

    def reopen():
        Log(directory, config).close()

    benchmark.pedantic(reopen, rounds=3, iterations=1)
