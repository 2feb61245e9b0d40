"""Record batch v2 (logstore.batch): layout, round trips, kafka-python interop, damage, fuzzing.

Fuzz invariant: whatever bytes ``decode``, ``decode_columns``, ``validate`` or ``iter_batches`` are
given, they either parse or raise CorruptBatchError -- never any other exception.
"""

from __future__ import annotations

import contextlib
import random
import struct

import cramjam
import crc32c
import kafka.codec
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder
from kafka.record.memory_records import MemoryRecords

from logstore import _record_decode, _record_encode, batch
from logstore.batch import (
    CRC_START,
    HEADER,
    HEADER_SIZE,
    LOG_OVERHEAD,
    MAGIC,
    BatchHeader,
    Compression,
    Record,
    decode,
    decode_columns,
    encode,
    iter_batches,
    set_base_offset,
    unpack_header,
    validate,
)
from logstore.errors import CorruptBatchError

CODECS = list(Compression)
TS = 1_700_000_000_000


def reseal(data) -> bytes:
    """Recompute the CRC of a single batch after editing it (to get past validate)."""
    data = bytearray(data)
    struct.pack_into(">I", data, 17, crc32c.crc32c(bytes(data[CRC_START:])))
    return bytes(data)


def sample_values(n: int, seed: int, *, size=(0, 200), tombstones=0.0) -> list:
    rng = random.Random(seed)
    return [None if rng.random() < tombstones else rng.randbytes(rng.randrange(*size)) for _ in range(n)]


def make_records(n: int, variant: str, seed: int = 0):
    """(values, keys, headers, timestamps) for one of a few shapes of input."""
    rng = random.Random(seed)
    values = [rng.randbytes(100) for _ in range(n)]
    keys = headers = None
    timestamps = [TS] * n
    if variant in ("mixed", "keys", "headers", "everything"):
        values = sample_values(n, seed, tombstones=0.1)
    if variant in ("keys", "everything"):
        keys = [None if rng.random() < 0.3 else rng.randbytes(rng.randrange(0, 30)) for _ in range(n)]
    if variant in ("headers", "everything"):
        headers = [
            [
                (f"h{j}", None if j % 2 else rng.randbytes(rng.randrange(0, 20)))
                for j in range(rng.randrange(4))
            ]
            for _ in range(n)
        ]
    if variant in ("timestamps", "everything"):
        timestamps = [TS + rng.randrange(-(2**40), 2**40) for _ in range(n)]
    return values, keys, headers, timestamps


VARIANTS = ["uniform", "mixed", "keys", "headers", "timestamps", "everything"]


def expected_records(values, keys, headers, timestamps, base_offset=0):
    n = len(values)
    return [
        Record(
            base_offset + i,
            timestamps[i],
            None if keys is None else keys[i],
            values[i],
            tuple(headers[i]) if headers else (),
        )
        for i in range(n)
    ]


@pytest.fixture
def kafka_snappy(monkeypatch):
    """kafka-python needs python-snappy for its xerial framing; give it cramjam's raw blocks."""

    class RawSnappy:
        @staticmethod
        def compress(data):
            return bytes(cramjam.snappy.compress_raw(data))

        @staticmethod
        def decompress(data):
            return bytes(cramjam.snappy.decompress_raw(data))

    monkeypatch.setattr(kafka.codec, "snappy", RawSnappy)


def kafka_python_build(
    values, keys, headers, timestamps, codec=0, *, producer=(-1, -1, -1), transactional=False
):
    builder = DefaultRecordBatchBuilder(2, codec, transactional, *producer, batch_size=1 << 40)
    for i, value in enumerate(values):
        key = None if keys is None else keys[i]
        builder.append(i, timestamps[i], key, value, list(headers[i]) if headers else [])
    return bytes(builder.build())


def kafka_python_read(data: bytes) -> list[tuple[DefaultRecordBatch, list[Record]]]:
    out = []
    records = MemoryRecords(data)
    while records.has_next():
        kbatch = records.next_batch()
        assert kbatch.validate_crc()
        out.append(
            (
                kbatch,
                [Record(r.offset, r.timestamp, r.key, r.value, tuple(r.headers)) for r in kbatch],
            )
        )
    return out


# --- layout ---------------------------------------------------------------------------------------


def test_header_layout_constants():
    assert HEADER.size == HEADER_SIZE == 61
    assert HEADER.format == ">qiibIhiqqqhii"
    assert LOG_OVERHEAD == 12 and MAGIC == 2 and CRC_START == 21
    assert batch.MIN_BATCH_LENGTH == 49
    assert BatchHeader._fields[:5] == (
        "base_offset",
        "batch_length",
        "partition_leader_epoch",
        "magic",
        "crc",
    )


