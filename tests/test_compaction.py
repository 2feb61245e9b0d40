"""Compaction: the pure policy (tables of scenarios), the offset map and key hashes, the record
locator against the batch decoder, and whole passes over real logs -- against a dict model under
Hypothesis, and one property per test (codecs, merges, tombstones, prefix passes, failures).
Time is injected (``now_ms``); nothing sleeps."""

from __future__ import annotations

import dataclasses
import os
import random
import shutil
import tempfile
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logstore import Log, LogConfig
from logstore import batch as batch_format
from logstore._record_layout import Malformed as _Malformed
from logstore._record_layout import locate as _locate
from logstore.batch import Compression
from logstore.cleaner import (
    CHECKPOINT_NAME,
    CleanerCheckpoint,
    CleanerState,
    CleanerStats,
    OffsetMap,
    _memory_plan,
    clean_log,
    hash_key_list,
)
from logstore.compaction import (
    CleanableRange,
    CompactionSettings,
    cleanable_range,
    due_reason,
    plan_groups,
    retained,
    settings_from,
)
from logstore.compression import decompress
from logstore.errors import CorruptBatchError
from logstore.retention import SegmentInfo
from logstore.verify import verify_data_dir

DAY = 86_400_000
NOW = 1_800_000_000_000
BIG_BUDGET = 8 << 20
TINY_BUDGET = 788_500  # the smallest budgets give the offset map room for about 50 keys
TINY_CAPACITY = OffsetMap(_memory_plan(TINY_BUDGET)[2]).capacity


def config(**changes) -> LogConfig:
    base = dict(segment_bytes=2048, index_interval_bytes=200, cleanup_policy="compact", durability="none")
    base.update(changes)
    return LogConfig(**base)


@dataclasses.dataclass(frozen=True)
class CompactConfig(LogConfig):
    """A LogConfig with the compaction fields (until LogConfig has them itself)."""

    min_cleanable_dirty_ratio: float = 0.5
    min_compaction_lag_ms: int = 0
    max_compaction_lag_ms: int | None = None
    delete_retention_ms: int = DAY


def scan(log: Log) -> list:
    """Every record a reader sees, in order (read slice by slice, so stretches of empty batches
    and gaps are crossed)."""
    out = []
    offset = log.log_start_offset
    while offset < log.log_end_offset:
        piece = log.read_slice(offset, max_bytes=1 << 20)
        if not piece.size:
            break
        data = piece.read()
        for position, header in batch_format.iter_batches(data):
            out.extend(r for r in batch_format.decode(data, position) if r.offset >= offset)
            next_offset = header.next_offset
        offset = next_offset
    return out


def batches(log: Log) -> list[batch_format.BatchHeader]:
    result = []
    for segment in log.segments:
        data = segment.read(0, segment.size)
        result.extend(header for _position, header in batch_format.iter_batches(data))
    return result


def fill(log: Log, rng: random.Random, appends: int, keys: int, *, tombstones: float = 0.1, codecs=("none",),
         now_ms: int = NOW) -> dict:
    """Append random keyed batches; returns key -> (offset, value) of the latest record."""
    latest = {}
    for i in range(appends):
        n = rng.randint(1, 6)
        batch_keys = [b"key-%d" % rng.randrange(keys) for _ in range(n)]
        values = [None if rng.random() < tombstones else b"v%d.%d" % (i, j) * rng.randint(1, 4) for j in range(n)]
        info = log.append(values, keys=batch_keys, timestamps_ms=now_ms + i, compression=rng.choice(codecs))
        for j, (key, value) in enumerate(zip(batch_keys, values, strict=True)):
            latest[key] = (info.base_offset + j, value)
    return latest


def clean(log, now_ms=NOW, budget=BIG_BUDGET, checkpoint=None, stats=None, **kw):
    checkpoint = checkpoint if checkpoint is not None else CleanerCheckpoint()
    return clean_log(log, now_ms=now_ms, memory_budget_bytes=budget, checkpoint=checkpoint, stats=stats, **kw)


# --- policy (pure) ------------------------------------------------------------------------------


def seg(base, next_offset, size=100, ts=NOW - DAY):
    return SegmentInfo(base, next_offset, size, ts, ts)


