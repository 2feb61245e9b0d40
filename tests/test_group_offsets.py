"""Committed offsets on ``__consumer_offsets``: Kafka's record format, the view rebuilt at open,
durability, and the store's API around the internal topic."""

from __future__ import annotations

import os
import shutil
import struct
import threading
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from logstore import ConfigError, LogConfig, TopicError
from logstore.group_offsets import (
    MAX_METADATA_BYTES,
    OFFSETS_TOPIC,
    OffsetAndMetadata,
    OffsetKey,
    decode_key,
    decode_offset_value,
    encode_offset_key,
    encode_offset_value,
    java_string_hash,
    partition_for_group,
)
from logstore.store import LogStore


def open_store(path, **kwargs):
    kwargs.setdefault("background", False)
    return LogStore(path, **kwargs)


def kstring(text: str) -> bytes:
    data = text.encode()
    return struct.pack(">h", len(data)) + data


# --- the record format --------------------------------------------------------------------------


def test_key_and_value_are_kafkas_schemas_byte_for_byte():
    assert encode_offset_key("grp", "topic", 7) == b"\x00\x01" + kstring("grp") + kstring("topic") + b"\x00\x00\x00\x07"
    value = OffsetAndMetadata(offset=42, metadata="m", leader_epoch=3, commit_timestamp_ms=1_700_000_000_000)
    assert encode_offset_value(value) == (
        b"\x00\x03" + struct.pack(">qi", 42, 3) + kstring("m") + struct.pack(">q", 1_700_000_000_000)
    )
    assert decode_key(encode_offset_key("grp", "topic", 7)) == OffsetKey("grp", "topic", 7)
    assert decode_offset_value(encode_offset_value(value)) == value


def test_older_value_versions_and_group_metadata_keys_are_read():
    tail = kstring("meta") + struct.pack(">q", 123)
    assert decode_offset_value(b"\x00\x00" + struct.pack(">q", 5) + tail) == OffsetAndMetadata(5, "meta", -1, 123)
    assert decode_offset_value(b"\x00\x01" + struct.pack(">q", 5) + tail + struct.pack(">q", 999)) == (
        OffsetAndMetadata(5, "meta", -1, 123)
    )
    assert decode_offset_value(b"\x00\x02" + struct.pack(">q", 5) + tail) == OffsetAndMetadata(5, "meta", -1, 123)
    assert decode_key(b"\x00\x00" + kstring("g") + kstring("t") + b"\x00\x00\x00\x01") == OffsetKey("g", "t", 1)
    assert decode_key(b"\x00\x02" + kstring("some-group")) == "some-group"  # group metadata
    for bad in [b"", b"\x00\x05" + kstring("g"), b"\x00\x01" + kstring("g") + kstring("t") + b"\x00", b"\x00\x01\x00\x09g"]:
        with pytest.raises(ValueError):
            decode_key(bad)
    for bad in [b"\x00\x04" + b"\x00" * 30, b"\x00\x03" + b"\x00" * 5, encode_offset_value(OffsetAndMetadata(1)) + b"x"]:
        with pytest.raises(ValueError):
            decode_offset_value(bad)


@given(st.binary(max_size=64))
def test_decoders_parse_or_raise_value_error(data):
    for decoder in (decode_key, decode_offset_value):
        try:
            decoder(data)
        except ValueError:
            pass


def test_group_partition_is_kafkas():
    # Java: "hello".hashCode() == 99162322; "polygenelubricants".hashCode() == Integer.MIN_VALUE
    assert java_string_hash("hello") == 99162322
    assert java_string_hash("") == 0
    assert java_string_hash("polygenelubricants") == -(2**31)
    assert partition_for_group("polygenelubricants", 50) == 0  # Utils.abs(MIN_VALUE) is 0
    assert partition_for_group("hello", 50) == 99162322 % 50
    assert partition_for_group("anything", 1) == 0


# --- the store API ------------------------------------------------------------------------------