def test_header_fields_and_properties():
    data = encode(
        [b"a", b"bb", b"ccc"],
        timestamps_ms=[5, 9, 7],
        base_offset=100,
        compression=Compression.LZ4,
        producer_id=42,
        producer_epoch=3,
        base_sequence=17,
        is_transactional=True,
        partition_leader_epoch=8,
    )
    header = unpack_header(data)
    assert header == validate(data)
    assert header.base_offset == 100 and header.partition_leader_epoch == 8 and header.magic == 2
    assert header.size == len(data) == LOG_OVERHEAD + header.batch_length
    assert header.last_offset_delta == 2 and header.last_offset == 102 and header.next_offset == 103
    assert header.base_timestamp == 5 and header.max_timestamp == 9
    assert (header.producer_id, header.producer_epoch, header.base_sequence) == (42, 3, 17)
    assert header.records_count == 3
    assert header.compression is Compression.LZ4
    assert header.attributes == 3 | 0x10
    assert header.timestamp_type == "CreateTime"
    assert header.is_transactional and not header.is_control
    assert header.delete_horizon_ms is None
    marked = header._replace(attributes=header.attributes | 0x08 | 0x20 | 0x40)
    assert marked.timestamp_type == "LogAppendTime" and marked.is_control
    assert marked.delete_horizon_ms == 5
    with pytest.raises(CorruptBatchError):
        _ = header._replace(attributes=6).compression


def test_encode_defaults():
    header = unpack_header(encode([b"x"]))
    assert (header.producer_id, header.producer_epoch, header.base_sequence) == (-1, -1, -1)
    assert header.partition_leader_epoch == -1 and header.base_offset == 0
    assert header.attributes == 0
    import time

    assert abs(header.base_timestamp - time.time() * 1000) < 60_000


# --- round trips ----------------------------------------------------------------------------------


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: c.name.lower())
@pytest.mark.parametrize("variant", VARIANTS)
def test_round_trip(codec, variant):
    values, keys, headers, timestamps = make_records(300, variant, seed=hash(variant) % 1000)
    data = encode(
        values, keys=keys, headers=headers, timestamps_ms=timestamps, base_offset=7, compression=codec
    )
    assert validate(data).compression is codec
    expected = expected_records(values, keys, headers, timestamps, base_offset=7)
    assert decode(data) == expected
    columns = decode_columns(data)
    assert columns.offsets.dtype == np.int64 and columns.timestamps_ms.dtype == np.int64
    assert columns.offsets.tolist() == [r.offset for r in expected]
    assert columns.timestamps_ms.tolist() == timestamps
    assert columns.keys == [r.key for r in expected]
    assert columns.values == values
    assert columns.headers == [r.headers for r in expected]


@pytest.mark.parametrize("n", [1, 2, 63, 64, 65, 8191, 8192, 8193, 10_000])
def test_record_counts_across_varint_widths(n):
    # offset_delta takes 2 bytes from 64 and 3 from 8192; record lengths change with it.
    values = [bytes([i % 251]) * 20 for i in range(n)]
    data = encode(values, timestamps_ms=TS)
    records = decode(data)
    assert [r.offset for r in records] == list(range(n))
    assert [r.value for r in records] == values
    header = validate(data)
    assert header.records_count == n and header.last_offset_delta == n - 1


def test_ten_thousand_mixed_records_compressed():
    values, keys, headers, timestamps = make_records(10_000, "keys", seed=3)
    data = encode(values, keys=keys, timestamps_ms=timestamps, compression=Compression.ZSTD)
    assert decode(data) == expected_records(values, keys, None, timestamps)


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: c.name.lower())
def test_big_values(codec):
    rng = random.Random(1)
    big = rng.randbytes(70_000)
    huge = (rng.randbytes(1000) * 1300)[:1_300_000]  # > 1 MiB: many lz4 blocks / zstd chunks
    values = [big, b"", None, huge, b"tail"]
    keys = [b"k" * 70_000, None, b"", b"x", None]
    data = encode(values, keys=keys, timestamps_ms=TS, compression=codec)
    assert decode(data) == expected_records(values, keys, None, [TS] * 5)


def test_timestamp_deltas_negative_large_and_wrapping():
    timestamps = [0, -1, 2**62, -(2**62), 2**63 - 1, -(2**63), 12345]
    data = encode([b"v"] * len(timestamps), timestamps_ms=timestamps)
    header = unpack_header(data)
    assert header.base_timestamp == 0 and header.max_timestamp == 2**63 - 1
    assert decode_columns(data).timestamps_ms.tolist() == timestamps
    assert [r.timestamp_ms for _, records in kafka_python_read(data) for r in records] == timestamps
    # Deltas that overflow int64 wrap, as Java's long arithmetic does, and wrap back on reading.
    wrapping = [2**63 - 1, -(2**63), 0]
    assert [r.timestamp_ms for r in decode(encode([b"v"] * 3, timestamps_ms=wrapping))] == wrapping