def test_cleanable_range_stops_at_the_active_segment_and_the_high_watermark():
    segments = [seg(0, 10), seg(10, 20), seg(20, 25)]
    r = cleanable_range(segments, first_dirty_offset=None, log_start_offset=0, high_watermark=25, now_ms=NOW)
    assert r == CleanableRange(0, 20, 0, 200) and r.dirty_ratio == 1.0
    r = cleanable_range(segments, first_dirty_offset=10, log_start_offset=0, high_watermark=15, now_ms=NOW)
    assert r == CleanableRange(10, 15, 100, 100)


def test_cleanable_range_resets_a_checkpoint_outside_the_log():
    segments = [seg(5, 10), seg(10, 20), seg(20, 25)]
    for stale in (3, 26):
        r = cleanable_range(segments, first_dirty_offset=stale, log_start_offset=5, high_watermark=25, now_ms=NOW)
        assert r.first_dirty_offset == 5


def test_min_compaction_lag_keeps_young_segments_dirty_but_uncleaned():
    segments = [seg(0, 10), seg(10, 20, ts=NOW - 1000), seg(20, 30), seg(30, 35)]
    r = cleanable_range(segments, first_dirty_offset=0, log_start_offset=0, high_watermark=35, now_ms=NOW,
                        min_compaction_lag_ms=60_000)
    assert r.first_uncleanable_offset == 10
    r = cleanable_range(segments, first_dirty_offset=0, log_start_offset=0, high_watermark=35, now_ms=NOW,
                        min_compaction_lag_ms=500)
    assert r.first_uncleanable_offset == 30


@pytest.mark.parametrize(
    "cleanable, kwargs, expected",
    [
        (CleanableRange(0, 20, 0, 100), {}, "dirty_ratio"),
        (CleanableRange(10, 20, 100, 100), {}, None),  # exactly 0.5: not above the ratio
        (CleanableRange(10, 20, 100, 101), {}, "dirty_ratio"),
        (CleanableRange(10, 20, 900, 100), {"first_dirty_timestamp_ms": NOW - 2 * DAY}, "max_compaction_lag"),
        (CleanableRange(10, 20, 900, 100), {"first_dirty_timestamp_ms": NOW - 1000}, None),
        (CleanableRange(10, 10, 900, 0), {"next_delete_horizon_ms": NOW}, "delete_horizon"),
        (CleanableRange(10, 10, 900, 0), {"next_delete_horizon_ms": NOW + 1}, None),
        (CleanableRange(10, 10, 900, 0), {}, None),
    ],
)
def test_due_reason(cleanable, kwargs, expected):
    settings_ = CompactionSettings(max_compaction_lag_ms=DAY)
    assert due_reason(cleanable, settings_, now_ms=NOW, **kwargs) == expected


def test_settings_come_from_the_config_with_kafka_defaults():
    assert settings_from(LogConfig()) == CompactionSettings(0.5, 0, None, DAY)
    assert settings_from(CompactConfig(delete_retention_ms=5)).delete_retention_ms == 5


def test_groups_merge_small_neighbours_up_to_segment_bytes():
    segments = [seg(0, 10, 400), seg(10, 20, 400), seg(20, 30, 400), seg(30, 40, 900), seg(40, 50, 100),
                seg(50, 60, 10)]
    groups = plan_groups(segments, end_offset=50, segment_bytes=1000, segment_index_bytes=10**6,
                         index_interval_bytes=4096)
    assert groups == [[0, 1], [2], [3, 4]]  # the active segment (last) is never in a group
    assert plan_groups(segments, end_offset=20, segment_bytes=1000, segment_index_bytes=10**6,
                       index_interval_bytes=4096) == [[0, 1]]


def test_groups_respect_index_capacity_and_offset_span():
    segments = [seg(0, 10, 400), seg(10, 20, 400), seg(2**31, 2**31 + 5, 10), seg(2**31 + 5, 2**31 + 6, 0)]
    groups = plan_groups(segments, end_offset=2**32, segment_bytes=10**6, segment_index_bytes=10**6,
                         index_interval_bytes=4096)
    assert groups == [[0, 1], [2]]
    # 10 bytes of index = one offset entry: 400 bytes of 61-byte batches may need 6
    groups = plan_groups(segments[:3], end_offset=2**32, segment_bytes=10**6, segment_index_bytes=96,
                         index_interval_bytes=0)
    assert groups == [[0], [1]]


