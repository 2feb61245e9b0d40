"""``offset_for_timestamp`` answers from the first record of the batch it lands in when that record
is the answer (``batch.first_record_time``), and decodes the whole batch otherwise: both ways must
give the same answers."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from logstore import Log, LogConfig
from logstore import batch as batch_format
from logstore.errors import CorruptBatchError
from logstore.log_read import EARLIEST, LATEST, MAX_TIMESTAMP

T0 = 1_700_000_000_000

batch_specs = st.tuples(
    st.lists(st.integers(-40, 40), min_size=1, max_size=6),  # per-record timestamp steps
    st.sampled_from(["none", "none", "gzip"]),
    st.booleans(),  # LogAppendTime
)


def _build(directory, specs) -> list[int]:
    """A log of the batches ``specs`` describe; returns every record's timestamp, in order."""
    config = LogConfig(durability="none", segment_bytes=1024, index_interval_bytes=150, preallocate_bytes=0)
    stamps = []
    now = T0
    with Log(directory, config) as log:
        for steps, codec, append_time in specs:
            batch_stamps = []
            for step in steps:
                now += step
                batch_stamps.append(now)
            log.append_batches(batch_format.encode([b"v" * 30] * len(steps), timestamps_ms=batch_stamps,
                                                   compression=codec, log_append_time=append_time))
            stamps += batch_stamps
    return stamps


@given(specs=st.lists(batch_specs, min_size=1, max_size=30), targets=st.lists(st.integers(-50, 800), max_size=15),
       start=st.integers(0, 20))
def test_first_record_answers_match_full_decoding(tmp_path_factory, specs, targets, start):
    directory = tmp_path_factory.mktemp("log")
    _build(directory, specs)
    config = LogConfig(durability="none", segment_bytes=1024, index_interval_bytes=150, preallocate_bytes=0)
    with Log(directory, config) as log:
        if start < log.log_end_offset:
            log.delete_records(start)
        queries = [T0 + t for t in targets] + [MAX_TIMESTAMP, EARLIEST, LATEST]
        fast = [log.offset_for_timestamp(q) for q in queries]
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(batch_format, "first_record_time", lambda *args, **kwargs: None)
            slow = [log.offset_for_timestamp(q) for q in queries]
    assert fast == slow


def test_the_first_record_answers_without_decoding_the_batch(tmp_path, monkeypatch):
    with Log(tmp_path / "p", LogConfig(durability="none")) as log:
        for i in range(10):
            log.append([b"a", b"b", b"c"], timestamps_ms=[T0 + 100 * i + step for step in (0, 10, 20)])

        def no_decoding(*args, **kwargs):
            raise AssertionError("decoded the whole batch")

        monkeypatch.setattr(batch_format, "decode_offsets_and_timestamps", no_decoding)
        assert log.offset_for_timestamp(T0 + 450) == (15, T0 + 500)  # between batches: the next one's first
        assert log.offset_for_timestamp(T0 + 500) == (15, T0 + 500)
        with pytest.raises(AssertionError, match="decoded the whole batch"):
            log.offset_for_timestamp(T0 + 505)  # inside batch 5 (500, 510, 520): decoded


def test_first_record_time_edges():
    plain = batch_format.encode([b"x", b"y"], timestamps_ms=[T0 + 5, T0 + 1], base_offset=40)
    assert batch_format.first_record_time(plain) == (40, T0 + 5)
    appended = batch_format.encode([b"x", b"y"], timestamps_ms=[T0 + 5, T0 + 1], base_offset=40,
                                   log_append_time=True)
    header = batch_format.unpack_header(appended)
    assert batch_format.first_record_time(appended) == (40, header.max_timestamp)
    assert batch_format.first_record_time(batch_format.encode([b"x"], timestamps_ms=T0, compression="gzip")) is None
    damaged = bytearray(plain)
    damaged[-1] ^= 1
    with pytest.raises(CorruptBatchError):
        batch_format.first_record_time(bytes(damaged))
    # a first record cut short (the CRC recomputed over the damage) is left to the full decoder
    short = bytearray(plain[: batch_format.HEADER_SIZE + 1])
    short[8:12] = (len(short) - 12).to_bytes(4, "big")
    short[17:21] = batch_format.crc32c_oneshot(bytes(short[21:])).to_bytes(4, "big")
    assert batch_format.first_record_time(bytes(short)) is None


def test_first_record_time_reads_the_first_records_own_deltas():
    # Real producers start a batch at delta 0, but a compacted batch may start later (its first
    # records cleaned away), and the format allows a base timestamp below the first record's.
    batch = bytearray(batch_format.encode([b"x", b"y"], timestamps_ms=[T0 + 5, T0 + 9], base_offset=40))
    batch[27:35] = (T0 + 3).to_bytes(8, "big")  # base_timestamp
    first = batch_format.HEADER_SIZE  # record 0: length, attributes, ts delta, offset delta (1 byte each)
    assert batch[first + 2 : first + 4] == b"\x00\x00"
    batch[first + 2 : first + 4] = bytes([2 * 2, 2 * 3])  # zigzag: ts delta +2, offset delta +3
    batch[17:21] = batch_format.crc32c_oneshot(bytes(batch[21:])).to_bytes(4, "big")
    offsets, timestamps = batch_format.decode_offsets_and_timestamps(bytes(batch))
    assert (int(offsets[0]), int(timestamps[0])) == (43, T0 + 5)  # the full decoder agrees
    assert batch_format.first_record_time(bytes(batch)) == (43, T0 + 5)