def test_one_timestamp_for_all_and_numpy_timestamps():
    data = encode([b"a", b"b"], timestamps_ms=np.int64(77))
    assert [r.timestamp_ms for r in decode(data)] == [77, 77]
    data = encode([b"a", b"b"], timestamps_ms=np.array([5, 3], dtype=np.int32))
    assert [r.timestamp_ms for r in decode(data)] == [5, 3]
    assert unpack_header(data).max_timestamp == 5


def test_log_append_time_gives_every_record_max_timestamp():
    data = encode([b"a", b"b", b"c"], timestamps_ms=[10, 30, 20], log_append_time=True)
    header = unpack_header(data)
    assert header.timestamp_type == "LogAppendTime" and header.attributes & 0x08
    assert [r.timestamp_ms for r in decode(data)] == [30, 30, 30]
    ((kbatch, records),) = kafka_python_read(data)
    assert [r.timestamp_ms for r in records] == [30, 30, 30]


def test_bytes_like_inputs():
    values = [b"abc", bytearray(b"de"), memoryview(b"xfghx")[1:4], None]
    keys = [memoryview(b"k1"), b"", bytearray(b"k3"), None]
    assert [(r.key, r.value) for r in decode(encode(values, keys=keys))] == [
        (b"k1", b"abc"),
        (b"", b"de"),
        (b"k3", b"fgh"),
        (None, None),
    ]
    # A memoryview whose items are wider than a byte is taken as its bytes.
    wide = memoryview(np.arange(3, dtype=np.int32).tobytes()).cast("i")
    assert decode(encode([wide, b"x"]))[0].value == wide.tobytes()
    assert decode(encode(v for v in [b"gen"]))[0].value == b"gen"


def test_header_values_and_non_utf8_keys_round_trip():
    headers = [[("a", b"1"), ("a", None), ("", b""), ("\udcff\u00e9", b"\x00")], []]
    records = decode(encode([b"x", None], headers=headers))
    assert [list(r.headers) for r in records] == headers
    assert records[1].value is None


def test_decode_accepts_any_buffer_and_position():
    one = encode([b"first"], base_offset=3)
    two = encode([b"second", b"third"], keys=[b"k", None], base_offset=4, compression=Compression.GZIP)
    blob = b"\x00" * 5 + one + two
    assert decode(blob, 5 + len(one))[1] == Record(5, decode(two)[1].timestamp_ms, None, b"third")
    for wrapper in (bytearray, memoryview, lambda b: np.frombuffer(b, np.uint8)):
        assert decode(wrapper(blob), 5)[0].value == b"first"
        assert decode_columns(wrapper(blob), 5 + len(one)).values == [b"second", b"third"]