def test_retained_rule():
    offsets = np.array([1, 2, 3, 4, 5, 6])
    latest = np.array([True, False, True, True, True, False])
    has_key = np.array([True, True, False, True, True, True])
    tombstone = np.array([False, False, False, True, True, True])
    keep = retained(offsets, latest, has_key, tombstone, end_offset=6, horizon_passed=False)
    assert keep.tolist() == [True, False, False, True, True, True]  # 6 is beyond the map
    keep = retained(offsets, latest, has_key, tombstone, end_offset=6, horizon_passed=True)
    assert keep.tolist() == [True, False, False, False, False, True]


# --- offset map and hashes ----------------------------------------------------------------------


def test_hashes_tell_keys_apart_and_agree_on_equal_keys():
    keys = [b"", b"a", b"a\x00", b"\x00a", b"abcdefgh", b"abcdefgh\x00", b"x" * 100, b"x" * 101, b"y" * 100]
    keys += [b"%d" % i for i in range(20_000)]
    h1, h2 = hash_key_list(keys, (3, 4))
    assert len({(a, b) for a, b in zip(h1.tolist(), h2.tolist(), strict=True)}) == len(keys)
    again = hash_key_list(list(reversed(keys)), (3, 4))
    assert again[0].tolist() == list(reversed(h1.tolist()))
    assert hash_key_list(keys[:5], (5, 4))[0].tolist() != h1[:5].tolist()  # seeds matter


@given(st.lists(st.tuples(st.integers(0, 300), st.booleans()), max_size=3000), st.integers(1, 40))
@settings(max_examples=40)
def test_offset_map_against_a_dict(entries, chunks):
    keys = [b"k%d" % k for k, _t in entries]
    values = np.array([i * 2 + 1 + t for i, (_k, t) in enumerate(entries)], np.int64)
    offset_map = OffsetMap(30 * 1024)
    assert offset_map.capacity >= 301
    h1, h2 = hash_key_list(keys, (1, 2))
    for part in np.array_split(np.arange(len(keys)), chunks):
        offset_map.put(h1[part], h2[part], values[part])
    model = {}
    for key, value in zip(keys, values.tolist(), strict=True):
        model[key] = value
    assert offset_map.size == len(model)
    probe = [b"k%d" % k for k in range(-5, 305)]
    found = offset_map.get(*hash_key_list(probe, (1, 2))).tolist()
    assert found == [model.get(k, 0) for k in probe]
    assert offset_map.sorted_values().tolist() == sorted(v - 1 for v in model.values())


# --- record locator against the decoder ---------------------------------------------------------

record_st = st.tuples(
    st.one_of(st.none(), st.binary(max_size=40)),
    st.one_of(st.none(), st.binary(max_size=300), st.integers(8000, 20000).map(b"x".__mul__)),
    st.lists(st.tuples(st.text(max_size=5), st.one_of(st.none(), st.binary(max_size=10))), max_size=2),
    st.integers(-(2**40), 2**40),
)


locate_args = (
    st.lists(st.lists(record_st, min_size=1, max_size=80), min_size=1, max_size=4),
    st.sampled_from(list(Compression)),
    st.booleans(),
)


@given(*locate_args)
@settings(max_examples=60)
def test_locate_agrees_with_decode_columns(batch_records, codec, uniform):
    check_locate(batch_records, codec, uniform)


@pytest.mark.slow
@given(*locate_args)
@settings(max_examples=2000)
def test_locate_agrees_with_decode_columns_soak(batch_records, codec, uniform):
    check_locate(batch_records, codec, uniform)


def check_locate(batch_records, codec, uniform):
    sections, headers, expected = [], [], []
    for i, records in enumerate(batch_records):
        if uniform:  # equal-sized records exercise the run probe
            records = [(b"k%03d" % j, b"v" * 50, [], 7) for j in range(len(records) * 3)]
        keys, values, record_headers, timestamps = (list(x) for x in zip(*records, strict=True))
        data = batch_format.encode(values, keys=keys, headers=record_headers, timestamps_ms=timestamps,
                                   base_offset=1000 * i, compression=codec)
        header = batch_format.unpack_header(data)
        body = data[batch_format.HEADER_SIZE :]
        sections.append(body if codec is Compression.NONE else decompress(codec, body))
        headers.append(header)
        expected.append(batch_format.decode_columns(data))
    located = _locate(sections, headers)
    for j, columns in enumerate(expected):
        rows = slice(int(located.first[j]), int(located.first[j + 1]))
        buffer = located.buffer
        assert (located.offset_deltas[rows] + headers[j].base_offset).tolist() == columns.offsets.tolist()
        assert (located.timestamp_deltas[rows] + headers[j].base_timestamp).tolist() == columns.timestamps_ms.tolist()
        keys = [None if n < 0 else buffer[s : s + n]
                for s, n in zip(located.key_starts[rows].tolist(), located.key_lengths[rows].tolist(), strict=True)]
        assert keys == columns.keys
        assert (located.value_lengths[rows] < 0).tolist() == [v is None for v in columns.values]


