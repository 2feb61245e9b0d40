"""Batch codec speed (pytest-benchmark), each next to a naive baseline measured in the same run.

    .venv/bin/python -m pytest -q bench/test_bench_codec.py --benchmark-only

The case the targets are set for: 1000 values of 100 bytes, no keys, one timestamp for all, no
compression. The baseline is the least work any framing can do in Python: a 4-byte length in
front of each value, one join. Records per second = 1000 / mean time; ``extra_info`` records it.
"""

from __future__ import annotations

import os
import random
import struct

import pytest

from logstore.batch import Compression, decode, decode_columns, encode, validate

N = 1000
VALUES = [os.urandom(100) for _ in range(N)]
TIMESTAMP_MS = 1_700_000_000_000
BATCH = encode(VALUES, timestamps_ms=TIMESTAMP_MS)

_rng = random.Random(7)
MIXED_VALUES = [_rng.randbytes(_rng.randrange(50, 150)) for _ in range(N)]
MIXED_KEYS = [_rng.randbytes(16) for _ in range(N)]
MIXED_TIMESTAMPS = [TIMESTAMP_MS + i for i in range(N)]
MIXED_BATCH = encode(MIXED_VALUES, keys=MIXED_KEYS, timestamps_ms=MIXED_TIMESTAMPS)

_LENGTH = struct.Struct(">I")


def naive_frame(values):
    return b"".join(_LENGTH.pack(len(v)) + v for v in values)


def naive_unframe(data):
    out, pos, end = [], 0, len(data)
    while pos < end:
        (size,) = _LENGTH.unpack_from(data, pos)
        out.append(data[pos + 4 : pos + 4 + size])
        pos += 4 + size
    return out


NAIVE_FRAMED = naive_frame(VALUES)


def run(benchmark, function, *args, records=N, **kwargs):
    result = benchmark(function, *args, **kwargs)
    if benchmark.stats is not None:
        benchmark.extra_info["records_per_s"] = round(records / benchmark.stats.stats.mean)
    return result


# --- the target case ----------------------------------------------------------------------------


@pytest.mark.benchmark(group="encode 1000 x 100 B")
def test_naive_baseline_encode(benchmark):
    assert len(run(benchmark, naive_frame, VALUES)) == N * 104


@pytest.mark.benchmark(group="encode 1000 x 100 B")
def test_encode(benchmark):
    assert run(benchmark, encode, VALUES, timestamps_ms=TIMESTAMP_MS) == BATCH


@pytest.mark.benchmark(group="decode 1000 x 100 B")
def test_naive_baseline_decode(benchmark):
    assert run(benchmark, naive_unframe, NAIVE_FRAMED) == VALUES


@pytest.mark.benchmark(group="decode 1000 x 100 B")
def test_decode_columns(benchmark):
    assert run(benchmark, decode_columns, BATCH).values == VALUES


@pytest.mark.benchmark(group="decode 1000 x 100 B")
def test_decode(benchmark):
    assert run(benchmark, decode, BATCH)[-1].value == VALUES[-1]


@pytest.mark.benchmark(group="validate")
def test_validate_1mib(benchmark):
    big = encode([os.urandom(1 << 20)], timestamps_ms=TIMESTAMP_MS)
    assert run(benchmark, validate, big, records=1).records_count == 1


# --- other shapes: varying sizes, keys, timestamps (the general paths) ----------------------------


@pytest.mark.benchmark(group="mixed: sizes 50-149 B, 16 B keys, per-record timestamps")
def test_encode_mixed(benchmark):
    assert (
        run(benchmark, encode, MIXED_VALUES, keys=MIXED_KEYS, timestamps_ms=MIXED_TIMESTAMPS) == MIXED_BATCH
    )


@pytest.mark.benchmark(group="mixed: sizes 50-149 B, 16 B keys, per-record timestamps")
def test_decode_columns_mixed(benchmark):
    assert run(benchmark, decode_columns, MIXED_BATCH).values == MIXED_VALUES


# --- with compression (codec time dominates) -----------------------------------------------------

COMPRESSIBLE = [(b"user=%06d action=click page=/home " % i).ljust(100, b".") for i in range(N)]


@pytest.mark.parametrize("codec", [Compression.LZ4, Compression.ZSTD], ids=["lz4", "zstd"])
@pytest.mark.benchmark(group="compressed encode")
def test_encode_compressed(benchmark, codec):
    run(benchmark, encode, COMPRESSIBLE, timestamps_ms=TIMESTAMP_MS, compression=codec)


@pytest.mark.parametrize("codec", [Compression.LZ4, Compression.ZSTD], ids=["lz4", "zstd"])
@pytest.mark.benchmark(group="compressed decode_columns")
def test_decode_columns_compressed(benchmark, codec):
    data = encode(COMPRESSIBLE, timestamps_ms=TIMESTAMP_MS, compression=codec)
    assert run(benchmark, decode_columns, data).values == COMPRESSIBLE


# --- small batches (the record-by-record Python path) ----------------------------------------------

SMALL = VALUES[:10]
SMALL_BATCH = encode(SMALL, timestamps_ms=TIMESTAMP_MS)


@pytest.mark.benchmark(group="small: 10 x 100 B")
def test_naive_baseline_encode_small(benchmark):
    run(benchmark, naive_frame, SMALL, records=10)


@pytest.mark.benchmark(group="small: 10 x 100 B")
def test_encode_small(benchmark):
    assert run(benchmark, encode, SMALL, timestamps_ms=TIMESTAMP_MS, records=10) == SMALL_BATCH


@pytest.mark.benchmark(group="small: 10 x 100 B")
def test_decode_small(benchmark):
    assert run(benchmark, decode, SMALL_BATCH, records=10)[-1].value == SMALL[-1]
