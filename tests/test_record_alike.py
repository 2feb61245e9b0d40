"""The template decode of alike sections (logstore._record_alike) against the general path."""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logstore import Log, LogConfig, batch
from logstore._record_alike import decode_records_alike
from logstore._record_decode import decode_records, decode_records_many

HEADER = batch.HEADER_SIZE


def joined(batches: list[bytes]) -> tuple[bytes, list[tuple[int, int, int]]]:
    """The batches back to back, and their record sections as (start, end, count)."""
    data = b"".join(batches)
    regions, at = [], 0
    for encoded in batches:
        header = batch.unpack_header(encoded)
        regions.append((at + HEADER, at + len(encoded), header.records_count))
        at += len(encoded)
    return data, regions


def reference(data: bytes, regions) -> tuple:
    """Section by section with the general decoder, joined."""
    parts = [decode_records(data, *region) for region in regions]
    return (
        np.concatenate([p[0] for p in parts]),
        np.concatenate([p[1] for p in parts]),
        *([x for p in parts for x in p[column]] for column in (2, 3, 4)),
    )


def assert_same(got, want) -> None:
    assert got is not None
    for column in (0, 1):
        np.testing.assert_array_equal(got[column], want[column])
        assert got[column].dtype == want[column].dtype
    for column in (2, 3, 4):
        assert got[column] == want[column]


def alike_batches(n_batches=5, n_records=200, value_bytes=40, key_bytes=None, timestamps=None, base=1_700_000_000_000):
    rng = random.Random(n_batches * 1000 + n_records)
    out = []
    for b in range(n_batches):
        values = [rng.randbytes(value_bytes) for _ in range(n_records)]
        keys = None if key_bytes is None else [rng.randbytes(key_bytes) for _ in range(n_records)]
        ts = timestamps(b) if timestamps else base
        out.append(batch.encode(values, keys=keys, timestamps_ms=ts, base_offset=b * n_records))
    return out


@pytest.mark.parametrize(
    "shape",
    [
        dict(),
        dict(key_bytes=8),
        dict(key_bytes=0, value_bytes=0),
        dict(n_records=1, n_batches=30),
        dict(value_bytes=300, n_records=70),  # two-byte record lengths
        # one-byte timestamp deltas that differ from batch to batch
        dict(timestamps=lambda b: [1_000 + b * 7 + i % 50 for i in range(200)]),
        # multi-byte deltas, the same widths in every batch
        dict(timestamps=lambda b: [5_000 + b + (i * 997 if i % 3 else i) for i in range(200)]),
    ],
)
def test_alike_sections_decode_as_the_general_path(shape):
    data, regions = joined(alike_batches(**shape))
    assert_same(decode_records_alike(data, regions), reference(data, regions))


def test_tombstones_all_null_values():
    batches = [batch.encode([None] * 100, keys=[b"k%03d" % i for i in range(100)], timestamps_ms=5) for _ in range(3)]
    data, regions = joined(batches)
    got = decode_records_alike(data, regions)
    assert_same(got, reference(data, regions))
    assert got[3] == [None] * 300


def test_timestamps_read_per_section():
    # deltas differ from section to section (a template's deltas would be wrong)
    batches = alike_batches(n_batches=3, n_records=100, timestamps=lambda b: [10 * b + i * (b + 1) % 30 for i in range(100)])
    data, regions = joined(batches)
    got = decode_records_alike(data, regions)
    want = [i * (b + 1) % 30 for b in range(3) for i in range(100)]
    assert got[1].tolist() == want


def _declined(batches):
    data, regions = joined(batches)
    assert decode_records_alike(data, regions) is None
    for region in regions:
        decode_records(data, *region)  # (valid: the general path decodes them batch by batch)