def test_locate_reports_which_batch_is_malformed():
    good = batch_format.encode([b"a", b"b"], keys=[b"x", b"y"])
    bad = bytearray(good)
    bad[batch_format.HEADER_SIZE] = 0x7F  # the first record's length: far too long
    headers = [batch_format.unpack_header(good)] * 2
    with pytest.raises(_Malformed) as caught:
        _locate([good[batch_format.HEADER_SIZE :], bytes(bad[batch_format.HEADER_SIZE :])], headers)
    assert caught.value.batch == 1


# --- whole passes: the model --------------------------------------------------------------------

op_st = st.one_of(
    st.tuples(st.just("append"), st.lists(st.tuples(st.integers(0, 60), st.booleans()), min_size=1, max_size=8),
              st.sampled_from(["none", "gzip", "lz4", "zstd", "snappy"])),
    st.tuples(st.just("roll")),
    st.tuples(st.just("clean"), st.sampled_from([0, 1000, DAY // 2, DAY, 2 * DAY]),
              st.sampled_from([TINY_BUDGET, BIG_BUDGET])),
    st.tuples(st.just("reopen")),
)


def run_model(ops):
    directory = tempfile.mkdtemp(prefix="logstore-compaction-")
    try:
        CompactionModel(directory).run(ops)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@given(st.lists(op_st, min_size=1, max_size=40))
@settings(max_examples=40, deadline=None)
def test_compaction_against_a_dict_model(ops):
    run_model(ops)


@pytest.mark.slow
@given(st.lists(op_st, min_size=1, max_size=80))
@settings(max_examples=1000, deadline=None)
def test_compaction_against_a_dict_model_soak(ops):
    run_model(ops)


class CompactionModel:
    """Every appended record (the truth), the passes run, and the invariants after each."""

    def __init__(self, directory):
        self.directory = directory
        self.config = CompactConfig(segment_bytes=1200, index_interval_bytes=150, cleanup_policy="compact",
                                    durability="none", min_cleanable_dirty_ratio=0.0)
        self.log = Log(directory, self.config)
        self.checkpoint = CleanerCheckpoint()
        self.records = {}  # offset -> (key, value, timestamp, headers)
        self.latest = {}  # key -> offset
        self.first_pass_after = {}  # tombstone offset -> time of the first pass after it
        self.now = NOW
        self.pass_times = []
        self.end_offset = 0

    def run(self, ops):
        try:
            for op in ops:
                getattr(self, op[0])(*op[1:])
            self.drain()
        finally:
            self.log.close()

    def append(self, entries, codec):
        keys = [b"k%d" % k for k, _t in entries]
        values = [None if tomb else b"value-%d-%d" % (self.now, i) for i, (_k, tomb) in enumerate(entries)]
        headers = [(("n", b"%d" % k),) if k % 3 == 0 else () for k, _t in entries]
        info = self.log.append(values, keys=keys, headers=headers, timestamps_ms=self.now, compression=codec)
        for j, record in enumerate(zip(keys, values, [self.now] * len(keys), headers, strict=True)):
            self.records[info.base_offset + j] = record
            self.latest[record[0]] = info.base_offset + j
        self.now += 1

    def roll(self):
        self.log.roll()

    def reopen(self):
        self.log.close()
        self.log = Log(self.directory, self.config)
        self.checkpoint = CleanerCheckpoint()  # read back from the file

    def clean(self, advance, budget):
        self.now += advance
        self.run_pass(budget)
        self.check()

    def run_pass(self, budget):
        for offset, (_key, value, _ts, _headers) in self.records.items():
            if value is None:
                self.first_pass_after.setdefault(offset, self.now)
        result = clean(self.log, self.now, budget, self.checkpoint)
        assert result.status in ("cleaned", "not_due"), result
        if result.status == "cleaned":
            self.end_offset = result.end_offset
            self.pass_times.append(self.now)
        return result

    def drain(self):
        """Roll, then clean until everything sealed is cleaned and every horizon has passed."""
        self.roll()
        for _ in range(20):
            result = self.run_pass(BIG_BUDGET)
            state = self.checkpoint.get(self.directory)
            if result.status == "not_due" and (state is None or state.next_delete_horizon_ms is None):
                break
            self.now += DAY + 1
        assert self.end_offset == self.log.segments[-1].base_offset
        self.check()
        live = scan(self.log)
        assert all(r.value is not None for r in live), "a tombstone outlived its delete horizon"
        assert {r.key for r in live} == {k for k, o in self.latest.items() if self.records[o][1] is not None}
        assert not verify_data_dir(self.directory).problems

    def check(self):
        live = scan(self.log)
        offsets = [r.offset for r in live]
        assert offsets == sorted(set(offsets)), "offsets must increase"
        for record in live:  # nothing is invented or changed
            assert (record.key, record.value, record.timestamp_ms, record.headers) == self.records[record.offset]
        present = set(offsets)
        for key, offset in self.latest.items():
            if offset in present:
                assert self.log.read(offset, max_bytes=1)[0].value == self.records[offset][1]
                continue
            assert self.records[offset][1] is None, f"the latest value of {key!r} was lost"
            first_pass = self.first_pass_after[offset]
            assert max(self.pass_times) >= first_pass + DAY, "a tombstone went before its horizon"
        for offset in self.records:  # the part no pass has covered is untouched
            if offset >= self.end_offset:
                assert offset in present
        seen = set()
        for record in live:  # below the end of the last pass, one record per key
            if record.offset < self.end_offset:
                assert record.key not in seen
                seen.add(record.key)


# --- whole passes: one property each ------------------------------------------------------------


def test_first_pass_keeps_the_latest_of_each_key_and_never_the_active_segment(tmp_path):
    log = Log(tmp_path, config())
    latest = fill(log, random.Random(1), 300, 40, tombstones=0)
    active_before = [r for r in scan(log) if r.offset >= log.segments[-1].base_offset]
    result = clean(log)
    assert result.status == "cleaned" and result.reason == "dirty_ratio"
    assert result.end_offset == log.segments[-1].base_offset
    live = scan(log)
    assert [r for r in live if r.offset >= result.end_offset] == active_before
    below = {r.key: (r.offset, r.value) for r in live if r.offset < result.end_offset}
    assert len(below) == len([r for r in live if r.offset < result.end_offset])
    for key, (offset, value) in latest.items():
        if offset < result.end_offset:
            assert below[key] == (offset, value)
    log.close()


def test_offsets_and_batch_bounds_never_change(tmp_path):
    log = Log(tmp_path, config())
    fill(log, random.Random(2), 300, 30)
    before = {(h.base_offset, h.last_offset) for h in batches(log)}
    clean(log)
    after = batches(log)
    assert {(h.base_offset, h.last_offset) for h in after} <= before
    assert any(h.records_count < h.last_offset_delta + 1 for h in after), "some batch should have gaps"
    log.close()


def test_each_new_segment_ends_where_its_group_ended(tmp_path):
    log = Log(tmp_path, config())
    fill(log, random.Random(3), 300, 10, tombstones=0)  # few keys: most batches empty out
    ends = {s.next_offset for s in log.segments[:-1]}
    clean(log)
    assert {s.next_offset for s in log.segments[:-1]} <= ends
    assert log.segments[-2].next_offset == log.segments[-1].base_offset
    empties = [h for h in batches(log) if h.records_count == 0]
    assert empties and all(h.attributes & batch_format.CODEC_MASK == 0 for h in empties)
    log.close()


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_rewritten_batches_keep_their_codec(tmp_path, codec):
    log = Log(tmp_path, config())
    fill(log, random.Random(4), 200, 25, codecs=(codec, "none"))
    codecs_before = {h.base_offset: h.compression for h in batches(log)}
    clean(log)
    rewritten = [h for h in batches(log) if h.records_count]
    assert any(h.records_count < h.last_offset_delta + 1 for h in rewritten)
    assert all(h.compression == codecs_before[h.base_offset] for h in rewritten)
    assert {Compression.from_name(codec), Compression.NONE} == {h.compression for h in rewritten}
    log.close()


def test_clean_small_segments_are_merged_into_groups(tmp_path):
    cfg = config(segment_bytes=4096)
    log = Log(tmp_path, cfg)
    for i in range(60):  # 60 tiny segments, all with distinct keys: nothing to drop
        log.append([b"value-%d" % i], keys=[b"key-%d" % i], timestamps_ms=NOW)
        log.roll()
    assert len(log.segments) == 61
    result = clean(log)
    assert result.status == "cleaned" and result.segments_before == 60
    assert len(log.segments) < 61 // 10
    assert all(s.size <= cfg.segment_bytes for s in log.segments)
    assert [r.key for r in scan(log)] == [b"key-%d" % i for i in range(60)]
    log.close()


def test_headers_timestamps_and_log_append_time_survive(tmp_path):
    log = Log(tmp_path, config())
    log.append([b"a", b"b", b"c"], keys=[b"1", b"2", b"3"], headers=[[("h", b"x")], [("é", None)], [("", b"")]],
               timestamps_ms=[NOW + 5, NOW + 9, NOW + 1])
    data = batch_format.encode([b"d", b"e"], keys=[b"2", b"4"], timestamps_ms=NOW - 7, log_append_time=True)
    log.append_batches(data)
    log.append([b"f"], keys=[b"4"], timestamps_ms=NOW)
    log.roll()
    before = {r.offset: r for r in scan(log)}
    clean(log)
    live = scan(log)
    assert [r.offset for r in live] == [0, 2, 3, 5]
    assert all(r == before[r.offset] for r in live)
    first, second = batches(log)[:2]
    assert first.max_timestamp == NOW + 5  # recomputed from the records kept
    assert second.timestamp_type == "LogAppendTime" and second.records_count == 1
    log.close()


def test_tombstones_get_a_horizon_and_go_after_it(tmp_path):
    log = Log(tmp_path, CompactConfig(segment_bytes=2048, cleanup_policy="compact", min_cleanable_dirty_ratio=0.0))
    log.append([b"a", b"b"], keys=[b"x", b"y"], timestamps_ms=NOW - 10)
    log.append([None], keys=[b"x"], timestamps_ms=NOW - 5)
    log.roll()
    checkpoint = CleanerCheckpoint()
    clean(log, NOW, checkpoint=checkpoint)
    assert [(r.key, r.value, r.timestamp_ms) for r in scan(log)] == [(b"y", b"b", NOW - 10), (b"x", None, NOW - 5)]
    tomb = batches(log)[-1]
    assert tomb.delete_horizon_ms == NOW + DAY and tomb.base_timestamp == NOW + DAY
    assert checkpoint.get(log.directory).next_delete_horizon_ms == NOW + DAY
    assert clean(log, NOW + DAY - 1, checkpoint=checkpoint).status == "not_due"
    log.append([b"c"], keys=[b"z"], timestamps_ms=NOW)
    log.roll()  # dirty again, but before the horizon: the tombstone stays
    assert clean(log, NOW + DAY - 1, checkpoint=checkpoint).reason == "dirty_ratio"
    assert any(r.value is None for r in scan(log))
    assert checkpoint.get(log.directory).next_delete_horizon_ms == NOW + DAY
    result = clean(log, NOW + DAY, checkpoint=checkpoint)
    assert result.reason == "delete_horizon"
    assert [(r.key, r.value) for r in scan(log)] == [(b"y", b"b"), (b"z", b"c")]
    assert checkpoint.get(log.directory).next_delete_horizon_ms is None
    log.close()


def test_delete_retention_is_read_from_the_config(tmp_path):
    log = Log(tmp_path, CompactConfig(segment_bytes=2048, cleanup_policy="compact,delete", delete_retention_ms=7))
    log.append([None, b"v"], keys=[b"x", b"y"], timestamps_ms=NOW)
    log.roll()
    checkpoint = CleanerCheckpoint()
    clean(log, NOW, checkpoint=checkpoint)
    assert batches(log)[0].delete_horizon_ms == NOW + 7
    clean(log, NOW + 7, checkpoint=checkpoint)
    assert [r.key for r in scan(log)] == [b"y"]
    log.close()


def test_keyless_records_are_dropped(tmp_path):
    log = Log(tmp_path, config(cleanup_policy="delete"))
    log.append([b"a", b"b"], keys=[None, b"k"], timestamps_ms=NOW)
    log.roll()
    log.close()
    log = Log(tmp_path, config())
    clean(log)
    assert [r.key for r in scan(log)] == [b"k"]
    log.close()


def test_a_pass_over_more_keys_than_fit_covers_a_prefix_and_the_next_continues(tmp_path):
    cfg = CompactConfig(segment_bytes=4096, cleanup_policy="compact", min_cleanable_dirty_ratio=0.0)
    log = Log(tmp_path / "log", cfg)
    latest = fill(log, random.Random(5), 400, 150, tombstones=0)
    log.roll()
    log.close()
    reference = tmp_path / "reference"
    shutil.copytree(tmp_path / "log", reference)
    log = Log(tmp_path / "log", cfg)
    checkpoint = CleanerCheckpoint()
    ends = []
    for _ in range(30):
        result = clean(log, budget=TINY_BUDGET, checkpoint=checkpoint)
        if result.status == "not_due":
            break
        assert result.keys_mapped <= TINY_CAPACITY
        ends.append(result.end_offset)
    assert len(ends) > 3 and ends == sorted(ends)
    assert checkpoint.get(log.directory).first_dirty_offset == log.segments[-1].base_offset
    with Log(reference, cfg) as one_pass:
        clean(one_pass)
        expected = scan(one_pass)
    live = scan(log)
    assert live == expected
    assert {r.key: (r.offset, r.value) for r in live} == latest
    log.close()


def test_a_corrupt_log_is_marked_uncleanable_and_the_others_are_cleaned(tmp_path):
    logs = []
    for name in ("a", "b"):
        log = Log(tmp_path / name, config())
        fill(log, random.Random(6), 200, 20)
        logs.append(log)
    victim = logs[0].segments[1]
    with open(victim.log_path, "r+b") as f:  # one byte of a record, inside the CRC
        f.seek(batch_format.HEADER_SIZE + 3)
        byte = f.read(1)
        f.seek(batch_format.HEADER_SIZE + 3)
        f.write(bytes([byte[0] ^ 0xFF]))
    stats = CleanerStats()
    checkpoint = CleanerCheckpoint()
    before = sorted(os.listdir(logs[0].directory))
    results = [clean(log, checkpoint=checkpoint, stats=stats) for log in logs]
    assert [r.status for r in results] == ["failed", "cleaned"]
    assert "CRC" in results[0].error and victim.log_path in results[0].error
    assert set(stats.uncleanable) == {logs[0].directory}
    assert sorted(os.listdir(logs[0].directory)) == before  # no .cleaned left behind
    assert clean(logs[0], NOW + 1, checkpoint=checkpoint, stats=stats).status == "uncleanable"
    retry = clean(logs[0], NOW + 3_600_000, checkpoint=checkpoint, stats=stats)
    assert retry.status == "failed" and stats.failures == 2 and stats.passes == 1
    for log in logs:
        log.close()


def test_the_new_segment_keeps_the_mtime_of_its_last_source(tmp_path):
    log = Log(tmp_path, config())
    fill(log, random.Random(7), 200, 20)
    old = log.segments[:-1]
    for i, segment in enumerate(old):
        os.utime(segment.log_path, ns=(10**18 + i * 10**9, 10**18 + i * 10**9))
    mtimes = {s.base_offset: os.stat(s.log_path).st_mtime_ns for s in old}
    clean(log)
    for segment in log.segments[:-1]:
        assert os.stat(segment.log_path).st_mtime_ns == mtimes[segment.base_offset]
    log.close()


def test_not_due_below_the_ratio_and_not_compacted_logs(tmp_path):
    log = Log(tmp_path / "c", config())
    fill(log, random.Random(8), 200, 20)
    checkpoint = CleanerCheckpoint()
    assert clean(log, checkpoint=checkpoint).status == "cleaned"
    log.append([b"x"], keys=[b"key-1"], timestamps_ms=NOW)
    log.roll()
    assert clean(log, checkpoint=checkpoint).status == "not_due"
    log.close()
    plain = Log(tmp_path / "d", config(cleanup_policy="delete"))
    assert clean(plain).status == "not_compacted"
    plain.close()


def test_checkpoint_file_round_trip_and_damage(tmp_path):
    checkpoint = CleanerCheckpoint()
    checkpoint.set(str(tmp_path), CleanerState(42, NOW))
    assert CleanerCheckpoint().get(str(tmp_path)) == CleanerState(42, NOW)
    (tmp_path / CHECKPOINT_NAME).write_bytes(b"{not json")
    assert CleanerCheckpoint().get(str(tmp_path)) is None
    checkpoint.forget(str(tmp_path))
    assert not (tmp_path / CHECKPOINT_NAME).exists()


def test_truncation_below_the_checkpoint_restarts_from_the_log_start(tmp_path):
    log = Log(tmp_path, config())
    fill(log, random.Random(9), 200, 20)
    checkpoint = CleanerCheckpoint()
    clean(log, checkpoint=checkpoint)
    log.truncate(5)
    fill(log, random.Random(10), 50, 20)
    result = clean(log, checkpoint=checkpoint)
    assert result.first_dirty_offset == log.log_start_offset
    log.close()


def test_a_pass_aborts_when_retention_removes_its_segments(tmp_path):
    log = Log(tmp_path, config(file_delete_delay_ms=0))
    fill(log, random.Random(11), 200, 20)
    before = scan(log)

    def retention(step):
        if step == "cleaned_written":
            log.delete_segments([log.segments[0].base_offset])

    result = clean(log, on_step=retention)
    assert result.status == "aborted"
    assert scan(log) == [r for r in before if r.offset >= log.log_start_offset]
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".cleaned")]
    assert clean(log).status == "cleaned"
    log.close()