def test_commit_fetch_and_rebuild_at_open(tmp_path):
    with open_store(tmp_path) as store:
        store.create_topic("t", 3)
        assert store.fetch_offsets("g") == {}
        assert not os.path.exists(tmp_path / f"{OFFSETS_TOPIC}-0")  # created on the first commit
        store.commit_offsets("g", {("t", 0): 5, ("t", 1): OffsetAndMetadata(7, "meta", 2)})
        store.commit_offsets("g", {("t", 0): 6})
        store.commit_offsets("other", {("t", 2): 1})
        first = store.fetch_offsets("g")
        assert {k: v.offset for k, v in first.items()} == {("t", 0): 6, ("t", 1): 7}
        assert first[("t", 1)].metadata == "meta" and first[("t", 1)].leader_epoch == 2
        assert first[("t", 0)].commit_timestamp_ms > 0
        assert store.fetch_offsets("g", [("t", 1), ("t", 2), ("nope", 0)]) == {("t", 1): first[("t", 1)]}
        assert store.topics() == ["t"]
        assert store.topics(include_internal=True) == [OFFSETS_TOPIC, "t"]
        config = store.describe_topic(OFFSETS_TOPIC).config
        assert config.cleanup_policy == "compact" and config.durability == store.default_config.durability
    with open_store(tmp_path) as store:
        assert store.fetch_offsets("g") == first
        assert {k: v.offset for k, v in store.fetch_offsets("other").items()} == {("t", 2): 1}
        # every record is a Kafka offset commit: key and value decode with the spec
        records = store.read(OFFSETS_TOPIC, 0, 0)
        assert len(records) == 4
        assert decode_key(records[1].key) == OffsetKey("g", "t", 1)
        assert decode_offset_value(records[1].value).offset == 7


def test_one_commit_call_is_one_batch(tmp_path):
    with open_store(tmp_path) as store:
        store.create_topic("t", 4)
        store.commit_offsets("g", {("t", p): p * 10 for p in range(4)})
        log = store.log(OFFSETS_TOPIC, 0)
        assert log.log_end_offset == 4
        assert len(list(log.active_segment.iter_headers(0, log.active_segment.size))) == 1


def test_refused_commits_write_nothing(tmp_path):
    with open_store(tmp_path) as store:
        store.create_topic("t", 2)
        store.commit_offsets("g", {("t", 0): 1})
        end = store.log(OFFSETS_TOPIC, 0).log_end_offset
        with pytest.raises(TopicError):
            store.commit_offsets("g", {("t", 0): 2, ("t", 9): 1})
        with pytest.raises(TopicError):
            store.commit_offsets("g", {("t", 0): 2, ("missing", 0): 1})
        with pytest.raises(ValueError):
            store.commit_offsets("g", {("t", 0): 2, ("t", 1): OffsetAndMetadata(1, "x" * (MAX_METADATA_BYTES + 1))})
        with pytest.raises(ValueError):
            store.commit_offsets("", {("t", 0): 2})
        with pytest.raises(TypeError):
            store.commit_offsets("g", {("t", 0): "2"})
        with pytest.raises(ValueError):
            store.commit_offsets("g", {("t", 0): 2**63})
        assert store.log(OFFSETS_TOPIC, 0).log_end_offset == end
        assert {k: v.offset for k, v in store.fetch_offsets("g").items()} == {("t", 0): 1}


def test_internal_topic_cannot_be_created_deleted_or_appended_to(tmp_path):
    with open_store(tmp_path) as store:
        store.create_topic("t")
        with pytest.raises(TopicError):
            store.create_topic(OFFSETS_TOPIC)
        store.commit_offsets("g", {("t", 0): 1})
        with pytest.raises(TopicError):
            store.append(OFFSETS_TOPIC, [b"x"], keys=[b"k"])
        with pytest.raises(TopicError):
            store.delete_topic(OFFSETS_TOPIC)
        with pytest.raises(TopicError):
            store.commit_offsets("g", {(OFFSETS_TOPIC, 0): 1})


def test_delete_offsets_and_deleted_topics_write_tombstones(tmp_path):
    with open_store(tmp_path) as store:
        store.create_topic("t", 2)
        store.create_topic("u")
        store.commit_offsets("g", {("t", 0): 1, ("t", 1): 2, ("u", 0): 3})
        store.commit_offsets("h", {("t", 0): 4, ("u", 0): 5})
        assert store.delete_offsets("g", [("t", 1)]) == 1
        store.delete_topic("u")
        assert {k: v.offset for k, v in store.fetch_offsets("g").items()} == {("t", 0): 1}
        assert {k: v.offset for k, v in store.fetch_offsets("h").items()} == {("t", 0): 4}
        assert store.delete_offsets("h") == 1 and store.delete_offsets("h") == 0
    with open_store(tmp_path) as store:
        assert {k: v.offset for k, v in store.fetch_offsets("g").items()} == {("t", 0): 1}
        assert store.fetch_offsets("h") == {}
        tombstones = [r for r in store.read(OFFSETS_TOPIC, 0, 0) if r.value is None]
        assert sorted(decode_key(r.key) for r in tombstones) == [
            OffsetKey("g", "t", 1), OffsetKey("g", "u", 0), OffsetKey("h", "t", 0), OffsetKey("h", "u", 0)
        ]