def test_declines_unlike_sections():
    rng = random.Random(1)
    one = [rng.randbytes(40) for _ in range(100)]
    # same sizes overall, but one value is longer and another shorter: the framing differs
    other = list(one)
    other[10], other[20] = rng.randbytes(41), rng.randbytes(39)
    _declined([batch.encode(one, timestamps_ms=1), batch.encode(other, timestamps_ms=1)])


def test_declines_timestamp_widths_that_differ():
    a = batch.encode([b"v" * 20] * 100, timestamps_ms=[1000 + (200 if i == 5 else 0) for i in range(100)])
    b = batch.encode([b"v" * 20] * 100, timestamps_ms=[1000 + (200 if i == 6 else 0) for i in range(100)])
    _declined([a, b])


def test_declines_headers_mixed_nulls_and_uneven_spacing():
    headers = [[("h", b"x")]] * 50
    _declined([batch.encode([b"v" * 10] * 50, headers=headers, timestamps_ms=1)] * 2)
    values = [b"v" * 10] * 49 + [None]
    _declined([batch.encode(values, timestamps_ms=1)] * 2)
    keys = [b"k"] * 49 + [None]
    _declined([batch.encode([b"v"] * 50, keys=keys, timestamps_ms=1)] * 2)
    encoded = batch.encode([b"v" * 10] * 50, timestamps_ms=1)
    data, regions = joined([encoded, encoded])
    start, end, count = regions[1]
    padded = data[: regions[1][0] - HEADER] + b"\0" * 3 + data[regions[1][0] - HEADER :]
    assert decode_records_alike(padded, [regions[0], (start + 3, end + 3, count), (start + 3, end + 3, count)]) is None
    assert decode_records_alike(data, regions[:1]) is None


def test_damaged_first_section_is_left_to_the_general_path():
    encoded = bytearray(batch.encode([b"v" * 10] * 100, timestamps_ms=1))
    encoded[HEADER] = 0x7E  # the first record's length, now wrong
    data, regions = joined([bytes(encoded), bytes(encoded)])
    assert decode_records_alike(data, regions) is None


def test_framing_differs_in_a_later_section():
    encoded = batch.encode([b"v" * 10] * 100, timestamps_ms=1)
    data, regions = joined([encoded] * 4)
    broken = bytearray(data)
    broken[regions[2][0] + 1] ^= 0x01  # the attributes byte of a record of the third section
    assert decode_records_alike(bytes(broken), regions) is None


@settings(max_examples=60, deadline=None)
@given(
    n_batches=st.integers(2, 6),
    n_records=st.integers(1, 120),
    value_bytes=st.integers(0, 200),
    key_bytes=st.one_of(st.none(), st.integers(0, 20)),
    spread_ms=st.sampled_from([0, 50, 5_000, 10**7]),
    seed=st.integers(0, 2**16),
)
def test_property_alike_or_declined_never_wrong(n_batches, n_records, value_bytes, key_bytes, spread_ms, seed):
    rng = random.Random(seed)
    batches = []
    for _ in range(n_batches):
        values = [rng.randbytes(value_bytes) for _ in range(n_records)]
        keys = None if key_bytes is None else [rng.randbytes(key_bytes) for _ in range(n_records)]
        timestamps = [10**12 + rng.randrange(spread_ms + 1) for _ in range(n_records)]
        batches.append(batch.encode(values, keys=keys, timestamps_ms=timestamps))
    data, regions = joined(batches)
    got = decode_records_alike(data, regions)
    want = reference(data, regions)
    if spread_ms == 0:
        assert got is not None  # equal values, keys and timestamps: always alike
    if got is not None:
        assert_same(got, want)