def test_appends_continue_while_a_pass_runs(tmp_path):
    log = Log(tmp_path, config())
    latest = fill(log, random.Random(12), 200, 20)

    def append_meanwhile(step):
        if step in ("map_built", "group_written"):
            latest.update(fill(log, random.Random(len(step)), 20, 20))

    clean(log, on_step=append_meanwhile)
    live = {r.key: (r.offset, r.value) for r in scan(log)}
    assert all(live[k] == v for k, v in latest.items() if v[1] is not None)
    log.close()


def test_budget_too_small_is_refused():
    with pytest.raises(ValueError, match="too small"):
        clean_log(None, now_ms=NOW, memory_budget_bytes=1000, checkpoint=CleanerCheckpoint())


def test_a_batch_larger_than_the_whole_map_marks_the_log_uncleanable(tmp_path):
    log = Log(tmp_path, config(segment_bytes=1 << 20))
    log.append([b"v"] * 100, keys=[b"k%d" % i for i in range(100)], timestamps_ms=NOW)
    log.roll()
    stats = CleanerStats()
    result = clean(log, budget=TINY_BUDGET, stats=stats)
    assert result.status == "failed" and "memory_budget_bytes" in result.error
    log.close()


def test_damage_inside_records_with_a_valid_crc_is_reported_with_its_position(tmp_path):
    log = Log(tmp_path, config(cleanup_policy="delete"))
    good = bytearray(batch_format.encode([b"a", b"b"], keys=[b"x", b"y"]))
    good[batch_format.HEADER_SIZE] = 0x7F  # first record's length, then a fresh CRC
    crc = batch_format.crc32c(bytes(good[batch_format.CRC_START :]))
    good[batch_format.CRC_OFFSET : batch_format.CRC_START] = crc.to_bytes(4, "big")
    log.append([b"z"], keys=[b"z"])
    log.append_batches(bytes(good))
    log.roll()
    log.close()
    log = Log(tmp_path, config())
    result = clean(log)
    assert result.status == "failed" and "records do not parse" in result.error
    assert log.segments[0].log_path in result.error
    with pytest.raises(CorruptBatchError):
        batch_format.decode(bytes(good))
    log.close()