@contextlib.contextmanager
def forced_path(path: str):
    """Force encode and decode onto one implementation: "python" (record by record), "runs"
    (2-D rows) or "joined" (b"".join) for encode, "python" or "vector" for decode."""
    owners = {
        "_SMALL_BATCH": _record_encode,
        "_SMALL_JOINED": _record_encode,
        "_SMALL_DECODE": _record_decode,
        "_RUNS_PER_RECORD": _record_encode,
    }
    names = tuple(owners)
    saved = {name: getattr(owners[name], name) for name in names}
    settings = {
        "python": (10**9, 10**9, 10**9, saved["_RUNS_PER_RECORD"]),
        "runs": (0, 0, 0, 10**9),
        "joined": (0, 0, 0, -(10**9)),
        "vector": (0, 0, 0, saved["_RUNS_PER_RECORD"]),
    }[path]
    for name, value in zip(names, settings, strict=True):
        setattr(owners[name], name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(owners[name], name, value)


ENCODE_PATH_CASES = [
    ([bytes([i % 7]) * 100 for i in range(500)], None, TS),
    ([bytes(40)] * 300, [bytes([i % 3]) * 8 for i in range(300)], list(range(300))),
    ([None] * 100 + [b"xy"] * 100, [None] * 200, TS),
    ([b""] * 200, [b"k"] * 200, [TS - i for i in range(200)]),
    (sample_values(150, 4, tombstones=0.2), None, [TS + (-1) ** i * i * 10**9 for i in range(150)]),
    ([b"a"], None, TS),
    ([b"a", None], [None, b"k"], [0, -(2**63)]),
]


@pytest.mark.parametrize("case", range(len(ENCODE_PATH_CASES)))
def test_encode_paths_write_identical_bytes(case):
    values, keys, timestamps = ENCODE_PATH_CASES[case]
    outputs = []
    for path in ("python", "runs", "joined"):
        with forced_path(path):
            outputs.append(encode(values, keys=keys, timestamps_ms=timestamps, partition_leader_epoch=0))
    assert outputs[0] == outputs[1] == outputs[2]
    stamps = [timestamps] * len(values) if isinstance(timestamps, int) else timestamps
    assert outputs[0] == kafka_python_build(values, keys, None, stamps)
    for path in ("python", "vector"):
        with forced_path(path):
            assert decode(outputs[0]) == expected_records(values, keys, None, stamps)


def test_decode_runs_of_changing_layout():
    # Runs of equal-sized records broken by odd ones, tombstones in runs, keys changing length:
    # exercises the run probes of the record walk and the struct-based value cutting.
    values = [b"a" * 10] * 50 + [b"b" * 20] * 3 + [None] * 40 + [b"c" * 10] * 100 + [b""] * 17 + [b"d"]
    keys = [b"k" * (i // 70) for i in range(len(values))]
    data = encode(values, keys=keys, timestamps_ms=TS)
    assert decode(data) == expected_records(values, keys, None, [TS] * len(values))


# --- interop with kafka-python 3.0.12 ----------------------------------------------------------


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: c.name.lower())
@pytest.mark.parametrize("variant", ["uniform", "everything"])
def test_kafka_python_reads_our_batches(kafka_snappy, codec, variant):
    values, keys, headers, timestamps = make_records(200, variant, seed=11)
    data = encode(
        values,
        keys=keys,
        headers=headers,
        timestamps_ms=timestamps,
        base_offset=1000,
        compression=codec,
        producer_id=9,
        producer_epoch=1,
        base_sequence=50,
        is_transactional=True,
        partition_leader_epoch=4,
    )
    ((kbatch, records),) = kafka_python_read(data)
    assert kbatch.compression_type == codec
    assert (kbatch.base_offset, kbatch.leader_epoch, kbatch.producer_id) == (1000, 4, 9)
    assert (kbatch.producer_epoch, kbatch.base_sequence, kbatch.is_transactional) == (1, 50, True)
    assert kbatch.last_offset_delta == 199 and kbatch.max_timestamp == max(timestamps)
    assert records == expected_records(values, keys, headers, timestamps, base_offset=1000)


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: c.name.lower())
@pytest.mark.parametrize("variant", ["uniform", "everything"])
def test_we_read_kafka_python_batches(kafka_snappy, codec, variant):
    values, keys, headers, timestamps = make_records(200, variant, seed=12)
    # kafka-python sends uncompressed when a codec does not shrink the data: make it compressible.
    values = [None if v is None else (b"compressible " * 20)[: len(v)] for v in values]
    data = kafka_python_build(values, keys, headers, timestamps, codec, producer=(5, 0, 0))
    header = validate(data)
    assert header.compression == codec
    assert decode(data) == expected_records(values, keys, headers, timestamps)
    assert decode_columns(data).values == values


def test_memory_records_reads_many_of_our_batches(kafka_snappy):
    blob = b"".join(
        encode([b"v%d" % i] * 3, base_offset=3 * i, compression=codec, timestamps_ms=i)
        for i, codec in enumerate(CODECS)
    )
    read = kafka_python_read(blob)
    assert [r.offset for _, records in read for r in records] == list(range(15))
    assert [p for p, _ in iter_batches(blob)] == [0, *np.cumsum([len(b) for b in _split(blob)])[:-1].tolist()]


def _split(blob: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos < len(blob):
        size = unpack_header(blob, pos).size
        out.append(blob[pos : pos + size])
        pos += size
    return out


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("n", [1, 70, 700])
def test_uncompressed_bytes_equal_kafka_python_builder(variant, n):
    values, keys, headers, timestamps = make_records(n, variant, seed=n)
    ours = encode(values, keys=keys, headers=headers, timestamps_ms=timestamps, partition_leader_epoch=0)
    assert ours == kafka_python_build(values, keys, headers, timestamps)


def test_uncompressed_bytes_equal_kafka_python_with_producer_state():
    values = [b"x" * 30] * 10
    ours = encode(
        values,
        timestamps_ms=[TS] * 10,
        producer_id=77,
        producer_epoch=2,
        base_sequence=1000,
        is_transactional=True,
        partition_leader_epoch=0,
    )
    theirs = kafka_python_build(values, None, None, [TS] * 10, producer=(77, 2, 1000), transactional=True)
    assert ours == theirs


# --- damage -------------------------------------------------------------------------------------


def small_batch() -> bytes:
    return encode(
        [b"hello", None, b"world"],
        keys=[b"k", b"", None],
        headers=[[("h", b"v")], [], []],
        timestamps_ms=[1, 2, 3],
    )


def test_every_flipped_bit_is_detected():
    data = small_batch()
    uncovered = set(range(0, 8)) | set(range(12, 16))  # base_offset and leader epoch: outside the CRC
    for pos in range(len(data)):
        for bit in range(8):
            damaged = bytearray(data)
            damaged[pos] ^= 1 << bit
            if pos in uncovered:
                validate(damaged)  # by design: rewritten in place without a new CRC
                continue
            with pytest.raises(CorruptBatchError):
                validate(damaged, path="seg.log")
            with pytest.raises(CorruptBatchError):
                decode(bytes(damaged))


def test_errors_name_path_and_position():
    damaged = bytearray(b"\x00" * 10 + small_batch())
    damaged[-1] ^= 1
    with pytest.raises(CorruptBatchError, match="CRC") as info:
        validate(damaged, 10, path="/d/00000000000000000000.log")
    assert info.value.path == "/d/00000000000000000000.log" and info.value.position == 10


def test_truncated_batches_are_detected():
    data = small_batch()
    for size in range(len(data)):
        with pytest.raises(CorruptBatchError):
            validate(data[:size])
        with pytest.raises(CorruptBatchError):
            decode(data[:size], verify_crc=False)
        if size < HEADER_SIZE:
            with pytest.raises(CorruptBatchError):
                unpack_header(data[:size])


def test_unpack_header_checks_magic_and_length():
    data = bytearray(small_batch())
    data[16] = 1
    with pytest.raises(CorruptBatchError, match="magic"):
        unpack_header(data)
    data = bytearray(small_batch())
    struct.pack_into(">i", data, 8, 48)
    with pytest.raises(CorruptBatchError, match="batch_length"):
        unpack_header(data)


def test_set_base_offset_keeps_the_crc_valid():
    data = bytearray(b"pad" + small_batch())
    set_base_offset(data, 2**40, position=3)
    header = validate(data, 3)
    assert header.base_offset == 2**40
    assert [r.offset for r in decode(data, 3)] == [2**40, 2**40 + 1, 2**40 + 2]
    view = memoryview(data)
    set_base_offset(view, 5, 3)
    assert validate(bytes(data), 3).base_offset == 5
    with pytest.raises(TypeError):
        set_base_offset(small_batch(), 1)


def test_iter_batches_walks_and_stops_at_torn_tail():
    batches = [encode([b"v"] * (i + 1), base_offset=10 * i, compression=i % 5) for i in range(4)]
    blob = b"".join(batches)
    positions = [0, *np.cumsum([len(b) for b in batches]).tolist()]
    assert [(p, h.base_offset) for p, h in iter_batches(blob)] == list(
        zip(positions[:-1], [0, 10, 20, 30], strict=True)
    )
    # every cut inside the last batch is a torn tail: the complete batches are yielded, then stop
    for cut in range(positions[3], len(blob)):
        assert [p for p, _ in iter_batches(blob[:cut])] == positions[:3]
    assert list(iter_batches(blob, positions[2])) == list(iter_batches(blob))[2:]
    assert list(iter_batches(b"")) == []


def test_iter_batches_raises_on_damage():
    good = encode([b"a"]) + encode([b"b"])
    first = unpack_header(good).size
    for pos, value in [(first + 30, None), (first + 16, 1), (first + 8, 12)]:
        damaged = bytearray(good)
        if pos == first + 8:
            struct.pack_into(">i", damaged, pos, value)  # batch_length below 49
        elif value is None:
            damaged[pos] ^= 0x40  # a CRC-covered byte
        else:
            damaged[pos] = value  # magic
        walker = iter_batches(damaged, path="p")
        assert next(walker)[0] == 0
        with pytest.raises(CorruptBatchError) as info:
            next(walker)
        assert info.value.position == first


def test_empty_and_control_batches():
    empty = reseal(HEADER.pack(9, 49, -1, 2, 0, 0, 0, -1, -1, 5, 1, 3, 0))
    assert validate(empty).records_count == 0
    assert decode(empty) == []
    columns = decode_columns(empty)
    assert len(columns.offsets) == 0 and columns.values == []
    assert [p for p, _ in iter_batches(empty + empty)] == [0, 61]
    marker = bytearray(
        encode([b"\x00\x00\x00\x00\x00\x05"], keys=[b"\x00\x00\x00\x01"], is_transactional=True)
    )
    struct.pack_into(">h", marker, 21, 0x10 | 0x20)
    marker = reseal(marker)
    assert validate(marker).is_control
    assert decode(marker)[0].key == b"\x00\x00\x00\x01"


def framing_damage_cases():
    """(name, batch) pairs with a valid CRC but records that do not add up."""
    good = bytearray(small_batch())
    cases = []
    count_up = bytearray(good)
    struct.pack_into(">i", count_up, 57, 4)
    cases.append(("count too high", count_up))
    count_down = bytearray(good)
    struct.pack_into(">i", count_down, 57, 2)
    cases.append(("count too low", count_down))
    count_negative = bytearray(good)
    struct.pack_into(">i", count_negative, 57, -1)
    cases.append(("count negative", count_negative))
    longer = bytearray(good)
    longer[61] += 2  # first record's length varint (zigzag: +1)
    cases.append(("record length", longer))
    key_len = bytearray(good)
    key_len[61 + 1 + 1 + 1 + 1] = 0x04  # first record's key length 1 -> 2
    cases.append(("key length", key_len))
    negative_key = bytearray(good)
    negative_key[61 + 4] = 0x03  # key length -2
    cases.append(("key length -2", negative_key))
    codec = bytearray(good)
    codec[22] = 5
    cases.append(("codec 5", codec))
    garbage_body = bytearray(good)
    garbage_body[22] = 4  # says zstd, holds raw records
    cases.append(("not a zstd stream", garbage_body))
    trailing = bytearray(good) + b"\x00"
    struct.pack_into(">i", trailing, 8, len(trailing) - 12)
    cases.append(("trailing byte", trailing))
    # Records too short to hold their fields, with padded 5-byte lengths: three in a row make
    # the record walk probe for a run of them.
    tiny = bytes([0x84, 0x80, 0x80, 0x80, 0x00, 0xAA, 0xBB]) * 70
    cases.append(
        ("tiny records", HEADER.pack(0, 49 + len(tiny), -1, 2, 0, 0, 69, 0, 0, -1, -1, -1, 70) + tiny)
    )
    return [(name, reseal(data)) for name, data in cases]


@pytest.mark.parametrize("name,data", framing_damage_cases(), ids=[n for n, _ in framing_damage_cases()])
def test_record_framing_damage_is_detected(name, data):
    validate(data)  # the CRC is fine: only decoding the records finds the damage
    for path in ("python", "vector"):
        with forced_path(path):
            with pytest.raises(CorruptBatchError) as info:
                decode(data, path="f.log")
            assert info.value.path == "f.log" and info.value.position == 0
            with pytest.raises(CorruptBatchError):
                decode_columns(data)


def test_reader_accepts_non_canonical_varints_but_not_overlong_ones():
    # Kafka writes minimal varints but its reader accepts padded ones (up to 5 bytes).
    record = b"\x00" + b"\x00" + b"\x80\x00" + b"\x01" + b"\x06abc" + b"\x00"  # offset_delta 0 in 2 bytes
    body = bytes([len(record) * 2]) + record
    header = HEADER.pack(0, 49 + len(body), -1, 2, 0, 0, 0, 7, 7, -1, -1, -1, 1)
    assert decode(reseal(header + body)) == [Record(0, 7, None, b"abc")]
    record = b"\x00" + b"\x00" + b"\x80\x80\x80\x80\x80\x00" + b"\x01" + b"\x06abc" + b"\x00"
    body = bytes([len(record) * 2]) + record
    header = HEADER.pack(0, 49 + len(body), -1, 2, 0, 0, 0, 7, 7, -1, -1, -1, 1)
    with pytest.raises(CorruptBatchError, match="longer than 5"):
        decode(reseal(header + body))


def test_verify_crc_false_skips_only_the_crc():
    data = bytearray(small_batch())
    data[-2] ^= 0xFF  # inside a header value: framing still adds up
    with pytest.raises(CorruptBatchError):
        decode(bytes(data))
    assert len(decode(bytes(data), verify_crc=False)) == 3


# --- arguments ------------------------------------------------------------------------------------


def test_encode_argument_errors():
    with pytest.raises(ValueError):
        encode([])
    with pytest.raises(TypeError):
        encode(["text"])
    with pytest.raises(TypeError):
        encode([b"ok", 5])
    with pytest.raises(TypeError):
        encode(b"bytes, not a list of bytes")
    with pytest.raises(TypeError):
        encode([b"a"], keys=["k"])
    with pytest.raises(ValueError):
        encode([b"a", b"b"], keys=[b"k"])
    with pytest.raises(ValueError):
        encode([b"a"], headers=[[], []])
    with pytest.raises(TypeError):
        encode([b"a"], headers=[[(b"bytes key", b"v")]])
    with pytest.raises(TypeError):
        encode([b"a"], headers=[[("k", "str value")]])
    with pytest.raises(TypeError):
        encode([b"a"], headers=[["not a pair"]])
    with pytest.raises(TypeError):
        encode([b"a"], timestamps_ms=1.5)
    with pytest.raises(TypeError):
        encode([b"a", b"b"], timestamps_ms=[1.5, 2.5])
    with pytest.raises(ValueError):
        encode([b"a", b"b"], timestamps_ms=[1])
    with pytest.raises(ValueError):
        encode([b"a"], timestamps_ms=2**63)
    with pytest.raises(ValueError):
        encode([b"a"], producer_epoch=2**15)
    with pytest.raises(ValueError):
        encode([b"a"], compression=7)
    with pytest.raises(ValueError):
        encode([b"a"], compression_level=3)
    assert (
        unpack_header(encode([b"a"], compression="zstd", compression_level=19)).compression
        is Compression.ZSTD
    )


# --- property and fuzz tests ----------------------------------------------------------------------

maybe_bytes = st.one_of(st.none(), st.binary(max_size=64))
header_lists = st.lists(st.tuples(st.text(max_size=4), maybe_bytes), max_size=3)
records_strategy = st.lists(
    st.tuples(maybe_bytes, maybe_bytes, header_lists, st.integers(-(2**63), 2**63 - 1)),
    min_size=1,
    max_size=40,
)


@given(records_strategy, st.sampled_from(CODECS), st.booleans(), st.integers(0, 2**62))
def test_property_encode_then_decode_is_identity(records, codec, with_keys, base_offset):
    keys = [k for k, _, _, _ in records] if with_keys else None
    values = [v for _, v, _, _ in records]
    headers = [h for _, _, h, _ in records]
    timestamps = [t for _, _, _, t in records]
    data = encode(
        values,
        keys=keys,
        headers=headers,
        timestamps_ms=timestamps,
        base_offset=base_offset,
        compression=codec,
    )
    assert decode(data) == expected_records(values, keys, headers, timestamps, base_offset)


@given(st.lists(st.integers(0, 3), min_size=1, max_size=300), st.integers(0, 2))
def test_property_runs_of_sizes(size_classes, key_kind):
    # Long runs of equal sizes with changes in between: the run paths of encode and decode.
    values = [bytes(c * 7) if c else None for c in size_classes for _ in range(5)]
    keys = None if key_kind == 0 else [b"k" * (i % 3 if key_kind == 2 else 1) for i in range(len(values))]
    data = encode(values, keys=keys, timestamps_ms=TS)
    assert decode(data) == expected_records(values, keys, None, [TS] * len(values))


def _parses_or_corrupt(data, position=0):
    for call in (validate, unpack_header):
        try:
            call(data, position)
        except CorruptBatchError:
            pass
    for verify in (True, False):
        try:
            decode(data, position, verify_crc=verify)
        except CorruptBatchError:
            pass
    try:
        list(iter_batches(data, position))
    except CorruptBatchError:
        pass


@given(st.binary(max_size=300))
def test_fuzz_random_bytes(data):
    _parses_or_corrupt(data)


@given(
    st.binary(max_size=200),
    st.integers(0, 7),
    st.integers(-2, 60),
)
def test_fuzz_random_records_behind_a_valid_header(body, codec, count):
    header = HEADER.pack(0, 49 + len(body), -1, 2, 0, codec, max(count - 1, 0), 0, 0, -1, -1, -1, count)
    _parses_or_corrupt(reseal(header + body))


@given(records_strategy, st.sampled_from(CODECS), st.data())
def test_fuzz_damaged_records_with_valid_crc(records, codec, data):
    """Edit the (uncompressed) records, re-compress, re-seal: only record parsing can object."""
    values = [v for _, v, _, _ in records]
    headers = [h for _, _, h, _ in records]
    plain = bytearray(encode(values, headers=headers, timestamps_ms=[t for *_, t in records]))
    edits = data.draw(
        st.lists(
            st.tuples(st.integers(HEADER_SIZE, len(plain) - 1), st.integers(0, 255)), min_size=1, max_size=4
        )
    )
    for pos, value in edits:
        plain[pos] = value
    if data.draw(st.booleans()):
        struct.pack_into(">i", plain, 57, data.draw(st.integers(-5, 2**31 - 1)))
    body = bytes(plain[HEADER_SIZE:])
    if codec is not Compression.NONE:
        body = batch.compress(codec, body)
    header = bytearray(plain[:HEADER_SIZE])
    struct.pack_into(">i", header, 8, 49 + len(body))
    struct.pack_into(">h", header, 21, int(codec))
    _parses_or_corrupt(reseal(bytes(header) + body))


@given(st.lists(st.binary(min_size=1, max_size=20), min_size=1, max_size=5), st.data())
def test_fuzz_damaged_batch_streams(values, data):
    blob = bytearray(b"".join(encode(values, compression=c, timestamps_ms=1) for c in (0, 1, 4)))
    for pos, value in data.draw(
        st.lists(st.tuples(st.integers(0, len(blob) - 1), st.integers(0, 255)), max_size=3)
    ):
        blob[pos] = value
    cut = data.draw(st.integers(0, len(blob)))
    _parses_or_corrupt(bytes(blob[:cut]))


def _outcome(data: bytes):
    try:
        columns = decode_columns(data)
    except CorruptBatchError:
        return "corrupt"
    return (
        columns.offsets.tolist(),
        columns.timestamps_ms.tolist(),
        columns.keys,
        columns.values,
        columns.headers,
    )


@given(records_strategy, st.one_of(st.none(), st.tuples(st.integers(0, 300), st.integers(3, 400))), st.data())
def test_decode_paths_agree_on_damaged_records(records, uniform, data):
    """The vectorised decoder and the record-by-record one accept and reject the same bytes."""
    if uniform is None:  # mixed sizes
        values = [v for _, v, _, _ in records] * 3
        keys = [k for k, _, _, _ in records] * 3
        timestamps = [t for *_, t in records] * 3
    else:  # runs of one size (the probing record walk, struct-cut values)
        size, n = uniform
        values = [bytes([i % 256]) * size for i in range(n)]
        keys = None
        timestamps = TS
    plain = bytearray(encode(values, keys=keys, timestamps_ms=timestamps))
    edits = data.draw(
        st.lists(st.tuples(st.integers(HEADER_SIZE, len(plain) - 1), st.integers(0, 255)), max_size=3)
    )
    for pos, value in edits:
        plain[pos] = value
    damaged = reseal(plain)
    with forced_path("python"):
        expected = _outcome(damaged)
    with forced_path("vector"):
        assert _outcome(damaged) == expected


@pytest.mark.parametrize("n", [25, 63, 64, 65, 1000, 8191, 8192, 8193])
@pytest.mark.parametrize("value_bytes", [0, 1, 100, 127, 128, 16383, 16384])
def test_uniform_fast_path_gives_the_reference_bytes(n, value_bytes):
    """Equal-length values, no keys, one timestamp take a cached-separator path in
    _record_encode; its bytes must equal the record-by-record reference path."""
    if n * value_bytes > 20_000_000:
        pytest.skip("too large for the default run")
    values = [bytes([i % 251]) * value_bytes for i in range(n)]
    fast = batch.encode(values, timestamps_ms=1_700_000_000_000, base_offset=5)
    with forced_path("python"):
        reference = batch.encode(values, timestamps_ms=1_700_000_000_000, base_offset=5)
    assert fast == reference
    assert [r.value for r in batch.decode(fast)] == values


@pytest.mark.parametrize("codec", ["none", "gzip", "zstd"])
@pytest.mark.parametrize("count", [1, 30, 500])
def test_decode_offsets_and_timestamps_agrees_with_decode_columns(codec, count):
    rng = random.Random(count)
    values = [rng.randbytes(rng.randint(0, 200)) for _ in range(count)]
    timestamps = [1_000_000 + rng.randint(0, 10**6) for _ in range(count)]
    headers = [[("k", b"v")] if i % 7 == 0 else [] for i in range(count)]
    for log_append_time in (False, True):
        encoded = batch.encode(values, timestamps_ms=timestamps, headers=headers, compression=codec,
                               base_offset=77, log_append_time=log_append_time)
        offsets, times = batch.decode_offsets_and_timestamps(encoded)
        columns = batch.decode_columns(encoded)
        assert offsets.tolist() == columns.offsets.tolist() == list(range(77, 77 + count))
        assert times.tolist() == columns.timestamps_ms.tolist()


def test_decode_offsets_and_timestamps_refuses_damage():
    encoded = bytearray(batch.encode([b"x" * 50] * 200, timestamps_ms=5))
    bad_crc = bytearray(encoded)
    bad_crc[-3] ^= 0xFF
    with pytest.raises(CorruptBatchError):
        batch.decode_offsets_and_timestamps(bytes(bad_crc))
    # framing damage under a valid CRC (a producer bug): a record's value length grows by one
    framed = bytearray(encoded)
    at = batch.HEADER_SIZE + 5  # inside the first record's fields
    framed[at] = (framed[at] + 2) & 0x7F
    struct.pack_into(">I", framed, batch.CRC_OFFSET, crc32c.crc32c(bytes(framed[batch.CRC_START:])))
    with pytest.raises(CorruptBatchError):
        batch.decode_columns(bytes(framed))
    with pytest.raises(CorruptBatchError):
        batch.decode_offsets_and_timestamps(bytes(framed))