def test_log_reads_alike_batches_with_varying_timestamps(tmp_path):
    config = LogConfig(durability="none")
    rng = random.Random(3)
    expected = []
    with Log(tmp_path / "log", config) as log:
        for b in range(40):
            values = [rng.randbytes(100) for _ in range(500)]
            timestamps = [1_000_000 + b * 100 + i % 60 for i in range(500)]
            log.append(values, timestamps_ms=timestamps)
            expected += list(zip(timestamps, values, strict=True))
        columns = log.read_columns(0, max_bytes=1 << 30)
        assert columns.values == [v for _t, v in expected]
        assert columns.timestamps_ms.tolist() == [t for t, _v in expected]
        assert columns.offsets.tolist() == list(range(len(expected)))
        middle = log.read_columns(1234, max_bytes=200_000, max_offset=5000)
        assert middle.offsets[0] == 1234 and middle.offsets[-1] < 5000
        assert middle.values == [v for _t, v in expected[1234 : 1234 + len(middle.values)]]


def test_many_decodes_sections_of_equal_size_laid_out_differently():
    # Same record count and bytes, different value sizes: the layout guess of decode_records_many
    # is wrong; it must walk each section instead of failing the whole range.
    rng = random.Random(5)
    one = [rng.randbytes(40) for _ in range(100)]
    other = list(one)
    other[10], other[20] = rng.randbytes(41), rng.randbytes(39)
    for pair in ([one, other], [other, one], [one, other, one, other]):
        data, regions = joined([batch.encode(values, timestamps_ms=1) for values in pair])
        assert_same(decode_records_many(data, regions), reference(data, regions))


@settings(max_examples=40, deadline=None)
@given(
    plan=st.lists(
        st.tuples(
            st.integers(1, 40),  # records in the batch
            st.sampled_from(["alike", "alike", "random", "keys", "headers", "tombstones", "zstd", "append_time"]),
            st.integers(0, 3),  # timestamp spread: 0 ms, 50 ms, 20 s, 10^7 s
        ),
        min_size=1,
        max_size=25,
    ),
    probes=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.sampled_from([1, 500, 5_000, 10**6]),
                              st.integers(0, 60)), min_size=1, max_size=6),
    seed=st.integers(0, 2**16),
)
def test_property_read_columns_of_mixed_batches(tmp_path_factory, plan, probes, seed):
    """read_columns over logs mixing alike runs with every other shape equals what was appended."""
    rng = random.Random(seed)
    expected = []  # (offset, timestamp, key, value, headers)
    with Log(tmp_path_factory.mktemp("mixed") / "log", LogConfig(durability="none", segment_bytes=16 * 1024)) as log:
        for n, shape, spread in plan:
            if shape == "alike":
                n = 20  # (runs of equal batches: what the template decode is for)
            values = [rng.randbytes(rng.randint(0, 300) if shape == "random" else 40) for _ in range(n)]
            keys = [rng.randbytes(6) for _ in range(n)] if shape in ("keys", "tombstones") else None
            if shape == "tombstones":
                values = [None] * n
            headers = [[("h", rng.randbytes(3))] for _ in range(n)] if shape == "headers" else None
            spread_ms = [0, 50, 20_000, 10**10][spread]
            timestamps = [10**12 + rng.randint(0, spread_ms) for _ in range(n)]
            encoded = batch.encode(values, keys=keys, headers=headers, timestamps_ms=timestamps,
                                   compression="zstd" if shape == "zstd" else "none",
                                   log_append_time=shape == "append_time")
            base_offset = log.append_batches(encoded).base_offset
            header = batch.unpack_header(encoded)
            for i in range(n):
                ts = header.max_timestamp if shape == "append_time" else timestamps[i]
                expected.append((base_offset + i, ts, None if keys is None else keys[i], values[i],
                                 tuple(headers[i]) if headers else ()))
        end = log.log_end_offset
        for where, max_bytes, extra in probes:
            offset = int(where * end)
            stop = offset + extra if extra else None
            got = log.read_columns(offset, max_bytes=max_bytes, max_offset=stop)
            rows = list(zip(got.offsets.tolist(), got.timestamps_ms.tolist(), got.keys, got.values, got.headers,
                            strict=True))
            assert rows, (offset, max_bytes)
            assert rows == expected[offset : offset + len(rows)]
            assert stop is None or rows[-1][0] < stop