def test_foreign_records_are_skipped_when_rebuilding(tmp_path):
    with open_store(tmp_path) as store:
        store.create_topic("t")
        store.commit_offsets("g", {("t", 0): 1})
        log = store.log(OFFSETS_TOPIC, 0)
        # a group metadata record (as Kafka writes) and garbage: neither is an offset
        log.append([b"\x00\x03whatever", b"junk"], keys=[b"\x00\x02" + kstring("g"), b"\x7f\x7f"])
        store.commit_offsets("g", {("t", 0): 2})
    with open_store(tmp_path) as store:
        assert store.fetch_offsets("g")[("t", 0)].offset == 2
        assert store._group_offsets.records_skipped == 2


def test_commits_are_durable_when_they_return_in_append_mode(tmp_path):
    store = open_store(tmp_path / "live", default_config=LogConfig(durability="append"))
    store.create_topic("t")
    for i in range(1, 6):
        store.commit_offsets("g", {("t", 0): i})
        log = store.log(OFFSETS_TOPIC, 0)
        assert log.durable_offset == log.log_end_offset
    # "crash": copy the files of the still-open store (no clean shutdown marker, nothing flushed
    # at close) and open the copy
    shutil.copytree(tmp_path / "live", tmp_path / "crashed")
    store.close()
    with open_store(tmp_path / "crashed") as copy:
        assert copy.fetch_offsets("g")[("t", 0)].offset == 5


def test_sync_commits_are_durable_in_interval_mode(tmp_path):
    with open_store(tmp_path, default_config=LogConfig(durability="interval", flush_ms=3_600_000)) as store:
        store.create_topic("t")
        store.commit_offsets("g", {("t", 0): 1})
        log = store.log(OFFSETS_TOPIC, 0)
        assert log.durable_offset < log.log_end_offset  # left to the flush interval
        store.commit_offsets("g", {("t", 0): 2}, sync=True)
        assert log.durable_offset == log.log_end_offset


def test_offsets_topic_config_can_be_adjusted(tmp_path):
    with open_store(tmp_path, offsets_topic_config={"segment_bytes": 100_000}) as store:
        store.create_topic("t")
        store.commit_offsets("g", {("t", 0): 1})
        assert store.describe_topic(OFFSETS_TOPIC).config.segment_bytes == 100_000
    with pytest.raises(ConfigError):
        open_store(tmp_path / "bad", offsets_topic_config={"no_such_setting": 1})