def test_memory_stays_within_the_budget_even_for_well_compressed_batches(tmp_path):
    log = Log(tmp_path, config(segment_bytes=1 << 20))
    rng = random.Random(13)
    for i in range(60):  # 1000 records of 100 bytes a batch, zstd: 100 KB of records in ~2 KB
        keys = [b"key-%d" % rng.randrange(3000) for _ in range(1000)]
        log.append([b"%0100d" % i] * 1000, keys=keys, timestamps_ms=NOW, compression="zstd")
    log.roll()
    budget = 2 << 20
    tracemalloc.start()
    try:
        result = clean(log, budget=budget)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result.status == "cleaned" and result.records_kept <= 3000
    assert peak <= budget, f"peak {peak} bytes"
    log.close()


def test_a_pass_that_changes_nothing_swaps_nothing(tmp_path):
    log = Log(tmp_path, config())
    log.append([b"a", b"b"], keys=[b"1", b"2"], timestamps_ms=NOW)
    log.roll()
    sealed = log.segments[0]
    checkpoint = CleanerCheckpoint()
    result = clean(log, checkpoint=checkpoint)
    assert result.status == "cleaned" and result.segments_before == 0
    assert log.segments[0] is sealed
    assert checkpoint.get(log.directory).first_dirty_offset == 2
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".cleaned")]
    log.close()