def test_mixed_log_uses_the_template_where_it_can(tmp_path, monkeypatch):
    """Alike runs between other shapes: decoded by template (spied), results as appended."""
    from logstore import _record_alike

    used = []
    real = _record_alike.decode_records_alike

    def spy(data, regions):
        result = real(data, regions)
        used.append(result is not None)
        return result

    monkeypatch.setattr(_record_alike, "decode_records_alike", spy)
    rng = random.Random(8)
    expected = []
    with Log(tmp_path / "log", LogConfig(durability="none")) as log:
        for k in range(30):
            if k % 10 == 9:  # now and then a batch of another shape
                values = [rng.randbytes(rng.randint(1, 99)) for _ in range(7)]
            else:
                values = [rng.randbytes(64) for _ in range(50)]
            log.append(values, timestamps_ms=[5_000 + k * 10 + i % 3 for i in range(len(values))])
            expected += values
        got = log.read_columns(0, max_bytes=10**7)
    assert got.values == expected
    assert any(used)


def test_runs_decode_alike_stretches_and_the_rest_generally():
    from logstore._record_alike import decode_records_runs

    rng = random.Random(12)

    def alike(n=30):
        return batch.encode([rng.randbytes(50) for _ in range(n)], timestamps_ms=[7 + i % 5 for i in range(n)])

    def odd():
        return batch.encode([rng.randbytes(rng.randint(0, 80)) for _ in range(rng.randint(1, 20))], timestamps_ms=3)

    layouts = [
        [alike() for _ in range(5)] + [odd()] + [alike() for _ in range(6)] + [odd(), odd()],
        [odd()] + [alike() for _ in range(4)],
        [alike() for _ in range(3)] + [odd()],  # a run too short for a template
        [alike(10) for _ in range(4)] + [alike(20) for _ in range(4)],  # two runs of different shapes
    ]
    for batches in layouts:
        data, regions = joined(batches)
        assert_same(decode_records_runs(data, regions), reference(data, regions))


def test_runs_pass_damage_in_the_general_stretch_through():
    from logstore._record_alike import decode_records_runs
    from logstore._record_decode import RecordError

    good = [batch.encode([b"v" * 30] * 20, timestamps_ms=1) for _ in range(5)]
    bad = bytearray(batch.encode([b"w" * 30] * 7, timestamps_ms=1))
    bad[HEADER] = 0x7E  # its first record's length is wrong (the CRC is not checked here)
    data, regions = joined([*good, bytes(bad)])
    with pytest.raises(RecordError):
        decode_records_runs(data, regions)


def test_a_cached_template_is_reused_only_for_sections_framed_like_it(monkeypatch):
    # Two ranges with the same section size and record count but framed differently (two
    # values swap sizes): the template the first one leaves must not decode the second.
    import logstore._record_alike as alike

    rng = random.Random(11)
    one = [rng.randbytes(40) for _ in range(100)]
    other = list(one)
    other[10], other[20] = rng.randbytes(41), rng.randbytes(39)
    parsed = []
    real = alike._template
    monkeypatch.setattr(alike, "_template", lambda *args: parsed.append(args[1:]) or real(*args))
    monkeypatch.setattr(alike, "_TEMPLATES", {})
    first = joined([batch.encode(one, timestamps_ms=1, base_offset=100 * i) for i in range(4)])
    second = joined([batch.encode(other, timestamps_ms=2, base_offset=100 * i) for i in range(4)])
    assert first[1][0][1] - first[1][0][0] == second[1][0][1] - second[1][0][0]  # same size, same count
    for data, regions in (first, first, second, second, first):
        assert_same(decode_records_alike(data, regions), reference(data, regions))
    assert len(parsed) == 3  # first, then second (first's template does not fit), then first again