def test_concurrent_commits_leave_the_view_agreeing_with_the_log(tmp_path):
    with open_store(tmp_path) as store:
        store.create_topic("t", 2)

        def committer(worker):
            for i in range(200):
                store.commit_offsets("g", {("t", 0): worker * 1000 + i, ("t", 1): i})

        threads = [threading.Thread(target=committer, args=(w,)) for w in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        live = store.fetch_offsets("g")
    with open_store(tmp_path) as store:
        assert store.fetch_offsets("g") == live
        assert live[("t", 1)].offset == 199


def test_many_partitions_of_the_offsets_topic(tmp_path):
    """A topic created with more partitions (as by Kafka, 50) spreads groups by Kafka's rule."""
    from logstore.group_offsets import GroupOffsets
    from logstore.log import Log

    logs = [Log(tmp_path / f"p{i}", LogConfig(cleanup_policy="compact")) for i in range(5)]
    try:
        offsets = GroupOffsets(logs)
        for group in ("alpha", "beta", "gamma", "delta"):
            offsets.commit(group, {("t", 0): OffsetAndMetadata(len(group))})
        for group in ("alpha", "beta", "gamma", "delta"):
            assert logs[partition_for_group(group, 5)].log_end_offset >= 1
        assert GroupOffsets(logs).fetch("gamma") == offsets.fetch("gamma")
        assert offsets.groups() == ["alpha", "beta", "delta", "gamma"]
    finally:
        for log in logs:
            log.close()


# --- compaction keeps the topic small -------------------------------------------------------------


def test_size_stays_bounded_under_100k_commits_of_the_same_keys(tmp_path):
    cleaner = pytest.importorskip(
        "logstore.cleaner",
        reason="logstore.cleaner (the log cleaner, being written separately) is not importable yet",
    )
    if not hasattr(cleaner, "clean_log"):
        pytest.skip("logstore.cleaner has no clean_log(log, now_ms=, checkpoint=) yet")
    segment_bytes = 256 * 1024
    store = open_store(
        tmp_path,
        default_config=LogConfig(durability="none"),
        offsets_topic_config={"segment_bytes": segment_bytes},
    )
    try:
        store.create_topic("t", 10)
        checkpoint = cleaner.CleanerCheckpoint()
        for round_ in range(100):
            for i in range(1000):
                store.commit_offsets("g", {("t", i % 10): round_ * 1000 + i})
            # what the store's timer thread does for compacted topics
            cleaner.clean_log(store.log(OFFSETS_TOPIC, 0), now_ms=int(time.time() * 1000), checkpoint=checkpoint)
        log = store.log(OFFSETS_TOPIC, 0)
        assert log.log_end_offset == 100_000
        # uncompacted: 100k one-record batches (10.4 MB); compaction keeps the last commit of
        # each of the 10 keys plus the segments not cleaned yet (the active one at least)
        assert log.size_bytes <= 3 * segment_bytes, log.size_bytes
        expected = {("t", p): 99_000 + 990 + p for p in range(10)}
        assert {k: v.offset for k, v in store.fetch_offsets("g").items()} == expected
    finally:
        store.close()
    with open_store(tmp_path) as store:  # the view rebuilt over the compacted log (gaps in offsets)
        assert {k: v.offset for k, v in store.fetch_offsets("g").items()} == expected
        assert store._group_offsets.records_read < 30_000, store._group_offsets.records_read


# --- the embedded consumer ----------------------------------------------------------------------


def test_embedded_consumer_resumes_from_its_commit(tmp_path):
    from logstore.consumer import GroupConsumer

    with open_store(tmp_path) as store:
        store.create_topic("t", 2)
        store.append("t", [b"a", b"b"], partition=0)
        store.append("t", [b"c"], partition=1)
        with GroupConsumer(store, "g", ["t"]) as consumer:
            assert consumer.assignment == [("t", 0), ("t", 1)]
            got = consumer.poll(timeout_s=1.0)
            assert sorted((r.partition, r.offset, r.value) for r in got) == [(0, 0, b"a"), (0, 1, b"b"), (1, 0, b"c")]
            assert consumer.poll() == []
            consumer.commit()
            assert consumer.committed() == {("t", 0): 2, ("t", 1): 1}
        store.append("t", [b"d"], partition=1)
    with open_store(tmp_path) as store:
        consumer = GroupConsumer(store, "g", ["t"])
        assert [(r.partition, r.value) for r in consumer.poll(timeout_s=1.0)] == [(1, b"d")]
        assert consumer.position("t", 1) == 2
        latest = GroupConsumer(store, "other", ["t"], start="latest")
        assert latest.poll() == []
        store.append("t", [b"e"], partition=0)
        assert [r.value for r in latest.poll()] == [b"e"]
        with pytest.raises(ValueError):
            GroupConsumer(store, "g", [])


def test_embedded_consumer_poll_wakes_on_append_and_honours_max_records(tmp_path):
    from logstore.consumer import GroupConsumer

    with open_store(tmp_path) as store:
        store.create_topic("t")
        consumer = GroupConsumer(store, "g", ["t"])
        timer = threading.Timer(0.2, lambda: store.append("t", [b"x%d" % i for i in range(5)]))
        timer.start()
        started = time.monotonic()
        got = consumer.poll(max_records=3, timeout_s=10.0)
        timer.join()
        assert [r.value for r in got] == [b"x0", b"x1", b"x2"] and time.monotonic() - started < 5
        assert [r.value for r in consumer.poll(max_records=3)] == [b"x3", b"x4"]
        consumer.seek("t", 0, 1)
        assert consumer.poll(max_records=1)[0].value == b"x1"
        consumer.close(commit=True)
        assert store.fetch_offsets("g")[("t", 0)].offset == 2
